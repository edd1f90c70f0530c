#include "kernels/rms_norm/ref.hpp"

#include <cmath>

#include "kernels/common/scalar.hpp"

namespace bnorm::kernels::rms_norm::ref {

void row_mean_squares(const Shape& shape, const void* src, double* mean_sq) {
  for (std::int64_t r = 0; r < shape.rows; ++r) {
    double sum = 0.0;
    for (std::int64_t j = 0; j < shape.len; ++j) {
      const double v = load_float(shape.dtype, src, r * shape.len + j);
      sum += v * v;
    }
    mean_sq[r] = sum / static_cast<double>(shape.len);
  }
}

void normalize(const Shape& shape, const void* src, const double* mean_sq, double eps, const float* gamma,
               double* dst) {
  for (std::int64_t r = 0; r < shape.rows; ++r) {
    const double invrms = 1.0 / std::sqrt(mean_sq[r] + eps);
    for (std::int64_t j = 0; j < shape.len; ++j) {
      const std::int64_t i = r * shape.len + j;
      dst[i] = load_float(shape.dtype, src, i) * invrms * (gamma ? gamma[j] : 1.0);
    }
  }
}

void backward(const Shape& shape, const void* src, const void* diff_dst, const float* gamma,
              const float* invrms, double* diff_src, double* diff_gamma) {
  const std::int64_t L = shape.len;
  if (diff_gamma)
    for (std::int64_t j = 0; j < L; ++j) diff_gamma[j] = 0.0;
  for (std::int64_t r = 0; r < shape.rows; ++r) {
    // y = x * s * gamma with s = (mean(x^2) + eps)^(-1/2) and ds/dx_j = -s^3 x_j / L:
    // dx_i = s * g_i - s^3 * x_i * sum_j(g_j x_j) / L, g = dy * gamma.
    const double s = invrms[r];
    double sum_gx = 0.0;
    for (std::int64_t j = 0; j < L; ++j) {
      const std::int64_t i = r * L + j;
      const double dy = load_float(shape.dtype, diff_dst, i), x = load_float(shape.dtype, src, i);
      sum_gx += dy * (gamma ? gamma[j] : 1.0) * x;
      if (diff_gamma) diff_gamma[j] += dy * x * s;
    }
    if (!diff_src) continue;
    for (std::int64_t j = 0; j < L; ++j) {
      const std::int64_t i = r * L + j;
      const double g = load_float(shape.dtype, diff_dst, i) * (gamma ? gamma[j] : 1.0);
      const double x = load_float(shape.dtype, src, i);
      diff_src[i] = s * g - s * s * s * x * sum_gx / static_cast<double>(L);
    }
  }
}

}  // namespace bnorm::kernels::rms_norm::ref

#include "kernels/layer_norm/ref.hpp"

#include <cmath>

#include "kernels/common/scalar.hpp"

namespace bnorm::kernels::layer_norm::ref {

void row_stats(const Shape& shape, const void* src, double* mean, double* var) {
  const double count = static_cast<double>(shape.len);
  for (std::int64_t r = 0; r < shape.rows; ++r) {
    const std::int64_t base = r * shape.len;
    double sum = 0.0;
    for (std::int64_t j = 0; j < shape.len; ++j) sum += load_float(shape.dtype, src, base + j);
    const double m = sum / count;
    double m2 = 0.0;
    for (std::int64_t j = 0; j < shape.len; ++j) {
      const double d = load_float(shape.dtype, src, base + j) - m;
      m2 += d * d;
    }
    mean[r] = m;
    var[r] = m2 / count;
  }
}

void normalize(const Shape& shape, const void* src, const double* mean, const double* var, double eps,
               const float* gamma, const float* beta, double* dst) {
  for (std::int64_t r = 0; r < shape.rows; ++r) {
    const double invstd = 1.0 / std::sqrt(var[r] + eps);
    for (std::int64_t j = 0; j < shape.len; ++j) {
      const std::int64_t i = r * shape.len + j;
      const double xhat = (load_float(shape.dtype, src, i) - mean[r]) * invstd;
      dst[i] = xhat * (gamma ? gamma[j] : 1.0) + (beta ? beta[j] : 0.0);
    }
  }
}

void backward(const Shape& shape, const void* src, const void* diff_dst, const float* gamma, const float* mean,
              const float* invstd, double* diff_src, double* diff_gamma, double* diff_beta) {
  const std::int64_t L = shape.len;
  for (std::int64_t j = 0; j < L; ++j) {
    if (diff_gamma) diff_gamma[j] = 0.0;
    if (diff_beta) diff_beta[j] = 0.0;
  }
  for (std::int64_t r = 0; r < shape.rows; ++r) {
    double sum_g = 0.0, sum_g_xhat = 0.0;
    for (std::int64_t j = 0; j < L; ++j) {
      const std::int64_t i = r * L + j;
      const double dy = load_float(shape.dtype, diff_dst, i);
      const double xhat = (load_float(shape.dtype, src, i) - mean[r]) * invstd[r];
      const double g = dy * (gamma ? gamma[j] : 1.0);
      sum_g += g;
      sum_g_xhat += g * xhat;
      if (diff_gamma) diff_gamma[j] += dy * xhat;
      if (diff_beta) diff_beta[j] += dy;
    }
    if (!diff_src) continue;
    for (std::int64_t j = 0; j < L; ++j) {
      const std::int64_t i = r * L + j;
      const double g = load_float(shape.dtype, diff_dst, i) * (gamma ? gamma[j] : 1.0);
      const double xhat = (load_float(shape.dtype, src, i) - mean[r]) * invstd[r];
      diff_src[i] = invstd[r] * (g - sum_g / static_cast<double>(L) - xhat * sum_g_xhat / static_cast<double>(L));
    }
  }
}

}  // namespace bnorm::kernels::layer_norm::ref

#include "kernels/batch_norm/ref.hpp"

#include <cmath>

#include "kernels/common/scalar.hpp"

namespace bnorm::kernels::batch_norm::ref {

void batch_stats(const Shape& shape, const void* src, double* mean, double* var) {
  const double count = static_cast<double>(shape.n * shape.s);
  for (std::int64_t c = 0; c < shape.c; ++c) {
    double sum = 0.0;
    for (std::int64_t n = 0; n < shape.n; ++n)
      for (std::int64_t s = 0; s < shape.s; ++s) sum += load_float(shape.dtype, src, shape.index(n, c, s));
    const double m = sum / count;
    double m2 = 0.0;
    for (std::int64_t n = 0; n < shape.n; ++n)
      for (std::int64_t s = 0; s < shape.s; ++s) {
        const double d = load_float(shape.dtype, src, shape.index(n, c, s)) - m;
        m2 += d * d;
      }
    mean[c] = m;
    var[c] = m2 / count;
  }
}

void normalize(const Shape& shape, const void* src, const double* mean, const double* var, double eps,
               const float* gamma, const float* beta, double* dst) {
  for (std::int64_t c = 0; c < shape.c; ++c) {
    const double invstd = 1.0 / std::sqrt(var[c] + eps);
    const double g = gamma ? gamma[c] : 1.0;
    const double b = beta ? beta[c] : 0.0;
    for (std::int64_t n = 0; n < shape.n; ++n)
      for (std::int64_t s = 0; s < shape.s; ++s) {
        const std::int64_t i = shape.index(n, c, s);
        dst[i] = (load_float(shape.dtype, src, i) - mean[c]) * invstd * g + b;
      }
  }
}

void backward(const Shape& shape, const void* src, const void* diff_dst, const float* gamma,
              const float* mean, const float* invstd, bool batch_stats, double* diff_src, double* diff_gamma,
              double* diff_beta) {
  const double count = static_cast<double>(shape.n * shape.s);
  for (std::int64_t c = 0; c < shape.c; ++c) {
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (std::int64_t n = 0; n < shape.n; ++n)
      for (std::int64_t s = 0; s < shape.s; ++s) {
        const std::int64_t i = shape.index(n, c, s);
        const double dy = load_float(shape.dtype, diff_dst, i);
        const double xhat = (load_float(shape.dtype, src, i) - mean[c]) * invstd[c];
        sum_dy += dy;
        sum_dy_xhat += dy * xhat;
      }
    if (diff_gamma) diff_gamma[c] = sum_dy_xhat;
    if (diff_beta) diff_beta[c] = sum_dy;
    if (!diff_src) continue;
    const double g = gamma ? gamma[c] : 1.0;
    for (std::int64_t n = 0; n < shape.n; ++n)
      for (std::int64_t s = 0; s < shape.s; ++s) {
        const std::int64_t i = shape.index(n, c, s);
        const double dy = load_float(shape.dtype, diff_dst, i);
        if (batch_stats) {
          const double xhat = (load_float(shape.dtype, src, i) - mean[c]) * invstd[c];
          diff_src[i] = g * invstd[c] * (dy - sum_dy / count - xhat * sum_dy_xhat / count);
        } else {
          diff_src[i] = g * invstd[c] * dy;
        }
      }
  }
}

}  // namespace bnorm::kernels::batch_norm::ref

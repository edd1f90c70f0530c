#include "kernels/group_norm/ref.hpp"

#include <cmath>

#include "kernels/common/scalar.hpp"

namespace bnorm::kernels::group_norm::ref {

namespace {
// Calls f(index) for every element of group g of sample n.
template <class F>
void for_group(const Shape& sh, std::int64_t n, std::int64_t g, F&& f) {
  const std::int64_t cg = sh.group_channels();
  for (std::int64_t c = g * cg; c < (g + 1) * cg; ++c)
    for (std::int64_t s = 0; s < sh.s; ++s) f(c, sh.index(n, c, s));
}
}  // namespace

void group_stats(const Shape& sh, const void* src, double* mean, double* var) {
  const double count = static_cast<double>(sh.group_channels() * sh.s);
  for (std::int64_t n = 0; n < sh.n; ++n)
    for (std::int64_t g = 0; g < sh.g; ++g) {
      double sum = 0.0;
      for_group(sh, n, g, [&](std::int64_t, std::int64_t i) { sum += load_float(sh.dtype, src, i); });
      const double m = sum / count;
      double m2 = 0.0;
      for_group(sh, n, g, [&](std::int64_t, std::int64_t i) {
        const double d = load_float(sh.dtype, src, i) - m;
        m2 += d * d;
      });
      mean[n * sh.g + g] = m;
      var[n * sh.g + g] = m2 / count;
    }
}

void normalize(const Shape& sh, const void* src, const double* mean, const double* var, double eps,
               const float* gamma, const float* beta, double* dst) {
  for (std::int64_t n = 0; n < sh.n; ++n)
    for (std::int64_t g = 0; g < sh.g; ++g) {
      const double m = mean[n * sh.g + g], invstd = 1.0 / std::sqrt(var[n * sh.g + g] + eps);
      for_group(sh, n, g, [&](std::int64_t c, std::int64_t i) {
        dst[i] = (load_float(sh.dtype, src, i) - m) * invstd * (gamma ? gamma[c] : 1.0) + (beta ? beta[c] : 0.0);
      });
    }
}

void backward(const Shape& sh, const void* src, const void* diff_dst, const float* gamma, const float* mean,
              const float* invstd, double* diff_src, double* diff_gamma, double* diff_beta) {
  for (std::int64_t c = 0; c < sh.c; ++c) {
    if (diff_gamma) diff_gamma[c] = 0.0;
    if (diff_beta) diff_beta[c] = 0.0;
  }
  const double count = static_cast<double>(sh.group_channels() * sh.s);
  for (std::int64_t n = 0; n < sh.n; ++n)
    for (std::int64_t g = 0; g < sh.g; ++g) {
      const double m = mean[n * sh.g + g], rs = invstd[n * sh.g + g];
      // With dxhat = dy * gamma: dx = rs * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
      double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;
      for_group(sh, n, g, [&](std::int64_t c, std::int64_t i) {
        const double dy = load_float(sh.dtype, diff_dst, i);
        const double xhat = (load_float(sh.dtype, src, i) - m) * rs;
        const double dxhat = dy * (gamma ? gamma[c] : 1.0);
        sum_dxhat += dxhat;
        sum_dxhat_xhat += dxhat * xhat;
        if (diff_gamma) diff_gamma[c] += dy * xhat;
        if (diff_beta) diff_beta[c] += dy;
      });
      if (!diff_src) continue;
      for_group(sh, n, g, [&](std::int64_t c, std::int64_t i) {
        const double dy = load_float(sh.dtype, diff_dst, i);
        const double xhat = (load_float(sh.dtype, src, i) - m) * rs;
        const double dxhat = dy * (gamma ? gamma[c] : 1.0);
        diff_src[i] = rs * (dxhat - sum_dxhat / count - xhat * sum_dxhat_xhat / count);
      });
    }
}

}  // namespace bnorm::kernels::group_norm::ref

#include "ops/batch_norm/common.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/parallel.hpp"

namespace bnorm::ops::batch_norm {

void merge_into(Stats& a, const Stats& b) {
  if (b.count == 0.0) return;
  if (a.count == 0.0) {
    a = b;
    return;
  }
  const double count = a.count + b.count;
  if (!std::isfinite(a.mean) || !std::isfinite(b.mean)) {
    a = {count, a.mean + b.mean, std::numeric_limits<double>::quiet_NaN()};
    return;
  }
  const double delta = b.mean - a.mean;
  a.mean += delta * (b.count / count);
  a.m2 += b.m2 + delta * delta * (a.count * b.count / count);
  a.count = count;
}

double merge_moments(std::int64_t n, double count_a, double* mean_a, double* m2_a, double count_b,
                     const double* mean_b, const double* m2_b) {
  if (count_b == 0.0) return count_a;
  if (count_a == 0.0) {
    std::copy(mean_b, mean_b + n, mean_a);
    std::copy(m2_b, m2_b + n, m2_a);
    return count_b;
  }
  const double count = count_a + count_b;
  const double wb = count_b / count, wab = count_a * count_b / count;
  for (std::int64_t i = 0; i < n; ++i) {
    if (std::isfinite(mean_a[i]) && std::isfinite(mean_b[i])) {
      const double delta = mean_b[i] - mean_a[i];
      mean_a[i] += delta * wb;
      m2_a[i] += m2_b[i] + delta * delta * wab;
    } else {
      mean_a[i] += mean_b[i];
      m2_a[i] = std::numeric_limits<double>::quiet_NaN();
    }
  }
  return count;
}

bool stats_from_shifted_sums(double n, float pivot, double s1, double s2, Stats* out) {
  double mean, m2;
  if (!stats_from_shifted_sums(1, n, &pivot, &s1, &s2, &mean, &m2)) return false;
  *out = {n, mean, m2};
  return true;
}

bool stats_from_shifted_sums(std::int64_t channels, double n, const float* pivot, const double* s1,
                             const double* s2, double* mean, double* m2) {
  const double inv_n = 1.0 / n;
  bool exact = true;
  for (std::int64_t c = 0; c < channels; ++c) {
    const double a = s1[c], b = s2[c], offset = a * inv_n;
    // o^2 <= var/4 with var = s2/n - o^2 is o^2 <= s2/(5n); false for NaN.
    exact &= offset * offset <= 0.2 * b * inv_n && b - b == 0.0;
    mean[c] = pivot[c] + offset;
    m2[c] = std::max(b - a * offset, 0.0);
  }
  return exact;
}

namespace {

// a / b (b >= 0) where its 0 / 0 and inf / inf forms have a limit: `zero`
// for 0 / 0 (a channel constant in the batch, with running var 0 and eps 0:
// r = 1, d = 0), an infinity of a's sign for inf / inf (the limit it clips
// to). A NaN operand stays NaN.
double renorm_quotient(double a, double b, double zero) {
  if (a == 0.0 && b == 0.0) return zero;
  if (std::isinf(a) && std::isinf(b)) return std::copysign(INFINITY, a);
  return a / b;
}

// Batch renormalization's normalizers: BN's with gamma * r and beta + gamma
// * d, in chunks through small local arrays (no allocation).
void finish_renorm(const TrainingOutputs& o, std::int64_t c0, std::int64_t c1, double count, const double* mean,
                   const double* m2, float* center, float* scale, float* shift, double* invstd, bool write) {
  constexpr std::int64_t kChunk = 64;
  float g[kChunk], b[kChunk];
  const Renorm& rn = *o.renorm;
  for (std::int64_t base = c0; base < c1; base += kChunk) {
    const std::int64_t n = std::min(kChunk, c1 - base);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t c = base + i, j = c - c0;
      const double sigma_b = std::sqrt(m2[j] / count + o.eps);
      const double sigma = std::sqrt(static_cast<double>(rn.old_var[c]) + o.eps);
      // Limits of 1 and 0 pin r and d whatever the running statistics hold
      // (a NaN there must not leave BatchNorm, which those limits are).
      const double r =
          rn.r_max == 1.0 ? 1.0 : std::clamp(renorm_quotient(sigma_b, sigma, 1.0), 1.0 / rn.r_max, rn.r_max);
      const double d =
          rn.d_max == 0.0
              ? 0.0
              : std::clamp(renorm_quotient(mean[j] - static_cast<double>(rn.old_mean[c]), sigma, 0.0),
                           -rn.d_max, rn.d_max);
      const double gamma = o.gamma ? o.gamma[c] : 1.0, beta = o.beta ? o.beta[c] : 0.0;
      g[i] = static_cast<float>(gamma * r);
      // d = 0 leaves beta as BatchNorm has it (a -0 stays -0, an infinite
      // gamma makes no NaN).
      b[i] = static_cast<float>(d == 0.0 ? beta : beta + gamma * d);
      if (write && rn.save_r) rn.save_r[c] = static_cast<float>(r);
      if (write && rn.save_d) rn.save_d[c] = static_cast<float>(d);
    }
    const std::int64_t j = base - c0;
    k::finish_channels(n, count, mean + j, m2 + j, o.eps, k::ZeroVariance::zero, g, b, center + j, scale + j,
                       shift + j, invstd + j);
  }
}

}  // namespace

void TrainingOutputs::finish(std::int64_t c0, std::int64_t c1, double count, const double* mean,
                             const double* m2, float* center, float* scale, float* shift, double* invstd,
                             bool write) const {
  const std::int64_t n = c1 - c0;
  if (renorm) {
    // r and d come from the running statistics as they were before the step.
    finish_renorm(*this, c0, c1, count, mean, m2, center, scale, shift, invstd, write);
  } else {
    k::finish_channels(n, count, mean, m2, eps, k::ZeroVariance::zero, gamma ? gamma + c0 : nullptr,
                       beta ? beta + c0 : nullptr, center, scale, shift, invstd);
  }
  if (!write) return;
  for (std::int64_t i = 0; i < n; ++i) {
    if (save_mean) save_mean[c0 + i] = static_cast<float>(mean[i]);
    if (save_invstd) save_invstd[c0 + i] = static_cast<float>(invstd[i]);
  }
  if (!running_mean) return;
  // Unbiased for PyTorch (count > 1 was checked), biased for ONNX.
  const double var_scale = 1.0 / (unbiased ? count - 1.0 : count);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t c = c0 + i;
    running_mean[c] = static_cast<float>((1.0 - factor) * running_mean[c] + factor * mean[i]);
    running_var[c] = static_cast<float>((1.0 - factor) * running_var[c] + factor * m2[i] * var_scale);
  }
}

Affine TrainingOutputs::finish(std::int64_t c, const Stats& st, bool write) const {
  Affine a;
  double invstd;
  finish(c, c + 1, st.count, &st.mean, &st.m2, &a.center, &a.scale, &a.shift, &invstd, write);
  return a;
}

void BackwardOutputs::finish(std::int64_t c0, std::int64_t c1, double count, const double* sum_dy,
                             const double* sum_dy_xc, float* k_dy, float* k_xc, float* k_const,
                             bool write) const {
  const std::int64_t n = c1 - c0;
  if (local_sum_dy) {
    if (write) {
      std::copy(sum_dy, sum_dy + n, local_sum_dy + c0);
      std::copy(sum_dy_xc, sum_dy_xc + n, local_sum_dy_xc + c0);
    }
    return;
  }
  if (global_sum_dy) {
    sum_dy = global_sum_dy + c0;
    sum_dy_xc = global_sum_dy_xc + c0;
    count = global_count;
  }
  if (write && diff_gamma)
    for (std::int64_t i = 0; i < n; ++i) {
      const double dg = sum_dy_xc[i] * invstd[c0 + i];
      diff_gamma[c0 + i] = static_cast<float>(
          renorm_r ? dg * renorm_r[c0 + i] + sum_dy[i] * static_cast<double>(renorm_d[c0 + i]) : dg);
    }
  if (write && diff_beta)
    for (std::int64_t i = 0; i < n; ++i) diff_beta[c0 + i] = static_cast<float>(sum_dy[i]);
  // Batch statistics: the gradient also flows through the mean and variance.
  const double inv_count = stats == BackwardStats::batch && count > 0.0 ? 1.0 / count : 0.0;
  if (!renorm_r) {
    k::backward_coefficients(n, inv_count, sum_dy, sum_dy_xc, gamma ? gamma + c0 : nullptr, invstd + c0, k_dy,
                             k_xc, k_const);
    return;
  }
  // Renormalization: BN's backward with gamma * r (r, d are constants).
  constexpr std::int64_t kChunk = 64;
  float g[kChunk];
  for (std::int64_t base = 0; base < n; base += kChunk) {
    const std::int64_t m = std::min(kChunk, n - base);
    for (std::int64_t i = 0; i < m; ++i) {
      const std::int64_t c = c0 + base + i;
      g[i] = static_cast<float>((gamma ? static_cast<double>(gamma[c]) : 1.0) * renorm_r[c]);
    }
    k::backward_coefficients(m, inv_count, sum_dy + base, sum_dy_xc + base, g, invstd + c0 + base, k_dy + base,
                             k_xc + base, k_const + base);
  }
}

BackwardCoefs BackwardOutputs::finish(std::int64_t c, double count, double sum_dy, double sum_dy_xc,
                                      bool write) const {
  BackwardCoefs kc;
  finish(c, c + 1, count, &sum_dy, &sum_dy_xc, &kc.k_dy, &kc.k_xc, &kc.k_const, write);
  return kc;
}

void wrap_cyclic(float* cyclic, std::int64_t channels, std::int64_t c0, std::int64_t c1) {
  // Only channels below length - C have entries past the first C.
  const std::int64_t length = k::cyclic_length(channels);
  c1 = std::min(c1, length - channels);
  for (std::int64_t c = c0; c < c1; ++c)
    for (std::int64_t j = c + channels; j < length; j += channels) cyclic[j] = cyclic[c];
}

// Outputs bigger than what the cores' L2 caches hold cannot stay in cache
// anyway; streaming them skips the read-for-ownership, a third of the DRAM
// traffic of an elementwise pass.
std::size_t streaming_threshold_bytes() noexcept { return 4 * l2_cache_bytes(); }

}  // namespace bnorm::ops::batch_norm

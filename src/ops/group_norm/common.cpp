#include "ops/group_norm/common.hpp"

#include <algorithm>
#include <cmath>

#include "kernels/common/scalar.hpp"

namespace bnorm::ops::group_norm {

Stats contiguous_stats(DType dt, const void* x, std::int64_t n) {
  if (n == 0) return {};
  // The pivot: within half a standard deviation of the mean unless the data
  // is very skewed, and then the guard sends us to the second pass.
  const std::int64_t samples = std::min<std::int64_t>(64, n);
  double sum = 0.0;
  for (std::int64_t i = 0; i < samples; ++i) sum += kernels::load_float(dt, x, i * n / samples);
  const float pivot = batch_norm::finite_or_zero(static_cast<float>(sum / static_cast<double>(samples)));
  double sums[2];
  k::shifted_sums(dt, x, k::Runs{1, n, n}, pivot, sums);
  return stats_from_sums(dt, x, n, pivot, sums);
}

float block_pivot(DType dt, const void* x, std::int64_t planes, std::int64_t s) {
  // At most an eighth of a small block (at least 8 values): reading all of
  // it in scalar loads cost more than its sums (29% of the time of 4-value
  // planes).
  const std::int64_t budget = std::max<std::int64_t>(8, planes * s / 8);
  const std::int64_t used = std::min({std::int64_t{64}, planes, budget});
  const std::int64_t values = std::clamp<std::int64_t>(budget / used, 1, std::min<std::int64_t>(8, s));
  double sum = 0.0;
  for (std::int64_t i = 0; i < used; ++i) {
    const std::int64_t start = (i * planes / used) * s;
    for (std::int64_t j = 0; j < values; ++j) sum += kernels::load_float(dt, x, start + j);
  }
  return batch_norm::finite_or_zero(static_cast<float>(sum / static_cast<double>(used * values)));
}

Stats stats_from_sums(DType dt, const void* x, std::int64_t n, float pivot, const double sums[2]) {
  const double count = static_cast<double>(n);
  Stats st;
  if (batch_norm::stats_from_shifted_sums(count, pivot, sums[0], sums[1], &st)) return st;
  const double mean = pivot + sums[0] / count;
  const float center = static_cast<float>(mean);
  const double sq = k::sum_sq_centered(dt, x, k::Runs{1, n, n}, center);
  const double dm = mean - static_cast<double>(center);
  return {count, mean, std::max(sq - count * dm * dm, 0.0)};  // std::max keeps a NaN first argument
}

void finish_planes(const Problem& p, std::int64_t first, std::int64_t count, const double* mean_rep,
                   const double* m2_rep, const ForwardArgs& a, float* center, float* scale, float* shift,
                   double* invstd_rep) {
  // One call per run of planes within one sample (gamma and beta are
  // contiguous there).
  const double values = static_cast<double>(p.group_count());
  for (std::int64_t q = 0; q < count;) {
    const std::int64_t c = (first + q) % p.c, len = std::min(count - q, p.c - c);
    k::finish_channels(len, values, mean_rep + q, m2_rep + q, a.eps, a.zero_variance,
                       a.gamma ? a.gamma + c : nullptr, a.beta ? a.beta + c : nullptr, center + q, scale + q,
                       shift + q, invstd_rep + q);
    q += len;
  }
}

void block_coefficients(const Problem& p, std::int64_t n, std::int64_t g, const double* ds, const double* db,
                        const BackwardArgs& a, float* center, float* k_dy, float* k_xc, float* k_const,
                        double* acc_dgamma, double* acc_dbeta) {
  const std::int64_t cg = p.group_channels(), c0 = g * cg;
  const float mean = a.mean[n * p.g + g];
  const double rs = a.invstd[n * p.g + g];
  // With dxhat = gamma * dy and xhat = (x - mean) * rs over the M values of
  // the block: dx = rs * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
  // mean(dxhat) = sum_c gamma_c ds_c / M, mean(dxhat * xhat) = rs *
  // sum_c gamma_c db_c / M.
  double sum_g_ds = 0.0, sum_g_db = 0.0;
  for (std::int64_t j = 0; j < cg; ++j) {
    const double gamma = a.gamma ? a.gamma[c0 + j] : 1.0;
    sum_g_ds += gamma * ds[j];
    sum_g_db += gamma * db[j];
    if (acc_dgamma) acc_dgamma[c0 + j] += db[j] * rs;
    if (acc_dbeta) acc_dbeta[c0 + j] += ds[j];
  }
  const double inv_m = 1.0 / static_cast<double>(p.group_count());
  const auto xc = static_cast<float>(-rs * rs * rs * sum_g_db * inv_m);
  const auto cst = static_cast<float>(-rs * sum_g_ds * inv_m);
  // A group of one value normalizes to beta whatever x is: dx is exactly 0
  // (the general form would leave the rounding of k_dy * dy + k_const).
  const bool single = p.group_count() == 1;
  for (std::int64_t j = 0; j < cg; ++j) {
    center[j] = mean;
    k_dy[j] = single ? 0.0f : static_cast<float>((a.gamma ? a.gamma[c0 + j] : 1.0) * rs);
    k_xc[j] = single ? 0.0f : xc;
    k_const[j] = single ? 0.0f : cst;
  }
}

void update_running(const Team& team, const Problem& p, const double* mean, const double* m2,
                    const GroupRunning& running) {
  team.barrier();
  // Each sample's copy: (1 - m) * r + m * stat; their average over the batch.
  const double m = running.momentum, inv_n = 1.0 / static_cast<double>(p.n);
  const double unbias = 1.0 / static_cast<double>(p.group_count() - 1);
  // Groups in chunks, samples outer: the statistics are N x G, and a walk
  // down one group's column touched a page per sample.
  constexpr std::int64_t kChunk = 64;
  team.for_each_worker([&](int w) {
    const std::int64_t g_end = split_point(p.g, team.workers, w + 1);
    for (std::int64_t g0 = split_point(p.g, team.workers, w); g0 < g_end; g0 += kChunk) {
      const std::int64_t len = std::min(kChunk, g_end - g0);
      double sum_mean[kChunk] = {}, sum_var[kChunk] = {};
      for (std::int64_t n = 0; n < p.n; ++n)
        for (std::int64_t j = 0; j < len; ++j) {
          sum_mean[j] += mean[n * p.g + g0 + j];
          sum_var[j] += m2[n * p.g + g0 + j] * unbias;
        }
      for (std::int64_t j = 0; j < len; ++j) {
        const std::int64_t g = g0 + j;
        running.mean[g] = static_cast<float>((1.0 - m) * running.mean[g] + m * sum_mean[j] * inv_n);
        running.var[g] = static_cast<float>((1.0 - m) * running.var[g] + m * sum_var[j] * inv_n);
      }
    }
  });
}

void merge_parameter_grads(std::int64_t c0, std::int64_t c1, int workers, const double* partials,
                           std::int64_t stride, std::int64_t channels, float* diff_gamma, float* diff_beta) {
  for (std::int64_t c = c0; c < c1; ++c) {
    double dg = 0.0, db = 0.0;
    for (int w = 0; w < workers; ++w) {
      dg += partials[w * stride + c];
      db += partials[w * stride + channels + c];
    }
    if (diff_gamma) diff_gamma[c] = static_cast<float>(dg);
    if (diff_beta) diff_beta[c] = static_cast<float>(db);
  }
}

}  // namespace bnorm::ops::group_norm

// Pieces shared by the batch-norm plans: statistics and their merges, the
// per-channel finishing of training and backward, cyclic-array helpers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "bnorm/batch_norm.hpp"
#include "kernels/batch_norm/kernels.hpp"

namespace bnorm::ops::batch_norm {
namespace k = kernels::batch_norm;

/// Count, mean and sum of squared deviations of a set of values.
struct Stats {
  double count = 0.0;
  double mean = 0.0;
  double m2 = 0.0;
};

/// Chan et al.'s pairwise merge of b into a. Inf or NaN means make the
/// merged mean their sum (inf stays inf, as in ATen) and M2 NaN.
void merge_into(Stats& a, const Stats& b);

/// Chan's merge of moments b into a for n channels that all have the same
/// counts (so the weights are scalars); returns the merged count.
double merge_moments(std::int64_t n, double count_a, double* mean_a, double* m2_a, double count_b,
                     const double* mean_b, const double* m2_b);

/// Statistics of n values from one pass of shifted sums, s1 = sum(d) and
/// s2 = sum(d^2) with d = x - pivot: mean = pivot + s1/n, M2 = s2 - s1^2/n.
/// The subtraction removes the part of s2 due to the pivot's offset o = s1/n
/// from the mean (s2/n = var + o^2). Accepted only when o^2 <= var/4: then it
/// removes at most a fifth of s2 and M2 keeps all but a factor 1.25 of s2's
/// accuracy, so there is no cancellation (DESIGN.md section 3). Returns false
/// otherwise (or for non-finite data); the caller then makes an exact second
/// pass about the mean, from cache.
bool stats_from_shifted_sums(double n, float pivot, double s1, double s2, Stats* out);
/// The same for `channels` channels with n values each (the outputs may
/// alias s1 / s2); true when all are exact.
bool stats_from_shifted_sums(std::int64_t channels, double n, const float* pivot, const double* s1,
                             const double* s2, double* mean, double* m2);

/// v, or 0 when v is Inf or NaN (a pivot must be finite to be useful).
inline float finite_or_zero(float v) { return v - v == 0.0f ? v : 0.0f; }

/// Normalizer of one channel: y = (x - center) * scale + shift.
struct Affine {
  float center = 0.0f;
  float scale = 1.0f;
  float shift = 0.0f;
};

/// Batch renormalization (Ioffe 2017) on top of a training step: per channel
/// r = clip(sigma_B / sigma, 1/r_max, r_max) and d = clip((mu_B - mu) /
/// sigma, -d_max, d_max) from the batch and the running statistics (before
/// their update), and y = gamma * (xhat * r + d) + beta, i.e. BN with gamma
/// * r and beta + gamma * d. With r_max = 1 and d_max = 0 it is BN exactly.
struct Renorm {
  double r_max = 1.0;
  double d_max = 0.0;
  float* save_r = nullptr;
  float* save_d = nullptr;
  /// A copy of the running statistics from before the step: workers that
  /// share a channel read them while one of them updates the running ones.
  const float* old_mean = nullptr;
  const float* old_var = nullptr;
};

/// The outputs of a training step and how to fill them from statistics.
struct TrainingOutputs {
  const float* gamma;
  const float* beta;
  float* save_mean;
  float* save_invstd;
  float* running_mean;
  float* running_var;
  double eps;
  double factor;  // weight of this batch in the running averages
  bool unbiased;  // running variance unbiased (PyTorch) or biased (ONNX)
  const Renorm* renorm = nullptr;  // batch renormalization (needs running statistics)
  k::Epilogue post{};              // fused residual add / ReLU on dst

  /// Channels [c0, c1), each with `count` values: mean and m2 hold their
  /// statistics, center/scale/shift receive their normalizers (all indexed
  /// from c0). With `write`, also the saved and running statistics.
  /// invstd: scratch for c1 - c0 doubles.
  void finish(std::int64_t c0, std::int64_t c1, double count, const double* mean, const double* m2,
              float* center, float* scale, float* shift, double* invstd, bool write) const;
  /// One channel.
  Affine finish(std::int64_t c, const Stats& st, bool write) const;
};

/// Backward of one channel: dx = k_dy*dy + k_xc*(x - mean) + k_const.
struct BackwardCoefs {
  float k_dy = 0.0f, k_xc = 0.0f, k_const = 0.0f;
};

/// The outputs of a backward step and how to fill them from the sums.
struct BackwardOutputs {
  const float* gamma;
  const float* invstd;
  float* diff_gamma;
  float* diff_beta;
  BackwardStats stats;
  /// Batch renormalization's r and d per channel (constants in backward):
  /// dx as BN with gamma * r, diff_gamma = r * sum(dy * xhat) + d * sum(dy).
  const float* renorm_r = nullptr;
  const float* renorm_d = nullptr;
  /// The fused ReLU's gate (forward output) and the residual's gradient.
  k::Gate gate{};
  /// SyncBatchNorm, first pass: finish() only stores this process's sums
  /// here (indexed by channel) and computes nothing else (run with no
  /// diff_src).
  double* local_sum_dy = nullptr;
  double* local_sum_dy_xc = nullptr;
  /// SyncBatchNorm, second pass: finish() takes these sums over every
  /// process and their count in place of its own (run without reduce).
  const double* global_sum_dy = nullptr;
  const double* global_sum_dy_xc = nullptr;
  double global_count = 0.0;

  /// Channels [c0, c1) with `count` values each; sums indexed from c0,
  /// coefficients written from index 0 of k_dy / k_xc / k_const. With
  /// `write`, also the parameter gradients.
  void finish(std::int64_t c0, std::int64_t c1, double count, const double* sum_dy, const double* sum_dy_xc,
              float* k_dy, float* k_xc, float* k_const, bool write) const;
  /// One channel.
  BackwardCoefs finish(std::int64_t c, double count, double sum_dy, double sum_dy_xc, bool write) const;
};

/// Writes the wrap-around entries (beyond the first C) of a cyclic array for
/// channels [c0, c1), whose first entries are in place.
void wrap_cyclic(float* cyclic, std::int64_t channels, std::int64_t c0, std::int64_t c1);

/// Outputs larger than this go out with non-temporal stores.
std::size_t streaming_threshold_bytes() noexcept;

}  // namespace bnorm::ops::batch_norm

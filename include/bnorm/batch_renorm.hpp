// Batch renormalization (Ioffe, "Batch Renormalization: Towards Reducing
// Minibatch Dependence in Batch-Normalized Models", 2017).
//
// Training normalizes with the batch statistics and then corrects toward
// the running ones, per channel:
//   sigma_B = sqrt(var_B + eps), sigma = sqrt(running_var + eps)
//   r = clip(sigma_B / sigma, 1/r_max, r_max)
//   d = clip((mean_B - running_mean) / sigma, -d_max, d_max)
//   dst = gamma * (xhat * r + d) + beta,   xhat = (src - mean_B) / sigma_B
// with r and d computed from the running statistics as they were before
// the step, and treated as constants in backward. The running statistics
// are updated as BatchNorm's. With r_max = 1 and d_max = 0, r = 1 and d =
// 0: the result is BatchNorm's, bit for bit. Inference is BatchNorm's
// inference (batch_norm_forward_inference with the running statistics).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "bnorm/batch_norm.hpp"

namespace bnorm {

/// The clipping limits of one training step.
struct BatchRenormLimits {
  double r_max = 3.0;  ///< >= 1
  double d_max = 5.0;  ///< >= 0
};

/// Training-mode forward of batch renormalization. As
/// batch_norm_forward_training, plus save_r / save_d (C values each,
/// optional) receiving r and d for the backward. The running statistics are
/// required (r and d are made from them). Throws Error(invalid_argument) for
/// r_max < 1 or d_max < 0, Error(null_pointer) without running statistics.
void batch_renorm_forward_training(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                   void* dst, const float* gamma, const float* beta, float* save_mean,
                                   float* save_invstd, float* save_r, float* save_d, const RunningStats& running,
                                   const BatchRenormLimits& limits, const BatchNormConfig& config = {});

/// Backward of batch_renorm_forward_training, with r and d constants:
/// diff_src = gamma * r * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)),
/// diff_gamma = r * sum(dy * xhat) + d * sum(dy), diff_beta = sum(dy).
/// mean / invstd / r / d are the saved values of the forward (required);
/// diff_src, diff_gamma and diff_beta are optional.
void batch_renorm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                           const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src,
                           const float* gamma, const float* mean, const float* invstd, const float* r,
                           const float* d, float* diff_gamma, float* diff_beta);

/// The paper's schedule of the limits: plain BatchNorm (r_max = 1, d_max =
/// 0) for `warmup_steps`, then r_max rises linearly to its target over
/// `r_ramp_steps` and d_max to its target over `d_ramp_steps`. The defaults
/// are the paper's: BN for 5k steps, r_max 1 -> 3 by step 40k, d_max 0 -> 5
/// by step 25k.
class BatchRenormSchedule {
 public:
  /// Throws Error(invalid_argument) for r_max < 1, d_max < 0, a target that
  /// is not finite, or a negative step count.
  explicit BatchRenormSchedule(double r_max = 3.0, double d_max = 5.0, std::int64_t warmup_steps = 5000,
                               std::int64_t r_ramp_steps = 35000, std::int64_t d_ramp_steps = 20000);
  /// The limits at training step `step` (0-based; a negative step is
  /// warm-up). Any int64 step, INT64_MAX included, is valid.
  BatchRenormLimits at(std::int64_t step) const noexcept;

 private:
  double r_max_, d_max_;
  std::int64_t warmup_, r_ramp_, d_ramp_;
};

/// A batch-renormalization layer (BatchNorm{1,2,3}d with renormalization in
/// training): gamma, beta, running statistics, a step counter driving the
/// schedule, train/eval mode. Eval mode is BatchNorm's inference.
class BatchRenorm {
 public:
  struct Options {
    std::int64_t num_features = 0;  ///< C, > 0
    double eps = 1e-5;              ///< >= 0
    double momentum = 0.01;         ///< in [0, 1] (the paper uses small values)
    BatchRenormSchedule schedule{};
  };
  /// Throws Error(invalid_argument) for num_features <= 0, eps < 0 or
  /// momentum outside [0, 1]. Starts in training mode at step 0.
  explicit BatchRenorm(const Options& options);

  void train(bool on = true) noexcept { training_ = on; }
  void eval() noexcept { training_ = false; }
  bool is_training() const noexcept { return training_; }

  /// Training: renormalized forward with the schedule's limits at the
  /// current step, then the step advances. Eval: the running statistics.
  void forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst);
  /// Backward of the last training forward (diff_src optional); gradients
  /// of gamma and beta go to weight_grad / bias_grad. Throws
  /// Error(invalid_argument) before any training forward, and
  /// Error(shape_mismatch) when src_desc's dims are not that forward's.
  void backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src);

  std::span<float> weight() noexcept { return weight_; }
  std::span<float> bias() noexcept { return bias_; }
  std::span<float> running_mean() noexcept { return running_mean_; }
  std::span<float> running_var() noexcept { return running_var_; }
  std::span<const float> weight_grad() const noexcept { return weight_grad_; }
  std::span<const float> bias_grad() const noexcept { return bias_grad_; }
  /// r and d of the last training forward.
  std::span<const float> saved_r() const noexcept { return saved_r_; }
  std::span<const float> saved_d() const noexcept { return saved_d_; }
  /// Training steps taken (the schedule's position).
  std::int64_t step() const noexcept { return step_; }
  /// Resumes the schedule at `step` (restoring a checkpoint): the next
  /// training forward uses options().schedule.at(step). Throws
  /// Error(invalid_argument) for step < 0.
  void set_step(std::int64_t step);
  const Options& options() const noexcept { return options_; }

 private:
  void check_input(const TensorDesc& desc) const;

  Options options_;
  bool training_ = true;
  TensorDesc forward_desc_;  // src of the last training forward; rank 0 before any
  std::int64_t step_ = 0;
  std::vector<float> weight_, bias_, running_mean_, running_var_;
  std::vector<float> weight_grad_, bias_grad_, saved_mean_, saved_invstd_, saved_r_, saved_d_;
};

}  // namespace bnorm

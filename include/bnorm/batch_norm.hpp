// Batch normalization: functions on caller-owned buffers and the BatchNorm layer.
//
// Semantics are those of ATen's native_batch_norm / native_batch_norm_backward
// and torch.nn.BatchNorm{1,2,3}d (see DESIGN.md section 2):
//   mean_c, var_c  : batch mean and biased variance over N and spatial dims;
//   dst            = (src - mean_c) / sqrt(var_c + eps) * gamma_c + beta_c;
//   running mean   = (1 - momentum) * running_mean + momentum * mean_c;
//   running var    = the same with the unbiased variance var_c * n / (n - 1).
// Data may be f32, bf16 or f16; gamma, beta, statistics and gradients are f32
// arrays of C values. Every function throws bnorm::Error on bad input and
// leaves all outputs untouched when it does.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "bnorm/tensor.hpp"

namespace bnorm {

/// Running statistics updated by a training step. Leave mean and var null for
/// track_running_stats = false.
struct RunningStats {
  float* mean = nullptr;  ///< C values, updated in place
  float* var = nullptr;   ///< C values (unbiased), updated in place
  /// Incremented by each training step when not null (up to INT64_MAX,
  /// where it stays); required when momentum is std::nullopt (cumulative
  /// moving average). Must be >= 0 (invalid_argument otherwise).
  std::int64_t* num_batches_tracked = nullptr;
};

/// Hyper-parameters of a training step.
struct BatchNormConfig {
  double eps = 1e-5;  ///< added to the variance; must be >= 0
  /// Weight of the new batch statistics in the running average, in [0, 1].
  /// std::nullopt selects the cumulative moving average: the weight is
  /// 1 / num_batches_tracked after the increment (PyTorch's momentum=None).
  std::optional<double> momentum = 0.1;
  /// The running variance averages the unbiased batch variance (PyTorch).
  /// false averages the biased one, as ONNX BatchNormalization's
  /// training_mode does (whose momentum also weights the old value: pass
  /// 1 - onnx_momentum here).
  bool unbiased_running_var = true;
};

/// Training-mode forward. Normalizes src with its own batch statistics into
/// dst (which may be src itself). save_mean / save_invstd (optional) receive
/// the batch mean and 1/sqrt(biased var + eps), as ATen returns them (0, as
/// ATen's, where var and eps are both 0: dst is then beta); running
/// statistics are updated when given. gamma and beta may be null (1 and 0).
/// Throws when a channel has fewer than 2 values (N * spatial < 2).
void batch_norm_forward_training(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                 void* dst, const float* gamma, const float* beta, float* save_mean,
                                 float* save_invstd, const RunningStats& running = {},
                                 const BatchNormConfig& config = {});

/// Inference-mode forward with the given (running) mean and variance.
/// dst may be src itself. gamma and beta may be null (1 and 0).
void batch_norm_forward_inference(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                  void* dst, const float* gamma, const float* beta, const float* mean,
                                  const float* var, double eps = 1e-5);

/// Which statistics the forward pass normalized with.
enum class BackwardStats {
  /// Batch statistics (training forward): the gradient flows through the
  /// mean and variance, as in ATen's backward with train=true.
  batch,
  /// Constant statistics (inference forward, frozen BN): dx = dy*gamma*invstd.
  fixed,
};

/// Backward of either forward. mean and invstd are the save_mean/save_invstd
/// of a training forward, or for BackwardStats::fixed the running mean and
/// 1/sqrt(running_var + eps). diff_src, diff_gamma and diff_beta are each
/// optional (null = not wanted) and are overwritten, not accumulated.
/// diff_src may alias diff_dst or src exactly.
void batch_norm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                         const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src,
                         const float* gamma, const float* mean, const float* invstd, float* diff_gamma,
                         float* diff_beta, BackwardStats stats = BackwardStats::batch);

/// An activation fused into BatchNorm's output pass (ResNet blocks):
/// dst = relu(bn(src) + residual), with the residual optional. One pass
/// writes dst: no separate add and ReLU passes over memory.
struct BatchNormFusion {
  /// Added before the ReLU (e.g. the skip connection): same descriptor as
  /// src. Null: BN+ReLU.
  const void* residual = nullptr;
  /// Apply max(., 0) (NaN stays NaN). false with a residual: BN+Add.
  bool relu = true;
  /// Optional, with relu: receives the ReLU's mask, one bit per element,
  /// set where dst is not <= 0 (positive or NaN); a buffer of batch_norm_relu_mask_bytes(src_desc)
  /// bytes (its padding is neither written nor needs initializing). The
  /// backward overload that takes it then needs neither dst nor its bytes:
  /// the mask is 1/32 of f32 data, 1/16 of bf16 / f16.
  std::uint8_t* relu_mask = nullptr;
};

/// Size in bytes of a ReLU mask for tensors of this descriptor: one bit per
/// element in memory order (element i: bit i % 8 of byte i / 8), and 8
/// bytes of padding that the backward may read but that nothing writes.
std::size_t batch_norm_relu_mask_bytes(const TensorDesc& desc);

/// batch_norm_forward_training with the fused epilogue on dst.
void batch_norm_forward_training_fused(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                       void* dst, const BatchNormFusion& fusion, const float* gamma,
                                       const float* beta, float* save_mean, float* save_invstd,
                                       const RunningStats& running = {}, const BatchNormConfig& config = {});

/// batch_norm_forward_inference with the fused epilogue on dst.
void batch_norm_forward_inference_fused(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                        void* dst, const BatchNormFusion& fusion, const float* gamma,
                                        const float* beta, const float* mean, const float* var, double eps = 1e-5);

/// Backward of a fused forward. The ReLU's mask is recomputed from the
/// forward's output `dst` (the gradient passes where dst is not <= 0, NaN
/// included, as in PyTorch's relu backward;
/// in bf16/f16 a positive sum that rounds to 0 counts as the kink, gradient
/// 0), so nothing beside dst needs keeping (the overload below reads a kept
/// mask instead); `relu` says whether the forward had one. diff_src is
/// BatchNorm's backward of the gated gradient; diff_residual (optional)
/// receives the residual's gradient, the gated diff_dst. Other arguments as
/// batch_norm_backward; diff_src is required when diff_residual is given
/// with a ReLU. diff_residual may be diff_dst, src or dst itself (in
/// place); it must not be diff_src (an error).
void batch_norm_backward_fused(const TensorDesc& src_desc, const void* src, const void* dst, bool relu,
                               const TensorDesc& diff_dst_desc, const void* diff_dst,
                               const TensorDesc& diff_src_desc, void* diff_src, const float* gamma,
                               const float* mean, const float* invstd, float* diff_gamma, float* diff_beta,
                               void* diff_residual, BackwardStats stats = BackwardStats::batch);

/// The same backward of a forward with a ReLU that kept its mask
/// (BatchNormFusion::relu_mask): the gate is read from relu_mask instead
/// of being recomputed from dst, with the same result bit for bit, so dst
/// need not exist any more. The mask's padding bytes may hold anything.
/// Other arguments as above: diff_residual may be diff_dst or src itself
/// (in place), not diff_src; diff_src is required when diff_residual is
/// given.
void batch_norm_backward_fused(const TensorDesc& src_desc, const void* src, const std::uint8_t* relu_mask,
                               const TensorDesc& diff_dst_desc, const void* diff_dst,
                               const TensorDesc& diff_src_desc, void* diff_src, const float* gamma,
                               const float* mean, const float* invstd, float* diff_gamma, float* diff_beta,
                               void* diff_residual, BackwardStats stats = BackwardStats::batch);

/// Ghost batch normalization (Hoffer et al. 2017; the forward of Keras'
/// virtual_batch_size): the batch of N samples is split into N /
/// virtual_batch_size consecutive groups, each normalized with its own
/// statistics, and the running statistics are updated from each group in
/// turn, as G steps of batch_norm_forward_training would (num_batches_tracked
/// counts groups). Keras instead makes one update per batch from the groups'
/// averaged moments: with momentum m the old running value keeps (1 - m)^G
/// here, (1 - m) there. save_mean / save_invstd receive G * C values, group g's at
/// [g * C, (g + 1) * C). virtual_batch_size must divide N and leave more than
/// one value per channel in a group. With one group it is
/// batch_norm_forward_training exactly.
void ghost_batch_norm_forward_training(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                       void* dst, std::int64_t virtual_batch_size, const float* gamma,
                                       const float* beta, float* save_mean, float* save_invstd,
                                       const RunningStats& running = {}, const BatchNormConfig& config = {});

/// Backward of ghost_batch_norm_forward_training: each group's backward with
/// its saved statistics (G * C values each); the parameter gradients are
/// summed over the groups.
void ghost_batch_norm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                               const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src,
                               std::int64_t virtual_batch_size, const float* gamma, const float* mean,
                               const float* invstd, float* diff_gamma, float* diff_beta);

// Frozen BatchNorm (fine-tuning with fixed statistics, oneDNN's
// use_global_stats in training): the forward is batch_norm_forward_inference
// with the running statistics, the backward batch_norm_backward with
// BackwardStats::fixed, mean = running mean and invstd = 1 / sqrt(running
// var + eps). BatchNorm::freeze does this for the layer.

/// A BatchNorm{1,2,3}d layer with torch.nn semantics: owns gamma (weight),
/// beta (bias), running statistics and num_batches_tracked, and has a
/// train/eval mode. The rank of the input decides 1d (rank 2 or 3), 2d (4)
/// or 3d (5).
class BatchNorm {
 public:
  /// Constructor options, with torch.nn.BatchNorm2d's defaults.
  struct Options {
    std::int64_t num_features = 0;         ///< C, > 0
    double eps = 1e-5;                     ///< >= 0
    std::optional<double> momentum = 0.1;  ///< in [0, 1]; nullopt = cumulative average
    bool affine = true;                    ///< learn gamma and beta
    bool track_running_stats = true;       ///< keep running mean / var
    /// > 0: ghost batch norm in training, groups of this many samples
    /// (ghost_batch_norm_forward_training); 0: the whole batch.
    std::int64_t virtual_batch_size = 0;
  };

  /// Throws Error(invalid_argument) for num_features <= 0, eps < 0 or
  /// momentum outside [0, 1]. Starts in training mode with gamma = 1,
  /// beta = 0, running mean 0 and running var 1.
  explicit BatchNorm(const Options& options);

  /// Training mode (true) or evaluation mode (false).
  void train(bool on = true) noexcept { training_ = on; }
  /// Same as train(false).
  void eval() noexcept { training_ = false; }
  /// True in training mode.
  bool is_training() const noexcept { return training_; }
  const Options& options() const noexcept { return options_; }

  /// Forward pass. In training mode, or in eval mode without running
  /// statistics, it normalizes with batch statistics (and updates the running
  /// ones in training); otherwise with the running statistics.
  void forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst);

  /// Backward of the last forward: writes diff_src (optional) and the
  /// gradients of gamma and beta (weight_grad / bias_grad, when affine).
  /// Throws Error(invalid_argument) before any forward, and
  /// Error(shape_mismatch) when src_desc's dims are not the last forward's.
  void backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src);

  /// gamma (empty when affine = false).
  std::span<float> weight() noexcept { return weight_; }
  /// beta (empty when affine = false).
  std::span<float> bias() noexcept { return bias_; }
  /// Running mean (empty when track_running_stats = false).
  std::span<float> running_mean() noexcept { return running_mean_; }
  /// Running unbiased variance (empty when track_running_stats = false).
  std::span<float> running_var() noexcept { return running_var_; }
  std::int64_t num_batches_tracked() const noexcept { return num_batches_tracked_; }
  /// Restores the count from a checkpoint, as PyTorch's load_state_dict
  /// does with the buffer: with momentum = nullopt the next training
  /// forward weighs its batch 1 / (count + 1). Throws
  /// Error(invalid_argument) for count < 0.
  void set_num_batches_tracked(std::int64_t count);
  /// d loss / d gamma of the last backward (empty when affine = false).
  std::span<const float> weight_grad() const noexcept { return weight_grad_; }
  /// d loss / d beta of the last backward (empty when affine = false).
  std::span<const float> bias_grad() const noexcept { return bias_grad_; }
  /// Mean and invstd the last forward normalized with: C values, or G x C
  /// after a ghost forward of G groups.
  std::span<const float> saved_mean() const noexcept {
    return {saved_mean_.data(), std::min(saved_count_, saved_mean_.size())};
  }
  std::span<const float> saved_invstd() const noexcept {
    return {saved_invstd_.data(), std::min(saved_count_, saved_invstd_.size())};
  }

  /// Running mean 0, running var 1, num_batches_tracked 0.
  void reset_running_stats() noexcept;
  /// reset_running_stats(), gamma 1, beta 0.
  void reset_parameters() noexcept;

  /// Frozen statistics: in training mode too, normalize with the running
  /// statistics (not updated) and differentiate with them as constants, for
  /// fine-tuning. Throws Error(invalid_argument) when the layer keeps no
  /// running statistics.
  void freeze(bool on = true);
  bool is_frozen() const noexcept { return frozen_; }

 private:
  friend class SyncBatchNorm;  // BatchNorm with statistics over processes
  void check_input(const TensorDesc& desc, const char* name) const;

  Options options_;
  bool training_ = true;
  bool frozen_ = false;
  std::int64_t ghost_groups_ = 0;  // groups of the last ghost forward (0: plain)
  std::vector<float> weight_, bias_, running_mean_, running_var_;
  // saved_* grow to the largest ghost forward (never shrunk); saved_count_
  // entries are valid.
  std::vector<float> weight_grad_, bias_grad_, saved_mean_, saved_invstd_;
  std::size_t saved_count_ = 0;
  std::int64_t num_batches_tracked_ = 0;
  std::optional<BackwardStats> last_forward_;  // empty before the first forward
  TensorDesc forward_desc_;                    // src of the last forward; rank 0 before
};

}  // namespace bnorm

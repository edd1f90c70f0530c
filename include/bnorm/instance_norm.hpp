// Instance normalization: functions on caller-owned buffers, the ONNX
// InstanceNormalization form and the InstanceNorm layer.
//
// Semantics are those of torch.nn.functional.instance_norm (ATen's
// at::instance_norm) and torch.nn.InstanceNorm{1,2,3}d: for each sample n and
// channel c
//   mean_nc, var_nc : mean and biased variance over the spatial positions;
//   dst             = (src - mean_nc) / sqrt(var_nc + eps) * gamma_c + beta_c.
// Running statistics, when tracked, average the per-instance statistics over
// the batch (ATen updates one copy per sample and keeps their mean):
//   running_mean = (1 - momentum) * running_mean + momentum * mean_n(mean_nc);
//   running_var  = (1 - momentum) * running_var
//                  + momentum * mean_n(var_nc * S / (S - 1))   (unbiased).
// Inference with running statistics is batch-norm inference. Data may be
// f32, bf16 or f16 in either layout (channels-last data is read in place,
// never copied), rank 3 to 5; parameters, statistics and gradients are f32.
// Every function throws bnorm::Error on bad input and leaves all outputs
// untouched when it does.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "bnorm/batch_norm.hpp"
#include "bnorm/tensor.hpp"

namespace bnorm {

/// Hyper-parameters of a forward pass with the input's own statistics.
struct InstanceNormConfig {
  double eps = 1e-5;       ///< added to the variance; must be >= 0
  double momentum = 0.1;   ///< weight of this batch in the running averages, in [0, 1]
};

/// Forward with each instance's own statistics (PyTorch's use_input_stats,
/// i.e. training, or no running statistics). dst may be src itself.
/// save_mean / save_invstd (optional, N x C values, row-major) receive each
/// instance's mean and 1/sqrt(biased var + eps) (0 where var and eps are
/// both 0, as at::instance_norm: dst is then beta). gamma and beta (C values)
/// may be null (1 and 0). running_mean / running_var (C values, both or
/// neither) are updated as described above when given; that needs more than
/// one spatial element (the unbiased variance), else Error(invalid_argument).
void instance_norm_forward_training(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                    void* dst, const float* gamma, const float* beta, float* save_mean,
                                    float* save_invstd, float* running_mean = nullptr,
                                    float* running_var = nullptr, const InstanceNormConfig& config = {});

/// Forward with running statistics (use_input_stats = false): the same as
/// batch_norm_forward_inference, for rank 3 to 5. dst may be src itself.
void instance_norm_forward_inference(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                     void* dst, const float* gamma, const float* beta,
                                     const float* running_mean, const float* running_var,
                                     double eps = 1e-5);

/// Backward. With BackwardStats::batch (the forward used the instances' own
/// statistics), mean and invstd are its N x C save_mean / save_invstd and
/// the gradient flows through them. With BackwardStats::fixed (inference
/// forward), mean and invstd hold C values: the running mean and
/// 1/sqrt(running_var + eps). gamma may be null (1). diff_src, diff_gamma
/// and diff_beta are optional and overwritten; diff_src may alias diff_dst
/// or src exactly.
void instance_norm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                            const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src,
                            const float* gamma, const float* mean, const float* invstd, float* diff_gamma,
                            float* diff_beta, BackwardStats stats = BackwardStats::batch);

/// ONNX InstanceNormalization: Y = scale * (X - mean) / sqrt(var + epsilon)
/// + B per instance. X has rank 3 to 5 in either layout; scale and B (C
/// values) are required. A spatial size of 1 is allowed (Y = B). Y may be X.
void instance_norm_onnx(const TensorDesc& x_desc, const void* x, const float* scale, const float* b,
                        const TensorDesc& y_desc, void* y, double epsilon = 1e-5);

/// An InstanceNorm{1,2,3}d layer with torch.nn semantics: gamma / beta when
/// affine, running statistics when track_running_stats, a train/eval mode.
/// Rank 3, 4 or 5 input (batched) selects 1d, 2d or 3d.
class InstanceNorm {
 public:
  /// Constructor options, with torch.nn.InstanceNorm2d's defaults.
  struct Options {
    std::int64_t num_features = 0;      ///< C, > 0
    double eps = 1e-5;                  ///< >= 0
    double momentum = 0.1;              ///< in [0, 1] (PyTorch has no cumulative average here)
    bool affine = false;                ///< learn gamma and beta
    bool track_running_stats = false;   ///< keep running mean / var
  };

  /// Throws Error(invalid_argument) for num_features <= 0, eps < 0 or
  /// momentum outside [0, 1]. Starts in training mode with gamma = 1,
  /// beta = 0, running mean 0 and running var 1.
  explicit InstanceNorm(const Options& options);

  /// Training mode (true) or evaluation mode (false).
  void train(bool on = true) noexcept { training_ = on; }
  /// Same as train(false).
  void eval() noexcept { training_ = false; }
  /// True in training mode.
  bool is_training() const noexcept { return training_; }
  const Options& options() const noexcept { return options_; }

  /// Forward pass. In training mode, or without running statistics, it
  /// normalizes with each instance's statistics (which needs more than one
  /// spatial element, as torch.nn.functional.instance_norm checks) and
  /// updates the running ones in training; otherwise with the running
  /// statistics.
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
  /// d loss / d gamma of the last backward (empty when affine = false).
  std::span<const float> weight_grad() const noexcept { return weight_grad_; }
  /// d loss / d beta of the last backward (empty when affine = false).
  std::span<const float> bias_grad() const noexcept { return bias_grad_; }
  /// Mean and invstd the last forward normalized with: N x C values after a
  /// forward with the instances' statistics, C values after one with the
  /// running statistics.
  std::span<const float> saved_mean() const noexcept {
    return {saved_mean_.data(), std::min(saved_count_, saved_mean_.size())};
  }
  std::span<const float> saved_invstd() const noexcept {
    return {saved_invstd_.data(), std::min(saved_count_, saved_invstd_.size())};
  }

  /// Running mean 0, running var 1.
  void reset_running_stats() noexcept;
  /// reset_running_stats(), gamma 1, beta 0.
  void reset_parameters() noexcept;

 private:
  void check_input(const TensorDesc& desc, const char* name) const;

  Options options_;
  bool training_ = true;
  std::vector<float> weight_, bias_, running_mean_, running_var_, weight_grad_, bias_grad_;
  // Grown to the largest size seen, never shrunk (no allocation per call).
  std::vector<float> saved_mean_, saved_invstd_;
  std::size_t saved_count_ = 0;
  TensorDesc forward_desc_;                    // src of the last forward
  std::optional<BackwardStats> last_forward_;  // empty before the first forward
};

}  // namespace bnorm

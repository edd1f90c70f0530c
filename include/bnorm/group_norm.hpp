// Group normalization: functions on caller-owned buffers, the ONNX
// GroupNormalization-21 form and the GroupNorm layer.
//
// Semantics are those of ATen's native_group_norm / native_group_norm_backward
// and torch.nn.GroupNorm: the C channels are split into G groups of C/G
// consecutive channels, and for each sample n and group g
//   mean_ng, var_ng : mean and biased variance over the group's C/G channels
//                     and all spatial positions;
//   dst             = (src - mean_ng) / sqrt(var_ng + eps) * gamma_c + beta_c,
// gamma and beta being per channel. Data may be f32, bf16 or f16 in either
// layout, rank 2 (N, C) to 5; gamma, beta, statistics and gradients are f32.
// Every function throws bnorm::Error on bad input and leaves all outputs
// untouched when it does.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "bnorm/tensor.hpp"

namespace bnorm {

/// Forward pass. Normalizes src per (sample, group) into dst (which may be
/// src itself). save_mean / save_invstd (optional, N x G values, row-major)
/// receive the mean and 1/sqrt(biased var + eps) of each (sample, group), as
/// ATen's native_group_norm returns them. gamma and beta (C values) may be
/// null (1 and 0). Throws when num_groups does not divide C. A group with no
/// values (spatial size 0) gets mean 0 and invstd NaN, as in ATen.
void group_norm_forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst,
                        std::int64_t num_groups, const float* gamma, const float* beta, float* save_mean,
                        float* save_invstd, double eps = 1e-5);

/// Backward of group_norm_forward (native_group_norm_backward). mean and
/// invstd are the N x G save_mean / save_invstd of the forward; gamma (C
/// values) may be null (1). diff_src, diff_gamma and diff_beta (C values
/// each) are optional (null = not wanted) and are overwritten, not
/// accumulated. diff_src may alias diff_dst or src exactly.
void group_norm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                         const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src,
                         std::int64_t num_groups, const float* gamma, const float* mean, const float* invstd,
                         float* diff_gamma, float* diff_beta);

/// Attributes of ONNX GroupNormalization (opset 21: scale and bias have C
/// values, one per channel).
struct OnnxGroupNormalization {
  std::int64_t num_groups = 0;  ///< required; must divide C
  double epsilon = 1e-5;        ///< >= 0
  /// Precision of the statistics (a TensorProto data type): 1 (float) or
  /// 11 (double). bnorm computes them in f32 sums folded into double either
  /// way; 10 (float16) and 16 (bfloat16) are accepted and computed the same
  /// (more exactly than the spec's reference). Other values are refused.
  std::int64_t stash_type = 1;
};

/// ONNX GroupNormalization-21: Y = scale * (X - mean) / sqrt(var + epsilon)
/// + bias per (sample, group). X has rank 2 to 5 (N, C, D1, ...) in either
/// layout; scale and bias (C values) are required. Y may be X itself.
void group_norm_onnx(const TensorDesc& x_desc, const void* x, const float* scale, const float* bias,
                     const TensorDesc& y_desc, void* y, const OnnxGroupNormalization& attributes);

/// A GroupNorm layer with torch.nn.GroupNorm semantics: owns gamma (weight)
/// and beta (bias) when affine, and the statistics of the last forward for
/// backward. (GroupNorm has no running statistics, so train/eval do not
/// change what it computes.)
class GroupNorm {
 public:
  /// Constructor options, with torch.nn.GroupNorm's defaults.
  struct Options {
    std::int64_t num_groups = 0;    ///< G, > 0, divides num_channels
    std::int64_t num_channels = 0;  ///< C, > 0
    double eps = 1e-5;              ///< >= 0
    bool affine = true;             ///< learn per-channel gamma and beta
  };

  /// Throws Error(invalid_argument) for num_groups or num_channels <= 0,
  /// num_channels not divisible by num_groups, or eps < 0. Starts with
  /// gamma = 1 and beta = 0.
  explicit GroupNorm(const Options& options);

  const Options& options() const noexcept { return options_; }

  /// Forward pass: normalizes src (rank 2 to 5, C = num_channels) into dst
  /// and keeps the per-(sample, group) statistics for backward.
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
  /// d loss / d gamma of the last backward (empty when affine = false).
  std::span<const float> weight_grad() const noexcept { return weight_grad_; }
  /// d loss / d beta of the last backward (empty when affine = false).
  std::span<const float> bias_grad() const noexcept { return bias_grad_; }
  /// Mean of each (sample, group) of the last forward (N x G values).
  std::span<const float> saved_mean() const noexcept {
    return {saved_mean_.data(), std::min(saved_count_, saved_mean_.size())};
  }
  /// 1/sqrt(var + eps) of each (sample, group) of the last forward.
  std::span<const float> saved_invstd() const noexcept {
    return {saved_invstd_.data(), std::min(saved_count_, saved_invstd_.size())};
  }

  /// gamma 1, beta 0.
  void reset_parameters() noexcept;

 private:
  void check_input(const TensorDesc& desc, const char* name) const;

  Options options_;
  std::vector<float> weight_, bias_, weight_grad_, bias_grad_;
  // Grown to the largest N x G seen (never shrunk, so repeated calls do not
  // allocate); saved_count_ entries are valid.
  std::vector<float> saved_mean_, saved_invstd_;
  std::size_t saved_count_ = 0;
  TensorDesc forward_desc_;  // src of the last forward; rank 0 before any
};

}  // namespace bnorm

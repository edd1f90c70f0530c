// Layer normalization: functions on caller-owned buffers and the LayerNorm layer.
//
// Semantics are those of ATen's native_layer_norm / native_layer_norm_backward
// and torch.nn.LayerNorm. The input is seen as rows: the trailing
// `normalized_dims` dims make one row (PyTorch's normalized_shape), the
// leading dims count the rows. For each row:
//   mean, var : mean and biased variance of the row;
//   dst       = (src - mean) / sqrt(var + eps) * gamma[j] + beta[j],
// j the position in the row. ONNX LayerNormalization-17 is the same with
// normalized_dims = rank - axis (see normalized_dims_from_axis; axis = rank,
// every element its own row, is refused) and stash_type = 1: statistics are
// computed in f32 or better and returned as f32 (docs/OPS.md, "ONNX forms",
// for stash_type 16, 16-bit rounding and Scale / B broadcasts).
//
// Data may be f32, bf16 or f16 in plain C order (Layout::channels_first;
// channels_last is refused, see below); gamma, beta, the per-row statistics
// and the parameter gradients are f32. Every function throws bnorm::Error
// on bad input and leaves all outputs untouched when it does.
//
// Why no channels_last: a row must be contiguous in memory, and the trailing
// logical dims of a channels_last tensor are not (C sits last in memory). To
// normalize over C of an (N, D, H, W, C) buffer, as ConvNeXt's channels-last
// LayerNorm does, describe that memory as it is: a channels_first tensor
// with dims (N, D, H, W, C) and normalized_dims = 1.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "bnorm/tensor.hpp"

namespace bnorm {

/// ONNX's axis (normalize dims [axis, rank); negative counts from the end)
/// as the number of trailing normalized dims, rank - axis. Throws
/// Error(invalid_argument) unless 1 <= rank <= kMaxRank and -rank <= axis <
/// rank.
int normalized_dims_from_axis(int rank, std::int64_t axis);

/// Forward. src_desc has rank 1 to 5 and Layout::channels_first; the last
/// normalized_dims (1..rank) dims form a row of L elements, the leading dims
/// R rows. dst (same desc) may be src itself. gamma and beta hold L values
/// each and may be null independently (1 and 0: elementwise_affine = false,
/// or bias = false). mean and invstd (optional) receive R values: the row
/// mean and 1/sqrt(biased var + eps), as native_layer_norm returns mean and
/// rstd. eps must be finite and >= 0. An empty row (L = 0) gives mean 0 and
/// invstd NaN, as ATen does.
void layer_norm_forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst,
                        int normalized_dims, const float* gamma, const float* beta, float* mean = nullptr,
                        float* invstd = nullptr, double eps = 1e-5);

/// Backward of layer_norm_forward (native_layer_norm_backward). mean and
/// invstd are the forward's (R values each, required). gamma (L values) may
/// be null (1). diff_src, diff_gamma and diff_beta (L values each) are each
/// optional (null = not wanted) and are overwritten, not accumulated:
///   diff_src   = invstd * (g - mean_j(g) - xhat * mean_j(g * xhat)),
///                g = diff_dst * gamma, xhat = (src - mean) * invstd;
///   diff_gamma = sum over rows of diff_dst * xhat; diff_beta = sum of diff_dst.
/// diff_src may alias diff_dst or src exactly.
void layer_norm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                         const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src,
                         int normalized_dims, const float* gamma, const float* mean, const float* invstd,
                         float* diff_gamma, float* diff_beta);

/// A LayerNorm layer with torch.nn.LayerNorm semantics: owns gamma (weight)
/// and beta (bias), normalizes over trailing dims that must equal
/// normalized_shape, and keeps what backward needs from the last forward.
class LayerNorm {
 public:
  /// Constructor options, with torch.nn.LayerNorm's defaults.
  struct Options {
    std::vector<std::int64_t> normalized_shape;  ///< 1 to 5 dims, each >= 0
    double eps = 1e-5;                           ///< >= 0
    bool elementwise_affine = true;              ///< learn gamma (and beta when bias)
    bool bias = true;                            ///< learn beta (with elementwise_affine)
  };

  /// Throws Error(invalid_argument) for an empty or too long
  /// normalized_shape, a negative dim or a bad eps. gamma = 1, beta = 0.
  explicit LayerNorm(const Options& options);

  const Options& options() const noexcept { return options_; }

  /// Forward; src_desc's trailing dims must equal normalized_shape
  /// (Error(shape_mismatch) otherwise). Saves the row statistics.
  void forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst);

  /// Backward of the last forward (same src): writes diff_src (optional)
  /// and weight_grad / bias_grad. Throws Error(invalid_argument) before any
  /// forward, and Error(shape_mismatch) when src_desc's dims are not the last
  /// forward's.
  void backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src);

  /// gamma (empty without elementwise_affine).
  std::span<float> weight() noexcept { return weight_; }
  /// beta (empty without elementwise_affine or bias).
  std::span<float> bias() noexcept { return bias_; }
  /// d loss / d gamma of the last backward (empty without gamma).
  std::span<const float> weight_grad() const noexcept { return weight_grad_; }
  /// d loss / d beta of the last backward (empty without beta).
  std::span<const float> bias_grad() const noexcept { return bias_grad_; }
  /// Row means and 1/sqrt(var + eps) of the last forward, one per row.
  std::span<const float> saved_mean() const noexcept {
    return {saved_mean_.data(), std::min(rows_, saved_mean_.size())};
  }
  std::span<const float> saved_invstd() const noexcept {
    return {saved_invstd_.data(), std::min(rows_, saved_invstd_.size())};
  }

  /// gamma 1, beta 0.
  void reset_parameters() noexcept;

 private:
  int check_input(const TensorDesc& desc, const char* name) const;

  Options options_;
  std::vector<float> weight_, bias_, weight_grad_, bias_grad_, saved_mean_, saved_invstd_;
  std::size_t rows_ = 0;
  TensorDesc forward_desc_;  // src of the last forward; rank 0 before any
};

}  // namespace bnorm

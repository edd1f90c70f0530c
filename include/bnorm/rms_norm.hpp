// Root-mean-square normalization: functions on caller-owned buffers and the
// RMSNorm layer.
//
// Semantics are those of torch.nn.functional.rms_norm / torch.nn.RMSNorm
// (PyTorch 2.4) and ONNX RMSNormalization-23. Rows as in layer_norm.hpp (the
// trailing normalized_dims dims); for each row
//   dst = src / sqrt(mean(src^2) + eps) * gamma[j].
// PyTorch's eps defaults to the machine epsilon of the input's dtype
// (torch.finfo(dtype).eps, rms_norm_default_eps); ONNX's epsilon attribute
// defaults to 1e-5, and its axis maps to normalized_dims = rank - axis
// (normalized_dims_from_axis). Statistics are computed in f32 or better
// (ONNX's stash_type = 1 is always honoured). Data may be f32, bf16 or f16
// (Layout::channels_first only, as layer norm); gamma, invrms and gradients
// are f32. Every function throws bnorm::Error on bad input and leaves all
// outputs untouched when it does.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "bnorm/layer_norm.hpp"
#include "bnorm/tensor.hpp"

namespace bnorm {

/// torch.finfo(dtype).eps: 2^-23 for f32, 2^-7 for bf16, 2^-10 for f16.
double rms_norm_default_eps(DType dtype) noexcept;

/// Forward. src_desc as layer_norm_forward's (rank 1 to 5, channels_first,
/// normalized_dims in 1..rank); dst (same desc) may be src itself. gamma (L
/// values) may be null (1). invrms (optional) receives one value per row,
/// 1/sqrt(mean(src^2) + eps), for the backward. eps: finite, >= 0, or
/// std::nullopt for rms_norm_default_eps(src dtype). An empty row (L = 0)
/// gives invrms NaN.
void rms_norm_forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst,
                      int normalized_dims, const float* gamma, float* invrms = nullptr,
                      std::optional<double> eps = std::nullopt);

/// Backward of rms_norm_forward. invrms: the forward's (one per row,
/// required). gamma may be null (1). diff_src and diff_gamma (L values) are
/// optional and overwritten:
///   diff_src   = invrms * (g - xn * mean_j(g * xn)), g = diff_dst * gamma,
///                xn = src * invrms;
///   diff_gamma = sum over rows of diff_dst * xn.
/// diff_src may alias diff_dst or src exactly.
void rms_norm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                       const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src, int normalized_dims,
                       const float* gamma, const float* invrms, float* diff_gamma);

/// An RMSNorm layer with torch.nn.RMSNorm semantics: owns gamma (weight),
/// normalizes over trailing dims that must equal normalized_shape.
class RMSNorm {
 public:
  /// Constructor options, with torch.nn.RMSNorm's defaults.
  struct Options {
    std::vector<std::int64_t> normalized_shape;  ///< 1 to 5 dims, each >= 0
    /// >= 0; std::nullopt = the machine epsilon of each input's dtype.
    std::optional<double> eps = std::nullopt;
    bool elementwise_affine = true;  ///< learn gamma
  };

  /// Throws Error(invalid_argument) for an empty or too long
  /// normalized_shape, a negative dim or a bad eps. gamma = 1.
  explicit RMSNorm(const Options& options);

  const Options& options() const noexcept { return options_; }

  /// Forward; src_desc's trailing dims must equal normalized_shape
  /// (Error(shape_mismatch) otherwise). Saves 1/rms of each row.
  void forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst);

  /// Backward of the last forward (same src): writes diff_src (optional)
  /// and weight_grad. Throws Error(invalid_argument) before any forward, and
  /// Error(shape_mismatch) when src_desc's dims are not the last forward's.
  void backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src);

  /// gamma (empty without elementwise_affine).
  std::span<float> weight() noexcept { return weight_; }
  /// d loss / d gamma of the last backward (empty without gamma).
  std::span<const float> weight_grad() const noexcept { return weight_grad_; }
  /// 1/sqrt(mean(x^2) + eps) of each row of the last forward.
  std::span<const float> saved_invrms() const noexcept {
    return {saved_invrms_.data(), std::min(rows_, saved_invrms_.size())};
  }

  /// gamma 1.
  void reset_parameters() noexcept;

 private:
  int check_input(const TensorDesc& desc, const char* name) const;

  Options options_;
  std::vector<float> weight_, weight_grad_, saved_invrms_;
  std::size_t rows_ = 0;
  TensorDesc forward_desc_;  // src of the last forward; rank 0 before any
};

}  // namespace bnorm

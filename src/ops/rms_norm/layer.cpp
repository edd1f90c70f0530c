// bnorm::RMSNorm: torch.nn.RMSNorm semantics over the functions.

#include <algorithm>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/rms_norm.hpp"
#include "ops/layer_norm/shape.hpp"
#include "ops/validate.hpp"

namespace bnorm {

RMSNorm::RMSNorm(const Options& options) : options_(options) {
  const auto len = static_cast<std::size_t>(ops::layer_norm::check_normalized_shape(options.normalized_shape));
  if (options.eps) ops::require_eps(*options.eps, "options.eps");
  if (options.elementwise_affine) {
    weight_.assign(len, 1.0f);
    weight_grad_.assign(len, 0.0f);
  }
}

void RMSNorm::reset_parameters() noexcept { std::fill(weight_.begin(), weight_.end(), 1.0f); }

int RMSNorm::check_input(const TensorDesc& desc, const char* name) const {
  ops::layer_norm::check_trailing_dims(desc, name, options_.normalized_shape);
  return static_cast<int>(options_.normalized_shape.size());
}

void RMSNorm::forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst) {
  const int dims = check_input(src_desc, "src_desc");
  const std::size_t rows = ops::layer_norm::leading_rows(src_desc, dims);
  // Grows only; never empty, so backward gets a valid pointer for zero rows.
  ops::grow_saved(saved_invrms_, rows, src_desc);
  rms_norm_forward(src_desc, src, dst_desc, dst, dims, weight_.empty() ? nullptr : weight_.data(),
                   saved_invrms_.data(), options_.eps);
  rows_ = rows;
  forward_desc_ = src_desc;
}

void RMSNorm::backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                       const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src) {
  ops::require_forward_of(src_desc, forward_desc_, "RMSNorm");
  const int dims = static_cast<int>(options_.normalized_shape.size());
  rms_norm_backward(src_desc, src, diff_dst_desc, diff_dst, diff_src_desc, diff_src, dims,
                    weight_.empty() ? nullptr : weight_.data(), saved_invrms_.data(),
                    weight_grad_.empty() ? nullptr : weight_grad_.data());
}

}  // namespace bnorm

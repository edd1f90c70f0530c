// bnorm::GroupNorm: torch.nn.GroupNorm semantics over the functions.

#include <algorithm>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/group_norm.hpp"
#include "ops/validate.hpp"

namespace bnorm {

GroupNorm::GroupNorm(const Options& options) : options_(options) {
  ops::require_channels(options.num_channels, "options.num_channels");
  if (options.num_groups <= 0 || options.num_channels % options.num_groups != 0) {
    throw Error(ErrorKind::invalid_argument,
                "argument 'options.num_groups' = " + std::to_string(options.num_groups) +
                    ": must be > 0 and divide num_channels = " + std::to_string(options.num_channels));
  }
  ops::require_eps(options.eps, "options.eps");
  if (options.affine) {
    const auto c = static_cast<std::size_t>(options.num_channels);
    weight_.assign(c, 1.0f);
    bias_.assign(c, 0.0f);
    weight_grad_.assign(c, 0.0f);
    bias_grad_.assign(c, 0.0f);
  }
}

void GroupNorm::reset_parameters() noexcept {
  std::fill(weight_.begin(), weight_.end(), 1.0f);
  std::fill(bias_.begin(), bias_.end(), 0.0f);
}

void GroupNorm::check_input(const TensorDesc& desc, const char* name) const {
  ops::require_activation(desc, name, 2, kMaxRank);
  if (desc.channels() != options_.num_channels) {
    throw Error(ErrorKind::shape_mismatch,
                std::string("argument '") + name + "' has C = " + std::to_string(desc.channels()) + " (dims " +
                    desc.dims_str() + "): this layer has num_channels = " + std::to_string(options_.num_channels));
  }
}

void GroupNorm::forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst) {
  check_input(src_desc, "src_desc");
  ops::require_same(src_desc, "src_desc", dst_desc, "dst_desc");
  const auto count = static_cast<std::size_t>(src_desc.batch() * options_.num_groups);
  ops::grow_saved(saved_mean_, count, src_desc);
  ops::grow_saved(saved_invstd_, count, src_desc);
  group_norm_forward(src_desc, src, dst_desc, dst, options_.num_groups, options_.affine ? weight_.data() : nullptr,
                     options_.affine ? bias_.data() : nullptr, saved_mean_.data(), saved_invstd_.data(),
                     options_.eps);
  saved_count_ = count;
  forward_desc_ = src_desc;
}

void GroupNorm::backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                         const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src) {
  ops::require_forward_of(src_desc, forward_desc_, "GroupNorm");
  group_norm_backward(src_desc, src, diff_dst_desc, diff_dst, diff_src_desc, diff_src, options_.num_groups,
                      options_.affine ? weight_.data() : nullptr, saved_mean_.data(), saved_invstd_.data(),
                      options_.affine ? weight_grad_.data() : nullptr,
                      options_.affine ? bias_grad_.data() : nullptr);
}

}  // namespace bnorm

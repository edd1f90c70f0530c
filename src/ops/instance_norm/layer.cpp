// bnorm::InstanceNorm: torch.nn.InstanceNorm{1,2,3}d semantics over the
// functions.

#include <algorithm>
#include <cmath>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/instance_norm.hpp"
#include "ops/validate.hpp"

namespace bnorm {

InstanceNorm::InstanceNorm(const Options& options) : options_(options) {
  ops::require_channels(options.num_features, "options.num_features");
  ops::require_eps(options.eps, "options.eps");
  ops::require_momentum(options.momentum, "options.momentum");
  const auto c = static_cast<std::size_t>(options.num_features);
  if (options.affine) {
    weight_.assign(c, 1.0f);
    bias_.assign(c, 0.0f);
    weight_grad_.assign(c, 0.0f);
    bias_grad_.assign(c, 0.0f);
  }
  if (options.track_running_stats) {
    running_mean_.assign(c, 0.0f);
    running_var_.assign(c, 1.0f);
  }
}

void InstanceNorm::reset_running_stats() noexcept {
  std::fill(running_mean_.begin(), running_mean_.end(), 0.0f);
  std::fill(running_var_.begin(), running_var_.end(), 1.0f);
}

void InstanceNorm::reset_parameters() noexcept {
  reset_running_stats();
  std::fill(weight_.begin(), weight_.end(), 1.0f);
  std::fill(bias_.begin(), bias_.end(), 0.0f);
}

void InstanceNorm::check_input(const TensorDesc& desc, const char* name) const {
  ops::require_activation(desc, name, 3, kMaxRank);
  if (desc.channels() != options_.num_features) {
    throw Error(ErrorKind::shape_mismatch,
                std::string("argument '") + name + "' has C = " + std::to_string(desc.channels()) + " (dims " +
                    desc.dims_str() + "): this layer has num_features = " + std::to_string(options_.num_features));
  }
}

void InstanceNorm::forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst) {
  check_input(src_desc, "src_desc");
  ops::require_same(src_desc, "src_desc", dst_desc, "dst_desc");
  const float* gamma = options_.affine ? weight_.data() : nullptr;
  const float* beta = options_.affine ? bias_.data() : nullptr;
  // As torch.nn: the instances' own statistics in training, and in eval when
  // there are no running statistics to use.
  const bool use_input_stats = training_ || !options_.track_running_stats;
  const auto count = static_cast<std::size_t>(use_input_stats ? src_desc.batch() * src_desc.channels()
                                                              : src_desc.channels());
  if (use_input_stats && src_desc.spatial() <= 1) {
    // torch.nn.functional.instance_norm's check.
    throw Error(ErrorKind::invalid_argument, "argument 'src_desc' (dims " + src_desc.dims_str() +
                                                 "): expected more than 1 spatial element when training, got " +
                                                 std::to_string(src_desc.spatial()));
  }
  ops::grow_saved(saved_mean_, count, src_desc);
  ops::grow_saved(saved_invstd_, count, src_desc);
  if (use_input_stats) {
    const bool update = training_ && options_.track_running_stats;
    instance_norm_forward_training(src_desc, src, dst_desc, dst, gamma, beta, saved_mean_.data(),
                                   saved_invstd_.data(), update ? running_mean_.data() : nullptr,
                                   update ? running_var_.data() : nullptr,
                                   InstanceNormConfig{options_.eps, options_.momentum});
    last_forward_ = BackwardStats::batch;
  } else {
    instance_norm_forward_inference(src_desc, src, dst_desc, dst, gamma, beta, running_mean_.data(),
                                    running_var_.data(), options_.eps);
    // Keep what eval normalized with, for backward with frozen statistics.
    for (std::size_t c = 0; c < count; ++c) {
      saved_mean_[c] = running_mean_[c];
      saved_invstd_[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(running_var_[c]) + options_.eps));
    }
    last_forward_ = BackwardStats::fixed;
  }
  saved_count_ = count;
  forward_desc_ = src_desc;
}

void InstanceNorm::backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                            const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src) {
  ops::require_forward_of(src_desc, forward_desc_, "InstanceNorm");
  instance_norm_backward(src_desc, src, diff_dst_desc, diff_dst, diff_src_desc, diff_src,
                         options_.affine ? weight_.data() : nullptr, saved_mean_.data(), saved_invstd_.data(),
                         options_.affine ? weight_grad_.data() : nullptr,
                         options_.affine ? bias_grad_.data() : nullptr, *last_forward_);
}

}  // namespace bnorm

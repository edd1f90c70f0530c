// bnorm::BatchNorm: torch.nn.BatchNorm{1,2,3}d semantics over the functions.

#include <algorithm>
#include <cmath>
#include <string>

#include "bnorm/batch_norm.hpp"
#include "bnorm/error.hpp"
#include "ops/batch_norm/plan.hpp"
#include "ops/validate.hpp"

namespace bnorm {

BatchNorm::BatchNorm(const Options& options) : options_(options) {
  if (options.virtual_batch_size < 0) {
    throw Error(ErrorKind::invalid_argument,
                "argument 'options.virtual_batch_size' = " + std::to_string(options.virtual_batch_size) +
                    ": must be >= 0 (0 = the whole batch)");
  }
  ops::require_channels(options.num_features, "options.num_features");
  ops::require_eps(options.eps, "options.eps");
  if (options.momentum) ops::require_momentum(*options.momentum, "options.momentum", true);
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
  saved_mean_.assign(c, 0.0f);
  saved_invstd_.assign(c, 0.0f);
}

void BatchNorm::reset_running_stats() noexcept {
  std::fill(running_mean_.begin(), running_mean_.end(), 0.0f);
  std::fill(running_var_.begin(), running_var_.end(), 1.0f);
  num_batches_tracked_ = 0;
}

void BatchNorm::set_num_batches_tracked(std::int64_t count) {
  if (count < 0)
    throw Error(ErrorKind::invalid_argument,
                "argument 'count' = " + std::to_string(count) + ": num_batches_tracked must be >= 0");
  num_batches_tracked_ = count;
}

void BatchNorm::reset_parameters() noexcept {
  reset_running_stats();
  std::fill(weight_.begin(), weight_.end(), 1.0f);
  std::fill(bias_.begin(), bias_.end(), 0.0f);
}

void BatchNorm::check_input(const TensorDesc& desc, const char* name) const {
  ops::require_activation(desc, name, 2, kMaxRank);
  if (desc.channels() != options_.num_features) {
    throw Error(ErrorKind::shape_mismatch,
                std::string("argument '") + name + "' has C = " + std::to_string(desc.channels()) +
                    " (dims " + desc.dims_str() +
                    "): this layer has num_features = " + std::to_string(options_.num_features));
  }
}

void BatchNorm::forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst) {
  check_input(src_desc, "src_desc");
  const float* gamma = options_.affine ? weight_.data() : nullptr;
  const float* beta = options_.affine ? bias_.data() : nullptr;
  // As torch.nn: batch statistics in training, and in eval when there are no
  // running statistics to use.
  // Frozen: the running statistics in training too.
  // The layer's state changes only once the call has succeeded.
  const bool use_batch_stats = (training_ && !frozen_) || !options_.track_running_stats;
  const auto c = static_cast<std::size_t>(options_.num_features);
  if (use_batch_stats) {
    RunningStats running;
    if (training_ && options_.track_running_stats) {
      running = {running_mean_.data(), running_var_.data(), &num_batches_tracked_};
    }
    const BatchNormConfig config{options_.eps, options_.momentum};
    if (training_ && options_.virtual_batch_size > 0) {
      // The arguments are checked before the saved statistics grow to G x C.
      const std::int64_t groups =
          ops::batch_norm::ghost_groups(src_desc, options_.virtual_batch_size, "options.virtual_batch_size")
              .second;
      ops::batch_norm::check_training(src_desc, src, dst_desc, dst, running, config);
      const auto size = static_cast<std::size_t>(std::max<std::int64_t>(groups, 1) * options_.num_features);
      ops::grow_saved(saved_mean_, size, src_desc);
      ops::grow_saved(saved_invstd_, size, src_desc);
      ghost_batch_norm_forward_training(src_desc, src, dst_desc, dst, options_.virtual_batch_size, gamma, beta,
                                        saved_mean_.data(), saved_invstd_.data(), running, config);
      ghost_groups_ = groups;
      saved_count_ = size;
    } else {
      batch_norm_forward_training(src_desc, src, dst_desc, dst, gamma, beta, saved_mean_.data(),
                                  saved_invstd_.data(), running, config);
      ghost_groups_ = 0;
      saved_count_ = c;
    }
    last_forward_ = BackwardStats::batch;
    forward_desc_ = src_desc;
    return;
  }
  batch_norm_forward_inference(src_desc, src, dst_desc, dst, gamma, beta, running_mean_.data(),
                               running_var_.data(), options_.eps);
  // Keep what eval normalized with, so backward (frozen statistics) can use it.
  for (std::size_t i = 0; i < c; ++i) {
    saved_mean_[i] = running_mean_[i];
    saved_invstd_[i] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(running_var_[i]) + options_.eps));
  }
  ghost_groups_ = 0;
  saved_count_ = c;
  last_forward_ = BackwardStats::fixed;
  forward_desc_ = src_desc;
}

void BatchNorm::freeze(bool on) {
  if (on && !options_.track_running_stats)
    throw Error(ErrorKind::invalid_argument,
                "BatchNorm::freeze: this layer has track_running_stats = false, so there are no running "
                "statistics to freeze");
  frozen_ = on;
}

void BatchNorm::backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                         const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src) {
  ops::require_forward_of(src_desc, forward_desc_, "BatchNorm");
  if (ghost_groups_ > 0) {
    // The saved statistics are per ghost group of the last forward's batch.
    ghost_batch_norm_backward(src_desc, src, diff_dst_desc, diff_dst, diff_src_desc, diff_src,
                              options_.virtual_batch_size, options_.affine ? weight_.data() : nullptr,
                              saved_mean_.data(), saved_invstd_.data(),
                              options_.affine ? weight_grad_.data() : nullptr,
                              options_.affine ? bias_grad_.data() : nullptr);
    return;
  }
  batch_norm_backward(src_desc, src, diff_dst_desc, diff_dst, diff_src_desc, diff_src,
                      options_.affine ? weight_.data() : nullptr, saved_mean_.data(), saved_invstd_.data(),
                      options_.affine ? weight_grad_.data() : nullptr,
                      options_.affine ? bias_grad_.data() : nullptr, *last_forward_);
}

}  // namespace bnorm

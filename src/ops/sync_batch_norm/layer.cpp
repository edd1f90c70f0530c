// bnorm::SyncBatchNorm: a BatchNorm (parameters, running statistics, eval)
// whose training statistics come from sync_batch_norm_* over a communicator.

#include "bnorm/sync_batch_norm.hpp"
#include "ops/sync_batch_norm/sync.hpp"
#include "ops/validate.hpp"

namespace bnorm {

SyncBatchNorm::SyncBatchNorm(const Options& options, comm::Communicator& comm)
    : options_(options),
      bn_(BatchNorm::Options{.num_features = options.num_features,
                             .eps = options.eps,
                             .momentum = options.momentum,
                             .affine = options.affine,
                             .track_running_stats = options.track_running_stats}),
      comm_(comm) {}

void SyncBatchNorm::forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst) {
  if (!bn_.training_) {
    // Local, as PyTorch's need_sync = bn_training and self.training: the
    // running statistics, or without them this shard's batch statistics.
    bn_.forward(src_desc, src, dst_desc, dst);
    synced_ = false;
    return;
  }
  RunningStats running;
  if (options_.track_running_stats)
    running = {bn_.running_mean_.data(), bn_.running_var_.data(), &bn_.num_batches_tracked_};
  const float* gamma = options_.affine ? bn_.weight_.data() : nullptr;
  const float* beta = options_.affine ? bn_.bias_.data() : nullptr;
  ops::sync_batch_norm::forward_training(
      comm_, src_desc, src, dst_desc, dst, gamma, beta, bn_.saved_mean_.data(), bn_.saved_invstd_.data(),
      running, BatchNormConfig{options_.eps, options_.momentum},
      ops::sync_batch_norm::error_of([&] { bn_.check_input(src_desc, "src_desc"); }));
  bn_.ghost_groups_ = 0;
  bn_.saved_count_ = static_cast<std::size_t>(options_.num_features);
  bn_.last_forward_ = BackwardStats::batch;
  bn_.forward_desc_ = src_desc;
  synced_ = true;
}

void SyncBatchNorm::backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                             const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src) {
  if (!synced_) {
    // Before any forward (refused, naming this class), or after an eval one.
    ops::require_forward_of(src_desc, bn_.forward_desc_, "SyncBatchNorm");
    bn_.backward(src_desc, src, diff_dst_desc, diff_dst, diff_src_desc, diff_src);
    return;
  }
  ops::sync_batch_norm::backward(
      comm_, src_desc, src, diff_dst_desc, diff_dst, diff_src_desc, diff_src,
      options_.affine ? bn_.weight_.data() : nullptr, bn_.saved_mean_.data(), bn_.saved_invstd_.data(),
      options_.affine ? bn_.weight_grad_.data() : nullptr, options_.affine ? bn_.bias_grad_.data() : nullptr,
      ops::sync_batch_norm::error_of(
          [&] { ops::require_forward_of(src_desc, bn_.forward_desc_, "SyncBatchNorm"); }));
}

}  // namespace bnorm

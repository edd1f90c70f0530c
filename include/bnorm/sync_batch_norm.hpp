// Synchronized batch normalization: batch statistics over the union of the
// batches of every process of a communicator (data-parallel training),
// functions on caller-owned buffers and the SyncBatchNorm layer.
//
// Each process passes its own shard of the global batch (any number of
// samples, zero included; the shards may differ in size and layout). The
// results equal single-process batch norm on the concatenated batch:
// - forward: each process computes per-channel (count, mean, M2) of its
//   shard; they are allgathered and merged with Chan's formula in double in
//   rank order (so every process gets the same statistics, and uneven or
//   empty shards are exact); dst is normalized with the global mean and
//   biased variance; save_mean / save_invstd and the running statistics
//   (unbiased variance of the global batch) are the global ones, identical
//   on every process;
// - backward: per-channel sum(dy) and sum(dy * xhat) are summed over the
//   processes (double, rank order), and diff_src uses the global count.
//   diff_gamma / diff_beta are the global sums, identical on every process:
//   the gradient of the sum of every process's loss. (PyTorch returns each
//   process's own sums, which DDP then averages: global sum / processes. To
//   step as PyTorch + DDP does, divide these by comm.size(), as the other
//   parameters' gradients are averaged.)
// Before the first collective of a call the processes agree on the call
// (forward or backward), C and dtype with one small allgather; a mismatch is
// Error(invalid_argument) on every process, not a hang. The other checks
// (shapes, pointers, eps; the layer's C = num_features) run first, and their
// outcome is part of that allgather: a process whose arguments are refused
// throws its own error, every other process Error(invalid_argument) naming
// its rank, and none runs the call.
// Data: f32, bf16 or f16 in either layout, rank 2 to 5; parameters and
// statistics f32. With one process it is batch_norm_forward_training /
// batch_norm_backward.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "bnorm/batch_norm.hpp"
#include "bnorm/communicator.hpp"
#include "bnorm/tensor.hpp"

namespace bnorm {

/// Forward training over every process's batch. Arguments as
/// batch_norm_forward_training; src may have N = 0. Throws
/// Error(invalid_argument) on every process when the global batch has
/// fewer than 2 values per channel.
void sync_batch_norm_forward_training(comm::Communicator& comm, const TensorDesc& src_desc, const void* src,
                                      const TensorDesc& dst_desc, void* dst, const float* gamma, const float* beta,
                                      float* save_mean, float* save_invstd, const RunningStats& running = {},
                                      const BatchNormConfig& config = {});

/// Backward of sync_batch_norm_forward_training: mean and invstd are its
/// (global) save_mean / save_invstd. diff_src (optional) is this process's
/// shard; diff_gamma / diff_beta (optional) the global sums.
void sync_batch_norm_backward(comm::Communicator& comm, const TensorDesc& src_desc, const void* src,
                              const TensorDesc& diff_dst_desc, const void* diff_dst, const TensorDesc& diff_src_desc,
                              void* diff_src, const float* gamma, const float* mean, const float* invstd,
                              float* diff_gamma, float* diff_beta);

/// torch.nn.SyncBatchNorm over a communicator: BatchNorm's options and
/// modes; in training the statistics span every process (each process calls
/// forward and backward with its shard, in the same order); in eval it is
/// BatchNorm's eval, local (no communication): the running statistics, or
/// without them this process's batch statistics, as PyTorch (which syncs
/// only in training). The communicator must outlive the layer.
class SyncBatchNorm {
 public:
  struct Options {
    std::int64_t num_features = 0;         ///< C, > 0
    double eps = 1e-5;                     ///< >= 0
    std::optional<double> momentum = 0.1;  ///< in [0, 1]; nullopt = cumulative average
    bool affine = true;                    ///< learn gamma and beta
    bool track_running_stats = true;       ///< keep running mean / var
  };

  /// Throws Error(invalid_argument) as BatchNorm's constructor does.
  SyncBatchNorm(const Options& options, comm::Communicator& comm);

  void train(bool on = true) noexcept { bn_.train(on); }
  void eval() noexcept { bn_.eval(); }
  bool is_training() const noexcept { return bn_.is_training(); }
  const Options& options() const noexcept { return options_; }
  comm::Communicator& communicator() const noexcept { return comm_; }

  /// Training: synchronized batch statistics, a collective. Eval: local, as
  /// BatchNorm's eval (the running statistics, or without them this
  /// process's batch statistics).
  void forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst);
  /// Backward of the last forward: a collective after a training forward,
  /// then weight_grad / bias_grad are the global sums; local after an eval
  /// forward (BatchNorm's backward of this process's shard).
  void backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src);

  std::span<float> weight() noexcept { return bn_.weight(); }
  std::span<float> bias() noexcept { return bn_.bias(); }
  std::span<float> running_mean() noexcept { return bn_.running_mean(); }
  std::span<float> running_var() noexcept { return bn_.running_var(); }
  std::int64_t num_batches_tracked() const noexcept { return bn_.num_batches_tracked(); }
  /// As BatchNorm::set_num_batches_tracked (restoring a checkpoint).
  void set_num_batches_tracked(std::int64_t count) { bn_.set_num_batches_tracked(count); }
  std::span<const float> weight_grad() const noexcept { return bn_.weight_grad(); }
  std::span<const float> bias_grad() const noexcept { return bn_.bias_grad(); }
  std::span<const float> saved_mean() const noexcept { return bn_.saved_mean(); }
  std::span<const float> saved_invstd() const noexcept { return bn_.saved_invstd(); }

 private:
  Options options_;
  BatchNorm bn_;  // parameters, running statistics, saved statistics, eval
  comm::Communicator& comm_;
  bool synced_ = false;  // the last forward was the collective one
};

}  // namespace bnorm

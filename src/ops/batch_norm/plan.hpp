// Internal interface of the batch-norm ops: how a problem is split across
// threads, and entry points that run a given plan so tests can force every
// code path on small shapes.
#pragma once

#include <cstdint>
#include <utility>

#include "bnorm/batch_norm.hpp"
#include "bnorm/tensor.hpp"
#include "ops/batch_norm/common.hpp"

namespace bnorm::ops::batch_norm {

/// A packed (N, C, spatial) problem.
struct Problem {
  DType dtype = DType::f32;
  Layout layout = Layout::channels_first;
  std::int64_t n = 0, c = 0, s = 0;

  static Problem of(const TensorDesc& desc) {
    return {desc.dtype(), desc.layout(), desc.batch(), desc.channels(), desc.spatial()};
  }
  /// Values per channel.
  std::int64_t count() const noexcept { return n * s; }
  std::int64_t elements() const noexcept { return n * c * s; }
  /// Rows of C contiguous channels: channels-last, or channels-first with no
  /// spatial dims (the two layouts coincide then).
  bool rows_view() const noexcept { return layout == Layout::channels_last || s == 1; }
};

/// How the work is divided.
enum class Strategy {
  /// Channels-first: each worker owns a range of whole channels, taken in
  /// blocks that fit L2: statistics of each channel in one pass from DRAM,
  /// then the block normalized sample by sample in memory order from cache.
  /// No barrier.
  channel_slabs,
  /// Channels-first: every worker takes a share of each channel (when a
  /// channel slab is too big for one core's L2, or the channels do not
  /// spread evenly); the shares' statistics are merged after one barrier per
  /// channel, then each share is normalized from cache.
  split_channels,
  /// Channels-first backward with small planes: each worker sums a
  /// contiguous range of the N*C planes in memory order into per-channel
  /// partials; a barrier, a merge, then dx over the same range as one
  /// stream. Reads x and dy twice from DRAM, but in long sequential runs,
  /// where channel blocks read and write a sample's few planes at a time.
  /// (Backward only: training runs such a plan as split_channels.)
  planes,
  /// Channels-last (or no spatial dims): each worker owns a block of rows;
  /// per-worker per-channel partials, a barrier, a merge, then the
  /// elementwise pass.
  rows,
};

struct Plan {
  Strategy strategy = Strategy::channel_slabs;
  int workers = 1;
  /// channel_slabs: channels per block (about half an L2 of data; more when
  /// that makes a sample's segment of the block whole cache lines).
  std::int64_t block_channels = 1;
  /// rows: rows per statistics tile (two passes over a tile while it is in L2).
  std::int64_t tile_rows = 1;
  /// Non-temporal stores for the output.
  bool stream = false;
  /// channel_slabs training and backward: each block's elementwise pass
  /// walks with the next block's sums (group norm's pipeline), instead of a
  /// block's sums and its elementwise pass taking turns.
  bool pipeline = false;
};

/// Which function a plan is for (they keep different amounts in cache).
enum class Pass { training, inference, backward };

/// The plan the public functions use for this problem on `threads` threads.
Plan plan_for(const Problem& problem, int threads, Pass pass);

/// How much data plan_for lets a worker read twice, expecting the second
/// read from its cache.
std::size_t reread_budget_bytes() noexcept;

// The strategies (channels_first.cpp, channels_last.cpp).
void training_channels_first(const Problem& p, const Plan& plan, const void* src, void* dst,
                             const TrainingOutputs& out);
void inference_channels_first(const Problem& p, const Plan& plan, const void* src, void* dst,
                              const float* center, const float* scale, const float* shift,
                              const k::Epilogue& post);
void backward_channels_first(const Problem& p, const Plan& plan, const void* src, const void* diff_dst,
                             void* diff_src, const float* mean, bool reduce, const BackwardOutputs& out);
void training_rows(const Problem& p, const Plan& plan, const void* src, void* dst,
                   const TrainingOutputs& out);
void inference_rows(const Problem& p, const Plan& plan, const void* src, void* dst, float* center_cyclic,
                    float* scale_cyclic, float* shift_cyclic, const k::Epilogue& post);
void backward_rows(const Problem& p, const Plan& plan, const void* src, const void* diff_dst, void* diff_src,
                   const float* mean, bool reduce, const BackwardOutputs& out);

/// Per-channel mean and M2 (C doubles each) of a problem with values (N * S
/// > 0), exact as the training plans compute them, without normalizing:
/// SyncBatchNorm's local statistics. Channels-first data by channel on
/// `workers` threads; rows (rows_view) with a rows plan.
void moments_channels_first(const Problem& p, int workers, const void* src, double* mean, double* m2);
void moments_rows(const Problem& p, const Plan& plan, const void* src, double* mean, double* m2);

/// A validated training call: the problem and the running-average weight.
struct TrainingCall {
  Problem problem;
  double factor = 0.0;
};
/// Counts a training step in running.num_batches_tracked (when given); the
/// count stops at INT64_MAX, where 1 / (count + 1) is 0 in double anyway.
void count_batch(const RunningStats& running) noexcept;

/// The argument checks of batch_norm_forward_training (api.cpp), shared by
/// its variants; throws Error naming the argument. A shard (SyncBatchNorm)
/// may hold any number of values, none included (then src / dst may be
/// null): the global count is checked later.
TrainingCall check_training(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                            const void* dst, const RunningStats& running, const BatchNormConfig& config,
                            bool shard = false);

/// Ghost batch norm's split of src_desc into groups of `vbs` samples: one
/// group's descriptor and the number of groups. Throws Error naming `name`
/// unless vbs divides the batch and, for training, each group holds more
/// than one value per channel. The layer checks with its option's name.
std::pair<TensorDesc, std::int64_t> ghost_groups(const TensorDesc& d, std::int64_t vbs,
                                                 const char* name = "virtual_batch_size",
                                                 bool training = true);

/// The argument checks of batch_norm_backward (api.cpp), shared by its
/// variants: the descriptors and the saved statistics.
Problem check_backward(const TensorDesc& src_desc, const TensorDesc& diff_dst_desc,
                       const TensorDesc& diff_src_desc, const float* mean, const float* invstd);
/// After check_backward (and a variant's own checks): false for an empty
/// batch, having zeroed diff_gamma / diff_beta (sums over nothing);
/// otherwise src and diff_dst are required and it returns true.
bool backward_has_work(const Problem& p, const void* src, const void* diff_dst, float* diff_gamma,
                       float* diff_beta);

/// forward training with an explicit plan; arguments already validated.
/// `factor` is the running-average weight of this batch.
void forward_training(const Problem& problem, const Plan& plan, const void* src, void* dst,
                      const float* gamma, const float* beta, float* save_mean, float* save_invstd,
                      float* running_mean, float* running_var, double eps, double factor,
                      bool unbiased_running_var = true, const Renorm* renorm = nullptr,
                      const k::Epilogue& post = {});

/// forward inference with an explicit plan; arguments already validated.
void forward_inference(const Problem& problem, const Plan& plan, const void* src, void* dst,
                       const float* gamma, const float* beta, const float* mean, const float* var, double eps,
                       const k::Epilogue& post = {});

/// backward with an explicit plan; arguments already validated.
void backward(const Problem& problem, const Plan& plan, const void* src, const void* diff_dst, void* diff_src,
              const float* gamma, const float* mean, const float* invstd, float* diff_gamma, float* diff_beta,
              BackwardStats stats, const float* renorm_r = nullptr, const float* renorm_d = nullptr,
              const k::Gate& gate = {});

}  // namespace bnorm::ops::batch_norm

// Internal interface of the group-norm ops (InstanceNorm is the case G = C):
// how a problem is split across threads, and entry points that run a given
// plan so tests can force every code path on small shapes.
#pragma once

#include <cstdint>

#include "bnorm/tensor.hpp"
#include "kernels/batch_norm/kernels.hpp"

namespace bnorm::ops::group_norm {

/// A packed (N, C, spatial) problem whose C channels form G groups.
struct Problem {
  DType dtype = DType::f32;
  Layout layout = Layout::channels_first;
  std::int64_t n = 0, c = 0, s = 0, g = 1;

  static Problem of(const TensorDesc& desc, std::int64_t groups) {
    return {desc.dtype(), desc.layout(), desc.batch(), desc.channels(), desc.spatial(), groups};
  }
  /// Channels per group.
  std::int64_t group_channels() const noexcept { return c / g; }
  /// Values per (sample, group).
  std::int64_t group_count() const noexcept { return group_channels() * s; }
  std::int64_t elements() const noexcept { return n * c * s; }
  /// Rows of C contiguous channels: channels-last, or channels-first with no
  /// spatial dims (the two layouts coincide then).
  bool rows_view() const noexcept { return layout == Layout::channels_last || s == 1; }
};

/// How the work is divided.
enum class Strategy {
  /// Channels-first: a (sample, group) block is C/G * S contiguous values and
  /// consecutive blocks are consecutive in memory. Each worker owns a range
  /// of whole blocks and pipelines them: the elementwise pass of block b
  /// (read again from cache) walks in one loop with the reduction of block
  /// b + 1 (from DRAM), so DRAM sees one read and one write of each value
  /// and the reads overlap the writes. No barrier.
  blocks,
  /// Channels-first: every worker takes a share of each block (fewer blocks
  /// than workers, blocks too big for one core's L2, or blocks that do not
  /// spread evenly); the shares' statistics meet after one barrier per
  /// block, then each share is normalized from cache.
  split_blocks,
  /// Rows (channels-last): each worker owns whole samples: per-channel
  /// partial moments over the sample's rows in tiles, merged per group, then
  /// the sample normalized, last tile first (the tiles read last are the
  /// ones still in cache), or, pipelined, beside the next sample's sums.
  /// No barrier.
  samples,
  /// Rows: every worker takes a share of each sample's rows; per-worker
  /// per-channel moments meet after one barrier per sample.
  split_samples,
};

struct Plan {
  Strategy strategy = Strategy::blocks;
  int workers = 1;
  /// samples / split_samples: rows per statistics tile.
  std::int64_t tile_rows = 1;
  /// Non-temporal stores for the output.
  bool stream = false;
  /// blocks: consecutive blocks per pipelined step, so that short
  /// blocks (instance norm on small planes) do not pay the per-step costs
  /// each.
  std::int64_t unit_blocks = 1;
  /// samples: each sample's output (forward, where the target can walk its
  /// rows down the tiles' columns) or dx (backward) walks in one loop with
  /// the next sample's sums, for samples whose x (and dy) are too big for a
  /// core's L2, so that their second read comes from memory either way.
  /// blocks, forward: a step's output walks plane by plane with the next
  /// step's sums; otherwise (planes too small for per-plane sums to pay)
  /// each step's moments are taken whole, in two passes (the second from
  /// cache), before its output.
  bool pipelined = false;
};

/// Which function a plan is for (backward keeps x and dy in cache).
enum class Pass { forward, backward };

/// The plan the public functions use for this problem on `threads` threads.
Plan plan_for(const Problem& problem, int threads, Pass pass);

/// Running statistics of the groups (InstanceNorm: G = C), updated from the
/// batch as at::instance_norm does: each sample's copy moves toward its own
/// statistics (unbiased variance) and the copies are averaged.
struct GroupRunning {
  float* mean = nullptr;  ///< G values
  float* var = nullptr;   ///< G values
  double momentum = 0.1;
};

/// Forward with an explicit plan; arguments already validated, elements > 0
/// and group_count() > 0. save_mean / save_invstd (N x G) and running may be
/// null. zero_variance: invstd of a constant group with eps = 0 (infinite
/// for group norm, zero for PyTorch's instance norm).
void forward(const Problem& problem, const Plan& plan, const void* src, void* dst, const float* gamma,
             const float* beta, float* save_mean, float* save_invstd, double eps,
             const GroupRunning* running = nullptr,
             kernels::batch_norm::ZeroVariance zero_variance = kernels::batch_norm::ZeroVariance::infinite);

/// Backward with an explicit plan (gradient through the group statistics);
/// arguments already validated, elements > 0.
void backward(const Problem& problem, const Plan& plan, const void* src, const void* diff_dst, void* diff_src,
              const float* gamma, const float* mean, const float* invstd, float* diff_gamma, float* diff_beta);

// The strategies (channels_first.cpp, channels_last.cpp). Arguments as above.
struct ForwardArgs {
  const float* gamma;
  const float* beta;
  float* save_mean;
  float* save_invstd;
  double eps;
  const GroupRunning* running;
  kernels::batch_norm::ZeroVariance zero_variance;
};
struct BackwardArgs {
  const float* gamma;
  const float* mean;
  const float* invstd;
  float* diff_gamma;
  float* diff_beta;
};
void forward_blocks(const Problem& p, const Plan& plan, const void* src, void* dst, const ForwardArgs& a);
void backward_blocks(const Problem& p, const Plan& plan, const void* src, const void* diff_dst, void* diff_src,
                     const BackwardArgs& a);
void forward_rows(const Problem& p, const Plan& plan, const void* src, void* dst, const ForwardArgs& a);
void backward_rows(const Problem& p, const Plan& plan, const void* src, const void* diff_dst, void* diff_src,
                   const BackwardArgs& a);

}  // namespace bnorm::ops::group_norm

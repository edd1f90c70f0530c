// The thread plan of each batch-norm call, and the entry points that run a
// plan (DESIGN.md section 4).

#include "ops/batch_norm/plan.hpp"

#include <algorithm>
#include <numeric>

#include "ops/parallel.hpp"

namespace bnorm::ops::batch_norm {
namespace {

// Below this many elements per worker, waking another thread costs more
// than it saves.
constexpr std::int64_t kGrainElements = 32768;

// Channels-first training pipelines its blocks when planes are this big.
constexpr std::size_t kPipelinePlaneBytes = 4096;
// Channels-first backward sums planes shorter than this in memory order.
constexpr std::size_t kPlanesWalkBytes = 1024;

// Never less than this (see reread_budget_bytes).
constexpr std::size_t kMinRereadBudget = std::size_t{1} << 20;

}  // namespace

// Data a worker reads twice must stay in cache in between. About half of a
// 2 MiB L2 is dependable (measured: re-reads slow down past ~1 MiB), but
// not less than 1 MiB where L2 is smaller: on an AMD EPYC with 1 MiB of L2
// per core (and its L3 behind it), one process alternating budgets of 512
// KiB and 1 MiB, 2 threads, channels-first training 64x256x56x56 took
// 0.84x the time (f32: its 800 KB channels no longer split between the
// workers) and 0.77x (bf16: blocks of two channels), backward 0.93-1.01x;
// 32x64x56x56, 256x1024x14x14, 128x512x7x7 and channels-last 0.97-1.06x
// (noise).
std::size_t reread_budget_bytes() noexcept { return std::max(l2_cache_bytes() / 2, kMinRereadBudget); }

Plan plan_for(const Problem& problem, int threads, Pass pass) {
  Plan plan;
  const std::int64_t elements = problem.elements();
  const std::int64_t by_size = std::max<std::int64_t>(1, (elements + kGrainElements - 1) / kGrainElements);
  plan.workers = static_cast<int>(std::clamp<std::int64_t>(by_size, 1, std::max(1, threads)));
  plan.stream = static_cast<std::size_t>(elements) * size_of(problem.dtype) > streaming_threshold_bytes();
  const std::size_t esize = size_of(problem.dtype);
  const std::size_t budget = reread_budget_bytes();
  if (problem.rows_view()) {
    plan.strategy = Strategy::rows;
    plan.tile_rows = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(budget / (static_cast<std::size_t>(problem.c) * esize)));
    return plan;
  }
  // Owned channels: a block of channels is read for its statistics and again
  // (from cache) to normalize it; backward reads x and dy.
  const int w = plan.workers;
  const std::size_t slab =
      static_cast<std::size_t>(problem.count()) * esize * (pass == Pass::backward ? 2 : 1);
  const bool fits = slab <= budget;
  const bool even = problem.c % w == 0 || problem.c >= 8 * w;
  plan.strategy = w == 1 || (fits && even) || pass == Pass::inference ? Strategy::channel_slabs
                                                                      : Strategy::split_channels;
  // Backward with short planes sums in memory order (Strategy::planes). A
  // channel's runs are then too short to read well one channel at a time,
  // and a block's per-sample segments too short to stream. Measured (one
  // process, channel blocks -> planes): 256x1024x14x14, 2 threads, bf16
  // 20.9 -> 16.6 ms, f32 32.3 -> 32.1; 1 thread bf16 41.3 -> 35.4, f32 70.7
  // -> 65.5; 128x512x7x7 1 thread bf16 2.29 -> 1.59, f32 2.86 -> 2.53, 2
  // threads bf16 1.13 -> 0.81, f32 1.08 -> 1.19; 2x64x7x7 f32 4.5 -> 3.0 us.
  // With 3 KiB planes it lost (32x64x28x28 f32, 2 threads: 0.97 -> 1.14).
  if (pass == Pass::backward && static_cast<std::size_t>(problem.s) * esize < kPlanesWalkBytes) {
    plan.strategy = Strategy::planes;
    return plan;
  }
  // Pipelined training and backward blocks walk plane by plane, which costs
  // per plane: measured on 64x256x56x56 (planes of 12 KiB f32) 20.7 -> 15.6
  // ms, on 256x1024x14x14 (784 B) 17.2 -> 23.7 ms.
  plan.pipeline = pass != Pass::inference && plan.strategy == Strategy::channel_slabs &&
                  static_cast<std::size_t>(problem.s) * esize >= kPipelinePlaneBytes;
  // (Pipelined blocks of up to a whole L2 instead of half measured 6-9%
  // faster on 64x256x56x56 bf16 backward but 8-24% slower on 32x64x56x56,
  // f32 and bf16, training and backward: not taken.)
  const std::int64_t most =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(budget / std::max<std::size_t>(1, slab)));
  // Blocks whose per-sample segments are whole cache lines, so that
  // streaming stores never write part of a line: a line written partly by
  // streaming and partly by ordinary stores is slow. Worth exceeding half
  // the L2 for (measured on 256x1024x14x14 backward, 2 threads, before such
  // planes went to Strategy::planes: bf16 5 -> 8 channels 31.7 -> 24.3 ms,
  // f32 2 -> 4 channels 40.8 -> 36.6).
  const std::int64_t line_elements = 64 / static_cast<std::int64_t>(esize);
  const std::int64_t align = line_elements / std::gcd(problem.s, line_elements);
  if (most >= align) {
    plan.block_channels = most / align * align;
  } else {
    const bool align_fits = static_cast<std::size_t>(align) * slab <= l2_cache_bytes();
    plan.block_channels = plan.stream && align_fits ? align : most;
  }
  plan.block_channels =
      std::clamp<std::int64_t>(plan.block_channels, 1, std::max<std::int64_t>(1, problem.c / w));
  return plan;
}

void forward_training(const Problem& p, const Plan& plan, const void* src, void* dst, const float* gamma,
                      const float* beta, float* save_mean, float* save_invstd, float* running_mean,
                      float* running_var, double eps, double factor, bool unbiased_running_var,
                      const Renorm* renorm, const k::Epilogue& post) {
  const TrainingOutputs out{gamma,       beta, save_mean, save_invstd,          running_mean,
                            running_var, eps,  factor,    unbiased_running_var, renorm,
                            post};
  if (plan.strategy == Strategy::rows) {
    training_rows(p, plan, src, dst, out);
  } else {
    training_channels_first(p, plan, src, dst, out);
  }
}

namespace {

// The inference pass dst = (src - center) * scale + shift with per-channel
// normalizers that fill(center, scale, shift, scratch) writes (C entries
// each; scratch: 3 * C doubles); rows get the cyclic arrays of kernels.hpp.
template <class Fill>
void normalize_channels(const Problem& p, const Plan& plan, const void* src, void* dst,
                        const k::Epilogue& post, Fill&& fill) {
  const std::int64_t C = p.c;
  const std::size_t uL = static_cast<std::size_t>(plan.strategy == Strategy::rows ? k::cyclic_length(C) : C);
  ScratchLayout layout;
  const std::size_t o_center = layout.add<float>(uL), o_scale = layout.add<float>(uL),
                    o_shift = layout.add<float>(uL),
                    o_scratch = layout.add<double>(3 * static_cast<std::size_t>(C));
  std::byte* base = thread_scratch(layout.bytes());
  float* center = scratch_at<float>(base, o_center);
  float* scale = scratch_at<float>(base, o_scale);
  float* shift = scratch_at<float>(base, o_shift);
  fill(center, scale, shift, scratch_at<double>(base, o_scratch));
  if (plan.strategy == Strategy::rows) {
    inference_rows(p, plan, src, dst, center, scale, shift, post);
  } else {
    inference_channels_first(p, plan, src, dst, center, scale, shift, post);
  }
}

}  // namespace

void forward_inference(const Problem& p, const Plan& plan, const void* src, void* dst, const float* gamma,
                       const float* beta, const float* mean, const float* var, double eps,
                       const k::Epilogue& post) {
  // center = the (f32) running mean, scale = gamma / sqrt(var + eps), shift =
  // beta.
  normalize_channels(p, plan, src, dst, post,
                     [&](float* center, float* scale, float* shift, double* scratch) {
                       const std::int64_t C = p.c;
                       double *mean_d = scratch, *var_d = scratch + C;
                       std::copy(mean, mean + C, mean_d);
                       std::copy(var, var + C, var_d);
                       // count 1: m2 is the variance itself; the mean is already an f32.
                       k::finish_channels(C, 1.0, mean_d, var_d, eps, k::ZeroVariance::infinite, gamma, beta,
                                          center, scale, shift, scratch + 2 * C);
                     });
}

void backward(const Problem& p, const Plan& plan, const void* src, const void* diff_dst, void* diff_src,
              const float* gamma, const float* mean, const float* invstd, float* diff_gamma, float* diff_beta,
              BackwardStats stats, const float* renorm_r, const float* renorm_d, const k::Gate& gate) {
  const BackwardOutputs out{gamma, invstd, diff_gamma, diff_beta, stats, renorm_r, renorm_d, gate};
  // The sums are needed for the parameter gradients, and for dx when the
  // statistics were the batch's.
  const bool reduce = diff_gamma || diff_beta || (stats == BackwardStats::batch && diff_src);
  if (!reduce && !diff_src) return;
  if (!reduce && !gate.gates() && !gate.dz) {
    // Fixed statistics and dx alone: dx = dy * gamma * invstd is the
    // inference pass on dy (center 0, scale gamma * invstd, shift 0). It
    // does not read x: two streams instead of three, and a NaN in x stays
    // out of dx, as in PyTorch's eval-mode backward.
    normalize_channels(p, plan_for(p, plan.workers, Pass::inference), diff_dst, diff_src, {},
                       [&](float* center, float* scale, float* shift, double*) {
                         for (std::int64_t c = 0; c < p.c; ++c) {
                           center[c] = shift[c] = 0.0f;
                           // As backward_coefficients' k_dy.
                           scale[c] = static_cast<float>((gamma ? static_cast<double>(gamma[c]) : 1.0) *
                                                         static_cast<double>(invstd[c]));
                         }
                       });
    return;
  }
  if (plan.strategy == Strategy::rows) {
    backward_rows(p, plan, src, diff_dst, diff_src, mean, reduce, out);
  } else {
    backward_channels_first(p, plan, src, diff_dst, diff_src, mean, reduce, out);
  }
}

}  // namespace bnorm::ops::batch_norm

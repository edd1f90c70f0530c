// The thread plan of each group-norm call, and the entry points that run a
// plan (DESIGN.md section 4).

#include "ops/group_norm/plan.hpp"

#include <algorithm>

#include "ops/batch_norm/common.hpp"
#include "ops/parallel.hpp"

namespace bnorm::ops::group_norm {
namespace {

// Below this many elements per worker, waking another thread costs more
// than it saves.
constexpr std::int64_t kGrainElements = 32768;

// Owned blocks are pipelined in steps of about this many bytes (of x).
constexpr std::size_t kUnitBytes = 8192;

// Planes of at most this many values are not worth a walk and a sum each:
// the forward takes each step's moments whole (two passes, the second from
// L1 / L2), then its output. One process alternating against the walk, 2
// threads, 64 x C x S: instance norm f32 0.51-0.61 the time at S = 4 to 64,
// 0.77-0.91 at 196 to 512, 1.11 at 784; bf16 0.50-0.79 at S = 4 to 256,
// 0.86-0.93 at 320 and 400, 1.02 at 448, 1.15 at 512; group norm with 2 to
// 32 planes per block 0.58-0.97 at S = 16 to 196. (The moments had been a
// pivot and shifted sums per block, after the step's output; against those,
// group norm f32 64x512x4 took 0.57 the time, 64x512x7x7 0.88.)
constexpr std::int64_t kWholePlaneValues = 400;

// Channels-first planes shorter than this do not stream their output: each
// plane's partial lines at its two ends are stored plainly, and with short
// planes the streamed lines between them were slower than plain stores
// throughout (perf put a third of the backward's time on the instruction
// after the streaming store). One process alternating, 2 threads, Zen 4,
// medians of 9-21: 7x7 planes forward 0.81-0.85 the time, backward 0.74-0.93
// (64x512 and 512x512, f32 and bf16); 14x14 (256x1024) forward f32 0.79-0.96,
// bf16 0.61, backward f32 0.88-0.92, bf16 0.66; bf16 28x28 (1568 bytes)
// 0.83-0.89; f32 20x20 (1600 bytes) 0.92-1.0. Streaming won from about 2 KiB:
// f32 24x24 0.98-1.05, bf16 40x40 0.95-1.10, f32 28x28 0.98-1.15. (Batch
// norm's channels-first passes, which write the planes of a block as one
// run, keep streaming: the same rule there took 1.02-1.80 the time.)
constexpr std::size_t kStreamedPlaneBytes = 2048;

}  // namespace

Plan plan_for(const Problem& p, int threads, Pass pass) {
  Plan plan;
  const std::int64_t elements = p.elements();
  const std::int64_t by_size = std::max<std::int64_t>(1, (elements + kGrainElements - 1) / kGrainElements);
  plan.workers = static_cast<int>(std::clamp<std::int64_t>(by_size, 1, std::max(1, threads)));
  const int w = plan.workers;
  const std::size_t esize = size_of(p.dtype);
  plan.stream = static_cast<std::size_t>(elements) * esize > batch_norm::streaming_threshold_bytes();
  // Row tiles (the second pass of the statistics, when the guard asks for
  // it, and the reverse-order elementwise pass) are sized to stay in a
  // core's L2; about half of it is dependable (batch norm's measurement).
  // Backward keeps x and dy.
  const std::size_t budget = l2_cache_bytes() / 2;
  const std::size_t per_value = esize * (pass == Pass::backward ? 2 : 1);
  if (p.rows_view()) {
    const std::size_t row_bytes = static_cast<std::size_t>(p.c) * per_value;
    plan.tile_rows = std::max<std::int64_t>(1, static_cast<std::int64_t>(budget / row_bytes));
    // Owned samples need no barrier. Sharing every sample would let a
    // sample too big for one L2 stay in two, but costs a barrier per sample,
    // which a busy machine turns into a scheduler slice each (measured on
    // 64x256x56x56: 2 threads sharing samples 9x the roofline, owning them
    // 2x): share only when the samples do not spread over the workers.
    const bool even = p.n % w == 0 || p.n >= 8 * w;
    plan.strategy = w == 1 || even ? Strategy::samples : Strategy::split_samples;
    // Pipelined, the output's pass reads the sample from memory again,
    // where taking turns reads much of it from L2 when it nearly fits.
    // Separate processes alternating, 64x256x56x56, 2 threads, on a 2 MB L2:
    // forward f32 (3.2 MB samples) 0.80-0.90 the time, bf16 (1.6 MB)
    // 1.05-1.12; backward (x and dy: 6.4 / 3.2 MB) 0.77-0.87, f32 and bf16.
    // A backward sample of more than 4 L2 takes turns: pipelined, each worker
    // keeps two samples of x and dy in flight, and the one it re-reads no
    // longer stays in L3. One process alternating, 2 threads, 1 MB L2 and
    // 32 MB L3: turns took 0.82-0.93 the time for samples of 6.4-51 MB,
    // f32 and bf16, 0.93-1.05 at 3.2 MB and 1.08-1.18 at 1.6 MB. The
    // forward, one stream, gained nothing from turns there (0.90-1.11).
    const std::size_t sample_bytes = static_cast<std::size_t>(p.s * p.c) * per_value;
    plan.pipelined = plan.strategy == Strategy::samples && sample_bytes > l2_cache_bytes() &&
                     (pass != Pass::backward || sample_bytes <= 4 * l2_cache_bytes());
    return plan;
  }
  const std::int64_t blocks = p.n * p.g;
  // As for samples: owned blocks unless they do not spread over the
  // workers. (A block bigger than L2 is then read twice from memory.)
  const bool even = blocks % w == 0 || blocks >= 8 * w;
  plan.strategy = w == 1 || even ? Strategy::blocks : Strategy::split_blocks;
  const std::size_t block_bytes = static_cast<std::size_t>(p.group_count()) * esize;
  if (plan.strategy == Strategy::blocks)
    plan.unit_blocks = std::clamp<std::int64_t>(static_cast<std::int64_t>(kUnitBytes / block_bytes), 1,
                                                std::max<std::int64_t>(1, blocks / w));
  plan.pipelined = p.s > kWholePlaneValues;
  plan.stream = plan.stream && static_cast<std::size_t>(p.s) * esize >= kStreamedPlaneBytes;
  return plan;
}

void forward(const Problem& p, const Plan& plan, const void* src, void* dst, const float* gamma,
             const float* beta, float* save_mean, float* save_invstd, double eps, const GroupRunning* running,
             kernels::batch_norm::ZeroVariance zero_variance) {
  const ForwardArgs a{gamma, beta, save_mean, save_invstd, eps, running, zero_variance};
  if (plan.strategy == Strategy::samples || plan.strategy == Strategy::split_samples) {
    forward_rows(p, plan, src, dst, a);
  } else {
    forward_blocks(p, plan, src, dst, a);
  }
}

void backward(const Problem& p, const Plan& plan, const void* src, const void* diff_dst, void* diff_src,
              const float* gamma, const float* mean, const float* invstd, float* diff_gamma, float* diff_beta) {
  if (!diff_src && !diff_gamma && !diff_beta) return;
  const BackwardArgs a{gamma, mean, invstd, diff_gamma, diff_beta};
  if (plan.strategy == Strategy::samples || plan.strategy == Strategy::split_samples) {
    backward_rows(p, plan, src, diff_dst, diff_src, a);
  } else {
    backward_blocks(p, plan, src, diff_dst, diff_src, a);
  }
}

}  // namespace bnorm::ops::group_norm

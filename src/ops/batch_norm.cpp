// Batch-norm ops: validation, the thread plan, and the calls into the kernels.
// Semantics: DESIGN.md section 2; numerics: section 3; the plans: section 4.

#include "bnorm/batch_norm.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/runtime.hpp"
#include "kernels/batch_norm/kernels.hpp"
#include "kernels/common/scalar.hpp"
#include "ops/batch_norm_plan.hpp"
#include "ops/parallel.hpp"
#include "ops/validate.hpp"

namespace bnorm::ops::batch_norm {
namespace k = kernels::batch_norm;
using kernels::element_ptr;
using kernels::load_float;

namespace {

// Below this many elements per worker, waking another thread costs more
// than it saves.
constexpr std::int64_t kGrainElements = 32768;

// Outputs larger than this go out with non-temporal stores: they cannot stay
// in the cores' L2 anyway, and skipping the read-for-ownership saves a third
// of the DRAM traffic of an elementwise pass.
std::size_t streaming_threshold_bytes() noexcept { return 4 * l2_cache_bytes(); }

// Count, mean and sum of squared deviations of a set of values.
struct Stats {
  double count = 0.0;
  double mean = 0.0;
  double m2 = 0.0;
};

// Chan et al.'s pairwise merge; exact in the sense that no variance is ever
// formed as a difference of large sums.
void merge_into(Stats& a, const Stats& b) {
  if (b.count == 0.0) return;
  if (a.count == 0.0) {
    a = b;
    return;
  }
  const double count = a.count + b.count;
  if (!std::isfinite(a.mean) || !std::isfinite(b.mean)) {
    // Inf or NaN data: the mean is their sum (inf stays inf, as in ATen;
    // inf - inf or NaN gives NaN) and the variance is undefined.
    a = {count, a.mean + b.mean, std::numeric_limits<double>::quiet_NaN()};
    return;
  }
  const double delta = b.mean - a.mean;
  a.mean += delta * (b.count / count);
  a.m2 += b.m2 + delta * delta * (a.count * b.count / count);
  a.count = count;
}

// y = (x - center) * scale + shift, with center the mean rounded to f32 and
// the rounding residue folded into shift, so x - center is exact for x near
// the mean (DESIGN.md section 3).
struct Affine {
  float center = 0.0f;
  float scale = 1.0f;
  float shift = 0.0f;
};

float finite_or_zero(float v) { return std::isfinite(v) ? v : 0.0f; }

// Outputs of one channel of a training step, and its normalizer.
struct TrainingOutputs {
  const float* gamma;
  const float* beta;
  float* save_mean;
  float* save_invstd;
  float* running_mean;
  float* running_var;
  double eps;
  double factor;
  bool unbiased;

  // Channels [c0, c1), each with `count` values: mean and m2 hold their
  // statistics, center/scale/shift receive their normalizers (all indexed
  // from c0). With `write`, also the saved and running statistics.
  // invstd: scratch for c1 - c0 doubles.
  void finish(std::int64_t c0, std::int64_t c1, double count, const double* mean, const double* m2,
              float* center, float* scale, float* shift, double* invstd, bool write) const {
    const std::int64_t n = c1 - c0;
    k::finish_channels(n, count, mean, m2, eps, gamma ? gamma + c0 : nullptr, beta ? beta + c0 : nullptr,
                       center, scale, shift, invstd);
    if (!write) return;
    for (std::int64_t i = 0; i < n; ++i) {
      if (save_mean) save_mean[c0 + i] = static_cast<float>(mean[i]);
      if (save_invstd) save_invstd[c0 + i] = static_cast<float>(invstd[i]);
    }
    if (!running_mean) return;
    // Unbiased for PyTorch (count > 1 was checked), biased for ONNX.
    const double var_scale = 1.0 / (unbiased ? count - 1.0 : count);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t c = c0 + i;
      running_mean[c] = static_cast<float>((1.0 - factor) * running_mean[c] + factor * mean[i]);
      running_var[c] = static_cast<float>((1.0 - factor) * running_var[c] + factor * m2[i] * var_scale);
    }
  }

  Affine finish(std::int64_t c, const Stats& st, bool write) const {
    Affine a;
    double invstd;
    finish(c, c + 1, st.count, &st.mean, &st.m2, &a.center, &a.scale, &a.shift, &invstd, write);
    return a;
  }
};

// Chan's merge of moments b into a for n channels that all have the same
// counts (so the weights are scalars); returns the merged count. Inf or NaN
// means make the merged mean their sum (inf stays inf, as in ATen) and the
// spread undefined.
double merge_moments(std::int64_t n, double count_a, double* mean_a, double* m2_a, double count_b,
                     const double* mean_b, const double* m2_b) {
  if (count_b == 0.0) return count_a;
  if (count_a == 0.0) {
    std::copy(mean_b, mean_b + n, mean_a);
    std::copy(m2_b, m2_b + n, m2_a);
    return count_b;
  }
  const double count = count_a + count_b;
  const double wb = count_b / count, wab = count_a * count_b / count;
  for (std::int64_t i = 0; i < n; ++i) {
    const double delta = mean_b[i] - mean_a[i];
    if (std::isfinite(mean_a[i]) && std::isfinite(mean_b[i])) {
      mean_a[i] += delta * wb;
      m2_a[i] += m2_b[i] + delta * delta * wab;
    } else {
      mean_a[i] += mean_b[i];
      m2_a[i] = std::numeric_limits<double>::quiet_NaN();
    }
  }
  return count;
}

// Backward coefficients of one channel: dx = k_dy*dy + k_xc*(x - mean) + k_const.
struct BackwardCoefs {
  float k_dy = 0.0f, k_xc = 0.0f, k_const = 0.0f;
};

struct BackwardOutputs {
  const float* gamma;
  const float* invstd;
  float* diff_gamma;
  float* diff_beta;
  BackwardStats stats;

  // Channels [c0, c1) with `count` values each; sums indexed from c0,
  // coefficients written from index 0 of k_dy / k_xc / k_const. With
  // `write`, also the parameter gradients.
  void finish(std::int64_t c0, std::int64_t c1, double count, const double* sum_dy, const double* sum_dy_xc,
              float* k_dy, float* k_xc, float* k_const, bool write) const {
    const std::int64_t n = c1 - c0;
    if (write) {
      for (std::int64_t i = 0; i < n; ++i) {
        if (diff_gamma) diff_gamma[c0 + i] = static_cast<float>(sum_dy_xc[i] * invstd[c0 + i]);
        if (diff_beta) diff_beta[c0 + i] = static_cast<float>(sum_dy[i]);
      }
    }
    const bool batch = stats == BackwardStats::batch && count > 0.0;
    const double inv_count = batch ? 1.0 / count : 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
      const double is = invstd[c0 + i];
      const double g = gamma ? gamma[c0 + i] : 1.0;
      k_dy[i] = static_cast<float>(g * is);
      k_xc[i] = static_cast<float>(-g * is * is * is * sum_dy_xc[i] * inv_count);
      k_const[i] = static_cast<float>(-g * is * sum_dy[i] * inv_count);
    }
  }

  BackwardCoefs finish(std::int64_t c, double count, double sum_dy, double sum_dy_xc, bool write) const {
    BackwardCoefs k;
    finish(c, c + 1, count, &sum_dy, &sum_dy_xc, &k.k_dy, &k.k_xc, &k.k_const, write);
    return k;
  }
};

// A worker's share [begin, end) of one channel's N*S values (channels-first),
// as at most three strided pieces: a partial run, whole runs, a partial run.
// Offsets are relative to the channel's first element.
struct Segments {
  struct Piece {
    std::int64_t offset;
    k::Runs runs;
  };
  int size = 0;
  Piece piece[3];
  std::int64_t count = 0;
  std::int64_t first = 0;  // offset of the first value
};

Segments segments_of(std::int64_t begin, std::int64_t end, std::int64_t s, std::int64_t run_stride) {
  Segments out;
  out.count = end - begin;
  std::int64_t p = begin;
  auto add = [&](std::int64_t from, std::int64_t runs, std::int64_t len) {
    out.piece[out.size++] = {(from / s) * run_stride + from % s, k::Runs{runs, len, run_stride}};
  };
  if (p < end && p % s != 0) {
    const std::int64_t len = std::min(s - p % s, end - p);
    add(p, 1, len);
    p += len;
  }
  if (end - p >= s) {
    const std::int64_t runs = (end - p) / s;
    add(p, runs, s);
    p += runs * s;
  }
  if (p < end) add(p, 1, end - p);
  out.first = out.size ? out.piece[0].offset : 0;
  return out;
}

// Pass 1 over a channel share: a pivot (its first finite value, else 0) and
// the sum of (x - pivot), which gives the mean without cancellation.
struct ShareSum {
  float pivot = 0.0f;
  double sum = 0.0;
};

ShareSum share_sum(DType dt, const void* x, const Segments& segs) {
  ShareSum r;
  if (segs.count == 0) return r;
  r.pivot = finite_or_zero(load_float(dt, x, segs.first));
  for (int i = 0; i < segs.size; ++i)
    r.sum += k::sum_shifted(dt, element_ptr(x, dt, segs.piece[i].offset), segs.piece[i].runs, r.pivot);
  return r;
}

// Pass 2, from cache: squares about the mean rounded to f32, corrected by
// n * (mean - center)^2 (an exact identity, no cancellation).
Stats share_stats(DType dt, const void* x, const Segments& segs, const ShareSum& first) {
  if (segs.count == 0) return {};
  const double count = static_cast<double>(segs.count);
  const double mean = first.pivot + first.sum / count;
  const float center = static_cast<float>(mean);
  double sq = 0.0;
  for (int i = 0; i < segs.size; ++i)
    sq += k::sum_sq_centered(dt, element_ptr(x, dt, segs.piece[i].offset), segs.piece[i].runs, center);
  const double dm = mean - static_cast<double>(center);
  double m2 = sq - count * dm * dm;
  if (m2 < 0.0) m2 = 0.0;  // rounding only; NaN stays NaN
  return {count, mean, m2};
}

// Pass 3: normalizes the share from cache while pass 1 of the next channel
// (when `next` is given) streams in, so DRAM reads and writes overlap.
ShareSum share_normalize(DType dt, const void* x, void* y, const Segments& segs, const Affine& a, bool stream,
                         const void* next) {
  ShareSum r;
  if (next && segs.count) r.pivot = finite_or_zero(load_float(dt, next, segs.first));
  for (int i = 0; i < segs.size; ++i) {
    const auto& p = segs.piece[i];
    r.sum +=
        k::normalize(dt, element_ptr(x, dt, p.offset), element_ptr(y, dt, p.offset), p.runs, a.center,
                     a.scale, a.shift, stream, next ? element_ptr(next, dt, p.offset) : nullptr, r.pivot);
  }
  return r;
}

struct ShareGrad {
  double sum_dy = 0.0;
  double sum_dy_xc = 0.0;
};

ShareGrad share_reduce(DType dt, const void* x, const void* dy, const Segments& segs, float center) {
  double sums[2] = {0.0, 0.0};
  for (int i = 0; i < segs.size; ++i) {
    const auto& p = segs.piece[i];
    k::backward_reduce(dt, element_ptr(x, dt, p.offset), element_ptr(dy, dt, p.offset), p.runs, center, sums);
  }
  return {sums[0], sums[1]};
}

// Applies the gradient to the share from cache while the next channel's
// reduction (when next_x is given) streams in.
ShareGrad share_apply(DType dt, const void* x, const void* dy, void* dx, const Segments& segs, float center,
                      const BackwardCoefs& kc, bool stream, const void* next_x, const void* next_dy,
                      float next_center) {
  double sums[2] = {0.0, 0.0};
  for (int i = 0; i < segs.size; ++i) {
    const auto& p = segs.piece[i];
    k::backward_apply(dt, element_ptr(x, dt, p.offset), element_ptr(dy, dt, p.offset),
                      element_ptr(dx, dt, p.offset), p.runs, center, kc.k_dy, kc.k_xc, kc.k_const, stream,
                      next_x ? element_ptr(next_x, dt, p.offset) : nullptr,
                      next_x ? element_ptr(next_dy, dt, p.offset) : nullptr, next_center, sums);
  }
  return {sums[0], sums[1]};
}

// Extends the first C entries of a cyclic array over its whole length.
void fill_cyclic(float* cyclic, std::int64_t channels) {
  const std::int64_t length = k::cyclic_length(channels);
  for (std::int64_t j = channels; j < length; ++j) cyclic[j] = cyclic[j - channels];
}

// Writes the wrap-around entries (beyond the first C) of a cyclic array for
// channels [c0, c1), whose first entries are in place; length is
// k::cyclic_length(channels).
void wrap_cyclic(float* cyclic, std::int64_t channels, std::int64_t length, std::int64_t c0,
                 std::int64_t c1) {
  for (std::int64_t c = c0; c < c1; ++c)
    for (std::int64_t j = c + channels; j < length; j += channels) cyclic[j] = cyclic[c];
}

// Per-worker scratch of the owned-channel pipelines: per-block parameter
// arrays and the f32 accumulators of the next block (one entry per element
// of a sample's block, folded into double every kSamplesPerFold samples).
constexpr std::int64_t kSamplesPerFold = 32;

struct BlockScratch {
  std::size_t bytes = 0, o_params = 0, o_acc = 0, o_sums = 0;
  std::int64_t params = 0, acc_len = 0;
  BlockScratch(std::int64_t block, std::int64_t s, int param_arrays, int accumulators) {
    ScratchLayout l;
    params = block;
    acc_len = block * s + k::kCyclicPad;
    o_params = l.add<float>(static_cast<std::size_t>(param_arrays * block));
    o_acc = l.add<float>(static_cast<std::size_t>(accumulators * acc_len));
    o_sums = l.add<double>(static_cast<std::size_t>(accumulators * block));
    bytes = (l.bytes() + 63) / 64 * 64;
  }
};

// Adds each plane's slice of acc (block planes of s elements) into sums and
// clears acc.
void fold_planes(float* acc, std::int64_t block, std::int64_t s, double* sums) {
  for (std::int64_t g = 0; g < block; ++g) {
    double sum = 0.0;
    for (std::int64_t i = 0; i < s; ++i) sum += acc[g * s + i];
    sums[g] += sum;
  }
  std::fill(acc, acc + block * s, 0.0f);
}

// channel_slabs training: each worker runs its channels in blocks that fit
// L2 twice over. Statistics per channel (pass 1 from DRAM, pass 2 from
// cache); then the block is normalized sample by sample in memory order
// (aligned streaming stores, whatever S is) while pass 1 of the next block
// rides along, so DRAM reads and writes overlap.
void training_owned_blocks(const Problem& p, const Plan& plan, const void* src, void* dst,
                           const TrainingOutputs& out) {
  const int workers = plan.workers;
  const std::int64_t G = std::max<std::int64_t>(1, plan.block_channels);
  const BlockScratch layout(G, p.s, 4, 1);
  std::byte* base = thread_scratch(layout.bytes * static_cast<std::size_t>(workers));
  const Segments whole = segments_of(0, p.count(), p.s, p.c * p.s);
  const std::int64_t sample = p.c * p.s;
  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      std::byte* mine = base + layout.bytes * static_cast<std::size_t>(w);
      float* center = scratch_at<float>(mine, layout.o_params);
      float* scale = center + G;
      float* shift = scale + G;
      float* next_pivot = shift + G;
      float* acc = scratch_at<float>(mine, layout.o_acc);
      double* next_sum = scratch_at<double>(mine, layout.o_sums);
      std::fill(acc, acc + layout.acc_len, 0.0f);
      const std::int64_t c0 = split_point(p.c, workers, w), c1 = split_point(p.c, workers, w + 1);
      if (c0 == c1) return;
      // Pass 1 of the first block on its own.
      for (std::int64_t c = c0; c < std::min(c1, c0 + G); ++c) {
        const ShareSum f = share_sum(p.dtype, element_ptr(src, p.dtype, c * p.s), whole);
        next_pivot[c - c0] = f.pivot;
        next_sum[c - c0] = f.sum;
      }
      for (std::int64_t b = c0; b < c1; b += G) {
        const std::int64_t g_here = std::min(G, c1 - b);
        for (std::int64_t g = 0; g < g_here; ++g) {
          const std::int64_t c = b + g;
          const ShareSum f{next_pivot[g], next_sum[g]};
          const Affine a =
              out.finish(c, share_stats(p.dtype, element_ptr(src, p.dtype, c * p.s), whole, f), true);
          center[g] = a.center;
          scale[g] = a.scale;
          shift[g] = a.shift;
        }
        // The next block rides along only when it has the same shape.
        const std::int64_t nb = b + G;
        const bool fuse = nb < c1 && std::min(G, c1 - nb) == g_here;
        for (std::int64_t g = 0; g < g_here; ++g) {
          next_sum[g] = 0.0;
          next_pivot[g] = fuse ? finite_or_zero(load_float(p.dtype, src, (nb + g) * p.s)) : 0.0f;
        }
        for (std::int64_t n = 0; n < p.n; ++n) {
          const std::int64_t off = n * sample + b * p.s;
          k::normalize_planes(p.dtype, element_ptr(src, p.dtype, off), element_ptr(dst, p.dtype, off), g_here,
                              p.s, 0, g_here, center, scale, shift, plan.stream,
                              fuse ? element_ptr(src, p.dtype, off + g_here * p.s) : nullptr, next_pivot,
                              acc);
          if (fuse && ((n + 1) % kSamplesPerFold == 0 || n + 1 == p.n))
            fold_planes(acc, g_here, p.s, next_sum);
        }
        if (!fuse && nb < c1) {
          for (std::int64_t c = nb; c < std::min(c1, nb + G); ++c) {
            const ShareSum f = share_sum(p.dtype, element_ptr(src, p.dtype, c * p.s), whole);
            next_pivot[c - nb] = f.pivot;
            next_sum[c - nb] = f.sum;
          }
        }
      }
    });
    if (plan.stream) k::stream_fence();
  });
}

// Channels-first training, one channel after another: pass 1 (sum) streams
// from DRAM, pass 2 (squares) runs from cache, pass 3 (normalize) runs from
// cache fused with pass 1 of the next channel. channel_slabs: each worker
// owns a range of whole channels, no barrier. split_channels: every worker
// takes a share of each channel; partial statistics are merged after one
// barrier per channel (Chan's formula).
void training_channels(const Problem& p, const Plan& plan, const void* src, void* dst,
                       const TrainingOutputs& out) {
  const int workers = plan.workers;
  const bool shared = plan.strategy == Strategy::split_channels;
  auto x_at = [&](std::int64_t c) { return element_ptr(src, p.dtype, c * p.s); };
  auto y_at = [&](std::int64_t c) { return element_ptr(dst, p.dtype, c * p.s); };
  if (!shared) {
    training_owned_blocks(p, plan, src, dst, out);
    return;
  }
  ScratchLayout layout;
  const std::size_t o_partials = layout.add<Stats>(2 * static_cast<std::size_t>(workers));
  const std::size_t o_first = layout.add<ShareSum>(static_cast<std::size_t>(workers));
  std::byte* base = thread_scratch(layout.bytes());
  Stats* partials = scratch_at<Stats>(base, o_partials);
  ShareSum* first = scratch_at<ShareSum>(base, o_first);
  auto share = [&](int w) {
    return segments_of(split_point(p.count(), workers, w), split_point(p.count(), workers, w + 1), p.s,
                       p.c * p.s);
  };
  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) { first[w] = share_sum(p.dtype, x_at(0), share(w)); });
    for (std::int64_t c = 0; c < p.c; ++c) {
      // Two buffers of partials, alternating: a worker may publish channel
      // c + 1 while others still merge c, but cannot get further ahead.
      Stats* buf = partials + (c % 2) * workers;
      team.for_each_worker([&](int w) { buf[w] = share_stats(p.dtype, x_at(c), share(w), first[w]); });
      team.barrier();  // every share's statistics of channel c are in place
      team.for_each_worker([&](int w) {
        Stats st;
        for (int v = 0; v < workers; ++v) merge_into(st, buf[v]);
        const Affine a = out.finish(c, st, w == 0);
        first[w] = share_normalize(p.dtype, x_at(c), y_at(c), share(w), a, plan.stream,
                                   c + 1 < p.c ? x_at(c + 1) : nullptr);
      });
    }
    if (plan.stream) k::stream_fence();
  });
}

// Channels-last training. Each worker's rows are cut into tiles that fit
// L2: the pivot-shifted sum streams a tile in, the squares run over it from
// cache, and the tile's moments merge into the worker's. After a barrier
// every worker merges all workers' moments for a slice of the channels
// (uniform counts: scalar weights), then after another barrier normalizes
// its rows.
void training_rows(const Problem& p, const Plan& plan, const void* src, void* dst,
                   const TrainingOutputs& out) {
  const int workers = plan.workers;
  const std::int64_t C = p.c, rows = p.count();
  const std::size_t L = static_cast<std::size_t>(k::cyclic_length(C));
  const std::size_t uC = static_cast<std::size_t>(C);
  ScratchLayout layout;
  const std::size_t o_mean = layout.add<double>(static_cast<std::size_t>(workers) * uC);
  const std::size_t o_m2 = layout.add<double>(static_cast<std::size_t>(workers) * uC);
  const std::size_t o_center = layout.add<float>(L), o_scale = layout.add<float>(L),
                    o_shift = layout.add<float>(L);
  const std::size_t o_invstd = layout.add<double>(uC);
  const std::size_t o_worker = layout.add<std::byte>(0);
  // Per worker: pivot, tile center and accumulator (cyclic), tile moments.
  ScratchLayout per_worker;
  const std::size_t w_pivot = per_worker.add<float>(L), w_tcenter = per_worker.add<float>(L),
                    w_acc = per_worker.add<float>(L), w_sum = per_worker.add<double>(uC),
                    w_sq = per_worker.add<double>(uC);
  const std::size_t worker_bytes = (per_worker.bytes() + 63) / 64 * 64;
  std::byte* base = thread_scratch(o_worker + worker_bytes * static_cast<std::size_t>(workers));
  double* means = scratch_at<double>(base, o_mean);
  double* m2s = scratch_at<double>(base, o_m2);
  float* center = scratch_at<float>(base, o_center);
  float* scale = scratch_at<float>(base, o_scale);
  float* shift = scratch_at<float>(base, o_shift);
  double* invstd = scratch_at<double>(base, o_invstd);
  auto rows_of = [&](int w) { return split_point(rows, workers, w + 1) - split_point(rows, workers, w); };

  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      std::byte* mine = base + o_worker + worker_bytes * static_cast<std::size_t>(w);
      float* pivot = scratch_at<float>(mine, w_pivot);
      float* tcenter = scratch_at<float>(mine, w_tcenter);
      float* acc = scratch_at<float>(mine, w_acc);
      double* sum = scratch_at<double>(mine, w_sum);
      double* sq = scratch_at<double>(mine, w_sq);
      double* mean = means + static_cast<std::size_t>(w) * uC;
      double* m2 = m2s + static_cast<std::size_t>(w) * uC;
      const std::int64_t r0 = split_point(rows, workers, w), r1 = r0 + rows_of(w);
      if (r0 == r1) return;
      kernels::load_floats(p.dtype, element_ptr(src, p.dtype, r0 * C), C, pivot);
      for (std::int64_t c = 0; c < C; ++c) pivot[c] = finite_or_zero(pivot[c]);
      fill_cyclic(pivot, C);
      double count = 0.0;
      for (std::int64_t t0 = r0; t0 < r1; t0 += plan.tile_rows) {
        const std::int64_t t1 = std::min(r1, t0 + plan.tile_rows);
        const k::Rows tile{(t1 - t0) * C, C};
        const void* x = element_ptr(src, p.dtype, t0 * C);
        const double n = static_cast<double>(t1 - t0), inv_n = 1.0 / n;
        std::fill(sum, sum + C, 0.0);
        k::rows_sum_shifted(p.dtype, x, tile, pivot, acc, sum);
        for (std::int64_t c = 0; c < C; ++c) {
          sum[c] = pivot[c] + sum[c] * inv_n;  // the tile's mean
          tcenter[c] = static_cast<float>(sum[c]);
        }
        fill_cyclic(tcenter, C);
        std::fill(sq, sq + C, 0.0);
        k::rows_sum_sq_centered(p.dtype, x, tile, tcenter, acc, sq);
        for (std::int64_t c = 0; c < C; ++c) {
          const double dm = sum[c] - static_cast<double>(tcenter[c]);
          sq[c] = std::max(sq[c] - n * dm * dm, 0.0);  // the tile's M2 (std::max keeps a NaN first argument)
        }
        count = merge_moments(C, count, mean, m2, n, sum, sq);
      }
    });
    team.barrier();  // every worker's moments are in place
    team.for_each_worker([&](int w) {
      const std::int64_t c0 = split_point(C, workers, w), c1 = split_point(C, workers, w + 1);
      if (c0 == c1) return;
      // Merge the other workers' moments into worker 0's, for these channels.
      double count = static_cast<double>(rows_of(0));
      for (int v = 1; v < workers; ++v) {
        count = merge_moments(c1 - c0, count, means + c0, m2s + c0, static_cast<double>(rows_of(v)),
                              means + static_cast<std::size_t>(v) * uC + static_cast<std::size_t>(c0),
                              m2s + static_cast<std::size_t>(v) * uC + static_cast<std::size_t>(c0));
      }
      out.finish(c0, c1, count, means + c0, m2s + c0, center + c0, scale + c0, shift + c0, invstd + c0, true);
      for (float* cyclic : {center, scale, shift})
        wrap_cyclic(cyclic, C, static_cast<std::int64_t>(L), c0, c1);
    });
    team.barrier();  // every channel's normalizer is in place
    team.for_each_worker([&](int w) {
      const std::int64_t r0 = split_point(rows, workers, w), r1 = r0 + rows_of(w);
      k::rows_normalize(p.dtype, element_ptr(src, p.dtype, r0 * C), element_ptr(dst, p.dtype, r0 * C),
                        k::Rows{(r1 - r0) * C, C}, center, scale, shift, plan.stream);
    });
    if (plan.stream) k::stream_fence();
  });
}

// ---------------------------------------------------------------- backward

struct BackwardArgs {
  const void* src;
  const void* diff_dst;
  void* diff_src;
  const float* mean;
  bool reduce;  // the sums are needed (gamma/beta grads or batch statistics)
};

// Channels-first backward, pipelined like training: the reduction of a
// channel streams from DRAM, and applying the gradient to it runs from cache
// fused with the reduction of the next channel. Owned or shared channels as
// in training_channels.
void backward_channels(const Problem& p, const Plan& plan, const BackwardArgs& a,
                       const BackwardOutputs& out) {
  const int workers = plan.workers;
  const bool shared = plan.strategy == Strategy::split_channels;
  const double count = static_cast<double>(p.count());
  auto at = [&](const void* base, std::int64_t c) { return element_ptr(base, p.dtype, c * p.s); };
  auto at_mut = [&](void* base, std::int64_t c) { return element_ptr(base, p.dtype, c * p.s); };
  auto reduce = [&](std::int64_t c, const Segments& segs) {
    return a.reduce ? share_reduce(p.dtype, at(a.src, c), at(a.diff_dst, c), segs, a.mean[c]) : ShareGrad{};
  };
  // Applies channel c and, when it exists and sums are wanted, reduces c_next.
  auto apply = [&](std::int64_t c, const BackwardCoefs& kc, const Segments& segs, std::int64_t c_next) {
    if (!a.diff_src) return c_next >= 0 ? reduce(c_next, segs) : ShareGrad{};
    const bool fuse = c_next >= 0 && a.reduce;
    return share_apply(p.dtype, at(a.src, c), at(a.diff_dst, c), at_mut(a.diff_src, c), segs, a.mean[c], kc,
                       plan.stream, fuse ? at(a.src, c_next) : nullptr,
                       fuse ? at(a.diff_dst, c_next) : nullptr, fuse ? a.mean[c_next] : 0.0f);
  };
  if (!shared) {
    const Segments segs = segments_of(0, p.count(), p.s, p.c * p.s);
    run_team(workers, [&](const Team& team) {
      team.for_each_worker([&](int w) {
        const std::int64_t c0 = split_point(p.c, workers, w), c1 = split_point(p.c, workers, w + 1);
        ShareGrad g = c0 < c1 ? reduce(c0, segs) : ShareGrad{};
        for (std::int64_t c = c0; c < c1; ++c) {
          const BackwardCoefs kc = out.finish(c, count, g.sum_dy, g.sum_dy_xc, true);
          g = apply(c, kc, segs, c + 1 < c1 ? c + 1 : -1);
        }
      });
      if (plan.stream) k::stream_fence();
    });
    return;
  }
  ScratchLayout layout;
  const std::size_t o_partials = layout.add<ShareGrad>(2 * static_cast<std::size_t>(workers));
  const std::size_t o_next = layout.add<ShareGrad>(static_cast<std::size_t>(workers));
  std::byte* base = thread_scratch(layout.bytes());
  ShareGrad* partials = scratch_at<ShareGrad>(base, o_partials);
  ShareGrad* next = scratch_at<ShareGrad>(base, o_next);
  auto share = [&](int w) {
    return segments_of(split_point(p.count(), workers, w), split_point(p.count(), workers, w + 1), p.s,
                       p.c * p.s);
  };
  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) { next[w] = reduce(0, share(w)); });
    for (std::int64_t c = 0; c < p.c; ++c) {
      ShareGrad* buf = partials + (c % 2) * workers;  // alternating, as in training
      team.for_each_worker([&](int w) { buf[w] = next[w]; });
      team.barrier();  // every share's sums of channel c are in place
      team.for_each_worker([&](int w) {
        double sum_dy = 0.0, sum_dy_xc = 0.0;
        for (int v = 0; v < workers; ++v) {
          sum_dy += buf[v].sum_dy;
          sum_dy_xc += buf[v].sum_dy_xc;
        }
        const BackwardCoefs kc = out.finish(c, count, sum_dy, sum_dy_xc, w == 0);
        next[w] = apply(c, kc, share(w), c + 1 < p.c ? c + 1 : -1);
      });
    }
    if (plan.stream) k::stream_fence();
  });
}

void backward_rows(const Problem& p, const Plan& plan, const BackwardArgs& a, const BackwardOutputs& out) {
  const int workers = plan.workers;
  const std::int64_t C = p.c, rows = p.count();
  const std::size_t L = static_cast<std::size_t>(k::cyclic_length(C));
  const std::size_t uC = static_cast<std::size_t>(C);
  ScratchLayout layout;
  const std::size_t o_partials = layout.add<double>(2 * static_cast<std::size_t>(workers) * uC);
  const std::size_t o_center = layout.add<float>(L), o_kdy = layout.add<float>(L),
                    o_kxc = layout.add<float>(L), o_kconst = layout.add<float>(L);
  const std::size_t o_acc = layout.add<float>(2 * L * static_cast<std::size_t>(workers));
  std::byte* base = thread_scratch(layout.bytes());
  double* partials = scratch_at<double>(base, o_partials);
  float* center = scratch_at<float>(base, o_center);
  float* k_dy = scratch_at<float>(base, o_kdy);
  float* k_xc = scratch_at<float>(base, o_kxc);
  float* k_const = scratch_at<float>(base, o_kconst);
  float* accs = scratch_at<float>(base, o_acc);
  std::copy(a.mean, a.mean + C, center);
  wrap_cyclic(center, C, static_cast<std::int64_t>(L), 0, C);

  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      double* sum_dy = partials + 2 * static_cast<std::size_t>(w) * uC;
      double* sum_dy_xc = sum_dy + uC;
      std::fill(sum_dy, sum_dy + 2 * uC, 0.0);
      const std::int64_t r0 = split_point(rows, workers, w), r1 = split_point(rows, workers, w + 1);
      if (!a.reduce || r0 == r1) return;
      k::rows_backward_reduce(p.dtype, element_ptr(a.src, p.dtype, r0 * C),
                              element_ptr(a.diff_dst, p.dtype, r0 * C), k::Rows{(r1 - r0) * C, C}, center,
                              accs + 2 * L * static_cast<std::size_t>(w), sum_dy, sum_dy_xc);
    });
    team.barrier();  // all partial sums are in place
    team.for_each_worker([&](int w) {
      const std::int64_t c0 = split_point(C, workers, w), c1 = split_point(C, workers, w + 1);
      // Sum the other workers' partials into worker 0's, for these channels.
      double* sum_dy = partials + c0;
      double* sum_dy_xc = partials + uC + static_cast<std::size_t>(c0);
      for (int v = 1; v < workers; ++v) {
        const double* other = partials + 2 * static_cast<std::size_t>(v) * uC + static_cast<std::size_t>(c0);
        for (std::int64_t i = 0; i < c1 - c0; ++i) {
          sum_dy[i] += other[i];
          sum_dy_xc[i] += other[uC + static_cast<std::size_t>(i)];
        }
      }
      out.finish(c0, c1, static_cast<double>(rows), sum_dy, sum_dy_xc, k_dy + c0, k_xc + c0, k_const + c0,
                 true);
      for (float* cyclic : {k_dy, k_xc, k_const})
        wrap_cyclic(cyclic, C, static_cast<std::int64_t>(L), c0, c1);
    });
    if (!a.diff_src) return;
    team.barrier();  // every channel's coefficients are in place
    team.for_each_worker([&](int w) {
      const std::int64_t r0 = split_point(rows, workers, w), r1 = split_point(rows, workers, w + 1);
      k::rows_backward_apply(p.dtype, element_ptr(a.src, p.dtype, r0 * C),
                             element_ptr(a.diff_dst, p.dtype, r0 * C),
                             element_ptr(a.diff_src, p.dtype, r0 * C), k::Rows{(r1 - r0) * C, C}, center,
                             k_dy, k_xc, k_const, plan.stream);
    });
    if (plan.stream) k::stream_fence();
  });
}

}  // namespace

Plan plan_for(const Problem& problem, int threads, Pass pass) {
  Plan plan;
  const std::int64_t elements = problem.elements();
  const std::int64_t by_size = std::max<std::int64_t>(1, (elements + kGrainElements - 1) / kGrainElements);
  plan.workers = static_cast<int>(std::clamp<std::int64_t>(by_size, 1, std::max(1, threads)));
  plan.stream = static_cast<std::size_t>(elements) * size_of(problem.dtype) > streaming_threshold_bytes();
  const std::size_t esize = size_of(problem.dtype);
  if (problem.rows_view()) {
    plan.strategy = Strategy::rows;
    const std::size_t budget = l2_cache_bytes() / 2;
    plan.tile_rows = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(budget / (static_cast<std::size_t>(problem.c) * esize)));
    return plan;
  }
  // Owned channels keep two channels in a core's L2 at once (the one being
  // written and the next one streaming in): two slabs of x in training,
  // of x and dy in backward. The channels must also spread evenly.
  const int w = plan.workers;
  const std::size_t slab = static_cast<std::size_t>(problem.count()) * esize;
  const std::size_t in_flight = (pass == Pass::backward ? 4 : 2) * slab;  // per channel of a block
  const std::size_t budget = l2_cache_bytes() * 8 / 10;
  const bool fits = in_flight <= budget;
  const bool even = problem.c % w == 0 || problem.c >= 8 * w;
  plan.strategy = w == 1 || (fits && even) || pass == Pass::inference ? Strategy::channel_slabs
                                                                      : Strategy::split_channels;
  plan.block_channels =
      std::clamp<std::int64_t>(static_cast<std::int64_t>(budget / std::max<std::size_t>(1, in_flight)), 1,
                               std::max<std::int64_t>(1, problem.c / w));
  return plan;
}

void forward_training(const Problem& p, const Plan& plan, const void* src, void* dst, const float* gamma,
                      const float* beta, float* save_mean, float* save_invstd, float* running_mean,
                      float* running_var, double eps, double factor, bool unbiased_running_var) {
  const TrainingOutputs out{gamma,       beta, save_mean, save_invstd,         running_mean,
                            running_var, eps,  factor,    unbiased_running_var};
  switch (plan.strategy) {
    case Strategy::channel_slabs:
    case Strategy::split_channels:
      return training_channels(p, plan, src, dst, out);
    case Strategy::rows:
      return training_rows(p, plan, src, dst, out);
  }
}

void forward_inference(const Problem& p, const Plan& plan, const void* src, void* dst, const float* gamma,
                       const float* beta, const float* mean, const float* var, double eps) {
  // Normalizers: center = the (f32) running mean, scale = gamma / sqrt(var +
  // eps), shift = beta. Cyclic arrays for rows; plain ones (C + pad) else.
  const int workers = plan.workers;
  const std::int64_t C = p.c;
  const std::int64_t L = plan.strategy == Strategy::rows ? k::cyclic_length(C) : C;
  const std::size_t uC = static_cast<std::size_t>(C), uL = static_cast<std::size_t>(L);
  ScratchLayout layout;
  const std::size_t o_center = layout.add<float>(uL), o_scale = layout.add<float>(uL),
                    o_shift = layout.add<float>(uL);
  const std::size_t o_mean = layout.add<double>(uC), o_var = layout.add<double>(uC),
                    o_inv = layout.add<double>(uC);
  std::byte* base = thread_scratch(layout.bytes());
  float* center = scratch_at<float>(base, o_center);
  float* scale = scratch_at<float>(base, o_scale);
  float* shift = scratch_at<float>(base, o_shift);
  double* mean_d = scratch_at<double>(base, o_mean);
  double* var_d = scratch_at<double>(base, o_var);
  std::copy(mean, mean + C, mean_d);
  std::copy(var, var + C, var_d);
  // count 1: m2 is the variance itself; the mean is already an f32.
  k::finish_channels(C, 1.0, mean_d, var_d, eps, gamma, beta, center, scale, shift,
                     scratch_at<double>(base, o_inv));
  if (plan.strategy == Strategy::rows) {
    for (float* cyclic : {center, scale, shift}) wrap_cyclic(cyclic, C, L, 0, C);
    const std::int64_t rows = p.count();
    run_team(workers, [&](const Team& team) {
      team.for_each_worker([&](int w) {
        const std::int64_t r0 = split_point(rows, workers, w), r1 = split_point(rows, workers, w + 1);
        k::rows_normalize(p.dtype, element_ptr(src, p.dtype, r0 * C), element_ptr(dst, p.dtype, r0 * C),
                          k::Rows{(r1 - r0) * C, C}, center, scale, shift, plan.stream);
      });
      if (plan.stream) k::stream_fence();
    });
    return;
  }
  // Channels-first: split the N*C planes of S values evenly, whatever C is,
  // and walk each worker's planes as one contiguous stream.
  const std::int64_t planes = p.n * p.c;
  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      const std::int64_t r0 = split_point(planes, workers, w), r1 = split_point(planes, workers, w + 1);
      k::normalize_planes(p.dtype, element_ptr(src, p.dtype, r0 * p.s), element_ptr(dst, p.dtype, r0 * p.s),
                          r1 - r0, p.s, r0 % p.c, p.c, center, scale, shift, plan.stream);
    });
    if (plan.stream) k::stream_fence();
  });
}

void backward(const Problem& p, const Plan& plan, const void* src, const void* diff_dst, void* diff_src,
              const float* gamma, const float* mean, const float* invstd, float* diff_gamma, float* diff_beta,
              BackwardStats stats) {
  const BackwardOutputs out{gamma, invstd, diff_gamma, diff_beta, stats};
  const bool reduce = diff_gamma || diff_beta || (stats == BackwardStats::batch && diff_src);
  if (!reduce && !diff_src) return;
  const BackwardArgs a{src, diff_dst, diff_src, mean, reduce};
  switch (plan.strategy) {
    case Strategy::channel_slabs:
    case Strategy::split_channels:
      return backward_channels(p, plan, a, out);
    case Strategy::rows:
      return backward_rows(p, plan, a, out);
  }
}

}  // namespace bnorm::ops::batch_norm

// ---------------------------------------------------------------- public API

namespace bnorm {
using ops::batch_norm::Problem;

namespace {
void check_channel_array(const float* p, const char* name) {
  ops::require_pointer(p, name, "C values are required");
}
}  // namespace

void batch_norm_forward_training(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                 void* dst, const float* gamma, const float* beta, float* save_mean,
                                 float* save_invstd, const RunningStats& running,
                                 const BatchNormConfig& config) {
  ops::require_activation(src_desc, "src_desc", 2, kMaxRank);
  ops::require_same(src_desc, "src_desc", dst_desc, "dst_desc");
  ops::require_eps(config.eps, "config.eps");
  if (config.momentum && !(*config.momentum >= 0.0 && *config.momentum <= 1.0)) {
    throw Error(ErrorKind::invalid_argument,
                "argument 'config.momentum' = " + ops::format_value(*config.momentum) +
                    ": momentum must be in [0, 1], or std::nullopt for a cumulative average");
  }
  if ((running.mean == nullptr) != (running.var == nullptr)) {
    throw Error(ErrorKind::null_pointer,
                std::string("argument '") + (running.mean ? "running.var" : "running.mean") +
                    "' is null while the other running statistic is given: pass both "
                    "(track_running_stats) or neither");
  }
  if (running.mean && !config.momentum && running.num_batches_tracked == nullptr) {
    throw Error(ErrorKind::null_pointer,
                "argument 'running.num_batches_tracked' is null: it is required when momentum is "
                "std::nullopt (cumulative moving average)");
  }
  const Problem p = Problem::of(src_desc);
  if (p.count() <= 1) {
    throw Error(ErrorKind::invalid_argument,
                "argument 'src_desc' (dims " + src_desc.dims_str() +
                    "): expected more than 1 value per channel when training, got N * spatial = " +
                    std::to_string(p.count()));
  }
  ops::require_pointer(src, "src", "the input data is required");
  ops::require_pointer(dst, "dst", "the output buffer is required");
  double factor = 0.0;
  if (running.mean) {
    factor = config.momentum ? *config.momentum : 1.0 / static_cast<double>(*running.num_batches_tracked + 1);
  }
  ops::batch_norm::forward_training(
      p, ops::batch_norm::plan_for(p, num_threads(), ops::batch_norm::Pass::training), src, dst, gamma, beta,
      save_mean, save_invstd, running.mean, running.var, config.eps, factor, config.unbiased_running_var);
  if (running.num_batches_tracked) ++*running.num_batches_tracked;
}

void batch_norm_forward_inference(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                  void* dst, const float* gamma, const float* beta, const float* mean,
                                  const float* var, double eps) {
  ops::require_activation(src_desc, "src_desc", 2, kMaxRank);
  ops::require_same(src_desc, "src_desc", dst_desc, "dst_desc");
  ops::require_eps(eps, "eps");
  check_channel_array(mean, "mean");
  check_channel_array(var, "var");
  const Problem p = Problem::of(src_desc);
  if (p.elements() == 0) return;
  ops::require_pointer(src, "src", "the input data is required");
  ops::require_pointer(dst, "dst", "the output buffer is required");
  ops::batch_norm::forward_inference(
      p, ops::batch_norm::plan_for(p, num_threads(), ops::batch_norm::Pass::inference), src, dst, gamma, beta,
      mean, var, eps);
}

void batch_norm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                         const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src,
                         const float* gamma, const float* mean, const float* invstd, float* diff_gamma,
                         float* diff_beta, BackwardStats stats) {
  ops::require_activation(src_desc, "src_desc", 2, kMaxRank);
  ops::require_same(src_desc, "src_desc", diff_dst_desc, "diff_dst_desc");
  ops::require_same(src_desc, "src_desc", diff_src_desc, "diff_src_desc");
  check_channel_array(mean, "mean");
  check_channel_array(invstd, "invstd");
  const Problem p = Problem::of(src_desc);
  if (p.elements() == 0) {
    // Empty batch: the parameter gradients are sums over nothing.
    if (diff_gamma) std::fill(diff_gamma, diff_gamma + p.c, 0.0f);
    if (diff_beta) std::fill(diff_beta, diff_beta + p.c, 0.0f);
    return;
  }
  ops::require_pointer(src, "src", "the forward input is required");
  ops::require_pointer(diff_dst, "diff_dst", "the output gradient is required");
  ops::batch_norm::backward(p, ops::batch_norm::plan_for(p, num_threads(), ops::batch_norm::Pass::backward),
                            src, diff_dst, diff_src, gamma, mean, invstd, diff_gamma, diff_beta, stats);
}

}  // namespace bnorm

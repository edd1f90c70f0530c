// Batch norm on channels-first data (N, C, S): channel slabs owned by a
// worker and walked in blocks, or channels shared by all workers.

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/batch_norm/pipeline.hpp"
#include "kernels/common/scalar.hpp"
#include "ops/batch_norm/plan.hpp"
#include "ops/parallel.hpp"

namespace bnorm::ops::batch_norm {
using kernels::element_ptr;
using kernels::load_float;

namespace {

// A worker's share [begin, end) of one channel's N*S values, as at most
// three strided pieces: a partial run, whole runs, a partial run. Offsets
// are relative to the channel's first element.
struct Segments {
  struct Piece {
    std::int64_t offset;
    k::Runs runs;
  };
  int size = 0;
  Piece piece[3];
  std::int64_t count = 0;
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
  return out;
}

// Statistics of a channel share. Pass 1 sums the values shifted by a pivot
// near them (share_pivot) and their squares; when the pivot
// turns out too far from the mean for that to be exact, pass 2 sums the
// squares about the mean from cache (see stats_from_shifted_sums).
// The mean of up to 64 values spread over the share (8 runs spread over its
// largest piece, 8 values spread over each run): within half a standard
// deviation of the share's mean unless the data is very skewed (then
// share_stats takes a second pass).
float share_pivot(DType dt, const void* x, const Segments& segs) {
  const Segments::Piece* piece = &segs.piece[0];
  for (int i = 1; i < segs.size; ++i)
    if (segs.piece[i].runs.count * segs.piece[i].runs.len > piece->runs.count * piece->runs.len)
      piece = &segs.piece[i];
  const k::Runs& r = piece->runs;
  const std::int64_t runs = std::min<std::int64_t>(8, r.count), values = std::min<std::int64_t>(8, r.len);
  double sum = 0.0;
  for (std::int64_t i = 0; i < runs; ++i) {
    const std::int64_t run = piece->offset + (i * r.count / runs) * r.stride;
    for (std::int64_t j = 0; j < values; ++j) sum += load_float(dt, x, run + j * r.len / values);
  }
  return finite_or_zero(static_cast<float>(sum / static_cast<double>(runs * values)));
}

Stats stats_from_sums(DType dt, const void* x, const Segments& segs, float pivot, double s1, double s2);

Stats share_stats(DType dt, const void* x, const Segments& segs) {
  if (segs.count == 0) return {};
  const float pivot = share_pivot(dt, x, segs);
  double s1 = 0.0, s2 = 0.0;
  for (int i = 0; i < segs.size; ++i) {
    double sums[2];
    k::shifted_sums(dt, element_ptr(x, dt, segs.piece[i].offset), segs.piece[i].runs, pivot, sums);
    s1 += sums[0];
    s2 += sums[1];
  }
  return stats_from_sums(dt, x, segs, pivot, s1, s2);
}

// The statistics of a share from its sums s1, s2 of values shifted by pivot.
Stats stats_from_sums(DType dt, const void* x, const Segments& segs, float pivot, double s1, double s2) {
  const double count = static_cast<double>(segs.count);
  Stats st;
  if (stats_from_shifted_sums(count, pivot, s1, s2, &st)) return st;
  const double mean = pivot + s1 / count;
  const float center = static_cast<float>(mean);
  double sq = 0.0;
  for (int i = 0; i < segs.size; ++i)
    sq += k::sum_sq_centered(dt, element_ptr(x, dt, segs.piece[i].offset), segs.piece[i].runs, center);
  const double dm = mean - static_cast<double>(center);
  return {count, mean, std::max(sq - count * dm * dm, 0.0)};  // std::max keeps a NaN first argument
}

void normalize_share(DType dt, const void* x, void* y, const Segments& segs, const Affine& a, bool stream,
                     const k::Epilogue& post) {
  for (int i = 0; i < segs.size; ++i) {
    const auto& p = segs.piece[i];
    k::normalize(dt, element_ptr(x, dt, p.offset), element_ptr(y, dt, p.offset), p.runs, a.center, a.scale,
                 a.shift, stream, post.at(dt, p.offset));
  }
}

struct ShareGrad {
  double sum_dy = 0.0;
  double sum_dy_xc = 0.0;
};

ShareGrad share_reduce(DType dt, const void* x, const void* dy, const Segments& segs, float center,
                       const k::Gate& gate) {
  double sums[2] = {0.0, 0.0};
  for (int i = 0; i < segs.size; ++i) {
    const auto& p = segs.piece[i];
    k::backward_reduce(dt, element_ptr(x, dt, p.offset), element_ptr(dy, dt, p.offset), p.runs, center, sums,
                       gate.at(dt, p.offset));
  }
  return {sums[0], sums[1]};
}

void apply_share(DType dt, const void* x, const void* dy, void* dx, const Segments& segs, float center,
                 const BackwardCoefs& kc, bool stream, const k::Gate& gate) {
  for (int i = 0; i < segs.size; ++i) {
    const auto& p = segs.piece[i];
    k::backward_apply(dt, element_ptr(x, dt, p.offset), element_ptr(dy, dt, p.offset),
                      element_ptr(dx, dt, p.offset), p.runs, center, kc.k_dy, kc.k_xc, kc.k_const, stream,
                      gate.at(dt, p.offset));
  }
}

// Channels per unit of the owned-channel split: enough that a sample's
// slice of a unit is whole cache lines (so streaming stores never write part
// of a line), when C allows it.
std::int64_t channel_unit(const Problem& p) {
  const std::int64_t line = 64 / static_cast<std::int64_t>(size_of(p.dtype));
  const std::int64_t unit = line / std::gcd(p.s, line);
  return p.c % unit == 0 ? unit : 1;
}

// A worker's share of every channel in split_channels.
Segments share_of(const Problem& p, int workers, int w) {
  return segments_of(split_point(p.count(), workers, w), split_point(p.count(), workers, w + 1), p.s,
                     p.c * p.s);
}

// One block of a worker's channels in channel_slabs, with per-worker
// scratch of the floats and doubles asked for per block channel.
struct OwnedBlock {
  std::int64_t first;     ///< first channel
  std::int64_t channels;  ///< channels in the block
  std::int64_t next;      ///< channels in the worker's next block (0: none)
  bool leading;           ///< the worker's first block
  float* f;
  double* d;
};

// channel_slabs: each worker's channels in blocks of plan.block_channels,
// body(OwnedBlock) per block, a worker's blocks in order.
template <class Body>
void for_each_owned_block(const Problem& p, const Plan& plan, std::size_t floats, std::size_t doubles,
                          const Body& body) {
  const int workers = plan.workers;
  const std::int64_t G = std::max<std::int64_t>(1, plan.block_channels);
  ScratchLayout layout;
  const std::size_t o_f = layout.add<float>(floats * static_cast<std::size_t>(G));
  const std::size_t o_d = layout.add<double>(doubles * static_cast<std::size_t>(G));
  const std::size_t per_worker = (layout.bytes() + 63) / 64 * 64;
  std::byte* base = thread_scratch(per_worker * static_cast<std::size_t>(workers));
  const std::int64_t unit = channel_unit(p);
  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      std::byte* mine = base + per_worker * static_cast<std::size_t>(w);
      const std::int64_t c0 = split_point(p.c / unit, workers, w) * unit;
      const std::int64_t c1 = split_point(p.c / unit, workers, w + 1) * unit;
      for (std::int64_t b = c0; b < c1; b += G)
        body(OwnedBlock{b, std::min(G, c1 - b), std::clamp<std::int64_t>(c1 - b - G, 0, G), b == c0,
                        scratch_at<float>(mine, o_f), scratch_at<double>(mine, o_d)});
    });
    if (plan.stream) k::stream_fence();
  });
}

}  // namespace

void moments_channels_first(const Problem& p, int workers, const void* src, double* mean, double* m2) {
  const Segments whole = segments_of(0, p.count(), p.s, p.c * p.s);
  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      for (std::int64_t c = split_point(p.c, workers, w); c < split_point(p.c, workers, w + 1); ++c) {
        const Stats st = share_stats(p.dtype, element_ptr(src, p.dtype, c * p.s), whole);
        mean[c] = st.mean;
        m2[c] = st.m2;
      }
    });
  });
}

void training_channels_first(const Problem& p, const Plan& plan, const void* src, void* dst,
                             const TrainingOutputs& out) {
  const int workers = plan.workers;
  auto x_at = [&](std::int64_t c) { return element_ptr(src, p.dtype, c * p.s); };
  if (plan.strategy == Strategy::channel_slabs) {
    // Statistics per channel of a block, then the block normalized sample by
    // sample, each sample's planes being contiguous (aligned streaming
    // stores whatever S is).
    //
    // With plan.pipeline, a worker's blocks are pipelined as group norm's
    // are: block b's normalization (x from cache) walks plane by plane with
    // the shifted sums of block b + 1 (from DRAM), so the next block's reads
    // overlap this block's writes. The worker's first block is summed alone.
    const Segments whole = segments_of(0, p.count(), p.s, p.c * p.s);
    const std::int64_t G = std::max<std::int64_t>(1, plan.block_channels);
    const bool pipeline = plan.pipeline;
    const DType dt = p.dtype;
    for_each_owned_block(p, plan, 5, 7, [&](const OwnedBlock& blk) {
      const std::int64_t b = blk.first, g_here = blk.channels, g_next = pipeline ? blk.next : 0;
      float *center = blk.f, *scale = center + G, *shift = scale + G, *pivot = shift + G,
            *next_pivot = pivot + G;
      double *mean = blk.d, *m2 = mean + G, *invstd = m2 + G, *sums = invstd + G, *plane_sums = sums + 2 * G;
      for (std::int64_t g = 0; g < g_here; ++g) {
        const Stats st = pipeline && !blk.leading
                             ? stats_from_sums(dt, x_at(b + g), whole, pivot[g], sums[2 * g], sums[2 * g + 1])
                             : share_stats(dt, x_at(b + g), whole);
        mean[g] = st.mean;
        m2[g] = st.m2;
      }
      out.finish(b, b + g_here, static_cast<double>(p.count()), mean, m2, center, scale, shift, invstd, true);
      for (std::int64_t g = 0; g < g_next; ++g) {
        next_pivot[g] = share_pivot(dt, x_at(b + g_here + g), whole);
        sums[2 * g] = sums[2 * g + 1] = 0.0;
      }
      for (std::int64_t n = 0; n < p.n; ++n) {
        const std::int64_t off = (n * p.c + b) * p.s;
        if (g_next > 0) {
          k::normalize_and_sum(dt, element_ptr(src, dt, off), element_ptr(dst, dt, off), g_next, p.s, center,
                               scale, shift, plan.stream, element_ptr(src, dt, off + g_here * p.s),
                               next_pivot, plane_sums, out.post.at(dt, off));
          for (std::int64_t i = 0; i < 2 * g_next; ++i) sums[i] += plane_sums[i];
        }
        if (g_here > g_next) {
          const std::int64_t rest = off + g_next * p.s;
          k::normalize_planes(dt, element_ptr(src, dt, rest), element_ptr(dst, dt, rest), g_here - g_next,
                              p.s, g_next, g_here, center, scale, shift, plan.stream, out.post.at(dt, rest));
        }
      }
      std::copy_n(next_pivot, g_next, pivot);
    });
    return;
  }
  // split_channels: every worker's share of a channel, one barrier per
  // channel. Two buffers of partials, alternating: a worker may publish
  // channel c + 1 while others still merge c, but cannot get further ahead.
  Stats* partials =
      reinterpret_cast<Stats*>(thread_scratch(2 * static_cast<std::size_t>(workers) * sizeof(Stats)));
  run_team(workers, [&](const Team& team) {
    for (std::int64_t c = 0; c < p.c; ++c) {
      Stats* buf = partials + (c % 2) * workers;
      team.for_each_worker([&](int w) { buf[w] = share_stats(p.dtype, x_at(c), share_of(p, workers, w)); });
      team.barrier();  // every share's statistics of channel c are in place
      team.for_each_worker([&](int w) {
        Stats st;
        for (int v = 0; v < workers; ++v) merge_into(st, buf[v]);
        const Affine a = out.finish(c, st, w == 0);
        normalize_share(p.dtype, x_at(c), element_ptr(dst, p.dtype, c * p.s), share_of(p, workers, w), a,
                        plan.stream, out.post.at(p.dtype, c * p.s));
      });
    }
    if (plan.stream) k::stream_fence();
  });
}

void inference_channels_first(const Problem& p, const Plan& plan, const void* src, void* dst,
                              const float* center, const float* scale, const float* shift,
                              const k::Epilogue& post) {
  // The N*C planes of S values split evenly over the workers, whatever C
  // is, each worker's planes walked as one contiguous stream.
  const int workers = plan.workers;
  const std::int64_t planes = p.n * p.c;
  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      const std::int64_t r0 = split_point(planes, workers, w), r1 = split_point(planes, workers, w + 1);
      k::normalize_planes(p.dtype, element_ptr(src, p.dtype, r0 * p.s), element_ptr(dst, p.dtype, r0 * p.s),
                          r1 - r0, p.s, r0 % p.c, p.c, center, scale, shift, plan.stream,
                          post.at(p.dtype, r0 * p.s));
    });
    if (plan.stream) k::stream_fence();
  });
}

void backward_channels_first(const Problem& p, const Plan& plan, const void* src, const void* diff_dst,
                             void* diff_src, const float* mean, bool reduce, const BackwardOutputs& out) {
  const int workers = plan.workers;
  const double count = static_cast<double>(p.count());
  auto at = [&](const void* base, std::int64_t c) { return element_ptr(base, p.dtype, c * p.s); };
  if (plan.strategy == Strategy::planes || !reduce) {
    // Each worker's range of the N*C planes, in memory order: its partial
    // sums; after the barrier every worker adds them up in worker order (the
    // same bits on each) for its own coefficients, worker 0 writes the
    // parameter gradients, and dx walks the same range as one stream.
    //
    // Also with nothing to sum (constant statistics with dx alone,
    // SyncBatchNorm's second pass), whatever the plan: per-sample segments
    // of channel blocks stream far worse than one stream (256x1024x14x14
    // bf16, 2 threads: 18.5 ms in blocks of 8 channels, 10.3 ms).
    const std::size_t uC = static_cast<std::size_t>(p.c), uW = static_cast<std::size_t>(workers);
    ScratchLayout layout;
    const std::size_t o_part = layout.add<double>(2 * uC * uW), o_total = layout.add<double>(2 * uC * uW),
                      o_k = layout.add<float>(3 * uC * uW);
    std::byte* base = thread_scratch(layout.bytes());
    double* partials = scratch_at<double>(base, o_part);
    const std::int64_t planes = p.n * p.c;
    const DType dt = p.dtype;
    run_team(workers, [&](const Team& team) {
      team.for_each_worker([&](int w) {
        const std::int64_t r0 = split_point(planes, workers, w), r1 = split_point(planes, workers, w + 1);
        double* mine = partials + 2 * uC * static_cast<std::size_t>(w);
        std::fill_n(mine, 2 * uC, 0.0);
        if (reduce)
          k::planes_backward_reduce(dt, element_ptr(src, dt, r0 * p.s), element_ptr(diff_dst, dt, r0 * p.s),
                                    r1 - r0, p.s, r0 % p.c, p.c, mean, mine, out.gate.at(dt, r0 * p.s));
      });
      team.barrier();  // every worker's partials are in place
      team.for_each_worker([&](int w) {
        const std::size_t uw = static_cast<std::size_t>(w);
        double* sum_dy = scratch_at<double>(base, o_total) + 2 * uC * uw;
        double* sum_dy_xc = sum_dy + uC;
        for (std::size_t c = 0; c < uC; ++c) {
          sum_dy[c] = sum_dy_xc[c] = 0.0;
          for (std::size_t v = 0; v < uW; ++v) {
            sum_dy[c] += partials[2 * uC * v + 2 * c];
            sum_dy_xc[c] += partials[2 * uC * v + 2 * c + 1];
          }
        }
        float* k_dy = scratch_at<float>(base, o_k) + 3 * uC * uw;
        float *k_xc = k_dy + uC, *k_const = k_xc + uC;
        out.finish(0, p.c, count, sum_dy, sum_dy_xc, k_dy, k_xc, k_const, w == 0);
        if (!diff_src) return;
        const std::int64_t r0 = split_point(planes, workers, w), r1 = split_point(planes, workers, w + 1);
        k::apply_planes(dt, element_ptr(src, dt, r0 * p.s), element_ptr(diff_dst, dt, r0 * p.s),
                        element_ptr(diff_src, dt, r0 * p.s), r1 - r0, p.s, r0 % p.c, p.c, mean, k_dy, k_xc,
                        k_const, plan.stream, out.gate.at(dt, r0 * p.s));
      });
      if (plan.stream) k::stream_fence();
    });
    return;
  }
  if (plan.strategy == Strategy::channel_slabs) {
    // Sums per channel of a block (x and dy from DRAM), then the block's dx
    // sample by sample in memory order, from cache.
    const Segments whole = segments_of(0, p.count(), p.s, p.c * p.s);
    const std::int64_t G = std::max<std::int64_t>(1, plan.block_channels);
    // With plan.pipeline (and both sums and dx wanted), as in training: a
    // block's dx (x and dy from cache) walks with the next block's sums
    // (from DRAM); the worker's first block is summed alone.
    const bool pipeline = plan.pipeline && reduce && diff_src;
    const DType dt = p.dtype;
    for_each_owned_block(p, plan, 5, 6, [&](const OwnedBlock& blk) {
      const std::int64_t b = blk.first, g_here = blk.channels, g_next = pipeline ? blk.next : 0;
      float *k_dy = blk.f, *k_xc = k_dy + G, *k_const = k_xc + G, *center = k_const + G,
            *next_center = center + G;
      double *sum_dy = blk.d, *sum_dy_xc = sum_dy + G, *sums = sum_dy_xc + G, *plane_sums = sums + 2 * G;
      for (std::int64_t g = 0; g < g_here; ++g) {
        if (pipeline && !blk.leading) {
          sum_dy[g] = sums[2 * g];
          sum_dy_xc[g] = sums[2 * g + 1];
        } else {
          const ShareGrad s = reduce ? share_reduce(dt, at(src, b + g), at(diff_dst, b + g), whole,
                                                    mean[b + g], out.gate.at(dt, (b + g) * p.s))
                                     : ShareGrad{};
          sum_dy[g] = s.sum_dy;
          sum_dy_xc[g] = s.sum_dy_xc;
        }
        center[g] = mean[b + g];
      }
      out.finish(b, b + g_here, count, sum_dy, sum_dy_xc, k_dy, k_xc, k_const, true);
      if (!diff_src) return;
      for (std::int64_t g = 0; g < g_next; ++g) {
        next_center[g] = mean[b + g_here + g];
        sums[2 * g] = sums[2 * g + 1] = 0.0;
      }
      for (std::int64_t n = 0; n < p.n; ++n) {
        const std::int64_t off = (n * p.c + b) * p.s;
        if (g_next > 0) {
          const std::int64_t next = off + g_here * p.s;
          k::apply_and_reduce(dt, element_ptr(src, dt, off), element_ptr(diff_dst, dt, off),
                              element_ptr(diff_src, dt, off), g_next, p.s, center, k_dy, k_xc, k_const,
                              plan.stream, element_ptr(src, dt, next), element_ptr(diff_dst, dt, next),
                              next_center, plane_sums, out.gate.at(dt, off), out.gate.at(dt, next));
          for (std::int64_t i = 0; i < 2 * g_next; ++i) sums[i] += plane_sums[i];
        }
        if (g_here > g_next) {
          const std::int64_t rest = off + g_next * p.s;
          k::apply_planes(dt, element_ptr(src, dt, rest), element_ptr(diff_dst, dt, rest),
                          element_ptr(diff_src, dt, rest), g_here - g_next, p.s, g_next, g_here, center, k_dy,
                          k_xc, k_const, plan.stream, out.gate.at(dt, rest));
        }
      }
    });
    return;
  }
  // split_channels, as in training: partial sums, a barrier per channel.
  ShareGrad* partials =
      reinterpret_cast<ShareGrad*>(thread_scratch(2 * static_cast<std::size_t>(workers) * sizeof(ShareGrad)));
  run_team(workers, [&](const Team& team) {
    for (std::int64_t c = 0; c < p.c; ++c) {
      ShareGrad* buf = partials + (c % 2) * workers;
      team.for_each_worker([&](int w) {
        buf[w] = reduce ? share_reduce(p.dtype, at(src, c), at(diff_dst, c), share_of(p, workers, w), mean[c],
                                       out.gate.at(p.dtype, c * p.s))
                        : ShareGrad{};
      });
      team.barrier();  // every share's sums of channel c are in place
      team.for_each_worker([&](int w) {
        ShareGrad total;
        for (int v = 0; v < workers; ++v) {
          total.sum_dy += buf[v].sum_dy;
          total.sum_dy_xc += buf[v].sum_dy_xc;
        }
        const BackwardCoefs kc = out.finish(c, count, total.sum_dy, total.sum_dy_xc, w == 0);
        if (diff_src)
          apply_share(p.dtype, at(src, c), at(diff_dst, c), element_ptr(diff_src, p.dtype, c * p.s),
                      share_of(p, workers, w), mean[c], kc, plan.stream, out.gate.at(p.dtype, c * p.s));
      });
    }
    if (plan.stream) k::stream_fence();
  });
}

}  // namespace bnorm::ops::batch_norm

// Group norm on rows of C contiguous channels: channels-last data (N, S, C),
// or channels-first without spatial dims (N, C). A sample is S rows; its
// per-channel moments (batch norm's row kernels) merge into group moments,
// and the sample is normalized with per-channel normalizers. Workers own
// whole samples, or share every sample's rows with one barrier per sample.

#include <algorithm>
#include <cmath>

#include "kernels/common/scalar.hpp"
#include "ops/group_norm/common.hpp"
#include "ops/parallel.hpp"

namespace bnorm::ops::group_norm {
using kernels::element_ptr;

namespace {

// Rows whose mean is the first tile's pivot (as in batch norm's rows plan);
// later tiles pivot on the mean so far.
constexpr std::int64_t kPivotRows = 64;

// Per-worker scratch of the row strategies.
struct RowScratch {
  std::size_t pivot, tcenter, acc, s1, s2, mean, m2, center, scale, shift, k_const, mean_rep, m2_rep,
      invstd_rep, grads;
  std::size_t bytes;
  explicit RowScratch(std::int64_t channels) {
    ScratchLayout l;
    const auto L = static_cast<std::size_t>(k::cyclic_length(channels));
    const auto C = static_cast<std::size_t>(channels);
    pivot = l.add<float>(L);
    tcenter = l.add<float>(L);
    acc = l.add<float>(2 * L);
    s1 = l.add<double>(C);
    s2 = l.add<double>(C);
    mean = l.add<double>(C);
    m2 = l.add<double>(C);
    center = l.add<float>(L);
    scale = l.add<float>(L);
    shift = l.add<float>(L);
    k_const = l.add<float>(L);
    mean_rep = l.add<double>(C);
    m2_rep = l.add<double>(C);
    invstd_rep = l.add<double>(C);
    grads = l.add<double>(2 * C);
    bytes = (l.bytes() + 63) / 64 * 64;
  }
};

// Typed views of one worker's RowScratch.
struct RowBuffers {
  float *pivot, *tcenter, *acc, *center, *scale, *shift, *k_const;
  double *s1, *s2, *mean, *m2, *mean_rep, *m2_rep, *invstd_rep, *grads;
  RowBuffers(std::byte* b, const RowScratch& s)
      : pivot(scratch_at<float>(b, s.pivot)),
        tcenter(scratch_at<float>(b, s.tcenter)),
        acc(scratch_at<float>(b, s.acc)),
        center(scratch_at<float>(b, s.center)),
        scale(scratch_at<float>(b, s.scale)),
        shift(scratch_at<float>(b, s.shift)),
        k_const(scratch_at<float>(b, s.k_const)),
        s1(scratch_at<double>(b, s.s1)),
        s2(scratch_at<double>(b, s.s2)),
        mean(scratch_at<double>(b, s.mean)),
        m2(scratch_at<double>(b, s.m2)),
        mean_rep(scratch_at<double>(b, s.mean_rep)),
        m2_rep(scratch_at<double>(b, s.m2_rep)),
        invstd_rep(scratch_at<double>(b, s.invstd_rep)),
        grads(scratch_at<double>(b, s.grads)) {}
};

// The pivots of a block of `rows` rows at x (cyclic, in s.pivot): the mean
// of its first kPivotRows rows per channel.
void first_rows_pivot(DType dt, const void* x, std::int64_t rows, std::int64_t C, const RowBuffers& s) {
  const std::int64_t n = std::min(rows, kPivotRows);
  float* row = s.tcenter;
  std::fill_n(s.pivot, C, 0.0f);
  for (std::int64_t r = 0; r < n; ++r) {
    kernels::load_floats(dt, element_ptr(x, dt, r * C), C, row);
    for (std::int64_t c = 0; c < C; ++c) s.pivot[c] += row[c];
  }
  const float inv = 1.0f / static_cast<float>(n);
  for (std::int64_t c = 0; c < C; ++c) s.pivot[c] = batch_norm::finite_or_zero(s.pivot[c] * inv);
  batch_norm::wrap_cyclic(s.pivot, C, 0, C);
}

// Merges the moments of a tile of `rows` rows at xt into s.mean / s.m2
// (`count` rows so far) from its shifted sums about s.pivot in s.s1 / s.s2;
// when any channel's pivot was too far off, every channel sums its squares
// again about the tile's means (rounded to f32), from xt, and corrects
// exactly. Returns the new count.
double merge_tile(DType dt, const void* xt, std::int64_t rows, std::int64_t C, double count,
                  const RowBuffers& s) {
  const double n = static_cast<double>(rows);
  if (!batch_norm::stats_from_shifted_sums(C, n, s.pivot, s.s1, s.s2, s.s1, s.s2)) {
    // s1 holds the tile's means now.
    for (std::int64_t c = 0; c < C; ++c) s.tcenter[c] = static_cast<float>(s.s1[c]);
    batch_norm::wrap_cyclic(s.tcenter, C, 0, C);
    std::fill_n(s.s2, C, 0.0);
    k::rows_sum_sq_centered(dt, xt, k::Rows{rows * C, C}, s.tcenter, s.acc, s.s2);
    for (std::int64_t c = 0; c < C; ++c) {
      const double dm = s.s1[c] - static_cast<double>(s.tcenter[c]);
      s.s2[c] = std::max(s.s2[c] - n * dm * dm, 0.0);  // std::max keeps a NaN first argument
    }
  }
  return batch_norm::merge_moments(C, count, s.mean, s.m2, n, s.s1, s.s2);
}

// Per-channel mean and M2 of `rows` rows at x, in tiles of tile_rows (each
// tile's shifted sums, merge_tile, Chan's merge in double); later tiles
// pivot on the mean so far. Returns the count per channel (rows).
double row_moments(DType dt, const void* x, std::int64_t rows, std::int64_t C, std::int64_t tile_rows,
                   const RowBuffers& s) {
  std::fill_n(s.mean, C, 0.0);
  std::fill_n(s.m2, C, 0.0);
  if (rows == 0) return 0.0;
  first_rows_pivot(dt, x, rows, C, s);
  double count = 0.0;
  for (std::int64_t t0 = 0; t0 < rows; t0 += tile_rows) {
    const std::int64_t t1 = std::min(rows, t0 + tile_rows);
    std::fill_n(s.s1, C, 0.0);
    std::fill_n(s.s2, C, 0.0);
    const void* xt = element_ptr(x, dt, t0 * C);
    k::rows_shifted_sums(dt, xt, k::Rows{(t1 - t0) * C, C}, s.pivot, s.acc, s.s1, s.s2);
    count = merge_tile(dt, xt, t1 - t0, C, count, s);
    if (t1 == rows) break;
    for (std::int64_t c = 0; c < C; ++c) s.pivot[c] = batch_norm::finite_or_zero(static_cast<float>(s.mean[c]));
    batch_norm::wrap_cyclic(s.pivot, C, 0, C);
  }
  return count;
}

// Groups of one-row samples up to this many channels take their moments in
// scalar code.
constexpr std::int64_t kSmallGroup = 64;

// Group moments of sample n from per-channel moments (`rows` values each),
// replicated per channel into mean_rep / m2_rep; the normalizers of the
// sample's channels into the cyclic center / scale / shift. Writes the
// saved statistics and the running moments when `write`. `x`: a sample of
// one row (S = 1), whose groups are contiguous: their moments come from its
// values directly (per-channel moments of one value each cost several times
// the values' own pass: 32x4096 took 0.75 ms).
void finish_sample(const Problem& p, std::int64_t n, double rows, const RowBuffers& s, const ForwardArgs& a,
                   double* all_mean, double* all_m2, bool write, const void* x = nullptr) {
  const std::int64_t cg = p.group_channels();
  for (std::int64_t g = 0; g < p.g; ++g) {
    double gm = 0.0, gm2 = 0.0;
    if (x && cg <= kSmallGroup) {
      // A few values: two passes in double (a kernel call and a pivot per
      // group cost more than the group).
      float v[kSmallGroup];
      kernels::load_floats(p.dtype, element_ptr(x, p.dtype, g * cg), cg, v);
      for (std::int64_t j = 0; j < cg; ++j) gm += static_cast<double>(v[j]);
      gm /= static_cast<double>(cg);
      for (std::int64_t j = 0; j < cg; ++j)
        gm2 += (static_cast<double>(v[j]) - gm) * (static_cast<double>(v[j]) - gm);
    } else if (x) {
      const Stats st = contiguous_stats(p.dtype, element_ptr(x, p.dtype, g * cg), cg);
      gm = st.mean;
      gm2 = st.m2;
    } else {
      const double* mean = s.mean + g * cg;
      const double* m2 = s.m2 + g * cg;
      double sum = 0.0;
      for (std::int64_t j = 0; j < cg; ++j) sum += mean[j];
      gm = sum / static_cast<double>(cg);
      if (std::isfinite(gm)) {
        // Chan's merge of equal-count channels: within plus between.
        for (std::int64_t j = 0; j < cg; ++j) gm2 += m2[j] + rows * (mean[j] - gm) * (mean[j] - gm);
      } else {
        gm2 = std::numeric_limits<double>::quiet_NaN();
      }
    }
    std::fill_n(s.mean_rep + g * cg, cg, gm);
    std::fill_n(s.m2_rep + g * cg, cg, gm2);
    if (!write) continue;
    if (a.save_mean) a.save_mean[n * p.g + g] = static_cast<float>(gm);
    if (all_mean) {
      all_mean[n * p.g + g] = gm;
      all_m2[n * p.g + g] = gm2;
    }
  }
  finish_planes(p, n * p.c, p.c, s.mean_rep, s.m2_rep, a, s.center, s.scale, s.shift, s.invstd_rep);
  if (write && a.save_invstd)
    for (std::int64_t g = 0; g < p.g; ++g) a.save_invstd[n * p.g + g] = static_cast<float>(s.invstd_rep[g * cg]);
  for (float* cyclic : {s.center, s.scale, s.shift}) batch_norm::wrap_cyclic(cyclic, p.c, 0, p.c);
}

// Calls f(t0, t1) for the tiles of rows [r0, r1), last tile first: the rows
// read last by the reduction are the ones most likely still in cache.
template <class F>
void tiles_backwards(std::int64_t r0, std::int64_t r1, std::int64_t tile_rows, F&& f) {
  if (r1 <= r0) return;
  const std::int64_t tiles = (r1 - r0 + tile_rows - 1) / tile_rows;
  for (std::int64_t t = tiles - 1; t >= 0; --t) f(r0 + t * tile_rows, std::min(r1, r0 + (t + 1) * tile_rows));
}

}  // namespace

void forward_rows(const Problem& p, const Plan& plan, const void* src, void* dst, const ForwardArgs& a) {
  const int workers = plan.workers;
  const DType dt = p.dtype;
  const std::int64_t C = p.c, S = p.s, sample = S * C;
  const std::int64_t tile = std::max<std::int64_t>(1, plan.tile_rows);
  const RowScratch rs(C);
  ScratchLayout layout;
  const std::size_t nb = a.running ? static_cast<std::size_t>(p.n * p.g) : 0;
  const std::size_t o_mean = layout.add<double>(nb), o_m2 = layout.add<double>(nb);
  const bool split = plan.strategy == Strategy::split_samples;
  const std::size_t np = split ? 2 * 2 * static_cast<std::size_t>(workers * C) : 0;
  const std::size_t o_partials = layout.add<double>(np);
  const std::size_t o_workers = layout.add<std::byte>(0);
  std::byte* base = thread_scratch(o_workers + rs.bytes * static_cast<std::size_t>(workers));
  double* all_mean = a.running ? scratch_at<double>(base, o_mean) : nullptr;
  double* all_m2 = a.running ? scratch_at<double>(base, o_m2) : nullptr;
  double* partials = scratch_at<double>(base, o_partials);
  auto buffers = [&](int w) { return RowBuffers(base + o_workers + rs.bytes * static_cast<std::size_t>(w), rs); };
  auto normalize = [&](const RowBuffers& s, std::int64_t n, std::int64_t r0, std::int64_t r1) {
    tiles_backwards(r0, r1, tile, [&](std::int64_t t0, std::int64_t t1) {
      const std::int64_t off = n * sample + t0 * C;
      k::rows_normalize(dt, element_ptr(src, dt, off), element_ptr(dst, dt, off), k::Rows{(t1 - t0) * C, C},
                        s.center, s.scale, s.shift, plan.stream);
    });
  };

  run_team(workers, [&](const Team& team) {
    if (!split) {
      team.for_each_worker([&](int w) {
        const RowBuffers s = buffers(w);
        const std::int64_t n1 = split_point(p.n, workers, w + 1);
        double rows = 0.0;
        bool have_moments = false;  // s.mean / s.m2 hold sample n's moments
        bool pipelined = plan.pipelined;
        for (std::int64_t n = split_point(p.n, workers, w); n < n1; ++n) {
          if (S == 1) {
            // One row per sample: the groups' moments from the row itself.
            finish_sample(p, n, 1.0, s, a, all_mean, all_m2, true, element_ptr(src, dt, n * sample));
            normalize(s, n, 0, S);
            continue;
          }
          if (!have_moments) rows = row_moments(dt, element_ptr(src, dt, n * sample), S, C, tile, s);
          finish_sample(p, n, rows, s, a, all_mean, all_m2, true);
          // Pipelined: sample n's output walks with the next sample's sums,
          // over the whole sample about one set of pivots (merge_tile's guard
          // reads the sample again when a pivot was too far off). Once the
          // kernel declines these rows, the worker stops asking.
          have_moments = false;
          if (pipelined && n + 1 < n1) {
            const void* next = element_ptr(src, dt, (n + 1) * sample);
            first_rows_pivot(dt, next, S, C, s);
            std::fill_n(s.s1, C, 0.0);
            std::fill_n(s.s2, C, 0.0);
            have_moments = k::rows_normalize_and_sum(
                dt, element_ptr(src, dt, n * sample), element_ptr(dst, dt, n * sample), k::Rows{sample, C},
                s.center, s.scale, s.shift, plan.stream, next, s.pivot, s.s1, s.s2);
            if (have_moments) {
              std::fill_n(s.mean, C, 0.0);
              std::fill_n(s.m2, C, 0.0);
              rows = merge_tile(dt, next, S, C, 0.0, s);
            } else {
              pipelined = false;
            }
          }
          if (!have_moments) normalize(s, n, 0, S);
        }
      });
    } else {
      for (std::int64_t n = 0; n < p.n; ++n) {
        double* buf = partials + (n % 2) * 2 * workers * C;
        team.for_each_worker([&](int w) {
          const RowBuffers s = buffers(w);
          const std::int64_t r0 = split_point(S, workers, w), r1 = split_point(S, workers, w + 1);
          row_moments(dt, element_ptr(src, dt, n * sample + r0 * C), r1 - r0, C, tile, s);
          std::copy_n(s.mean, C, buf + 2 * w * C);
          std::copy_n(s.m2, C, buf + 2 * w * C + C);
        });
        team.barrier();  // every share's moments of sample n are in place
        team.for_each_worker([&](int w) {
          const RowBuffers s = buffers(w);
          // Each worker merges all shares itself (C values per share): no
          // second barrier before normalizing.
          double count = 0.0;
          for (int v = 0; v < workers; ++v) {
            const double rows_v = static_cast<double>(split_point(S, workers, v + 1) - split_point(S, workers, v));
            count = batch_norm::merge_moments(C, count, s.mean, s.m2, rows_v, buf + 2 * v * C, buf + 2 * v * C + C);
          }
          finish_sample(p, n, count, s, a, all_mean, all_m2, w == 0);
          normalize(s, n, split_point(S, workers, w), split_point(S, workers, w + 1));
        });
      }
    }
    if (plan.stream) k::stream_fence();
    if (a.running) update_running(team, p, all_mean, all_m2, *a.running);
  });
}

void backward_rows(const Problem& p, const Plan& plan, const void* src, const void* diff_dst, void* diff_src,
                   const BackwardArgs& a) {
  const int workers = plan.workers;
  const DType dt = p.dtype;
  const std::int64_t C = p.c, S = p.s, sample = S * C, cg = p.group_channels();
  const std::int64_t tile = std::max<std::int64_t>(1, plan.tile_rows);
  const bool grads = a.diff_gamma || a.diff_beta;
  const RowScratch rs(C);
  ScratchLayout layout;
  const bool split = plan.strategy == Strategy::split_samples;
  const std::size_t o_partials = layout.add<double>(split ? 2 * 2 * static_cast<std::size_t>(workers * C) : 0);
  const std::size_t o_workers = layout.add<std::byte>(0);
  std::byte* base = thread_scratch(o_workers + rs.bytes * static_cast<std::size_t>(workers));
  double* partials = scratch_at<double>(base, o_partials);
  auto buffers = [&](int w) { return RowBuffers(base + o_workers + rs.bytes * static_cast<std::size_t>(w), rs); };
  // Centers of sample n (cyclic): each channel's group mean.
  auto set_centers = [&](const RowBuffers& s, std::int64_t n) {
    for (std::int64_t c = 0; c < C; ++c) s.tcenter[c] = a.mean[n * p.g + c / cg];
    batch_norm::wrap_cyclic(s.tcenter, C, 0, C);
  };
  // Coefficients of sample n from per-channel sums in s1 (dy) and s2 (dy * xc).
  auto coefficients = [&](const RowBuffers& s, std::int64_t n, bool accumulate) {
    for (std::int64_t g = 0; g < p.g; ++g)
      block_coefficients(p, n, g, s.s1 + g * cg, s.s2 + g * cg, a, s.center + g * cg, s.scale + g * cg,
                         s.shift + g * cg, s.k_const + g * cg, accumulate ? s.grads : nullptr,
                         accumulate ? s.grads + C : nullptr);
    for (float* cyclic : {s.center, s.scale, s.shift, s.k_const}) batch_norm::wrap_cyclic(cyclic, C, 0, C);
  };
  // k_dy in scale, k_xc in shift.
  auto apply = [&](const RowBuffers& s, std::int64_t n, std::int64_t r0, std::int64_t r1) {
    tiles_backwards(r0, r1, tile, [&](std::int64_t t0, std::int64_t t1) {
      const std::int64_t off = n * sample + t0 * C;
      k::rows_backward_apply(dt, element_ptr(src, dt, off), element_ptr(diff_dst, dt, off),
                             element_ptr(diff_src, dt, off), k::Rows{(t1 - t0) * C, C}, s.center, s.scale,
                             s.shift, s.k_const, plan.stream);
    });
  };

  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) { std::fill_n(buffers(w).grads, 2 * C, 0.0); });
    if (!split) {
      team.for_each_worker([&](int w) {
        const RowBuffers s = buffers(w);
        const std::int64_t n1 = split_point(p.n, workers, w + 1);
        bool have_sums = false;  // s.s1 / s.s2 hold sample n's sums
        for (std::int64_t n = split_point(p.n, workers, w); n < n1; ++n) {
          const std::int64_t off = n * sample;
          if (!have_sums) {
            set_centers(s, n);
            std::fill_n(s.s1, C, 0.0);
            std::fill_n(s.s2, C, 0.0);
            k::rows_backward_reduce(dt, element_ptr(src, dt, off), element_ptr(diff_dst, dt, off),
                                    k::Rows{sample, C}, s.tcenter, s.acc, s.s1, s.s2);
          }
          coefficients(s, n, true);
          // Pipelined: sample n's dx walks with the next sample's sums.
          have_sums = plan.pipelined && diff_src && n + 1 < n1;
          if (have_sums) {
            set_centers(s, n + 1);
            std::fill_n(s.s1, C, 0.0);
            std::fill_n(s.s2, C, 0.0);
            k::rows_apply_and_reduce(dt, element_ptr(src, dt, off), element_ptr(diff_dst, dt, off),
                                     element_ptr(diff_src, dt, off), k::Rows{sample, C}, s.center, s.scale,
                                     s.shift, s.k_const, plan.stream, element_ptr(src, dt, off + sample),
                                     element_ptr(diff_dst, dt, off + sample), s.tcenter, s.acc, s.s1, s.s2);
          } else if (diff_src) {
            apply(s, n, 0, S);
          }
        }
      });
    } else {
      for (std::int64_t n = 0; n < p.n; ++n) {
        double* buf = partials + (n % 2) * 2 * workers * C;
        team.for_each_worker([&](int w) {
          const RowBuffers s = buffers(w);
          const std::int64_t r0 = split_point(S, workers, w), r1 = split_point(S, workers, w + 1);
          double* mine = buf + 2 * w * C;
          std::fill_n(mine, 2 * C, 0.0);
          set_centers(s, n);
          if (r1 > r0)
            k::rows_backward_reduce(dt, element_ptr(src, dt, n * sample + r0 * C),
                                    element_ptr(diff_dst, dt, n * sample + r0 * C), k::Rows{(r1 - r0) * C, C},
                                    s.tcenter, s.acc, mine, mine + C);
        });
        team.barrier();  // every share's sums of sample n are in place
        team.for_each_worker([&](int w) {
          const RowBuffers s = buffers(w);
          std::fill_n(s.s1, C, 0.0);
          std::fill_n(s.s2, C, 0.0);
          for (int v = 0; v < workers; ++v)
            for (std::int64_t c = 0; c < C; ++c) {
              s.s1[c] += buf[2 * v * C + c];
              s.s2[c] += buf[2 * v * C + C + c];
            }
          // Worker 0 alone adds the sample to its parameter-gradient partials.
          coefficients(s, n, w == 0);
          if (diff_src) apply(s, n, split_point(S, workers, w), split_point(S, workers, w + 1));
        });
      }
    }
    if (plan.stream) k::stream_fence();
    if (!grads) return;
    team.barrier();  // every worker's partial gradients are in place
    team.for_each_worker([&](int w) {
      merge_parameter_grads(split_point(C, workers, w), split_point(C, workers, w + 1), split ? 1 : workers,
                            scratch_at<double>(base + o_workers, rs.grads), static_cast<std::int64_t>(rs.bytes / 8),
                            C, a.diff_gamma, a.diff_beta);
    });
  });
}

}  // namespace bnorm::ops::group_norm

// Group norm on channels-first data (N, C, S) with S > 1: (sample, group)
// blocks of C/G * S contiguous values, consecutive in memory, owned whole by
// a worker and pipelined (the elementwise pass of a block walks together with
// the reduction of the next), or shared by all workers.

#include <algorithm>
#include <cmath>

#include "kernels/batch_norm/pipeline.hpp"
#include "kernels/common/scalar.hpp"
#include "ops/group_norm/common.hpp"
#include "ops/parallel.hpp"

namespace bnorm::ops::group_norm {
using kernels::element_ptr;

namespace {

// The share [lo, hi) of a block's values that worker w of `workers` takes.
struct Share {
  std::int64_t lo, hi;
};
Share share_of(std::int64_t m, int workers, int w) {
  return {split_point(m, workers, w), split_point(m, workers, w + 1)};
}

// Calls f(j, from, to) for each channel j of a block that [lo, hi) meets,
// with the part [from, to) of the block's values it has there.
template <class F>
void for_each_channel_piece(std::int64_t s, Share sh, F&& f) {
  for (std::int64_t i = sh.lo; i < sh.hi;) {
    const std::int64_t j = i / s, end = std::min(sh.hi, (j + 1) * s);
    f(j, i, end);
    i = end;
  }
}

// Per-worker scratch: per-plane normalizers or coefficients of a block of
// `planes` planes, per-channel sums, parameter-gradient partials.
struct BlockScratch {
  ScratchLayout layout;
  std::size_t center, scale, shift, pivots, k_const, mean_rep, m2_rep, invstd_rep, sums, acc;
  std::size_t bytes;
  BlockScratch(std::int64_t planes, std::int64_t cg, std::int64_t channels) {
    const auto P = static_cast<std::size_t>(planes);
    center = layout.add<float>(P);
    scale = layout.add<float>(P);
    shift = layout.add<float>(P);
    pivots = layout.add<float>(P);
    k_const = layout.add<float>(P);
    mean_rep = layout.add<double>(P);
    m2_rep = layout.add<double>(P);
    invstd_rep = layout.add<double>(P);
    sums = layout.add<double>(2 * static_cast<std::size_t>(cg));
    acc = layout.add<double>(2 * static_cast<std::size_t>(channels));
    bytes = (layout.bytes() + 63) / 64 * 64;
  }
};

// One worker's BlockScratch at `mine`. Backward keeps its coefficients and
// per-channel sums in the forward's slots, under its own names: k_dy and
// k_xc in scale and shift, ds and db in mean_rep and m2_rep, per-plane sums
// in sums (2 per channel), the next step's centers in pivots.
struct BlockBuffers {
  float *center, *scale, *shift, *pivots, *k_const;
  double *mean_rep, *m2_rep, *invstd_rep, *sums, *acc;
  BlockBuffers(std::byte* mine, const BlockScratch& cs)
      : center(scratch_at<float>(mine, cs.center)),
        scale(scratch_at<float>(mine, cs.scale)),
        shift(scratch_at<float>(mine, cs.shift)),
        pivots(scratch_at<float>(mine, cs.pivots)),
        k_const(scratch_at<float>(mine, cs.k_const)),
        mean_rep(scratch_at<double>(mine, cs.mean_rep)),
        m2_rep(scratch_at<double>(mine, cs.m2_rep)),
        invstd_rep(scratch_at<double>(mine, cs.invstd_rep)),
        sums(scratch_at<double>(mine, cs.sums)),
        acc(scratch_at<double>(mine, cs.acc)) {}
};

}  // namespace

void forward_blocks(const Problem& p, const Plan& plan, const void* src, void* dst, const ForwardArgs& a) {
  const int workers = plan.workers;
  const DType dt = p.dtype;
  const std::int64_t blocks = p.n * p.g, cg = p.group_channels(), m = p.group_count();
  // Moments of every block, kept when running statistics need them.
  ScratchLayout layout;
  const std::size_t nb = a.running ? static_cast<std::size_t>(blocks) : 0;
  const std::size_t o_mean = layout.add<double>(nb), o_m2 = layout.add<double>(nb);
  const std::size_t o_partials = layout.add<Stats>(2 * static_cast<std::size_t>(workers));
  const std::size_t o_workers = layout.add<std::byte>(0);

  if (plan.strategy == Strategy::blocks) {
    // Steps of `unit` consecutive blocks: a step's statistics are finished
    // together, and its elementwise pass walks with the next step's sums.
    const std::int64_t unit = plan.unit_blocks, up = unit * cg;
    const BlockScratch cs(up, up, 0);
    ScratchLayout extra;  // per block of a step: its pivot and shifted sums
    const std::size_t o_pivot = extra.add<float>(static_cast<std::size_t>(unit));
    const std::size_t o_sums = extra.add<double>(2 * static_cast<std::size_t>(unit));
    const std::size_t per_worker = cs.bytes + (extra.bytes() + 63) / 64 * 64;
    std::byte* base = thread_scratch(o_workers + per_worker * static_cast<std::size_t>(workers));
    double* all_mean = scratch_at<double>(base, o_mean);
    double* all_m2 = scratch_at<double>(base, o_m2);
    run_team(workers, [&](const Team& team) {
      team.for_each_worker([&](int w) {
        std::byte* mine = base + o_workers + per_worker * static_cast<std::size_t>(w);
        const BlockBuffers s(mine, cs);
        float* block_pivots = scratch_at<float>(mine + cs.bytes, o_pivot);
        double* block_sums = scratch_at<double>(mine + cs.bytes, o_sums);
        const std::int64_t b0 = split_point(blocks, workers, w), b_end = split_point(blocks, workers, w + 1);
        if (b0 == b_end) return;
        auto x_at = [&](std::int64_t b) { return element_ptr(src, dt, b * m); };
        auto step_end = [&](std::int64_t b) { return std::min(b + unit, b_end); };
        // Block b's pivot and sums, whole, into slot j.
        auto sum_block = [&](std::int64_t b, std::int64_t j) {
          block_pivots[j] = block_pivot(dt, x_at(b), cg, p.s);
          k::shifted_sums(dt, x_at(b), k::Runs{1, m, m}, block_pivots[j], block_sums + 2 * j);
        };
        // Pipelined, the first step's sums alone.
        if (plan.pipelined)
          for (std::int64_t b = b0; b < step_end(b0); ++b) sum_block(b, b - b0);
        for (std::int64_t u0 = b0, u1 = step_end(b0); u0 < b_end; u0 = u1, u1 = step_end(u1)) {
          const std::int64_t nb = u1 - u0, next_end = step_end(u1), nn = next_end - u1;
          // Small planes: the step's moments in two passes (the second from
          // L1), then its output.
          double* step_mean = block_sums;
          double* step_m2 = block_sums + unit;
          if (!plan.pipelined) k::block_moments(dt, x_at(u0), nb, m, step_mean, step_m2);
          for (std::int64_t j = 0; j < nb; ++j) {
            const auto uj = static_cast<std::size_t>(j);
            const Stats st = plan.pipelined
                                 ? stats_from_sums(dt, x_at(u0 + j), m, block_pivots[uj], block_sums + 2 * uj)
                                 : Stats{static_cast<double>(m), step_mean[j], step_m2[j]};
            std::fill_n(s.mean_rep + j * cg, cg, st.mean);
            std::fill_n(s.m2_rep + j * cg, cg, st.m2);
            if (a.running) {
              all_mean[u0 + j] = st.mean;
              all_m2[u0 + j] = st.m2;
            }
          }
          finish_planes(p, u0 * cg, nb * cg, s.mean_rep, s.m2_rep, a, s.center, s.scale, s.shift,
                        s.invstd_rep);
          for (std::int64_t j = 0; j < nb; ++j) {
            if (a.save_mean) a.save_mean[u0 + j] = static_cast<float>(s.mean_rep[j * cg]);
            if (a.save_invstd) a.save_invstd[u0 + j] = static_cast<float>(s.invstd_rep[j * cg]);
          }
          // This step's statistics are done: its pivots and sums make way
          // for the next step's.
          if (!plan.pipelined) {
            k::normalize_and_sum(dt, x_at(u0), element_ptr(dst, dt, u0 * m), nb * cg, p.s, s.center, s.scale,
                                 s.shift, plan.stream, nullptr, nullptr, nullptr);
            continue;
          }
          for (std::int64_t j = 0; j < nn; ++j) {
            block_pivots[j] = block_pivot(dt, x_at(u1 + j), cg, p.s);
            std::fill_n(s.pivots + j * cg, cg, block_pivots[j]);
          }
          // The first nn blocks walk with the next step's blocks (the
          // worker's later blocks follow them in memory); the rest alone.
          const std::int64_t paired = nn * cg;
          if (paired > 0)
            k::normalize_and_sum(dt, x_at(u0), element_ptr(dst, dt, u0 * m), paired, p.s, s.center, s.scale,
                                 s.shift, plan.stream, x_at(u1), s.pivots, s.sums, {}, (b_end - u1) * m);
          if (nb * cg > paired)
            k::normalize_and_sum(dt, element_ptr(src, dt, u0 * m + paired * p.s),
                                 element_ptr(dst, dt, u0 * m + paired * p.s), nb * cg - paired, p.s,
                                 s.center + paired, s.scale + paired, s.shift + paired, plan.stream, nullptr,
                                 nullptr, nullptr);
          for (std::int64_t j = 0; j < nn; ++j) {
            double* sums = block_sums + 2 * j;
            sums[0] = sums[1] = 0.0;
            for (std::int64_t q = j * cg; q < (j + 1) * cg; ++q) {
              sums[0] += s.sums[2 * q];
              sums[1] += s.sums[2 * q + 1];
            }
          }
        }
      });
      if (plan.stream) k::stream_fence();
      if (a.running) update_running(team, p, all_mean, all_m2, *a.running);
    });
    return;
  }

  // split_blocks: every worker's share of each block, one barrier per block.
  // Two buffers of partials, alternating: a worker may publish block b + 1
  // while others still merge b, but cannot get further ahead.
  const BlockScratch cs(cg, cg, 0);
  std::byte* base = thread_scratch(o_workers + cs.bytes * static_cast<std::size_t>(workers));
  double* all_mean = scratch_at<double>(base, o_mean);
  double* all_m2 = scratch_at<double>(base, o_m2);
  Stats* partials = scratch_at<Stats>(base, o_partials);
  run_team(workers, [&](const Team& team) {
    for (std::int64_t b = 0; b < blocks; ++b) {
      Stats* buf = partials + (b % 2) * workers;
      const void* x = element_ptr(src, dt, b * m);
      team.for_each_worker([&](int w) {
        const Share sh = share_of(m, workers, w);
        buf[w] = contiguous_stats(dt, element_ptr(x, dt, sh.lo), sh.hi - sh.lo);
      });
      team.barrier();  // every share's statistics of block b are in place
      team.for_each_worker([&](int w) {
        const BlockBuffers s(base + o_workers + cs.bytes * static_cast<std::size_t>(w), cs);
        Stats st;
        for (int v = 0; v < workers; ++v) batch_norm::merge_into(st, buf[v]);
        std::fill_n(s.mean_rep, cg, st.mean);
        std::fill_n(s.m2_rep, cg, st.m2);
        finish_planes(p, b * cg, cg, s.mean_rep, s.m2_rep, a, s.center, s.scale, s.shift, s.invstd_rep);
        if (w == 0) {
          if (a.save_mean) a.save_mean[b] = static_cast<float>(st.mean);
          if (a.save_invstd) a.save_invstd[b] = static_cast<float>(s.invstd_rep[0]);
          if (a.running) {
            all_mean[b] = st.mean;
            all_m2[b] = st.m2;
          }
        }
        for_each_channel_piece(
            p.s, share_of(m, workers, w), [&](std::int64_t j, std::int64_t lo, std::int64_t hi) {
              k::normalize(dt, element_ptr(x, dt, lo), element_ptr(dst, dt, b * m + lo),
                           k::Runs{1, hi - lo, hi - lo}, s.center[j], s.scale[j], s.shift[j], plan.stream);
            });
      });
    }
    if (plan.stream) k::stream_fence();
    if (a.running) update_running(team, p, all_mean, all_m2, *a.running);
  });
}

void backward_blocks(const Problem& p, const Plan& plan, const void* src, const void* diff_dst,
                     void* diff_src, const BackwardArgs& a) {
  const int workers = plan.workers;
  const DType dt = p.dtype;
  const std::int64_t blocks = p.n * p.g, cg = p.group_channels(), m = p.group_count(), C = p.c;
  const bool grads = a.diff_gamma || a.diff_beta;
  // Per-worker per-channel partial parameter gradients (dgamma then dbeta),
  // merged after the last barrier.
  if (plan.strategy == Strategy::blocks) {
    // Steps of `unit` consecutive blocks, as forward. Planes of 2, 4 or 8
    // values (2x2 maps; up to half the vector) take several planes per
    // vector, their sums taking turns with dx step by step, instead of a
    // walk and two horizontal sums per plane. One process alternating, same
    // bits: 64x512x2x2 f32 32 groups 0.44-0.46 the time, 512 groups (instance
    // norm) 0.62-0.67, bf16 0.36-0.38; 2x1 0.32; 2x4 0.83-0.92.
    const bool tiny = k::tiny_planes_handled(p.s);
    const std::int64_t unit = plan.unit_blocks, up = unit * cg;
    const BlockScratch cs(up, up, C);
    std::byte* base = thread_scratch(cs.bytes * static_cast<std::size_t>(workers));
    run_team(workers, [&](const Team& team) {
      team.for_each_worker([&](int w) {
        const BlockBuffers s(base + cs.bytes * static_cast<std::size_t>(w), cs);
        float *center = s.center, *k_dy = s.scale, *k_xc = s.shift, *k_const = s.k_const;
        float* next_centers = s.pivots;
        double *ds = s.mean_rep, *db = s.m2_rep, *acc = s.acc;
        double* sums = s.sums;  // 2 per plane: dy, dy * (x - mean)
        std::fill_n(acc, 2 * C, 0.0);
        const std::int64_t b0 = split_point(blocks, workers, w), b_end = split_point(blocks, workers, w + 1);
        if (b0 == b_end) return;
        auto at = [&](const void* base_ptr, std::int64_t b) { return element_ptr(base_ptr, dt, b * m); };
        auto step_end = [&](std::int64_t b) { return std::min(b + unit, b_end); };
        // The sums of blocks [u0, u1), plane by plane (tiny planes: several
        // per vector, centered on next_centers).
        auto reduce_step = [&](std::int64_t u0, std::int64_t u1) {
          if (tiny) {
            for (std::int64_t j = 0; j < u1 - u0; ++j) std::fill_n(next_centers + j * cg, cg, a.mean[u0 + j]);
            k::tiny_plane_grad_sums(dt, at(src, u0), at(diff_dst, u0), (u1 - u0) * cg, p.s, next_centers,
                                    sums);
            return;
          }
          for (std::int64_t q = 0; q < (u1 - u0) * cg; ++q) {
            sums[2 * q] = sums[2 * q + 1] = 0.0;
            const std::int64_t off = u0 * m + q * p.s;
            k::backward_reduce(dt, element_ptr(src, dt, off), element_ptr(diff_dst, dt, off),
                               k::Runs{1, p.s, p.s}, a.mean[u0 + q / cg], sums + 2 * q);
          }
        };
        // With diff_src, the first step's sums alone, then each step's dx
        // (from cache) walks with the next step's sums (from DRAM).
        if (diff_src) reduce_step(b0, step_end(b0));
        for (std::int64_t u0 = b0, u1 = step_end(b0); u0 < b_end; u0 = u1, u1 = step_end(u1)) {
          if (!diff_src) reduce_step(u0, u1);
          const std::int64_t nb = u1 - u0, nn = diff_src ? step_end(u1) - u1 : 0;
          for (std::int64_t j = 0; j < nb; ++j) {
            for (std::int64_t q = 0; q < cg; ++q) {
              ds[q] = sums[2 * (j * cg + q)];
              db[q] = sums[2 * (j * cg + q) + 1];
            }
            const std::int64_t b = u0 + j, o = j * cg;
            block_coefficients(p, b / p.g, b % p.g, ds, db, a, center + o, k_dy + o, k_xc + o, k_const + o,
                               acc, acc + C);
          }
          if (!diff_src) continue;
          if (tiny) {
            // dx of this step (from cache), then the next step's sums.
            k::tiny_plane_apply(dt, at(src, u0), at(diff_dst, u0), element_ptr(diff_src, dt, u0 * m), nb * cg,
                                p.s, center, k_dy, k_xc, k_const);
            if (nn > 0) reduce_step(u1, step_end(u1));
            continue;
          }
          for (std::int64_t j = 0; j < nn; ++j) std::fill_n(next_centers + j * cg, cg, a.mean[u1 + j]);
          // The first nn blocks walk with the next step's; the rest alone.
          const std::int64_t paired = nn * cg, planes = nb * cg;
          if (paired > 0)
            k::apply_and_reduce(dt, at(src, u0), at(diff_dst, u0), element_ptr(diff_src, dt, u0 * m), paired,
                                p.s, center, k_dy, k_xc, k_const, plan.stream, at(src, u1), at(diff_dst, u1),
                                next_centers, sums, {}, {}, (b_end - u1) * m);
          if (planes > paired) {
            const std::int64_t off = u0 * m + paired * p.s;
            k::apply_and_reduce(dt, element_ptr(src, dt, off), element_ptr(diff_dst, dt, off),
                                element_ptr(diff_src, dt, off), planes - paired, p.s, center + paired,
                                k_dy + paired, k_xc + paired, k_const + paired, plan.stream, nullptr, nullptr,
                                nullptr, nullptr);
          }
        }
      });
      if (plan.stream) k::stream_fence();
      if (!grads) return;
      team.barrier();  // every worker's partial gradients are in place
      team.for_each_worker([&](int w) {
        merge_parameter_grads(split_point(C, workers, w), split_point(C, workers, w + 1), workers,
                              scratch_at<double>(base, cs.acc), static_cast<std::int64_t>(cs.bytes / 8), C,
                              a.diff_gamma, a.diff_beta);
      });
    });
    return;
  }

  // split_blocks: per-worker partial sums per channel of each block (two
  // alternating buffers), a barrier, totals and coefficients, then each share.
  const BlockScratch cs(cg, cg, C);
  ScratchLayout layout;
  const std::size_t o_partials = layout.add<double>(2 * 2 * static_cast<std::size_t>(workers * cg));
  const std::size_t o_workers = layout.add<std::byte>(0);
  std::byte* base = thread_scratch(o_workers + cs.bytes * static_cast<std::size_t>(workers));
  double* partials = scratch_at<double>(base, o_partials);
  std::byte* worker_base = base + o_workers;
  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      std::fill_n(scratch_at<double>(worker_base + cs.bytes * static_cast<std::size_t>(w), cs.acc), 2 * C,
                  0.0);
    });
    for (std::int64_t b = 0; b < blocks; ++b) {
      double* buf = partials + (b % 2) * 2 * workers * cg;
      const std::int64_t off = b * m;
      const float mean = a.mean[b];
      team.for_each_worker([&](int w) {
        double* mine = buf + 2 * w * cg;
        std::fill_n(mine, 2 * cg, 0.0);
        for_each_channel_piece(
            p.s, share_of(m, workers, w), [&](std::int64_t j, std::int64_t lo, std::int64_t hi) {
              double sums[2] = {0.0, 0.0};
              k::backward_reduce(dt, element_ptr(src, dt, off + lo), element_ptr(diff_dst, dt, off + lo),
                                 k::Runs{1, hi - lo, hi - lo}, mean, sums);
              mine[j] = sums[0];
              mine[cg + j] = sums[1];
            });
      });
      team.barrier();  // every share's sums of block b are in place
      team.for_each_worker([&](int w) {
        const BlockBuffers s(worker_base + cs.bytes * static_cast<std::size_t>(w), cs);
        float *center = s.center, *k_dy = s.scale, *k_xc = s.shift, *k_const = s.k_const;
        double *ds = s.mean_rep, *db = s.m2_rep, *acc = s.acc;
        std::fill_n(ds, cg, 0.0);
        std::fill_n(db, cg, 0.0);
        for (int v = 0; v < workers; ++v)
          for (std::int64_t j = 0; j < cg; ++j) {
            ds[j] += buf[2 * v * cg + j];
            db[j] += buf[2 * v * cg + cg + j];
          }
        // Worker 0 alone adds the block to its parameter-gradient partials.
        block_coefficients(p, b / p.g, b % p.g, ds, db, a, center, k_dy, k_xc, k_const,
                           w == 0 ? acc : nullptr, w == 0 ? acc + C : nullptr);
        if (!diff_src) return;
        for_each_channel_piece(
            p.s, share_of(m, workers, w), [&](std::int64_t j, std::int64_t lo, std::int64_t hi) {
              k::backward_apply(dt, element_ptr(src, dt, off + lo), element_ptr(diff_dst, dt, off + lo),
                                element_ptr(diff_src, dt, off + lo), k::Runs{1, hi - lo, hi - lo}, center[j],
                                k_dy[j], k_xc[j], k_const[j], plan.stream);
            });
      });
    }
    if (plan.stream) k::stream_fence();
    if (!grads) return;
    team.barrier();  // worker 0's partial gradients are complete
    team.for_each_worker([&](int w) {
      merge_parameter_grads(split_point(C, workers, w), split_point(C, workers, w + 1), 1,
                            scratch_at<double>(worker_base, cs.acc), 0, C, a.diff_gamma, a.diff_beta);
    });
  });
}

}  // namespace bnorm::ops::group_norm

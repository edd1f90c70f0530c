// Batch norm on rows of C contiguous channels: channels-last data (N, S, C),
// or channels-first without spatial dims (N, C). Each worker owns a block
// of rows for every phase; per-worker per-channel partials meet after a
// barrier.

#include <algorithm>
#include <cmath>

#include "kernels/common/scalar.hpp"
#include "ops/batch_norm/plan.hpp"
#include "ops/parallel.hpp"

namespace bnorm::ops::batch_norm {
using kernels::element_ptr;

namespace {

// Rows whose mean is the first tile's pivot: a mean of 64 is within half a
// standard deviation of the channel's unless the rows are unrepresentative
// (then the tile takes a second pass). Later tiles pivot on the mean so far.
constexpr std::int64_t kPivotRows = 64;

// Sets pivot[0, C) to the per-channel mean of the first rows of x (finite,
// else 0) and extends it cyclically.
void row_pivots(DType dt, const void* x, std::int64_t rows, std::int64_t C, float* pivot, float* row) {
  const std::int64_t n = std::min(rows, kPivotRows);
  std::fill(pivot, pivot + C, 0.0f);
  for (std::int64_t r = 0; r < n; ++r) {
    kernels::load_floats(dt, element_ptr(x, dt, r * C), C, row);
    for (std::int64_t c = 0; c < C; ++c) pivot[c] += row[c];
  }
  const float inv = 1.0f / static_cast<float>(n);
  for (std::int64_t c = 0; c < C; ++c) pivot[c] = finite_or_zero(pivot[c] * inv);
  wrap_cyclic(pivot, C, 0, C);
}

// Per-worker per-channel moments of the rows strategy. Each worker's rows
// are cut into tiles that fit L2. A tile's statistics come from one pass of
// shifted sums (a second pass about the tile's mean, from cache, for
// channels whose pivot was too far off), and merge into the worker's
// moments; merge() then combines the workers' moments per channel.
class RowMoments {
 public:
  /// Reserves the arrays in `layout` (the caller's scratch).
  RowMoments(const Problem& p, const Plan& plan, ScratchLayout& layout)
      : p_(p), workers_(plan.workers), tile_rows_(plan.tile_rows) {
    const std::size_t uC = static_cast<std::size_t>(p.c), L = static_cast<std::size_t>(k::cyclic_length(p.c));
    o_mean_ = layout.add<double>(static_cast<std::size_t>(workers_) * uC);
    o_m2_ = layout.add<double>(static_cast<std::size_t>(workers_) * uC);
    // Per worker: pivot and tile center (cyclic), accumulators (2 cyclic),
    // tile sums (C each).
    ScratchLayout per_worker;
    w_pivot_ = per_worker.add<float>(L);
    w_tcenter_ = per_worker.add<float>(L);
    w_acc_ = per_worker.add<float>(2 * L);
    w_s1_ = per_worker.add<double>(uC);
    w_s2_ = per_worker.add<double>(uC);
    worker_bytes_ = (per_worker.bytes() + 63) / 64 * 64;
    o_worker_ = layout.add<std::byte>(worker_bytes_ * static_cast<std::size_t>(workers_));
  }
  void bind(std::byte* base) { base_ = base; }

  std::int64_t rows_of(int w) const {
    return split_point(p_.count(), workers_, w + 1) - split_point(p_.count(), workers_, w);
  }
  double* mean(int w) const { return scratch_at<double>(base_, o_mean_) + static_cast<std::size_t>(w * p_.c); }
  double* m2(int w) const { return scratch_at<double>(base_, o_m2_) + static_cast<std::size_t>(w * p_.c); }

  /// Worker w's moments of its rows into mean(w), m2(w).
  void compute(const void* src, int w) const {
    const std::int64_t C = p_.c;
    std::byte* mine = base_ + o_worker_ + worker_bytes_ * static_cast<std::size_t>(w);
    float* pivot = scratch_at<float>(mine, w_pivot_);
    float* tcenter = scratch_at<float>(mine, w_tcenter_);
    float* acc = scratch_at<float>(mine, w_acc_);
    double* s1 = scratch_at<double>(mine, w_s1_);
    double* s2 = scratch_at<double>(mine, w_s2_);
    double* mean = this->mean(w);
    double* m2 = this->m2(w);
    const std::int64_t r0 = split_point(p_.count(), workers_, w), r1 = r0 + rows_of(w);
    if (r0 == r1) return;
    row_pivots(p_.dtype, element_ptr(src, p_.dtype, r0 * C), r1 - r0, C, pivot, tcenter);
    double count = 0.0;
    for (std::int64_t t0 = r0; t0 < r1; t0 += tile_rows_) {
      const std::int64_t t1 = std::min(r1, t0 + tile_rows_);
      const k::Rows tile{(t1 - t0) * C, C};
      const void* x = element_ptr(src, p_.dtype, t0 * C);
      const double n = static_cast<double>(t1 - t0);
      std::fill(s1, s1 + C, 0.0);
      std::fill(s2, s2 + C, 0.0);
      k::rows_shifted_sums(p_.dtype, x, tile, pivot, acc, s1, s2);
      // The tile's mean and M2, in place of the sums.
      if (!stats_from_shifted_sums(C, n, pivot, s1, s2, s1, s2)) {
        // Some pivot was too far from its channel's mean: a second pass
        // over the tile (still in cache) about the tile's means.
        std::fill(s1, s1 + C, 0.0);
        std::fill(s2, s2 + C, 0.0);
        k::rows_shifted_sums(p_.dtype, x, tile, pivot, acc, s1, s2);
        for (std::int64_t c = 0; c < C; ++c) {
          s1[c] = pivot[c] + s1[c] / n;
          tcenter[c] = static_cast<float>(s1[c]);
        }
        wrap_cyclic(tcenter, C, 0, C);
        std::fill(s2, s2 + C, 0.0);
        k::rows_sum_sq_centered(p_.dtype, x, tile, tcenter, acc, s2);
        for (std::int64_t c = 0; c < C; ++c) {
          const double dm = s1[c] - static_cast<double>(tcenter[c]);
          s2[c] = std::max(s2[c] - n * dm * dm, 0.0);  // std::max keeps a NaN first argument
        }
      }
      count = merge_moments(C, count, mean, m2, n, s1, s2);
      if (t1 == r1) break;
      for (std::int64_t c = 0; c < C; ++c) pivot[c] = finite_or_zero(static_cast<float>(mean[c]));
      wrap_cyclic(pivot, C, 0, C);
    }
  }

  /// Merges every worker's moments into worker 0's for channels [c0, c1)
  /// (uniform counts: scalar weights); returns the total count.
  double merge(std::int64_t c0, std::int64_t c1) const {
    double count = static_cast<double>(rows_of(0));
    for (int v = 1; v < workers_; ++v)
      count = merge_moments(c1 - c0, count, mean(0) + c0, m2(0) + c0, static_cast<double>(rows_of(v)),
                            mean(v) + c0, m2(v) + c0);
    return count;
  }

 private:
  Problem p_;
  int workers_;
  std::int64_t tile_rows_;
  std::size_t o_mean_, o_m2_, o_worker_, worker_bytes_;
  std::size_t w_pivot_, w_tcenter_, w_acc_, w_s1_, w_s2_;
  std::byte* base_ = nullptr;
};

}  // namespace

// Phase 1: per-worker moments (RowMoments); barrier; every worker merges
// all workers' moments for a slice of the channels and finishes them;
// barrier; each worker normalizes its rows.
void training_rows(const Problem& p, const Plan& plan, const void* src, void* dst,
                   const TrainingOutputs& out) {
  const int workers = plan.workers;
  const std::int64_t C = p.c, rows = p.count();
  const std::size_t L = static_cast<std::size_t>(k::cyclic_length(C));
  const std::size_t uC = static_cast<std::size_t>(C);
  ScratchLayout layout;
  RowMoments moments(p, plan, layout);
  const std::size_t o_center = layout.add<float>(L), o_scale = layout.add<float>(L),
                    o_shift = layout.add<float>(L);
  const std::size_t o_invstd = layout.add<double>(uC);
  std::byte* base = thread_scratch(layout.bytes());
  moments.bind(base);
  float* center = scratch_at<float>(base, o_center);
  float* scale = scratch_at<float>(base, o_scale);
  float* shift = scratch_at<float>(base, o_shift);
  double* invstd = scratch_at<double>(base, o_invstd);

  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) { moments.compute(src, w); });
    team.barrier();  // every worker's moments are in place
    team.for_each_worker([&](int w) {
      const std::int64_t c0 = split_point(C, workers, w), c1 = split_point(C, workers, w + 1);
      if (c0 == c1) return;
      const double count = moments.merge(c0, c1);
      out.finish(c0, c1, count, moments.mean(0) + c0, moments.m2(0) + c0, center + c0, scale + c0, shift + c0,
                 invstd + c0, true);
      for (float* cyclic : {center, scale, shift}) wrap_cyclic(cyclic, C, c0, c1);
    });
    team.barrier();  // every channel's normalizer is in place
    team.for_each_worker([&](int w) {
      const std::int64_t r0 = split_point(rows, workers, w), r1 = r0 + moments.rows_of(w);
      k::rows_normalize(p.dtype, element_ptr(src, p.dtype, r0 * C), element_ptr(dst, p.dtype, r0 * C),
                        k::Rows{(r1 - r0) * C, C}, center, scale, shift, plan.stream, out.post.at(p.dtype, r0 * C));
    });
    if (plan.stream) k::stream_fence();
  });
}

void moments_rows(const Problem& p, const Plan& plan, const void* src, double* mean, double* m2) {
  ScratchLayout layout;
  RowMoments moments(p, plan, layout);
  moments.bind(thread_scratch(layout.bytes()));
  run_team(plan.workers, [&](const Team& team) {
    team.for_each_worker([&](int w) { moments.compute(src, w); });
    team.barrier();
    team.for_each_worker([&](int w) {
      const std::int64_t c0 = split_point(p.c, plan.workers, w), c1 = split_point(p.c, plan.workers, w + 1);
      if (c0 == c1) return;
      moments.merge(c0, c1);
      std::copy(moments.mean(0) + c0, moments.mean(0) + c1, mean + c0);
      std::copy(moments.m2(0) + c0, moments.m2(0) + c1, m2 + c0);
    });
  });
}

void inference_rows(const Problem& p, const Plan& plan, const void* src, void* dst, float* center_cyclic,
                    float* scale_cyclic, float* shift_cyclic, const k::Epilogue& post) {
  const int workers = plan.workers;
  const std::int64_t C = p.c, rows = p.count();
  for (float* cyclic : {center_cyclic, scale_cyclic, shift_cyclic}) wrap_cyclic(cyclic, C, 0, C);
  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      const std::int64_t r0 = split_point(rows, workers, w), r1 = split_point(rows, workers, w + 1);
      k::rows_normalize(p.dtype, element_ptr(src, p.dtype, r0 * C), element_ptr(dst, p.dtype, r0 * C),
                        k::Rows{(r1 - r0) * C, C}, center_cyclic, scale_cyclic, shift_cyclic, plan.stream,
                        post.at(p.dtype, r0 * C));
    });
    if (plan.stream) k::stream_fence();
  });
}

// Phase 1: per-worker sums over its rows; barrier; each worker totals a
// slice of the channels and finishes them; barrier; phase 3: dx.
//
// Whether phase 1 stores the gated dy (the residual's gradient, gate.dz)
// for phase 3 to read: not when dz is src itself, which phase 3 still reads.
bool stores_gated(bool reduce, const k::Gate& gate, const void* src) {
  return reduce && gate.gates() && gate.dz && gate.dz != src;
}

void backward_rows(const Problem& p, const Plan& plan, const void* src, const void* diff_dst, void* diff_src,
                   const float* mean, bool reduce, const BackwardOutputs& out) {
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
  std::copy(mean, mean + C, center);
  wrap_cyclic(center, C, 0, C);

  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      double* sum_dy = partials + 2 * static_cast<std::size_t>(w) * uC;
      double* sum_dy_xc = sum_dy + uC;
      std::fill(sum_dy, sum_dy + 2 * uC, 0.0);
      const std::int64_t r0 = split_point(rows, workers, w), r1 = split_point(rows, workers, w + 1);
      if (!reduce || r0 == r1) return;
      k::Gate gate = out.gate;
      if (!stores_gated(reduce, out.gate, src)) gate.dz = nullptr;
      k::rows_backward_reduce(p.dtype, element_ptr(src, p.dtype, r0 * C),
                              element_ptr(diff_dst, p.dtype, r0 * C), k::Rows{(r1 - r0) * C, C}, center,
                              accs + 2 * L * static_cast<std::size_t>(w), sum_dy, sum_dy_xc,
                              gate.at(p.dtype, r0 * C), plan.stream);
      // The second pass reads the streamed residual gradient.
      if (plan.stream && gate.dz) k::stream_fence();
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
      for (float* cyclic : {k_dy, k_xc, k_const}) wrap_cyclic(cyclic, C, c0, c1);
    });
    if (!diff_src) return;
    team.barrier();  // every channel's coefficients are in place
    // When the first pass stored the gated dy (the residual's gradient),
    // dx reads it in place of dy and the gate: one tensor less than reading
    // dy and y again.
    const bool gated_stored = stores_gated(reduce, out.gate, src);
    const void* dy = gated_stored ? out.gate.dz : diff_dst;
    const k::Gate gate = gated_stored ? k::Gate{} : out.gate;
    team.for_each_worker([&](int w) {
      const std::int64_t r0 = split_point(rows, workers, w), r1 = split_point(rows, workers, w + 1);
      k::rows_backward_apply(p.dtype, element_ptr(src, p.dtype, r0 * C), element_ptr(dy, p.dtype, r0 * C),
                             element_ptr(diff_src, p.dtype, r0 * C), k::Rows{(r1 - r0) * C, C}, center, k_dy,
                             k_xc, k_const, plan.stream, gate.at(p.dtype, r0 * C));
    });
    if (plan.stream) k::stream_fence();
  });
}

}  // namespace bnorm::ops::batch_norm

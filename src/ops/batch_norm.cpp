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

  Affine finish(std::int64_t c, const Stats& st, bool write) const {
    const double var = st.m2 / st.count;  // biased, used to normalize
    const double invstd = 1.0 / std::sqrt(var + eps);
    if (write) {
      if (save_mean) save_mean[c] = static_cast<float>(st.mean);
      if (save_invstd) save_invstd[c] = static_cast<float>(invstd);
      if (running_mean) {
        // Unbiased for PyTorch (count > 1 was checked), biased for ONNX.
        const double batch_var = unbiased ? st.m2 / (st.count - 1.0) : var;
        running_mean[c] = static_cast<float>((1.0 - factor) * running_mean[c] + factor * st.mean);
        running_var[c] = static_cast<float>((1.0 - factor) * running_var[c] + factor * batch_var);
      }
    }
    const float center = static_cast<float>(st.mean);
    const double scale = (gamma ? gamma[c] : 1.0) * invstd;
    const double shift = (beta ? beta[c] : 0.0) - (st.mean - center) * scale;
    return {center, static_cast<float>(scale), static_cast<float>(shift)};
  }
};

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

  BackwardCoefs finish(std::int64_t c, double count, double sum_dy, double sum_dy_xc, bool write) const {
    const double is = invstd[c];
    const double g = gamma ? gamma[c] : 1.0;
    if (write) {
      if (diff_gamma) diff_gamma[c] = static_cast<float>(sum_dy_xc * is);
      if (diff_beta) diff_beta[c] = static_cast<float>(sum_dy);
    }
    BackwardCoefs k;
    k.k_dy = static_cast<float>(g * is);
    if (stats == BackwardStats::batch && count > 0.0) {
      k.k_xc = static_cast<float>(-g * is * is * is * sum_dy_xc / count);
      k.k_const = static_cast<float>(-g * is * sum_dy / count);
    }
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

// Two-pass statistics of a channel's segments: a pivot-shifted sum gives the
// mean; squares about the mean rounded to f32 give M2, corrected by
// n * (mean - center)^2 (exact identity, no cancellation).
Stats segment_stats(DType dt, const void* base, const Segments& segs) {
  if (segs.count == 0) return {};
  const float pivot = finite_or_zero(load_float(dt, base, segs.first));
  double sum = 0.0;
  for (int i = 0; i < segs.size; ++i)
    sum += k::sum_shifted(dt, element_ptr(base, dt, segs.piece[i].offset), segs.piece[i].runs, pivot);
  const double count = static_cast<double>(segs.count);
  const double mean = pivot + sum / count;
  const float center = static_cast<float>(mean);
  double sq = 0.0;
  for (int i = 0; i < segs.size; ++i)
    sq += k::sum_sq_centered(dt, element_ptr(base, dt, segs.piece[i].offset), segs.piece[i].runs, center);
  const double dm = mean - static_cast<double>(center);
  double m2 = sq - count * dm * dm;
  if (m2 < 0.0) m2 = 0.0;  // rounding only; NaN stays NaN
  return {count, mean, m2};
}

void normalize_segments(DType dt, const void* x, void* y, const Segments& segs, const Affine& a,
                        bool stream) {
  for (int i = 0; i < segs.size; ++i) {
    const auto& p = segs.piece[i];
    k::normalize(dt, element_ptr(x, dt, p.offset), element_ptr(y, dt, p.offset), p.runs, a.center, a.scale,
                 a.shift, stream);
  }
}

void reduce_segments(DType dt, const void* x, const void* dy, const Segments& segs, float center,
                     double sums[2]) {
  for (int i = 0; i < segs.size; ++i) {
    const auto& p = segs.piece[i];
    k::backward_reduce(dt, element_ptr(x, dt, p.offset), element_ptr(dy, dt, p.offset), p.runs, center, sums);
  }
}

void apply_segments(DType dt, const void* x, const void* dy, void* dx, const Segments& segs, float center,
                    const BackwardCoefs& kc, bool stream) {
  for (int i = 0; i < segs.size; ++i) {
    const auto& p = segs.piece[i];
    k::backward_apply(dt, element_ptr(x, dt, p.offset), element_ptr(dy, dt, p.offset),
                      element_ptr(dx, dt, p.offset), p.runs, center, kc.k_dy, kc.k_xc, kc.k_const, stream);
  }
}

// Writes value for channel c into every slot of a cyclic array (kernels.hpp).
void set_cyclic(float* cyclic, std::int64_t channels, std::int64_t c, float value) {
  const std::int64_t length = k::cyclic_length(channels);
  for (std::int64_t j = c; j < length; j += channels) cyclic[j] = value;
}

std::int64_t channel_offset(const Problem& p, std::int64_t c) { return c * p.s; }

// ---------------------------------------------------------------- training

void training_channel_slabs(const Problem& p, const Plan& plan, const void* src, void* dst,
                            const TrainingOutputs& out) {
  const Segments segs = segments_of(0, p.count(), p.s, p.c * p.s);
  run_team(plan.workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      for (std::int64_t c = split_point(p.c, plan.workers, w); c < split_point(p.c, plan.workers, w + 1);
           ++c) {
        const void* x = element_ptr(src, p.dtype, channel_offset(p, c));
        const Affine a = out.finish(c, segment_stats(p.dtype, x, segs), true);
        normalize_segments(p.dtype, x, element_ptr(dst, p.dtype, channel_offset(p, c)), segs, a, plan.stream);
      }
    });
    if (plan.stream) k::stream_fence();
  });
}

void training_split_channels(const Problem& p, const Plan& plan, const void* src, void* dst,
                             const TrainingOutputs& out) {
  const int workers = plan.workers;
  const std::int64_t group = std::clamp<std::int64_t>(plan.group_channels, 1, p.c);
  // Two buffers of partials, alternating between groups: a worker may start
  // the next group while others still merge this one, but cannot get two
  // groups ahead past the barrier.
  const std::size_t per_buffer = static_cast<std::size_t>(workers * group);
  Stats* partials = reinterpret_cast<Stats*>(thread_scratch(2 * per_buffer * sizeof(Stats)));
  run_team(workers, [&](const Team& team) {
    std::int64_t round = 0;
    for (std::int64_t g0 = 0; g0 < p.c; g0 += group, ++round) {
      const std::int64_t g1 = std::min(p.c, g0 + group);
      Stats* buf = partials + (round % 2) * per_buffer;
      team.for_each_worker([&](int w) {
        const Segments segs = segments_of(split_point(p.count(), workers, w),
                                          split_point(p.count(), workers, w + 1), p.s, p.c * p.s);
        for (std::int64_t c = g0; c < g1; ++c)
          buf[w * group + (c - g0)] =
              segment_stats(p.dtype, element_ptr(src, p.dtype, channel_offset(p, c)), segs);
      });
      team.barrier();  // every partial of the group is in place
      team.for_each_worker([&](int w) {
        const Segments segs = segments_of(split_point(p.count(), workers, w),
                                          split_point(p.count(), workers, w + 1), p.s, p.c * p.s);
        for (std::int64_t c = g0; c < g1; ++c) {
          Stats st;
          for (int v = 0; v < workers; ++v) merge_into(st, buf[v * group + (c - g0)]);
          const Affine a = out.finish(c, st, w == 0);
          normalize_segments(p.dtype, element_ptr(src, p.dtype, channel_offset(p, c)),
                             element_ptr(dst, p.dtype, channel_offset(p, c)), segs, a, plan.stream);
        }
      });
    }
    if (plan.stream) k::stream_fence();
  });
}

void training_rows(const Problem& p, const Plan& plan, const void* src, void* dst,
                   const TrainingOutputs& out) {
  const int workers = plan.workers;
  const std::int64_t C = p.c, rows = p.count();
  const std::size_t L = static_cast<std::size_t>(k::cyclic_length(C));
  const std::size_t uC = static_cast<std::size_t>(C);
  ScratchLayout layout;
  const std::size_t o_partials = layout.add<Stats>(static_cast<std::size_t>(workers) * uC);
  const std::size_t o_center = layout.add<float>(L), o_scale = layout.add<float>(L),
                    o_shift = layout.add<float>(L);
  // Per worker: pivot, tile center and accumulator (cyclic), tile sums (C).
  const std::size_t o_worker = layout.add<std::byte>(0);
  ScratchLayout per_worker;
  const std::size_t w_pivot = per_worker.add<float>(L), w_tcenter = per_worker.add<float>(L),
                    w_acc = per_worker.add<float>(L), w_sum = per_worker.add<double>(uC),
                    w_sq = per_worker.add<double>(uC), w_mean = per_worker.add<double>(uC);
  const std::size_t worker_bytes = (per_worker.bytes() + 63) / 64 * 64;
  std::byte* base = thread_scratch(o_worker + worker_bytes * static_cast<std::size_t>(workers));
  Stats* partials = scratch_at<Stats>(base, o_partials);
  float* center = scratch_at<float>(base, o_center);
  float* scale = scratch_at<float>(base, o_scale);
  float* shift = scratch_at<float>(base, o_shift);

  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      std::byte* mine = base + o_worker + worker_bytes * static_cast<std::size_t>(w);
      float* pivot = scratch_at<float>(mine, w_pivot);
      float* tcenter = scratch_at<float>(mine, w_tcenter);
      float* acc = scratch_at<float>(mine, w_acc);
      double* sum = scratch_at<double>(mine, w_sum);
      double* sq = scratch_at<double>(mine, w_sq);
      double* tmean = scratch_at<double>(mine, w_mean);
      Stats* part = partials + static_cast<std::size_t>(w) * uC;
      std::fill(part, part + C, Stats{});
      const std::int64_t r0 = split_point(rows, workers, w), r1 = split_point(rows, workers, w + 1);
      if (r0 == r1) return;
      for (std::int64_t c = 0; c < C; ++c)
        set_cyclic(pivot, C, c, finite_or_zero(load_float(p.dtype, src, r0 * C + c)));
      // Both passes over a tile run while it is still in this core's L2.
      for (std::int64_t t0 = r0; t0 < r1; t0 += plan.tile_rows) {
        const std::int64_t t1 = std::min(r1, t0 + plan.tile_rows);
        const k::Rows tile{(t1 - t0) * C, C};
        const void* x = element_ptr(src, p.dtype, t0 * C);
        const double count = static_cast<double>(t1 - t0);
        std::fill(sum, sum + C, 0.0);
        k::rows_sum_shifted(p.dtype, x, tile, pivot, acc, sum);
        for (std::int64_t c = 0; c < C; ++c) {
          tmean[c] = pivot[c] + sum[c] / count;
          set_cyclic(tcenter, C, c, static_cast<float>(tmean[c]));
        }
        std::fill(sq, sq + C, 0.0);
        k::rows_sum_sq_centered(p.dtype, x, tile, tcenter, acc, sq);
        for (std::int64_t c = 0; c < C; ++c) {
          const double dm = tmean[c] - static_cast<double>(tcenter[c]);
          double m2 = sq[c] - count * dm * dm;
          if (m2 < 0.0) m2 = 0.0;
          merge_into(part[c], Stats{count, tmean[c], m2});
        }
      }
    });
    team.barrier();  // all partials are in place
    team.for_each_worker([&](int w) {
      for (std::int64_t c = split_point(C, workers, w); c < split_point(C, workers, w + 1); ++c) {
        Stats st;
        for (int v = 0; v < workers; ++v)
          merge_into(st, partials[static_cast<std::size_t>(v) * uC + static_cast<std::size_t>(c)]);
        const Affine a = out.finish(c, st, true);
        set_cyclic(center, C, c, a.center);
        set_cyclic(scale, C, c, a.scale);
        set_cyclic(shift, C, c, a.shift);
      }
    });
    team.barrier();  // the normalizers of every channel are in place
    team.for_each_worker([&](int w) {
      const std::int64_t r0 = split_point(rows, workers, w), r1 = split_point(rows, workers, w + 1);
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

void backward_channel_slabs(const Problem& p, const Plan& plan, const BackwardArgs& a,
                            const BackwardOutputs& out) {
  const Segments segs = segments_of(0, p.count(), p.s, p.c * p.s);
  run_team(plan.workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      for (std::int64_t c = split_point(p.c, plan.workers, w); c < split_point(p.c, plan.workers, w + 1);
           ++c) {
        const std::int64_t off = channel_offset(p, c);
        const void* x = element_ptr(a.src, p.dtype, off);
        const void* dy = element_ptr(a.diff_dst, p.dtype, off);
        double sums[2] = {0.0, 0.0};
        if (a.reduce) reduce_segments(p.dtype, x, dy, segs, a.mean[c], sums);
        const BackwardCoefs kc = out.finish(c, static_cast<double>(p.count()), sums[0], sums[1], true);
        if (a.diff_src)
          apply_segments(p.dtype, x, dy, element_ptr(a.diff_src, p.dtype, off), segs, a.mean[c], kc,
                         plan.stream);
      }
    });
    if (plan.stream) k::stream_fence();
  });
}

void backward_split_channels(const Problem& p, const Plan& plan, const BackwardArgs& a,
                             const BackwardOutputs& out) {
  const int workers = plan.workers;
  const std::int64_t group = std::clamp<std::int64_t>(plan.group_channels, 1, p.c);
  const std::size_t per_buffer = static_cast<std::size_t>(workers * group) * 2;
  double* partials = reinterpret_cast<double*>(thread_scratch(2 * per_buffer * sizeof(double)));
  run_team(workers, [&](const Team& team) {
    std::int64_t round = 0;
    for (std::int64_t g0 = 0; g0 < p.c; g0 += group, ++round) {
      const std::int64_t g1 = std::min(p.c, g0 + group);
      double* buf = partials + (round % 2) * per_buffer;  // alternating, as in training
      team.for_each_worker([&](int w) {
        const Segments segs = segments_of(split_point(p.count(), workers, w),
                                          split_point(p.count(), workers, w + 1), p.s, p.c * p.s);
        for (std::int64_t c = g0; c < g1; ++c) {
          double* sums = buf + 2 * (w * group + (c - g0));
          sums[0] = sums[1] = 0.0;
          if (a.reduce)
            reduce_segments(p.dtype, element_ptr(a.src, p.dtype, channel_offset(p, c)),
                            element_ptr(a.diff_dst, p.dtype, channel_offset(p, c)), segs, a.mean[c], sums);
        }
      });
      team.barrier();  // every partial of the group is in place
      team.for_each_worker([&](int w) {
        const Segments segs = segments_of(split_point(p.count(), workers, w),
                                          split_point(p.count(), workers, w + 1), p.s, p.c * p.s);
        for (std::int64_t c = g0; c < g1; ++c) {
          double sum_dy = 0.0, sum_dy_xc = 0.0;
          for (int v = 0; v < workers; ++v) {
            sum_dy += buf[2 * (v * group + (c - g0))];
            sum_dy_xc += buf[2 * (v * group + (c - g0)) + 1];
          }
          const BackwardCoefs kc = out.finish(c, static_cast<double>(p.count()), sum_dy, sum_dy_xc, w == 0);
          if (a.diff_src) {
            const std::int64_t off = channel_offset(p, c);
            apply_segments(p.dtype, element_ptr(a.src, p.dtype, off), element_ptr(a.diff_dst, p.dtype, off),
                           element_ptr(a.diff_src, p.dtype, off), segs, a.mean[c], kc, plan.stream);
          }
        }
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
  for (std::int64_t c = 0; c < C; ++c) set_cyclic(center, C, c, a.mean[c]);

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
      for (std::int64_t c = split_point(C, workers, w); c < split_point(C, workers, w + 1); ++c) {
        double sum_dy = 0.0, sum_dy_xc = 0.0;
        for (int v = 0; v < workers; ++v) {
          sum_dy += partials[2 * static_cast<std::size_t>(v) * uC + static_cast<std::size_t>(c)];
          sum_dy_xc += partials[(2 * static_cast<std::size_t>(v) + 1) * uC + static_cast<std::size_t>(c)];
        }
        const BackwardCoefs kc = out.finish(c, static_cast<double>(rows), sum_dy, sum_dy_xc, true);
        set_cyclic(k_dy, C, c, kc.k_dy);
        set_cyclic(k_xc, C, c, kc.k_xc);
        set_cyclic(k_const, C, c, kc.k_const);
      }
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

Plan plan_for(const Problem& problem, int threads) {
  Plan plan;
  const std::int64_t elements = problem.elements();
  const std::int64_t by_size = std::max<std::int64_t>(1, (elements + kGrainElements - 1) / kGrainElements);
  plan.workers = static_cast<int>(std::clamp<std::int64_t>(by_size, 1, std::max(1, threads)));
  plan.stream = static_cast<std::size_t>(elements) * size_of(problem.dtype) > streaming_threshold_bytes();
  const std::size_t budget = l2_cache_bytes() / 2;
  const std::size_t esize = size_of(problem.dtype);
  if (problem.rows_view()) {
    plan.strategy = Strategy::rows;
    plan.tile_rows = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(budget / (static_cast<std::size_t>(problem.c) * esize)));
    return plan;
  }
  const int w = plan.workers;
  if (w == 1 || problem.c % w == 0 || problem.c >= 4 * w) {
    plan.strategy = Strategy::channel_slabs;
    return plan;
  }
  plan.strategy = Strategy::split_channels;
  const std::size_t per_channel_share =
      static_cast<std::size_t>(std::max<std::int64_t>(1, problem.count() / w)) * esize;
  plan.group_channels =
      std::clamp<std::int64_t>(static_cast<std::int64_t>(budget / per_channel_share), 1, problem.c);
  return plan;
}

void forward_training(const Problem& p, const Plan& plan, const void* src, void* dst, const float* gamma,
                      const float* beta, float* save_mean, float* save_invstd, float* running_mean,
                      float* running_var, double eps, double factor, bool unbiased_running_var) {
  const TrainingOutputs out{gamma,       beta, save_mean, save_invstd,         running_mean,
                            running_var, eps,  factor,    unbiased_running_var};
  switch (plan.strategy) {
    case Strategy::channel_slabs:
      return training_channel_slabs(p, plan, src, dst, out);
    case Strategy::split_channels:
      return training_split_channels(p, plan, src, dst, out);
    case Strategy::rows:
      return training_rows(p, plan, src, dst, out);
  }
}

void forward_inference(const Problem& p, const Plan& plan, const void* src, void* dst, const float* gamma,
                       const float* beta, const float* mean, const float* var, double eps) {
  auto affine = [&](std::int64_t c) {
    const double scale = (gamma ? gamma[c] : 1.0) / std::sqrt(static_cast<double>(var[c]) + eps);
    return Affine{mean[c], static_cast<float>(scale), beta ? beta[c] : 0.0f};
  };
  const int workers = plan.workers;
  if (plan.strategy == Strategy::rows) {
    const std::int64_t C = p.c, rows = p.count();
    const std::size_t L = static_cast<std::size_t>(k::cyclic_length(C));
    float* center = reinterpret_cast<float*>(thread_scratch(3 * L * sizeof(float)));
    float* scale = center + L;
    float* shift = scale + L;
    for (std::int64_t c = 0; c < C; ++c) {
      const Affine a = affine(c);
      set_cyclic(center, C, c, a.center);
      set_cyclic(scale, C, c, a.scale);
      set_cyclic(shift, C, c, a.shift);
    }
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
  // Channels-first: split the N*C runs of S values evenly, whatever C is.
  Affine* affines = reinterpret_cast<Affine*>(thread_scratch(static_cast<std::size_t>(p.c) * sizeof(Affine)));
  for (std::int64_t c = 0; c < p.c; ++c) affines[c] = affine(c);
  const std::int64_t runs = p.n * p.c;
  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      const std::int64_t r0 = split_point(runs, workers, w), r1 = split_point(runs, workers, w + 1);
      std::int64_t c = r0 % p.c;
      for (std::int64_t r = r0; r < r1; ++r) {
        const Affine& a = affines[c];
        k::normalize(p.dtype, element_ptr(src, p.dtype, r * p.s), element_ptr(dst, p.dtype, r * p.s),
                     k::Runs{1, p.s, p.s}, a.center, a.scale, a.shift, plan.stream);
        if (++c == p.c) c = 0;
      }
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
      return backward_channel_slabs(p, plan, a, out);
    case Strategy::split_channels:
      return backward_split_channels(p, plan, a, out);
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
  ops::batch_norm::forward_training(p, ops::batch_norm::plan_for(p, num_threads()), src, dst, gamma, beta,
                                    save_mean, save_invstd, running.mean, running.var, config.eps, factor,
                                    config.unbiased_running_var);
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
  ops::batch_norm::forward_inference(p, ops::batch_norm::plan_for(p, num_threads()), src, dst, gamma, beta,
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
  ops::batch_norm::backward(p, ops::batch_norm::plan_for(p, num_threads()), src, diff_dst, diff_src, gamma,
                            mean, invstd, diff_gamma, diff_beta, stats);
}

}  // namespace bnorm

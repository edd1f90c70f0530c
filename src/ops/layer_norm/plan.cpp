// The thread plan of layer norm and RMS norm, and the row loops that run it
// (DESIGN.md sections 3 and 4).

#include "ops/layer_norm/plan.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "bnorm/error.hpp"
#include "kernels/batch_norm/kernels.hpp"
#include "kernels/common/scalar.hpp"
#include "kernels/layer_norm/kernels.hpp"
#include "ops/batch_norm/common.hpp"
#include "ops/parallel.hpp"

namespace bnorm::ops::layer_norm {
namespace kl = kernels::layer_norm;
namespace kb = kernels::batch_norm;
using kernels::element_ptr;

namespace {

// Below this many elements per worker, waking another thread costs more
// than it saves.
constexpr std::int64_t kGrainElements = 32768;

// A block's data is read once from DRAM for its statistics and again for the
// elementwise pass: it must still be in the core's L1 or L2 by then.
constexpr std::size_t kBlockBytes = 32 * 1024;

}  // namespace

Problem Problem::of(const TensorDesc& desc, int normalized_dims) {
  Problem p;
  p.dtype = desc.dtype();
  p.rows = 1;
  p.len = 1;
  const int lead = desc.rank() - normalized_dims;
  for (int i = 0; i < desc.rank(); ++i) (i < lead ? p.rows : p.len) *= desc.dim(i);
  return p;
}

Problem check_rows(const TensorDesc& desc, const char* name, int normalized_dims) {
  if (desc.rank() < 1 || desc.rank() > kMaxRank) {
    throw Error(ErrorKind::invalid_argument, std::string("argument '") + name + "' has rank " +
                                                 std::to_string(desc.rank()) + ": the rank must be 1 to " +
                                                 std::to_string(kMaxRank));
  }
  if (desc.layout() != Layout::channels_first) {
    throw Error(ErrorKind::unsupported,
                std::string("argument '") + name + "' (" + desc.str() +
                    ") is channels_last: layer and RMS norm need each row (the trailing dims) contiguous, "
                    "i.e. plain C order; to normalize over the C of an N, spatial..., C buffer describe it "
                    "as channels_first with dims (N, spatial..., C)");
  }
  if (normalized_dims < 1 || normalized_dims > desc.rank()) {
    throw Error(ErrorKind::invalid_argument,
                "argument 'normalized_dims' = " + std::to_string(normalized_dims) + " for '" + name +
                    "' of rank " + std::to_string(desc.rank()) + " (dims " + desc.dims_str() +
                    "): it must be 1 to the rank");
  }
  return Problem::of(desc, normalized_dims);
}

Plan plan_for(const Problem& problem, int threads, Pass pass) {
  Plan plan;
  const std::int64_t elements = problem.elements();
  const std::int64_t by_size = std::max<std::int64_t>(1, (elements + kGrainElements - 1) / kGrainElements);
  plan.workers = static_cast<int>(
      std::clamp<std::int64_t>(std::min(by_size, problem.rows), 1, std::max(1, threads)));
  const std::size_t esize = size_of(problem.dtype);
  plan.stream = static_cast<std::size_t>(elements) * esize > batch_norm::streaming_threshold_bytes();
  const std::size_t row_bytes =
      std::max<std::size_t>(1, static_cast<std::size_t>(problem.len) * esize * (pass == Pass::backward ? 2 : 1));
  // Backward takes rows at least in pairs (its column partials are updated
  // once per pair) and folds them every kAddsPerFlush rows.
  plan.block_rows = std::clamp<std::int64_t>(static_cast<std::int64_t>(kBlockBytes / row_bytes),
                                             pass == Pass::backward ? 2 : 1,
                                             pass == Pass::backward ? kl::kAddsPerFlush : 1 << 20);
  // Rows too long to take in blocks of more than two pipeline their
  // backward. One process, alternating with the two passes, 2 threads,
  // 8192x4096: layer norm f32 0.85-0.92 the time, bf16 0.98-1.0; RMS norm
  // f32 0.95-0.98, bf16 0.96. bf16 rows of 2048 (blocks of four) measured
  // 1.03-1.07 in pipelined pairs.
  plan.pipelined = pass == Pass::backward && plan.block_rows == 2;
  return plan;
}

void forward(const Problem& p, const Plan& plan, Kind kind, const void* src, void* dst, const float* gamma,
             const float* beta, float* mean_out, float* invstd_out, double eps) {
  const int workers = plan.workers;
  const std::int64_t B = std::max<std::int64_t>(1, plan.block_rows);
  const auto uB = static_cast<std::size_t>(B);
  ScratchLayout layout;
  const std::size_t o_pivot = layout.add<float>(uB), o_center = layout.add<float>(uB),
                    o_scale = layout.add<float>(uB), o_shift = layout.add<float>(uB);
  const std::size_t o_s1 = layout.add<double>(uB), o_s2 = layout.add<double>(uB),
                    o_mean = layout.add<double>(uB), o_m2 = layout.add<double>(uB),
                    o_inv = layout.add<double>(uB);
  const std::size_t per_worker = (layout.bytes() + 63) / 64 * 64;
  std::byte* base = thread_scratch(per_worker * static_cast<std::size_t>(workers));
  const double count = static_cast<double>(p.len);
  const kl::Pivot pivot_mode = kind == Kind::layer ? kl::Pivot::sampled : kl::Pivot::zero;

  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      std::byte* mine = base + per_worker * static_cast<std::size_t>(w);
      float* pivot = scratch_at<float>(mine, o_pivot);
      float* center = scratch_at<float>(mine, o_center);
      float* scale = scratch_at<float>(mine, o_scale);
      float* shift = scratch_at<float>(mine, o_shift);
      double* s1 = scratch_at<double>(mine, o_s1);
      double* s2 = scratch_at<double>(mine, o_s2);
      double* mean = scratch_at<double>(mine, o_mean);
      double* m2 = scratch_at<double>(mine, o_m2);
      double* invstd = scratch_at<double>(mine, o_inv);
      const std::int64_t r1 = split_point(p.rows, workers, w + 1);
      for (std::int64_t b = split_point(p.rows, workers, w); b < r1; b += B) {
        const std::int64_t n = std::min(B, r1 - b);
        const void* x = element_ptr(src, p.dtype, b * p.len);
        kl::rows_shifted_sums(p.dtype, x, kl::RowBlock{n, p.len}, pivot_mode, pivot, s1, s2);
        if (kind == Kind::rms) {
          // Nothing to subtract: M2 about 0 is the sum of squares itself.
          std::fill(mean, mean + n, 0.0);
          std::copy(s2, s2 + n, m2);
        } else if (!batch_norm::stats_from_shifted_sums(n, count, pivot, s1, s2, mean, m2)) {
          // Some row's pivot was too far from its mean for the one-pass
          // sums to be exact: sum its squares about the mean (rounded to
          // f32, c) from cache, corrected exactly by L * (mean - c)^2.
          for (std::int64_t i = 0; i < n; ++i) {
            batch_norm::Stats st;
            if (batch_norm::stats_from_shifted_sums(count, pivot[i], s1[i], s2[i], &st)) continue;
            const float c = static_cast<float>(mean[i]);
            const double sq =
                kl::row_sum_sq_centered(p.dtype, element_ptr(x, p.dtype, i * p.len), p.len, c);
            const double dm = mean[i] - static_cast<double>(c);
            m2[i] = std::max(sq - count * dm * dm, 0.0);  // std::max keeps a NaN first argument
          }
        }
        // Per row: center = mean rounded to f32, scale = invstd, shift =
        // -(mean - center) * invstd; gamma and beta come after, per column.
        kb::finish_channels(n, count, mean, m2, eps, kb::ZeroVariance::infinite, nullptr, nullptr, center,
                            scale, shift, invstd);
        for (std::int64_t i = 0; i < n; ++i) {
          if (mean_out) mean_out[b + i] = static_cast<float>(mean[i]);
          if (invstd_out) invstd_out[b + i] = static_cast<float>(invstd[i]);
        }
        // While this block is normalized from cache, the next one comes in.
        kl::rows_normalize(p.dtype, x, element_ptr(dst, p.dtype, b * p.len), kl::RowBlock{n, p.len}, center,
                           scale, shift, gamma, beta, plan.stream, std::min(n, r1 - b - n));
      }
    });
    if (plan.stream) kl::stream_fence();
  });
}

void backward(const Problem& p, const Plan& plan, Kind kind, const void* src, const void* diff_dst,
              void* diff_src, const float* gamma, const float* mean, const float* invstd, float* diff_gamma,
              float* diff_beta) {
  const bool params = diff_gamma || diff_beta;
  if (!params && !diff_src) return;
  const int workers = plan.workers;
  const std::int64_t B = std::clamp<std::int64_t>(plan.block_rows, 1, kl::kAddsPerFlush);
  const auto uB = static_cast<std::size_t>(B);
  const auto uL = static_cast<std::size_t>(params ? p.len : 0);
  const bool beta_partials = diff_beta != nullptr;
  ScratchLayout layout;
  // Pipelined, the next block's centers sit after this block's.
  const std::size_t o_center = layout.add<float>(2 * uB), o_kg = layout.add<float>(uB),
                    o_kxc = layout.add<float>(uB), o_kc = layout.add<float>(uB);
  const std::size_t o_sg = layout.add<double>(uB), o_sgx = layout.add<double>(uB);
  // acc_beta[j] is loaded right after acc_gamma[j] is stored: half a page
  // apart, the load is not held up by a false store dependency (addresses
  // equal modulo 4 KiB, "4K aliasing").
  const std::size_t o_acc_g = layout.add<float>(uL);
  const std::size_t pad_at = (layout.bytes() + 63) / 64 * 64;  // where add() puts the padding
  layout.add<std::byte>((o_acc_g + 2048 + 4096 - pad_at % 4096) % 4096);
  const std::size_t o_acc_b = layout.add<float>(beta_partials ? uL : 0);
  const std::size_t o_tot_g = layout.add<double>(uL), o_tot_b = layout.add<double>(beta_partials ? uL : 0);
  const std::size_t per_worker = (layout.bytes() + 63) / 64 * 64;
  std::byte* base = thread_scratch(per_worker * static_cast<std::size_t>(workers));
  const double inv_count = 1.0 / static_cast<double>(p.len);

  run_team(workers, [&](const Team& team) {
    team.for_each_worker([&](int w) {
      std::byte* mine = base + per_worker * static_cast<std::size_t>(w);
      float* center = scratch_at<float>(mine, o_center);
      float* k_g = scratch_at<float>(mine, o_kg);
      float* k_xc = scratch_at<float>(mine, o_kxc);
      float* k_const = scratch_at<float>(mine, o_kc);
      double* sum_g = scratch_at<double>(mine, o_sg);
      double* sum_gxc = scratch_at<double>(mine, o_sgx);
      float* acc_g = params ? scratch_at<float>(mine, o_acc_g) : nullptr;
      float* acc_b = beta_partials ? scratch_at<float>(mine, o_acc_b) : nullptr;
      double* tot_g = scratch_at<double>(mine, o_tot_g);
      double* tot_b = scratch_at<double>(mine, o_tot_b);
      if (params) {
        std::fill(acc_g, acc_g + uL, 0.0f);
        std::fill(tot_g, tot_g + uL, 0.0);
        if (acc_b) {
          std::fill(acc_b, acc_b + uL, 0.0f);
          std::fill(tot_b, tot_b + uL, 0.0);
        }
      }
      // The f32 column partials take one addition per row: fold them into
      // double before they hold more than kAddsPerFlush.
      std::int64_t pending = 0;
      auto fold = [&] {
        kl::fold_partials(acc_g, tot_g, p.len);
        if (acc_b) kl::fold_partials(acc_b, tot_b, p.len);
        pending = 0;
      };
      // The centers of the n rows from row b, and their sums (dx only;
      // RMS norm has no mean to differentiate through: no sum(g) term).
      auto centers = [&](std::int64_t b, std::int64_t n, float* c) {
        for (std::int64_t i = 0; i < n; ++i) c[i] = kind == Kind::layer ? mean[b + i] : 0.0f;
      };
      auto reduce = [&](std::int64_t b, std::int64_t n, const float* c) {
        kl::rows_backward_reduce(p.dtype, element_ptr(src, p.dtype, b * p.len),
                                 element_ptr(diff_dst, p.dtype, b * p.len), kl::RowBlock{n, p.len},
                                 kind == Kind::layer ? c : nullptr, gamma, sum_g, sum_gxc);
      };
      const bool pipelined = plan.pipelined && B == 2 && diff_src;
      float* next_center = center + uB;
      const std::int64_t r0 = split_point(p.rows, workers, w), r1 = split_point(p.rows, workers, w + 1);
      if (pipelined && r0 < r1) {
        centers(r0, std::min(B, r1 - r0), center);
        reduce(r0, std::min(B, r1 - r0), center);
      }
      for (std::int64_t b = r0; b < r1; b += B) {
        const std::int64_t n = std::min(B, r1 - b);
        const std::int64_t off = b * p.len;
        const void* x = element_ptr(src, p.dtype, off);
        const void* dy = element_ptr(diff_dst, p.dtype, off);
        if (!pipelined) centers(b, n, center);
        if (diff_src) {
          if (!pipelined) reduce(b, n, center);  // pipelined: the step before took them
          // dx = invstd * g - invstd^3 * (x - c) * sum(g (x - c)) / L - invstd * sum(g) / L
          kb::backward_coefficients(n, inv_count, sum_g, sum_gxc, nullptr, invstd + b, k_g, k_xc, k_const);
        }
        if (params && pending + n > kl::kAddsPerFlush) fold();
        void* dx = diff_src ? element_ptr(diff_src, p.dtype, off) : nullptr;
        const std::int64_t after = std::min(n, r1 - b - n);  // rows of the next block
        if (!pipelined || after == 0) {
          kl::rows_backward_apply(p.dtype, x, dy, dx, kl::RowBlock{n, p.len}, center, gamma, k_g, k_xc,
                                  k_const, invstd + b, acc_g, acc_b, plan.stream, after);
        } else {
          centers(b + n, after, next_center);
          const float* nc = kind == Kind::layer ? next_center : nullptr;
          if (after != 2 ||
              !kl::rows_backward_apply_and_reduce(
                  p.dtype, x, dy, dx, p.len, center, gamma, k_g, k_xc, k_const, invstd + b, acc_g, acc_b,
                  plan.stream, std::min<std::int64_t>(2, r1 - b - 4), nc, sum_g, sum_gxc)) {
            kl::rows_backward_apply(p.dtype, x, dy, dx, kl::RowBlock{n, p.len}, center, gamma, k_g, k_xc,
                                    k_const, invstd + b, acc_g, acc_b, plan.stream, after);
            reduce(b + n, after, next_center);
          }
          std::copy(next_center, next_center + after, center);
        }
        pending += n;
      }
      if (params) fold();
    });
    if (plan.stream) kl::stream_fence();
    if (!params) return;
    team.barrier();  // every worker's column totals are in place
    // Each worker adds up a slice of the columns over all workers, into
    // worker 0's totals (in worker order, as one sum per column would), in
    // loops over contiguous columns.
    team.for_each_worker([&](int w) {
      const auto j0 = static_cast<std::size_t>(split_point(p.len, workers, w));
      const auto j1 = static_cast<std::size_t>(split_point(p.len, workers, w + 1));
      auto gather = [&](std::size_t offset, float* out) {
        double* total = scratch_at<double>(base, offset);
        for (int v = 1; v < workers; ++v) {
          const double* theirs = scratch_at<double>(base + per_worker * static_cast<std::size_t>(v), offset);
          for (std::size_t j = j0; j < j1; ++j) total[j] += theirs[j];
        }
        for (std::size_t j = j0; j < j1; ++j) out[j] = static_cast<float>(total[j]);
      };
      if (diff_gamma) gather(o_tot_g, diff_gamma);
      if (diff_beta) gather(o_tot_b, diff_beta);
    });
  });
}

}  // namespace bnorm::ops::layer_norm

// Pieces shared by the group-norm strategies: statistics of contiguous
// values, per-plane normalizers from group moments, backward coefficients,
// the running-statistics update.
#pragma once

#include <cstdint>

#include "kernels/batch_norm/kernels.hpp"
#include "ops/batch_norm/common.hpp"
#include "ops/group_norm/plan.hpp"
#include "ops/parallel.hpp"

namespace bnorm::ops::group_norm {
namespace k = kernels::batch_norm;
using batch_norm::Stats;

/// Statistics of n contiguous values: one pass of sums shifted by a pivot
/// (the mean of up to 64 values spread over them), accepted by the guard of
/// stats_from_shifted_sums, else an exact second pass about the mean (the
/// values are still in cache).
Stats contiguous_stats(DType dt, const void* x, std::int64_t n);

/// A pivot for a (sample, group) block of `planes` planes of s values: the
/// mean of the first (up to 8) values of each plane (up to 64 planes spread
/// over the block), and of no more than an eighth of a small block. Reading
/// plane starts only keeps it to a few cache lines, which the block's own
/// pass reads next anyway; one value per channel keeps channels with
/// different means represented. (Any pivot gives exact statistics: one too
/// far from the mean costs a second pass over the block.)
float block_pivot(DType dt, const void* x, std::int64_t planes, std::int64_t s);

/// Statistics of n contiguous values from their shifted sums about pivot,
/// accepted by the guard of stats_from_shifted_sums, else an exact second
/// pass about the mean (from cache).
Stats stats_from_sums(DType dt, const void* x, std::int64_t n, float pivot, const double sums[2]);

/// Normalizers of `count` consecutive planes starting at plane index first
/// (= sample * C + channel, channels-first order; for rows, the C channels
/// of one sample). mean_rep / m2_rep hold, for each plane, the moments of
/// its group (group_count() values). invstd_rep receives 1/sqrt(var + eps)
/// per plane.
void finish_planes(const Problem& p, std::int64_t first, std::int64_t count, const double* mean_rep,
                   const double* m2_rep, const ForwardArgs& a, float* center, float* scale, float* shift,
                   double* invstd_rep);

/// Backward of one (sample, group) block from its per-channel sums ds[j] =
/// sum(dy) and db[j] = sum(dy * (x - mean)) (j < C/G): the per-plane
/// coefficients of dx = k_dy * dy + k_xc * (x - center) + k_const (C/G
/// entries each), and the block's terms added to the per-channel parameter
/// gradients acc_dgamma / acc_dbeta (C entries, may be null).
void block_coefficients(const Problem& p, std::int64_t n, std::int64_t g, const double* ds, const double* db,
                        const BackwardArgs& a, float* center, float* k_dy, float* k_xc, float* k_const,
                        double* acc_dgamma, double* acc_dbeta);

/// Running statistics of the groups from the N x G moments of a batch
/// (at::instance_norm's rule, see GroupRunning), the groups split between
/// the team's workers. Starts with a barrier: every worker's moments must be
/// in place.
void update_running(const Team& team, const Problem& p, const double* mean, const double* m2,
                    const GroupRunning& running);

/// Merges the partial gradient sums of `workers` workers (each C doubles of
/// dgamma then C of dbeta, `stride` doubles apart) for channels [c0, c1)
/// into the outputs.
void merge_parameter_grads(std::int64_t c0, std::int64_t c1, int workers, const double* partials,
                           std::int64_t stride, std::int64_t channels, float* diff_gamma, float* diff_beta);

}  // namespace bnorm::ops::group_norm

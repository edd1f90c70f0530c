// Optimized layer-norm building blocks (Highway, dispatched at run time).
//
// Work comes in blocks of whole rows: `rows` contiguous rows of `len`
// elements, each normalized on its own. Single-threaded pieces;
// src/ops/layer_norm/ splits the rows over threads, decides whether a
// row's one-pass statistics are exact (the guard of
// ops/batch_norm/common.hpp) and finishes the per-row normalizers. RMS norm
// uses the same blocks with every center at 0 (kernels/rms_norm/kernels.hpp).
// Pointers are raw, sizes in elements; nothing here allocates or throws.
// Sums follow DESIGN.md section 3: f32 lanes of at most kAddsPerFlush
// additions, folded into double.
#pragma once

#include <cstdint>

#include "bnorm/tensor.hpp"

namespace bnorm::kernels::layer_norm {

/// f32 partial sums (per lane, and the per-column parameter-gradient
/// partials of rows_backward_apply) take at most this many additions before
/// they are folded into double.
inline constexpr std::int64_t kAddsPerFlush = 32;

/// `rows` contiguous rows of `len` elements each.
struct RowBlock {
  std::int64_t rows = 0;
  std::int64_t len = 0;
};

/// Where the shifted sums of a row are taken from.
enum class Pivot : std::uint8_t {
  /// A value near the row's mean: the mean of its first 64 values (of 64
  /// values spread over the row when it is longer than 16 Ki elements),
  /// or 0 when that is not finite. Layer norm.
  sampled,
  /// 0: s2 is then the plain sum of squares. RMS norm.
  zero,
};

/// For each row r: pivot[r] as chosen, s1[r] = sum(x - pivot[r]) and
/// s2[r] = sum((x - pivot[r])^2), in one pass. With Pivot::zero (RMS norm)
/// only s2 is summed: s1[r] = 0.
void rows_shifted_sums(DType dtype, const void* x, RowBlock block, Pivot mode, float* pivot, double* s1,
                       double* s2);

/// Sum of (x - center)^2 over one row of len elements: the exact second
/// pass when a pivot was too far from the mean.
double row_sum_sq_centered(DType dtype, const void* x, std::int64_t len, float center);

/// y = ((x - center[r]) * scale[r] + shift[r]) * gamma[j] + beta[j] for
/// row r and position j; gamma / beta may be null (1 / 0). y may be x.
/// stream: non-temporal stores (call stream_fence after the phase).
/// prefetch_rows: how many rows after the block are the caller's next data;
/// row r of the block fetches row block.rows + r of x into cache as it goes
/// (when r < prefetch_rows), so that DRAM reads the next block while this
/// elementwise pass, which reads only cache, writes.
void rows_normalize(DType dtype, const void* x, void* y, RowBlock block, const float* center,
                    const float* scale, const float* shift, const float* gamma, const float* beta, bool stream,
                    std::int64_t prefetch_rows = 0);

/// Backward sums of each row, with g = dy * gamma[j] (gamma null: 1):
/// sum_g[r] = sum(g), sum_gxc[r] = sum(g * (x - center[r])). center null
/// (RMS norm, nothing subtracted): sum_gxc[r] = sum(g * x) and sum_g[r] = 0
/// without the additions. Each sum takes the row's vectors in order into
/// one f32 accumulator, folded into double every kAddsPerFlush vectors, as
/// rows_backward_apply_and_reduce does: the two give the same bits.
void rows_backward_reduce(DType dtype, const void* x, const void* dy, RowBlock block, const float* center,
                          const float* gamma, double* sum_g, double* sum_gxc);

/// The elementwise backward of each row. When dx is not null:
///   dx = k_g[r] * (dy * gamma[j]) + k_xc[r] * (x - center[r]) + k_const[r];
/// when acc_gamma is not null, the f32 column partials
///   acc_gamma[j] += dy * ((x - center[r]) * invstd[r]), and when acc_beta
///   is also not null, acc_beta[j] += dy
/// (at most kAddsPerFlush rows per call between folds: the caller's job).
/// acc_beta needs acc_gamma. dx may alias x or dy. prefetch_rows: as for
/// rows_normalize, of x and dy.
void rows_backward_apply(DType dtype, const void* x, const void* dy, void* dx, RowBlock block,
                         const float* center, const float* gamma, const float* k_g, const float* k_xc,
                         const float* k_const, const float* invstd, float* acc_gamma, float* acc_beta,
                         bool stream, std::int64_t prefetch_rows = 0);

/// Backward of a pair of rows pipelined with the next pair's sums: does what
///   rows_backward_apply(x, dy, dx, {2, len}, center, ..., stream, 0) and
///   rows_backward_reduce(x + 2 len, dy + 2 len, {2, len}, next_center,
///                        gamma, next_sum_g, next_sum_gxc)
/// do, with the same bits, in one walk over the columns, so that the next
/// pair's reads from DRAM overlap this pair's dx writes (the second read of
/// this pair comes from cache). next_center null: RMS norm. prefetch_rows (0
/// to 2): how many rows of the pair after the next to fetch into cache as it
/// goes. dx must not be null and may alias x or dy. Returns false, having
/// written nothing, when `stream` is set and dx is not on a cache line (the
/// streamed walk would begin with a partial vector, out of the sums' order)
/// or the rows are not a whole number of cache lines (the second row's dx
/// would not start one).
bool rows_backward_apply_and_reduce(DType dtype, const void* x, const void* dy, void* dx, std::int64_t len,
                                    const float* center, const float* gamma, const float* k_g,
                                    const float* k_xc, const float* k_const, const float* invstd,
                                    float* acc_gamma, float* acc_beta, bool stream,
                                    std::int64_t prefetch_rows, const float* next_center, double* next_sum_g,
                                    double* next_sum_gxc);

/// total[j] += acc[j] (in double) and acc[j] = 0 for j < len: folds the
/// column partials of rows_backward_apply.
void fold_partials(float* acc, double* total, std::int64_t len);

/// Orders the non-temporal stores issued so far before later accesses.
void stream_fence();

}  // namespace bnorm::kernels::layer_norm

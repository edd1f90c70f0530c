// Optimized batch-norm building blocks (Highway, dispatched at run time).
//
// These are single-threaded pieces; src/ops/batch_norm/ plans the thread
// split and calls them. Pointers are raw, sizes are in elements, nothing here
// allocates or throws. Statistics arithmetic follows DESIGN.md section 3:
// f32 partial sums of bounded length folded into double, of values shifted
// by a pivot near the data; the caller decides whether a second pass about
// the mean is needed.
#pragma once

#include <cstdint>

#include "bnorm/tensor.hpp"

namespace bnorm::kernels::batch_norm {

// ---- fused activation ----

/// What the normalize kernels do after normalizing: y = act(normalized +
/// residual), BN+ReLU and BN+Add+ReLU fused into the same pass.
struct Epilogue {
  /// Added before the activation; same dtype and layout as x, at the same
  /// element offsets. Null: no residual.
  const void* residual = nullptr;
  /// max(v, 0) (NaN stays NaN).
  bool relu = false;
  /// With relu, optional: receives the ReLU's mask, one bit per element,
  /// element i's at bit mask_first + i, set where y > 0 (the layout of
  /// batch_norm_relu_mask_bytes).
  std::uint8_t* mask = nullptr;
  std::int64_t mask_first = 0;
  /// The same epilogue `offset` elements further into the tensor.
  Epilogue at(DType dtype, std::int64_t offset) const noexcept {
    return {residual ? static_cast<const char*>(residual) + offset * static_cast<std::int64_t>(size_of(dtype))
                     : nullptr,
            relu, mask, mask_first + offset};
  }
};

/// Where the ReLU's one-bit mask of element i lies: bit (i % 8) of byte
/// i / 8, counting i from the mask's first element. Bytes at either end of
/// a kernel's run may hold other runs' bits (other threads'): the kernels
/// change only their own bits there.
constexpr std::int64_t mask_byte(std::int64_t i) noexcept { return i >> 3; }
constexpr unsigned mask_shift(std::int64_t i) noexcept { return static_cast<unsigned>(i & 7); }

/// The ReLU of a fused forward, seen by the backward kernels: dy counts only
/// where the forward output y is > 0 (y > 0 exactly where the ReLU's input
/// was), told by the output itself or by the mask the forward kept.
struct Gate {
  /// The forward output, at the same element offsets as x. Null: no gate
  /// from the output.
  const void* y = nullptr;
  /// Receives the gated dy (the residual's gradient; dy itself without a
  /// gate); the apply kernels and rows_backward_reduce write it. Null: not
  /// wanted.
  void* dz = nullptr;
  /// Instead of y: the forward's one-bit mask (Epilogue::mask), element i's
  /// bit at mask_first + i.
  const std::uint8_t* mask = nullptr;
  std::int64_t mask_first = 0;
  /// Whether dy is gated at all.
  bool gates() const noexcept { return y != nullptr || mask != nullptr; }
  /// The same gate `offset` elements further into the tensor.
  Gate at(DType dtype, std::int64_t offset) const noexcept {
    const std::int64_t bytes = offset * static_cast<std::int64_t>(size_of(dtype));
    return {y ? static_cast<const char*>(y) + bytes : nullptr, dz ? static_cast<char*>(dz) + bytes : nullptr,
            mask, mask_first + offset};
  }
};

// ---- channels-first: one channel as strided runs ----

/// `count` runs of `len` contiguous elements, run i starting `i * stride`
/// elements after the first (one channel of an N, C, S tensor).
struct Runs {
  std::int64_t count = 0;
  std::int64_t len = 0;
  std::int64_t stride = 0;
};

/// out = {sum of d, sum of d^2} with d = x - pivot, in one pass.
void shifted_sums(DType dtype, const void* x, Runs runs, float pivot, double out[2]);
/// mean[b] and m2[b] (sum of squared deviations) of `blocks` consecutive
/// blocks of len >= 1 values each, in two exact passes over each block (for
/// blocks that stay in cache between them).
void block_moments(DType dtype, const void* x, std::int64_t blocks, std::int64_t len, double* mean,
                   double* m2);
/// Sum of (x - center)^2 over the runs (the exact second pass).
double sum_sq_centered(DType dtype, const void* x, Runs runs, float center);
/// y = (x - center) * scale + shift over the runs (y has x's strides).
void normalize(DType dtype, const void* x, void* y, Runs runs, float center, float scale, float shift,
               bool stream, const Epilogue& post = {});
/// sums[0] += sum(dy), sums[1] += sum(dy * (x - center)).
/// With a gate, dy is taken as 0 where y <= 0.
void backward_reduce(DType dtype, const void* x, const void* dy, Runs runs, float center, double sums[2],
                     const Gate& gate = {});
/// dx = k_dy * dy + k_xc * (x - center) + k_const over the runs.
/// With a gate, dy is taken as 0 where y <= 0, and the gated dy goes to dz.
void backward_apply(DType dtype, const void* x, const void* dy, void* dx, Runs runs, float center, float k_dy,
                    float k_xc, float k_const, bool stream, const Gate& gate = {});

// ---- channels-first: consecutive planes in memory order ----

/// Whether the tiny_plane_* kernels take planes of plane_len values on this
/// CPU's instruction set (a power of two up to its vector length): several
/// planes per vector instead of a walk and a horizontal sum each.
bool tiny_planes_handled(std::int64_t plane_len);
/// For each of `planes` consecutive planes q (tiny_planes_handled): sums[2q]
/// = sum(dy), sums[2q + 1] = sum(dy * (x - center[q])), summed in f32.
void tiny_plane_grad_sums(DType dtype, const void* x, const void* dy, std::int64_t planes,
                          std::int64_t plane_len, const float* center, double* sums);
/// dx = k_dy[q] * dy + k_xc[q] * (x - center[q]) + k_const[q] over each
/// plane q (backward_apply's arithmetic), with plain stores.
void tiny_plane_apply(DType dtype, const void* x, const void* dy, void* dx, std::int64_t planes,
                      std::int64_t plane_len, const float* center, const float* k_dy, const float* k_xc,
                      const float* k_const);

/// `planes` consecutive planes of plane_len elements, plane i using
/// parameter index (first + i) % period: y = (x - center[k]) * scale[k] +
/// shift[k], walked as one contiguous (streamable) pass.
void normalize_planes(DType dtype, const void* x, void* y, std::int64_t planes, std::int64_t plane_len,
                      std::int64_t first, std::int64_t period, const float* center, const float* scale,
                      const float* shift, bool stream, const Epilogue& post = {});
/// The sums of backward over the same walk: for plane i, of channel k =
/// (first + i) % period, sums[2k] += sum(g) and sums[2k + 1] += sum(g * (x
/// - center[k])), g = dy, or with a gate dy where y > 0 and 0 elsewhere.
/// Each plane is summed in vectors from its start.
void planes_backward_reduce(DType dtype, const void* x, const void* dy, std::int64_t planes,
                            std::int64_t plane_len, std::int64_t first, std::int64_t period,
                            const float* center, double* sums, const Gate& gate = {});
/// The same walk for backward: dx = k_dy[k] * dy + k_xc[k] * (x - center[k])
/// + k_const[k].
void apply_planes(DType dtype, const void* x, const void* dy, void* dx, std::int64_t planes,
                  std::int64_t plane_len, std::int64_t first, std::int64_t period, const float* center,
                  const float* k_dy, const float* k_xc, const float* k_const, bool stream, const Gate& gate = {});

// ---- channels-last: blocks of whole rows ----

/// Per-channel parameters of channels-last kernels come as cyclic arrays:
/// entry j holds the value of channel j % C for j < cyclic_length(C). The
/// period (a multiple of C, >= kCyclicPad) lets a vector start at any channel
/// and lets small C use full vectors.
inline constexpr std::int64_t kCyclicPad = 64;
inline constexpr std::int64_t cyclic_period(std::int64_t channels) noexcept {
  return channels * ((kCyclicPad + channels - 1) / channels);
}
inline constexpr std::int64_t cyclic_length(std::int64_t channels) noexcept {
  return cyclic_period(channels) + kCyclicPad;
}

/// A block of rows: `elements` = rows * channels, contiguous.
struct Rows {
  std::int64_t elements = 0;
  std::int64_t channels = 0;
};

/// sum[c] += sum of d, sum_sq[c] += sum of d^2 over the rows, d = x -
/// pivot[c]. scratch: 2 * cyclic_length(C) floats.
void rows_shifted_sums(DType dtype, const void* x, Rows rows, const float* pivot_cyclic, float* scratch,
                       double* sum, double* sum_sq);
/// acc[c] += sum over rows of (x - center[c])^2. scratch: cyclic_length(C) floats.
void rows_sum_sq_centered(DType dtype, const void* x, Rows rows, const float* center_cyclic, float* scratch,
                          double* acc);
/// y = (x - center[c]) * scale[c] + shift[c].
void rows_normalize(DType dtype, const void* x, void* y, Rows rows, const float* center_cyclic,
                    const float* scale_cyclic, const float* shift_cyclic, bool stream, const Epilogue& post = {});
/// sum_dy[c] += sum(dy), sum_dy_xc[c] += sum(dy * (x - center[c])), dy
/// gated by gate.y when given; with gate.dz the gated dy is also stored
/// there. scratch: 2 * cyclic_length(C) floats. stream: gate.dz takes
/// non-temporal stores where they write whole cache lines (gate.dz 64-byte
/// aligned, rows a whole number of lines; call stream_fence after), so that
/// storing it does not first read it from memory.
void rows_backward_reduce(DType dtype, const void* x, const void* dy, Rows rows, const float* center_cyclic,
                          float* scratch, double* sum_dy, double* sum_dy_xc, const Gate& gate = {},
                          bool stream = false);
/// dx = k_dy[c] * dy + k_xc[c] * (x - center[c]) + k_const[c].
void rows_backward_apply(DType dtype, const void* x, const void* dy, void* dx, Rows rows,
                         const float* center_cyclic, const float* k_dy_cyclic, const float* k_xc_cyclic,
                         const float* k_const_cyclic, bool stream, const Gate& gate = {});

/// Pipelined rows (group and instance norm's channels-last samples):
/// rows_normalize of x into y walked in one loop with rows_shifted_sums of
/// `next`, a block of the same shape (sum / sum_sq as there, pivot_cyclic
/// next's pivots), so that next streams in from DRAM while y streams out.
/// Returns false, having done nothing, when this target cannot walk the rows
/// that way (C not a multiple of its vector length, or rows longer than
/// 1 KiB): call the two kernels then. stream as for rows_normalize, where
/// the walk stores whole cache lines (call stream_fence after).
bool rows_normalize_and_sum(DType dtype, const void* x, void* y, Rows rows, const float* center_cyclic,
                            const float* scale_cyclic, const float* shift_cyclic, bool stream,
                            const void* next, const float* pivot_cyclic, double* sum, double* sum_sq);

/// Backward's pipelined rows: rows_backward_apply (no gate) of x, dy into
/// dx walked in one loop, in memory order, with rows_backward_reduce of the
/// next block of the same shape (next_x, next_dy about next_center_cyclic;
/// scratch and sums as there). stream as for rows_backward_apply (call
/// stream_fence after). dx may be x or dy.
void rows_apply_and_reduce(DType dtype, const void* x, const void* dy, void* dx, Rows rows,
                           const float* center_cyclic, const float* k_dy_cyclic, const float* k_xc_cyclic,
                           const float* k_const_cyclic, bool stream, const void* next_x, const void* next_dy,
                           const float* next_center_cyclic, float* scratch, double* sum_dy,
                           double* sum_dy_xc);

// ---- per channel ----

/// What finish_channels makes of a channel whose m2 and eps are both 0.
enum class ZeroVariance {
  /// invstd = 1/sqrt(0) = inf: layer and group norm, inference (ATen's too).
  infinite,
  /// invstd = 0, so scale = 0 and the output is beta: ATen's batch
  /// statistics (batch and instance norm training, at::native_batch_norm).
  zero,
};

/// Per-channel normalizers from statistics, for n channels with `count`
/// values each: invstd = 1/sqrt(m2/count + eps) (see ZeroVariance for m2 =
/// eps = 0), center = mean rounded to f32, scale = gamma * invstd, shift =
/// beta - (mean - center) * scale (the rounding residue of the mean folded
/// into the shift, so that x - center stays exact). gamma / beta may be
/// null (1 / 0). Arrays hold n entries.
void finish_channels(std::int64_t n, double count, const double* mean, const double* m2, double eps,
                     ZeroVariance zero_variance, const float* gamma, const float* beta, float* center,
                     float* scale, float* shift, double* invstd);

/// Backward coefficients of n channels, dx = k_dy*dy + k_xc*(x - mean) +
/// k_const: k_dy = gamma*invstd, k_xc = -gamma*invstd^3*sum_dy_xc*inv_count,
/// k_const = -gamma*invstd*sum_dy*inv_count (inv_count 0 for constant
/// statistics: k_xc and k_const are then exactly 0, whatever the sums hold,
/// so that one non-finite value does not reach the channel's every dx
/// through NaN * 0). gamma may be null (1).
void backward_coefficients(std::int64_t n, double inv_count, const double* sum_dy, const double* sum_dy_xc,
                           const float* gamma, const float* invstd, float* k_dy, float* k_xc, float* k_const);

/// Orders the non-temporal stores issued so far before later loads and
/// stores (call once after the streaming calls of a phase).
void stream_fence();

}  // namespace bnorm::kernels::batch_norm

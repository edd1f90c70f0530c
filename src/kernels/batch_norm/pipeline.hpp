// Pipelined channels-first building blocks (Highway, dispatched at run
// time): walk two blocks of planes in one loop, the elementwise pass of one
// block together with the reduction of the next. The block itself was read
// by its own reduction just before and comes from cache; the next one
// streams from DRAM while this one's output streams out, so the reads and
// the writes overlap as in a plain y = a*x + b pass instead of taking turns.
// Group norm's (sample, group) blocks and batch norm's channel blocks (one
// sample's planes at a time) use them. Single-threaded, raw pointers, sizes
// in elements; nothing allocates or throws. Sums follow DESIGN.md section 3:
// f32 lanes of bounded length folded into double.
#pragma once

#include <cstdint>

#include "bnorm/tensor.hpp"
#include "kernels/batch_norm/kernels.hpp"

namespace bnorm::kernels::batch_norm {

/// y = (x - center[q]) * scale[q] + shift[q] over `planes` consecutive
/// planes of plane_len elements (plane q with parameter index q), and, when
/// next is not null, for each plane q of the next block (same plane count
/// and length): sums[2q] = sum of d and sums[2q + 1] = sum of d^2, d = next
/// - pivots[q]. Batch norm's epilogue (post, optional: residual add, ReLU,
/// mask bits) as normalize_planes'. y may be x.
///
/// The walk over next prefetches ahead of itself within the next block, or
/// within next_extent elements from next when that is larger: the caller
/// reads on past the block in memory order (group norm's consecutive
/// blocks), and the start of the block after it would otherwise come from
/// DRAM on demand.
void normalize_and_sum(DType dtype, const void* x, void* y, std::int64_t planes, std::int64_t plane_len,
                       const float* center, const float* scale, const float* shift, bool stream,
                       const void* next, const float* pivots, double* sums, const Epilogue& post = {},
                       std::int64_t next_extent = 0);

/// dx = k_dy[q] * g + k_xc[q] * (x - center[q]) + k_const[q] over `planes`
/// consecutive planes, g = dy, or with a gate (a fused ReLU's, optional:
/// its forward output or mask) dy where the output was > 0 and 0 elsewhere,
/// stored to gate.dz when that is given; and, when next_x is not null, for
/// each plane q of the next block (same plane count and length, gated by
/// next_gate likewise, a gate of the same kind; its dz is not used):
/// sums[2q] = sum(g) and sums[2q + 1] = sum(g * (next_x - next_centers[q])).
/// dx may be x or dy. next_extent: as for normalize_and_sum, for each next
/// stream.
void apply_and_reduce(DType dtype, const void* x, const void* dy, void* dx, std::int64_t planes,
                      std::int64_t plane_len, const float* center, const float* k_dy, const float* k_xc,
                      const float* k_const, bool stream, const void* next_x, const void* next_dy,
                      const float* next_centers, double* sums, const Gate& gate = {},
                      const Gate& next_gate = {}, std::int64_t next_extent = 0);

}  // namespace bnorm::kernels::batch_norm

// Internal interface of the layer-norm and RMS-norm ops: the row problem,
// how it is split across threads, and entry points that run a given plan
// so tests can force every code path on small shapes.
#pragma once

#include <cstdint>

#include "bnorm/tensor.hpp"

namespace bnorm::ops::layer_norm {

/// Which normalization: layer norm subtracts the row mean and divides by
/// the standard deviation; RMS norm divides by the root mean square.
enum class Kind : std::uint8_t { layer, rms };

/// `rows` packed rows of `len` elements.
struct Problem {
  DType dtype = DType::f32;
  std::int64_t rows = 0;
  std::int64_t len = 0;

  /// The rows of desc whose last normalized_dims dims make one row.
  static Problem of(const TensorDesc& desc, int normalized_dims);
  std::int64_t elements() const noexcept { return rows * len; }
};

/// Throws bnorm::Error unless desc (the argument `name`) has rank 1 to 5,
/// plain C order (channels_last is refused: a row must be contiguous) and
/// 1 <= normalized_dims <= rank. Returns its rows.
Problem check_rows(const TensorDesc& desc, const char* name, int normalized_dims);

/// Every worker owns a contiguous range of rows (split_point) for every
/// phase and walks it in blocks: a block's statistics (or backward sums)
/// from one pass over DRAM, then its elementwise pass from cache (or,
/// pipelined backward, its elementwise pass beside the next block's sums).
struct Plan {
  int workers = 1;
  /// Rows per block. Backward with parameter gradients folds its f32 column
  /// partials into double at most every kAddsPerFlush rows, whatever this is.
  std::int64_t block_rows = 1;
  /// Non-temporal stores for the output.
  bool stream = false;
  /// Backward in blocks of 2 rows: each block's elementwise pass walks in one
  /// loop with the next block's sums (rows_backward_apply_and_reduce), so
  /// that the next block's reads overlap this one's dx writes instead of
  /// taking turns with them. Ignored in forward, without dx, and for other
  /// block sizes.
  bool pipelined = false;
};

/// Which function a plan is for (backward keeps twice the data in cache).
enum class Pass { forward, backward };

/// The plan the public functions use for this problem on `threads` threads.
Plan plan_for(const Problem& problem, int threads, Pass pass);

/// Forward with an explicit plan; arguments already validated, rows and len
/// > 0. Layer: center = mean. RMS: center 0, mean ignored (may be null),
/// invstd receives 1/rms. gamma, beta, mean, invstd may be null.
void forward(const Problem& problem, const Plan& plan, Kind kind, const void* src, void* dst, const float* gamma,
             const float* beta, float* mean, float* invstd, double eps);

/// Backward with an explicit plan; arguments already validated, rows and
/// len > 0. Layer: mean and invstd required. RMS: mean ignored, invstd =
/// 1/rms, diff_beta must be null. diff_src, diff_gamma, diff_beta optional.
void backward(const Problem& problem, const Plan& plan, Kind kind, const void* src, const void* diff_dst,
              void* diff_src, const float* gamma, const float* mean, const float* invstd, float* diff_gamma,
              float* diff_beta);

}  // namespace bnorm::ops::layer_norm

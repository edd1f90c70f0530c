// Reference batch norm: plain loops, double accumulation, results in double.
// The oracle the optimized kernels and the ops are tested against.
#pragma once

#include <cstdint>

#include "bnorm/tensor.hpp"

namespace bnorm::kernels::batch_norm::ref {

/// A packed (N, C, S) tensor in either layout.
struct Shape {
  DType dtype = DType::f32;
  Layout layout = Layout::channels_first;
  std::int64_t n = 0;  ///< batch
  std::int64_t c = 0;  ///< channels
  std::int64_t s = 0;  ///< product of spatial dims

  std::int64_t index(std::int64_t in, std::int64_t ic, std::int64_t is) const noexcept {
    return layout == Layout::channels_first ? (in * c + ic) * s + is : (in * s + is) * c + ic;
  }
  std::int64_t elements() const noexcept { return n * c * s; }
};

/// Batch mean and biased variance per channel (two passes in double).
void batch_stats(const Shape& shape, const void* src, double* mean, double* var);

/// dst[i] = (src - mean) / sqrt(var + eps) * gamma + beta, all in double.
/// gamma / beta may be null (1 / 0). dst holds shape.elements() doubles.
void normalize(const Shape& shape, const void* src, const double* mean, const double* var, double eps,
               const float* gamma, const float* beta, double* dst);

/// Backward in double. mean / invstd are what the forward normalized with;
/// batch_stats selects the training formula (gradient through the
/// statistics) over the fixed-statistics one. Outputs may be null.
void backward(const Shape& shape, const void* src, const void* diff_dst, const float* gamma,
              const float* mean, const float* invstd, bool batch_stats, double* diff_src, double* diff_gamma,
              double* diff_beta);

}  // namespace bnorm::kernels::batch_norm::ref

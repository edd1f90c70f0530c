// Reference layer norm: plain loops, double accumulation, results in double.
// The oracle the optimized kernels and the ops are tested against.
#pragma once

#include <cstdint>

#include "bnorm/tensor.hpp"

namespace bnorm::kernels::layer_norm::ref {

/// `rows` packed rows of `len` elements of dtype.
struct Shape {
  DType dtype = DType::f32;
  std::int64_t rows = 0;
  std::int64_t len = 0;

  std::int64_t elements() const noexcept { return rows * len; }
};

/// Mean and biased variance of each row (two passes in double).
void row_stats(const Shape& shape, const void* src, double* mean, double* var);

/// dst = (src - mean[r]) / sqrt(var[r] + eps) * gamma[j] + beta[j] in
/// double; gamma / beta may be null (1 / 0). dst holds shape.elements().
void normalize(const Shape& shape, const void* src, const double* mean, const double* var, double eps,
               const float* gamma, const float* beta, double* dst);

/// Backward in double with the given per-row mean and invstd (as a forward
/// saved them): ATen's native_layer_norm_backward. Outputs may be null.
void backward(const Shape& shape, const void* src, const void* diff_dst, const float* gamma, const float* mean,
              const float* invstd, double* diff_src, double* diff_gamma, double* diff_beta);

}  // namespace bnorm::kernels::layer_norm::ref

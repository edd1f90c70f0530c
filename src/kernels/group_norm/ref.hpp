// Reference group norm: plain loops, double accumulation, results in double.
// The oracle the ops are tested against (InstanceNorm is the case G = C).
#pragma once

#include <cstdint>

#include "bnorm/tensor.hpp"

namespace bnorm::kernels::group_norm::ref {

/// A packed (N, C, S) tensor in either layout whose C channels form G groups
/// of C / G consecutive channels.
struct Shape {
  DType dtype = DType::f32;
  Layout layout = Layout::channels_first;
  std::int64_t n = 0;  ///< batch
  std::int64_t c = 0;  ///< channels
  std::int64_t s = 0;  ///< product of spatial dims
  std::int64_t g = 1;  ///< groups (divides c)

  std::int64_t index(std::int64_t in, std::int64_t ic, std::int64_t is) const noexcept {
    return layout == Layout::channels_first ? (in * c + ic) * s + is : (in * s + is) * c + ic;
  }
  std::int64_t elements() const noexcept { return n * c * s; }
  std::int64_t group_channels() const noexcept { return c / g; }
};

/// Mean and biased variance of each (sample, group), N x G values each (two
/// passes in double).
void group_stats(const Shape& shape, const void* src, double* mean, double* var);

/// dst = (src - mean_ng) / sqrt(var_ng + eps) * gamma_c + beta_c in double.
/// gamma / beta may be null (1 / 0). dst holds shape.elements() doubles.
void normalize(const Shape& shape, const void* src, const double* mean, const double* var, double eps,
               const float* gamma, const float* beta, double* dst);

/// Backward in double with the gradient through the group statistics
/// (native_group_norm_backward). mean / invstd (N x G) are what the forward
/// normalized with. Outputs may be null.
void backward(const Shape& shape, const void* src, const void* diff_dst, const float* gamma,
              const float* mean, const float* invstd, double* diff_src, double* diff_gamma, double* diff_beta);

}  // namespace bnorm::kernels::group_norm::ref

// Reference RMS norm: plain loops, double accumulation, results in double.
// Rows as in kernels/layer_norm/ref.hpp.
#pragma once

#include "kernels/layer_norm/ref.hpp"

namespace bnorm::kernels::rms_norm::ref {

using layer_norm::ref::Shape;

/// mean(x^2) of each row, in double.
void row_mean_squares(const Shape& shape, const void* src, double* mean_sq);

/// dst = src / sqrt(mean_sq[r] + eps) * gamma[j] in double (gamma null: 1).
void normalize(const Shape& shape, const void* src, const double* mean_sq, double eps, const float* gamma,
               double* dst);

/// Backward in double with the given per-row invrms = 1/sqrt(mean_sq + eps)
/// (as a forward saved it). Outputs may be null.
void backward(const Shape& shape, const void* src, const void* diff_dst, const float* gamma,
              const float* invrms, double* diff_src, double* diff_gamma);

}  // namespace bnorm::kernels::rms_norm::ref

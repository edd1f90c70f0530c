// Reference instance norm: group norm with one channel per group (see
// kernels/group_norm/ref.hpp), plus the running-statistics rule of
// at::instance_norm, all in double.
#pragma once

#include <cstdint>

#include "kernels/group_norm/ref.hpp"

namespace bnorm::kernels::instance_norm::ref {

/// The group-norm shape of an instance norm: G = C.
inline group_norm::ref::Shape shape(DType dtype, Layout layout, std::int64_t n, std::int64_t c,
                                    std::int64_t s) noexcept {
  return {dtype, layout, n, c, s, c};
}

/// Mean and biased variance of each instance (N x C values).
void instance_stats(const group_norm::ref::Shape& shape, const void* src, double* mean, double* var);

/// Running statistics after one step: each sample's copy is updated with
/// its own instance statistics (the unbiased variance, var * S / (S - 1)),
/// and the copies are averaged over the batch. mean / var: N x C biased
/// statistics; running_mean / running_var: C values, updated in place.
void update_running(const group_norm::ref::Shape& shape, const double* mean, const double* var,
                    double momentum, double* running_mean, double* running_var);

}  // namespace bnorm::kernels::instance_norm::ref

#include "kernels/instance_norm/ref.hpp"

namespace bnorm::kernels::instance_norm::ref {

void instance_stats(const group_norm::ref::Shape& shape, const void* src, double* mean, double* var) {
  group_norm::ref::group_stats(shape, src, mean, var);
}

void update_running(const group_norm::ref::Shape& shape, const double* mean, const double* var,
                    double momentum, double* running_mean, double* running_var) {
  const double unbias = static_cast<double>(shape.s) / static_cast<double>(shape.s - 1);
  for (std::int64_t c = 0; c < shape.c; ++c) {
    double new_mean = 0.0, new_var = 0.0;
    for (std::int64_t n = 0; n < shape.n; ++n) {
      new_mean += (1.0 - momentum) * running_mean[c] + momentum * mean[n * shape.c + c];
      new_var += (1.0 - momentum) * running_var[c] + momentum * var[n * shape.c + c] * unbias;
    }
    running_mean[c] = new_mean / static_cast<double>(shape.n);
    running_var[c] = new_var / static_cast<double>(shape.n);
  }
}

}  // namespace bnorm::kernels::instance_norm::ref

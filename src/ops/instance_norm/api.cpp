// The public instance-norm functions: validation, then group norm's plans
// with one channel per group (G = C), or batch norm's inference and
// fixed-statistics backward.

#include <algorithm>
#include <limits>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/group_norm.hpp"
#include "bnorm/instance_norm.hpp"
#include "bnorm/runtime.hpp"
#include "ops/group_norm/plan.hpp"
#include "ops/validate.hpp"

namespace bnorm {
namespace ogn = ops::group_norm;

namespace {

// zero_variance: PyTorch's form gives a constant instance with eps = 0
// invstd 0 (output beta) as at::instance_norm does; ONNX's formula, inf.
void forward_checked(const TensorDesc& src_desc, const void* src, void* dst, const float* gamma,
                     const float* beta, float* save_mean, float* save_invstd,
                     const ogn::GroupRunning* running, double eps,
                     kernels::batch_norm::ZeroVariance zero_variance, const char* src_name = "src",
                     const char* dst_name = "dst") {
  const ogn::Problem p = ogn::Problem::of(src_desc, src_desc.channels());
  if (p.elements() == 0) {
    // No values per instance (S = 0): group norm's (ATen's) mean 0 and
    // invstd NaN; an empty batch leaves the running statistics alone.
    if (save_mean) std::fill_n(save_mean, p.n * p.c, 0.0f);
    if (save_invstd) std::fill_n(save_invstd, p.n * p.c, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  ops::require_pointer(src, src_name, "the input data is required");
  ops::require_pointer(dst, dst_name, "the output buffer is required");
  ogn::forward(p, ogn::plan_for(p, num_threads(), ogn::Pass::forward), src, dst, gamma, beta, save_mean,
               save_invstd, eps, running, zero_variance);
}

}  // namespace

void instance_norm_forward_training(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                    void* dst, const float* gamma, const float* beta, float* save_mean,
                                    float* save_invstd, float* running_mean, float* running_var,
                                    const InstanceNormConfig& config) {
  ops::require_activation(src_desc, "src_desc", 3, kMaxRank);
  ops::require_same(src_desc, "src_desc", dst_desc, "dst_desc");
  ops::require_eps(config.eps, "config.eps");
  ops::require_momentum(config.momentum, "config.momentum");
  if ((running_mean == nullptr) != (running_var == nullptr)) {
    throw Error(ErrorKind::null_pointer, std::string("argument '") + (running_mean ? "running_var" : "running_mean") +
                                             "' is null while the other running statistic is given: pass both "
                                             "(track_running_stats) or neither");
  }
  if (running_mean && src_desc.spatial() <= 1) {
    throw Error(ErrorKind::invalid_argument,
                "argument 'src_desc' (dims " + src_desc.dims_str() +
                    "): expected more than 1 spatial element to update the running statistics (unbiased "
                    "variance), got " +
                    std::to_string(src_desc.spatial()));
  }
  const ogn::GroupRunning running{running_mean, running_var, config.momentum};
  forward_checked(src_desc, src, dst, gamma, beta, save_mean, save_invstd,
                  running_mean && src_desc.batch() > 0 ? &running : nullptr, config.eps,
                  kernels::batch_norm::ZeroVariance::zero);
}

void instance_norm_forward_inference(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                     void* dst, const float* gamma, const float* beta, const float* running_mean,
                                     const float* running_var, double eps) {
  ops::require_activation(src_desc, "src_desc", 3, kMaxRank);
  ops::require_pointer(running_mean, "running_mean", "C values are required");
  ops::require_pointer(running_var, "running_var", "C values are required");
  // Normalizing with running statistics is batch norm's inference.
  batch_norm_forward_inference(src_desc, src, dst_desc, dst, gamma, beta, running_mean, running_var, eps);
}

void instance_norm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                            const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src,
                            const float* gamma, const float* mean, const float* invstd, float* diff_gamma,
                            float* diff_beta, BackwardStats stats) {
  ops::require_activation(src_desc, "src_desc", 3, kMaxRank);
  if (stats == BackwardStats::fixed) {
    // Constant statistics: batch norm's fixed-statistics backward.
    batch_norm_backward(src_desc, src, diff_dst_desc, diff_dst, diff_src_desc, diff_src, gamma, mean, invstd,
                        diff_gamma, diff_beta, BackwardStats::fixed);
    return;
  }
  if (src_desc.elements() > 0 && (diff_src || diff_gamma || diff_beta)) {
    // Checked here for instance norm's words (group norm's say N x G).
    ops::require_pointer(mean, "mean", "the N x C save_mean of the training forward is required");
    ops::require_pointer(invstd, "invstd", "the N x C save_invstd of the training forward is required");
  }
  group_norm_backward(src_desc, src, diff_dst_desc, diff_dst, diff_src_desc, diff_src, src_desc.channels(), gamma,
                      mean, invstd, diff_gamma, diff_beta);
}

void instance_norm_onnx(const TensorDesc& x_desc, const void* x, const float* scale, const float* b,
                        const TensorDesc& y_desc, void* y, double epsilon) {
  ops::require_activation(x_desc, "x_desc", 3, kMaxRank);
  ops::require_same(x_desc, "x_desc", y_desc, "y_desc");
  ops::require_eps(epsilon, "epsilon");
  ops::require_pointer(scale, "scale", "ONNX InstanceNormalization requires C scale values");
  ops::require_pointer(b, "b", "ONNX InstanceNormalization requires C bias values (B)");
  forward_checked(x_desc, x, y, scale, b, nullptr, nullptr, nullptr, epsilon,
                  kernels::batch_norm::ZeroVariance::infinite, "x", "y");
}

}  // namespace bnorm

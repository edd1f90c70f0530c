// The public group-norm functions: validation, then the plan and the kernels.

#include <algorithm>
#include <limits>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/group_norm.hpp"
#include "bnorm/runtime.hpp"
#include "ops/group_norm/plan.hpp"
#include "ops/validate.hpp"

namespace bnorm {
using ops::group_norm::Problem;

namespace {

void check_groups(const TensorDesc& desc, std::int64_t num_groups, const char* name) {
  if (num_groups <= 0) {
    throw Error(ErrorKind::invalid_argument,
                std::string("argument '") + name + "' = " + std::to_string(num_groups) +
                    ": the number of groups must be > 0");
  }
  if (desc.channels() % num_groups != 0) {
    throw Error(ErrorKind::invalid_argument,
                std::string("argument '") + name + "' = " + std::to_string(num_groups) +
                    ": the number of channels C = " + std::to_string(desc.channels()) + " (dims " +
                    desc.dims_str() + ") must be divisible by the number of groups");
  }
}

void forward_checked(const TensorDesc& src_desc, const void* src, void* dst, std::int64_t num_groups,
                     const float* gamma, const float* beta, float* save_mean, float* save_invstd, double eps,
                     const char* src_name = "src", const char* dst_name = "dst") {
  const Problem p = Problem::of(src_desc, num_groups);
  if (p.elements() == 0) {
    // Groups with no values (S = 0): ATen's mean 0 and invstd NaN.
    const std::int64_t stats = p.n * p.g;
    if (save_mean) std::fill_n(save_mean, stats, 0.0f);
    if (save_invstd) std::fill_n(save_invstd, stats, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  ops::require_pointer(src, src_name, "the input data is required");
  ops::require_pointer(dst, dst_name, "the output buffer is required");
  ops::group_norm::forward(p, ops::group_norm::plan_for(p, num_threads(), ops::group_norm::Pass::forward), src,
                           dst, gamma, beta, save_mean, save_invstd, eps);
}

}  // namespace

void group_norm_forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst,
                        std::int64_t num_groups, const float* gamma, const float* beta, float* save_mean,
                        float* save_invstd, double eps) {
  ops::require_activation(src_desc, "src_desc", 2, kMaxRank);
  ops::require_same(src_desc, "src_desc", dst_desc, "dst_desc");
  check_groups(src_desc, num_groups, "num_groups");
  ops::require_eps(eps, "eps");
  forward_checked(src_desc, src, dst, num_groups, gamma, beta, save_mean, save_invstd, eps);
}

void group_norm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                         const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src,
                         std::int64_t num_groups, const float* gamma, const float* mean, const float* invstd,
                         float* diff_gamma, float* diff_beta) {
  ops::require_activation(src_desc, "src_desc", 2, kMaxRank);
  ops::require_same(src_desc, "src_desc", diff_dst_desc, "diff_dst_desc");
  ops::require_same(src_desc, "src_desc", diff_src_desc, "diff_src_desc");
  check_groups(src_desc, num_groups, "num_groups");
  const Problem p = Problem::of(src_desc, num_groups);
  if (p.elements() == 0) {
    // The parameter gradients are sums over nothing.
    if (diff_gamma) std::fill_n(diff_gamma, p.c, 0.0f);
    if (diff_beta) std::fill_n(diff_beta, p.c, 0.0f);
    return;
  }
  if (!diff_src && !diff_gamma && !diff_beta) return;
  ops::require_pointer(mean, "mean", "the N x G means of the forward are required");
  ops::require_pointer(invstd, "invstd", "the N x G invstd of the forward are required");
  ops::require_pointer(src, "src", "the forward input is required");
  ops::require_pointer(diff_dst, "diff_dst", "the output gradient is required");
  ops::group_norm::backward(p, ops::group_norm::plan_for(p, num_threads(), ops::group_norm::Pass::backward),
                            src, diff_dst, diff_src, gamma, mean, invstd, diff_gamma, diff_beta);
}

void group_norm_onnx(const TensorDesc& x_desc, const void* x, const float* scale, const float* bias,
                     const TensorDesc& y_desc, void* y, const OnnxGroupNormalization& attributes) {
  ops::require_activation(x_desc, "x_desc", 2, kMaxRank);
  ops::require_same(x_desc, "x_desc", y_desc, "y_desc");
  check_groups(x_desc, attributes.num_groups, "attributes.num_groups");
  ops::require_eps(attributes.epsilon, "attributes.epsilon");
  // TensorProto data types: FLOAT 1, FLOAT16 10, DOUBLE 11, BFLOAT16 16.
  const std::int64_t st = attributes.stash_type;
  if (st != 1 && st != 10 && st != 11 && st != 16) {
    throw Error(ErrorKind::invalid_argument,
                "argument 'attributes.stash_type' = " + std::to_string(st) +
                    ": must be a floating-point TensorProto type (1 float, 10 float16, 11 double, 16 bfloat16)");
  }
  ops::require_pointer(scale, "scale", "ONNX GroupNormalization-21 requires C scale values");
  ops::require_pointer(bias, "bias", "ONNX GroupNormalization-21 requires C bias values");
  forward_checked(x_desc, x, y, attributes.num_groups, scale, bias, nullptr, nullptr, attributes.epsilon, "x",
                  "y");
}

}  // namespace bnorm

// The public layer-norm functions: validation, then the plan and the kernels.

#include <algorithm>
#include <limits>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/layer_norm.hpp"
#include "bnorm/runtime.hpp"
#include "ops/layer_norm/plan.hpp"
#include "ops/validate.hpp"

namespace bnorm {
namespace oln = ops::layer_norm;

int normalized_dims_from_axis(int rank, std::int64_t axis) {
  if (rank < 1 || rank > kMaxRank) {
    throw Error(ErrorKind::invalid_argument, "argument 'rank' = " + std::to_string(rank) +
                                                 ": it must be 1 to " + std::to_string(kMaxRank));
  }
  if (axis < -rank || axis >= rank) {
    throw Error(ErrorKind::invalid_argument, "argument 'axis' = " + std::to_string(axis) + " for rank " +
                                                 std::to_string(rank) + ": it must be in [-rank, rank)");
  }
  return static_cast<int>(rank - (axis < 0 ? axis + rank : axis));
}

void layer_norm_forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst,
                        int normalized_dims, const float* gamma, const float* beta, float* mean, float* invstd,
                        double eps) {
  const oln::Problem p = oln::check_rows(src_desc, "src_desc", normalized_dims);
  ops::require_same(src_desc, "src_desc", dst_desc, "dst_desc");
  ops::require_eps(eps, "eps");
  if (p.rows == 0) return;
  if (p.len == 0) {
    // Statistics of nothing, as ATen gives them: mean 0, variance 0/0.
    if (mean) std::fill(mean, mean + p.rows, 0.0f);
    if (invstd) std::fill(invstd, invstd + p.rows, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  ops::require_pointer(src, "src", "the input data is required");
  ops::require_pointer(dst, "dst", "the output buffer is required");
  oln::forward(p, oln::plan_for(p, num_threads(), oln::Pass::forward), oln::Kind::layer, src, dst, gamma, beta,
               mean, invstd, eps);
}

void layer_norm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                         const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src,
                         int normalized_dims, const float* gamma, const float* mean, const float* invstd,
                         float* diff_gamma, float* diff_beta) {
  const oln::Problem p = oln::check_rows(src_desc, "src_desc", normalized_dims);
  ops::require_same(src_desc, "src_desc", diff_dst_desc, "diff_dst_desc");
  ops::require_same(src_desc, "src_desc", diff_src_desc, "diff_src_desc");
  if (p.elements() == 0) {
    // No rows: the parameter gradients are sums over nothing.
    if (diff_gamma) std::fill(diff_gamma, diff_gamma + p.len, 0.0f);
    if (diff_beta) std::fill(diff_beta, diff_beta + p.len, 0.0f);
    return;
  }
  ops::require_pointer(mean, "mean", "the forward's row means are required");
  ops::require_pointer(invstd, "invstd", "the forward's row invstd are required");
  ops::require_pointer(src, "src", "the forward input is required");
  ops::require_pointer(diff_dst, "diff_dst", "the output gradient is required");
  oln::backward(p, oln::plan_for(p, num_threads(), oln::Pass::backward), oln::Kind::layer, src, diff_dst,
                diff_src, gamma, mean, invstd, diff_gamma, diff_beta);
}

}  // namespace bnorm

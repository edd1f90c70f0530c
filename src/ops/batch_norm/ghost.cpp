// Ghost batch norm: consecutive groups of samples normalized independently.
// Samples are the outermost dimension in both layouts, so each group is a
// contiguous (virtual_batch_size, C, spatial...) tensor: the plain BatchNorm
// paths run on each in turn.

#include <algorithm>
#include <string>
#include <vector>

#include "bnorm/batch_norm.hpp"
#include "bnorm/error.hpp"
#include "bnorm/runtime.hpp"
#include "kernels/common/scalar.hpp"
#include "ops/batch_norm/plan.hpp"
#include "ops/validate.hpp"

namespace bnorm {
namespace ops::batch_norm {

std::pair<TensorDesc, std::int64_t> ghost_groups(const TensorDesc& d, std::int64_t vbs, const char* name,
                                                 bool training) {
  require_activation(d, "src_desc", 2, kMaxRank);
  if (vbs < 1 || d.batch() % vbs != 0)
    throw Error(ErrorKind::invalid_argument, std::string("argument '") + name + "' = " + std::to_string(vbs) +
                                                 ": it must be >= 1 and divide N = " +
                                                 std::to_string(d.batch()) + " (dims " + d.dims_str() + ")");
  std::vector<std::int64_t> dims(d.dims().begin(), d.dims().end());
  dims[0] = vbs;
  const TensorDesc group(d.dtype(), d.layout(), dims);
  if (training && group.batch() * group.spatial() <= 1)
    throw Error(ErrorKind::invalid_argument,
                std::string("argument '") + name + "' = " + std::to_string(vbs) + " for src_desc dims " +
                    d.dims_str() + ": each group would have " +
                    std::to_string(group.batch() * group.spatial()) +
                    " value per channel; training needs more than 1 (virtual_batch_size * spatial >= 2)");
  return {group, d.batch() / vbs};
}

}  // namespace ops::batch_norm

void ghost_batch_norm_forward_training(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                       void* dst, std::int64_t virtual_batch_size, const float* gamma,
                                       const float* beta, float* save_mean, float* save_invstd,
                                       const RunningStats& running, const BatchNormConfig& config) {
  const auto [group, groups] = ops::batch_norm::ghost_groups(src_desc, virtual_batch_size);
  // Every check on the first group's call before anything is written.
  ops::batch_norm::check_training(src_desc, src, dst_desc, dst, running, config);
  ops::batch_norm::check_training(group, src, group, dst, running, config);
  const std::int64_t c = group.channels(), step = group.elements();
  const ops::batch_norm::Plan plan =
      ops::batch_norm::plan_for(ops::batch_norm::Problem::of(group), num_threads(), ops::batch_norm::Pass::training);
  for (std::int64_t g = 0; g < groups; ++g) {
    const auto call = ops::batch_norm::check_training(group, src, group, dst, running, config);
    ops::batch_norm::forward_training(call.problem, plan, kernels::element_ptr(src, group.dtype(), g * step),
                                      kernels::element_ptr(dst, group.dtype(), g * step), gamma, beta,
                                      save_mean ? save_mean + g * c : nullptr,
                                      save_invstd ? save_invstd + g * c : nullptr, running.mean, running.var,
                                      config.eps, call.factor, config.unbiased_running_var);
    ops::batch_norm::count_batch(running);
  }
}

void ghost_batch_norm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                               const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src,
                               std::int64_t virtual_batch_size, const float* gamma, const float* mean,
                               const float* invstd, float* diff_gamma, float* diff_beta) {
  const auto [group, groups] =
      ops::batch_norm::ghost_groups(src_desc, virtual_batch_size, "virtual_batch_size", false);
  ops::require_same(src_desc, "src_desc", diff_dst_desc, "diff_dst_desc");
  ops::require_same(src_desc, "src_desc", diff_src_desc, "diff_src_desc");
  // An empty batch: zero parameter gradients, and no data or statistics to
  // require.
  if (!ops::batch_norm::backward_has_work(ops::batch_norm::Problem::of(src_desc), src, diff_dst, diff_gamma,
                                          diff_beta))
    return;
  ops::require_pointer(mean, "mean", "G * C values are required");
  ops::require_pointer(invstd, "invstd", "G * C values are required");
  const std::int64_t c = group.channels(), step = group.elements();
  const auto uc = static_cast<std::size_t>(c);
  // Per-group parameter gradients, summed in double (the buffers grow only
  // when a larger C arrives).
  thread_local std::vector<float> part;
  thread_local std::vector<double> sum;
  part.resize(2 * uc);
  sum.assign(2 * uc, 0.0);
  const auto p = ops::batch_norm::Problem::of(group);
  const auto plan = ops::batch_norm::plan_for(p, num_threads(), ops::batch_norm::Pass::backward);
  for (std::int64_t g = 0; g < groups; ++g) {
    ops::batch_norm::backward(p, plan, kernels::element_ptr(src, group.dtype(), g * step),
                              kernels::element_ptr(diff_dst, group.dtype(), g * step),
                              diff_src ? kernels::element_ptr(diff_src, group.dtype(), g * step) : nullptr, gamma,
                              mean + g * c, invstd + g * c, diff_gamma ? part.data() : nullptr,
                              diff_beta ? part.data() + uc : nullptr, BackwardStats::batch);
    for (std::size_t i = 0; i < 2 * uc; ++i) sum[i] += part[i];
  }
  if (diff_gamma)
    for (std::size_t i = 0; i < uc; ++i) diff_gamma[i] = static_cast<float>(sum[i]);
  if (diff_beta)
    for (std::size_t i = 0; i < uc; ++i) diff_beta[i] = static_cast<float>(sum[uc + i]);
}

}  // namespace bnorm

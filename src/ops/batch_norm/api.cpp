// The public batch-norm functions: validation, then the plan and the kernels.
// Semantics: DESIGN.md section 2.

#include <algorithm>
#include <limits>
#include <string>

#include "bnorm/batch_norm.hpp"
#include "bnorm/error.hpp"
#include "bnorm/runtime.hpp"
#include "ops/batch_norm/plan.hpp"
#include "ops/validate.hpp"

namespace bnorm {
using ops::batch_norm::Problem;

namespace {
void check_channel_array(const float* p, const char* name) {
  ops::require_pointer(p, name, "C values are required");
}
}  // namespace

namespace ops::batch_norm {

Problem check_backward(const TensorDesc& src_desc, const TensorDesc& diff_dst_desc,
                       const TensorDesc& diff_src_desc, const float* mean, const float* invstd) {
  ops::require_activation(src_desc, "src_desc", 2, kMaxRank);
  ops::require_same(src_desc, "src_desc", diff_dst_desc, "diff_dst_desc");
  ops::require_same(src_desc, "src_desc", diff_src_desc, "diff_src_desc");
  const Problem p = Problem::of(src_desc);
  if (p.elements() > 0) {  // an empty batch has nothing to differentiate: its statistics may be null
    check_channel_array(mean, "mean");
    check_channel_array(invstd, "invstd");
  }
  return p;
}

void count_batch(const RunningStats& running) noexcept {
  if (running.num_batches_tracked && *running.num_batches_tracked < std::numeric_limits<std::int64_t>::max())
    ++*running.num_batches_tracked;
}

bool backward_has_work(const Problem& p, const void* src, const void* diff_dst, float* diff_gamma,
                       float* diff_beta) {
  if (p.elements() == 0) {
    if (diff_gamma) std::fill(diff_gamma, diff_gamma + p.c, 0.0f);
    if (diff_beta) std::fill(diff_beta, diff_beta + p.c, 0.0f);
    return false;
  }
  ops::require_pointer(src, "src", "the forward input is required");
  ops::require_pointer(diff_dst, "diff_dst", "the output gradient is required");
  return true;
}

TrainingCall check_training(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                            const void* dst, const RunningStats& running, const BatchNormConfig& config,
                            bool shard) {
  ops::require_activation(src_desc, "src_desc", 2, kMaxRank);
  ops::require_same(src_desc, "src_desc", dst_desc, "dst_desc");
  ops::require_eps(config.eps, "config.eps");
  if (config.momentum) ops::require_momentum(*config.momentum, "config.momentum", true);
  if ((running.mean == nullptr) != (running.var == nullptr)) {
    throw Error(ErrorKind::null_pointer,
                std::string("argument '") + (running.mean ? "running.var" : "running.mean") +
                    "' is null while the other running statistic is given: pass both "
                    "(track_running_stats) or neither");
  }
  if (running.num_batches_tracked && *running.num_batches_tracked < 0) {
    throw Error(ErrorKind::invalid_argument,
                "argument '*running.num_batches_tracked' = " + std::to_string(*running.num_batches_tracked) +
                    ": a count of batches must be >= 0");
  }
  if (running.mean && !config.momentum && running.num_batches_tracked == nullptr) {
    throw Error(ErrorKind::null_pointer,
                "argument 'running.num_batches_tracked' is null: it is required when momentum is "
                "std::nullopt (cumulative moving average)");
  }
  const Problem p = Problem::of(src_desc);
  if (p.count() <= 1 && !shard) {
    throw Error(ErrorKind::invalid_argument,
                "argument 'src_desc' (dims " + src_desc.dims_str() +
                    "): expected more than 1 value per channel when training, got N * spatial = " +
                    std::to_string(p.count()));
  }
  if (p.elements() > 0) {
    ops::require_pointer(src, "src", "the input data is required");
    ops::require_pointer(dst, "dst", "the output buffer is required");
  }
  double factor = 0.0;
  if (running.mean) {
    factor =
        config.momentum ? *config.momentum : 1.0 / (static_cast<double>(*running.num_batches_tracked) + 1.0);
  }
  return {p, factor};
}

}  // namespace ops::batch_norm

void batch_norm_forward_training(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                 void* dst, const float* gamma, const float* beta, float* save_mean,
                                 float* save_invstd, const RunningStats& running,
                                 const BatchNormConfig& config) {
  const auto call = ops::batch_norm::check_training(src_desc, src, dst_desc, dst, running, config);
  ops::batch_norm::forward_training(
      call.problem, ops::batch_norm::plan_for(call.problem, num_threads(), ops::batch_norm::Pass::training), src,
      dst, gamma, beta, save_mean, save_invstd, running.mean, running.var, config.eps, call.factor,
      config.unbiased_running_var);
  ops::batch_norm::count_batch(running);
}

void batch_norm_forward_inference(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                  void* dst, const float* gamma, const float* beta, const float* mean,
                                  const float* var, double eps) {
  ops::require_activation(src_desc, "src_desc", 2, kMaxRank);
  ops::require_same(src_desc, "src_desc", dst_desc, "dst_desc");
  ops::require_eps(eps, "eps");
  check_channel_array(mean, "mean");
  check_channel_array(var, "var");
  const Problem p = Problem::of(src_desc);
  if (p.elements() == 0) return;
  ops::require_pointer(src, "src", "the input data is required");
  ops::require_pointer(dst, "dst", "the output buffer is required");
  ops::batch_norm::forward_inference(
      p, ops::batch_norm::plan_for(p, num_threads(), ops::batch_norm::Pass::inference), src, dst, gamma, beta,
      mean, var, eps);
}

void batch_norm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                         const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src,
                         const float* gamma, const float* mean, const float* invstd, float* diff_gamma,
                         float* diff_beta, BackwardStats stats) {
  const Problem p = ops::batch_norm::check_backward(src_desc, diff_dst_desc, diff_src_desc, mean, invstd);
  if (!ops::batch_norm::backward_has_work(p, src, diff_dst, diff_gamma, diff_beta)) return;
  ops::batch_norm::backward(p, ops::batch_norm::plan_for(p, num_threads(), ops::batch_norm::Pass::backward),
                            src, diff_dst, diff_src, gamma, mean, invstd, diff_gamma, diff_beta, stats);
}

}  // namespace bnorm

// Batch renormalization: BatchNorm's plans and kernels with per-channel r
// and d folded into the normalizers (ops/batch_norm/common.hpp, Renorm).

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/batch_renorm.hpp"
#include "bnorm/error.hpp"
#include "bnorm/runtime.hpp"
#include "ops/batch_norm/plan.hpp"
#include "ops/validate.hpp"

namespace bnorm {
namespace {

void check_limits(const BatchRenormLimits& l, const char* name) {
  if (!(l.r_max >= 1.0))
    throw Error(ErrorKind::invalid_argument, std::string("argument '") + name + ".r_max' = " +
                                                 ops::format_value(l.r_max) + ": r_max must be >= 1");
  if (!(l.d_max >= 0.0))
    throw Error(ErrorKind::invalid_argument, std::string("argument '") + name + ".d_max' = " +
                                                 ops::format_value(l.d_max) + ": d_max must be >= 0");
}

}  // namespace

void batch_renorm_forward_training(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                   void* dst, const float* gamma, const float* beta, float* save_mean,
                                   float* save_invstd, float* save_r, float* save_d, const RunningStats& running,
                                   const BatchRenormLimits& limits, const BatchNormConfig& config) {
  check_limits(limits, "limits");
  if (!running.mean || !running.var)
    throw Error(ErrorKind::null_pointer,
                "argument 'running' has no statistics: batch renormalization corrects toward the running mean "
                "and variance, so both are required");
  const auto call = ops::batch_norm::check_training(src_desc, src, dst_desc, dst, running, config);
  // r and d read a copy of the running statistics from before the step (the
  // plan takes ops::thread_scratch for itself, so the copy lives apart; it
  // grows only when a larger C arrives).
  const std::int64_t c = call.problem.c;
  thread_local std::vector<float> old;
  if (old.size() < 2 * static_cast<std::size_t>(c)) old.resize(2 * static_cast<std::size_t>(c));
  std::copy(running.mean, running.mean + c, old.data());
  std::copy(running.var, running.var + c, old.data() + c);
  const ops::batch_norm::Renorm renorm{limits.r_max, limits.d_max, save_r, save_d, old.data(), old.data() + c};
  ops::batch_norm::forward_training(
      call.problem, ops::batch_norm::plan_for(call.problem, num_threads(), ops::batch_norm::Pass::training), src,
      dst, gamma, beta, save_mean, save_invstd, running.mean, running.var, config.eps, call.factor,
      config.unbiased_running_var, &renorm);
  ops::batch_norm::count_batch(running);
}

void batch_renorm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                           const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src,
                           const float* gamma, const float* mean, const float* invstd, const float* r,
                           const float* d, float* diff_gamma, float* diff_beta) {
  const auto p = ops::batch_norm::check_backward(src_desc, diff_dst_desc, diff_src_desc, mean, invstd);
  if (!ops::batch_norm::backward_has_work(p, src, diff_dst, diff_gamma, diff_beta)) return;
  ops::require_pointer(r, "r", "the r saved by the forward is required");
  ops::require_pointer(d, "d", "the d saved by the forward is required");
  ops::batch_norm::backward(p, ops::batch_norm::plan_for(p, num_threads(), ops::batch_norm::Pass::backward), src,
                            diff_dst, diff_src, gamma, mean, invstd, diff_gamma, diff_beta, BackwardStats::batch, r,
                            d);
}

BatchRenormSchedule::BatchRenormSchedule(double r_max, double d_max, std::int64_t warmup_steps,
                                         std::int64_t r_ramp_steps, std::int64_t d_ramp_steps)
    : r_max_(r_max), d_max_(d_max), warmup_(warmup_steps), r_ramp_(r_ramp_steps), d_ramp_(d_ramp_steps) {
  check_limits({r_max, d_max}, "schedule");
  for (const auto& [value, name] : {std::pair{r_max, "r_max"}, std::pair{d_max, "d_max"}}) {
    if (!std::isfinite(value))
      throw Error(ErrorKind::invalid_argument,
                  std::string("argument 'schedule.") + name + "' = " + ops::format_value(value) +
                      ": a schedule's targets must be finite (its limits rise linearly to them); for limits "
                      "without clipping pass BatchRenormLimits to the forward directly");
  }
  if (warmup_steps < 0 || r_ramp_steps < 0 || d_ramp_steps < 0)
    throw Error(ErrorKind::invalid_argument,
                "BatchRenormSchedule: warmup_steps = " + std::to_string(warmup_steps) + ", r_ramp_steps = " +
                    std::to_string(r_ramp_steps) + ", d_ramp_steps = " + std::to_string(d_ramp_steps) +
                    ": step counts must be >= 0");
}

BatchRenormLimits BatchRenormSchedule::at(std::int64_t step) const noexcept {
  if (step < warmup_) return {1.0, 0.0};  // warm-up, and any negative step
  // Fraction of a ramp done at its 0-based step `after` (step warmup_ is
  // the first, one step done; a ramp of 0 steps is done at once). No sum
  // here can overflow, whatever the step.
  const std::int64_t after = step - warmup_;
  auto done = [after](std::int64_t ramp) {
    return ramp == 0 || after >= ramp - 1 ? 1.0 : static_cast<double>(after + 1) / static_cast<double>(ramp);
  };
  return {1.0 + (r_max_ - 1.0) * done(r_ramp_), d_max_ * done(d_ramp_)};
}

BatchRenorm::BatchRenorm(const Options& options) : options_(options) {
  ops::require_channels(options.num_features, "options.num_features");
  ops::require_eps(options.eps, "options.eps");
  ops::require_momentum(options.momentum, "options.momentum");
  const auto c = static_cast<std::size_t>(options.num_features);
  weight_.assign(c, 1.0f);
  bias_.assign(c, 0.0f);
  running_mean_.assign(c, 0.0f);
  running_var_.assign(c, 1.0f);
  for (auto* v : {&weight_grad_, &bias_grad_, &saved_mean_, &saved_invstd_, &saved_r_, &saved_d_}) v->assign(c, 0.0f);
}

void BatchRenorm::set_step(std::int64_t step) {
  if (step < 0)
    throw Error(ErrorKind::invalid_argument,
                "argument 'step' = " + std::to_string(step) + ": a training step count must be >= 0");
  step_ = step;
}

void BatchRenorm::check_input(const TensorDesc& desc) const {
  ops::require_activation(desc, "src_desc", 2, kMaxRank);
  if (desc.channels() != options_.num_features)
    throw Error(ErrorKind::shape_mismatch, "argument 'src_desc' has C = " + std::to_string(desc.channels()) +
                                               " (dims " + desc.dims_str() + "): this layer has num_features = " +
                                               std::to_string(options_.num_features));
}

void BatchRenorm::forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst) {
  check_input(src_desc);
  if (!training_) {
    batch_norm_forward_inference(src_desc, src, dst_desc, dst, weight_.data(), bias_.data(), running_mean_.data(),
                                 running_var_.data(), options_.eps);
    return;
  }
  BatchNormConfig config;
  config.eps = options_.eps;
  config.momentum = options_.momentum;
  batch_renorm_forward_training(src_desc, src, dst_desc, dst, weight_.data(), bias_.data(), saved_mean_.data(),
                                saved_invstd_.data(), saved_r_.data(), saved_d_.data(),
                                {running_mean_.data(), running_var_.data(), nullptr},
                                options_.schedule.at(step_), config);
  if (step_ < std::numeric_limits<std::int64_t>::max())
    ++step_;  // the schedule is at its targets long before
  forward_desc_ = src_desc;
}

void BatchRenorm::backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                           const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src) {
  ops::require_forward_of(src_desc, forward_desc_, "BatchRenorm");
  batch_renorm_backward(src_desc, src, diff_dst_desc, diff_dst, diff_src_desc, diff_src, weight_.data(),
                        saved_mean_.data(), saved_invstd_.data(), saved_r_.data(), saved_d_.data(),
                        weight_grad_.data(), bias_grad_.data());
}

}  // namespace bnorm

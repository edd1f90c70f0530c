// BatchNorm with a fused residual add and ReLU: the same plans, the
// normalize kernels' epilogue on the way out (optionally keeping the ReLU's
// mask as bits), and in backward the ReLU's gate recomputed from the forward
// output or read from the mask (kernels.hpp: Epilogue, Gate).

#include <cstring>

#include "bnorm/batch_norm.hpp"
#include "bnorm/error.hpp"
#include "bnorm/runtime.hpp"
#include "ops/batch_norm/plan.hpp"
#include "ops/validate.hpp"

namespace bnorm {
namespace {

kernels::batch_norm::Epilogue epilogue(const BatchNormFusion& f) {
  if (f.relu_mask && !f.relu)
    throw Error(ErrorKind::invalid_argument,
                "argument 'fusion.relu_mask' is set while 'fusion.relu' is false: the mask is the ReLU's, so "
                "there is none to keep without one");
  return {f.residual, f.relu, f.relu_mask, 0};
}

// The backward of both overloads, after check_backward: `gate` is the
// ReLU's (from dst or from the mask; y and mask null without a ReLU).
void backward_fused(const ops::batch_norm::Problem& p, const void* src, kernels::batch_norm::Gate gate,
                    const void* diff_dst, void* diff_src, const float* gamma, const float* mean,
                    const float* invstd, float* diff_gamma, float* diff_beta, void* diff_residual,
                    BackwardStats stats) {
  const bool relu = gate.gates();
  if (diff_residual && diff_residual == diff_src)
    throw Error(ErrorKind::invalid_argument,
                "arguments 'diff_residual' and 'diff_src' are the same buffer: the residual's gradient and "
                "diff_src are different tensors, so they need different buffers");
  if (relu && diff_residual && !diff_src)
    throw Error(ErrorKind::null_pointer,
                "argument 'diff_src' is null while 'diff_residual' is requested: the residual's gradient is "
                "written by the pass that writes diff_src");
  if (!ops::batch_norm::backward_has_work(p, src, diff_dst, diff_gamma, diff_beta)) return;
  // Without a ReLU the residual's gradient is diff_dst itself: the pass
  // that writes diff_src stores it as it reads diff_dst, or, with no
  // diff_src, it is copied once the backward has read src and diff_dst
  // (diff_residual may be src; copying first would overwrite it).
  const bool copy_after = !relu && diff_residual && !diff_src && diff_residual != diff_dst;
  void* dz = diff_residual == diff_dst && !relu ? nullptr : diff_residual;
  gate.dz = copy_after ? nullptr : dz;
  ops::batch_norm::backward(p, ops::batch_norm::plan_for(p, num_threads(), ops::batch_norm::Pass::backward),
                            src, diff_dst, diff_src, gamma, mean, invstd, diff_gamma, diff_beta, stats,
                            nullptr, nullptr, gate);
  if (copy_after) std::memcpy(diff_residual, diff_dst, p.elements() * size_of(p.dtype));
}

}  // namespace

std::size_t batch_norm_relu_mask_bytes(const TensorDesc& desc) {
  return (static_cast<std::size_t>(desc.elements()) + 7) / 8 + 8;
}

void batch_norm_forward_training_fused(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                       void* dst, const BatchNormFusion& fusion, const float* gamma,
                                       const float* beta, float* save_mean, float* save_invstd,
                                       const RunningStats& running, const BatchNormConfig& config) {
  const auto call = ops::batch_norm::check_training(src_desc, src, dst_desc, dst, running, config);
  const auto post = epilogue(fusion);
  ops::batch_norm::forward_training(
      call.problem, ops::batch_norm::plan_for(call.problem, num_threads(), ops::batch_norm::Pass::training),
      src, dst, gamma, beta, save_mean, save_invstd, running.mean, running.var, config.eps, call.factor,
      config.unbiased_running_var, nullptr, post);
  ops::batch_norm::count_batch(running);
}

void batch_norm_forward_inference_fused(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc,
                                        void* dst, const BatchNormFusion& fusion, const float* gamma,
                                        const float* beta, const float* mean, const float* var, double eps) {
  ops::require_activation(src_desc, "src_desc", 2, kMaxRank);
  ops::require_same(src_desc, "src_desc", dst_desc, "dst_desc");
  ops::require_eps(eps, "eps");
  ops::require_pointer(mean, "mean", "C values are required");
  ops::require_pointer(var, "var", "C values are required");
  const auto post = epilogue(fusion);
  const auto p = ops::batch_norm::Problem::of(src_desc);
  if (p.elements() == 0) return;
  ops::require_pointer(src, "src", "the input data is required");
  ops::require_pointer(dst, "dst", "the output buffer is required");
  ops::batch_norm::forward_inference(
      p, ops::batch_norm::plan_for(p, num_threads(), ops::batch_norm::Pass::inference), src, dst, gamma, beta,
      mean, var, eps, post);
}

void batch_norm_backward_fused(const TensorDesc& src_desc, const void* src, const void* dst, bool relu,
                               const TensorDesc& diff_dst_desc, const void* diff_dst,
                               const TensorDesc& diff_src_desc, void* diff_src, const float* gamma,
                               const float* mean, const float* invstd, float* diff_gamma, float* diff_beta,
                               void* diff_residual, BackwardStats stats) {
  const auto p = ops::batch_norm::check_backward(src_desc, diff_dst_desc, diff_src_desc, mean, invstd);
  if (relu && p.elements() > 0)
    ops::require_pointer(dst, "dst", "the forward output is required to recompute the ReLU's mask");
  backward_fused(p, src, {relu ? dst : nullptr, nullptr}, diff_dst, diff_src, gamma, mean, invstd, diff_gamma,
                 diff_beta, diff_residual, stats);
}

void batch_norm_backward_fused(const TensorDesc& src_desc, const void* src, const std::uint8_t* relu_mask,
                               const TensorDesc& diff_dst_desc, const void* diff_dst,
                               const TensorDesc& diff_src_desc, void* diff_src, const float* gamma,
                               const float* mean, const float* invstd, float* diff_gamma, float* diff_beta,
                               void* diff_residual, BackwardStats stats) {
  const auto p = ops::batch_norm::check_backward(src_desc, diff_dst_desc, diff_src_desc, mean, invstd);
  if (p.elements() > 0)
    ops::require_pointer(relu_mask, "relu_mask",
                         "the forward's ReLU mask is required (BatchNormFusion::relu_mask)");
  backward_fused(p, src, {nullptr, nullptr, relu_mask, 0}, diff_dst, diff_src, gamma, mean, invstd,
                 diff_gamma, diff_beta, diff_residual, stats);
}

}  // namespace bnorm

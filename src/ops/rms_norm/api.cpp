// The public RMS-norm functions: layer norm's validation, plan and kernels
// with every row's center at 0 (ops/layer_norm/plan.hpp, Kind::rms).

#include <algorithm>
#include <limits>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/rms_norm.hpp"
#include "bnorm/runtime.hpp"
#include "ops/layer_norm/plan.hpp"
#include "ops/validate.hpp"

namespace bnorm {
namespace oln = ops::layer_norm;

double rms_norm_default_eps(DType dtype) noexcept {
  switch (dtype) {
    case DType::bf16:
      return 0x1p-7;
    case DType::f16:
      return 0x1p-10;
    case DType::f32:
      break;
  }
  return 0x1p-23;
}

void rms_norm_forward(const TensorDesc& src_desc, const void* src, const TensorDesc& dst_desc, void* dst,
                      int normalized_dims, const float* gamma, float* invrms, std::optional<double> eps) {
  const oln::Problem p = oln::check_rows(src_desc, "src_desc", normalized_dims);
  ops::require_same(src_desc, "src_desc", dst_desc, "dst_desc");
  const double e = eps ? *eps : rms_norm_default_eps(src_desc.dtype());
  ops::require_eps(e, "eps");
  if (p.rows == 0) return;
  if (p.len == 0) {
    // The mean of no squares is 0/0.
    if (invrms) std::fill(invrms, invrms + p.rows, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  ops::require_pointer(src, "src", "the input data is required");
  ops::require_pointer(dst, "dst", "the output buffer is required");
  oln::forward(p, oln::plan_for(p, num_threads(), oln::Pass::forward), oln::Kind::rms, src, dst, gamma, nullptr,
               nullptr, invrms, e);
}

void rms_norm_backward(const TensorDesc& src_desc, const void* src, const TensorDesc& diff_dst_desc,
                       const void* diff_dst, const TensorDesc& diff_src_desc, void* diff_src, int normalized_dims,
                       const float* gamma, const float* invrms, float* diff_gamma) {
  const oln::Problem p = oln::check_rows(src_desc, "src_desc", normalized_dims);
  ops::require_same(src_desc, "src_desc", diff_dst_desc, "diff_dst_desc");
  ops::require_same(src_desc, "src_desc", diff_src_desc, "diff_src_desc");
  if (p.elements() == 0) {
    if (diff_gamma) std::fill(diff_gamma, diff_gamma + p.len, 0.0f);
    return;
  }
  ops::require_pointer(invrms, "invrms", "the forward's 1/rms per row is required");
  ops::require_pointer(src, "src", "the forward input is required");
  ops::require_pointer(diff_dst, "diff_dst", "the output gradient is required");
  oln::backward(p, oln::plan_for(p, num_threads(), oln::Pass::backward), oln::Kind::rms, src, diff_dst,
                diff_src, gamma, nullptr, invrms, diff_gamma, nullptr);
}

}  // namespace bnorm

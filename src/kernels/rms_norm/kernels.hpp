// RMS norm's optimized building blocks are layer norm's with every row's
// center at 0 (no mean is subtracted): see kernels/layer_norm/kernels.hpp.
//   statistics : rows_shifted_sums with Pivot::zero, s2 = sum(x^2);
//   forward    : rows_normalize with center 0, scale = invrms, shift 0,
//                beta null (x - 0 is exact, so y = x * invrms * gamma);
//   backward   : rows_backward_reduce / rows_backward_apply with center 0
//                and k_const 0 (no mean term), acc_beta null.
// These aliases name that reuse where the RMS op calls it.
#pragma once

#include "kernels/layer_norm/kernels.hpp"

namespace bnorm::kernels::rms_norm {

using layer_norm::Pivot;
using layer_norm::RowBlock;
using layer_norm::rows_backward_apply;
using layer_norm::rows_backward_reduce;
using layer_norm::rows_normalize;
using layer_norm::rows_shifted_sums;
using layer_norm::stream_fence;

}  // namespace bnorm::kernels::rms_norm

// Conversions between bnorm's packed buffers and ATen tensors, shared by the
// differential tests against ATen (libtorch 1.13).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace bnorm::test {

inline at::ScalarType aten_type(DType dt) { return dt == DType::f32 ? at::kFloat : at::kBFloat16; }

/// Logical (N, C, spatial...) ATen tensor holding a copy of a packed buffer.
/// Channels-last buffers are (N, spatial..., C) in memory; permuting them
/// gives ATen's channels_last strides (ChannelsLast / ChannelsLast3d for
/// rank 4 / 5).
inline at::Tensor to_aten(const Buffer& b) {
  const TensorDesc& d = b.desc;
  std::vector<std::int64_t> physical(d.dims().begin(), d.dims().end()), perm;
  if (d.layout() == Layout::channels_last) {
    physical.erase(physical.begin() + 1);
    physical.push_back(d.channels());
    perm.push_back(0);
    perm.push_back(d.rank() - 1);
    for (int i = 1; i < d.rank() - 1; ++i) perm.push_back(i);
  }
  at::Tensor t = at::from_blob(const_cast<void*>(b.data()), physical, aten_type(d.dtype())).clone();
  return perm.empty() ? t : t.permute(perm);
}

/// The values of an ATen tensor of logical dims in d's packed element order.
inline std::vector<double> from_aten(const at::Tensor& t, const TensorDesc& d) {
  at::Tensor logical = t.to(at::kDouble);
  if (d.layout() == Layout::channels_last) {
    std::vector<std::int64_t> perm = {0};
    for (int i = 2; i < d.rank(); ++i) perm.push_back(i);
    perm.push_back(1);
    logical = logical.permute(perm);
  }
  logical = logical.contiguous();
  const double* p = logical.data_ptr<double>();
  return std::vector<double>(p, p + logical.numel());
}

/// The values of an ATen tensor in its logical (C) order, as doubles.
inline std::vector<double> to_doubles(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

/// A copy of per-channel values as an f32 ATen tensor.
inline at::Tensor channel_tensor(const std::vector<float>& v) {
  return at::from_blob(const_cast<float*>(v.data()), {static_cast<std::int64_t>(v.size())}, at::kFloat).clone();
}

/// Agreement of a bnorm output with ATen's on the same data: both round an
/// f32 result to the output type, so they may land one step apart, plus the
/// f32 arithmetic of either (5e-6 of the largest value). ATen's bf16 kernels
/// also round intermediates (statistics, parameters) to bf16: bf16_steps
/// steps of the largest value more for bf16. bnorm's own bf16 results are
/// held to the double reference much more tightly in the grid tests.
inline ::testing::AssertionResult agree(const Buffer& ours, const std::vector<double>& aten, const std::string& what,
                                        double bf16_steps = 1) {
  double scale = 1.0;
  for (double v : aten) scale = std::max(scale, std::fabs(v));
  const DType dt = ours.desc.dtype();
  const double slack = dt == DType::f32 ? 0.0 : bf16_steps * ulp(dt, scale);
  return all_close(
      ours.size(), [&](std::int64_t i) { return static_cast<double>(ours.get(i)); }, aten.data(),
      [&](double w) { return element_tolerance(dt, w, 5e-6 * scale) + slack; }, what);
}

}  // namespace bnorm::test

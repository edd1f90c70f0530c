// Folding into Conv (any spatial rank, grouped and depthwise, any strides,
// dilations and pads): the weight is (C_out, C_in/group, k...), so output
// channel o scales W[o] by a[o]; the bias becomes a*bias + b (created when
// missing).

#include <algorithm>

#include "model/fold_passes.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::model {

std::optional<std::string> fold_into_conv(OnnxModel& model, int node, const ChannelAffine& f, bool apply) {
  std::string why;
  auto w = constant_weight(model, node, 1, "weight", &why, apply);
  if (!w) return why;
  const auto& dims = w->tensor->dims();
  if (dims.size() < 3) return "weight has rank " + std::to_string(dims.size()) + ", expected 3 or more";
  if (std::find(dims.begin(), dims.end(), 0) != dims.end()) return "weight has no elements (a dim of 0)";
  const auto c_out = static_cast<std::size_t>(dims[0]);
  if (c_out != f.a.size())
    return "weight has " + std::to_string(c_out) + " output channels, the BatchNormalization " +
           std::to_string(f.a.size());
  auto bias = channel_bias(model, node, c_out, &why, apply);
  if (!bias) return why;
  if (!apply) return std::nullopt;
  const std::size_t per_channel = w->values.size() / c_out;
  for (std::size_t o = 0; o < c_out; ++o) {
    for (std::size_t i = 0; i < per_channel; ++i) w->values[o * per_channel + i] *= f.a[o];
    bias->values[o] = f.a[o] * bias->values[o] + f.b[o];
  }
  const std::int32_t type = w->tensor->data_type();
  write_weight(model, node, 1, w->values);
  store_channel_bias(model, node, *bias, type);
  return std::nullopt;
}

}  // namespace bnorm::model

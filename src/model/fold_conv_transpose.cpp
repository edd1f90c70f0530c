// Folding into ConvTranspose (grouped, any output_padding): the weight is
// (C_in, C_out/group, k...), so W[i, j] feeds output channel
// (i / (C_in/group)) * (C_out/group) + j; the bias becomes a*bias + b.

#include <algorithm>

#include "model/fold_passes.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::model {

std::optional<std::string> fold_into_conv_transpose(OnnxModel& model, int node, const ChannelAffine& f,
                                                    bool apply) {
  std::string why;
  auto w = constant_weight(model, node, 1, "weight", &why, apply);
  if (!w) return why;
  const auto& dims = w->tensor->dims();
  if (dims.size() < 3) return "weight has rank " + std::to_string(dims.size()) + ", expected 3 or more";
  if (std::find(dims.begin(), dims.end(), 0) != dims.end()) return "weight has no elements (a dim of 0)";
  const std::int64_t group = int_attribute(model.graph().node(node), "group", 1);
  const auto c_in = static_cast<std::size_t>(dims[0]), per_group_out = static_cast<std::size_t>(dims[1]);
  if (group < 1 || c_in % static_cast<std::size_t>(group) != 0)
    return "group " + std::to_string(group) + " does not divide the " + std::to_string(c_in) +
           " input channels";
  const std::size_t c_out = per_group_out * static_cast<std::size_t>(group);
  if (c_out != f.a.size())
    return "weight gives " + std::to_string(c_out) + " output channels, the BatchNormalization " +
           std::to_string(f.a.size());
  auto bias = channel_bias(model, node, c_out, &why, apply);
  if (!bias) return why;
  if (!apply) return std::nullopt;
  const std::size_t in_per_group = c_in / static_cast<std::size_t>(group);
  const std::size_t kernel = w->values.size() / (c_in * per_group_out);
  for (std::size_t i = 0; i < c_in; ++i) {
    for (std::size_t j = 0; j < per_group_out; ++j) {
      const double a = f.a[(i / in_per_group) * per_group_out + j];
      double* p = w->values.data() + (i * per_group_out + j) * kernel;
      for (std::size_t k = 0; k < kernel; ++k) p[k] *= a;
    }
  }
  for (std::size_t o = 0; o < c_out; ++o) bias->values[o] = f.a[o] * bias->values[o] + f.b[o];
  const std::int32_t type = w->tensor->data_type();
  write_weight(model, node, 1, w->values);
  store_channel_bias(model, node, *bias, type);
  return std::nullopt;
}

}  // namespace bnorm::model

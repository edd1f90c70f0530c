#include "model/batch_norm_node.hpp"

#include <cmath>

#include "bnorm/error.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::model {

BatchNormNode read_batch_norm(const OnnxModel& model, int index) {
  const onnx::NodeProto& n = model.graph().node(index);
  BatchNormNode bn;
  bn.index = index;
  bn.name = n.name().empty() ? "#" + std::to_string(index) : n.name();
  bn.input = n.input_size() > 0 ? n.input(0) : "";
  bn.output = n.output_size() > 0 ? n.output(0) : "";
  bn.epsilon = float_attribute(n, "epsilon", 1e-5f);
  bn.momentum = float_attribute(n, "momentum", 0.9f);
  // Training mode by opset: the training_mode attribute (14 on); any output
  // besides Y (7 to 13: "output case #1", read or not); is_test = 0, its
  // default (before 7). As the executor reads them.
  const std::int64_t opset = model.opset();
  if (int_attribute(n, "training_mode", 0) != 0) bn.training_why = "training_mode = 1";
  if (opset < 7 && int_attribute(n, "is_test", 0) == 0)
    bn.training_why = "is_test = 0 (opset " + std::to_string(opset) + ")";
  for (int i = 0; i < 4; ++i) {
    bn.param[i] = n.input_size() > i + 1 ? n.input(i + 1) : "";
    bn.value[i] = bn.param[i].empty() ? nullptr : model.constant(bn.param[i]);
  }
  for (int i = 1; i < n.output_size(); ++i) {
    if (n.output(i).empty()) continue;
    if (opset < 14 && bn.training_why.empty())
      bn.training_why = "output '" + n.output(i) + "' besides Y (opset " + std::to_string(opset) + ")";
    if (!model.consumers(n.output(i)).empty() || model.is_graph_output(n.output(i)))
      bn.extra_outputs_used = true;
  }
  bn.training_mode = !bn.training_why.empty();
  bn.per_activation = opset < 9 && int_attribute(n, "spatial", 1) == 0;
  return bn;
}

std::vector<int> batch_norm_nodes(const OnnxModel& model) {
  std::vector<int> out;
  for (int i = 0; i < model.graph().node_size(); ++i) {
    const auto& n = model.graph().node(i);
    if (n.op_type() == "BatchNormalization" && (n.domain().empty() || n.domain() == "ai.onnx"))
      out.push_back(i);
  }
  return out;
}

std::optional<ChannelAffine> channel_affine(const BatchNormNode& bn, std::string* why) {
  if (bn.per_activation) {
    *why = "spatial = 0: its parameters are per activation (C, D1, ...), not one value per channel";
    return std::nullopt;
  }
  std::vector<double> v[4];
  for (int i = 0; i < 4; ++i) {
    if (!bn.value[i]) {
      *why = std::string(kBatchNormParams[i]) + " '" + bn.param[i] + "' is not a constant";
      return std::nullopt;
    }
    if (bn.value[i]->dims_size() != 1) {
      *why = std::string(kBatchNormParams[i]) + " '" + bn.param[i] + "' has " +
             std::to_string(bn.value[i]->dims_size()) + " dims; a per-channel parameter has 1 (C)";
      return std::nullopt;
    }
    if (!is_floating(bn.value[i]->data_type())) {
      *why =
          std::string(kBatchNormParams[i]) + " has element type " + data_type_name(bn.value[i]->data_type());
      return std::nullopt;
    }
    try {
      v[i] = to_doubles(*bn.value[i], std::string(kBatchNormParams[i]) + " '" + bn.param[i] + "'");
    } catch (const Error& e) {
      *why = e.what();
      return std::nullopt;
    }
  }
  const std::size_t c = v[0].size();
  for (int i = 1; i < 4; ++i) {
    if (v[i].size() != c) {
      *why = std::string(kBatchNormParams[i]) + " has " + std::to_string(v[i].size()) +
             " values, scale has " + std::to_string(c);
      return std::nullopt;
    }
  }
  ChannelAffine f;
  f.a.resize(c);
  f.b.resize(c);
  for (std::size_t i = 0; i < c; ++i) {
    f.a[i] = v[0][i] / std::sqrt(v[3][i] + bn.epsilon);
    f.b[i] = v[1][i] - v[2][i] * f.a[i];
  }
  return f;
}

}  // namespace bnorm::model

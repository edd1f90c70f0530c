// A BatchNormalization node of an ONNX graph, read once: attributes, its
// parameters when they are constants, and the per-channel affine map it
// applies in inference mode.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/onnx_model.hpp"

namespace bnorm::model {

struct BatchNormNode {
  int index = -1;
  std::string name;    // the node's name, or "#index"
  std::string input;   // X
  std::string output;  // Y
  double epsilon = 1e-5;
  double momentum = 0.9;
  bool training_mode = false;
  /// What says so, for messages: "training_mode = 1", "is_test = 0 (opset
  /// 6)" or "output 'm' besides Y (opset 9)".
  std::string training_why;
  /// Names of scale (gamma), B (beta), input_mean, input_var.
  std::string param[4];
  /// The same as constants, null when not constant.
  const onnx::TensorProto* value[4] = {nullptr, nullptr, nullptr, nullptr};
  /// Outputs beyond Y (running statistics) that something reads.
  bool extra_outputs_used = false;
  /// spatial = 0 (opsets 7 and 8): parameters per activation (C, D1, ...),
  /// not per channel.
  bool per_activation = false;
};

/// Names of the four parameters, for messages.
inline constexpr const char* kBatchNormParams[4] = {"scale", "B", "input_mean", "input_var"};

/// Reads node `index`, which must be a BatchNormalization.
BatchNormNode read_batch_norm(const OnnxModel& model, int index);

/// Indexes of every BatchNormalization node of the main graph.
std::vector<int> batch_norm_nodes(const OnnxModel& model);

/// The inference-mode map y = a * x + b of each channel, computed in double:
/// a = scale / sqrt(var + eps), b = B - mean * a. nullopt (with the reason in
/// *why) when the node normalizes per activation (spatial = 0), a parameter
/// is not a 1-D constant, holds a non-floating type, or the four disagree on
/// the channel count.
struct ChannelAffine {
  std::vector<double> a, b;
};
std::optional<ChannelAffine> channel_affine(const BatchNormNode& bn, std::string* why);

}  // namespace bnorm::model

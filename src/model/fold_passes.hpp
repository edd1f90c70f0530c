// The per-producer folding passes (one file each) and the helpers they
// share. Each pass checks everything before it changes anything: it returns
// the reason it cannot fold, leaving the model untouched, or nullopt. With
// `apply` it then rewrites the producer so that it computes a * (old
// output) + b per output channel (fold.cpp reroutes the output); without,
// it only answers whether it could (for inspect). `f` may be empty (sizes
// only) when not applying.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "model/batch_norm_node.hpp"
#include "model/onnx_model.hpp"

namespace bnorm::model {

std::optional<std::string> fold_into_conv(OnnxModel& model, int node, const ChannelAffine& f, bool apply);
std::optional<std::string> fold_into_conv_transpose(OnnxModel& model, int node, const ChannelAffine& f,
                                                    bool apply);
std::optional<std::string> fold_into_gemm(OnnxModel& model, int node, const ChannelAffine& f, bool apply);
std::optional<std::string> fold_into_matmul(OnnxModel& model, int node, const ChannelAffine& f, bool apply);
/// Replaces the BN by Mul + Add; returns the reason when it cannot (input
/// rank unknown). On success fills *nodes with the new nodes' names.
std::optional<std::string> replace_with_scale_shift(OnnxModel& model, const BatchNormNode& bn,
                                                    const ChannelAffine& f, std::string* nodes);

/// A constant floating weight read by input `slot` of `node`, with its
/// values as doubles when `values` is set; nullopt with the reason when it
/// is missing, not constant, not floating, or of the wrong size.
struct Weight {
  const onnx::TensorProto* tensor = nullptr;
  std::vector<double> values;
};
std::optional<Weight> constant_weight(const OnnxModel& model, int node, int slot, const char* role,
                                      std::string* why, bool values);

/// The per-output-channel bias of a Conv or ConvTranspose (input 2): its
/// `channels` values when `values` is set (zeros when the node has none),
/// whether the node has one, or nullopt with the reason it cannot be used.
struct ChannelBias {
  bool present = false;
  std::vector<double> values;
};
std::optional<ChannelBias> channel_bias(const OnnxModel& model, int node, std::size_t channels,
                                        std::string* why, bool values);

/// Stores a Conv or ConvTranspose's folded bias: in place of its input 2 when
/// it had one, else as a new initializer of `data_type` named after the
/// node's weight (input 1; call after write_weight, which may rename it).
void store_channel_bias(OnnxModel& model, int node, const ChannelBias& bias, std::int32_t data_type);

/// Stores new values for input `slot` of `node`. When the initializer is
/// also read elsewhere, the node gets a copy of its own instead.
void write_weight(OnnxModel& model, int node, int slot, const std::vector<double>& values);

/// Removes node `index` and the initializers (with their IR < 4 graph-input
/// declarations) that only it read.
void remove_node(OnnxModel& model, int index);

/// Adds an initializer of `dims` with the element type `data_type` and
/// makes it input `slot` of `node` (appending empty inputs as needed).
void add_weight_input(OnnxModel& model, int node, int slot, const std::string& base_name,
                      std::int32_t data_type, const std::vector<std::int64_t>& dims,
                      const std::vector<double>& values);

}  // namespace bnorm::model

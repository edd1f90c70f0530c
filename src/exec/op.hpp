// The interface between the executor and its ops. Each op type has a
// factory that reads and checks the node's attributes when the model is
// compiled (an unsupported op, attribute or attribute value is an error
// naming the node, before anything is computed) and returns the Op that
// runs it.
#pragma once

#include <onnx/onnx_pb.h>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "exec/tensor.hpp"

namespace bnorm::exec {

class ExecContext;

/// A compiled node.
class Op {
 public:
  virtual ~Op() = default;
  /// Computes the outputs from the inputs. inputs[i] is null for an absent
  /// optional input; outputs has one (empty) slot per node output, and an
  /// output whose name is empty need not be written. Throws Error naming the
  /// node on shapes or types the op does not accept.
  virtual void run(const std::vector<const Tensor*>& inputs, std::vector<Tensor>& outputs, ExecContext& ctx) = 0;
};

/// An activation the executor fused into the node that produces its input
/// (a Conv or ConvTranspose whose only reader it is): the producer applies
/// it to its output (a oneDNN post-op) and the activation node is skipped.
struct FusedActivation {
  enum class Kind { none, relu, leaky_relu, clip };
  Kind kind = Kind::none;
  float alpha = 0.0f;  // leaky_relu: the slope; clip: the minimum
  float beta = 0.0f;   // clip: the maximum
};

/// A node being compiled: its inputs, outputs and attributes, with checks.
class NodeInfo {
 public:
  NodeInfo(const onnx::NodeProto& node, int index, std::int64_t opset,
           std::function<const Tensor*(const std::string&)> constant);

  const onnx::NodeProto& node() const noexcept { return node_; }
  int index() const noexcept { return index_; }
  std::int64_t opset() const noexcept { return opset_; }
  /// "Conv 'conv1'" (or "Conv #3"), for messages.
  const std::string& describe() const noexcept { return describe_; }

  int input_count() const noexcept { return node_.input_size(); }
  bool has_input(int i) const noexcept { return i < node_.input_size() && !node_.input(i).empty(); }
  int output_count() const noexcept { return node_.output_size(); }
  bool has_output(int i) const noexcept { return i < node_.output_size() && !node_.output(i).empty(); }
  /// The value of input i when it is a constant (initializer or Constant
  /// node) of the model, else null.
  const Tensor* constant_input(int i) const;

  /// Attribute getters. Each marks the attribute as understood; the
  /// executor rejects a node with an attribute no getter asked for.
  std::int64_t i(const std::string& name, std::int64_t fallback);
  float f(const std::string& name, float fallback);
  std::string s(const std::string& name, const std::string& fallback);
  std::vector<std::int64_t> ints(const std::string& name, std::vector<std::int64_t> fallback = {});
  std::vector<float> floats(const std::string& name);
  /// The tensor value of an attribute, or null.
  const onnx::TensorProto* t(const std::string& name);
  bool has(const std::string& name) const;
  /// Accepts an attribute that does not change the result (e.g. a hint).
  void ignore(const std::string& name) { used_.insert(name); }
  /// Throws Error(unsupported) for an attribute no getter asked for.
  void check_attributes_used() const;

  /// Set by the executor when an activation is fused into this node.
  FusedActivation fused;

  /// Throws Error(unsupported): "<node>: <what>".
  [[noreturn]] void unsupported(const std::string& what) const;
  /// Throws Error(invalid_model): "<node>: <what>".
  [[noreturn]] void invalid(const std::string& what) const;

 private:
  const onnx::AttributeProto* find(const std::string& name, int type);

  const onnx::NodeProto& node_;
  int index_;
  std::int64_t opset_;
  std::string describe_;
  std::function<const Tensor*(const std::string&)> constant_;
  std::set<std::string> used_;
};

/// Makes the Op for a node; throws Error(unsupported) or Error(invalid_model).
using OpFactory = std::unique_ptr<Op> (*)(NodeInfo& info);

/// The factory for an op type of the default ONNX domain, or null.
OpFactory find_op(std::string_view op_type);
/// Every op type the executor runs, sorted.
std::vector<std::string> supported_ops();

/// Error helpers for Op::run: "<node>: <what>".
[[noreturn]] void fail_shape(const std::string& node, const std::string& what);
[[noreturn]] void fail_unsupported(const std::string& node, const std::string& what);

}  // namespace bnorm::exec

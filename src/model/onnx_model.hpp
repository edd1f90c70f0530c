// An ONNX model in memory: loading (with external data confined to the
// model's directory), saving (checked, written to a temporary file and
// renamed), and the graph queries the passes need.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace bnorm::model {

class OnnxModel {
 public:
  /// Reads an .onnx file. Tensors stored as external data are read into the
  /// model; their location must stay inside the model's directory (an
  /// absolute path, ".." or a link that leaves it is refused). Throws
  /// Error(io) when the file cannot be read, Error(invalid_model) when it is
  /// not a well-formed ONNX model.
  static OnnxModel load(const std::filesystem::path& path);

  /// Parses a serialized model held in memory, with the same checks as
  /// load(); external data is looked up (confined) in `dir`.
  static OnnxModel from_bytes(std::string_view bytes, const std::filesystem::path& dir);

  /// The external data files load() read (resolved paths, each once): the
  /// model's inputs as much as the .onnx file is.
  const std::vector<std::string>& external_files() const noexcept { return external_files_; }

  /// Wraps a model built in memory.
  explicit OnnxModel(onnx::ModelProto proto);

  /// Writes the model to `path` through a temporary file in the destination's
  /// directory, fsync'ed and renamed over it only once complete
  /// (model::OutputFile: a symbolic link is written through, an existing
  /// file keeps its permission bits); the model must pass onnx::checker.
  /// All tensor data is stored inline. Throws Error(io) or
  /// Error(invalid_model); on error `path` is left as it was and no
  /// temporary file remains.
  void save(const std::filesystem::path& path) const;

  onnx::ModelProto& proto() noexcept { return proto_; }
  const onnx::ModelProto& proto() const noexcept { return proto_; }
  onnx::GraphProto& graph() noexcept { return *proto_.mutable_graph(); }
  const onnx::GraphProto& graph() const noexcept { return proto_.graph(); }

  /// Opset of the default ONNX domain (0 when not imported).
  std::int64_t opset() const;

  /// Rebuilds the indexes below after the graph was edited.
  void refresh();

  /// Index of the node that produces `tensor`, if any.
  std::optional<int> producer(const std::string& tensor) const;
  /// Indexes of the nodes that read `tensor`.
  const std::vector<int>& consumers(const std::string& tensor) const;
  /// Whether `tensor` is an output of the graph.
  bool is_graph_output(const std::string& tensor) const;
  /// Whether `tensor` is an input of the graph that is not an initializer.
  bool is_graph_input(const std::string& tensor) const;
  /// The constant value of `tensor`: an initializer (not overridable by a
  /// graph input) or the value of a Constant node, also through Identity
  /// nodes; null otherwise. Changing a value reached through a node changes
  /// what its other readers see: write through write_weight (fold_passes.hpp).
  const onnx::TensorProto* constant(const std::string& tensor) const;
  /// The same, for modification (null for Constant nodes with a non-tensor value).
  onnx::TensorProto* mutable_constant(const std::string& tensor);
  /// Rank of `tensor` from the graph's type information, or propagated from
  /// the graph inputs and constants through the ops CNN exports use (not by
  /// ONNX's shape inference, which crashes on some malformed models);
  /// nullopt when unknown.
  std::optional<int> rank(const std::string& tensor) const;
  /// Element type of `tensor` (onnx::TensorProto::DataType), 0 when unknown.
  std::int32_t element_type(const std::string& tensor) const;

  /// A tensor name not yet used in the graph, made from `base`.
  std::string unique_name(const std::string& base);

  /// Adds `t` to the graph's initializers, and in a model of IR version
  /// below 4 (where every initializer must also be a graph input) declares
  /// it among the graph inputs. Returns its name. Call refresh() after.
  std::string add_initializer(onnx::TensorProto t);
  /// Removes the initializers named in `names`, and the graph inputs that
  /// declared them (IR version below 4). Call refresh() after.
  void remove_initializers(const std::set<std::string>& names);

 private:
  void infer_types() const;

  onnx::ModelProto proto_;
  std::unordered_map<std::string, int> producer_;
  std::unordered_map<std::string, std::vector<int>> consumers_;
  std::unordered_map<std::string, int> initializer_;
  std::unordered_map<std::string, int> constant_node_;
  std::unordered_map<std::string, bool> graph_output_, graph_input_;
  mutable bool inferred_ = false;
  mutable std::unordered_map<std::string, std::pair<int, std::int32_t>> types_;  // rank, element type
  std::unordered_map<std::string, int> used_names_;
  std::vector<std::string> external_files_;
};

/// Attribute helpers for nodes.
const onnx::AttributeProto* find_attribute(const onnx::NodeProto& node, const std::string& name);
std::int64_t int_attribute(const onnx::NodeProto& node, const std::string& name, std::int64_t fallback);
float float_attribute(const onnx::NodeProto& node, const std::string& name, float fallback);
std::vector<std::int64_t> ints_attribute(const onnx::NodeProto& node, const std::string& name);

/// "op 'name'" for messages (the name, or "#index" when the node has none).
std::string describe(const onnx::NodeProto& node, int index);

}  // namespace bnorm::model

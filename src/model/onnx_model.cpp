#include "model/onnx_model.hpp"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/shape_inference/implementation.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <random>

#include "bnorm/error.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::model {
namespace fs = std::filesystem;

namespace {

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

// Reads the external data of a tensor into raw_data. The location must name
// a file inside `dir` (after resolving links).
void load_external(onnx::TensorProto& t, const fs::path& dir, const std::string& what) {
  std::string location;
  std::int64_t offset = 0, length = -1;
  for (const auto& kv : t.external_data()) {
    try {
      if (kv.key() == "location") location = kv.value();
      if (kv.key() == "offset") offset = std::stoll(kv.value());
      if (kv.key() == "length") length = std::stoll(kv.value());
    } catch (const std::exception&) {
      throw Error(ErrorKind::invalid_model,
                  what + ": external data " + kv.key() + " '" + kv.value() + "' is not a number");
    }
  }
  if (location.empty()) throw Error(ErrorKind::invalid_model, what + ": external data without a location");
  const fs::path rel(location);
  if (rel.is_absolute())
    throw Error(ErrorKind::invalid_model, what + ": external data location '" + location +
                                              "' is absolute; it must be inside the model's directory");
  std::error_code ec;
  const fs::path base = fs::weakly_canonical(dir, ec);
  const fs::path file = fs::weakly_canonical(dir / rel, ec);
  const auto [end, _] = std::mismatch(base.begin(), base.end(), file.begin(), file.end());
  if (ec || end != base.end() || file == base)
    throw Error(ErrorKind::invalid_model, what + ": external data location '" + location +
                                              "' leaves the model's directory " + quoted(dir));
  std::ifstream in(file, std::ios::binary);
  if (!in || !fs::is_regular_file(file, ec))
    throw Error(ErrorKind::io, what + ": cannot open external data file " + quoted(file));
  in.seekg(0, std::ios::end);
  const std::int64_t size = in.tellg();
  if (size < 0 || offset < 0 || offset > size || length < -1 || (length >= 0 && length > size - offset))
    throw Error(ErrorKind::invalid_model, what + ": external data range (offset " + std::to_string(offset) +
                                              ", length " + std::to_string(length) + ") lies outside " +
                                              quoted(file) + " (" + std::to_string(size) + " bytes)");
  if (length < 0) length = size - offset;
  std::string bytes(static_cast<std::size_t>(length), '\0');
  in.seekg(offset);
  in.read(bytes.data(), length);
  if (!in) throw Error(ErrorKind::io, what + ": cannot read external data from " + quoted(file));
  t.clear_external_data();
  t.set_data_location(onnx::TensorProto::DEFAULT);
  t.set_raw_data(std::move(bytes));
  if (is_floating(t.data_type())) check_data(t, what + " (external data " + quoted(file) + ")");
}

void load_graph_external(onnx::GraphProto& g, const fs::path& dir) {
  for (auto& t : *g.mutable_initializer())
    if (t.data_location() == onnx::TensorProto::EXTERNAL)
      load_external(t, dir, "initializer '" + t.name() + "'");
  for (auto& n : *g.mutable_node()) {
    for (auto& a : *n.mutable_attribute()) {
      if (a.has_t() && a.t().data_location() == onnx::TensorProto::EXTERNAL)
        load_external(*a.mutable_t(), dir, "node '" + n.name() + "' attribute '" + a.name() + "'");
      if (a.has_g()) load_graph_external(*a.mutable_g(), dir);
      for (auto& sub : *a.mutable_graphs()) load_graph_external(sub, dir);
    }
  }
}

// What every pass relies on; anything else is left to onnx::checker at save.
void validate(const onnx::ModelProto& m, const fs::path& path) {
  auto bad = [&](const std::string& why) {
    return Error(ErrorKind::invalid_model, quoted(path) + " is not a valid ONNX model: " + why);
  };
  if (!m.has_graph()) throw bad("it has no graph (truncated, or not an ONNX file)");
  if (m.ir_version() <= 0) throw bad("ir_version is missing");
  if (m.opset_import_size() == 0) throw bad("it imports no opset");
  int opset = 0;
  for (const auto& op : m.opset_import())
    if (op.domain().empty() || op.domain() == "ai.onnx") opset = static_cast<int>(op.version());
  for (int i = 0; i < m.graph().node_size(); ++i) {
    const auto& node = m.graph().node(i);
    if (node.op_type().empty()) throw bad("node #" + std::to_string(i) + " has no op_type");
    // Arity and attributes of standard ops against their schema, so that the
    // passes may rely on them. Ops ONNX does not know are left alone.
    if (!node.domain().empty() && node.domain() != "ai.onnx") continue;
    // ONNX's shape inference divides by these (and crashes on 0).
    for (const auto& a : node.attribute()) {
      if (a.name() != "strides" && a.name() != "dilations" && a.name() != "group" && a.name() != "kernel_shape")
        continue;
      const bool positive = a.type() == onnx::AttributeProto::INT
                                ? a.i() > 0
                                : std::all_of(a.ints().begin(), a.ints().end(), [](std::int64_t v) { return v > 0; });
      if (!positive) throw bad("node " + describe(node, i) + " has attribute " + a.name() + " <= 0; it must be positive");
    }
    const auto* schema = onnx::OpSchemaRegistry::Schema(node.op_type(), opset, "");
    if (!schema) continue;
    try {
      schema->Verify(node);
    } catch (const std::exception& e) {
      throw bad("node " + describe(node, i) + " does not match its opset " + std::to_string(opset) +
                " schema: " + e.what());
    }
  }
  for (const auto& t : m.graph().initializer()) {
    if (t.name().empty()) throw bad("an initializer has no name");
    for (std::int64_t d : t.dims())
      if (d < 0) throw bad("initializer '" + t.name() + "' has a negative dimension");
  }
}

}  // namespace

namespace {

// Parses, validates and loads external data; `source` names the model in messages.
OnnxModel parse(google::protobuf::io::ZeroCopyInputStream& raw, const fs::path& source, const fs::path& dir) {
  onnx::ModelProto proto;
  google::protobuf::io::CodedInputStream coded(&raw);
  coded.SetTotalBytesLimit(INT_MAX);
  if (!proto.ParseFromCodedStream(&coded) || !coded.ConsumedEntireMessage())
    throw Error(ErrorKind::invalid_model,
                quoted(source) + " is not a valid ONNX model: it does not parse as one (truncated, or another format)");
  validate(proto, source);
  load_graph_external(*proto.mutable_graph(), dir);
  return OnnxModel(std::move(proto));
}

}  // namespace

OnnxModel OnnxModel::load(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::io, "cannot open model " + quoted(path) + ": " + std::strerror(errno));
  google::protobuf::io::IstreamInputStream raw(&in);
  auto model = parse(raw, path, path.has_parent_path() ? path.parent_path() : fs::path("."));
  if (in.bad()) throw Error(ErrorKind::io, "cannot read model " + quoted(path));
  return model;
}

OnnxModel OnnxModel::from_bytes(std::string_view bytes, const fs::path& dir) {
  if (bytes.size() > static_cast<std::size_t>(INT_MAX))
    throw Error(ErrorKind::invalid_model, "a serialized model larger than 2 GiB cannot be parsed from memory");
  google::protobuf::io::ArrayInputStream raw(bytes.data(), static_cast<int>(bytes.size()));
  return parse(raw, "<memory>", dir);
}

OnnxModel::OnnxModel(onnx::ModelProto proto) : proto_(std::move(proto)) { refresh(); }

void OnnxModel::save(const fs::path& path) const {
  try {
    onnx::checker::check_model(proto_);
  } catch (const std::exception& e) {
    throw Error(ErrorKind::invalid_model,
                "the model to write to " + quoted(path) + " fails onnx::checker: " + e.what());
  }
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::random_device rd;
  const fs::path temp = dir / ("." + path.filename().string() + ".tmp-" + std::to_string(rd()));
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(ErrorKind::io, "cannot write " + quoted(temp) + ": " + std::strerror(errno));
    const bool ok = proto_.SerializeToOstream(&out);
    out.close();
    if (!ok || !out) {
      std::error_code ec;
      fs::remove(temp, ec);
      throw Error(ErrorKind::io,
                  "cannot write " + quoted(path) + " (serialization failed or the disk is full)");
    }
  }
  std::error_code ec;
  fs::rename(temp, path, ec);
  if (ec) {
    fs::remove(temp, ec);
    throw Error(ErrorKind::io,
                "cannot move the written model into place at " + quoted(path) + ": " + ec.message());
  }
}

std::int64_t OnnxModel::opset() const {
  for (const auto& op : proto_.opset_import())
    if (op.domain().empty() || op.domain() == "ai.onnx") return op.version();
  return 0;
}

void OnnxModel::refresh() {
  producer_.clear();
  consumers_.clear();
  initializer_.clear();
  constant_node_.clear();
  graph_output_.clear();
  graph_input_.clear();
  used_names_.clear();
  inferred_ = false;
  types_.clear();
  const auto& g = proto_.graph();
  for (int i = 0; i < g.initializer_size(); ++i) initializer_[g.initializer(i).name()] = i;
  for (const auto& o : g.output()) graph_output_[o.name()] = true;
  for (const auto& in : g.input()) {
    if (!initializer_.count(in.name())) graph_input_[in.name()] = true;
    used_names_[in.name()] = 1;
  }
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& n = g.node(i);
    for (const auto& out : n.output()) {
      if (out.empty()) continue;
      producer_[out] = i;
      used_names_[out] = 1;
    }
    for (const auto& in : n.input())
      if (!in.empty()) consumers_[in].push_back(i);
    if (n.op_type() == "Constant" && n.output_size() == 1 && n.domain().empty())
      constant_node_[n.output(0)] = i;
    if (!n.name().empty()) used_names_[n.name()] = 1;
  }
  for (const auto& [name, _] : initializer_) used_names_[name] = 1;
}

std::optional<int> OnnxModel::producer(const std::string& tensor) const {
  const auto it = producer_.find(tensor);
  if (it == producer_.end()) return std::nullopt;
  return it->second;
}

const std::vector<int>& OnnxModel::consumers(const std::string& tensor) const {
  static const std::vector<int> none;
  const auto it = consumers_.find(tensor);
  return it == consumers_.end() ? none : it->second;
}

bool OnnxModel::is_graph_output(const std::string& tensor) const { return graph_output_.count(tensor) > 0; }
bool OnnxModel::is_graph_input(const std::string& tensor) const { return graph_input_.count(tensor) > 0; }

const onnx::TensorProto* OnnxModel::constant(const std::string& tensor) const {
  return const_cast<OnnxModel*>(this)->mutable_constant(tensor);
}

onnx::TensorProto* OnnxModel::mutable_constant(const std::string& tensor) {
  if (is_graph_input(tensor)) return nullptr;  // an input can override it
  if (const auto it = initializer_.find(tensor); it != initializer_.end())
    return proto_.mutable_graph()->mutable_initializer(it->second);
  if (const auto it = constant_node_.find(tensor); it != constant_node_.end()) {
    auto* node = proto_.mutable_graph()->mutable_node(it->second);
    for (auto& a : *node->mutable_attribute())
      if (a.name() == "value" && a.has_t()) return a.mutable_t();
  }
  return nullptr;
}

void OnnxModel::infer_types() const {
  inferred_ = true;
  auto note = [&](const onnx::ValueInfoProto& v) {
    if (!v.type().has_tensor_type()) return;
    const auto& tt = v.type().tensor_type();
    types_[v.name()] = {tt.has_shape() ? tt.shape().dim_size() : -1, tt.elem_type()};
  };
  // Shape inference on a copy without tensor data: cheap whatever the model size.
  // Built field by field, so the weights are never copied.
  onnx::ModelProto skeleton;
  skeleton.set_ir_version(proto_.ir_version());
  *skeleton.mutable_opset_import() = proto_.opset_import();
  const auto& g = proto_.graph();
  auto& sg = *skeleton.mutable_graph();
  *sg.mutable_node() = g.node();
  *sg.mutable_input() = g.input();
  *sg.mutable_output() = g.output();
  *sg.mutable_value_info() = g.value_info();
  for (const auto& t : g.initializer()) {
    auto& st = *sg.add_initializer();
    st.set_name(t.name());
    st.set_data_type(t.data_type());
    *st.mutable_dims() = t.dims();
  }
  try {
    onnx::shape_inference::InferShapes(skeleton);
  } catch (const std::exception&) {
    // Keep whatever the model itself declares.
  }
  for (const auto& v : skeleton.graph().value_info()) note(v);
  for (const auto& v : skeleton.graph().input()) note(v);
  for (const auto& v : skeleton.graph().output()) note(v);
  for (const auto& t : proto_.graph().initializer()) types_[t.name()] = {t.dims_size(), t.data_type()};
}

std::optional<int> OnnxModel::rank(const std::string& tensor) const {
  if (!inferred_) infer_types();
  const auto it = types_.find(tensor);
  if (it == types_.end() || it->second.first < 0) return std::nullopt;
  return it->second.first;
}

std::int32_t OnnxModel::element_type(const std::string& tensor) const {
  if (!inferred_) infer_types();
  const auto it = types_.find(tensor);
  return it == types_.end() ? 0 : it->second.second;
}

std::string OnnxModel::unique_name(const std::string& base) {
  std::string name = base;
  for (int i = 1; used_names_.count(name); ++i) name = base + "_" + std::to_string(i);
  used_names_[name] = 1;
  return name;
}

const onnx::AttributeProto* find_attribute(const onnx::NodeProto& node, const std::string& name) {
  for (const auto& a : node.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

std::int64_t int_attribute(const onnx::NodeProto& node, const std::string& name, std::int64_t fallback) {
  const auto* a = find_attribute(node, name);
  return a ? a->i() : fallback;
}

float float_attribute(const onnx::NodeProto& node, const std::string& name, float fallback) {
  const auto* a = find_attribute(node, name);
  return a ? a->f() : fallback;
}

std::vector<std::int64_t> ints_attribute(const onnx::NodeProto& node, const std::string& name) {
  const auto* a = find_attribute(node, name);
  if (!a) return {};
  return {a->ints().begin(), a->ints().end()};
}

std::string describe(const onnx::NodeProto& node, int index) {
  return node.op_type() + " '" + (node.name().empty() ? "#" + std::to_string(index) : node.name()) + "'";
}

}  // namespace bnorm::model

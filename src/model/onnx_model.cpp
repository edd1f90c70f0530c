#include "model/onnx_model.hpp"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <fstream>
#include <functional>
#include <unordered_set>

#include "bnorm/error.hpp"
#include "model/output_file.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::model {
namespace fs = std::filesystem;

namespace {

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

// Reads the external data of a tensor into raw_data. The location must name
// a regular file inside `dir` (after resolving links); its path is added to
// `files`.
void load_external(onnx::TensorProto& t, const fs::path& dir, const std::string& what,
                   std::vector<std::string>& files) {
  std::string location;
  std::int64_t offset = 0, length = -1;
  for (const auto& kv : t.external_data()) {
    if (kv.key() == "location") location = kv.value();
    if (kv.key() != "offset" && kv.key() != "length") continue;
    std::int64_t& v = kv.key() == "offset" ? offset : length;
    const char* end = kv.value().data() + kv.value().size();
    const auto [ptr, ec] = std::from_chars(kv.value().data(), end, v);
    if (ec != std::errc() || ptr != end)
      throw Error(ErrorKind::invalid_model,
                  what + ": external data " + kv.key() + " '" + kv.value() + "' is not a whole number");
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
  // A regular file before opening it: opening a FIFO would wait forever.
  if (!fs::is_regular_file(file, ec))
    throw Error(ErrorKind::io, what + ": external data " + quoted(file) + " is not a regular file");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorKind::io, what + ": cannot open external data file " + quoted(file));
  files.push_back(file.string());
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

// Every tensor of the graph and its subgraphs that can hold external data:
// initializers, sparse initializers, tensor and sparse tensor attributes.
void load_graph_external(onnx::GraphProto& g, const fs::path& dir, std::vector<std::string>& files) {
  auto load = [&](onnx::TensorProto& t, const std::string& what) {
    if (t.data_location() == onnx::TensorProto::EXTERNAL) load_external(t, dir, what, files);
  };
  auto load_sparse = [&](onnx::SparseTensorProto& s, const std::string& what) {
    load(*s.mutable_values(), what + " values");
    load(*s.mutable_indices(), what + " indices");
  };
  for (auto& t : *g.mutable_initializer()) load(t, "initializer '" + t.name() + "'");
  for (auto& s : *g.mutable_sparse_initializer())
    load_sparse(s, "sparse initializer '" + s.values().name() + "'");
  for (auto& n : *g.mutable_node()) {
    for (auto& a : *n.mutable_attribute()) {
      const std::string what = "node '" + n.name() + "' attribute '" + a.name() + "'";
      if (a.has_t()) load(*a.mutable_t(), what);
      for (auto& t : *a.mutable_tensors()) load(t, what);
      if (a.has_sparse_tensor()) load_sparse(*a.mutable_sparse_tensor(), what);
      for (auto& s : *a.mutable_sparse_tensors()) load_sparse(s, what);
      if (a.has_g()) load_graph_external(*a.mutable_g(), dir, files);
      for (auto& sub : *a.mutable_graphs()) load_graph_external(sub, dir, files);
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
  std::unordered_set<std::string> names;
  for (const auto& t : m.graph().initializer()) {
    if (t.name().empty()) throw bad("an initializer has no name");
    // onnx::checker's rule; readers would take one of them silently.
    if (!names.insert(t.name()).second) throw bad("two initializers are named '" + t.name() + "'");
    for (std::int64_t d : t.dims())
      if (d < 0) throw bad("initializer '" + t.name() + "' has a negative dimension");
  }
}

}  // namespace

namespace {

// Parses, validates and loads external data (the files read go to `files`,
// each once); `source` names the model in messages.
onnx::ModelProto parse(google::protobuf::io::ZeroCopyInputStream& raw, const fs::path& source,
                       const fs::path& dir, std::vector<std::string>& files) {
  onnx::ModelProto proto;
  google::protobuf::io::CodedInputStream coded(&raw);
  coded.SetTotalBytesLimit(INT_MAX);
  if (!proto.ParseFromCodedStream(&coded) || !coded.ConsumedEntireMessage())
    throw Error(ErrorKind::invalid_model,
                quoted(source) + " is not a valid ONNX model: it does not parse as one (truncated, or another format)");
  validate(proto, source);
  load_graph_external(*proto.mutable_graph(), dir, files);
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return proto;
}

}  // namespace

OnnxModel OnnxModel::load(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw Error(ErrorKind::io, "cannot read model " + quoted(path) + ": it is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::io, "cannot open model " + quoted(path) + ": " + std::strerror(errno));
  google::protobuf::io::IstreamInputStream raw(&in);
  std::vector<std::string> files;
  OnnxModel model(parse(raw, path, path.has_parent_path() ? path.parent_path() : fs::path("."), files));
  if (in.bad()) throw Error(ErrorKind::io, "cannot read model " + quoted(path));
  model.external_files_ = std::move(files);
  return model;
}

OnnxModel OnnxModel::from_bytes(std::string_view bytes, const fs::path& dir) {
  if (bytes.size() > static_cast<std::size_t>(INT_MAX))
    throw Error(ErrorKind::invalid_model, "a serialized model larger than 2 GiB cannot be parsed from memory");
  google::protobuf::io::ArrayInputStream raw(bytes.data(), static_cast<int>(bytes.size()));
  std::vector<std::string> files;
  OnnxModel model(parse(raw, "<memory>", dir, files));
  model.external_files_ = std::move(files);
  return model;
}

OnnxModel::OnnxModel(onnx::ModelProto proto) : proto_(std::move(proto)) {
  // Constant's value_float(s) / value_int(s) (opset 12 on) as the `value`
  // tensor they stand for, so that constant() finds them like any other.
  for (auto& n : *proto_.mutable_graph()->mutable_node()) {
    if (n.op_type() != "Constant" || !(n.domain().empty() || n.domain() == "ai.onnx") ||
        n.attribute_size() != 1)
      continue;
    onnx::AttributeProto& a = *n.mutable_attribute(0);
    onnx::TensorProto t;
    if (a.name() == "value_float" || a.name() == "value_floats") {
      t.set_data_type(onnx::TensorProto::FLOAT);
      if (a.name() == "value_float") t.add_float_data(a.f());
      for (float v : a.floats()) t.add_float_data(v);
      if (a.name() == "value_floats") t.add_dims(a.floats_size());
    } else if (a.name() == "value_int" || a.name() == "value_ints") {
      t.set_data_type(onnx::TensorProto::INT64);
      if (a.name() == "value_int") t.add_int64_data(a.i());
      for (std::int64_t v : a.ints()) t.add_int64_data(v);
      if (a.name() == "value_ints") t.add_dims(a.ints_size());
    } else {
      continue;
    }
    a.Clear();
    a.set_name("value");
    a.set_type(onnx::AttributeProto::TENSOR);
    *a.mutable_t() = std::move(t);
  }
  refresh();
}

void OnnxModel::save(const fs::path& path) const {
  try {
    onnx::checker::check_model(proto_);
  } catch (const std::exception& e) {
    throw Error(ErrorKind::invalid_model,
                "the model to write to " + quoted(path) + " fails onnx::checker: " + e.what());
  }
  OutputFile file(path);
  google::protobuf::io::FileOutputStream out(file.fd());
  const bool serialized = proto_.SerializeToZeroCopyStream(&out);
  if (!out.Flush() || !serialized) {
    const int err = out.GetErrno();
    // Without an errno the serializer itself refused: protobuf cannot write
    // a message of 2 GiB or more.
    throw Error(ErrorKind::io,
                "cannot write " + file.describe() + ": " +
                    (err ? std::strerror(err) : "protobuf cannot serialize a model of 2 GiB or more"));
  }
  file.commit();
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
  // A subgraph (If, Loop, Scan) may read any name of the graphs around it:
  // whatever it reads counts as read by the main-graph node that holds it
  // (also names its own nodes define: an over-count only keeps a fold from
  // happening or makes it copy). Its names are taken, for new ones.
  std::function<void(const onnx::GraphProto&, int)> subgraph = [&](const onnx::GraphProto& sg, int holder) {
    for (const auto& t : sg.initializer()) used_names_[t.name()] = 1;
    for (const auto& in : sg.input()) used_names_[in.name()] = 1;
    for (const auto& n : sg.node()) {
      for (const auto& in : n.input())
        if (!in.empty()) consumers_[in].push_back(holder);
      for (const auto& out : n.output()) used_names_[out] = 1;
      if (!n.name().empty()) used_names_[n.name()] = 1;
      for (const auto& a : n.attribute()) {
        if (a.has_g()) subgraph(a.g(), holder);
        for (const auto& inner : a.graphs()) subgraph(inner, holder);
      }
    }
  };
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& n = g.node(i);
    for (const auto& out : n.output()) {
      if (out.empty()) continue;
      producer_[out] = i;
      used_names_[out] = 1;
    }
    for (const auto& in : n.input())
      if (!in.empty()) consumers_[in].push_back(i);
    for (const auto& a : n.attribute()) {
      if (a.has_g()) subgraph(a.g(), i);
      for (const auto& inner : a.graphs()) subgraph(inner, i);
    }
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
  std::string name = tensor;
  // Exporters deduplicate equal initializers behind Identity nodes (PyTorch
  // does for the running statistics of fresh BN layers): look through them.
  // The depth bound guards against cycles in malformed graphs.
  for (int depth = 0; depth < 64; ++depth) {
    if (is_graph_input(name)) return nullptr;  // an input can override it
    if (const auto it = initializer_.find(name); it != initializer_.end())
      return proto_.mutable_graph()->mutable_initializer(it->second);
    if (const auto it = constant_node_.find(name); it != constant_node_.end()) {
      auto* node = proto_.mutable_graph()->mutable_node(it->second);
      for (auto& a : *node->mutable_attribute())
        if (a.name() == "value" && a.has_t()) return a.mutable_t();
      return nullptr;
    }
    const auto p = producer(name);
    if (!p) return nullptr;
    const auto& n = proto_.graph().node(*p);
    if (n.op_type() != "Identity" || !(n.domain().empty() || n.domain() == "ai.onnx") || n.input_size() != 1)
      return nullptr;
    name = n.input(0);
  }
  return nullptr;
}

namespace {

// Rank and element type of each node output from its inputs', for the ops
// CNN exports use; -1 / 0 where unknown. (ONNX's own shape inference is not
// used: in libonnx 1.13 it crashes on some malformed models.)
void propagate(const onnx::NodeProto& n, std::int64_t opset,
               std::unordered_map<std::string, std::pair<int, std::int32_t>>& types,
               const std::function<const onnx::TensorProto*(const std::string&)>& constant) {
  if (n.output_size() == 0 || n.output(0).empty()) return;
  auto in = [&](int i) -> std::pair<int, std::int32_t> {
    if (i >= n.input_size()) return {-1, 0};
    const auto it = types.find(n.input(i));
    return it == types.end() ? std::pair<int, std::int32_t>{-1, 0} : it->second;
  };
  auto axes_count = [&]() -> int {
    if (const auto* a = find_attribute(n, "axes")) return a->ints_size();
    if (opset >= 13 && n.input_size() > 1 && !n.input(1).empty())
      if (const auto* t = constant(n.input(1)); t && t->dims_size() == 1) return static_cast<int>(t->dims(0));
    return -1;
  };
  const std::string& op = n.op_type();
  const auto x = in(0);
  int rank = -1;
  std::int32_t type = x.second;
  static const std::unordered_map<std::string, int> same_rank = {{"Relu", 0},
                                                                 {"LeakyRelu", 0},
                                                                 {"Clip", 0},
                                                                 {"Sigmoid", 0},
                                                                 {"HardSigmoid", 0},
                                                                 {"HardSwish", 0},
                                                                 {"Tanh", 0},
                                                                 {"Sqrt", 0},
                                                                 {"Neg", 0},
                                                                 {"Abs", 0},
                                                                 {"Exp", 0},
                                                                 {"Log", 0},
                                                                 {"Erf", 0},
                                                                 {"Identity", 0},
                                                                 {"Dropout", 0},
                                                                 {"Softmax", 0},
                                                                 {"LogSoftmax", 0},
                                                                 {"BatchNormalization", 0},
                                                                 {"InstanceNormalization", 0},
                                                                 {"LayerNormalization", 0},
                                                                 {"GroupNormalization", 0},
                                                                 {"Conv", 0},
                                                                 {"ConvTranspose", 0},
                                                                 {"MaxPool", 0},
                                                                 {"AveragePool", 0},
                                                                 {"GlobalAveragePool", 0},
                                                                 {"GlobalMaxPool", 0},
                                                                 {"LpPool", 0},
                                                                 {"Transpose", 0},
                                                                 {"Concat", 0},
                                                                 {"Pad", 0},
                                                                 {"Cast", 0},
                                                                 {"Mish", 0},
                                                                 {"Elu", 0},
                                                                 {"Selu", 0},
                                                                 {"PRelu", 0},
                                                                 {"Resize", 0},
                                                                 {"Upsample", 0},
                                                                 {"DepthToSpace", 0},
                                                                 {"SpaceToDepth", 0},
                                                                 {"Slice", 0},
                                                                 {"Tile", 0}};
  static const std::unordered_map<std::string, int> broadcast = {
      {"Add", 0}, {"Sub", 0}, {"Mul", 0}, {"Div", 0}, {"Pow", 0}, {"Max", 0}, {"Min", 0}, {"Sum", 0}};
  if (same_rank.count(op)) {
    rank = x.first;
    if (op == "Cast") type = static_cast<std::int32_t>(int_attribute(n, "to", 0));
  } else if (broadcast.count(op)) {
    for (int i = 0; i < n.input_size(); ++i) {
      const int r = in(i).first;
      if (r < 0) {
        rank = -1;
        break;
      }
      rank = std::max(rank, r);
    }
  } else if (op == "Gemm" || op == "Flatten") {
    rank = 2;
  } else if (op == "MatMul") {
    const int a = x.first, b = in(1).first;
    if (a >= 1 && b >= 1) rank = a == 1 && b == 1 ? 0 : a == 1 ? b - 1 : b == 1 ? a - 1 : std::max(a, b);
  } else if (op == "Reshape") {
    if (const auto* t = n.input_size() > 1 ? constant(n.input(1)) : nullptr; t && t->dims_size() == 1)
      rank = static_cast<int>(t->dims(0));
  } else if (op == "Unsqueeze" || op == "Squeeze") {
    const int k = axes_count();
    if (x.first >= 0 && k >= 0) rank = op == "Unsqueeze" ? x.first + k : x.first - k;
  } else if (op == "Shape") {
    rank = 1;
    type = onnx::TensorProto::INT64;
  } else {
    return;
  }
  types.try_emplace(n.output(0), rank, type);
}

}  // namespace

void OnnxModel::infer_types() const {
  inferred_ = true;
  const auto& g = proto_.graph();
  for (const auto& t : g.initializer()) types_[t.name()] = {t.dims_size(), t.data_type()};
  // What the model declares comes first.
  auto note = [&](const onnx::ValueInfoProto& v) {
    if (!v.type().has_tensor_type()) return;
    const auto& tt = v.type().tensor_type();
    types_.try_emplace(v.name(), tt.has_shape() ? tt.shape().dim_size() : -1, tt.elem_type());
  };
  for (const auto& v : g.input()) note(v);
  for (const auto& v : g.output()) note(v);
  for (const auto& v : g.value_info()) note(v);
  const std::int64_t version = opset();
  for (const auto& n : g.node()) {
    if (!n.domain().empty() && n.domain() != "ai.onnx") continue;
    if (n.op_type() == "Constant") {
      if (const auto* t = constant(n.output_size() ? n.output(0) : ""))
        types_.try_emplace(n.output(0), t->dims_size(), t->data_type());
      continue;
    }
    propagate(n, version, types_, [this](const std::string& name) { return constant(name); });
  }
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

std::string OnnxModel::add_initializer(onnx::TensorProto t) {
  const std::string name = t.name();
  if (proto_.ir_version() < 4) {
    onnx::ValueInfoProto* in = graph().add_input();
    in->set_name(name);
    auto* type = in->mutable_type()->mutable_tensor_type();
    type->set_elem_type(t.data_type());
    auto* shape = type->mutable_shape();
    for (std::int64_t d : t.dims()) shape->add_dim()->set_dim_value(d);
  }
  *graph().add_initializer() = std::move(t);
  return name;
}

void OnnxModel::remove_initializers(const std::set<std::string>& names) {
  auto* inits = graph().mutable_initializer();
  for (int i = inits->size() - 1; i >= 0; --i)
    if (names.count(inits->Get(i).name())) inits->DeleteSubrange(i, 1);
  auto* ins = graph().mutable_input();
  for (int i = ins->size() - 1; i >= 0; --i)
    if (names.count(ins->Get(i).name())) ins->DeleteSubrange(i, 1);
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

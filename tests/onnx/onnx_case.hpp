// Reads an ONNX backend node test case (model.onnx plus test_data_set_0 of
// input_i.pb / output_i.pb TensorProtos) for the conformance tests.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace bnorm::test {

struct OnnxTensor {
  std::vector<std::int64_t> dims;
  std::vector<float> data;
};

inline OnnxTensor read_tensor(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  onnx::TensorProto t;
  if (!in || !t.ParseFromIstream(&in)) throw std::runtime_error("cannot read tensor " + path.string());
  if (t.data_type() != onnx::TensorProto::FLOAT)
    throw std::runtime_error("not a float tensor: " + path.string());
  OnnxTensor out;
  out.dims.assign(t.dims().begin(), t.dims().end());
  if (!t.raw_data().empty()) {
    out.data.resize(t.raw_data().size() / sizeof(float));
    std::memcpy(out.data.data(), t.raw_data().data(), out.data.size() * sizeof(float));
  } else {
    out.data.assign(t.float_data().begin(), t.float_data().end());
  }
  return out;
}

struct OnnxCase {
  onnx::ModelProto model;
  std::vector<OnnxTensor> inputs, outputs;

  const onnx::NodeProto& node() const { return model.graph().node(0); }
  /// A float attribute of the node, or fallback when absent.
  float attr_float(const std::string& name, float fallback) const {
    for (const auto& a : node().attribute())
      if (a.name() == name) return a.f();
    return fallback;
  }
  std::int64_t attr_int(const std::string& name, std::int64_t fallback) const {
    for (const auto& a : node().attribute())
      if (a.name() == name) return a.i();
    return fallback;
  }
};

inline OnnxCase read_case(const std::filesystem::path& dir) {
  OnnxCase c;
  std::ifstream in(dir / "model.onnx", std::ios::binary);
  if (!in || !c.model.ParseFromIstream(&in))
    throw std::runtime_error("cannot read " + (dir / "model.onnx").string());
  const auto set = dir / "test_data_set_0";
  for (int i = 0; std::filesystem::exists(set / ("input_" + std::to_string(i) + ".pb")); ++i)
    c.inputs.push_back(read_tensor(set / ("input_" + std::to_string(i) + ".pb")));
  for (int i = 0; std::filesystem::exists(set / ("output_" + std::to_string(i) + ".pb")); ++i)
    c.outputs.push_back(read_tensor(set / ("output_" + std::to_string(i) + ".pb")));
  return c;
}

}  // namespace bnorm::test

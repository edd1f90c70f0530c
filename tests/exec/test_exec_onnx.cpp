// Every ONNX backend node test case whose graph uses only ops the executor
// runs (generated in the build from Debian's python3-onnx): the executor's
// outputs must match the expected ones (rtol 1e-3, atol 1e-7 for floats, as
// ONNX's backend tests use; exact for integers and bool), or, for the few
// cases outside its scope, it must refuse them with the documented reason.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "bnorm/error.hpp"
#include "exec/executor.hpp"

namespace bnorm::test {
namespace {

namespace fs = std::filesystem;

// Cases the executor refuses: the error kind and a word its message holds.
struct Refusal {
  ErrorKind kind;
  std::string word;
};
const std::map<std::string, Refusal>& expected_refusals() {
  static const std::map<std::string, Refusal> m = {
      // Out of scope: strings, sequences and optionals, MaxPool's Indices,
      // Dropout's random training masks.
      {"test_cast_FLOAT_to_STRING", {ErrorKind::unsupported, "STRING"}},
      {"test_cast_STRING_to_FLOAT", {ErrorKind::unsupported, "STRING"}},
      {"test_castlike_FLOAT_to_STRING_expanded", {ErrorKind::unsupported, "STRING"}},
      {"test_castlike_STRING_to_FLOAT_expanded", {ErrorKind::unsupported, "STRING"}},
      {"test_identity_opt", {ErrorKind::unsupported, "not a tensor"}},
      {"test_identity_sequence", {ErrorKind::unsupported, "not a tensor"}},
      {"test_maxpool_with_argmax_2d_precomputed_pads", {ErrorKind::unsupported, "Indices"}},
      {"test_maxpool_with_argmax_2d_precomputed_strides", {ErrorKind::unsupported, "Indices"}},
      {"test_training_dropout", {ErrorKind::unsupported, "training mode"}},
      {"test_training_dropout_default", {ErrorKind::unsupported, "training mode"}},
      {"test_training_dropout_default_mask", {ErrorKind::unsupported, "training mode"}},
      {"test_training_dropout_mask", {ErrorKind::unsupported, "training mode"}},
      // Broken data in python3-onnx 1.12: input 'like' is written with shape
      // (1,) while the model declares 3x4; the input check must catch it.
      {"test_castlike_BFLOAT16_to_FLOAT_expanded", {ErrorKind::shape_mismatch, "'like'"}},
      {"test_castlike_FLOAT_to_BFLOAT16_expanded", {ErrorKind::shape_mismatch, "'like'"}},
  };
  return m;
}

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  const fs::path root = fs::path(BNORM_EXEC_NODE_DATA_DIR) / "node";
  if (!fs::exists(root)) return names;
  for (const auto& e : fs::directory_iterator(root)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

onnx::TensorProto read_proto(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  onnx::TensorProto t;
  if (!in || !t.ParseFromIstream(&in)) throw std::runtime_error("cannot read " + p.string());
  return t;
}

// python3-onnx 1.12 writes bfloat16 test data as uint16 tensors (numpy has
// no bfloat16): read them as the bfloat16 the model declares.
exec::Tensor read_tensor(const fs::path& p, const onnx::ValueInfoProto& declared) {
  exec::Tensor t = exec::from_onnx(read_proto(p), p.filename().string());
  if (t.type() == exec::ElementType::u16 &&
      declared.type().tensor_type().elem_type() == onnx::TensorProto::BFLOAT16) {
    exec::Tensor bf(exec::ElementType::bf16, t.shape());
    std::memcpy(bf.raw(), t.raw(), t.bytes());
    return bf;
  }
  return t;
}

void expect_close(const exec::Tensor& got, const exec::Tensor& want, const std::string& what) {
  ASSERT_EQ(exec::to_string(got.shape()), exec::to_string(want.shape())) << what;
  ASSERT_EQ(got.type(), want.type()) << what << ": " << got.str() << " vs " << want.str();
  const bool floating = exec::is_floating(want.type());
  // The 1.12 generator truncates float to bfloat16; the executor rounds to
  // nearest even (as later ONNX does): allow one bfloat16 step.
  const double rtol = want.type() == exec::ElementType::bf16 ? 1.0 / 128 : 1e-3;
  for (std::int64_t i = 0; i < want.elements(); ++i) {
    const double g = exec::value_at(got, i), w = exec::value_at(want, i);
    if (std::isnan(w)) {
      ASSERT_TRUE(std::isnan(g)) << what << "[" << i << "]";
      continue;
    }
    if (floating) {
      if (std::isinf(w)) {
        ASSERT_EQ(g, w) << what << "[" << i << "]";
        continue;
      }
      ASSERT_LE(std::fabs(g - w), 1e-7 + rtol * std::fabs(w)) << what << "[" << i << "]: " << g << " vs " << w;
    } else {
      ASSERT_EQ(g, w) << what << "[" << i << "]";
    }
  }
}

class NodeCase : public ::testing::TestWithParam<std::string> {};

TEST_P(NodeCase, MatchesOrIsRefusedAsDocumented) {
  const std::string name = GetParam();
  const fs::path dir = fs::path(BNORM_EXEC_NODE_DATA_DIR) / "node" / name;
  const auto refusal = expected_refusals().find(name);
  try {
    const auto model = model::OnnxModel::load(dir / "model.onnx");
    exec::Executor executor(model);
    int sets = 0;
    for (int s = 0; fs::exists(dir / ("test_data_set_" + std::to_string(s))); ++s, ++sets) {
      const fs::path set = dir / ("test_data_set_" + std::to_string(s));
      std::vector<exec::Tensor> inputs;
      for (int i = 0; fs::exists(set / ("input_" + std::to_string(i) + ".pb")); ++i)
        inputs.push_back(read_tensor(set / ("input_" + std::to_string(i) + ".pb"), model.graph().input(i)));
      const auto outputs = executor.run(inputs);
      int checked = 0;
      for (int i = 0; fs::exists(set / ("output_" + std::to_string(i) + ".pb")); ++i, ++checked) {
        ASSERT_LT(static_cast<std::size_t>(i), outputs.size());
        const auto want = read_tensor(set / ("output_" + std::to_string(i) + ".pb"), model.graph().output(i));
        expect_close(outputs[static_cast<std::size_t>(i)], want, name + " output " + std::to_string(i));
      }
      EXPECT_EQ(static_cast<std::size_t>(checked), outputs.size());
    }
    EXPECT_GT(sets, 0) << "no test data";
    EXPECT_EQ(refusal, expected_refusals().end()) << name << " was expected to be refused";
  } catch (const Error& e) {
    ASSERT_NE(refusal, expected_refusals().end()) << name << ": " << e.what();
    EXPECT_EQ(e.kind(), refusal->second.kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(refusal->second.word), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Onnx, NodeCase, ::testing::ValuesIn(case_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(NodeCases, WereGenerated) {
  // Guards against an empty parameter list passing silently.
  EXPECT_GE(case_names().size(), 200u);
}

}  // namespace
}  // namespace bnorm::test

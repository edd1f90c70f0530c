// ONNX RMSNormalization-23 cases written from the operator's specification
// by make_spec_cases.py (python3-onnx 1.12 predates the op), run through
// rms_norm_forward with normalized_dims = rank - axis and ONNX's default
// epsilon 1e-5.

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "bnorm/bnorm.hpp"
#include "onnx/onnx_case.hpp"

namespace bnorm::test {
namespace {

const std::filesystem::path kDataDir = BNORM_ONNX_NODE_DATA_DIR;

TEST(OnnxRmsNormalization, SpecCases) {
  std::size_t count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kDataDir / "node")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("test_rms_normalization", 0) != 0) continue;
    SCOPED_TRACE(name);
    ++count;
    const OnnxCase c = read_case(entry.path());
    ASSERT_EQ(c.node().op_type(), "RMSNormalization");
    ASSERT_EQ(c.inputs.size(), 2u);
    ASSERT_EQ(c.outputs.size(), 1u);
    const OnnxTensor& x = c.inputs[0];
    const int nd = normalized_dims_from_axis(static_cast<int>(x.dims.size()), c.attr_int("axis", -1));
    const double eps = c.attr_float("epsilon", 1e-5f);  // ONNX's default, not PyTorch's
    const TensorDesc desc(DType::f32, Layout::channels_first, std::span<const std::int64_t>(x.dims));
    std::vector<float> y(x.data.size());
    rms_norm_forward(desc, x.data.data(), desc, y.data(), nd, c.inputs[1].data.data(), nullptr, eps);
    const OnnxTensor& want = c.outputs[0];
    ASSERT_EQ(y.size(), want.data.size());
    for (std::size_t i = 0; i < y.size(); ++i)
      EXPECT_NEAR(y[i], want.data[i], 1e-5 * (1 + std::fabs(want.data[i]))) << i;
  }
  EXPECT_EQ(count, 20u);
}

}  // namespace
}  // namespace bnorm::test

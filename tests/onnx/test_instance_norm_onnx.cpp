// ONNX InstanceNormalization conformance: every test_instancenorm_* backend
// node case generated from Debian's python3-onnx in the build, run through
// instance_norm_onnx.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "bnorm/bnorm.hpp"
#include "onnx/onnx_case.hpp"

namespace bnorm::test {
namespace {

const std::filesystem::path kDataDir = BNORM_ONNX_NODE_DATA_DIR;

TEST(OnnxInstanceNormalization, NodeCases) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(kDataDir / "node")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("test_instancenorm", 0) != 0) continue;
    names.push_back(name);
    SCOPED_TRACE(name);
    const OnnxCase c = read_case(entry.path());
    ASSERT_EQ(c.node().op_type(), "InstanceNormalization");
    ASSERT_EQ(c.inputs.size(), 3u);
    ASSERT_EQ(c.outputs.size(), 1u);
    const OnnxTensor& x = c.inputs[0];
    const TensorDesc desc(DType::f32, Layout::channels_first, std::span<const std::int64_t>(x.dims));
    std::vector<float> y(x.data.size());
    instance_norm_onnx(desc, x.data.data(), c.inputs[1].data.data(), c.inputs[2].data.data(), desc, y.data(),
                       c.attr_float("epsilon", 1e-5f));
    const OnnxTensor& want = c.outputs[0];
    ASSERT_EQ(y.size(), want.data.size());
    for (std::size_t i = 0; i < y.size(); ++i)
      EXPECT_NEAR(y[i], want.data[i], 1e-5 * (1 + std::fabs(want.data[i]))) << i;
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"test_instancenorm_epsilon", "test_instancenorm_example"}));
}

}  // namespace
}  // namespace bnorm::test

// ONNX LayerNormalization-17 conformance: every test_layer_normalization_*
// backend node case generated from Debian's python3-onnx in the build (the
// _expanded variants use other ops and are not generated), run through
// layer_norm_forward with normalized_dims = rank - axis; Y, Mean and
// InvStdDev compared.

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "bnorm/bnorm.hpp"
#include "onnx/onnx_case.hpp"

namespace bnorm::test {
namespace {

const std::filesystem::path kDataDir = BNORM_ONNX_NODE_DATA_DIR;

const char* const kCases[] = {
    "test_layer_normalization_2d_axis0",
    "test_layer_normalization_2d_axis1",
    "test_layer_normalization_2d_axis_negative_1",
    "test_layer_normalization_2d_axis_negative_2",
    "test_layer_normalization_3d_axis0_epsilon",
    "test_layer_normalization_3d_axis1_epsilon",
    "test_layer_normalization_3d_axis2_epsilon",
    "test_layer_normalization_3d_axis_negative_1_epsilon",
    "test_layer_normalization_3d_axis_negative_2_epsilon",
    "test_layer_normalization_3d_axis_negative_3_epsilon",
    "test_layer_normalization_4d_axis0",
    "test_layer_normalization_4d_axis1",
    "test_layer_normalization_4d_axis2",
    "test_layer_normalization_4d_axis3",
    "test_layer_normalization_4d_axis_negative_1",
    "test_layer_normalization_4d_axis_negative_2",
    "test_layer_normalization_4d_axis_negative_3",
    "test_layer_normalization_4d_axis_negative_4",
    "test_layer_normalization_default_axis",
};

void expect_close(const std::vector<float>& got, const OnnxTensor& want, const char* what) {
  ASSERT_EQ(got.size(), want.data.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want.data[i], 1e-5 * (1 + std::fabs(want.data[i]))) << what << "[" << i << "]";
}

class OnnxLayerNormalization : public ::testing::TestWithParam<const char*> {};

TEST_P(OnnxLayerNormalization, Case) {
  const auto dir = kDataDir / "node" / GetParam();
  ASSERT_TRUE(std::filesystem::exists(dir)) << dir << " was not generated";
  const OnnxCase c = read_case(dir);
  ASSERT_EQ(c.model.graph().node_size(), 1);
  ASSERT_EQ(c.node().op_type(), "LayerNormalization");
  ASSERT_EQ(c.inputs.size(), 3u);
  ASSERT_EQ(c.outputs.size(), 3u);  // Y, Mean, InvStdDev
  const OnnxTensor& x = c.inputs[0];
  const int rank = static_cast<int>(x.dims.size());
  const int nd = normalized_dims_from_axis(rank, c.attr_int("axis", -1));
  const double eps = c.attr_float("epsilon", 1e-5f);
  ASSERT_EQ(c.attr_int("stash_type", 1), 1);  // statistics in f32 (or better): always so here
  const TensorDesc desc(DType::f32, Layout::channels_first, std::span<const std::int64_t>(x.dims));
  std::vector<float> y(x.data.size()), mean(c.outputs[1].data.size()), invstd(c.outputs[2].data.size());
  layer_norm_forward(desc, x.data.data(), desc, y.data(), nd, c.inputs[1].data.data(), c.inputs[2].data.data(),
                     mean.data(), invstd.data(), eps);
  expect_close(y, c.outputs[0], "Y");
  expect_close(mean, c.outputs[1], "Mean");
  expect_close(invstd, c.outputs[2], "InvStdDev");
}

INSTANTIATE_TEST_SUITE_P(NodeCases, OnnxLayerNormalization, ::testing::ValuesIn(kCases));

// Every generated case is one of the above (a new onnx release with more
// cases must extend the list).
TEST(OnnxLayerNormalizationCases, AllGeneratedCasesAreListed) {
  std::size_t found = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kDataDir / "node")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("test_layer_normalization", 0) != 0) continue;
    ++found;
    EXPECT_NE(std::find(std::begin(kCases), std::end(kCases), name), std::end(kCases)) << name;
  }
  EXPECT_EQ(found, std::size(kCases));
}

}  // namespace
}  // namespace bnorm::test

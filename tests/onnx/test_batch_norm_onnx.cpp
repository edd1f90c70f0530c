// ONNX BatchNormalization conformance: the backend node test cases generated
// from Debian's python3-onnx in the build (test_batchnorm_example,
// test_batchnorm_epsilon and their _training_mode variants), run through
// bnorm's functions. ONNX's momentum weights the old running value and its
// training_mode running variance is the biased one (DESIGN.md section 2).

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "bnorm/bnorm.hpp"
#include "onnx/onnx_case.hpp"

namespace bnorm::test {
namespace {

const std::filesystem::path kDataDir = BNORM_ONNX_NODE_DATA_DIR;

void expect_close(const std::vector<float>& got, const OnnxTensor& want, const char* what) {
  ASSERT_EQ(got.size(), want.data.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want.data[i], 1e-5 * (1 + std::fabs(want.data[i]))) << what << "[" << i << "]";
}

void run_case(const std::string& name) {
  SCOPED_TRACE(name);
  const auto dir = kDataDir / "node" / name;
  ASSERT_TRUE(std::filesystem::exists(dir)) << dir << " was not generated";
  const OnnxCase c = read_case(dir);
  ASSERT_EQ(c.node().op_type(), "BatchNormalization");
  ASSERT_EQ(c.inputs.size(), 5u);
  const double eps = c.attr_float("epsilon", 1e-5f);
  const double onnx_momentum = c.attr_float("momentum", 0.9f);
  const bool training = c.attr_int("training_mode", 0) != 0;
  const OnnxTensor& x = c.inputs[0];
  const TensorDesc desc(DType::f32, Layout::channels_first, std::span<const std::int64_t>(x.dims));
  std::vector<float> y(x.data.size());
  const float* scale = c.inputs[1].data.data();
  const float* bias = c.inputs[2].data.data();
  std::vector<float> mean = c.inputs[3].data, var = c.inputs[4].data;
  if (!training) {
    batch_norm_forward_inference(desc, x.data.data(), desc, y.data(), scale, bias, mean.data(), var.data(),
                                 eps);
    expect_close(y, c.outputs[0], "Y");
    return;
  }
  ASSERT_EQ(c.outputs.size(), 3u);
  BatchNormConfig config;
  config.eps = eps;
  config.momentum = 1.0 - onnx_momentum;  // ONNX weights the old value
  config.unbiased_running_var = false;    // ONNX averages the population variance
  std::vector<float> save_mean(mean.size()), save_invstd(mean.size());
  batch_norm_forward_training(desc, x.data.data(), desc, y.data(), scale, bias, save_mean.data(),
                              save_invstd.data(), RunningStats{mean.data(), var.data(), nullptr}, config);
  expect_close(y, c.outputs[0], "Y");
  expect_close(mean, c.outputs[1], "running_mean");
  expect_close(var, c.outputs[2], "running_var");
}

TEST(OnnxBatchNormalization, Example) { run_case("test_batchnorm_example"); }
TEST(OnnxBatchNormalization, Epsilon) { run_case("test_batchnorm_epsilon"); }
TEST(OnnxBatchNormalization, ExampleTrainingMode) { run_case("test_batchnorm_example_training_mode"); }
TEST(OnnxBatchNormalization, EpsilonTrainingMode) { run_case("test_batchnorm_epsilon_training_mode"); }

}  // namespace
}  // namespace bnorm::test

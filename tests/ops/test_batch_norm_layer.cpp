// bnorm::BatchNorm against torch.nn.BatchNorm semantics (DESIGN.md section 2):
// running statistics over several steps with momentum and with the
// cumulative average, eval mode, track_running_stats = false, affine = false,
// and backward after train and eval forwards.

#include <gtest/gtest.h>

#include <vector>

#include "common/bn_oracle.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

TEST(BatchNormLayer, DefaultsMatchTorch) {
  BatchNorm bn(BatchNorm::Options{.num_features = 5});
  EXPECT_TRUE(bn.is_training());
  EXPECT_EQ(bn.options().eps, 1e-5);
  ASSERT_TRUE(bn.options().momentum.has_value());
  EXPECT_EQ(*bn.options().momentum, 0.1);
  EXPECT_EQ(bn.weight().size(), 5u);
  for (float w : bn.weight()) EXPECT_EQ(w, 1.0f);
  for (float b : bn.bias()) EXPECT_EQ(b, 0.0f);
  for (float m : bn.running_mean()) EXPECT_EQ(m, 0.0f);
  for (float v : bn.running_var()) EXPECT_EQ(v, 1.0f);
  EXPECT_EQ(bn.num_batches_tracked(), 0);
  BatchNorm plain(BatchNorm::Options{.num_features = 5, .affine = false, .track_running_stats = false});
  EXPECT_TRUE(plain.weight().empty());
  EXPECT_TRUE(plain.running_mean().empty());
}

// Running statistics after K steps, for momentum 0.1 and for the cumulative
// average (which must equal the plain mean of the batch statistics).
TEST(BatchNormLayer, RunningStatisticsOverSteps) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    for (bool cumulative : {false, true}) {
      SCOPED_TRACE(std::string(to_string(layout)) + (cumulative ? " cumulative" : " momentum"));
      const TensorDesc d(DType::f32, layout, {4, 6, 5, 3});
      BatchNorm bn(BatchNorm::Options{.num_features = 6,
                                      .momentum = cumulative ? std::nullopt : std::optional<double>(0.1)});
      std::vector<double> want_mean(6, 0.0), want_var(6, 1.0), sum_mean(6, 0.0), sum_var(6, 0.0);
      const int steps = 5;
      const double n = 4 * 5 * 3;
      for (int k = 1; k <= steps; ++k) {
        Buffer src(d), dst(d);
        fill_normal(src, 100 + static_cast<std::uint64_t>(k), 2.0 * k, 0.5 + k);
        const TrainingExpectation e = expect_training(src, nullptr, nullptr, 1e-5);
        bn.forward(d, src.data(), d, dst.data());
        ASSERT_TRUE(check_output(dst, e.dst, "dst"));
        for (std::size_t c = 0; c < 6; ++c) {
          const double unbiased = e.var[c] * n / (n - 1);
          sum_mean[c] += e.mean[c];
          sum_var[c] += unbiased;
          want_mean[c] = 0.9 * want_mean[c] + 0.1 * e.mean[c];
          want_var[c] = 0.9 * want_var[c] + 0.1 * unbiased;
        }
      }
      EXPECT_EQ(bn.num_batches_tracked(), steps);
      for (std::size_t c = 0; c < 6; ++c) {
        const double m = cumulative ? sum_mean[c] / steps : want_mean[c];
        const double v = cumulative ? sum_var[c] / steps : want_var[c];
        EXPECT_NEAR(bn.running_mean()[c], m, 1e-5 * (1 + std::fabs(m))) << c;
        EXPECT_NEAR(bn.running_var()[c], v, 1e-5 * v) << c;
      }
    }
  }
}

// A checkpoint restored into a new layer (parameters, running statistics
// and num_batches_tracked, as PyTorch's state_dict) continues exactly: the
// cumulative average weighs the next batch 1 / (count + 1), not 1.
TEST(BatchNormLayer, RestoredCountContinuesTheCumulativeAverage) {
  const TensorDesc d(DType::f32, Layout::channels_first, {4, 3, 5});
  const BatchNorm::Options o{.num_features = 3, .momentum = std::nullopt};
  BatchNorm trained(o), restored(o);
  Buffer x(d), y(d);
  for (std::uint64_t k = 0; k < 3; ++k) {
    fill_normal(x, 300 + k, 1.0 + static_cast<double>(k), 2.0);
    trained.forward(d, x.data(), d, y.data());
  }
  std::copy_n(trained.running_mean().begin(), 3, restored.running_mean().begin());
  std::copy_n(trained.running_var().begin(), 3, restored.running_var().begin());
  restored.set_num_batches_tracked(trained.num_batches_tracked());
  fill_normal(x, 310, -2.0, 0.5);
  trained.forward(d, x.data(), d, y.data());
  restored.forward(d, x.data(), d, y.data());
  EXPECT_EQ(restored.num_batches_tracked(), 4);
  for (std::size_t c = 0; c < 3; ++c) {
    EXPECT_EQ(restored.running_mean()[c], trained.running_mean()[c]) << c;
    EXPECT_EQ(restored.running_var()[c], trained.running_var()[c]) << c;
  }
  expect_error([&] { restored.set_num_batches_tracked(-1); }, ErrorKind::invalid_argument,
               {"'count' = -1", ">= 0"});
  EXPECT_EQ(restored.num_batches_tracked(), 4);
}

TEST(BatchNormLayer, EvalUsesRunningStatistics) {
  const TensorDesc d(DType::bf16, Layout::channels_last, {3, 4, 7});
  BatchNorm bn(BatchNorm::Options{.num_features = 4, .eps = 1e-3});
  Buffer src(d), dst(d);
  fill_normal(src, 1, 5.0, 2.0);
  bn.forward(d, src.data(), d, dst.data());
  bn.eval();
  EXPECT_FALSE(bn.is_training());
  std::vector<float> rm(bn.running_mean().begin(), bn.running_mean().end());
  std::vector<float> rv(bn.running_var().begin(), bn.running_var().end());
  bn.weight()[2] = 3.0f;
  bn.bias()[1] = -2.0f;
  fill_normal(src, 2, -1.0, 1.0);
  bn.forward(d, src.data(), d, dst.data());
  // Eval leaves the running statistics and the counter alone.
  EXPECT_EQ(bn.num_batches_tracked(), 1);
  EXPECT_EQ(std::vector<float>(bn.running_mean().begin(), bn.running_mean().end()), rm);
  std::vector<double> mean_d(rm.begin(), rm.end()), var_d(rv.begin(), rv.end()),
      want(static_cast<std::size_t>(d.elements()));
  bref::normalize(ref_shape(d), src.data(), mean_d.data(), var_d.data(), 1e-3, bn.weight().data(),
                  bn.bias().data(), want.data());
  EXPECT_TRUE(check_output(dst, want, "eval dst"));

  // Backward after eval: frozen statistics, dx = dy * gamma * invstd.
  Buffer dy(d), dx(d);
  fill_normal(dy, 3);
  bn.backward(d, src.data(), d, dy.data(), d, dx.data());
  std::vector<float> invstd(4);
  for (int c = 0; c < 4; ++c)
    invstd[static_cast<std::size_t>(c)] =
        static_cast<float>(1.0 / std::sqrt(rv[static_cast<std::size_t>(c)] + 1e-3));
  const BackwardExpectation e = expect_backward(src, dy, bn.weight().data(), rm.data(), invstd.data(), false);
  EXPECT_TRUE(check_backward(e, &dx, bn.weight_grad().data(), bn.bias_grad().data()));
}

TEST(BatchNormLayer, WithoutRunningStatsEvalUsesBatchStatistics) {
  const TensorDesc d(DType::f32, Layout::channels_first, {5, 3, 4});
  BatchNorm bn(BatchNorm::Options{.num_features = 3, .affine = false, .track_running_stats = false});
  bn.eval();
  Buffer src(d), dst(d);
  fill_normal(src, 9, 3.0, 2.0);
  bn.forward(d, src.data(), d, dst.data());
  EXPECT_TRUE(check_output(dst, expect_training(src, nullptr, nullptr, 1e-5).dst, "dst"));
  EXPECT_EQ(bn.num_batches_tracked(), 0);
  // Backward then flows through the batch statistics.
  Buffer dy(d), dx(d);
  fill_normal(dy, 10);
  bn.backward(d, src.data(), d, dy.data(), d, dx.data());
  const BackwardExpectation e =
      expect_backward(src, dy, nullptr, bn.saved_mean().data(), bn.saved_invstd().data(), true);
  EXPECT_TRUE(check_backward(e, &dx, nullptr, nullptr));
  EXPECT_TRUE(bn.weight_grad().empty());
}

TEST(BatchNormLayer, TrainingBackwardGivesParameterGradients) {
  const TensorDesc d(DType::f16, Layout::channels_first, {3, 2, 9});
  BatchNorm bn(BatchNorm::Options{.num_features = 2});
  bn.weight()[0] = 0.5f;
  bn.bias()[1] = 0.25f;
  Buffer src(d), dst(d), dy(d), dx(d);
  fill_normal(src, 4);
  fill_normal(dy, 5);
  bn.forward(d, src.data(), d, dst.data());
  bn.backward(d, src.data(), d, dy.data(), d, dx.data());
  const BackwardExpectation e =
      expect_backward(src, dy, bn.weight().data(), bn.saved_mean().data(), bn.saved_invstd().data(), true);
  EXPECT_TRUE(check_backward(e, &dx, bn.weight_grad().data(), bn.bias_grad().data()));
  bn.reset_parameters();
  EXPECT_EQ(bn.weight()[0], 1.0f);
  EXPECT_EQ(bn.num_batches_tracked(), 0);
  EXPECT_EQ(bn.running_var()[0], 1.0f);
}

}  // namespace
}  // namespace bnorm::test

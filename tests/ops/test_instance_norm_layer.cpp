// bnorm::InstanceNorm against torch.nn.InstanceNorm semantics: defaults
// (affine and track_running_stats off), running statistics over steps as
// at::instance_norm updates them, eval with and without running
// statistics, backward after train and eval forwards, 1d / 2d / 3d.

#include <gtest/gtest.h>

#include <vector>

#include "common/group_norm_oracle.hpp"
#include "common/test_util.hpp"
#include "kernels/instance_norm/ref.hpp"

namespace bnorm::test {
namespace {

TEST(InstanceNormLayer, DefaultsMatchTorch) {
  InstanceNorm in(InstanceNorm::Options{.num_features = 5});
  EXPECT_TRUE(in.is_training());
  EXPECT_EQ(in.options().eps, 1e-5);
  EXPECT_EQ(in.options().momentum, 0.1);
  EXPECT_FALSE(in.options().affine);
  EXPECT_FALSE(in.options().track_running_stats);
  EXPECT_TRUE(in.weight().empty());
  EXPECT_TRUE(in.running_mean().empty());
  InstanceNorm full(InstanceNorm::Options{.num_features = 5, .affine = true, .track_running_stats = true});
  for (float w : full.weight()) EXPECT_EQ(w, 1.0f);
  for (float m : full.running_mean()) EXPECT_EQ(m, 0.0f);
  for (float v : full.running_var()) EXPECT_EQ(v, 1.0f);
}

TEST(InstanceNormLayer, RunningStatisticsThenEval) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    for (const std::vector<std::int64_t>& dims : {std::vector<std::int64_t>{4, 6, 9},
                                                  std::vector<std::int64_t>{3, 6, 4, 5},
                                                  std::vector<std::int64_t>{2, 6, 2, 3, 4}}) {
      const TensorDesc d(DType::f32, layout, std::span<const std::int64_t>(dims));
      SCOPED_TRACE(d.str());
      InstanceNorm in(InstanceNorm::Options{.num_features = 6, .momentum = 0.2, .affine = true,
                                            .track_running_stats = true});
      const std::vector<float> w = uniform(6, 1, 0.5f, 1.5f), b = uniform(6, 2, -1.0f, 1.0f);
      std::copy(w.begin(), w.end(), in.weight().begin());
      std::copy(b.begin(), b.end(), in.bias().begin());
      std::vector<double> rm(6, 0.0), rv(6, 1.0);
      Buffer src(d), dst(d), dy(d), dx(d);
      for (int step = 0; step < 4; ++step) {
        fill_normal(src, 100 + static_cast<std::uint64_t>(step), 2.0 * step, 0.5 + step);
        const GroupExpectation e = expect_group_norm(src, 6, w.data(), b.data(), 1e-5);
        in.forward(d, src.data(), d, dst.data());
        ASSERT_TRUE(check_output(dst, e.dst, "dst"));
        kernels::instance_norm::ref::update_running(group_shape(d, 6), e.mean.data(), e.var.data(), 0.2, rm.data(),
                                                    rv.data());
      }
      EXPECT_TRUE(check_channels(in.running_mean().data(), rm, 2e-6, 1e-6, "running_mean"));
      EXPECT_TRUE(check_channels(in.running_var().data(), rv, 2e-6, 1e-6, "running_var"));
      // Backward of the training forward: through the instance statistics.
      fill_normal(dy, 7);
      in.backward(d, src.data(), d, dy.data(), d, dx.data());
      const GroupBackwardExpectation be =
          expect_group_backward(src, dy, 6, w.data(), in.saved_mean().data(), in.saved_invstd().data());
      ASSERT_TRUE(check_group_backward(be, &dx, in.weight_grad().data(), in.bias_grad().data()));
      // Eval: the running statistics, and backward with them fixed.
      in.eval();
      in.forward(d, src.data(), d, dst.data());
      std::vector<double> md(in.running_mean().begin(), in.running_mean().end()),
          vd(in.running_var().begin(), in.running_var().end());
      std::vector<double> want(static_cast<std::size_t>(d.elements()));
      bref::normalize(ref_shape(d), src.data(), md.data(), vd.data(), 1e-5, w.data(), b.data(), want.data());
      ASSERT_TRUE(check_output(dst, want, "eval dst"));
      ASSERT_EQ(in.saved_mean().size(), 6u);
      in.backward(d, src.data(), d, dy.data(), d, dx.data());
      const BackwardExpectation fe =
          expect_backward(src, dy, w.data(), in.saved_mean().data(), in.saved_invstd().data(), false);
      ASSERT_TRUE(check_backward(fe, &dx, in.weight_grad().data(), in.bias_grad().data()));
      // A backward of another batch size than the eval forward's is refused
      // as after a training forward.
      std::vector<std::int64_t> more(dims);
      ++more[0];
      const TensorDesc d2(DType::f32, layout, std::span<const std::int64_t>(more));
      Buffer src2(d2), dy2(d2), dx2(d2);
      EXPECT_THROW(in.backward(d2, src2.data(), d2, dy2.data(), d2, dx2.data()), Error);
      in.reset_parameters();
      for (float v : in.running_var()) EXPECT_EQ(v, 1.0f);
    }
  }
}

// Without running statistics, eval normalizes with the instances' own
// statistics too (torch.nn's use_input_stats = training or not tracking).
TEST(InstanceNormLayer, EvalWithoutRunningStatsUsesInputStats) {
  InstanceNorm in(InstanceNorm::Options{.num_features = 3});
  in.eval();
  const TensorDesc d(DType::bf16, Layout::channels_last, {2, 3, 4, 4});
  Buffer src(d), dst(d);
  fill_normal(src, 5, 3.0, 2.0);
  in.forward(d, src.data(), d, dst.data());
  const GroupExpectation e = expect_group_norm(src, 3, nullptr, nullptr, 1e-5);
  EXPECT_TRUE(check_output(dst, e.dst, "dst"));
  EXPECT_EQ(in.saved_mean().size(), 6u);
}

}  // namespace
}  // namespace bnorm::test

// Differential tests against ATen (libtorch 1.13): at::instance_norm (which
// runs batch norm on a (1, N*C, S) view and averages the running statistics
// over the batch) and its autograd backward, f32 and bf16, both memory
// formats; several training steps with running statistics, then eval with
// them and backward in both modes.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "aten/aten_util.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

::testing::AssertionResult agree_channels(const std::vector<float>& ours, const at::Tensor& aten, double rel,
                                          double abs, bool bf16, const std::string& what) {
  const at::Tensor t = aten.to(at::kDouble).contiguous();
  return all_close(
      static_cast<std::int64_t>(ours.size()),
      [&](std::int64_t i) { return static_cast<double>(ours[static_cast<std::size_t>(i)]); }, t.data_ptr<double>(),
      [&](double w) { return abs + rel * std::fabs(w) + (bf16 ? 2 * ulp(DType::bf16, w) : 0.0); }, what);
}

void compare(const TensorDesc& d) {
  SCOPED_TRACE(d.str());
  const auto C = static_cast<std::size_t>(d.channels());
  const std::size_t NC = C * static_cast<std::size_t>(d.batch());
  const double eps = 1e-5, momentum = 0.1;
  const bool bf16 = d.dtype() == DType::bf16;
  std::vector<float> gamma = uniform(C, 1, 0.5f, 1.5f), beta = uniform(C, 2, -1.0f, 1.0f);
  std::vector<float> rmean(C, 0.0f), rvar(C, 1.0f), save_mean(NC), save_invstd(NC);
  const at::Tensor w = channel_tensor(gamma), b = channel_tensor(beta);
  at::Tensor arm = channel_tensor(rmean), arv = channel_tensor(rvar);

  Buffer src(d), dst(d);
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    fill_normal(src, 10 + static_cast<std::uint64_t>(step), step, 1.0 + 0.5 * step);
    const at::Tensor ay = at::instance_norm(to_aten(src), w, b, arm, arv, true, momentum, eps, false);
    instance_norm_forward_training(d, src.data(), d, dst.data(), gamma.data(), beta.data(), save_mean.data(),
                                   save_invstd.data(), rmean.data(), rvar.data(), InstanceNormConfig{eps, momentum});
    ASSERT_TRUE(agree(dst, from_aten(ay, d), "training output"));
    ASSERT_TRUE(agree_channels(rmean, arm, 1e-5, 1e-6, false, "running_mean"));
    ASSERT_TRUE(agree_channels(rvar, arv, 1e-5, 0.0, false, "running_var"));
  }
  {
    const at::Tensor ay = at::instance_norm(to_aten(src), w, b, arm, arv, false, momentum, eps, false);
    instance_norm_forward_inference(d, src.data(), d, dst.data(), gamma.data(), beta.data(), rmean.data(),
                                    rvar.data(), eps);
    ASSERT_TRUE(agree(dst, from_aten(ay, d), "eval output"));
  }
  // Backward through autograd, with the instances' statistics and with the
  // running ones.
  Buffer dy(d), dx(d);
  fill_normal(dy, 77);
  for (bool use_input_stats : {true, false}) {
    SCOPED_TRACE(use_input_stats ? "backward use_input_stats" : "backward running stats");
    at::Tensor ax = to_aten(src).detach().requires_grad_(true);
    at::Tensor aw = w.clone().requires_grad_(true), ab = b.clone().requires_grad_(true);
    at::Tensor rm2 = arm.clone(), rv2 = arv.clone();
    const at::Tensor ay = at::instance_norm(ax, aw, ab, rm2, rv2, use_input_stats, momentum, eps, false);
    ay.backward(to_aten(dy));
    std::vector<float> dgamma(C), dbeta(C);
    if (use_input_stats) {
      instance_norm_forward_training(d, src.data(), d, dst.data(), gamma.data(), beta.data(), save_mean.data(),
                                     save_invstd.data());
      instance_norm_backward(d, src.data(), d, dy.data(), d, dx.data(), gamma.data(), save_mean.data(),
                             save_invstd.data(), dgamma.data(), dbeta.data(), BackwardStats::batch);
    } else {
      std::vector<float> invstd(C);
      for (std::size_t c = 0; c < C; ++c) invstd[c] = static_cast<float>(1.0 / std::sqrt(rvar[c] + eps));
      instance_norm_backward(d, src.data(), d, dy.data(), d, dx.data(), gamma.data(), rmean.data(), invstd.data(),
                             dgamma.data(), dbeta.data(), BackwardStats::fixed);
    }
    ASSERT_TRUE(agree(dx, from_aten(ax.grad(), d), "diff_src"));
    const double n = static_cast<double>(d.batch() * d.spatial());
    ASSERT_TRUE(agree_channels(dbeta, ab.grad(), 1e-5, 1e-5 * n, bf16, "diff_beta"));
    ASSERT_TRUE(agree_channels(dgamma, aw.grad(), 1e-5, 1e-5 * n, bf16, "diff_gamma"));
  }
}

// eps = 0 and a constant instance: at::instance_norm runs batch norm's
// statistics, which give invstd 0 there: the output is beta and the
// gradients through the instance are 0, where the formula would give NaN.
TEST(AtenInstanceNormEdge, ConstantInstanceWithZeroEps) {
  for (const TensorDesc d : {TensorDesc(DType::f32, Layout::channels_first, {2, 3, 7}),
                             TensorDesc(DType::f32, Layout::channels_last, {2, 3, 2, 4})}) {
    SCOPED_TRACE(d.str());
    const std::vector<float> gamma{1.5f, 0.5f, 2.0f}, beta{0.25f, -0.75f, 1.0f};
    Buffer src(d), dst(d), dy(d), dx(d);
    fill_normal(src, 41);
    fill_normal(dy, 42);
    // Instance (sample 1, channel 2) is constant.
    const std::int64_t S = d.spatial();
    for (std::int64_t i = 0; i < d.elements(); ++i) {
      const bool last = d.layout() == Layout::channels_last;
      if (i / (3 * S) == 1 && (last ? i % 3 : i / S % 3) == 2) src.set(i, -4.0f);
    }
    std::vector<float> save_mean(6), save_invstd(6), dgamma(3), dbeta(3);
    at::Tensor ax = to_aten(src).detach().requires_grad_(true);
    at::Tensor aw = channel_tensor(gamma).requires_grad_(true),
               ab = channel_tensor(beta).requires_grad_(true);
    const at::Tensor ay = at::instance_norm(ax, aw, ab, {}, {}, true, 0.1, 0.0, false);
    ay.backward(to_aten(dy));
    instance_norm_forward_training(d, src.data(), d, dst.data(), gamma.data(), beta.data(), save_mean.data(),
                                   save_invstd.data(), nullptr, nullptr, InstanceNormConfig{0.0, 0.1});
    EXPECT_EQ(save_invstd[5], 0.0f);
    ASSERT_TRUE(agree(dst, from_aten(ay.detach(), d), "training output"));
    instance_norm_backward(d, src.data(), d, dy.data(), d, dx.data(), gamma.data(), save_mean.data(),
                           save_invstd.data(), dgamma.data(), dbeta.data(), BackwardStats::batch);
    ASSERT_TRUE(agree(dx, from_aten(ax.grad(), d), "diff_src"));
    ASSERT_TRUE(agree_channels(dgamma, aw.grad(), 1e-5, 1e-5, false, "diff_gamma"));
    ASSERT_TRUE(agree_channels(dbeta, ab.grad(), 1e-5, 1e-5, false, "diff_beta"));
  }
}

class AtenInstanceNorm : public ::testing::TestWithParam<std::tuple<DType, Layout>> {};

TEST_P(AtenInstanceNorm, MatchesInstanceNorm) {
  const auto [dt, layout] = GetParam();
  const std::vector<std::vector<std::int64_t>> shapes = {
      {5, 8, 33}, {8, 16, 7, 7}, {3, 17, 5, 9}, {4, 32, 3, 5, 5}, {2, 3, 17, 17}};
  for (const auto& dims : shapes) {
    compare(TensorDesc(dt, layout, std::span<const std::int64_t>(dims)));
    if (HasFatalFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, AtenInstanceNorm,
                         ::testing::Combine(::testing::Values(DType::f32, DType::bf16),
                                            ::testing::Values(Layout::channels_first, Layout::channels_last)),
                         [](const auto& info) {
                           return std::string(to_string(std::get<0>(info.param))) + "_" +
                                  std::string(to_string(std::get<1>(info.param)));
                         });

}  // namespace
}  // namespace bnorm::test

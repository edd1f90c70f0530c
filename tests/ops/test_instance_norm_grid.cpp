// bnorm's instance norm (public functions, every instruction set) against
// the double-precision reference: both layouts, every dtype, in-place,
// affine on/off, running statistics over several steps (at::instance_norm's
// rule), inference with them, and backward in both statistics modes.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/group_norm_oracle.hpp"
#include "common/test_util.hpp"
#include "kernels/instance_norm/ref.hpp"

namespace bnorm::test {
namespace {

namespace iref = kernels::instance_norm::ref;

// Awkward shapes, among them planes of 2, 4 and 8 values, which go several to
// a vector (one leaves a partial vector).
const std::vector<std::vector<std::int64_t>>& grid_dims() {
  static const std::vector<std::vector<std::int64_t>> dims = {
      {2, 1, 3},      {1, 3, 17},      {3, 17, 127},  {2, 1, 3, 5},  {3, 3, 17, 1},   {2, 17, 7, 9},
      {1, 127, 3, 3}, {17, 3, 1, 127}, {4, 16, 8, 8}, {2, 64, 5, 5}, {2, 3, 2, 3, 5}, {1, 17, 3, 1, 17},
      {3, 7, 2, 2},   {2, 9, 2},       {5, 6, 2, 4},  {64, 16, 2, 2}};
  return dims;
}

void run_case(const TensorDesc& desc, bool affine, bool running, bool inplace, std::uint64_t seed) {
  SCOPED_TRACE(desc.str() + (affine ? " affine" : "") + (running ? " running" : "") +
               (inplace ? " inplace" : ""));
  const auto C = static_cast<std::size_t>(desc.channels()), NC = C * static_cast<std::size_t>(desc.batch());
  const double eps = 1e-3, momentum = 0.3;
  const std::vector<float> gamma = uniform(C, seed + 1, 0.5f, 1.5f), beta = uniform(C, seed + 2, -1.0f, 1.0f);
  const float* g = affine ? gamma.data() : nullptr;
  const float* b = affine ? beta.data() : nullptr;
  std::vector<float> rmean = uniform(C, seed + 3, -0.5f, 0.5f), rvar = uniform(C, seed + 4, 0.5f, 2.0f);
  std::vector<double> want_rmean(rmean.begin(), rmean.end()), want_rvar(rvar.begin(), rvar.end());
  std::vector<float> save_mean(NC), save_invstd(NC);
  const gref::Shape sh = group_shape(desc, desc.channels());

  Buffer src(desc), dst(desc);
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    fill_normal(src, seed * 31 + static_cast<std::uint64_t>(step), 0.5 * step, 1.0 + step);
    const Buffer original = src;
    const GroupExpectation e = expect_group_norm(src, desc.channels(), g, b, eps);
    Buffer& out = inplace ? src : dst;
    instance_norm_forward_training(desc, src.data(), desc, out.data(), g, b, save_mean.data(),
                                   save_invstd.data(), running ? rmean.data() : nullptr,
                                   running ? rvar.data() : nullptr, InstanceNormConfig{eps, momentum});
    ASSERT_TRUE(check_output(out, e.dst, "dst"));
    ASSERT_TRUE(check_group_stats(save_mean.data(), save_invstd.data(), e, eps));
    if (running) {
      iref::update_running(sh, e.mean.data(), e.var.data(), momentum, want_rmean.data(), want_rvar.data());
      ASSERT_TRUE(check_channels(rmean.data(), want_rmean, 2e-6, 1e-6, "running_mean"));
      ASSERT_TRUE(check_channels(rvar.data(), want_rvar, 2e-6, 1e-6, "running_var"));
    }
    if (inplace) src = original;
  }

  // Inference with the running statistics: batch norm's formula per channel.
  std::vector<double> mean_d(rmean.begin(), rmean.end()), var_d(rvar.begin(), rvar.end());
  std::vector<double> want(static_cast<std::size_t>(desc.elements()));
  bref::normalize(ref_shape(desc), src.data(), mean_d.data(), var_d.data(), eps, g, b, want.data());
  {
    Buffer in = src;
    Buffer& out = inplace ? in : dst;
    instance_norm_forward_inference(desc, in.data(), desc, out.data(), g, b, rmean.data(), rvar.data(), eps);
    ASSERT_TRUE(check_output(out, want, "inference dst"));
  }

  Buffer diff_dst(desc);
  fill_normal(diff_dst, seed + 99);
  {
    SCOPED_TRACE("backward batch");
    const GroupBackwardExpectation e =
        expect_group_backward(src, diff_dst, desc.channels(), g, save_mean.data(), save_invstd.data());
    Buffer dy = diff_dst, dx(desc);
    Buffer& out = inplace ? dy : dx;
    std::vector<float> dgamma(C, -7.0f), dbeta(C, -7.0f);
    instance_norm_backward(desc, src.data(), desc, dy.data(), desc, out.data(), g, save_mean.data(),
                           save_invstd.data(), dgamma.data(), dbeta.data(), BackwardStats::batch);
    ASSERT_TRUE(check_group_backward(e, &out, dgamma.data(), dbeta.data()));
  }
  {
    SCOPED_TRACE("backward fixed");
    std::vector<float> invstd(C);
    for (std::size_t c = 0; c < C; ++c) invstd[c] = static_cast<float>(1.0 / std::sqrt(rvar[c] + eps));
    const BackwardExpectation e = expect_backward(src, diff_dst, g, rmean.data(), invstd.data(), false);
    Buffer dy = diff_dst, dx(desc);
    Buffer& out = inplace ? dy : dx;
    std::vector<float> dgamma(C, -7.0f), dbeta(C, -7.0f);
    instance_norm_backward(desc, src.data(), desc, dy.data(), desc, out.data(), g, rmean.data(),
                           invstd.data(), dgamma.data(), dbeta.data(), BackwardStats::fixed);
    ASSERT_TRUE(check_backward(e, &out, dgamma.data(), dbeta.data()));
  }
}

class InstanceNormGrid : public ::testing::TestWithParam<std::tuple<DType, Layout>> {};

TEST_P(InstanceNormGrid, MatchesReference) {
  const auto [dtype, layout] = GetParam();
  for_each_isa([&](const std::string&) {
    const auto& dims = grid_dims();
    for (std::size_t i = 0; i < dims.size(); ++i) {
      const TensorDesc desc(dtype, layout, std::span<const std::int64_t>(dims[i]));
      const std::size_t k = i + static_cast<std::size_t>(dtype) * 3 + static_cast<std::size_t>(layout) * 5;
      const bool running = (k & 2) != 0 && desc.spatial() > 1;
      run_case(desc, (k & 1) != 0, running, (k & 4) != 0, 2000 + i);
      if (HasFatalFailure()) return;
    }
  });
}

INSTANTIATE_TEST_SUITE_P(AllTypes, InstanceNormGrid,
                         ::testing::Combine(::testing::Values(DType::f32, DType::bf16, DType::f16),
                                            ::testing::Values(Layout::channels_first, Layout::channels_last)),
                         [](const auto& info) {
                           return std::string(to_string(std::get<0>(info.param))) + "_" +
                                  std::string(to_string(std::get<1>(info.param)));
                         });

TEST(InstanceNormGridFlags, EveryCombination) {
  for (int bits = 0; bits < 8; ++bits) {
    run_case(TensorDesc(DType::f32, Layout::channels_first, {3, 5, 7}), (bits & 1) != 0, (bits & 2) != 0,
             (bits & 4) != 0, 50 + static_cast<std::uint64_t>(bits));
    run_case(TensorDesc(DType::bf16, Layout::channels_last, {3, 5, 2, 4}), (bits & 1) != 0, (bits & 2) != 0,
             (bits & 4) != 0, 70 + static_cast<std::uint64_t>(bits));
    if (HasFatalFailure()) return;
  }
}

// The ONNX form is the training forward with scale and B, without running
// statistics or saved statistics.
TEST(InstanceNormGridFlags, OnnxFormMatchesTraining) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    const TensorDesc d(DType::f32, layout, {2, 5, 3, 4});
    Buffer x(d), a(d), b(d);
    fill_normal(x, 4, 2.0, 3.0);
    const std::vector<float> scale = uniform(5, 1, 0.5f, 1.5f), bias = uniform(5, 2, -1.0f, 1.0f);
    instance_norm_onnx(d, x.data(), scale.data(), bias.data(), d, a.data(), 1e-4);
    instance_norm_forward_training(d, x.data(), d, b.data(), scale.data(), bias.data(), nullptr, nullptr,
                                   nullptr, nullptr, InstanceNormConfig{.eps = 1e-4});
    EXPECT_EQ(a.bytes, b.bytes);
  }
}

}  // namespace
}  // namespace bnorm::test

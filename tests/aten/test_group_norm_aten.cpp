// Differential tests against ATen (libtorch 1.13): at::native_group_norm and
// at::native_group_norm_backward on the same data, f32 and bf16, both memory
// formats (ATen's channels_last strides for channels-last buffers), groups
// 1, C and in between. For channels-last input, ATen 1.13's
// native_group_norm_backward called directly returns its diff_src with
// contiguous strides over channels-last data (measured: torch.ops.aten
// gives a different dx than autograd on the same tensors), so there the
// backward comes from autograd through at::group_norm, which is right.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <tuple>
#include <vector>

#include "aten/aten_util.hpp"
#include "common/group_norm_oracle.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

// bf16_steps: bf16 rounding steps of slack when ATen runs in bf16 (its
// bf16 statistics are bf16 values computed from bf16 partial results:
// measured up to about 2.5 steps from the exact mean).
::testing::AssertionResult agree_values(const std::vector<float>& ours, const std::vector<double>& aten, double rel,
                                        double abs, DType dt, const std::string& what, double bf16_steps = 2) {
  return all_close(
      static_cast<std::int64_t>(ours.size()),
      [&](std::int64_t i) { return static_cast<double>(ours[static_cast<std::size_t>(i)]); }, aten.data(),
      [&](double w) { return abs + rel * std::fabs(w) + (dt == DType::f32 ? 0.0 : bf16_steps * ulp(DType::bf16, w)); },
      what);
}

void compare(const TensorDesc& d, std::int64_t groups) {
  SCOPED_TRACE(d.str() + " G=" + std::to_string(groups));
  const auto C = static_cast<std::size_t>(d.channels());
  const std::int64_t N = d.batch(), S = d.spatial();
  const double eps = 1e-5;
  std::vector<float> gamma = uniform(C, 1, 0.5f, 1.5f), beta = uniform(C, 2, -1.0f, 1.0f);
  if (d.dtype() == DType::bf16) {
    // ATen's bf16 group norm takes bf16 parameters: give both the same values.
    for (float& v : gamma) v = bf16_to_float(bf16_from_float(v));
    for (float& v : beta) v = bf16_to_float(bf16_from_float(v));
  }
  const at::Tensor w = at::from_blob(gamma.data(), {static_cast<std::int64_t>(C)}, at::kFloat).to(aten_type(d.dtype()));
  const at::Tensor b = at::from_blob(beta.data(), {static_cast<std::int64_t>(C)}, at::kFloat).to(aten_type(d.dtype()));

  Buffer src(d), dst(d), dy(d), dx(d);
  fill_normal(src, 10, 1.0, 2.0);
  fill_normal(dy, 11);
  // ATen 1.13's native_group_norm wants its suggested memory format, which
  // for rank 3 is contiguous (no channels-last format): a copy there.
  const at::Tensor ax = to_aten(src).contiguous(to_aten(src).suggest_memory_format()), ady = to_aten(dy);
  auto [ay, amean, arstd] = at::native_group_norm(ax, w, b, N, d.channels(), S, groups, eps);
  std::vector<float> mean(static_cast<std::size_t>(N * groups)), invstd(mean.size());
  group_norm_forward(d, src.data(), d, dst.data(), groups, gamma.data(), beta.data(), mean.data(), invstd.data(), eps);
  ASSERT_TRUE(agree(dst, from_aten(ay, d), "dst", 2));
  if (d.dtype() == DType::bf16) {
    // ATen's bf16 statistics are bf16 values from bf16 partial sums
    // (measured up to 1.7e-2 off the mean of a group of sigma 2, about two
    // bf16 steps): ours are held to the double reference, ATen's to four
    // bf16 steps of the group's scale.
    const GroupExpectation e = expect_group_norm(src, groups, gamma.data(), beta.data(), eps);
    ASSERT_TRUE(check_group_stats(mean.data(), invstd.data(), e, eps));
    const std::vector<double> am = to_doubles(amean), ar = to_doubles(arstd);
    for (std::size_t k = 0; k < e.mean.size(); ++k) {
      const double sigma = std::sqrt(e.var[k] + eps);
      EXPECT_NEAR(am[k], e.mean[k], 0x1p-6 * (sigma + std::fabs(e.mean[k]))) << "ATen save_mean " << k;
      EXPECT_NEAR(ar[k], 1 / sigma, 0x1p-5 / sigma) << "ATen save_invstd " << k;
    }
  } else {
    ASSERT_TRUE(agree_values(mean, to_doubles(amean), 1e-5, 1e-6, d.dtype(), "save_mean"));
    ASSERT_TRUE(agree_values(invstd, to_doubles(arstd), 1e-5, 0.0, d.dtype(), "save_invstd"));
  }

  at::Tensor adx, adw, adb;
  if (d.layout() == Layout::channels_first) {
    std::tie(adx, adw, adb) =
        at::native_group_norm_backward(ady, ax, amean, arstd, w, N, d.channels(), S, groups, {true, true, true});
  } else {
    at::Tensor x = ax.detach().requires_grad_(true), wg = w.detach().clone().requires_grad_(true),
               bg = b.detach().clone().requires_grad_(true);
    at::group_norm(x, groups, wg, bg, eps, false).backward(ady);
    adx = x.grad();
    adw = wg.grad();
    adb = bg.grad();
  }
  std::vector<float> dgamma(C), dbeta(C);
  group_norm_backward(d, src.data(), d, dy.data(), d, dx.data(), groups, gamma.data(), mean.data(), invstd.data(),
                      dgamma.data(), dbeta.data());
  ASSERT_TRUE(agree(dx, from_aten(adx, d), "diff_src", 2));
  if (d.dtype() == DType::bf16) {
    // ATen's bf16 parameter gradients are bf16 sums (measured up to 8 bf16
    // steps off the double value): ours are held to the double reference,
    // ATen's only loosely (2% of the sum of |terms|).
    const GroupBackwardExpectation e =
        expect_group_backward(src, dy, groups, gamma.data(), mean.data(), invstd.data());
    ASSERT_TRUE(check_group_backward(e, nullptr, dgamma.data(), dbeta.data()));
    const std::vector<double> aw = to_doubles(adw), ab = to_doubles(adb);
    for (std::size_t c = 0; c < C; ++c) {
      EXPECT_NEAR(ab[c], e.diff_beta[c], 0.02 * e.abs_dy[c] + 1e-3) << "ATen diff_beta " << c;
      EXPECT_NEAR(aw[c], e.diff_gamma[c], 0.02 * e.abs_dy_xhat[c] + 1e-3) << "ATen diff_gamma " << c;
    }
    return;
  }
  // Sums of N * S terms of size ~1: both sides carry f32 summation error.
  const double n = static_cast<double>(N * S);
  ASSERT_TRUE(agree_values(dbeta, to_doubles(adb), 1e-5, 1e-5 * n, d.dtype(), "diff_beta"));
  ASSERT_TRUE(agree_values(dgamma, to_doubles(adw), 1e-5, 1e-5 * n, d.dtype(), "diff_gamma"));
}

class AtenGroupNorm : public ::testing::TestWithParam<std::tuple<DType, Layout>> {};

TEST_P(AtenGroupNorm, MatchesNativeGroupNorm) {
  const auto [dt, layout] = GetParam();
  const std::vector<std::pair<std::vector<std::int64_t>, std::int64_t>> cases = {
      {{4, 32, 7, 7}, 8}, {{3, 12, 5, 9}, 1}, {{2, 6, 17, 3}, 6}, {{5, 8, 33}, 4},
      {{2, 16, 3, 5, 5}, 4}, {{8, 12}, 3}, {{3, 64, 4, 4}, 32}};
  for (const auto& [dims, groups] : cases) {
    if (layout == Layout::channels_last && dims.size() == 2) continue;
    compare(TensorDesc(dt, layout, std::span<const std::int64_t>(dims)), groups);
    if (HasFatalFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, AtenGroupNorm,
                         ::testing::Combine(::testing::Values(DType::f32, DType::bf16),
                                            ::testing::Values(Layout::channels_first, Layout::channels_last)),
                         [](const auto& info) {
                           return std::string(to_string(std::get<0>(info.param))) + "_" +
                                  std::string(to_string(std::get<1>(info.param)));
                         });

}  // namespace
}  // namespace bnorm::test

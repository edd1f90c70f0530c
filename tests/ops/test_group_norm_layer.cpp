// bnorm::GroupNorm against torch.nn.GroupNorm semantics: defaults, affine
// parameters used and differentiated, saved statistics per (sample, group),
// batch sizes changing between calls, train/eval making no difference.

#include <gtest/gtest.h>

#include <vector>

#include "common/group_norm_oracle.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

TEST(GroupNormLayer, DefaultsMatchTorch) {
  GroupNorm gn(GroupNorm::Options{.num_groups = 2, .num_channels = 6});
  EXPECT_EQ(gn.options().eps, 1e-5);
  EXPECT_TRUE(gn.options().affine);
  ASSERT_EQ(gn.weight().size(), 6u);
  for (float w : gn.weight()) EXPECT_EQ(w, 1.0f);
  for (float b : gn.bias()) EXPECT_EQ(b, 0.0f);
  EXPECT_TRUE(gn.saved_mean().empty());
  GroupNorm plain(GroupNorm::Options{.num_groups = 3, .num_channels = 6, .affine = false});
  EXPECT_TRUE(plain.weight().empty());
  EXPECT_TRUE(plain.weight_grad().empty());
}

TEST(GroupNormLayer, ForwardBackwardWithParameters) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    SCOPED_TRACE(std::string(to_string(layout)));
    GroupNorm gn(GroupNorm::Options{.num_groups = 3, .num_channels = 6, .eps = 1e-3});
    const std::vector<float> w = uniform(6, 1, 0.5f, 1.5f), b = uniform(6, 2, -1.0f, 1.0f);
    std::copy(w.begin(), w.end(), gn.weight().begin());
    std::copy(b.begin(), b.end(), gn.bias().begin());
    // Batch sizes up, down and up again: the saved statistics follow.
    for (std::int64_t n : {4, 2, 5}) {
      const TensorDesc d(DType::f32, layout, {n, 6, 3, 5});
      Buffer src(d), dst(d), dy(d), dx(d);
      fill_normal(src, 10 + static_cast<std::uint64_t>(n), 1.0, 2.0);
      fill_normal(dy, 20 + static_cast<std::uint64_t>(n));
      const GroupExpectation e = expect_group_norm(src, 3, w.data(), b.data(), 1e-3);
      gn.forward(d, src.data(), d, dst.data());
      ASSERT_TRUE(check_output(dst, e.dst, "dst"));
      ASSERT_EQ(gn.saved_mean().size(), static_cast<std::size_t>(3 * n));
      ASSERT_TRUE(check_group_stats(gn.saved_mean().data(), gn.saved_invstd().data(), e, 1e-3));
      gn.backward(d, src.data(), d, dy.data(), d, dx.data());
      const GroupBackwardExpectation be =
          expect_group_backward(src, dy, 3, w.data(), gn.saved_mean().data(), gn.saved_invstd().data());
      ASSERT_TRUE(check_group_backward(be, &dx, gn.weight_grad().data(), gn.bias_grad().data()));
    }
    gn.reset_parameters();
    for (float v : gn.weight()) EXPECT_EQ(v, 1.0f);
    for (float v : gn.bias()) EXPECT_EQ(v, 0.0f);
  }
}

TEST(GroupNormLayer, WithoutAffineAndRankTwo) {
  GroupNorm gn(GroupNorm::Options{.num_groups = 4, .num_channels = 8, .affine = false});
  const TensorDesc d(DType::bf16, Layout::channels_first, {5, 8});
  Buffer src(d), dst(d), dy(d), dx(d);
  fill_normal(src, 3, -1.0, 0.5);
  fill_normal(dy, 4);
  const GroupExpectation e = expect_group_norm(src, 4, nullptr, nullptr, 1e-5);
  gn.forward(d, src.data(), d, dst.data());
  ASSERT_TRUE(check_output(dst, e.dst, "dst"));
  gn.backward(d, src.data(), d, dy.data(), d, dx.data());
  const GroupBackwardExpectation be =
      expect_group_backward(src, dy, 4, nullptr, gn.saved_mean().data(), gn.saved_invstd().data());
  ASSERT_TRUE(check_group_backward(be, &dx, nullptr, nullptr));
}

}  // namespace
}  // namespace bnorm::test

// bnorm's group norm (public functions, every instruction set) against the
// double-precision reference over a grid of awkward shapes: ranks 2 to 5,
// both layouts, every dtype, groups 1, C and in between, affine on/off,
// in-place forward and backward (diff_src aliasing diff_dst).

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/group_norm_oracle.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

// Sizes below, at and above the vector width (1, 3, 17, 127, powers of two);
// planes of 2, 4 and 8 values, several per vector, with a plane count that
// leaves a partial vector and steps of many blocks.
const std::vector<std::vector<std::int64_t>>& grid_dims() {
  static const std::vector<std::vector<std::int64_t>> dims = {
      {2, 1},        {3, 6},        {17, 34},        {5, 127},          {2, 3, 1},        {1, 3, 17},
      {3, 34, 127},  {2, 1, 3, 5},  {3, 6, 17, 1},   {2, 34, 7, 9},     {1, 127, 3, 3},   {17, 3, 1, 127},
      {4, 16, 8, 8}, {2, 64, 5, 5}, {2, 6, 2, 3, 5}, {1, 17, 3, 1, 17}, {3, 32, 2, 2, 4}, {3, 6, 2, 2},
      {2, 34, 2, 1}, {5, 12, 2, 4}, {7, 10, 1, 4},   {64, 32, 2, 2}};
  return dims;
}

// Groups tried for C channels: 1, C and a divisor in between when there is one.
std::vector<std::int64_t> group_choices(std::int64_t c) {
  std::vector<std::int64_t> out = {1};
  for (std::int64_t g = 2; g < c; ++g)
    if (c % g == 0 && c / g >= 2) {
      out.push_back(g);
      break;
    }
  if (c > 1) out.push_back(c);
  return out;
}

void run_case(const TensorDesc& desc, std::int64_t groups, bool affine, bool inplace, std::uint64_t seed) {
  SCOPED_TRACE(desc.str() + " G=" + std::to_string(groups) + (affine ? " affine" : "") +
               (inplace ? " inplace" : ""));
  const auto C = static_cast<std::size_t>(desc.channels());
  const auto stats = static_cast<std::size_t>(desc.batch() * groups);
  const double eps = 1e-3;
  const std::vector<float> gamma = uniform(C, seed + 1, 0.5f, 1.5f), beta = uniform(C, seed + 2, -1.0f, 1.0f);
  const float* g = affine ? gamma.data() : nullptr;
  const float* b = affine ? beta.data() : nullptr;

  Buffer src(desc), dst(desc);
  fill_normal(src, seed, 3.0, 2.0);
  const Buffer original = src;
  const GroupExpectation e = expect_group_norm(src, groups, g, b, eps);
  std::vector<float> save_mean(stats), save_invstd(stats);
  Buffer& out = inplace ? src : dst;
  group_norm_forward(desc, src.data(), desc, out.data(), groups, g, b, save_mean.data(), save_invstd.data(),
                     eps);
  ASSERT_TRUE(check_output(out, e.dst, "dst"));
  ASSERT_TRUE(check_group_stats(save_mean.data(), save_invstd.data(), e, eps));

  Buffer diff_dst(desc);
  fill_normal(diff_dst, seed + 99);
  const GroupBackwardExpectation be =
      expect_group_backward(original, diff_dst, groups, g, save_mean.data(), save_invstd.data());
  Buffer dy = diff_dst, dx(desc);
  Buffer& dx_out = inplace ? dy : dx;
  std::vector<float> dgamma(C, -7.0f), dbeta(C, -7.0f);
  group_norm_backward(desc, original.data(), desc, dy.data(), desc, dx_out.data(), groups, g,
                      save_mean.data(), save_invstd.data(), dgamma.data(), dbeta.data());
  ASSERT_TRUE(check_group_backward(be, &dx_out, dgamma.data(), dbeta.data()));
  // Only the parameter gradients, and only diff_src.
  std::vector<float> dgamma2(C, -7.0f);
  group_norm_backward(desc, original.data(), desc, diff_dst.data(), desc, nullptr, groups, g,
                      save_mean.data(), save_invstd.data(), dgamma2.data(), nullptr);
  ASSERT_TRUE(check_group_backward(be, nullptr, dgamma2.data(), nullptr));
  Buffer dx2(desc);
  group_norm_backward(desc, original.data(), desc, diff_dst.data(), desc, dx2.data(), groups, g,
                      save_mean.data(), save_invstd.data(), nullptr, nullptr);
  ASSERT_TRUE(check_group_backward(be, &dx2, nullptr, nullptr));
}

class GroupNormGrid : public ::testing::TestWithParam<std::tuple<DType, Layout>> {};

TEST_P(GroupNormGrid, MatchesReference) {
  const auto [dtype, layout] = GetParam();
  for_each_isa([&](const std::string&) {
    const auto& dims = grid_dims();
    for (std::size_t i = 0; i < dims.size(); ++i) {
      const TensorDesc desc(dtype, layout, std::span<const std::int64_t>(dims[i]));
      std::size_t k = i + static_cast<std::size_t>(dtype) * 3 + static_cast<std::size_t>(layout);
      for (std::int64_t groups : group_choices(desc.channels())) {
        run_case(desc, groups, (k & 1) != 0, (k & 2) != 0, 1000 + i);
        ++k;
        if (HasFatalFailure()) return;
      }
    }
  });
}

INSTANTIATE_TEST_SUITE_P(AllTypes, GroupNormGrid,
                         ::testing::Combine(::testing::Values(DType::f32, DType::bf16, DType::f16),
                                            ::testing::Values(Layout::channels_first, Layout::channels_last)),
                         [](const auto& info) {
                           return std::string(to_string(std::get<0>(info.param))) + "_" +
                                  std::string(to_string(std::get<1>(info.param)));
                         });

// G = 1 is layer norm over (C, spatial) per sample; written out here in
// double rather than through the reference.
TEST(GroupNormGrid, OneGroupIsLayerNorm) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    const TensorDesc d(DType::f32, layout, {3, 5, 4, 7});
    Buffer src(d), dst(d);
    fill_normal(src, 5, -2.0, 4.0);
    group_norm_forward(d, src.data(), d, dst.data(), 1, nullptr, nullptr, nullptr, nullptr, 1e-5);
    const std::int64_t per = 5 * 4 * 7;
    std::vector<double> want(static_cast<std::size_t>(d.elements()));
    for (std::int64_t n = 0; n < 3; ++n) {
      // Both layouts keep a sample's values together: sample n is [n*per, (n+1)*per).
      double sum = 0.0, sq = 0.0;
      for (std::int64_t i = n * per; i < (n + 1) * per; ++i) sum += src.get(i);
      const double mean = sum / per;
      for (std::int64_t i = n * per; i < (n + 1) * per; ++i) sq += (src.get(i) - mean) * (src.get(i) - mean);
      const double invstd = 1.0 / std::sqrt(sq / per + 1e-5);
      for (std::int64_t i = n * per; i < (n + 1) * per; ++i)
        want[static_cast<std::size_t>(i)] = (src.get(i) - mean) * invstd;
    }
    EXPECT_TRUE(check_output(dst, want, "layer norm"));
  }
}

// G = C is instance norm without running statistics: the same results bit
// for bit, forward and backward.
TEST(GroupNormGrid, GroupPerChannelIsInstanceNorm) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    for (DType dt : {DType::f32, DType::bf16}) {
      const TensorDesc d(dt, layout, {3, 6, 5, 7});
      Buffer src(d), a(d), b(d), dy(d), dxa(d), dxb(d);
      fill_normal(src, 8, 1.0, 3.0);
      fill_normal(dy, 9);
      const std::vector<float> gamma = uniform(6, 1, 0.5f, 1.5f), beta = uniform(6, 2, -1.0f, 1.0f);
      std::vector<float> ma(18), ia(18), mb(18), ib(18), ga(6), gb(6), ba(6), bb(6);
      group_norm_forward(d, src.data(), d, a.data(), 6, gamma.data(), beta.data(), ma.data(), ia.data(),
                         1e-5);
      instance_norm_forward_training(d, src.data(), d, b.data(), gamma.data(), beta.data(), mb.data(),
                                     ib.data());
      EXPECT_EQ(a.bytes, b.bytes);
      EXPECT_EQ(ma, mb);
      EXPECT_EQ(ia, ib);
      group_norm_backward(d, src.data(), d, dy.data(), d, dxa.data(), 6, gamma.data(), ma.data(), ia.data(),
                          ga.data(), ba.data());
      instance_norm_backward(d, src.data(), d, dy.data(), d, dxb.data(), gamma.data(), mb.data(), ib.data(),
                             gb.data(), bb.data());
      EXPECT_EQ(dxa.bytes, dxb.bytes);
      EXPECT_EQ(ga, gb);
      EXPECT_EQ(ba, bb);
    }
  }
}

}  // namespace
}  // namespace bnorm::test

// bnorm::LayerNorm and bnorm::RMSNorm with torch.nn semantics: parameters
// (elementwise_affine, bias), forward and backward through the functions,
// saved statistics, batches of different sizes.

#include <gtest/gtest.h>

#include <vector>

#include "common/ln_oracle.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

TEST(LayerNormLayer, ParametersFollowOptions) {
  LayerNorm full({.normalized_shape = {3, 4}});
  EXPECT_EQ(full.weight().size(), 12u);
  EXPECT_EQ(full.bias().size(), 12u);
  EXPECT_EQ(full.weight()[5], 1.0f);
  EXPECT_EQ(full.bias()[5], 0.0f);
  EXPECT_EQ(full.options().eps, 1e-5);
  LayerNorm no_bias({.normalized_shape = {3, 4}, .bias = false});
  EXPECT_EQ(no_bias.weight().size(), 12u);
  EXPECT_TRUE(no_bias.bias().empty());
  LayerNorm plain({.normalized_shape = {5}, .elementwise_affine = false});
  EXPECT_TRUE(plain.weight().empty());
  EXPECT_TRUE(plain.bias().empty());
  EXPECT_TRUE(plain.weight_grad().empty());
  full.weight()[0] = 3.0f;
  full.bias()[0] = 2.0f;
  full.reset_parameters();
  EXPECT_EQ(full.weight()[0], 1.0f);
  EXPECT_EQ(full.bias()[0], 0.0f);
}

TEST(LayerNormLayer, ForwardBackwardAsTheFunctions) {
  for (bool bias : {true, false}) {
    LayerNorm ln({.normalized_shape = {3, 5}, .eps = 1e-3, .bias = bias});
    const std::vector<float> w = uniform(15, 1, 0.5f, 1.5f), b = uniform(15, 2, -1.0f, 1.0f);
    std::copy(w.begin(), w.end(), ln.weight().begin());
    if (bias) std::copy(b.begin(), b.end(), ln.bias().begin());
    for (std::int64_t batch : {4, 2, 6}) {  // smaller then larger batches reuse and grow the storage
      SCOPED_TRACE("batch " + std::to_string(batch) + (bias ? " bias" : ""));
      const TensorDesc d(DType::f32, Layout::channels_first, {batch, 3, 5});
      Buffer x(d), y(d), dy(d), dx(d);
      fill_normal(x, static_cast<std::uint64_t>(batch), 2.0, 3.0);
      fill_normal(dy, 9);
      ln.forward(d, x.data(), d, y.data());
      const LayerNormExpectation e = expect_layer_norm(x, 2, w.data(), bias ? b.data() : nullptr, 1e-3);
      ASSERT_TRUE(check_values(y, e.dst, "dst"));
      ASSERT_EQ(ln.saved_mean().size(), static_cast<std::size_t>(batch));
      ASSERT_TRUE(check_each(ln.saved_mean().data(), e.mean, e.mean_tol, "saved_mean"));
      ASSERT_TRUE(check_each(ln.saved_invstd().data(), e.invstd, e.invstd_tol, "saved_invstd"));
      ln.backward(d, x.data(), d, dy.data(), d, dx.data());
      const NormBackwardExpectation be =
          expect_layer_norm_backward(x, dy, 2, w.data(), ln.saved_mean().data(), ln.saved_invstd().data());
      ASSERT_TRUE(check_diff_src(dx, be, "diff_src"));
      ASSERT_TRUE(check_each(ln.weight_grad().data(), be.diff_gamma, be.gamma_tol, "weight_grad"));
      if (bias) {
        ASSERT_TRUE(check_each(ln.bias_grad().data(), be.diff_beta, be.beta_tol, "bias_grad"));
      }
    }
  }
}

TEST(LayerNormLayer, WithoutAffine) {
  LayerNorm ln({.normalized_shape = {7}, .elementwise_affine = false});
  const TensorDesc d(DType::bf16, Layout::channels_first, {3, 2, 7});
  Buffer x(d), y(d);
  fill_normal(x, 4);
  ln.forward(d, x.data(), d, y.data());
  ASSERT_TRUE(check_values(y, expect_layer_norm(x, 1, nullptr, nullptr, 1e-5).dst, "dst"));
  EXPECT_EQ(ln.saved_mean().size(), 6u);
}

TEST(RmsNormLayer, ForwardBackwardAsTheFunctions) {
  RMSNorm rms({.normalized_shape = {16}});
  EXPECT_EQ(rms.weight().size(), 16u);
  EXPECT_FALSE(rms.options().eps.has_value());
  const std::vector<float> w = uniform(16, 3, 0.5f, 1.5f);
  std::copy(w.begin(), w.end(), rms.weight().begin());
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(std::string(to_string(dt)));
    const TensorDesc d(dt, Layout::channels_first, {2, 5, 16});
    Buffer x(d), y(d), dy(d), dx(d);
    fill_normal(x, 5);
    fill_normal(dy, 6);
    rms.forward(d, x.data(), d, y.data());
    // eps = std::nullopt: the machine epsilon of each input's dtype.
    const RmsNormExpectation e = expect_rms_norm(x, 1, w.data(), rms_norm_default_eps(dt));
    ASSERT_TRUE(check_values(y, e.dst, "dst"));
    ASSERT_TRUE(check_each(rms.saved_invrms().data(), e.invrms, e.invrms_tol, "saved_invrms"));
    rms.backward(d, x.data(), d, dy.data(), d, dx.data());
    const NormBackwardExpectation be = expect_rms_norm_backward(x, dy, 1, w.data(), rms.saved_invrms().data());
    ASSERT_TRUE(check_diff_src(dx, be, "diff_src"));
    ASSERT_TRUE(check_each(rms.weight_grad().data(), be.diff_gamma, be.gamma_tol, "weight_grad"));
  }
  rms.reset_parameters();
  EXPECT_EQ(rms.weight()[3], 1.0f);
  RMSNorm plain({.normalized_shape = {2, 8}, .eps = 1e-6, .elementwise_affine = false});
  EXPECT_TRUE(plain.weight().empty());
  const TensorDesc d(DType::f32, Layout::channels_first, {3, 2, 8});
  Buffer x(d), y(d);
  fill_normal(x, 8);
  plain.forward(d, x.data(), d, y.data());
  ASSERT_TRUE(check_values(y, expect_rms_norm(x, 2, nullptr, 1e-6).dst, "dst"));
}

}  // namespace
}  // namespace bnorm::test

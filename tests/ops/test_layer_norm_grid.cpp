// bnorm's layer norm (public functions, every instruction set) against the
// double-precision reference over a grid of awkward shapes: row lengths 1,
// 3, 17, 127, 1000+, rank 1 to 5, every dtype, gamma / beta on and off,
// in-place forward and backward, then every subset of the backward outputs.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/ln_oracle.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

struct GridShape {
  std::vector<std::int64_t> dims;
  int normalized_dims;
};

const std::vector<GridShape>& grid_shapes() {
  static const std::vector<GridShape> shapes = {
      {{1, 1}, 1},         {{3, 1}, 1},          {{2, 3}, 1},        {{5, 17}, 1},         {{3, 127}, 1},
      {{2, 1000}, 1},      {{3, 1031}, 1},       {{1, 3000}, 1},     {{17}, 1},            {{4, 3, 17}, 1},
      {{2, 3, 5}, 2},      {{7, 2, 9}, 2},       {{2, 3, 4, 5}, 3},  {{3, 2, 3, 4, 5}, 2}, {{1, 2, 3, 1, 4}, 4},
      {{2, 17, 3}, 3},     {{130, 3}, 1},        {{9, 64}, 1},
  };
  return shapes;
}

const DType kTypes[] = {DType::f32, DType::bf16, DType::f16};

void run_case(const TensorDesc& d, int nd, bool with_gamma, bool with_beta, bool inplace, std::uint64_t seed) {
  SCOPED_TRACE(d.str() + " normalized_dims " + std::to_string(nd) + (with_gamma ? " gamma" : "") +
               (with_beta ? " beta" : "") + (inplace ? " inplace" : ""));
  const lref::Shape s = row_shape(d, nd);
  const auto L = static_cast<std::size_t>(s.len), R = static_cast<std::size_t>(s.rows);
  const std::vector<float> gamma = uniform(L, seed + 1, 0.5f, 1.5f), beta = uniform(L, seed + 2, -1.0f, 1.0f);
  const float* g = with_gamma ? gamma.data() : nullptr;
  const float* b = with_beta ? beta.data() : nullptr;
  const double eps = 1e-3;

  Buffer src(d), dst(d);
  fill_normal(src, seed, 3.0, 2.0);
  const Buffer original = src;
  const LayerNormExpectation e = expect_layer_norm(src, nd, g, b, eps);
  std::vector<float> mean(R, -7.0f), invstd(R, -7.0f);
  Buffer& out = inplace ? src : dst;
  layer_norm_forward(d, src.data(), d, out.data(), nd, g, b, mean.data(), invstd.data(), eps);
  ASSERT_TRUE(check_values(out, e.dst, "dst"));
  ASSERT_TRUE(check_each(mean.data(), e.mean, e.mean_tol, "mean"));
  ASSERT_TRUE(check_each(invstd.data(), e.invstd, e.invstd_tol, "invstd"));

  // Backward from the saved statistics, all outputs, dx in place of dy
  // when inplace.
  Buffer dy(d), dx(d);
  fill_normal(dy, seed + 5);
  const NormBackwardExpectation be =
      expect_layer_norm_backward(original, dy, nd, g, mean.data(), invstd.data());
  std::vector<float> dgamma(L, -7.0f), dbeta(L, -7.0f);
  Buffer& dx_out = inplace ? dy : dx;
  layer_norm_backward(d, original.data(), d, dy.data(), d, dx_out.data(), nd, g, mean.data(), invstd.data(),
                      dgamma.data(), dbeta.data());
  ASSERT_TRUE(check_diff_src(dx_out, be, "diff_src"));
  ASSERT_TRUE(check_each(dgamma.data(), be.diff_gamma, be.gamma_tol, "diff_gamma"));
  ASSERT_TRUE(check_each(dbeta.data(), be.diff_beta, be.beta_tol, "diff_beta"));
}

TEST(LayerNormGrid, ForwardAndBackwardMatchReference) {
  for_each_isa([](const std::string&) {
    std::uint64_t seed = 1;
    for (DType dt : kTypes) {
      for (const GridShape& shape : grid_shapes()) {
        const TensorDesc d(dt, Layout::channels_first, std::span<const std::int64_t>(shape.dims));
        for (int affine = 0; affine < 4; ++affine)
          for (bool inplace : {false, true}) {
            run_case(d, shape.normalized_dims, affine & 1, affine & 2, inplace, seed++);
            if (HasFatalFailure()) return;
          }
      }
    }
  });
}

// Each backward output alone, and none: the others untouched, the wanted one
// equal to what the full call gives (same arithmetic, bit for bit).
TEST(LayerNormGrid, BackwardOutputSubsets) {
  for (DType dt : kTypes) {
    const TensorDesc d(dt, Layout::channels_first, {6, 5, 7});
    const int nd = 2;
    Buffer src(d), y(d), dy(d), dx_all(d);
    fill_normal(src, 3, -1.0, 0.5);
    fill_normal(dy, 4);
    const std::vector<float> gamma = uniform(35, 5, 0.5f, 2.0f), beta = uniform(35, 6, -1.0f, 1.0f);
    std::vector<float> mean(6), invstd(6), dg_all(35), db_all(35);
    layer_norm_forward(d, src.data(), d, y.data(), nd, gamma.data(), beta.data(), mean.data(), invstd.data());
    layer_norm_backward(d, src.data(), d, dy.data(), d, dx_all.data(), nd, gamma.data(), mean.data(),
                        invstd.data(), dg_all.data(), db_all.data());
    for (int mask = 0; mask < 8; ++mask) {
      SCOPED_TRACE(std::string(to_string(dt)) + " mask " + std::to_string(mask));
      Buffer dx(d);
      fill_normal(dx, 9);
      const Buffer dx_before = dx;
      std::vector<float> dg(35, 42.0f), db(35, 43.0f);
      layer_norm_backward(d, src.data(), d, dy.data(), d, mask & 1 ? dx.data() : nullptr, nd, gamma.data(),
                          mean.data(), invstd.data(), mask & 2 ? dg.data() : nullptr,
                          mask & 4 ? db.data() : nullptr);
      EXPECT_EQ(dx.bytes, (mask & 1 ? dx_all : dx_before).bytes);
      EXPECT_EQ(dg, mask & 2 ? dg_all : std::vector<float>(35, 42.0f));
      EXPECT_EQ(db, mask & 4 ? db_all : std::vector<float>(35, 43.0f));
    }
  }
}

// Empty tensors: no rows is a no-op (parameter gradients 0); empty rows give
// ATen's statistics, mean 0 and invstd NaN.
TEST(LayerNormGrid, EmptyTensors) {
  const TensorDesc no_rows(DType::f32, Layout::channels_first, {0, 5});
  std::vector<float> dg(5, 1.0f), db(5, 1.0f), mean(1, 3.0f), invstd(1, 3.0f);
  layer_norm_forward(no_rows, nullptr, no_rows, nullptr, 1, nullptr, nullptr, mean.data(), invstd.data());
  EXPECT_EQ(mean[0], 3.0f);
  layer_norm_backward(no_rows, nullptr, no_rows, nullptr, no_rows, nullptr, 1, nullptr, mean.data(),
                      invstd.data(), dg.data(), db.data());
  EXPECT_EQ(dg, std::vector<float>(5, 0.0f));
  EXPECT_EQ(db, std::vector<float>(5, 0.0f));
  // No rows, no statistics: an empty vector's data() may be null.
  std::fill(dg.begin(), dg.end(), 1.0f);
  EXPECT_NO_THROW(layer_norm_backward(no_rows, nullptr, no_rows, nullptr, no_rows, nullptr, 1, nullptr,
                                      nullptr, nullptr, dg.data(), nullptr));
  EXPECT_EQ(dg, std::vector<float>(5, 0.0f));
  const TensorDesc empty_rows(DType::f32, Layout::channels_first, {3, 0});
  std::vector<float> m3(3, 5.0f), i3(3, 5.0f);
  layer_norm_forward(empty_rows, nullptr, empty_rows, nullptr, 1, nullptr, nullptr, m3.data(), i3.data());
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(m3[static_cast<std::size_t>(r)], 0.0f);
    EXPECT_TRUE(std::isnan(i3[static_cast<std::size_t>(r)]));
  }
}

// eps = 0 is legal: a constant row then has invstd = inf and output NaN (0 *
// inf), as in ATen; other rows are unaffected.
TEST(LayerNormGrid, EpsZero) {
  const TensorDesc d(DType::f32, Layout::channels_first, {3, 40});
  Buffer src(d), dst(d);
  fill_normal(src, 8);
  for (std::int64_t j = 0; j < 40; ++j) src.set(40 + j, 2.5f);
  std::vector<float> mean(3), invstd(3);
  layer_norm_forward(d, src.data(), d, dst.data(), 1, nullptr, nullptr, mean.data(), invstd.data(), 0.0);
  EXPECT_EQ(mean[1], 2.5f);
  EXPECT_TRUE(std::isinf(invstd[1]));
  EXPECT_TRUE(std::isnan(dst.get(40)));
  const LayerNormExpectation e = expect_layer_norm(src, 1, nullptr, nullptr, 0.0);
  for (std::int64_t i : {0, 39, 80, 119})
    EXPECT_NEAR(dst.get(i), e.dst[static_cast<std::size_t>(i)], 1e-5) << i;
}

}  // namespace
}  // namespace bnorm::test

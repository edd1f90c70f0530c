// bnorm's RMS norm (public functions, every instruction set) against the
// double-precision reference over the grid of awkward shapes, every dtype,
// gamma on and off, in-place; PyTorch's default eps per dtype.

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
      {{1, 1}, 1},     {{3, 1}, 1},     {{2, 3}, 1},       {{5, 17}, 1},         {{3, 127}, 1},
      {{2, 1000}, 1},  {{3, 1031}, 1},  {{1, 3000}, 1},    {{17}, 1},            {{4, 3, 17}, 1},
      {{2, 3, 5}, 2},  {{7, 2, 9}, 2},  {{2, 3, 4, 5}, 3}, {{3, 2, 3, 4, 5}, 2}, {{1, 2, 3, 1, 4}, 4},
      {{130, 3}, 1},   {{9, 64}, 1},
  };
  return shapes;
}

const DType kTypes[] = {DType::f32, DType::bf16, DType::f16};

void run_case(const TensorDesc& d, int nd, bool with_gamma, bool inplace, std::optional<double> eps,
              std::uint64_t seed) {
  SCOPED_TRACE(d.str() + " normalized_dims " + std::to_string(nd) + (with_gamma ? " gamma" : "") +
               (inplace ? " inplace" : "") + (eps ? " eps " + std::to_string(*eps) : " default eps"));
  const lref::Shape s = row_shape(d, nd);
  const auto L = static_cast<std::size_t>(s.len), R = static_cast<std::size_t>(s.rows);
  const std::vector<float> gamma = uniform(L, seed + 1, 0.5f, 1.5f);
  const float* g = with_gamma ? gamma.data() : nullptr;
  Buffer src(d), dst(d);
  fill_normal(src, seed, 1.0, 2.0);
  const Buffer original = src;
  const double e_used = eps ? *eps : rms_norm_default_eps(d.dtype());
  const RmsNormExpectation e = expect_rms_norm(src, nd, g, e_used);
  std::vector<float> invrms(R, -7.0f);
  Buffer& out = inplace ? src : dst;
  rms_norm_forward(d, src.data(), d, out.data(), nd, g, invrms.data(), eps);
  ASSERT_TRUE(check_values(out, e.dst, "dst"));
  ASSERT_TRUE(check_each(invrms.data(), e.invrms, e.invrms_tol, "invrms"));

  Buffer dy(d), dx(d);
  fill_normal(dy, seed + 5);
  const NormBackwardExpectation be = expect_rms_norm_backward(original, dy, nd, g, invrms.data());
  std::vector<float> dgamma(L, -7.0f);
  Buffer& dx_out = inplace ? dy : dx;
  rms_norm_backward(d, original.data(), d, dy.data(), d, dx_out.data(), nd, g, invrms.data(), dgamma.data());
  ASSERT_TRUE(check_diff_src(dx_out, be, "diff_src"));
  ASSERT_TRUE(check_each(dgamma.data(), be.diff_gamma, be.gamma_tol, "diff_gamma"));
}

TEST(RmsNormGrid, ForwardAndBackwardMatchReference) {
  for_each_isa([](const std::string&) {
    std::uint64_t seed = 100;
    for (DType dt : kTypes) {
      for (const GridShape& shape : grid_shapes()) {
        const TensorDesc d(dt, Layout::channels_first, std::span<const std::int64_t>(shape.dims));
        for (bool with_gamma : {false, true})
          for (bool inplace : {false, true}) {
            run_case(d, shape.normalized_dims, with_gamma, inplace, std::nullopt, seed++);
            run_case(d, shape.normalized_dims, with_gamma, inplace, 1e-5, seed++);
            if (HasFatalFailure()) return;
          }
      }
    }
  });
}

TEST(RmsNormGrid, DefaultEpsIsTheDtypesMachineEpsilon) {
  EXPECT_EQ(rms_norm_default_eps(DType::f32), 1.1920928955078125e-07);
  EXPECT_EQ(rms_norm_default_eps(DType::bf16), 0.0078125);
  EXPECT_EQ(rms_norm_default_eps(DType::f16), 0.0009765625);
  // A row of zeros normalizes by sqrt(eps) only: invrms = 1/sqrt(eps).
  for (DType dt : kTypes) {
    const TensorDesc d(dt, Layout::channels_first, {1, 8});
    Buffer src(d), dst(d);
    float invrms = 0.0f;
    rms_norm_forward(d, src.data(), d, dst.data(), 1, nullptr, &invrms);
    EXPECT_FLOAT_EQ(invrms, static_cast<float>(1.0 / std::sqrt(rms_norm_default_eps(dt))));
  }
}

// Each backward output alone and none, bit-identical to the full call.
TEST(RmsNormGrid, BackwardOutputSubsets) {
  for (DType dt : kTypes) {
    const TensorDesc d(dt, Layout::channels_first, {6, 5, 7});
    Buffer src(d), y(d), dy(d), dx_all(d);
    fill_normal(src, 3, -1.0, 0.5);
    fill_normal(dy, 4);
    const std::vector<float> gamma = uniform(35, 5, 0.5f, 2.0f);
    std::vector<float> invrms(6), dg_all(35);
    rms_norm_forward(d, src.data(), d, y.data(), 2, gamma.data(), invrms.data());
    rms_norm_backward(d, src.data(), d, dy.data(), d, dx_all.data(), 2, gamma.data(), invrms.data(),
                      dg_all.data());
    for (int mask = 0; mask < 4; ++mask) {
      Buffer dx(d);
      fill_normal(dx, 9);
      const Buffer dx_before = dx;
      std::vector<float> dg(35, 42.0f);
      rms_norm_backward(d, src.data(), d, dy.data(), d, mask & 1 ? dx.data() : nullptr, 2, gamma.data(),
                        invrms.data(), mask & 2 ? dg.data() : nullptr);
      EXPECT_EQ(dx.bytes, (mask & 1 ? dx_all : dx_before).bytes) << mask;
      EXPECT_EQ(dg, mask & 2 ? dg_all : std::vector<float>(35, 42.0f)) << mask;
    }
  }
}

TEST(RmsNormGrid, EmptyTensors) {
  const TensorDesc no_rows(DType::f32, Layout::channels_first, {0, 5});
  std::vector<float> dg(5, 1.0f), invrms(1, 3.0f);
  rms_norm_forward(no_rows, nullptr, no_rows, nullptr, 1, nullptr, invrms.data());
  EXPECT_EQ(invrms[0], 3.0f);
  rms_norm_backward(no_rows, nullptr, no_rows, nullptr, no_rows, nullptr, 1, nullptr, invrms.data(), dg.data());
  EXPECT_EQ(dg, std::vector<float>(5, 0.0f));
  // No rows, no statistics: an empty vector's data() may be null.
  std::fill(dg.begin(), dg.end(), 1.0f);
  EXPECT_NO_THROW(rms_norm_backward(no_rows, nullptr, no_rows, nullptr, no_rows, nullptr, 1, nullptr, nullptr,
                                    dg.data()));
  EXPECT_EQ(dg, std::vector<float>(5, 0.0f));
  const TensorDesc empty_rows(DType::f32, Layout::channels_first, {2, 0});
  std::vector<float> i2(2, 5.0f);
  rms_norm_forward(empty_rows, nullptr, empty_rows, nullptr, 1, nullptr, i2.data());
  EXPECT_TRUE(std::isnan(i2[0]) && std::isnan(i2[1]));
}

}  // namespace
}  // namespace bnorm::test

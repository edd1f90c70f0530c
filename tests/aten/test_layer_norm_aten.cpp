// Differential tests against ATen (libtorch 1.13): at::native_layer_norm,
// at::native_layer_norm_backward and at::layer_norm on the same data, f32
// and bf16, several normalized shapes, with and without gamma / beta.
// (RMS norm has no ATen counterpart in 1.13; it is checked against the
// reference and the ONNX spec cases.)

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "aten/aten_util.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

::testing::AssertionResult agree_values(const std::vector<float>& ours, const at::Tensor& aten, double rel,
                                        double abs, DType aten_dtype, const std::string& what) {
  const std::vector<double> want = to_doubles(aten);
  if (want.size() != ours.size())
    return ::testing::AssertionFailure() << what << ": " << want.size() << " values, want " << ours.size();
  return all_close(
      static_cast<std::int64_t>(ours.size()),
      [&](std::int64_t i) { return static_cast<double>(ours[static_cast<std::size_t>(i)]); }, want.data(),
      [&](double w) { return abs + rel * std::fabs(w) + (aten_dtype == DType::f32 ? 0.0 : 4 * ulp(aten_dtype, w)); },
      what);
}

// Parameters exactly representable in the data type (ATen 1.13 wants bf16
// gamma / beta for bf16 input; bnorm takes f32).
std::vector<float> params(std::size_t n, std::uint64_t seed, float lo, float hi, DType dt) {
  std::vector<float> v = uniform(n, seed, lo, hi);
  if (dt == DType::bf16)
    for (float& x : v) x = bf16_to_float(bf16_from_float(x));
  return v;
}

at::Tensor param_tensor(const std::vector<float>& v, const std::vector<std::int64_t>& shape, DType dt) {
  return at::from_blob(const_cast<float*>(v.data()), shape, at::kFloat).clone().to(aten_type(dt));
}

void compare_with_aten(const TensorDesc& d, int nd, bool affine, bool with_beta) {
  SCOPED_TRACE(d.str() + " normalized_dims " + std::to_string(nd) + (affine ? " gamma" : "") +
               (with_beta ? " beta" : ""));
  const std::vector<std::int64_t> shape(d.dims().end() - nd, d.dims().end());
  std::int64_t L = 1;
  for (std::int64_t v : shape) L *= v;
  const auto R = static_cast<std::size_t>(d.elements() / L);
  const double eps = 1e-5;
  const std::vector<float> gamma = params(static_cast<std::size_t>(L), 1, 0.5f, 1.5f, d.dtype());
  const std::vector<float> beta = params(static_cast<std::size_t>(L), 2, -1.0f, 1.0f, d.dtype());
  const float* g = affine ? gamma.data() : nullptr;
  const float* b = affine && with_beta ? beta.data() : nullptr;
  const at::Tensor aw = affine ? param_tensor(gamma, shape, d.dtype()) : at::Tensor();
  const at::Tensor ab = b ? param_tensor(beta, shape, d.dtype()) : at::Tensor();

  Buffer src(d), dst(d);
  fill_normal(src, 10, 2.0, 1.5);
  const at::Tensor ax = to_aten(src);
  auto [ay, amean, arstd] = at::native_layer_norm(ax, shape, aw, ab, eps);
  std::vector<float> mean(R), invstd(R);
  layer_norm_forward(d, src.data(), d, dst.data(), nd, g, b, mean.data(), invstd.data(), eps);
  ASSERT_TRUE(agree(dst, to_doubles(ay), "native_layer_norm output", 2));
  ASSERT_TRUE(agree_values(mean, amean, 1e-6, 1e-6, d.dtype(), "mean"));
  ASSERT_TRUE(agree_values(invstd, arstd, 2e-6, 0.0, d.dtype(), "rstd"));
  ASSERT_TRUE(agree(dst, to_doubles(at::layer_norm(ax, shape, aw, ab, eps)), "layer_norm output", 2));

  // Backward: both from ATen's saved statistics (bf16 ones widened exactly),
  // every output mask.
  const std::vector<double> m_aten = to_doubles(amean), r_aten = to_doubles(arstd);
  const std::vector<float> m_in(m_aten.begin(), m_aten.end()), r_in(r_aten.begin(), r_aten.end());
  Buffer dy(d);
  fill_normal(dy, 77);
  const at::Tensor ady = to_aten(dy);
  for (int mask = 1; mask < 8; ++mask) {
    if (!affine && (mask & 6)) continue;  // no parameters, no parameter gradients
    if (!b && (mask & 4)) continue;
    SCOPED_TRACE("mask " + std::to_string(mask));
    auto [adx, adw, adb] = at::native_layer_norm_backward(ady, ax, shape, amean, arstd, aw, ab,
                                                          {bool(mask & 1), bool(mask & 2), bool(mask & 4)});
    if (d.dtype() == DType::bf16 && (mask & 6)) {
      // ATen 1.13's bf16 backward sums the parameter gradients in bf16
      // (measured: 6% off the float64 sums over 64 rows): compare those with
      // its f32 backward on the same (bf16-valued) data and statistics.
      auto f = [](const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; };
      auto [unused, fdw, fdb] = at::native_layer_norm_backward(
          f(ady), f(ax), shape, f(amean), f(arstd), f(aw), f(ab), {false, bool(mask & 2), bool(mask & 4)});
      adw = fdw;
      adb = fdb;
    }
    Buffer dx(d);
    std::vector<float> dg(static_cast<std::size_t>(L)), db(dg.size());
    layer_norm_backward(d, src.data(), d, dy.data(), d, mask & 1 ? dx.data() : nullptr, nd, g, m_in.data(),
                        r_in.data(), mask & 2 ? dg.data() : nullptr, mask & 4 ? db.data() : nullptr);
    if (mask & 1) {
      ASSERT_TRUE(agree(dx, to_doubles(adx), "diff_src", 2));
    }
    // Sums of R terms of size ~1: both sides carry f32 summation error.
    const double abs = 1e-5 * static_cast<double>(R);
    if (mask & 2) {
      ASSERT_TRUE(agree_values(dg, adw.reshape({-1}), 1e-5, abs, d.dtype(), "diff_gamma"));
    }
    if (mask & 4) {
      ASSERT_TRUE(agree_values(db, adb.reshape({-1}), 1e-5, abs, d.dtype(), "diff_beta"));
    }
  }
}

struct Case {
  std::vector<std::int64_t> dims;
  int normalized_dims;
};

TEST(LayerNormAten, MatchesNativeLayerNorm) {
  const std::vector<Case> cases = {{{4, 7, 33}, 1},  {{2, 3, 5, 7}, 2}, {{6, 1000}, 1},
                                   {{3, 17, 4}, 3},  {{5, 129}, 1},     {{2, 2, 3, 2, 8}, 4},
                                   {{64, 4096}, 1}};
  for (DType dt : {DType::f32, DType::bf16})
    for (const Case& c : cases)
      for (int affine = 0; affine < 3; ++affine)
        compare_with_aten(TensorDesc(dt, Layout::channels_first, std::span<const std::int64_t>(c.dims)),
                          c.normalized_dims, affine > 0, affine == 2);
}

}  // namespace
}  // namespace bnorm::test

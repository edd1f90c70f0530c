// Adversarial numerics (DESIGN.md section 3) for layer norm and RMS norm:
// f32 rows far from zero relative to their spread. The normalized output
// (no gamma / beta) must be within 1e-5 of a float64 computation on the same
// f32 input, on every instruction set and thread plan, for short, medium and
// long rows (the long ones take the spread pivot sample).

#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include "common/ln_oracle.hpp"
#include "common/test_util.hpp"
#include "ops/layer_norm/plan.hpp"

namespace bnorm::test {
namespace {

namespace oln = ops::layer_norm;

std::vector<oln::Plan> plans(const oln::Problem& p) {
  return {oln::plan_for(p, num_threads(), oln::Pass::forward), {2, 1, false}, {3, 5, true}};
}

const std::vector<std::pair<std::int64_t, std::int64_t>> kShapes = {{64, 4096}, {300, 17}, {2, 40000}};

TEST(LayerNormNumerics, AdversarialWithin1e5) {
  for (const auto& [rows, len] : kShapes) {
    const TensorDesc d(DType::f32, Layout::channels_first, {rows, len});
    const oln::Problem p = oln::Problem::of(d, 1);
    for (const Distribution& dist : kAdversarial) {
      Buffer src(d);
      fill_normal(src, 42, dist.mean, dist.stddev);
      const LayerNormExpectation e = expect_layer_norm(src, 1, nullptr, nullptr, 1e-5);
      double worst = 0.0;
      for_each_isa([&](const std::string& isa) {
        for (const oln::Plan& plan : plans(p)) {
          Buffer dst(d);
          std::vector<float> mean(static_cast<std::size_t>(rows)), invstd(mean.size());
          oln::forward(p, plan, oln::Kind::layer, src.data(), dst.data(), nullptr, nullptr, mean.data(),
                       invstd.data(), 1e-5);
          const double err = max_abs_error(dst, e.dst);
          worst = std::max(worst, err);
          EXPECT_LE(err, 1e-5) << isa << " " << d.str() << " N(" << dist.mean << ", " << dist.stddev << ")";
          EXPECT_TRUE(check_each(mean.data(), e.mean, e.mean_tol, "mean"));
        }
      });
      std::printf("[numerics] layer_norm %5ldx%-5ld N(%g, %g): max abs error %.3g\n", static_cast<long>(rows),
                  static_cast<long>(len), dist.mean, dist.stddev, worst);
    }
  }
}

TEST(RmsNormNumerics, AdversarialWithin1e5) {
  for (const auto& [rows, len] : kShapes) {
    const TensorDesc d(DType::f32, Layout::channels_first, {rows, len});
    const oln::Problem p = oln::Problem::of(d, 1);
    for (const Distribution& dist : kAdversarial) {
      Buffer src(d);
      fill_normal(src, 43, dist.mean, dist.stddev);
      const RmsNormExpectation e = expect_rms_norm(src, 1, nullptr, 1e-5);
      double worst = 0.0;
      for_each_isa([&](const std::string& isa) {
        for (const oln::Plan& plan : plans(p)) {
          Buffer dst(d);
          std::vector<float> invrms(static_cast<std::size_t>(rows));
          oln::forward(p, plan, oln::Kind::rms, src.data(), dst.data(), nullptr, nullptr, nullptr,
                       invrms.data(), 1e-5);
          const double err = max_abs_error(dst, e.dst);
          worst = std::max(worst, err);
          EXPECT_LE(err, 1e-5) << isa << " " << d.str() << " N(" << dist.mean << ", " << dist.stddev << ")";
        }
      });
      std::printf("[numerics] rms_norm   %5ldx%-5ld N(%g, %g): max abs error %.3g\n", static_cast<long>(rows),
                  static_cast<long>(len), dist.mean, dist.stddev, worst);
    }
  }
}

// Rows whose pivot sample (their first 64 values, or 64 values spread over a
// long row) sits far from the mean: the one-pass sums must be rejected by
// the guard and the exact second pass taken.
TEST(LayerNormNumerics, PivotFarFromMeanTakesSecondPass) {
  for (std::int64_t len : {1000, 40000}) {
    const TensorDesc d(DType::f32, Layout::channels_first, {4, len});
    Buffer src(d);
    fill_normal(src, 7, 0.0, 1.0);
    for (std::int64_t r = 0; r < 4; ++r)
      for (std::int64_t k = 0; k < 64; ++k)
        src.set(r * len + (len > 16384 ? k * (len / 64) : k), 1e4f);
    const LayerNormExpectation e = expect_layer_norm(src, 1, nullptr, nullptr, 1e-5);
    for_each_isa([&](const std::string& isa) {
      Buffer dst(d);
      std::vector<float> mean(4), invstd(4);
      layer_norm_forward(d, src.data(), d, dst.data(), 1, nullptr, nullptr, mean.data(), invstd.data());
      EXPECT_LE(max_abs_error(dst, e.dst), 1e-5) << isa << " len " << len;
      EXPECT_TRUE(check_each(mean.data(), e.mean, e.mean_tol, "mean"));
      EXPECT_TRUE(check_each(invstd.data(), e.invstd, e.invstd_tol, "invstd"));
    });
  }
}

// NaN and Inf stay in their rows: a row holding one gives NaN there, the
// other rows are exact, nothing crashes.
TEST(LayerNormNumerics, NonFiniteValuesStayInTheirRow) {
  const TensorDesc d(DType::f32, Layout::channels_first, {3, 50});
  Buffer src(d), dst(d);
  fill_normal(src, 5);
  src.set(7, std::numeric_limits<float>::quiet_NaN());
  src.set(120, std::numeric_limits<float>::infinity());
  std::vector<float> mean(3), invstd(3), invrms(3);
  layer_norm_forward(d, src.data(), d, dst.data(), 1, nullptr, nullptr, mean.data(), invstd.data());
  EXPECT_TRUE(std::isnan(dst.get(0)));
  EXPECT_TRUE(std::isnan(dst.get(149)));
  EXPECT_FALSE(std::isnan(dst.get(50)));
  EXPECT_TRUE(std::isfinite(mean[1]) && std::isfinite(invstd[1]));
  rms_norm_forward(d, src.data(), d, dst.data(), 1, nullptr, invrms.data());
  EXPECT_TRUE(std::isnan(dst.get(0)));
  EXPECT_FALSE(std::isnan(dst.get(50)));
  EXPECT_EQ(invrms[2], 0.0f);  // 1/sqrt(inf)
}

}  // namespace
}  // namespace bnorm::test

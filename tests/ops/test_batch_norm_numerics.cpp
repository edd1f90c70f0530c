// Adversarial numerics (DESIGN.md section 3): f32 data far from zero relative
// to its spread. The normalized output must be within 1e-5 of a float64
// computation on the same f32 input, in both layouts and every thread plan.
// (PyTorch 1.13 and oneDNN 2.6 are off by 4e-3 to 6 on these.)

#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include "common/bn_oracle.hpp"
#include "common/test_util.hpp"
#include "ops/batch_norm/plan.hpp"

namespace bnorm::test {
namespace {

namespace obn = ops::batch_norm;

std::vector<obn::Plan> plans(const obn::Problem& p) {
  std::vector<obn::Plan> out = {obn::plan_for(p, num_threads(), obn::Pass::training)};
  if (p.layout == Layout::channels_first) {
    out.push_back({obn::Strategy::channel_slabs, 2, 3, 1, false});
    out.push_back({obn::Strategy::split_channels, 3, 1, 1, true});
    // Pipelined blocks: every block after a worker's first takes its sums
    // from the walk of the block before.
    out.push_back({obn::Strategy::channel_slabs, 2, 1, 1, false, true});
    out.push_back({obn::Strategy::channel_slabs, 1, 2, 1, true, true});
  } else {
    out.push_back({obn::Strategy::rows, 2, 1, 100, false});
    out.push_back({obn::Strategy::rows, 3, 1, 1 << 20, true});
  }
  return out;
}

TEST(BatchNormNumerics, AdversarialTrainingWithin1e5) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    const TensorDesc d(DType::f32, layout, {16, 8, 24, 24});
    const obn::Problem p = obn::Problem::of(d);
    for (const Distribution& dist : kAdversarial) {
      Buffer src(d);
      fill_normal(src, 42, dist.mean, dist.stddev);
      const TrainingExpectation e = expect_training(src, nullptr, nullptr, 1e-5);
      double worst = 0.0;
      for_each_isa([&](const std::string&) {
        for (const obn::Plan& plan : plans(p)) {
          Buffer dst(d);
          std::vector<float> mean(8), invstd(8);
          obn::forward_training(p, plan, src.data(), dst.data(), nullptr, nullptr, mean.data(), invstd.data(),
                                nullptr, nullptr, 1e-5, 0.0);
          const double err = max_abs_error(dst, e.dst);
          worst = std::max(worst, err);
          EXPECT_LE(err, 1e-5) << to_string(layout) << " N(" << dist.mean << ", " << dist.stddev << ")";
        }
      });
      std::printf("[numerics] training %-14s N(%g, %g): max abs error %.3g\n",
                  std::string(to_string(layout)).c_str(), dist.mean, dist.stddev, worst);
    }
  }
}

// Inference with statistics equal to the batch's (rounded to f32, as running
// statistics are stored): same bar.
TEST(BatchNormNumerics, AdversarialInferenceWithin1e5) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    const TensorDesc d(DType::f32, layout, {16, 8, 24, 24});
    for (const Distribution& dist : kAdversarial) {
      Buffer src(d), dst(d);
      fill_normal(src, 43, dist.mean, dist.stddev);
      const TrainingExpectation e = expect_training(src, nullptr, nullptr, 1e-5);
      std::vector<float> mean(e.mean.begin(), e.mean.end()), var(e.var.begin(), e.var.end());
      std::vector<double> mean_d(mean.begin(), mean.end()), var_d(var.begin(), var.end());
      std::vector<double> want(static_cast<std::size_t>(d.elements()));
      bref::normalize(ref_shape(d), src.data(), mean_d.data(), var_d.data(), 1e-5, nullptr, nullptr,
                      want.data());
      batch_norm_forward_inference(d, src.data(), d, dst.data(), nullptr, nullptr, mean.data(), var.data(),
                                   1e-5);
      const double err = max_abs_error(dst, want);
      EXPECT_LE(err, 1e-5) << to_string(layout) << " N(" << dist.mean << ", " << dist.stddev << ")";
      std::printf("[numerics] inference %-14s N(%g, %g): max abs error %.3g\n",
                  std::string(to_string(layout)).c_str(), dist.mean, dist.stddev, err);
    }
  }
}

}  // namespace
}  // namespace bnorm::test

namespace bnorm::test {
namespace {

// Data built so that the pivots (64 evenly spread values of a channel, or
// its first 64 rows) sit far from the mean: the one-pass sums must be
// rejected and the exact second pass taken, for every plan.
TEST(BatchNormNumerics, PivotFarFromMeanTakesSecondPass) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    // 64 of 64000 values per channel at 1e4, the rest N(0, 1): the pivot is
    // 30 standard deviations from the mean, a 1000-fold cancellation.
    const TensorDesc d(DType::f32, layout, {64, 3, 100, 10});
    const obn::Problem p = obn::Problem::of(d);
    Buffer src(d);
    fill_normal(src, 7, 0.0, 1.0);
    const std::int64_t count = p.count();
    for (std::int64_t c = 0; c < p.c; ++c) {
      for (std::int64_t i = 0; i < 64; ++i) {
        // The values the channels-first pivot samples, and the first rows.
        const std::int64_t e = i * count / 64, n = e / p.s, s = e % p.s;
        const std::int64_t cf = (n * p.c + c) * p.s + s, cl = i * p.c + c;
        src.set(layout == Layout::channels_first ? cf : cl, 1e4f);
      }
    }
    const TrainingExpectation e = expect_training(src, nullptr, nullptr, 1e-5);
    for (const obn::Plan& plan : plans(p)) {
      Buffer dst(d);
      std::vector<float> mean(3), invstd(3);
      obn::forward_training(p, plan, src.data(), dst.data(), nullptr, nullptr, mean.data(), invstd.data(),
                            nullptr, nullptr, 1e-5, 0.0);
      EXPECT_LE(max_abs_error(dst, e.dst), 1e-5) << to_string(layout);
      EXPECT_TRUE(check_mean(mean.data(), e));
    }
  }
}

}  // namespace
}  // namespace bnorm::test

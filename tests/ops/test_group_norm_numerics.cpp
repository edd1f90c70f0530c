// Adversarial numerics (DESIGN.md section 3) for group norm and instance
// norm: f32 data far from zero relative to its spread. The normalized output
// (gamma = 1, beta = 0) must be within 1e-5 of a float64 computation on the
// same f32 input, in both layouts, every instruction set and every plan.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "common/group_norm_oracle.hpp"
#include "common/test_util.hpp"
#include "ops/group_norm/plan.hpp"

namespace bnorm::test {
namespace {

namespace ogn = ops::group_norm;

std::vector<ogn::Plan> plans(const ogn::Problem& p) {
  std::vector<ogn::Plan> out = {ogn::plan_for(p, num_threads(), ogn::Pass::forward)};
  if (p.rows_view()) {
    out.push_back({ogn::Strategy::samples, 2, 100, false});
    out.push_back({ogn::Strategy::samples, 2, 100, true, 1, true});
    out.push_back({ogn::Strategy::split_samples, 3, 1 << 20, true});
  } else {
    out.push_back({ogn::Strategy::blocks, 3, 1, true});
    out.push_back({ogn::Strategy::blocks, 2, 1, false, 3});
    out.push_back({ogn::Strategy::split_blocks, 2, 1, false});
  }
  return out;
}

TEST(GroupNormNumerics, AdversarialWithin1e5) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    // 16 channels: channels-last samples walk pipelined on every instruction set.
    const TensorDesc d(DType::f32, layout, {16, 16, 24, 24});
    for (std::int64_t groups : {1, 2, 16}) {
      const ogn::Problem p = ogn::Problem::of(d, groups);
      for (const Distribution& dist : kAdversarial) {
        Buffer src(d);
        fill_normal(src, 42, dist.mean, dist.stddev);
        const GroupExpectation e = expect_group_norm(src, groups, nullptr, nullptr, 1e-5);
        double worst = 0.0;
        for_each_isa([&](const std::string&) {
          for (const ogn::Plan& plan : plans(p)) {
            Buffer dst(d);
            std::vector<float> mean(16 * static_cast<std::size_t>(groups)), invstd(mean.size());
            ogn::forward(p, plan, src.data(), dst.data(), nullptr, nullptr, mean.data(), invstd.data(), 1e-5);
            const double err = max_abs_error(dst, e.dst);
            worst = std::max(worst, err);
            EXPECT_LE(err, 1e-5) << to_string(layout) << " G=" << groups << " N(" << dist.mean << ", "
                                 << dist.stddev << ")";
          }
        });
        std::printf("[numerics] %s %-14s G=%ld N(%g, %g): max abs error %.3g\n",
                    groups == 16 ? "instance" : "group   ", std::string(to_string(layout)).c_str(),
                    static_cast<long>(groups), dist.mean, dist.stddev, worst);
      }
    }
  }
}

// Samples of one row (S = 1) take their groups' moments from the row: two
// passes in double for up to 64 channels per group, the shifted sums
// (with their guard) beyond.
TEST(GroupNormNumerics, OneRowSamplesWithin1e5) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    const TensorDesc d(DType::f32, layout, {16, 256});
    for (std::int64_t groups : {2, 8}) {  // 128 and 32 channels per group
      const ogn::Problem p = ogn::Problem::of(d, groups);
      for (const Distribution& dist : kAdversarial) {
        Buffer src(d);
        fill_normal(src, 43, dist.mean, dist.stddev);
        const GroupExpectation e = expect_group_norm(src, groups, nullptr, nullptr, 1e-5);
        for (const ogn::Plan& plan : plans(p)) {
          Buffer dst(d);
          std::vector<float> mean(16 * static_cast<std::size_t>(groups)), invstd(mean.size());
          ogn::forward(p, plan, src.data(), dst.data(), nullptr, nullptr, mean.data(), invstd.data(), 1e-5);
          EXPECT_LE(max_abs_error(dst, e.dst), 1e-5)
              << to_string(layout) << " G=" << groups << " N(" << dist.mean << ", " << dist.stddev << ")";
        }
      }
    }
  }
}

// Through the public instance-norm function with running statistics (f32
// data).
TEST(GroupNormNumerics, InstanceNormPublicFunction) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    for (const Distribution& dist : kAdversarial) {
      const TensorDesc d(DType::f32, layout, {4, 16, 20, 20});
      Buffer src(d), dst(d);
      fill_normal(src, 7, dist.mean, dist.stddev);
      const GroupExpectation e = expect_group_norm(src, 16, nullptr, nullptr, 1e-5);
      std::vector<float> rm(16, 0.0f), rv(16, 1.0f);
      instance_norm_forward_training(d, src.data(), d, dst.data(), nullptr, nullptr, nullptr, nullptr, rm.data(),
                                     rv.data());
      EXPECT_LE(max_abs_error(dst, e.dst), 1e-5) << to_string(layout) << " N(" << dist.mean << ")";
    }
  }
}

// Data built so that every pivot (the starts of a block's planes, or a
// sample's first rows) sits far from the group's mean: the one-pass sums
// must be rejected and the exact second pass taken, in every plan.
TEST(GroupNormNumerics, PivotFarFromMeanTakesSecondPass) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    const TensorDesc d(DType::f32, layout, {4, 16, 100, 10});
    for (std::int64_t groups : {2, 16}) {
      const ogn::Problem p = ogn::Problem::of(d, groups);
      Buffer src(d);
      fill_normal(src, 9, 0.0, 1.0);
      // The first 8 values of every plane (channels-first) and the first 64
      // rows (channels-last) at 1e4, among 1000 values per channel: the
      // pivot is about 11 (channels-first) or 4 (channels-last) standard
      // deviations from the mean, beyond what the guard accepts.
      for (std::int64_t n = 0; n < p.n; ++n)
        for (std::int64_t c = 0; c < p.c; ++c) {
          if (layout == Layout::channels_first) {
            for (std::int64_t s = 0; s < 8; ++s) src.set((n * p.c + c) * p.s + s, 1e4f);
          } else {
            for (std::int64_t r = 0; r < 64; ++r) src.set((n * p.s + r) * p.c + c, 1e4f);
          }
        }
      const GroupExpectation e = expect_group_norm(src, groups, nullptr, nullptr, 1e-5);
      for (const ogn::Plan& plan : plans(p)) {
        Buffer dst(d);
        std::vector<float> mean(4 * static_cast<std::size_t>(groups)), invstd(mean.size());
        ogn::forward(p, plan, src.data(), dst.data(), nullptr, nullptr, mean.data(), invstd.data(), 1e-5);
        EXPECT_LE(max_abs_error(dst, e.dst), 1e-5) << to_string(layout) << " G=" << groups;
        EXPECT_TRUE(check_group_stats(mean.data(), invstd.data(), e, 1e-5));
      }
    }
  }
}

// Small planes (up to 400 values) take each block's moments in two passes
// from its first value: with that value far from the rest (a pivot 1000
// standard deviations off) and with the adversarial offsets, instance and
// group norm meet the bar on every instruction set; a NaN or an infinity
// makes its own group NaN and no other.
TEST(GroupNormNumerics, SmallPlanesWithin1e5) {
  for (const std::vector<std::int64_t>& dims :
       {std::vector<std::int64_t>{8, 16, 2, 2}, {8, 16, 7, 7}, {4, 16, 20, 20}}) {
    const TensorDesc d(DType::f32, Layout::channels_first, dims);
    for (std::int64_t groups : {16, 4}) {
      const ogn::Problem p = ogn::Problem::of(d, groups);
      ASSERT_FALSE(ogn::plan_for(p, 2, ogn::Pass::forward).pipelined) << d.dims_str();
      for (const Distribution& dist : kAdversarial) {
        for (bool outlier : {false, true}) {
          Buffer src(d);
          fill_normal(src, 17, dist.mean, dist.stddev);
          if (outlier)
            for (std::int64_t q = 0; q < p.n * p.c; ++q)
              src.set(q * p.s, static_cast<float>(dist.mean + 1e3 * dist.stddev));
          const GroupExpectation e = expect_group_norm(src, groups, nullptr, nullptr, 1e-5);
          for_each_isa([&](const std::string& isa) {
            for (const ogn::Plan& plan : plans(p)) {
              Buffer dst(d);
              std::vector<float> mean(static_cast<std::size_t>(p.n * groups)), invstd(mean.size());
              ogn::forward(p, plan, src.data(), dst.data(), nullptr, nullptr, mean.data(), invstd.data(),
                           1e-5);
              EXPECT_LE(max_abs_error(dst, e.dst), 1e-5)
                  << isa << " " << d.dims_str() << " G=" << groups << " N(" << dist.mean << ", "
                  << dist.stddev << ")" << (outlier ? " outlier first" : "");
              EXPECT_TRUE(check_group_stats(mean.data(), invstd.data(), e, 1e-5));
            }
          });
        }
      }
      // Sample 1's group 0 gets a NaN (first value, then elsewhere) or an
      // infinity; sample 2's group 1 an infinity first.
      const std::int64_t block = p.group_count();
      for (std::int64_t at : {std::int64_t{0}, block - 1}) {
        for (float bad : {NAN, INFINITY}) {
          Buffer src(d), dst(d);
          fill_normal(src, 19, 3.0, 1.0);
          src.set(1 * p.c * p.s + at, bad);
          src.set(2 * p.c * p.s + block, -INFINITY);
          const ogn::Plan plan = ogn::plan_for(p, 2, ogn::Pass::forward);
          std::vector<float> mean(static_cast<std::size_t>(p.n * groups)), invstd(mean.size());
          ogn::forward(p, plan, src.data(), dst.data(), nullptr, nullptr, mean.data(), invstd.data(), 1e-5);
          for (std::int64_t i = 0; i < d.elements(); ++i) {
            const std::int64_t b = i / block;  // (sample, group) block
            const bool poisoned = b == 1 * groups || b == 2 * groups + 1;
            EXPECT_EQ(std::isnan(dst.get(i)), poisoned)
                << d.dims_str() << " G=" << groups << " element " << i;
            if (!poisoned) {
              EXPECT_TRUE(std::isfinite(dst.get(i)));
            }
          }
          EXPECT_TRUE(std::isnan(mean[1 * groups]) == std::isnan(bad));
          EXPECT_TRUE(std::isfinite(mean[0]) && std::isfinite(invstd[0]));
        }
      }
    }
  }
}

// Channels-last samples of 64000 rows whose first 64 rows sit at 1e4 among
// N(0, 1) values: the pivot is as far from the mean as 64 of S rows can put
// it (o^2 / var about S / 64). Pipelined, or in one tile, a sample's sums
// are taken about that pivot, and without the guard's second pass the
// outputs miss the bar (tried, both); in tiles of 1000 rows, later tiles
// pivot on the mean so far.
TEST(GroupNormNumerics, PivotFarFromMeanInLongSamples) {
  const TensorDesc d(DType::f32, Layout::channels_last, {2, 16, 250, 256});
  const ogn::Problem p = ogn::Problem::of(d, 4);
  Buffer src(d);
  fill_normal(src, 11, 0.0, 1.0);
  for (std::int64_t n = 0; n < p.n; ++n)
    for (std::int64_t r = 0; r < 64; ++r)
      for (std::int64_t c = 0; c < p.c; ++c) src.set((n * p.s + r) * p.c + c, 1e4f);
  const GroupExpectation e = expect_group_norm(src, 4, nullptr, nullptr, 1e-5);
  for (const ogn::Plan& plan : {ogn::Plan{ogn::Strategy::samples, 1, 1000, false},
                                ogn::Plan{ogn::Strategy::samples, 1, 1 << 20, false},
                                ogn::Plan{ogn::Strategy::samples, 1, 1000, true, 1, true}}) {
    Buffer dst(d);
    std::vector<float> mean(8), invstd(8);
    ogn::forward(p, plan, src.data(), dst.data(), nullptr, nullptr, mean.data(), invstd.data(), 1e-5);
    EXPECT_LE(max_abs_error(dst, e.dst), 1e-5)
        << (plan.pipelined ? "pipelined" : "tiles of " + std::to_string(plan.tile_rows) + " rows");
  }
}

}  // namespace
}  // namespace bnorm::test

// Batch renormalization: BatchNorm exactly when r_max = 1 and d_max = 0,
// the paper's formula against a double reference otherwise (channels that
// clip and channels that do not), backward with r and d constant (formula
// and finite differences), the schedule, the layer, and the errors.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "bnorm/batch_renorm.hpp"
#include "bnorm/error.hpp"
#include "bnorm/runtime.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

struct Case {
  DType dtype;
  Layout layout;
  std::vector<std::int64_t> dims;
};

std::vector<Case> cases() {
  return {{DType::f32, Layout::channels_first, {4, 5, 7, 3}},  {DType::f32, Layout::channels_last, {6, 9, 5}},
          {DType::bf16, Layout::channels_first, {3, 17, 11}}, {DType::f16, Layout::channels_last, {2, 3, 4, 5}},
          {DType::f32, Layout::channels_first, {64, 3}},      {DType::f32, Layout::channels_first, {2, 8, 300}}};
}

std::string name(const Case& c) { return TensorDesc(c.dtype, c.layout, c.dims).str(); }

TEST(BatchRenorm, WithUnitLimitsIsBatchNormBitForBit) {
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (const Case& c : cases()) {
      SCOPED_TRACE(name(c) + " threads " + std::to_string(threads));
      const TensorDesc d(c.dtype, c.layout, c.dims);
      const auto C = static_cast<std::size_t>(d.channels());
      Buffer src(d), dst_bn(d), dst_rn(d), dy(d), dx_bn(d), dx_rn(d);
      fill_normal(src, 1, 3.0, 2.0);
      fill_normal(dy, 2);
      const auto gamma = uniform(C, 3, 0.5f, 1.5f), beta = uniform(C, 4, -1.0f, 1.0f);
      auto rm_bn = uniform(C, 5, -1.0f, 1.0f), rv_bn = uniform(C, 6, 0.5f, 2.0f);
      auto rm_rn = rm_bn, rv_rn = rv_bn;
      std::vector<float> m_bn(C), is_bn(C), m_rn(C), is_rn(C), r(C), dd(C);
      batch_norm_forward_training(d, src.data(), d, dst_bn.data(), gamma.data(), beta.data(), m_bn.data(),
                                  is_bn.data(), {rm_bn.data(), rv_bn.data(), nullptr});
      batch_renorm_forward_training(d, src.data(), d, dst_rn.data(), gamma.data(), beta.data(), m_rn.data(),
                                    is_rn.data(), r.data(), dd.data(), {rm_rn.data(), rv_rn.data(), nullptr},
                                    {1.0, 0.0});
      EXPECT_EQ(dst_bn.bytes, dst_rn.bytes);
      EXPECT_EQ(m_bn, m_rn);
      EXPECT_EQ(is_bn, is_rn);
      EXPECT_EQ(rm_bn, rm_rn);
      EXPECT_EQ(rv_bn, rv_rn);
      EXPECT_EQ(r, std::vector<float>(C, 1.0f));
      EXPECT_EQ(dd, std::vector<float>(C, 0.0f));
      std::vector<float> dg_bn(C), db_bn(C), dg_rn(C), db_rn(C);
      batch_norm_backward(d, src.data(), d, dy.data(), d, dx_bn.data(), gamma.data(), m_bn.data(), is_bn.data(),
                          dg_bn.data(), db_bn.data());
      batch_renorm_backward(d, src.data(), d, dy.data(), d, dx_rn.data(), gamma.data(), m_rn.data(), is_rn.data(),
                            r.data(), dd.data(), dg_rn.data(), db_rn.data());
      EXPECT_EQ(dx_bn.bytes, dx_rn.bytes);
      EXPECT_EQ(dg_bn, dg_rn);
      EXPECT_EQ(db_bn, db_rn);
    }
  }
  set_num_threads(0);
}

// BatchNorm's output does not depend on the running statistics; renorm's
// with limits (1, 0) must not either, even when they hold NaN or infinity.
TEST(BatchRenorm, WithUnitLimitsIgnoresNonFiniteRunningStatistics) {
  const TensorDesc d(DType::f32, Layout::channels_last, {4, 3, 5});
  Buffer src(d), dst_bn(d), dst_rn(d);
  fill_normal(src, 1, 3.0, 2.0);
  const auto gamma = uniform(3, 3, 0.5f, 1.5f), beta = uniform(3, 4, -1.0f, 1.0f);
  std::vector<float> rm{std::nanf(""), INFINITY, 0.0f}, rv{1.0f, 1.0f, std::nanf("")};
  std::vector<float> m(3), is(3), r(3), dd(3), rm_bn = rm, rv_bn = rv;
  batch_norm_forward_training(d, src.data(), d, dst_bn.data(), gamma.data(), beta.data(), m.data(), is.data(),
                              {rm_bn.data(), rv_bn.data(), nullptr});
  batch_renorm_forward_training(d, src.data(), d, dst_rn.data(), gamma.data(), beta.data(), m.data(),
                                is.data(), r.data(), dd.data(), {rm.data(), rv.data(), nullptr}, {1.0, 0.0});
  EXPECT_EQ(dst_bn.bytes, dst_rn.bytes);
  EXPECT_EQ(r, std::vector<float>(3, 1.0f));
  for (float v : dd) EXPECT_TRUE(v == 0.0f && !std::signbit(v)) << v;
}

// ... nor with other values of beta and gamma: -0 stays -0 (beta + gamma * d
// made +0 of it) and an infinite gamma makes BatchNorm's output, not NaN.
TEST(BatchRenorm, WithUnitLimitsKeepsBatchNormsSignedZerosAndInfinities) {
  const TensorDesc d(DType::f32, Layout::channels_first, {4, 2, 3});
  Buffer src(d), dst_bn(d), dst_rn(d);
  fill_normal(src, 1, 3.0, 2.0);
  const std::vector<float> gamma{0.0f, INFINITY}, beta{-0.0f, 1.0f};
  std::vector<float> rm(2, 0.0f), rv(2, 1.0f), m(2), is(2), r(2), dd(2), rm_bn = rm, rv_bn = rv;
  batch_norm_forward_training(d, src.data(), d, dst_bn.data(), gamma.data(), beta.data(), m.data(), is.data(),
                              {rm_bn.data(), rv_bn.data(), nullptr});
  batch_renorm_forward_training(d, src.data(), d, dst_rn.data(), gamma.data(), beta.data(), m.data(),
                                is.data(), r.data(), dd.data(), {rm.data(), rv.data(), nullptr}, {1.0, 0.0});
  EXPECT_EQ(dst_bn.bytes, dst_rn.bytes);
}

// Running var 0 with eps 0 (a dead channel's, or a constant one's) and
// infinite running statistics: r and d take the limits of their quotients
// (0 / 0 is r = 1, d = 0; x / 0 and inf / inf clip), never NaN. An audit
// found a constant channel's output NaN where BatchNorm gives beta.
TEST(BatchRenorm, DegenerateRunningStatisticsClipToTheLimits) {
  const TensorDesc d(DType::f32, Layout::channels_first, {3, 4, 2});
  Buffer src(d), dst(d);
  for (std::int64_t i = 0; i < d.elements(); ++i) {
    const std::int64_t c = i / 2 % 4;
    src.set(i, c < 2 ? 2.0f : 1.0f + static_cast<float>(i % 5));  // channels 0, 1 constant
  }
  const std::vector<float> gamma{1.5f, 1.5f, 1.5f, 1.5f}, beta{0.25f, 0.25f, 0.25f, 0.25f};
  std::vector<float> rm{2.0f, 1.0f, 0.0f, INFINITY}, rv{0.0f, 0.0f, 0.0f, INFINITY};
  std::vector<float> m(4), is(4), r(4), dd(4);
  BatchNormConfig config;
  config.eps = 0.0;
  batch_renorm_forward_training(d, src.data(), d, dst.data(), gamma.data(), beta.data(), m.data(), is.data(),
                                r.data(), dd.data(), {rm.data(), rv.data(), nullptr}, {2.0, 3.0}, config);
  EXPECT_EQ(r, (std::vector<float>{1.0f, 1.0f, 2.0f, 0.5f}));
  EXPECT_EQ(dd, (std::vector<float>{0.0f, 3.0f, 3.0f, -3.0f}));
  for (std::int64_t i = 0; i < d.elements(); ++i) {
    const std::int64_t c = i / 2 % 4;
    ASSERT_FALSE(std::isnan(dst.get(i))) << i;
    if (c == 0) {
      EXPECT_EQ(dst.get(i), 0.25) << "beta, as BatchNorm gives";
    } else if (c == 1) {
      EXPECT_EQ(dst.get(i), 1.5 * 3.0 + 0.25) << "gamma * d + beta";
    }
  }
}

// The paper's forward in double, from the data and the old running stats.
struct RenormRef {
  std::vector<double> dst, mean, var, r, d, xhat;
};

RenormRef reference(const Buffer& src, const std::vector<float>& gamma, const std::vector<float>& beta,
                    const std::vector<float>& rm, const std::vector<float>& rv, double eps, BatchRenormLimits lim) {
  const TensorDesc& d = src.desc;
  const std::int64_t n = d.batch(), C = d.channels(), s = d.spatial();
  auto at = [&](std::int64_t i, std::int64_t c, std::int64_t k) {
    return d.layout() == Layout::channels_first ? (i * C + c) * s + k : (i * s + k) * C + c;
  };
  RenormRef out;
  out.dst.resize(static_cast<std::size_t>(d.elements()));
  out.xhat = out.dst;
  for (std::int64_t c = 0; c < C; ++c) {
    double sum = 0, sq = 0;
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t k = 0; k < s; ++k) sum += src.get(at(i, c, k));
    const double mean = sum / static_cast<double>(n * s);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t k = 0; k < s; ++k) sq += std::pow(src.get(at(i, c, k)) - mean, 2);
    const double var = sq / static_cast<double>(n * s);
    const double sigma_b = std::sqrt(var + eps), sigma = std::sqrt(rv[static_cast<std::size_t>(c)] + eps);
    const double r = std::clamp(sigma_b / sigma, 1.0 / lim.r_max, lim.r_max);
    const double dd = std::clamp((mean - rm[static_cast<std::size_t>(c)]) / sigma, -lim.d_max, lim.d_max);
    out.mean.push_back(mean);
    out.var.push_back(var);
    out.r.push_back(r);
    out.d.push_back(dd);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t k = 0; k < s; ++k) {
        const auto e = static_cast<std::size_t>(at(i, c, k));
        out.xhat[e] = (src.get(at(i, c, k)) - mean) / sigma_b;
        out.dst[e] = gamma[static_cast<std::size_t>(c)] * (out.xhat[e] * r + dd) + beta[static_cast<std::size_t>(c)];
      }
  }
  return out;
}

TEST(BatchRenorm, MatchesThePaperAndClipsPerChannel) {
  const BatchRenormLimits lim{1.5, 0.5};
  for (const Case& c : cases()) {
    SCOPED_TRACE(name(c));
    const TensorDesc d(c.dtype, c.layout, c.dims);
    const auto C = static_cast<std::size_t>(d.channels());
    Buffer src(d), dst(d);
    fill_normal(src, 7, 1.0, 1.5);
    const auto gamma = uniform(C, 3, 0.5f, 1.5f), beta = uniform(C, 4, -1.0f, 1.0f);
    // Running statistics spread so that some channels clip and some do not.
    auto rm = uniform(C, 8, 0.0f, 2.5f), rv = uniform(C, 9, 0.3f, 6.0f);
    const auto want = reference(src, gamma, beta, rm, rv, 1e-5, lim);
    std::vector<float> mean(C), invstd(C), r(C), dd(C);
    const auto rm0 = rm, rv0 = rv;
    batch_renorm_forward_training(d, src.data(), d, dst.data(), gamma.data(), beta.data(), mean.data(),
                                  invstd.data(), r.data(), dd.data(), {rm.data(), rv.data(), nullptr}, lim);
    bool clipped = false, free = false;
    for (std::size_t k = 0; k < C; ++k) {
      EXPECT_NEAR(r[k], want.r[k], 1e-5 * want.r[k]) << k;
      EXPECT_NEAR(dd[k], want.d[k], 1e-5) << k;
      (std::fabs(want.r[k]) == lim.r_max || std::fabs(want.r[k]) == 1 / lim.r_max || std::fabs(want.d[k]) == lim.d_max
           ? clipped
           : free) = true;
      // Running statistics as BatchNorm's, from the batch (unbiased var).
      const double count = static_cast<double>(d.batch() * d.spatial());
      EXPECT_NEAR(rm[k], 0.9 * rm0[k] + 0.1 * want.mean[k], 1e-5 * (1 + std::fabs(rm[k]))) << k;
      EXPECT_NEAR(rv[k], 0.9 * rv0[k] + 0.1 * want.var[k] * count / (count - 1), 1e-5 * (1 + rv[k])) << k;
    }
    if (C >= 5) {
      EXPECT_TRUE(clipped && free) << "the data should exercise both";
    }
    double scale = 1;
    for (double w : want.dst) scale = std::max(scale, std::fabs(w));
    for (std::int64_t i = 0; i < d.elements(); ++i)
      ASSERT_NEAR(dst.get(i), want.dst[static_cast<std::size_t>(i)],
                  element_tolerance(c.dtype, want.dst[static_cast<std::size_t>(i)], 4e-6 * scale))
          << i;
  }
}

TEST(BatchRenorm, BackwardTreatsRAndDAsConstants) {
  // Small f32 problems: the analytic formula, and finite differences of
  // L(x) = sum(w * y(x)) with r and d frozen at their saved values.
  for (const Layout layout : {Layout::channels_first, Layout::channels_last}) {
    const TensorDesc d(DType::f32, layout, {3, 4, 5});
    const std::size_t C = 4;
    Buffer src(d), dst(d), w(d), dx(d);
    fill_normal(src, 11, 0.5, 1.0);
    fill_normal(w, 12);
    const auto gamma = uniform(C, 3, 0.5f, 1.5f), beta = uniform(C, 4, -1.0f, 1.0f);
    auto rm = uniform(C, 13, -0.5f, 0.5f), rv = uniform(C, 14, 0.2f, 3.0f);
    const auto rm0 = rm, rv0 = rv;
    std::vector<float> mean(C), invstd(C), r(C), dd(C), dg(C), db(C);
    const BatchRenormLimits lim{1.3, 0.4};
    batch_renorm_forward_training(d, src.data(), d, dst.data(), gamma.data(), beta.data(), mean.data(),
                                  invstd.data(), r.data(), dd.data(), {rm.data(), rv.data(), nullptr}, lim);
    batch_renorm_backward(d, src.data(), d, w.data(), d, dx.data(), gamma.data(), mean.data(), invstd.data(),
                          r.data(), dd.data(), dg.data(), db.data());
    // L with r, d frozen, in double.
    auto loss = [&](const Buffer& x) {
      std::vector<float> zero(C, 0.0f), one(C, 1.0f);
      const auto ref = reference(x, one, zero, rm0, rv0, 1e-5, {1e9, 1e9});
      double l = 0;
      const std::int64_t n = d.batch(), s = d.spatial();
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t c = 0; c < 4; ++c)
          for (std::int64_t k = 0; k < s; ++k) {
            const std::int64_t e = layout == Layout::channels_first ? (i * 4 + c) * s + k : (i * s + k) * 4 + c;
            const auto uc = static_cast<std::size_t>(c);
            l += w.get(e) * (gamma[uc] * (ref.xhat[static_cast<std::size_t>(e)] * r[uc] + dd[uc]) + beta[uc]);
          }
      return l;
    };
    for (std::int64_t e = 0; e < d.elements(); e += 7) {
      Buffer plus = src, minus = src;
      const float h = 1e-2f;
      plus.set(e, src.get(e) + h);
      minus.set(e, src.get(e) - h);
      const double numeric = (loss(plus) - loss(minus)) / (plus.get(e) - minus.get(e));
      EXPECT_NEAR(dx.get(e), numeric, 2e-3 * (1 + std::fabs(numeric))) << "element " << e;
    }
    // diff_gamma = r * sum(w * xhat) + d * sum(w), diff_beta = sum(w).
    std::vector<float> zero(C, 0.0f), one(C, 1.0f);
    const auto ref = reference(src, one, zero, rm0, rv0, 1e-5, {1e9, 1e9});
    for (std::size_t c = 0; c < C; ++c) {
      double swx = 0, sw = 0;
      for (std::int64_t i = 0; i < 3; ++i)
        for (std::int64_t k = 0; k < 5; ++k) {
          const std::int64_t e = layout == Layout::channels_first ? (i * 4 + static_cast<std::int64_t>(c)) * 5 + k
                                                                  : (i * 5 + k) * 4 + static_cast<std::int64_t>(c);
          swx += w.get(e) * ref.xhat[static_cast<std::size_t>(e)];
          sw += w.get(e);
        }
      EXPECT_NEAR(dg[c], r[c] * swx + dd[c] * sw, 1e-4) << c;
      EXPECT_NEAR(db[c], sw, 1e-4) << c;
    }
  }
}

TEST(BatchRenormSchedule, RampsFromBatchNormToTheTargets) {
  const BatchRenormSchedule s(3.0, 5.0, 100, 400, 200);
  for (std::int64_t step : {0, 50, 99}) {
    EXPECT_EQ(s.at(step).r_max, 1.0) << step;
    EXPECT_EQ(s.at(step).d_max, 0.0) << step;
  }
  EXPECT_NEAR(s.at(299).r_max, 2.0, 1e-12);  // half of the r ramp
  EXPECT_NEAR(s.at(199).d_max, 2.5, 1e-12);  // half of the d ramp
  EXPECT_EQ(s.at(499).r_max, 3.0);
  EXPECT_EQ(s.at(299).d_max, 5.0);
  EXPECT_EQ(s.at(1000000).r_max, 3.0);
  double last = 1.0;
  for (std::int64_t step = 0; step < 600; ++step) {
    EXPECT_GE(s.at(step).r_max, last);
    last = s.at(step).r_max;
  }
  const BatchRenormSchedule paper;
  EXPECT_EQ(paper.at(4999).r_max, 1.0);
  EXPECT_EQ(paper.at(39999).r_max, 3.0);
  EXPECT_EQ(paper.at(24999).d_max, 5.0);
  EXPECT_THROW(BatchRenormSchedule(0.5, 5.0), Error);
  EXPECT_THROW(BatchRenormSchedule(3.0, -1.0), Error);
  EXPECT_THROW(BatchRenormSchedule(3.0, 5.0, -1), Error);
  // A ramp to infinity would give (inf - 1) * 0 = NaN during warm-up.
  EXPECT_THROW(BatchRenormSchedule(INFINITY, 5.0), Error);
  EXPECT_THROW(BatchRenormSchedule(3.0, INFINITY), Error);
  // Every int64 step: step - warmup + 1 overflowed at INT64_MAX (warm-up
  // limits returned), and a very negative step wrapped to the targets.
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max(),
                         kMin = std::numeric_limits<std::int64_t>::min();
  const BatchRenormSchedule no_ramps(3.0, 5.0, 0, 0, 0);
  EXPECT_EQ(no_ramps.at(kMax).r_max, 3.0);
  EXPECT_EQ(no_ramps.at(kMax).d_max, 5.0);
  EXPECT_EQ(s.at(kMax).r_max, 3.0);
  for (std::int64_t step : {std::int64_t{-1}, kMin}) {
    EXPECT_EQ(s.at(step).r_max, 1.0) << step;
    EXPECT_EQ(s.at(step).d_max, 0.0) << step;
  }
}

TEST(BatchRenormLayer, StepsTheScheduleAndEvaluatesLikeBatchNorm) {
  BatchRenorm::Options o;
  o.num_features = 3;
  o.schedule = BatchRenormSchedule(2.0, 1.0, 1, 2, 2);
  BatchRenorm layer(o);
  const TensorDesc d(DType::f32, Layout::channels_first, {4, 3, 6});
  Buffer src(d), dst(d), dx(d);
  fill_normal(src, 21, 5.0, 3.0);  // far from the initial running stats: r and d clip
  EXPECT_THROW(layer.backward(d, src.data(), d, src.data(), d, dx.data()), Error);
  layer.forward(d, src.data(), d, dst.data());
  EXPECT_EQ(layer.step(), 1);
  for (float r : layer.saved_r()) EXPECT_EQ(r, 1.0f);  // step 0: warm-up, plain BN
  layer.forward(d, src.data(), d, dst.data());
  layer.forward(d, src.data(), d, dst.data());
  EXPECT_EQ(layer.step(), 3);
  for (float r : layer.saved_r()) EXPECT_LE(r, 2.0f);
  bool moved = false;
  for (float v : layer.saved_d()) moved |= v != 0.0f;
  EXPECT_TRUE(moved) << "d should leave 0 once the ramp starts";
  layer.backward(d, src.data(), d, src.data(), d, dx.data());
  layer.eval();
  Buffer inf(d);
  batch_norm_forward_inference(d, src.data(), d, inf.data(), layer.weight().data(), layer.bias().data(),
                               layer.running_mean().data(), layer.running_var().data(), o.eps);
  layer.forward(d, src.data(), d, dst.data());
  EXPECT_EQ(dst.bytes, inf.bytes);
  EXPECT_EQ(layer.step(), 3) << "eval does not advance the schedule";
  // Resumed at a step (a checkpoint): the next training forward uses that
  // step's limits, as the functions given schedule.at(step) do.
  layer.train();
  layer.set_step(1);
  std::vector<float> rm(layer.running_mean().begin(), layer.running_mean().end()),
      rv(layer.running_var().begin(), layer.running_var().end()), m(3), s(3), r(3), dd(3);
  Buffer want(d);
  batch_renorm_forward_training(d, src.data(), d, want.data(), layer.weight().data(), layer.bias().data(),
                                m.data(), s.data(), r.data(), dd.data(), {rm.data(), rv.data(), nullptr},
                                o.schedule.at(1), BatchNormConfig{o.eps, o.momentum});
  layer.forward(d, src.data(), d, dst.data());
  EXPECT_EQ(dst.bytes, want.bytes);
  EXPECT_EQ(layer.step(), 2);
  EXPECT_THROW(layer.set_step(-1), Error);
  EXPECT_EQ(layer.step(), 2);
  // The count saturates (++ past INT64_MAX wrapped to a negative step, i.e.
  // warm-up: plain BN again).
  const std::int64_t last = std::numeric_limits<std::int64_t>::max();
  layer.set_step(last);
  for (int i = 0; i < 2; ++i) layer.forward(d, src.data(), d, dst.data());
  EXPECT_EQ(layer.step(), last);
  moved = false;
  for (float v : layer.saved_d()) moved |= v != 0.0f;
  EXPECT_TRUE(moved) << "still at the targets";
}

TEST(BatchRenorm, Errors) {
  const TensorDesc d(DType::f32, Layout::channels_first, {2, 3, 4});
  Buffer src(d), dst(d);
  std::vector<float> rm(3, 0.0f), rv(3, 1.0f), s(3);
  auto expect = [&](auto call, ErrorKind kind, const char* word) {
    try {
      call();
      ADD_FAILURE() << word;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  };
  const auto before = dst.bytes;
  expect([&] { batch_renorm_forward_training(d, src.data(), d, dst.data(), nullptr, nullptr, s.data(), s.data(), nullptr, nullptr, {}, {}); },
         ErrorKind::null_pointer, "running");
  expect([&] { batch_renorm_forward_training(d, src.data(), d, dst.data(), nullptr, nullptr, s.data(), s.data(), nullptr, nullptr, {rm.data(), rv.data(), nullptr}, {0.5, 1.0}); },
         ErrorKind::invalid_argument, "r_max");
  expect([&] { batch_renorm_forward_training(d, src.data(), d, dst.data(), nullptr, nullptr, s.data(), s.data(), nullptr, nullptr, {rm.data(), rv.data(), nullptr}, {2.0, -1.0}); },
         ErrorKind::invalid_argument, "d_max");
  expect([&] { batch_renorm_backward(d, src.data(), d, src.data(), d, dst.data(), nullptr, s.data(), s.data(), nullptr, s.data(), nullptr, nullptr); },
         ErrorKind::null_pointer, "'r'");
  EXPECT_EQ(dst.bytes, before) << "outputs untouched on error";
  EXPECT_EQ(rm, std::vector<float>(3, 0.0f));

  // The layer's backward takes the dims of its last training forward only
  // (another C, or another N, which its statistics do not describe).
  BatchRenorm layer(BatchRenorm::Options{.num_features = 3});
  layer.forward(d, src.data(), d, dst.data());
  for (const TensorDesc& other : {TensorDesc(DType::f32, Layout::channels_first, {2, 5, 4}),
                                  TensorDesc(DType::f32, Layout::channels_first, {4, 3, 4})}) {
    Buffer wsrc(other), wdx(other);
    const auto wbefore = wdx.bytes;
    expect([&] { layer.backward(other, wsrc.data(), other, wsrc.data(), other, wdx.data()); },
           ErrorKind::shape_mismatch,
           ("has dims " + other.dims_str() + ": the last forward had " + d.dims_str()).c_str());
    EXPECT_EQ(wdx.bytes, wbefore);
  }
}

}  // namespace
}  // namespace bnorm::test

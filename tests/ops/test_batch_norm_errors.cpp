// Every documented error of the batch-norm API, each triggered once: the kind,
// a message naming the argument, value and rule, and no output touched.
// Also: NaN and Inf in the data propagate like PyTorch and never crash.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

struct Fixture {
  TensorDesc desc{DType::f32, Layout::channels_first, {2, 3, 4}};
  Buffer src{desc}, dst{desc};
  std::vector<float> gamma = std::vector<float>(3, 1.0f), beta = std::vector<float>(3, 0.0f);
  std::vector<float> mean = std::vector<float>(3, 0.5f), invstd = std::vector<float>(3, 2.0f);
  std::vector<float> rmean = std::vector<float>(3, 0.25f), rvar = std::vector<float>(3, 4.0f);
  std::int64_t tracked = 7;
  Fixture() {
    fill_normal(src, 1);
    fill_normal(dst, 2);
  }
  // Outputs keep their values when a call fails.
  void expect_untouched(const Buffer& dst_before) const {
    EXPECT_EQ(dst.bytes, dst_before.bytes);
    EXPECT_EQ(rmean, std::vector<float>(3, 0.25f));
    EXPECT_EQ(rvar, std::vector<float>(3, 4.0f));
    EXPECT_EQ(tracked, 7);
  }
  void train(const TensorDesc& s, const TensorDesc& d, BatchNormConfig cfg = {}, const void* sp = nullptr,
             void* dp = nullptr, RunningStats* running = nullptr) {
    RunningStats r{rmean.data(), rvar.data(), &tracked};
    batch_norm_forward_training(s, sp ? sp : src.data(), d, dp ? dp : dst.data(), gamma.data(), beta.data(),
                                mean.data(), invstd.data(), running ? *running : r, cfg);
  }
};

TEST(BatchNormErrors, RankBelowTwo) {
  Fixture f;
  const Buffer before = f.dst;
  const TensorDesc r1(DType::f32, Layout::channels_first, {24});
  expect_error([&] { f.train(r1, r1); }, ErrorKind::invalid_argument, {"src_desc", "rank 1", "2 to 5"});
  f.expect_untouched(before);
}

TEST(BatchNormErrors, RankAboveFive) {
  expect_error(
      [] {
        TensorDesc(DType::f32, Layout::channels_first, {1, 2, 3, 4, 5, 6});
      },
      ErrorKind::invalid_argument, {"rank 6", "maximum rank 5"});
  expect_error(
      [] {
        TensorDesc(DType::f32, Layout::channels_first, {1, -2});
      },
      ErrorKind::invalid_argument, {"dims[1] = -2", ">= 0"});
  // A count that does not fit in int64 (2^64 elements would wrap to 0).
  expect_error(
      [] {
        TensorDesc(DType::f32, Layout::channels_first, {std::int64_t{1} << 32, std::int64_t{1} << 32});
      },
      ErrorKind::invalid_argument, {"4294967296x4294967296", "fit in int64"});
  expect_error(
      [] {
        TensorDesc(DType::f32, Layout::channels_first, {0, std::int64_t{1} << 31, std::int64_t{1} << 31, 4});
      },
      ErrorKind::invalid_argument, {"nonzero dims"});
  // The largest that fits is a descriptor like any other.
  const TensorDesc big(DType::bf16, Layout::channels_first, {std::int64_t{1} << 31, std::int64_t{1} << 30});
  EXPECT_EQ(big.bytes(), std::size_t{1} << 62);
  EXPECT_THROW(
      TensorDesc(DType::bf16, Layout::channels_first, {std::int64_t{1} << 31, std::int64_t{1} << 31}), Error);
}

TEST(BatchNormErrors, ZeroChannels) {
  Fixture f;
  const TensorDesc c0(DType::f32, Layout::channels_first, {2, 0, 4});
  expect_error([&] { f.train(c0, c0); }, ErrorKind::invalid_argument, {"src_desc", "C = 0"});
  expect_error(
      [&] {
        batch_norm_forward_inference(c0, f.src.data(), c0, f.dst.data(), nullptr, nullptr, f.mean.data(),
                                     f.rvar.data());
      },
      ErrorKind::invalid_argument, {"C = 0"});
}

TEST(BatchNormErrors, MismatchedDescriptors) {
  Fixture f;
  const Buffer before = f.dst;
  const TensorDesc dims(DType::f32, Layout::channels_first, {2, 3, 5});
  const TensorDesc layout(DType::f32, Layout::channels_last, {2, 3, 4});
  const TensorDesc dtype(DType::bf16, Layout::channels_first, {2, 3, 4});
  expect_error([&] { f.train(f.desc, dims); }, ErrorKind::shape_mismatch,
               {"dst_desc", "dims 2x3x5", "2x3x4"});
  expect_error([&] { f.train(f.desc, layout); }, ErrorKind::shape_mismatch,
               {"dst_desc", "layout channels_last"});
  expect_error([&] { f.train(f.desc, dtype); }, ErrorKind::shape_mismatch, {"dst_desc", "dtype bf16", "f32"});
  f.expect_untouched(before);
  expect_error(
      [&] {
        batch_norm_forward_inference(f.desc, f.src.data(), dims, f.dst.data(), nullptr, nullptr,
                                     f.mean.data(), f.rvar.data());
      },
      ErrorKind::shape_mismatch, {"dst_desc"});
  expect_error(
      [&] {
        batch_norm_backward(f.desc, f.src.data(), dtype, f.src.data(), f.desc, f.dst.data(), nullptr,
                            f.mean.data(), f.invstd.data(), nullptr, nullptr);
      },
      ErrorKind::shape_mismatch, {"diff_dst_desc", "dtype bf16"});
  expect_error(
      [&] {
        batch_norm_backward(f.desc, f.src.data(), f.desc, f.src.data(), layout, f.dst.data(), nullptr,
                            f.mean.data(), f.invstd.data(), nullptr, nullptr);
      },
      ErrorKind::shape_mismatch, {"diff_src_desc", "layout"});
  EXPECT_EQ(f.dst.bytes, before.bytes);
}

TEST(BatchNormErrors, NullPointers) {
  Fixture f;
  const Buffer before = f.dst;
  expect_error(
      [&] {
        batch_norm_forward_training(f.desc, nullptr, f.desc, f.dst.data(), nullptr, nullptr, nullptr,
                                    nullptr);
      },
      ErrorKind::null_pointer, {"'src'"});
  expect_error(
      [&] {
        batch_norm_forward_training(f.desc, f.src.data(), f.desc, nullptr, nullptr, nullptr, nullptr,
                                    nullptr);
      },
      ErrorKind::null_pointer, {"'dst'"});
  RunningStats half{f.rmean.data(), nullptr, nullptr};
  expect_error([&] { f.train(f.desc, f.desc, {}, nullptr, nullptr, &half); }, ErrorKind::null_pointer,
               {"running.var", "both"});
  RunningStats no_count{f.rmean.data(), f.rvar.data(), nullptr};
  expect_error(
      [&] {
        f.train(f.desc, f.desc, BatchNormConfig{1e-5, std::nullopt}, nullptr, nullptr, &no_count);
      },
      ErrorKind::null_pointer, {"num_batches_tracked", "cumulative"});
  f.expect_untouched(before);
  expect_error(
      [&] {
        batch_norm_forward_inference(f.desc, f.src.data(), f.desc, f.dst.data(), nullptr, nullptr, nullptr,
                                     f.rvar.data());
      },
      ErrorKind::null_pointer, {"'mean'"});
  expect_error(
      [&] {
        batch_norm_forward_inference(f.desc, f.src.data(), f.desc, f.dst.data(), nullptr, nullptr,
                                     f.rmean.data(), nullptr);
      },
      ErrorKind::null_pointer, {"'var'"});
  expect_error(
      [&] {
        batch_norm_backward(f.desc, f.src.data(), f.desc, f.src.data(), f.desc, f.dst.data(), nullptr,
                            f.mean.data(), nullptr, nullptr, nullptr);
      },
      ErrorKind::null_pointer, {"'invstd'"});
  expect_error(
      [&] {
        batch_norm_backward(f.desc, f.src.data(), f.desc, nullptr, f.desc, f.dst.data(), nullptr,
                            f.mean.data(), f.invstd.data(), nullptr, nullptr);
      },
      ErrorKind::null_pointer, {"'diff_dst'"});
  EXPECT_EQ(f.dst.bytes, before.bytes);
}

TEST(BatchNormErrors, NegativeEps) {
  Fixture f;
  const Buffer before = f.dst;
  expect_error(
      [&] {
        f.train(f.desc, f.desc, BatchNormConfig{-1e-5, 0.1});
      },
      ErrorKind::invalid_argument, {"config.eps", "-1e-05", ">= 0"});
  expect_error(
      [&] {
        f.train(f.desc, f.desc, BatchNormConfig{std::nan(""), 0.1});
      },
      ErrorKind::invalid_argument, {"config.eps", "finite"});
  expect_error(
      [&] {
        batch_norm_forward_inference(f.desc, f.src.data(), f.desc, f.dst.data(), nullptr, nullptr,
                                     f.mean.data(), f.rvar.data(), -1.0);
      },
      ErrorKind::invalid_argument, {"'eps'", "-1"});
  f.expect_untouched(before);
}

TEST(BatchNormErrors, MomentumOutsideUnitInterval) {
  Fixture f;
  const Buffer before = f.dst;
  for (double m : {-0.1, 1.5, std::nan("")}) {
    expect_error(
        [&] {
          f.train(f.desc, f.desc, BatchNormConfig{1e-5, m});
        },
        ErrorKind::invalid_argument, {"config.momentum", "[0, 1]"});
  }
  f.expect_untouched(before);
  expect_error([] { BatchNorm(BatchNorm::Options{.num_features = 3, .momentum = 2.0}); },
               ErrorKind::invalid_argument, {"options.momentum", "= 2"});
}

TEST(BatchNormErrors, OneValuePerChannelWhenTraining) {
  Fixture f;
  for (const TensorDesc& d : {TensorDesc(DType::f32, Layout::channels_first, {1, 3}),
                              TensorDesc(DType::f32, Layout::channels_last, {1, 3, 1, 1}),
                              TensorDesc(DType::f32, Layout::channels_first, {0, 3, 4})}) {
    Buffer s(d), o(d);
    expect_error([&] { f.train(d, d, {}, s.data(), o.data()); }, ErrorKind::invalid_argument,
                 {"expected more than 1 value per channel when training"});
  }
  EXPECT_EQ(f.tracked, 7);
  // Inference and backward accept a single value per channel.
  const TensorDesc one(DType::f32, Layout::channels_first, {1, 3});
  Buffer s(one), o(one);
  fill_normal(s, 3);
  EXPECT_NO_THROW(batch_norm_forward_inference(one, s.data(), one, o.data(), nullptr, nullptr, f.mean.data(),
                                               f.rvar.data()));
}

TEST(BatchNormErrors, LayerErrors) {
  expect_error([] { BatchNorm(BatchNorm::Options{.num_features = 0}); }, ErrorKind::invalid_argument,
               {"num_features", "= 0", "> 0"});
  // std::length_error from the vectors before.
  expect_error([] { BatchNorm(BatchNorm::Options{.num_features = std::int64_t{1} << 62}); },
               ErrorKind::invalid_argument, {"options.num_features", "4611686018427387904", "fit in int64"});
  expect_error([] { BatchNorm(BatchNorm::Options{.num_features = 4, .eps = -1.0}); },
               ErrorKind::invalid_argument, {"options.eps"});
  BatchNorm bn(BatchNorm::Options{.num_features = 4});
  const TensorDesc d(DType::f32, Layout::channels_first, {2, 3, 5});
  Buffer s(d), o(d);
  expect_error([&] { bn.forward(d, s.data(), d, o.data()); }, ErrorKind::shape_mismatch,
               {"C = 3", "num_features = 4"});
  const TensorDesc ok(DType::f32, Layout::channels_first, {2, 4, 5});
  Buffer s4(ok), o4(ok);
  expect_error([&] { bn.backward(ok, s4.data(), ok, s4.data(), ok, o4.data()); }, ErrorKind::invalid_argument,
               {"before any forward"});
  // Backward differentiates the last forward: other dims (another N or
  // spatial size, whose gradient no forward has) are refused, nothing
  // written; in training and after an eval forward alike.
  for (bool training : {true, false}) {
    bn.train(training);
    bn.forward(ok, s4.data(), ok, o4.data());
    for (const TensorDesc& other : {TensorDesc(DType::f32, Layout::channels_first, {4, 4, 5}),
                                    TensorDesc(DType::f32, Layout::channels_first, {2, 4, 5, 7})}) {
      Buffer x(other), dx(other);
      expect_error([&] { bn.backward(other, x.data(), other, x.data(), other, dx.data()); },
                   ErrorKind::shape_mismatch, {other.dims_str().c_str(), "the last forward had 2x4x5"});
      EXPECT_EQ(dx.bytes, Buffer(other).bytes);
    }
    EXPECT_NO_THROW(bn.backward(ok, s4.data(), ok, s4.data(), ok, o4.data()));
  }
}

// The batch counter: a negative one is refused before anything is written
// (it made the cumulative average's weight 1/0: NaN running statistics);
// at INT64_MAX it stops (++ overflowed into a negative weight).
TEST(BatchNormErrors, NumBatchesTracked) {
  Fixture f;
  const Buffer before = f.dst;
  std::int64_t count = -1;
  RunningStats r{f.rmean.data(), f.rvar.data(), &count};
  for (const std::optional<double> momentum : {std::optional<double>(), std::optional<double>(0.1)})
    expect_error(
        [&] {
          f.train(f.desc, f.desc, BatchNormConfig{1e-5, momentum}, nullptr, nullptr, &r);
        },
        ErrorKind::invalid_argument, {"'*running.num_batches_tracked' = -1", ">= 0"});
  EXPECT_EQ(count, -1);
  f.expect_untouched(before);
  count = std::numeric_limits<std::int64_t>::max();
  f.train(f.desc, f.desc, BatchNormConfig{1e-5, std::nullopt}, nullptr, nullptr, &r);
  EXPECT_EQ(count, std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(f.rmean, std::vector<float>(3, 0.25f)) << "the next batch weighs 1 / 2^63";
  BatchNorm bn({.num_features = 3, .momentum = std::nullopt});
  bn.set_num_batches_tracked(std::numeric_limits<std::int64_t>::max());
  bn.forward(f.desc, f.src.data(), f.desc, f.dst.data());
  EXPECT_EQ(bn.num_batches_tracked(), std::numeric_limits<std::int64_t>::max());
}

// An empty input whose saved statistics cannot be allocated (2^60 rows of
// nothing) is an Error, not std::bad_alloc.
TEST(LayerErrors, SavedStatisticsThatCannotBeAllocated) {
  const TensorDesc rows(DType::f32, Layout::channels_first, {std::int64_t{1} << 60, 0});
  const TensorDesc groups(DType::f32, Layout::channels_first,
                          {std::int64_t{1} << 30, std::int64_t{1} << 30, 0});
  LayerNorm ln({.normalized_shape = {0}});
  RMSNorm rms({.normalized_shape = {0}});
  GroupNorm gn({.num_groups = std::int64_t{1} << 30, .num_channels = std::int64_t{1} << 30, .affine = false});
  expect_error([&] { ln.forward(rows, nullptr, rows, nullptr); }, ErrorKind::runtime,
               {"'src_desc'", "1152921504606846976 statistics", "cannot be allocated"});
  expect_error([&] { rms.forward(rows, nullptr, rows, nullptr); }, ErrorKind::runtime,
               {"cannot be allocated"});
  expect_error([&] { gn.forward(groups, nullptr, groups, nullptr); }, ErrorKind::runtime,
               {"cannot be allocated"});
}

// Descriptors of an out-of-range dtype or layout are refused (one ran as if
// valid).
TEST(BatchNormErrors, DescriptorEnumerators) {
  expect_error(
      [] {
        TensorDesc(static_cast<DType>(7), Layout::channels_first, {2, 3});
      },
      ErrorKind::invalid_argument, {"dtype 7", "f32, bf16 or f16"});
  expect_error(
      [] {
        TensorDesc(DType::f32, static_cast<Layout>(2), {2, 3});
      },
      ErrorKind::invalid_argument, {"layout 2"});
}

// A moved-from layer hands out empty saved statistics (they pointed at the
// moved storage with the old length), and the moved-to layer works.
TEST(LayerErrors, MovedFromLayersHaveNoSavedStatistics) {
  const TensorDesc d(DType::f32, Layout::channels_first, {2, 4, 6});
  Buffer x(d), y(d), dy(d), dx(d);
  for (std::int64_t i = 0; i < d.elements(); ++i) x.set(i, static_cast<float>(i % 7) - 3.0f);
  auto check = [&](auto layer, auto saved) {
    layer.forward(d, x.data(), d, y.data());
    auto moved = std::move(layer);
    EXPECT_TRUE(saved(layer).empty());
    EXPECT_FALSE(saved(moved).empty());
    EXPECT_NO_THROW(moved.backward(d, x.data(), d, dy.data(), d, dx.data()));
  };
  check(BatchNorm({.num_features = 4}), [](const auto& l) { return l.saved_mean(); });
  check(GroupNorm({.num_groups = 2, .num_channels = 4}), [](const auto& l) { return l.saved_invstd(); });
  check(InstanceNorm({.num_features = 4}), [](const auto& l) { return l.saved_mean(); });
  check(LayerNorm({.normalized_shape = {4, 6}}), [](const auto& l) { return l.saved_invstd(); });
  check(RMSNorm({.normalized_shape = {6}}), [](const auto& l) { return l.saved_invrms(); });
}

// NaN and Inf: the affected channel's outputs are NaN (as in ATen), the other
// channels are untouched by it, for every plan, layout and instruction set.
TEST(BatchNormNonFinite, PropagatesLikePyTorch) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for_each_isa([&](const std::string&) {
    for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
      for (DType dt : {DType::f32, DType::bf16}) {
        for (float bad : {nan, inf}) {
          const TensorDesc d(dt, layout, {4, 3, 50});
          Buffer src(d), dst(d);
          fill_normal(src, 5);
          // Channel 1, first element of sample 2.
          const std::int64_t i = layout == Layout::channels_first ? (2 * 3 + 1) * 50 : (2 * 50) * 3 + 1;
          src.set(i, bad);
          std::vector<float> mean(3), invstd(3), rm(3, 0.0f), rv(3, 1.0f);
          std::int64_t tracked = 0;
          batch_norm_forward_training(d, src.data(), d, dst.data(), nullptr, nullptr, mean.data(),
                                      invstd.data(), RunningStats{rm.data(), rv.data(), &tracked});
          for (std::int64_t n = 0; n < 4; ++n)
            for (std::int64_t s = 0; s < 50; ++s)
              for (std::int64_t c = 0; c < 3; ++c) {
                const std::int64_t j =
                    layout == Layout::channels_first ? (n * 3 + c) * 50 + s : (n * 50 + s) * 3 + c;
                if (c == 1) {
                  ASSERT_TRUE(std::isnan(dst.get(j))) << j;
                } else {
                  ASSERT_TRUE(std::isfinite(dst.get(j))) << j;
                }
              }
          EXPECT_TRUE(std::isnan(invstd[1]));
          EXPECT_TRUE(std::isnan(rv[1]));
          if (std::isinf(bad)) {
            EXPECT_EQ(mean[1], inf);  // ATen: mean inf, var NaN
          } else {
            EXPECT_TRUE(std::isnan(mean[1]));
          }
          EXPECT_TRUE(std::isfinite(mean[0]) && std::isfinite(mean[2]));
          // Backward with the NaN statistics also just produces NaN there.
          Buffer dy(d), dx(d);
          fill_normal(dy, 6);
          std::vector<float> dg(3), db(3);
          batch_norm_backward(d, src.data(), d, dy.data(), d, dx.data(), nullptr, mean.data(), invstd.data(),
                              dg.data(), db.data());
          EXPECT_TRUE(std::isnan(dg[1]));
          EXPECT_TRUE(std::isfinite(dg[0]) && std::isfinite(db[2]));
        }
      }
    }
  });
}

}  // namespace
}  // namespace bnorm::test

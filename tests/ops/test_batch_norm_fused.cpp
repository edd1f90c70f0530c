// BatchNorm with a fused residual add and ReLU, through every thread plan
// and instruction set: the fused forward equals BN followed by the add and
// the ReLU done separately in f32 (bit for bit for f32 data), and the fused
// backward equals BN's backward of the gradient gated by dst > 0, with the
// gated gradient as the residual's gradient. A forward that keeps the
// ReLU's mask writes the same dst and the bits of dst > 0, and the backward
// gated by that mask gives the same bits as gated by dst.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "bnorm/batch_norm.hpp"
#include "bnorm/error.hpp"
#include "common/test_util.hpp"
#include "ops/batch_norm/plan.hpp"

namespace bnorm::test {
namespace {

namespace obn = ops::batch_norm;

std::vector<obn::Plan> plans_for(const obn::Problem& p) {
  std::vector<obn::Plan> plans;
  for (bool stream : {false, true})
    for (int workers : {1, 3}) {
      if (p.rows_view()) {
        for (std::int64_t tile : {2, 1 << 20})
          plans.push_back({obn::Strategy::rows, workers, 1, tile, stream});
      }
      if (p.layout == Layout::channels_first) {
        for (std::int64_t block : {1, 3})
          for (bool pipeline : {false, true})
            plans.push_back({obn::Strategy::channel_slabs, workers, block, 1, stream, pipeline});
        plans.push_back({obn::Strategy::split_channels, workers, 1, 1, stream});
        plans.push_back({obn::Strategy::planes, workers, 1, 1, stream});
      }
    }
  return plans;
}

// a = relu(bn + z) element by element in f32, rounded once to the dtype.
Buffer add_relu(const Buffer& bn, const Buffer* z, bool relu) {
  Buffer out(bn.desc);
  for (std::int64_t i = 0; i < bn.size(); ++i) {
    float v = bn.get(i);
    if (z) v += z->get(i);
    if (relu && v < 0.0f) v = 0.0f;
    out.set(i, v);
  }
  return out;
}

// A mask buffer before the forward: every byte kPad, so that bits the
// forward fails to write and padding it writes both show.
constexpr std::uint8_t kPad = 0xA5;
std::vector<std::uint8_t> blank_mask(const TensorDesc& desc) {
  return std::vector<std::uint8_t>(batch_norm_relu_mask_bytes(desc), kPad);
}

// Whether a mask kept by a forward says where its output y is not <= 0:
// bit i (bit i % 8 of byte i / 8) set exactly where y[i] > 0 or is NaN
// (PyTorch passes the gradient there), and every bit past
// the last element still as blank_mask left it.
::testing::AssertionResult mask_of(const std::vector<std::uint8_t>& mask, const Buffer& y) {
  if (mask.size() != batch_norm_relu_mask_bytes(y.desc))
    return ::testing::AssertionFailure() << "mask of " << mask.size() << " bytes";
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(8 * mask.size()); ++i) {
    const bool bit = (mask[static_cast<std::size_t>(i / 8)] >> (i % 8)) & 1;
    const bool want = i < y.size() ? !(y.get(i) <= 0.0f) : ((kPad >> (i % 8)) & 1) != 0;
    if (bit != want)
      return ::testing::AssertionFailure()
             << "mask bit " << i << " of " << y.size() << " is " << bit
             << (i < y.size() ? ", y = " + std::to_string(y.get(i)) : ", padding");
  }
  return ::testing::AssertionSuccess();
}

// Bit-exact for f32; for 16-bit data the unfused path rounds BN's output to
// the dtype before adding, so allow that rounding (a step at BN's output and
// at the residual) plus a step at the result.
::testing::AssertionResult same(const Buffer& got, const Buffer& want, const char* what,
                                const Buffer* bn = nullptr, const Buffer* z = nullptr) {
  if (got.desc.dtype() == DType::f32) {
    if (got.bytes == want.bytes) return ::testing::AssertionSuccess();
    for (std::int64_t i = 0; i < got.size(); ++i)
      if (std::memcmp(got.bytes.data() + 4 * i, want.bytes.data() + 4 * i, 4) != 0)
        return ::testing::AssertionFailure()
               << what << "[" << i << "]: " << got.get(i) << " vs " << want.get(i);
  }
  for (std::int64_t i = 0; i < got.size(); ++i) {
    const double g = got.get(i), w = want.get(i);
    const DType dt = got.desc.dtype();
    const double tol = 2 * ulp(dt, w) + (bn ? ulp(dt, bn->get(i)) : 0.0) + (z ? ulp(dt, z->get(i)) : 0.0);
    if (!(std::fabs(g - w) <= tol))
      return ::testing::AssertionFailure() << what << "[" << i << "]: " << g << " vs " << w;
  }
  return ::testing::AssertionSuccess();
}

void check(const TensorDesc& desc) {
  SCOPED_TRACE(desc.str());
  const obn::Problem p = obn::Problem::of(desc);
  const auto C = static_cast<std::size_t>(desc.channels());
  const auto gamma = uniform(C, 1, 0.5f, 2.0f), beta = uniform(C, 2, -1.0f, 1.0f);
  Buffer src(desc), z(desc), dy(desc);
  fill_normal(src, 3, 0.5, 2.0);
  fill_normal(z, 4, 0.0, 1.0);
  fill_normal(dy, 5);
  for (const obn::Plan& plan : plans_for(p)) {
    SCOPED_TRACE("plan " + std::to_string(static_cast<int>(plan.strategy)) + " workers " +
                 std::to_string(plan.workers) + (plan.stream ? " stream" : "") +
                 (plan.pipeline ? " pipeline" : ""));
    for (const auto& [residual, relu] :
         std::vector<std::pair<bool, bool>>{{false, true}, {true, true}, {true, false}}) {
      SCOPED_TRACE(std::string(residual ? "add" : "") + (relu ? "+relu" : ""));
      const kernels::batch_norm::Epilogue post{residual ? z.data() : nullptr, relu};
      // Training forward.
      Buffer plain(desc), fused(desc);
      std::vector<float> m1(C), i1(C), m2(C), i2(C);
      obn::forward_training(p, plan, src.data(), plain.data(), gamma.data(), beta.data(), m1.data(),
                            i1.data(), nullptr, nullptr, 1e-5, 0.0);
      obn::forward_training(p, plan, src.data(), fused.data(), gamma.data(), beta.data(), m2.data(),
                            i2.data(), nullptr, nullptr, 1e-5, 0.0, true, nullptr, post);
      ASSERT_TRUE(same(fused, add_relu(plain, residual ? &z : nullptr, relu), "training", &plain,
                       residual ? &z : nullptr));
      ASSERT_EQ(m1, m2);
      // Inference forward.
      Buffer iplain(desc), ifused(desc);
      std::vector<float> var(C);
      for (std::size_t c = 0; c < C; ++c) var[c] = 1.0f / (i1[c] * i1[c]);
      obn::forward_inference(p, plan, src.data(), iplain.data(), gamma.data(), beta.data(), m1.data(),
                             var.data(), 1e-5);
      obn::forward_inference(p, plan, src.data(), ifused.data(), gamma.data(), beta.data(), m1.data(),
                             var.data(), 1e-5, post);
      ASSERT_TRUE(same(ifused, add_relu(iplain, residual ? &z : nullptr, relu), "inference", &iplain,
                       residual ? &z : nullptr));
      if (!residual && !relu) continue;
      // Backward: BN's backward of dy gated by fused > 0 (without a ReLU,
      // of dy, which is then also the residual's gradient).
      Buffer gated(desc), dx_want(desc), dx(desc), dz(desc);
      for (std::int64_t i = 0; i < dy.size(); ++i)
        gated.set(i, !relu || !(fused.get(i) <= 0.0f) ? dy.get(i) : 0.0f);
      const void* gate_y = relu ? fused.data() : nullptr;
      std::vector<float> dg_w(C), db_w(C), dg(C), db(C);
      obn::backward(p, plan, src.data(), gated.data(), dx_want.data(), gamma.data(), m1.data(), i1.data(),
                    dg_w.data(), db_w.data(), BackwardStats::batch);
      obn::backward(p, plan, src.data(), dy.data(), dx.data(), gamma.data(), m1.data(), i1.data(), dg.data(),
                    db.data(), BackwardStats::batch, nullptr, nullptr, {gate_y, dz.data()});
      ASSERT_EQ(dx.bytes, dx_want.bytes);
      ASSERT_EQ(dz.bytes, gated.bytes);
      ASSERT_EQ(dg, dg_w);
      ASSERT_EQ(db, db_w);
      {
        // dx and dz both on cache lines: with a streaming plan dz then takes
        // the streamed path (whatever alignment malloc gave the Buffers).
        const std::size_t bytes = dx.bytes.size();
        std::vector<std::byte> pool(2 * bytes + 192);
        auto line = [](std::byte* q) { return q + bytes_to_line(q); };
        std::byte* ax = line(pool.data());
        std::byte* az = line(ax + bytes);
        obn::backward(p, plan, src.data(), dy.data(), ax, gamma.data(), m1.data(), i1.data(), dg.data(),
                      db.data(), BackwardStats::batch, nullptr, nullptr, {gate_y, az});
        ASSERT_EQ(std::memcmp(ax, dx_want.bytes.data(), bytes), 0) << "dx, lines";
        ASSERT_EQ(std::memcmp(az, gated.bytes.data(), bytes), 0) << "dz, lines";
      }
      // Constant statistics and dx alone (nothing to sum: one stream over
      // all planes): the same bits too.
      Buffer fx_want(desc), fx(desc), fz(desc);
      obn::backward(p, plan, src.data(), gated.data(), fx_want.data(), gamma.data(), m1.data(), i1.data(),
                    nullptr, nullptr, BackwardStats::fixed);
      obn::backward(p, plan, src.data(), dy.data(), fx.data(), gamma.data(), m1.data(), i1.data(), nullptr,
                    nullptr, BackwardStats::fixed, nullptr, nullptr, {gate_y, fz.data()});
      ASSERT_EQ(fx.bytes, fx_want.bytes);
      ASSERT_EQ(fz.bytes, gated.bytes);
      if (!relu) continue;
      // The mask kept by the forward: the same output, the bits of dst > 0
      // (and no padding written); the backward gated by it: the same bits.
      auto mask = blank_mask(desc), imask = blank_mask(desc);
      kernels::batch_norm::Epilogue keep = post;
      keep.mask = mask.data();
      Buffer kept(desc), ikept(desc);
      obn::forward_training(p, plan, src.data(), kept.data(), gamma.data(), beta.data(), m2.data(), i2.data(),
                            nullptr, nullptr, 1e-5, 0.0, true, nullptr, keep);
      ASSERT_EQ(kept.bytes, fused.bytes);
      ASSERT_TRUE(mask_of(mask, fused)) << "training";
      keep.mask = imask.data();
      obn::forward_inference(p, plan, src.data(), ikept.data(), gamma.data(), beta.data(), m1.data(),
                             var.data(), 1e-5, keep);
      ASSERT_EQ(ikept.bytes, ifused.bytes);
      ASSERT_TRUE(mask_of(imask, ifused)) << "inference";
      const kernels::batch_norm::Gate by_mask{nullptr, dz.data(), mask.data(), 0};
      obn::backward(p, plan, src.data(), dy.data(), dx.data(), gamma.data(), m1.data(), i1.data(), dg.data(),
                    db.data(), BackwardStats::batch, nullptr, nullptr, by_mask);
      ASSERT_EQ(dx.bytes, dx_want.bytes) << "gated by the mask";
      ASSERT_EQ(dz.bytes, gated.bytes) << "gated by the mask";
      ASSERT_EQ(dg, dg_w);
      ASSERT_EQ(db, db_w);
      obn::backward(p, plan, src.data(), dy.data(), fx.data(), gamma.data(), m1.data(), i1.data(), nullptr,
                    nullptr, BackwardStats::fixed, nullptr, nullptr, {nullptr, fz.data(), mask.data(), 0});
      ASSERT_EQ(fx.bytes, fx_want.bytes) << "fixed statistics, gated by the mask";
      ASSERT_EQ(fz.bytes, gated.bytes) << "fixed statistics, gated by the mask";
    }
  }
}

TEST(BatchNormFused, EveryPlanAndIsa) {
  for_each_isa([](const std::string&) {
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      check(TensorDesc(dt, Layout::channels_first, {3, 5, 7, 3}));
      check(TensorDesc(dt, Layout::channels_last, {4, 6, 19}));
      check(TensorDesc(dt, Layout::channels_last, {5, 16, 3}));  // whole-vector rows
    }
    check(TensorDesc(DType::f32, Layout::channels_first, {2, 3, 1000}));
    check(TensorDesc(DType::f32, Layout::channels_first, {33, 4}));
  });
}

TEST(BatchNormFused, PublicFunctions) {
  const TensorDesc d(DType::f32, Layout::channels_last, {4, 3, 3});
  const std::size_t C = 3;
  Buffer src(d), z(d), y(d), plain(d), dy(d), dx(d), dz(d), dx_plain(d);
  fill_normal(src, 8);
  fill_normal(z, 9);
  fill_normal(dy, 10);
  const auto gamma = uniform(C, 1, 0.5f, 2.0f), beta = uniform(C, 2, -1.0f, 1.0f);
  std::vector<float> m(C), is(C), rm(C, 0.0f), rv(C, 1.0f), rm2 = rm, rv2 = rv;
  batch_norm_forward_training_fused(d, src.data(), d, y.data(), {z.data(), true}, gamma.data(), beta.data(),
                                    m.data(), is.data(), {rm.data(), rv.data(), nullptr});
  batch_norm_forward_training(d, src.data(), d, plain.data(), gamma.data(), beta.data(), m.data(), is.data(),
                              {rm2.data(), rv2.data(), nullptr});
  EXPECT_TRUE(same(y, add_relu(plain, &z, true), "public training"));
  EXPECT_EQ(rm, rm2);
  EXPECT_EQ(rv, rv2);
  bool some_zero = false;
  for (std::int64_t i = 0; i < y.size(); ++i) some_zero |= y.get(i) == 0.0f;
  EXPECT_TRUE(some_zero) << "the ReLU should cut something";
  std::vector<float> dg(C), db(C);
  batch_norm_backward_fused(d, src.data(), y.data(), true, d, dy.data(), d, dx.data(), gamma.data(), m.data(),
                            is.data(), dg.data(), db.data(), dz.data());
  for (std::int64_t i = 0; i < dy.size(); ++i) EXPECT_EQ(dz.get(i), y.get(i) > 0 ? dy.get(i) : 0.0f);
  // Without a ReLU the residual's gradient is dy itself.
  batch_norm_backward_fused(d, src.data(), nullptr, false, d, dy.data(), d, dx.data(), gamma.data(), m.data(),
                            is.data(), dg.data(), db.data(), dz.data());
  batch_norm_backward(d, src.data(), d, dy.data(), d, dx_plain.data(), gamma.data(), m.data(), is.data(),
                      nullptr, nullptr);
  EXPECT_EQ(dz.bytes, dy.bytes);
  EXPECT_EQ(dx.bytes, dx_plain.bytes);
  // NaN passes through the ReLU (as torch.relu).
  src.set(0, std::numeric_limits<float>::quiet_NaN());
  Buffer inf(d);
  batch_norm_forward_inference_fused(d, src.data(), d, inf.data(), {nullptr, true}, gamma.data(), beta.data(),
                                     rm.data(), rv.data());
  EXPECT_TRUE(std::isnan(inf.get(0)));
  // ... and so does the gradient where the output is NaN (PyTorch's relu
  // backward: result <= 0 ? 0 : grad; the gate was dst > 0): a NaN in the
  // residual leaves the BN's channel finite, and its gradient is dy there.
  Buffer zn = z, yn(d), mask_dz(d);
  zn.set(4, std::numeric_limits<float>::quiet_NaN());
  std::vector<std::uint8_t> mask(batch_norm_relu_mask_bytes(d));
  batch_norm_forward_training_fused(d, plain.data(), d, yn.data(), {zn.data(), true, mask.data()},
                                    gamma.data(), beta.data(), m.data(), is.data());
  ASSERT_TRUE(std::isnan(yn.get(4)));
  EXPECT_TRUE((mask[0] >> 4) & 1) << "the mask passes the NaN output's gradient";
  batch_norm_backward_fused(d, plain.data(), yn.data(), true, d, dy.data(), d, dx.data(), gamma.data(),
                            m.data(), is.data(), dg.data(), db.data(), dz.data());
  batch_norm_backward_fused(d, plain.data(), mask.data(), d, dy.data(), d, dx_plain.data(), gamma.data(),
                            m.data(), is.data(), dg.data(), db.data(), mask_dz.data());
  EXPECT_EQ(dz.get(4), dy.get(4));
  EXPECT_EQ(mask_dz.bytes, dz.bytes);
  EXPECT_EQ(dx_plain.bytes, dx.bytes);
  // Errors.
  EXPECT_THROW(batch_norm_backward_fused(d, src.data(), nullptr, true, d, dy.data(), d, dx.data(),
                                         gamma.data(), m.data(), is.data(), nullptr, nullptr, nullptr),
               Error);
  EXPECT_THROW(batch_norm_backward_fused(d, src.data(), y.data(), true, d, dy.data(), d, nullptr,
                                         gamma.data(), m.data(), is.data(), nullptr, nullptr, dz.data()),
               Error);
  // diff_residual and diff_src in one buffer: refused, nothing written.
  for (bool relu : {true, false}) {
    const Buffer before = dx;
    try {
      batch_norm_backward_fused(d, src.data(), y.data(), relu, d, dy.data(), d, dx.data(), gamma.data(),
                                m.data(), is.data(), dg.data(), db.data(), dx.data());
      ADD_FAILURE() << "diff_residual == diff_src was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::invalid_argument) << e.what();
      EXPECT_NE(std::string(e.what()).find("'diff_residual' and 'diff_src'"), std::string::npos) << e.what();
    }
    EXPECT_EQ(dx.bytes, before.bytes);
  }
}

// The mask says what the stored output says: a 16-bit output rounds a
// positive sum at or below half its smallest subnormal to 0, and the bit is
// clear there too (the backward gated by dst > 0 passes nothing there
// either). Outputs scaled into that range by a tiny gamma.
TEST(BatchNormFused, MaskFollowsTheRoundedOutput) {
  for_each_isa([](const std::string&) {
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
        const TensorDesc d(dt, layout, {3, 32, 37});
        SCOPED_TRACE(d.str());
        Buffer src(d), y(d), y_plain(d);
        const auto values = uniform(static_cast<std::size_t>(src.size()), 31, -4.0f, 4.0f);
        for (std::int64_t i = 0; i < src.size(); ++i) src.set(i, values[static_cast<std::size_t>(i)]);
        // Some sums exactly at half the smallest subnormal: 0.5 * tiny.
        for (std::int64_t i = 0; i < src.size(); i += 7) src.set(i, 0.5f);
        // Half the smallest subnormal of the output type, and below.
        const float tiny = dt == DType::bf16 ? 0x1p-133f : dt == DType::f16 ? 0x1p-24f : 0x1p-149f;
        const std::vector<float> gamma(32, tiny), beta(32, 0.0f), mean(32, 0.0f), var(32, 1.0f);
        auto mask = blank_mask(d);
        batch_norm_forward_inference_fused(d, src.data(), d, y.data(), {nullptr, true, mask.data()},
                                           gamma.data(), beta.data(), mean.data(), var.data(), 0.0);
        batch_norm_forward_inference_fused(d, src.data(), d, y_plain.data(), {nullptr, true}, gamma.data(),
                                           beta.data(), mean.data(), var.data(), 0.0);
        EXPECT_EQ(y.bytes, y_plain.bytes);
        EXPECT_TRUE(mask_of(mask, y));
        std::int64_t rounded_away = 0, passed = 0;
        for (std::int64_t i = 0; i < y.size(); ++i) {
          rounded_away += src.get(i) > 0.0f && y.get(i) == 0.0f;
          passed += y.get(i) > 0.0f;
        }
        EXPECT_GT(passed, 0);
        if (dt != DType::f32) {
          EXPECT_GT(rounded_away, 0) << "no positive sum rounded to 0: the case is not tested";
        }
      }
    }
  });
}

// The mask through the public functions: kept by either forward, read by
// the backward overload, with the same results as the output's gate.
TEST(BatchNormFused, MaskPublicFunctions) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    const TensorDesc d(DType::bf16, layout, {6, 24, 29});
    SCOPED_TRACE(d.str());
    const std::size_t C = 24;
    Buffer src(d), z(d), y(d), y_plain(d), dy(d), dx(d), dz(d), dx_want(d), dz_want(d);
    fill_normal(src, 41);
    fill_normal(z, 42);
    fill_normal(dy, 43);
    const auto gamma = uniform(C, 1, 0.5f, 2.0f), beta = uniform(C, 2, -1.0f, 1.0f);
    std::vector<float> m(C), is(C), rm(C, 0.0f), rv(C, 1.0f);
    auto mask = blank_mask(d);
    batch_norm_forward_training_fused(d, src.data(), d, y.data(), {z.data(), true, mask.data()}, gamma.data(),
                                      beta.data(), m.data(), is.data(), {rm.data(), rv.data(), nullptr});
    batch_norm_forward_training_fused(d, src.data(), d, y_plain.data(), {z.data(), true}, gamma.data(),
                                      beta.data(), m.data(), is.data());
    EXPECT_EQ(y.bytes, y_plain.bytes);
    EXPECT_TRUE(mask_of(mask, y));
    std::vector<float> dg(C), db(C), dg_want(C), db_want(C);
    batch_norm_backward_fused(d, src.data(), y.data(), true, d, dy.data(), d, dx_want.data(), gamma.data(),
                              m.data(), is.data(), dg_want.data(), db_want.data(), dz_want.data());
    batch_norm_backward_fused(d, src.data(), mask.data(), d, dy.data(), d, dx.data(), gamma.data(), m.data(),
                              is.data(), dg.data(), db.data(), dz.data());
    EXPECT_EQ(dx.bytes, dx_want.bytes);
    EXPECT_EQ(dz.bytes, dz_want.bytes);
    EXPECT_EQ(dg, dg_want);
    EXPECT_EQ(db, db_want);
    // In place: the residual's gradient over dy (the mask is all the gate
    // needs, so dst may be gone).
    Buffer dy2 = dy;
    batch_norm_backward_fused(d, src.data(), mask.data(), d, dy2.data(), d, dx.data(), gamma.data(), m.data(),
                              is.data(), dg.data(), db.data(), dy2.data());
    EXPECT_EQ(dx.bytes, dx_want.bytes);
    EXPECT_EQ(dy2.bytes, dz_want.bytes);
    // Inference keeps it too.
    auto imask = blank_mask(d);
    batch_norm_forward_inference_fused(d, src.data(), d, y.data(), {nullptr, true, imask.data()},
                                       gamma.data(), beta.data(), rm.data(), rv.data());
    EXPECT_TRUE(mask_of(imask, y));
    // A mask without a ReLU: refused before anything is written.
    const Buffer before = y;
    const auto mask_before = imask;
    for (bool training : {true, false}) {
      try {
        if (training) {
          batch_norm_forward_training_fused(d, src.data(), d, y.data(), {z.data(), false, imask.data()},
                                            gamma.data(), beta.data(), m.data(), is.data());
        } else {
          batch_norm_forward_inference_fused(d, src.data(), d, y.data(), {z.data(), false, imask.data()},
                                             gamma.data(), beta.data(), rm.data(), rv.data());
        }
        ADD_FAILURE() << "a mask without a ReLU was accepted";
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::invalid_argument) << e.what();
        EXPECT_NE(std::string(e.what()).find("'fusion.relu_mask'"), std::string::npos) << e.what();
      }
      EXPECT_EQ(y.bytes, before.bytes);
      EXPECT_EQ(imask, mask_before);
    }
    // The backward without its mask.
    try {
      batch_norm_backward_fused(d, src.data(), static_cast<const std::uint8_t*>(nullptr), d, dy.data(), d,
                                dx.data(), gamma.data(), m.data(), is.data(), dg.data(), db.data(), nullptr);
      ADD_FAILURE() << "a null mask was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::null_pointer) << e.what();
      EXPECT_NE(std::string(e.what()).find("'relu_mask'"), std::string::npos) << e.what();
    }
  }
  // The size: a bit per element and the padding.
  EXPECT_EQ(batch_norm_relu_mask_bytes(TensorDesc(DType::f32, Layout::channels_first, {2, 3, 5})), 4u + 8u);
  EXPECT_EQ(batch_norm_relu_mask_bytes(TensorDesc(DType::bf16, Layout::channels_last, {2, 4, 8})), 8u + 8u);
}

// diff_residual written in place of diff_dst, src or dst gives what a
// separate buffer gets (channels-last stores it in its first pass, which
// must not clobber src before the second pass reads it).
TEST(BatchNormFused, ResidualGradientInPlace) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    for (DType dt : {DType::f32, DType::bf16}) {
      for (std::int64_t S : {9, 37}) {  // shorter than a vector; vectors across two planes
        for (bool relu : {true, false}) {  // BN+Add+ReLU, BN+Add
          const TensorDesc d(dt, layout, {4, 16, S});
          SCOPED_TRACE(d.str() + (relu ? " relu" : " no relu"));
          const std::size_t C = 16;
          Buffer src(d), z(d), y(d), dy(d), dx_want(d), dz_want(d);
          fill_normal(src, 21);
          fill_normal(z, 22);
          fill_normal(dy, 23);
          const auto gamma = uniform(C, 1, 0.5f, 2.0f), beta = uniform(C, 2, -1.0f, 1.0f);
          std::vector<float> m(C), is(C), dg_want(C), db_want(C);
          batch_norm_forward_training_fused(d, src.data(), d, y.data(), {z.data(), relu}, gamma.data(),
                                            beta.data(), m.data(), is.data());
          batch_norm_backward_fused(d, src.data(), y.data(), relu, d, dy.data(), d, dx_want.data(),
                                    gamma.data(), m.data(), is.data(), dg_want.data(), db_want.data(),
                                    dz_want.data());
          for (const std::string target : {"diff_dst", "src", "dst"}) {
            // dx in its own buffer, over dy, or not wanted (no ReLU only:
            // with one, diff_src is required beside diff_residual).
            for (const std::string dx_at : {"own", "diff_dst", "none"}) {
              if ((dx_at == "diff_dst" && target == "diff_dst") || (dx_at == "none" && relu)) continue;
              SCOPED_TRACE("dz at " + target + ", dx " + dx_at);
              Buffer s2 = src, y2 = y, dy2 = dy, dx(d);
              void* dz = target == "diff_dst" ? dy2.data() : target == "src" ? s2.data() : y2.data();
              void* dxp = dx_at == "own" ? dx.data() : dx_at == "diff_dst" ? dy2.data() : nullptr;
              std::vector<float> dg(C), db(C);
              batch_norm_backward_fused(d, s2.data(), y2.data(), relu, d, dy2.data(), d, dxp, gamma.data(),
                                        m.data(), is.data(), dg.data(), db.data(), dz);
              if (dxp) {
                EXPECT_EQ(std::memcmp(dxp, dx_want.data(), dx_want.bytes.size()), 0);
              }
              EXPECT_EQ(std::memcmp(dz, dz_want.data(), dz_want.bytes.size()), 0);
              EXPECT_EQ(dg, dg_want);
              EXPECT_EQ(db, db_want);
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace bnorm::test

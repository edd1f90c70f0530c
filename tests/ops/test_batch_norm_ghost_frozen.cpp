// Ghost batch norm (virtual batch size) and frozen BatchNorm: one group is
// plain BN, G groups are G independent BN steps in order, the layer's
// options drive both, and frozen gradients are the inference-mode
// derivative (finite differences).

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "bnorm/batch_norm.hpp"
#include "bnorm/batch_renorm.hpp"
#include "bnorm/error.hpp"
#include "bnorm/runtime.hpp"
#include "common/test_util.hpp"
#include "kernels/common/scalar.hpp"

namespace bnorm::test {
namespace {

TensorDesc with_batch(const TensorDesc& d, std::int64_t n) {
  std::vector<std::int64_t> dims(d.dims().begin(), d.dims().end());
  dims[0] = n;
  return TensorDesc(d.dtype(), d.layout(), dims);
}

TEST(GhostBatchNorm, GroupsAreIndependentBatchNormSteps) {
  for (const TensorDesc d : {TensorDesc(DType::f32, Layout::channels_first, {12, 5, 7}),
                             TensorDesc(DType::bf16, Layout::channels_last, {8, 3, 4, 6}),
                             TensorDesc(DType::f32, Layout::channels_first, {6, 9})}) {
    for (std::int64_t vbs : {d.batch(), d.batch() / 2, std::int64_t{2}}) {
      SCOPED_TRACE(d.str() + " virtual batch " + std::to_string(vbs));
      const auto C = static_cast<std::size_t>(d.channels());
      const std::int64_t groups = d.batch() / vbs;
      const TensorDesc g = with_batch(d, vbs);
      Buffer src(d), dst(d), want(d), dy(d), dx(d), want_dx(d);
      fill_normal(src, 3, 2.0, 1.5);
      fill_normal(dy, 4);
      const auto gamma = uniform(C, 5, 0.5f, 1.5f), beta = uniform(C, 6, -1.0f, 1.0f);
      std::vector<float> rm(C, 0.0f), rv(C, 1.0f), rm_w = rm, rv_w = rv;
      std::vector<float> mean(groups * C), invstd(groups * C), mean_w(groups * C), invstd_w(groups * C);
      std::int64_t tracked = 0, tracked_w = 0;
      ghost_batch_norm_forward_training(d, src.data(), d, dst.data(), vbs, gamma.data(), beta.data(), mean.data(),
                                        invstd.data(), {rm.data(), rv.data(), &tracked});
      std::vector<double> dg_sum(C, 0.0), db_sum(C, 0.0);
      for (std::int64_t k = 0; k < groups; ++k) {
        const std::int64_t off = k * g.elements();
        batch_norm_forward_training(g, kernels::element_ptr(src.data(), d.dtype(), off), g,
                                    kernels::element_ptr(want.data(), d.dtype(), off), gamma.data(), beta.data(),
                                    mean_w.data() + k * C, invstd_w.data() + k * C,
                                    {rm_w.data(), rv_w.data(), &tracked_w});
        std::vector<float> dg(C), db(C);
        batch_norm_backward(g, kernels::element_ptr(src.data(), d.dtype(), off), g,
                            kernels::element_ptr(dy.data(), d.dtype(), off), g,
                            kernels::element_ptr(want_dx.data(), d.dtype(), off), gamma.data(), mean_w.data() + k * C,
                            invstd_w.data() + k * C, dg.data(), db.data());
        for (std::size_t i = 0; i < C; ++i) {
          dg_sum[i] += dg[i];
          db_sum[i] += db[i];
        }
      }
      EXPECT_EQ(dst.bytes, want.bytes);
      EXPECT_EQ(mean, mean_w);
      EXPECT_EQ(invstd, invstd_w);
      EXPECT_EQ(rm, rm_w);
      EXPECT_EQ(rv, rv_w);
      EXPECT_EQ(tracked, groups);
      std::vector<float> dg(C), db(C);
      ghost_batch_norm_backward(d, src.data(), d, dy.data(), d, dx.data(), vbs, gamma.data(), mean.data(),
                                invstd.data(), dg.data(), db.data());
      EXPECT_EQ(dx.bytes, want_dx.bytes);
      for (std::size_t i = 0; i < C; ++i) {
        EXPECT_NEAR(dg[i], dg_sum[i], 1e-5 * (1 + std::fabs(dg_sum[i])));
        EXPECT_NEAR(db[i], db_sum[i], 1e-5 * (1 + std::fabs(db_sum[i])));
      }
      if (groups > 1) {  // really per group: differs from whole-batch BN
        Buffer whole(d);
        std::vector<float> m(C), is(C);
        batch_norm_forward_training(d, src.data(), d, whole.data(), gamma.data(), beta.data(), m.data(), is.data());
        EXPECT_NE(whole.bytes, dst.bytes);
      }
    }
  }
}

TEST(GhostBatchNorm, Errors) {
  const TensorDesc d(DType::f32, Layout::channels_first, {6, 2, 1});
  Buffer src(d), dst(d);
  std::vector<float> s(12);
  // 1: a group of one sample with one spatial value, one value per channel.
  for (std::int64_t vbs : {0, 4, 7, 1}) {
    const auto before = dst.bytes;
    try {
      ghost_batch_norm_forward_training(d, src.data(), d, dst.data(), vbs, nullptr, nullptr, s.data(), s.data());
      ADD_FAILURE() << vbs;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'virtual_batch_size' = " + std::to_string(vbs)),
                std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("6x2x1"), std::string::npos) << "the caller's dims: " << e.what();
    }
    EXPECT_EQ(dst.bytes, before);
  }
  // The layer names its option, and changes nothing.
  for (std::int64_t vbs : {4, 1}) {  // 4 does not divide 6; groups of 1x2 have one value per channel
    const TensorDesc one(DType::f32, Layout::channels_first, {6, 2});
    BatchNorm named(BatchNorm::Options{.num_features = 2, .virtual_batch_size = vbs});
    const auto before = dst.bytes;
    try {
      named.forward(vbs == 4 ? d : one, src.data(), vbs == 4 ? d : one, dst.data());
      ADD_FAILURE() << vbs;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'options.virtual_batch_size' = " + std::to_string(vbs)),
                std::string::npos)
          << e.what();
    }
    EXPECT_EQ(dst.bytes, before);
    EXPECT_EQ(named.num_batches_tracked(), 0);
    EXPECT_EQ(std::vector<float>(named.running_mean().begin(), named.running_mean().end()),
              std::vector<float>(2, 0.0f));
  }
  // The layer checks its input before its saved statistics grow to G x C:
  // a null src with a huge batch is an Error, not std::bad_alloc.
  BatchNorm layer(BatchNorm::Options{.num_features = 2, .virtual_batch_size = 3});
  const TensorDesc huge(DType::f32, Layout::channels_first, {(std::int64_t{1} << 40) + 1, 2});
  EXPECT_THROW(layer.forward(huge, nullptr, huge, dst.data()), Error);
}

// The backward of an empty batch needs no data and no saved statistics (a
// null pointer for a buffer of no values, as the docs say) and gives zero
// parameter gradients, in every backward of the family (all but the plain
// batch one refused a null src, mean, r, dst or mask).
TEST(GhostBatchNorm, BackwardOfAnEmptyBatchNeedsNoBuffers) {
  const TensorDesc d(DType::f32, Layout::channels_first, {0, 3, 4});
  std::vector<float> dg(3), db(3);
  auto check = [&](const char* what, const std::function<void()>& call) {
    dg.assign(3, 7.0f);
    db.assign(3, 7.0f);
    EXPECT_NO_THROW(call()) << what;
    EXPECT_EQ(dg, std::vector<float>(3, 0.0f)) << what;
    EXPECT_EQ(db, std::vector<float>(3, 0.0f)) << what;
  };
  for (BackwardStats stats : {BackwardStats::batch, BackwardStats::fixed})
    check("batch_norm_backward", [&] {
      batch_norm_backward(d, nullptr, d, nullptr, d, nullptr, nullptr, nullptr, nullptr, dg.data(), db.data(),
                          stats);
    });
  check("ghost", [&] {
    ghost_batch_norm_backward(d, nullptr, d, nullptr, d, nullptr, 2, nullptr, nullptr, nullptr, dg.data(),
                              db.data());
  });
  check("renorm", [&] {
    batch_renorm_backward(d, nullptr, d, nullptr, d, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                          dg.data(), db.data());
  });
  check("fused, dst", [&] {
    batch_norm_backward_fused(d, nullptr, static_cast<const void*>(nullptr), true, d, nullptr, d, nullptr,
                              nullptr, nullptr, nullptr, dg.data(), db.data(), nullptr);
  });
  check("fused, mask", [&] {
    batch_norm_backward_fused(d, nullptr, static_cast<const std::uint8_t*>(nullptr), d, nullptr, d, nullptr,
                              nullptr, nullptr, nullptr, dg.data(), db.data(), nullptr);
  });
}

TEST(BatchNormLayer, VirtualBatchSizeRunsGhostBatchNorm) {
  BatchNorm::Options o;
  o.num_features = 3;
  o.virtual_batch_size = 2;
  BatchNorm layer(o);
  const TensorDesc d(DType::f32, Layout::channels_first, {6, 3, 5});
  Buffer src(d), dst(d), want(d), dx(d);
  fill_normal(src, 9);
  layer.forward(d, src.data(), d, dst.data());
  std::vector<float> rm(3, 0.0f), rv(3, 1.0f), m(9), is(9);
  std::int64_t t = 0;
  ghost_batch_norm_forward_training(d, src.data(), d, want.data(), 2, layer.weight().data(), layer.bias().data(),
                                    m.data(), is.data(), {rm.data(), rv.data(), &t});
  EXPECT_EQ(dst.bytes, want.bytes);
  EXPECT_EQ(layer.num_batches_tracked(), 3);
  EXPECT_NO_THROW(layer.backward(d, src.data(), d, src.data(), d, dx.data()));
  EXPECT_EQ(layer.saved_mean().size(), 9u);  // 3 groups x 3 channels
  EXPECT_EQ(std::vector<float>(layer.saved_mean().begin(), layer.saved_mean().end()), m);
  EXPECT_THROW(BatchNorm(BatchNorm::Options{.num_features = 3, .virtual_batch_size = -1}), Error);

  // A forward that fails leaves the ghost state: backward still matches the
  // ghost forward.
  const TensorDesc odd(DType::f32, Layout::channels_first, {5, 3, 5});  // not a multiple of 2
  Buffer osrc(odd), odst(odd);
  EXPECT_THROW(layer.forward(odd, osrc.data(), odd, odst.data()), Error);
  Buffer dy(d), dx_after(d), dx_want(d);
  fill_normal(dy, 10);
  std::vector<float> dg(3), db(3);
  layer.backward(d, src.data(), d, dy.data(), d, dx_after.data());
  ghost_batch_norm_backward(d, src.data(), d, dy.data(), d, dx_want.data(), 2, layer.weight().data(), m.data(),
                            is.data(), dg.data(), db.data());
  EXPECT_EQ(dx_after.bytes, dx_want.bytes);
  // Backward on another batch size than the ghost forward's: refused (its
  // statistics are per ghost batch of that forward), nothing written.
  for (std::int64_t n : {2, 8}) {
    const TensorDesc other(DType::f32, Layout::channels_first, {n, 3, 5});
    Buffer s2(other), dy2(other), dx2(other);
    const Buffer before = dx2;
    try {
      layer.backward(other, s2.data(), other, dy2.data(), other, dx2.data());
      ADD_FAILURE() << "backward with N = " << n << " after a ghost forward with N = 6 was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::shape_mismatch) << e.what();
      EXPECT_NE(std::string(e.what()).find(other.dims_str()), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("the last forward had 6x3x5"), std::string::npos) << e.what();
    }
    EXPECT_EQ(dx2.bytes, before.bytes);
  }

  // Eval after a ghost forward saves C values (the running statistics).
  layer.eval();
  layer.forward(d, src.data(), d, dst.data());
  ASSERT_EQ(layer.saved_mean().size(), 3u);
  for (std::size_t c = 0; c < 3; ++c) EXPECT_EQ(layer.saved_mean()[c], layer.running_mean()[c]);
}

TEST(BatchNormLayer, FrozenUsesRunningStatisticsAndTheirDerivative) {
  BatchNorm::Options o;
  o.num_features = 4;
  BatchNorm layer(o);
  for (std::size_t c = 0; c < 4; ++c) {
    layer.running_mean()[c] = 0.3f * static_cast<float>(c) - 0.5f;
    layer.running_var()[c] = 0.5f + 0.4f * static_cast<float>(c);
    layer.weight()[c] = 1.0f + 0.1f * static_cast<float>(c);
    layer.bias()[c] = -0.2f * static_cast<float>(c);
  }
  const std::vector<float> rm(layer.running_mean().begin(), layer.running_mean().end());
  layer.freeze();
  ASSERT_TRUE(layer.is_training());
  const TensorDesc d(DType::f32, Layout::channels_last, {3, 4});
  Buffer src(d), dst(d), want(d), dy(d), dx(d);
  fill_normal(src, 13, 1.0, 2.0);
  fill_normal(dy, 14);
  layer.forward(d, src.data(), d, dst.data());
  batch_norm_forward_inference(d, src.data(), d, want.data(), layer.weight().data(), layer.bias().data(),
                               layer.running_mean().data(), layer.running_var().data(), o.eps);
  EXPECT_EQ(dst.bytes, want.bytes);
  EXPECT_EQ(std::vector<float>(layer.running_mean().begin(), layer.running_mean().end()), rm) << "not updated";
  layer.backward(d, src.data(), d, dy.data(), d, dx.data());
  // d/dx of sum(dy * inference(x)), by central differences in double.
  auto loss = [&](const Buffer& x) {
    double l = 0;
    for (std::int64_t i = 0; i < d.elements(); ++i) {
      const std::size_t c = static_cast<std::size_t>(i % 4);
      const double y = (x.get(i) - layer.running_mean()[c]) / std::sqrt(layer.running_var()[c] + o.eps) *
                           layer.weight()[c] + layer.bias()[c];
      l += dy.get(i) * y;
    }
    return l;
  };
  for (std::int64_t i = 0; i < d.elements(); ++i) {
    Buffer plus = src, minus = src;
    plus.set(i, src.get(i) + 0.01f);
    minus.set(i, src.get(i) - 0.01f);
    const double numeric = (loss(plus) - loss(minus)) / (plus.get(i) - minus.get(i));
    EXPECT_NEAR(dx.get(i), numeric, 1e-4 * (1 + std::fabs(numeric))) << i;
  }
  // diff_gamma = sum(dy * xhat) with the running statistics, diff_beta = sum(dy).
  for (std::size_t c = 0; c < 4; ++c) {
    double sx = 0, s = 0;
    for (std::int64_t n = 0; n < 3; ++n) {
      const std::int64_t i = n * 4 + static_cast<std::int64_t>(c);
      sx += dy.get(i) * (src.get(i) - layer.running_mean()[c]) / std::sqrt(layer.running_var()[c] + o.eps);
      s += dy.get(i);
    }
    EXPECT_NEAR(layer.weight_grad()[c], sx, 1e-5);
    EXPECT_NEAR(layer.bias_grad()[c], s, 1e-5);
  }
  layer.freeze(false);
  layer.forward(d, src.data(), d, dst.data());
  EXPECT_NE(dst.bytes, want.bytes) << "unfrozen: batch statistics again";
  EXPECT_THROW(BatchNorm(BatchNorm::Options{.num_features = 2, .track_running_stats = false}).freeze(), Error);
}

// With constant statistics dx = dy * gamma * invstd: a NaN in x or an
// infinity in dy must not reach the rest of the channel, also when the
// parameter gradients (which do take the NaN) are computed in the same call.
TEST(FrozenBatchNorm, NonFiniteValueStaysInItsElement) {
  for (const TensorDesc d : {TensorDesc(DType::f32, Layout::channels_first, {4, 3, 5, 7}),
                             TensorDesc(DType::f32, Layout::channels_last, {4, 3, 5, 7}),
                             TensorDesc(DType::bf16, Layout::channels_last, {2, 3, 40})}) {
    for (const bool fused : {false, true}) {
      SCOPED_TRACE(d.str() + (fused ? " fused" : ""));
      Buffer src(d), dst(d), dy(d), dx(d);
      fill_normal(src, 21);
      fill_normal(dy, 22);
      const std::vector<float> gamma{1.5f, 0.5f, 2.0f}, mean{0.1f, -0.2f, 0.3f}, invstd{0.8f, 1.25f, 2.0f};
      // Channel 1's first element of x is NaN, channel 2's first dy +inf.
      const bool last = d.layout() == Layout::channels_last;
      const std::int64_t S = d.spatial();
      auto channel_of = [&](std::int64_t i) { return last ? i % 3 : i / S % 3; };
      const std::int64_t nan_at = last ? 1 : S, inf_at = last ? 2 : 2 * S;
      src.set(nan_at, std::nanf(""));
      dy.set(inf_at, INFINITY);
      std::vector<float> dgamma(3), dbeta(3);
      if (fused) {
        // Every dst positive: the ReLU passes every gradient.
        for (std::int64_t i = 0; i < d.elements(); ++i) dst.set(i, 1.0f);
        batch_norm_backward_fused(d, src.data(), dst.data(), true, d, dy.data(), d, dx.data(), gamma.data(),
                                  mean.data(), invstd.data(), dgamma.data(), dbeta.data(), nullptr,
                                  BackwardStats::fixed);
      } else {
        batch_norm_backward(d, src.data(), d, dy.data(), d, dx.data(), gamma.data(), mean.data(),
                            invstd.data(), dgamma.data(), dbeta.data(), BackwardStats::fixed);
      }
      EXPECT_TRUE(std::isnan(dgamma[1])) << "sum(dy * xhat) takes the NaN";
      EXPECT_TRUE(std::isinf(dbeta[2]));
      EXPECT_EQ(dx.get(inf_at), INFINITY);
      const double tol = d.dtype() == DType::f32 ? 1e-6 : 1e-2;
      for (std::int64_t i = 0; i < d.elements(); ++i) {
        if (i == nan_at || i == inf_at) continue;
        const auto c = static_cast<std::size_t>(channel_of(i));
        const double want = static_cast<double>(dy.get(i)) * gamma[c] * invstd[c];
        ASSERT_NEAR(dx.get(i), want, tol * (1.0 + std::fabs(want))) << "element " << i << ", channel " << c;
      }
      if (fused) continue;
      // dx alone does not read x: the NaN element's dx is finite too, and
      // every element as with the parameter gradients.
      Buffer dx_only(d);
      batch_norm_backward(d, src.data(), d, dy.data(), d, dx_only.data(), gamma.data(), mean.data(),
                          invstd.data(), nullptr, nullptr, BackwardStats::fixed);
      const double want = static_cast<double>(dy.get(nan_at)) * gamma[1] * invstd[1];
      EXPECT_NEAR(dx_only.get(nan_at), want, tol * (1.0 + std::fabs(want)));
      for (std::int64_t i = 0; i < d.elements(); ++i) {
        if (i != nan_at) {
          ASSERT_EQ(dx_only.get(i), dx.get(i)) << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace bnorm::test

// Every documented error of the layer-norm API, each triggered once: the
// kind, a message naming the argument, value and rule, and no output touched.

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
  Buffer src{desc}, dst{desc}, dy{desc}, dx{desc};
  std::vector<float> gamma = std::vector<float>(12, 1.0f), beta = std::vector<float>(12, 0.0f);
  std::vector<float> mean = std::vector<float>(2, 0.5f), invstd = std::vector<float>(2, 2.0f);
  std::vector<float> dg = std::vector<float>(12, 9.0f), db = std::vector<float>(12, 9.0f);
  Fixture() {
    fill_normal(src, 1);
    fill_normal(dst, 2);
    fill_normal(dy, 3);
    fill_normal(dx, 4);
    dst_before = dst.bytes;
    dx_before = dx.bytes;
  }
  std::vector<std::byte> dst_before, dx_before;
  void forward(const TensorDesc& s, const TensorDesc& d, int nd = 2, double eps = 1e-5, bool null_src = false,
               bool null_dst = false) {
    layer_norm_forward(s, null_src ? nullptr : src.data(), d, null_dst ? nullptr : dst.data(), nd, gamma.data(),
                       beta.data(), mean.data(), invstd.data(), eps);
  }
  void backward(const TensorDesc& s, const TensorDesc& ddy, const TensorDesc& ddx, int nd = 2,
                bool null_mean = false, bool null_invstd = false, bool null_src = false, bool null_dy = false) {
    layer_norm_backward(s, null_src ? nullptr : src.data(), ddy, null_dy ? nullptr : dy.data(), ddx, dx.data(), nd,
                        gamma.data(), null_mean ? nullptr : mean.data(), null_invstd ? nullptr : invstd.data(),
                        dg.data(), db.data());
  }
  void expect_untouched() const {
    EXPECT_EQ(dst.bytes, dst_before);
    EXPECT_EQ(dx.bytes, dx_before);
    EXPECT_EQ(mean, std::vector<float>(2, 0.5f));
    EXPECT_EQ(invstd, std::vector<float>(2, 2.0f));
    EXPECT_EQ(dg, std::vector<float>(12, 9.0f));
    EXPECT_EQ(db, std::vector<float>(12, 9.0f));
  }
};

TEST(LayerNormErrors, RankZero) {
  Fixture f;
  const TensorDesc r0;
  expect_error([&] { f.forward(r0, r0, 1); }, ErrorKind::invalid_argument, {"src_desc", "rank 0", "1 to 5"});
  expect_error([&] { f.backward(r0, r0, r0, 1); }, ErrorKind::invalid_argument, {"src_desc", "rank 0"});
  f.expect_untouched();
}

TEST(LayerNormErrors, ChannelsLastRefused) {
  Fixture f;
  const TensorDesc cl(DType::f32, Layout::channels_last, {2, 3, 4});
  expect_error([&] { f.forward(cl, cl); }, ErrorKind::unsupported, {"src_desc", "channels_last", "contiguous"});
  expect_error([&] { f.backward(cl, cl, cl); }, ErrorKind::unsupported, {"channels_last"});
  f.expect_untouched();
}

TEST(LayerNormErrors, NormalizedDimsOutOfRange) {
  Fixture f;
  for (int nd : {0, -1, 4}) {
    expect_error([&] { f.forward(f.desc, f.desc, nd); }, ErrorKind::invalid_argument,
                 {"normalized_dims", std::to_string(nd).c_str(), "1 to the rank"});
    expect_error([&] { f.backward(f.desc, f.desc, f.desc, nd); }, ErrorKind::invalid_argument,
                 {"normalized_dims"});
  }
  f.expect_untouched();
}

TEST(LayerNormErrors, MismatchedDescriptors) {
  Fixture f;
  const TensorDesc other_dims(DType::f32, Layout::channels_first, {2, 4, 3});
  const TensorDesc other_type(DType::bf16, Layout::channels_first, {2, 3, 4});
  expect_error([&] { f.forward(f.desc, other_dims); }, ErrorKind::shape_mismatch, {"dst_desc", "2x4x3"});
  expect_error([&] { f.forward(f.desc, other_type); }, ErrorKind::shape_mismatch, {"dst_desc", "bf16"});
  expect_error([&] { f.backward(f.desc, other_dims, f.desc); }, ErrorKind::shape_mismatch, {"diff_dst_desc"});
  expect_error([&] { f.backward(f.desc, f.desc, other_type); }, ErrorKind::shape_mismatch, {"diff_src_desc"});
  f.expect_untouched();
}

TEST(LayerNormErrors, BadEps) {
  Fixture f;
  for (double eps : {-1e-5, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()})
    expect_error([&] { f.forward(f.desc, f.desc, 2, eps); }, ErrorKind::invalid_argument,
                 {"eps", "finite and >= 0"});
  f.expect_untouched();
}

TEST(LayerNormErrors, NullBuffers) {
  Fixture f;
  expect_error([&] { f.forward(f.desc, f.desc, 2, 1e-5, true); }, ErrorKind::null_pointer, {"'src'"});
  expect_error([&] { f.forward(f.desc, f.desc, 2, 1e-5, false, true); }, ErrorKind::null_pointer, {"'dst'"});
  expect_error([&] { f.backward(f.desc, f.desc, f.desc, 2, true); }, ErrorKind::null_pointer, {"'mean'"});
  expect_error([&] { f.backward(f.desc, f.desc, f.desc, 2, false, true); }, ErrorKind::null_pointer,
               {"'invstd'"});
  expect_error([&] { f.backward(f.desc, f.desc, f.desc, 2, false, false, true); }, ErrorKind::null_pointer,
               {"'src'"});
  expect_error([&] { f.backward(f.desc, f.desc, f.desc, 2, false, false, false, true); },
               ErrorKind::null_pointer, {"'diff_dst'"});
  f.expect_untouched();
}

TEST(LayerNormErrors, OnnxAxis) {
  EXPECT_EQ(normalized_dims_from_axis(4, -1), 1);
  EXPECT_EQ(normalized_dims_from_axis(4, 0), 4);
  EXPECT_EQ(normalized_dims_from_axis(4, -4), 4);
  EXPECT_EQ(normalized_dims_from_axis(3, 1), 2);
  for (std::int64_t axis : {4, -5, 100})
    expect_error([&] { normalized_dims_from_axis(4, axis); }, ErrorKind::invalid_argument,
                 {"axis", std::to_string(axis).c_str(), "[-rank, rank)"});
  for (int rank : {0, 6})
    expect_error([&] { normalized_dims_from_axis(rank, 0); }, ErrorKind::invalid_argument,
                 {"'rank'", std::to_string(rank).c_str(), "1 to 5"});
}

TEST(LayerNormErrors, Layer) {
  expect_error([] { LayerNorm({.normalized_shape = {}}); }, ErrorKind::invalid_argument,
               {"normalized_shape", "1 to 5"});
  expect_error([] { LayerNorm({.normalized_shape = {1, 2, 3, 4, 5, 6}}); }, ErrorKind::invalid_argument,
               {"normalized_shape"});
  // A count that wrapped to 0 gave a layer with no weights.
  expect_error(
      [] {
        LayerNorm({.normalized_shape = {std::int64_t{1} << 32, std::int64_t{1} << 32}});
      },
      ErrorKind::invalid_argument, {"options.normalized_shape", "[4294967296, 4294967296]", "fit in int64"});
  expect_error([] { RMSNorm({.normalized_shape = {std::int64_t{1} << 62}}); }, ErrorKind::invalid_argument,
               {"options.normalized_shape", "fit in int64"});
  expect_error([] { LayerNorm({.normalized_shape = {3, -1}}); }, ErrorKind::invalid_argument,
               {"normalized_shape", "[3, -1]", ">= 0"});
  expect_error([] { LayerNorm({.normalized_shape = {3}, .eps = -1.0}); }, ErrorKind::invalid_argument,
               {"options.eps"});
  LayerNorm ln({.normalized_shape = {3, 4}});
  Fixture f;
  expect_error([&] { ln.backward(f.desc, f.src.data(), f.desc, f.dy.data(), f.desc, f.dx.data()); },
               ErrorKind::invalid_argument, {"before any forward"});
  const TensorDesc wrong(DType::f32, Layout::channels_first, {2, 4, 3});
  Buffer w(wrong);
  expect_error([&] { ln.forward(wrong, w.data(), wrong, w.data()); }, ErrorKind::shape_mismatch,
               {"src_desc", "2x4x3", "[*, 3, 4]"});
  ln.forward(f.desc, f.src.data(), f.desc, f.dst.data());
  const TensorDesc more_rows(DType::f32, Layout::channels_first, {5, 3, 4});
  Buffer m(more_rows);
  expect_error([&] { ln.backward(more_rows, m.data(), more_rows, m.data(), more_rows, m.data()); },
               ErrorKind::shape_mismatch, {"5x3x4", "the last forward had 2x3x4"});
  EXPECT_EQ(f.dx.bytes, f.dx_before);
}

TEST(RmsNormErrors, EveryDocumentedError) {
  Fixture f;
  const TensorDesc cl(DType::f32, Layout::channels_last, {2, 3, 4});
  const TensorDesc other(DType::f32, Layout::channels_first, {2, 4, 3});
  std::vector<float> invrms(2, 2.0f), dg(12, 9.0f);
  auto fwd = [&](const TensorDesc& s, const TensorDesc& d, int nd, std::optional<double> eps, const void* sp,
                 void* dp) { rms_norm_forward(s, sp, d, dp, nd, f.gamma.data(), invrms.data(), eps); };
  auto bwd = [&](const TensorDesc& s, const TensorDesc& ddy, const TensorDesc& ddx, int nd, const float* inv,
                 const void* sp, const void* dyp) {
    rms_norm_backward(s, sp, ddy, dyp, ddx, f.dx.data(), nd, f.gamma.data(), inv, dg.data());
  };
  expect_error([&] { fwd(TensorDesc(), TensorDesc(), 1, {}, f.src.data(), f.dst.data()); },
               ErrorKind::invalid_argument, {"rank 0"});
  expect_error([&] { fwd(cl, cl, 2, {}, f.src.data(), f.dst.data()); }, ErrorKind::unsupported, {"channels_last"});
  expect_error([&] { fwd(f.desc, f.desc, 4, {}, f.src.data(), f.dst.data()); }, ErrorKind::invalid_argument,
               {"normalized_dims"});
  expect_error([&] { fwd(f.desc, other, 2, {}, f.src.data(), f.dst.data()); }, ErrorKind::shape_mismatch,
               {"dst_desc"});
  expect_error([&] { fwd(f.desc, f.desc, 2, -1.0, f.src.data(), f.dst.data()); }, ErrorKind::invalid_argument,
               {"eps"});
  expect_error([&] { fwd(f.desc, f.desc, 2, {}, nullptr, f.dst.data()); }, ErrorKind::null_pointer, {"'src'"});
  expect_error([&] { fwd(f.desc, f.desc, 2, {}, f.src.data(), nullptr); }, ErrorKind::null_pointer, {"'dst'"});
  expect_error([&] { bwd(f.desc, other, f.desc, 2, invrms.data(), f.src.data(), f.dy.data()); },
               ErrorKind::shape_mismatch, {"diff_dst_desc"});
  expect_error([&] { bwd(f.desc, f.desc, other, 2, invrms.data(), f.src.data(), f.dy.data()); },
               ErrorKind::shape_mismatch, {"diff_src_desc"});
  expect_error([&] { bwd(f.desc, f.desc, f.desc, 2, nullptr, f.src.data(), f.dy.data()); },
               ErrorKind::null_pointer, {"'invrms'"});
  expect_error([&] { bwd(f.desc, f.desc, f.desc, 2, invrms.data(), nullptr, f.dy.data()); },
               ErrorKind::null_pointer, {"'src'"});
  expect_error([&] { bwd(f.desc, f.desc, f.desc, 2, invrms.data(), f.src.data(), nullptr); },
               ErrorKind::null_pointer, {"'diff_dst'"});
  expect_error([&] { bwd(cl, cl, cl, 2, invrms.data(), f.src.data(), f.dy.data()); }, ErrorKind::unsupported,
               {"channels_last"});
  EXPECT_EQ(invrms, std::vector<float>(2, 2.0f));
  EXPECT_EQ(dg, std::vector<float>(12, 9.0f));
  f.expect_untouched();
  expect_error([] { RMSNorm({.normalized_shape = {}}); }, ErrorKind::invalid_argument, {"normalized_shape"});
  expect_error([] { RMSNorm({.normalized_shape = {4}, .eps = -2.0}); }, ErrorKind::invalid_argument,
               {"options.eps"});
  RMSNorm rms({.normalized_shape = {4}});
  expect_error([&] { rms.backward(f.desc, f.src.data(), f.desc, f.dy.data(), f.desc, f.dx.data()); },
               ErrorKind::invalid_argument, {"before any forward"});
  Buffer o(other);
  expect_error([&] { rms.forward(other, o.data(), other, o.data()); }, ErrorKind::shape_mismatch, {"[*, 4]"});
}

}  // namespace
}  // namespace bnorm::test

// Every documented error of the group-norm and instance-norm APIs (functions,
// ONNX forms, layers), each triggered once: the kind, a message naming the
// argument, value and rule, and no output touched. Also the documented
// edge cases that are not errors (empty tensors, one value per group).

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

struct Fixture {
  TensorDesc desc{DType::f32, Layout::channels_first, {2, 6, 4}};
  Buffer src{desc}, dst{desc}, dy{desc};
  std::vector<float> gamma = std::vector<float>(6, 1.0f), beta = std::vector<float>(6, 0.0f);
  std::vector<float> mean = std::vector<float>(12, 0.5f), invstd = std::vector<float>(12, 2.0f);
  std::vector<float> rmean = std::vector<float>(6, 0.25f), rvar = std::vector<float>(6, 4.0f);
  std::vector<float> dg = std::vector<float>(6, 9.0f), db = std::vector<float>(6, 9.0f);
  Buffer dst_before{desc};
  Fixture() {
    fill_normal(src, 1);
    fill_normal(dst, 2);
    fill_normal(dy, 3);
    dst_before = dst;
  }
  void expect_untouched() const {
    EXPECT_EQ(dst.bytes, dst_before.bytes);
    EXPECT_EQ(mean, std::vector<float>(12, 0.5f));
    EXPECT_EQ(invstd, std::vector<float>(12, 2.0f));
    EXPECT_EQ(rmean, std::vector<float>(6, 0.25f));
    EXPECT_EQ(rvar, std::vector<float>(6, 4.0f));
    EXPECT_EQ(dg, std::vector<float>(6, 9.0f));
    EXPECT_EQ(db, std::vector<float>(6, 9.0f));
  }
  void gn(const TensorDesc& s, const TensorDesc& d, std::int64_t groups, double eps = 1e-5,
          const void* sp = nullptr, void* dp = nullptr) {
    group_norm_forward(s, sp ? sp : src.data(), d, dp ? dp : dst.data(), groups, gamma.data(), beta.data(),
                       mean.data(), invstd.data(), eps);
  }
  void gn_bwd(const TensorDesc& s, const TensorDesc& ddst, const TensorDesc& dsrc, std::int64_t groups,
              const float* m, const float* is) {
    group_norm_backward(s, src.data(), ddst, dy.data(), dsrc, dst.data(), groups, gamma.data(), m, is, dg.data(),
                        db.data());
  }
};

TEST(GroupNormErrors, Rank) {
  Fixture f;
  const TensorDesc r1(DType::f32, Layout::channels_first, {24});
  expect_error([&] { f.gn(r1, r1, 1); }, ErrorKind::invalid_argument, {"src_desc", "rank 1", "2 to 5"});
  expect_error([&] { f.gn_bwd(r1, r1, r1, 1, f.mean.data(), f.invstd.data()); }, ErrorKind::invalid_argument,
               {"src_desc", "rank 1"});
  const TensorDesc r2(DType::f32, Layout::channels_first, {4, 6});
  expect_error([&] { instance_norm_forward_training(r2, f.src.data(), r2, f.dst.data(), nullptr, nullptr, nullptr, nullptr); },
               ErrorKind::invalid_argument, {"src_desc", "rank 2", "3 to 5"});
  expect_error([&] { instance_norm_onnx(r2, f.src.data(), f.gamma.data(), f.beta.data(), r2, f.dst.data()); },
               ErrorKind::invalid_argument, {"x_desc", "rank 2", "3 to 5"});
  expect_error(
      [&] { instance_norm_forward_inference(r2, f.src.data(), r2, f.dst.data(), nullptr, nullptr, f.rmean.data(), f.rvar.data()); },
      ErrorKind::invalid_argument, {"src_desc", "rank 2"});
  expect_error([&] { instance_norm_backward(r2, f.src.data(), r2, f.dy.data(), r2, f.dst.data(), nullptr, f.mean.data(), f.invstd.data(), nullptr, nullptr); },
               ErrorKind::invalid_argument, {"src_desc", "rank 2"});
  f.expect_untouched();
}

TEST(GroupNormErrors, GroupsMustDivideChannels) {
  Fixture f;
  expect_error([&] { f.gn(f.desc, f.desc, 4); }, ErrorKind::invalid_argument,
               {"num_groups", "= 4", "C = 6", "divisible"});
  expect_error([&] { f.gn(f.desc, f.desc, 0); }, ErrorKind::invalid_argument, {"num_groups", "= 0", "> 0"});
  expect_error([&] { f.gn(f.desc, f.desc, -2); }, ErrorKind::invalid_argument, {"num_groups", "= -2"});
  expect_error([&] { f.gn_bwd(f.desc, f.desc, f.desc, 5, f.mean.data(), f.invstd.data()); },
               ErrorKind::invalid_argument, {"num_groups", "= 5", "divisible"});
  expect_error(
      [&] {
        group_norm_onnx(f.desc, f.src.data(), f.gamma.data(), f.beta.data(), f.desc, f.dst.data(),
                        OnnxGroupNormalization{.num_groups = 4});
      },
      ErrorKind::invalid_argument, {"attributes.num_groups", "= 4", "divisible"});
  f.expect_untouched();
}

TEST(GroupNormErrors, ZeroChannels) {
  Fixture f;
  const TensorDesc c0(DType::f32, Layout::channels_first, {2, 0, 4});
  expect_error([&] { f.gn(c0, c0, 1); }, ErrorKind::invalid_argument, {"src_desc", "C = 0"});
  const TensorDesc c0r3(DType::f32, Layout::channels_last, {2, 0, 4});
  expect_error([&] { instance_norm_forward_training(c0r3, f.src.data(), c0r3, f.dst.data(), nullptr, nullptr, nullptr, nullptr); },
               ErrorKind::invalid_argument, {"C = 0"});
  f.expect_untouched();
}

TEST(GroupNormErrors, MismatchedDescriptors) {
  Fixture f;
  const TensorDesc dims(DType::f32, Layout::channels_first, {2, 6, 5});
  const TensorDesc layout(DType::f32, Layout::channels_last, {2, 6, 4});
  const TensorDesc dtype(DType::bf16, Layout::channels_first, {2, 6, 4});
  expect_error([&] { f.gn(f.desc, dims, 2); }, ErrorKind::shape_mismatch, {"dst_desc", "dims 2x6x5", "2x6x4"});
  expect_error([&] { f.gn(f.desc, layout, 2); }, ErrorKind::shape_mismatch, {"dst_desc", "layout channels_last"});
  expect_error([&] { f.gn(f.desc, dtype, 2); }, ErrorKind::shape_mismatch, {"dst_desc", "dtype bf16"});
  expect_error([&] { f.gn_bwd(f.desc, dtype, f.desc, 2, f.mean.data(), f.invstd.data()); },
               ErrorKind::shape_mismatch, {"diff_dst_desc", "dtype bf16"});
  expect_error([&] { f.gn_bwd(f.desc, f.desc, layout, 2, f.mean.data(), f.invstd.data()); },
               ErrorKind::shape_mismatch, {"diff_src_desc", "layout"});
  expect_error([&] { instance_norm_forward_training(f.desc, f.src.data(), dims, f.dst.data(), nullptr, nullptr, nullptr, nullptr); },
               ErrorKind::shape_mismatch, {"dst_desc"});
  expect_error([&] { instance_norm_onnx(f.desc, f.src.data(), f.gamma.data(), f.beta.data(), layout, f.dst.data()); },
               ErrorKind::shape_mismatch, {"y_desc", "layout"});
  expect_error(
      [&] {
        group_norm_onnx(f.desc, f.src.data(), f.gamma.data(), f.beta.data(), dims, f.dst.data(),
                        OnnxGroupNormalization{.num_groups = 2});
      },
      ErrorKind::shape_mismatch, {"y_desc", "dims"});
  f.expect_untouched();
}

TEST(GroupNormErrors, Eps) {
  Fixture f;
  expect_error([&] { f.gn(f.desc, f.desc, 2, -1.0); }, ErrorKind::invalid_argument, {"'eps'", "-1", ">= 0"});
  expect_error([&] { f.gn(f.desc, f.desc, 2, NAN); }, ErrorKind::invalid_argument, {"'eps'", "finite"});
  expect_error(
      [&] {
        instance_norm_forward_training(f.desc, f.src.data(), f.desc, f.dst.data(), nullptr, nullptr, nullptr,
                                       nullptr, nullptr, nullptr, InstanceNormConfig{.eps = -0.5});
      },
      ErrorKind::invalid_argument, {"config.eps", "-0.5"});
  expect_error([&] { instance_norm_onnx(f.desc, f.src.data(), f.gamma.data(), f.beta.data(), f.desc, f.dst.data(), -1e-3); },
               ErrorKind::invalid_argument, {"'epsilon'"});
  expect_error(
      [&] {
        group_norm_onnx(f.desc, f.src.data(), f.gamma.data(), f.beta.data(), f.desc, f.dst.data(),
                        OnnxGroupNormalization{.num_groups = 2, .epsilon = INFINITY});
      },
      ErrorKind::invalid_argument, {"attributes.epsilon", "inf"});
  expect_error(
      [&] {
        instance_norm_forward_inference(f.desc, f.src.data(), f.desc, f.dst.data(), nullptr, nullptr, f.rmean.data(),
                                        f.rvar.data(), -1.0);
      },
      ErrorKind::invalid_argument, {"eps"});
  f.expect_untouched();
}

TEST(GroupNormErrors, NullPointers) {
  Fixture f;
  expect_error([&] { group_norm_forward(f.desc, nullptr, f.desc, f.dst.data(), 2, nullptr, nullptr, nullptr, nullptr); },
               ErrorKind::null_pointer, {"'src'"});
  expect_error([&] { group_norm_forward(f.desc, f.src.data(), f.desc, nullptr, 2, nullptr, nullptr, nullptr, nullptr); },
               ErrorKind::null_pointer, {"'dst'"});
  expect_error([&] { f.gn_bwd(f.desc, f.desc, f.desc, 2, nullptr, f.invstd.data()); }, ErrorKind::null_pointer,
               {"'mean'", "N x G"});
  expect_error([&] { f.gn_bwd(f.desc, f.desc, f.desc, 2, f.mean.data(), nullptr); }, ErrorKind::null_pointer,
               {"'invstd'"});
  // Instance norm has no G: its messages say N x C.
  for (const bool no_mean : {true, false}) {
    expect_error(
        [&] {
          instance_norm_backward(f.desc, f.src.data(), f.desc, f.dy.data(), f.desc, f.dst.data(), nullptr,
                                 no_mean ? nullptr : f.mean.data(), no_mean ? f.invstd.data() : nullptr,
                                 nullptr, nullptr);
        },
        ErrorKind::null_pointer, {no_mean ? "'mean'" : "'invstd'", "N x C"});
  }
  expect_error(
      [&] {
        group_norm_backward(f.desc, nullptr, f.desc, f.dy.data(), f.desc, f.dst.data(), 2, nullptr, f.mean.data(),
                            f.invstd.data(), nullptr, nullptr);
      },
      ErrorKind::null_pointer, {"'src'"});
  expect_error(
      [&] {
        group_norm_backward(f.desc, f.src.data(), f.desc, nullptr, f.desc, f.dst.data(), 2, nullptr, f.mean.data(),
                            f.invstd.data(), nullptr, nullptr);
      },
      ErrorKind::null_pointer, {"'diff_dst'"});
  expect_error(
      [&] {
        group_norm_onnx(f.desc, f.src.data(), nullptr, f.beta.data(), f.desc, f.dst.data(),
                        OnnxGroupNormalization{.num_groups = 2});
      },
      ErrorKind::null_pointer, {"'scale'"});
  expect_error(
      [&] {
        group_norm_onnx(f.desc, f.src.data(), f.gamma.data(), nullptr, f.desc, f.dst.data(),
                        OnnxGroupNormalization{.num_groups = 2});
      },
      ErrorKind::null_pointer, {"'bias'"});
  expect_error([&] { instance_norm_onnx(f.desc, f.src.data(), nullptr, f.beta.data(), f.desc, f.dst.data()); },
               ErrorKind::null_pointer, {"'scale'"});
  // The ONNX forms name their own arguments (they said 'src' / 'dst').
  const OnnxGroupNormalization two{.num_groups = 2};
  expect_error(
      [&] { group_norm_onnx(f.desc, nullptr, f.gamma.data(), f.beta.data(), f.desc, f.dst.data(), two); },
      ErrorKind::null_pointer, {"argument 'x'"});
  expect_error(
      [&] { group_norm_onnx(f.desc, f.src.data(), f.gamma.data(), f.beta.data(), f.desc, nullptr, two); },
      ErrorKind::null_pointer, {"argument 'y'"});
  expect_error(
      [&] { instance_norm_onnx(f.desc, nullptr, f.gamma.data(), f.beta.data(), f.desc, f.dst.data()); },
      ErrorKind::null_pointer, {"argument 'x'"});
  expect_error(
      [&] { instance_norm_onnx(f.desc, f.src.data(), f.gamma.data(), f.beta.data(), f.desc, nullptr); },
      ErrorKind::null_pointer, {"argument 'y'"});
  expect_error([&] { instance_norm_onnx(f.desc, f.src.data(), f.gamma.data(), nullptr, f.desc, f.dst.data()); },
               ErrorKind::null_pointer, {"'b'"});
  expect_error(
      [&] {
        instance_norm_forward_training(f.desc, f.src.data(), f.desc, f.dst.data(), nullptr, nullptr, nullptr,
                                       nullptr, f.rmean.data(), nullptr);
      },
      ErrorKind::null_pointer, {"running_var", "both"});
  expect_error(
      [&] {
        instance_norm_forward_training(f.desc, f.src.data(), f.desc, f.dst.data(), nullptr, nullptr, nullptr,
                                       nullptr, nullptr, f.rvar.data());
      },
      ErrorKind::null_pointer, {"running_mean"});
  expect_error(
      [&] {
        instance_norm_forward_inference(f.desc, f.src.data(), f.desc, f.dst.data(), nullptr, nullptr, nullptr,
                                        f.rvar.data());
      },
      ErrorKind::null_pointer, {"running_mean"});
  expect_error(
      [&] {
        instance_norm_backward(f.desc, f.src.data(), f.desc, f.dy.data(), f.desc, f.dst.data(), nullptr, nullptr,
                               f.invstd.data(), nullptr, nullptr);
      },
      ErrorKind::null_pointer, {"'mean'"});
  f.expect_untouched();
}

TEST(GroupNormErrors, OnnxStashType) {
  Fixture f;
  for (std::int64_t st : {0, 7, 12, -1}) {
    expect_error(
        [&] {
          group_norm_onnx(f.desc, f.src.data(), f.gamma.data(), f.beta.data(), f.desc, f.dst.data(),
                          OnnxGroupNormalization{.num_groups = 2, .stash_type = st});
        },
        ErrorKind::invalid_argument, {"attributes.stash_type", std::to_string(st).c_str(), "floating-point"});
  }
  f.expect_untouched();
  for (std::int64_t st : {1, 10, 11, 16})
    group_norm_onnx(f.desc, f.src.data(), f.gamma.data(), f.beta.data(), f.desc, f.dst.data(),
                    OnnxGroupNormalization{.num_groups = 2, .stash_type = st});
}

TEST(GroupNormErrors, InstanceNormMomentumAndSpatialSize) {
  Fixture f;
  for (double m : {-0.1, 1.5, static_cast<double>(NAN)}) {
    expect_error(
        [&] {
          instance_norm_forward_training(f.desc, f.src.data(), f.desc, f.dst.data(), nullptr, nullptr, nullptr,
                                         nullptr, f.rmean.data(), f.rvar.data(), InstanceNormConfig{.momentum = m});
        },
        ErrorKind::invalid_argument, {"config.momentum", "[0, 1]"});
  }
  // One spatial element: no unbiased variance for the running statistics.
  const TensorDesc s1(DType::f32, Layout::channels_first, {4, 6, 1});
  expect_error(
      [&] {
        instance_norm_forward_training(s1, f.src.data(), s1, f.dst.data(), nullptr, nullptr, nullptr, nullptr,
                                       f.rmean.data(), f.rvar.data());
      },
      ErrorKind::invalid_argument, {"src_desc", "4x6x1", "more than 1 spatial element"});
  f.expect_untouched();
  // Without running statistics (ONNX) it normalizes to beta.
  std::vector<float> y(24, 5.0f);
  instance_norm_onnx(s1, f.src.data(), f.gamma.data(), f.beta.data(), s1, y.data());
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

TEST(GroupNormErrors, LayerOptionsAndInputs) {
  expect_error([] { GroupNorm(GroupNorm::Options{.num_groups = 3, .num_channels = 8}); }, ErrorKind::invalid_argument,
               {"options.num_groups", "= 3", "num_channels = 8"});
  expect_error([] { GroupNorm(GroupNorm::Options{.num_groups = 0, .num_channels = 8}); }, ErrorKind::invalid_argument,
               {"options.num_groups"});
  expect_error([] { GroupNorm(GroupNorm::Options{.num_groups = 1, .num_channels = 0}); }, ErrorKind::invalid_argument,
               {"options.num_channels", "= 0"});
  expect_error([] { GroupNorm(GroupNorm::Options{.num_groups = 1, .num_channels = 2, .eps = -1}); },
               ErrorKind::invalid_argument, {"options.eps"});
  expect_error([] { InstanceNorm(InstanceNorm::Options{.num_features = 0}); }, ErrorKind::invalid_argument,
               {"options.num_features", "= 0"});
  expect_error([] { InstanceNorm(InstanceNorm::Options{.num_features = 3, .momentum = 2.0}); },
               ErrorKind::invalid_argument, {"options.momentum", "2"});
  expect_error([] { InstanceNorm(InstanceNorm::Options{.num_features = 3, .eps = NAN}); }, ErrorKind::invalid_argument,
               {"options.eps"});

  Fixture f;
  GroupNorm gn(GroupNorm::Options{.num_groups = 2, .num_channels = 4});
  expect_error([&] { gn.backward(f.desc, f.src.data(), f.desc, f.dy.data(), f.desc, f.dst.data()); },
               ErrorKind::invalid_argument, {"before any forward"});
  expect_error([&] { gn.forward(f.desc, f.src.data(), f.desc, f.dst.data()); }, ErrorKind::shape_mismatch,
               {"C = 6", "num_channels = 4"});
  InstanceNorm in(InstanceNorm::Options{.num_features = 6});
  expect_error([&] { in.backward(f.desc, f.src.data(), f.desc, f.dy.data(), f.desc, f.dst.data()); },
               ErrorKind::invalid_argument, {"before any forward"});
  const TensorDesc c5(DType::f32, Layout::channels_first, {2, 5, 4});
  expect_error([&] { in.forward(c5, f.src.data(), c5, f.dst.data()); }, ErrorKind::shape_mismatch,
               {"C = 5", "num_features = 6"});
  const TensorDesc s1(DType::f32, Layout::channels_first, {2, 6, 1});
  expect_error([&] { in.forward(s1, f.src.data(), s1, f.dst.data()); }, ErrorKind::invalid_argument,
               {"more than 1 spatial element when training"});
  f.expect_untouched();
  // Backward with other dims than the forward's statistics: another batch
  // size, or another spatial size (accepted before, with the gradient of no
  // forward).
  GroupNorm gn6(GroupNorm::Options{.num_groups = 2, .num_channels = 6});
  gn6.forward(f.desc, f.src.data(), f.desc, f.dst.data());
  in.forward(f.desc, f.src.data(), f.desc, f.dst.data());
  for (const TensorDesc& other : {TensorDesc(DType::f32, Layout::channels_first, {1, 6, 4}),
                                  TensorDesc(DType::f32, Layout::channels_first, {2, 6, 3})}) {
    expect_error([&] { gn6.backward(other, f.src.data(), other, f.dy.data(), other, f.dst.data()); },
                 ErrorKind::shape_mismatch,
                 {other.dims_str().c_str(), "the last forward had 2x6x4", "GroupNorm::backward"});
    expect_error([&] { in.backward(other, f.src.data(), other, f.dy.data(), other, f.dst.data()); },
                 ErrorKind::shape_mismatch,
                 {other.dims_str().c_str(), "the last forward had 2x6x4", "InstanceNorm::backward"});
  }
}

// Not errors: empty tensors and one value per group.
TEST(GroupNormErrors, EdgeCases) {
  std::vector<float> mean(4, 7.0f), invstd(4, 7.0f), dg(4, 7.0f), db(4, 7.0f);
  // S = 0: ATen's mean 0 and invstd NaN per (sample, group).
  const TensorDesc s0(DType::f32, Layout::channels_first, {2, 4, 0});
  group_norm_forward(s0, nullptr, s0, nullptr, 2, nullptr, nullptr, mean.data(), invstd.data());
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(mean[i], 0.0f);
    EXPECT_TRUE(std::isnan(invstd[i]));
  }
  group_norm_backward(s0, nullptr, s0, nullptr, s0, nullptr, 2, nullptr, mean.data(), invstd.data(), dg.data(),
                      db.data());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(dg[i] + db[i], 0.0f);
  // N = 0: nothing to do.
  const TensorDesc n0(DType::bf16, Layout::channels_last, {0, 4, 3});
  group_norm_forward(n0, nullptr, n0, nullptr, 4, nullptr, nullptr, nullptr, nullptr);
  instance_norm_forward_training(n0, nullptr, n0, nullptr, nullptr, nullptr, nullptr, nullptr);
  // ... and backward with no statistics (an empty vector's data() may be null).
  std::fill(dg.begin(), dg.end(), 7.0f);
  EXPECT_NO_THROW(group_norm_backward(n0, nullptr, n0, nullptr, n0, nullptr, 4, nullptr, nullptr, nullptr,
                                      dg.data(), nullptr));
  for (float v : dg) EXPECT_EQ(v, 0.0f);
  std::fill(dg.begin(), dg.end(), 7.0f);
  EXPECT_NO_THROW(instance_norm_backward(n0, nullptr, n0, nullptr, n0, nullptr, nullptr, nullptr, nullptr,
                                         dg.data(), nullptr));
  for (float v : dg) EXPECT_EQ(v, 0.0f);
  // The layers on an empty batch, before any non-empty one: forward and
  // backward run, and the parameter gradients are 0.
  const TensorDesc e0(DType::f32, Layout::channels_first, {0, 4, 5});
  GroupNorm gn(GroupNorm::Options{.num_groups = 2, .num_channels = 4});
  InstanceNorm in(InstanceNorm::Options{.num_features = 4, .affine = true});
  gn.forward(e0, nullptr, e0, nullptr);
  EXPECT_NO_THROW(gn.backward(e0, nullptr, e0, nullptr, e0, nullptr));
  in.forward(e0, nullptr, e0, nullptr);
  EXPECT_NO_THROW(in.backward(e0, nullptr, e0, nullptr, e0, nullptr));
  for (float v : gn.weight_grad()) EXPECT_EQ(v, 0.0f);
  for (float v : in.bias_grad()) EXPECT_EQ(v, 0.0f);
  // One value per group: the output is beta, the gradient 0.
  const TensorDesc one(DType::f32, Layout::channels_first, {3, 4});
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, y(12), beta = {1, 2, 3, 4}, m(12), is(12);
  group_norm_forward(one, x.data(), one, y.data(), 4, nullptr, beta.data(), m.data(), is.data(), 1e-5);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(y[i], beta[i % 4]);
  std::vector<float> dy(12, 1.0f), dx(12, 5.0f);
  group_norm_backward(one, x.data(), one, dy.data(), one, dx.data(), 4, nullptr, m.data(), is.data(), nullptr,
                      nullptr);
  for (float v : dx) EXPECT_EQ(v, 0.0f);
}

}  // namespace
}  // namespace bnorm::test

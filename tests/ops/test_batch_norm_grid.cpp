// bnorm's batch norm (public functions, every instruction set) against the
// double-precision reference over a grid of awkward shapes: both layouts,
// every dtype, in-place, affine on/off, running statistics on/off, momentum
// and cumulative averages over several steps, then inference and backward.

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "common/bn_oracle.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

struct Flags {
  bool affine, running, cumulative, inplace;
};

// Shapes with sizes below, at and above the vector width (1, 3, 17, 127 and
// powers of two), ranks 2 to 5.
const std::vector<std::vector<std::int64_t>>& grid_dims() {
  static const std::vector<std::vector<std::int64_t>> dims = {
      {2, 1},          {3, 3},        {17, 17},      {127, 3},        {5, 127},          {2, 3, 1},
      {1, 3, 17},      {3, 17, 127},  {2, 1, 3, 5},  {3, 3, 17, 1},   {2, 17, 7, 9},     {1, 127, 3, 3},
      {17, 3, 1, 127}, {4, 16, 8, 8}, {2, 64, 5, 5}, {2, 3, 2, 3, 5}, {1, 17, 3, 1, 17}, {3, 32, 2, 2, 4}};
  return dims;
}

std::string case_name(const TensorDesc& d, const Flags& f) {
  return d.str() + (f.affine ? " affine" : "") + (f.running ? " running" : "") +
         (f.cumulative ? " cumulative" : "") + (f.inplace ? " inplace" : "");
}

// Three training steps, then inference with the resulting statistics, then
// backward of the last step in both statistics modes.
void run_case(const TensorDesc& desc, const Flags& f, std::uint64_t seed) {
  SCOPED_TRACE(case_name(desc, f));
  const auto C = static_cast<std::size_t>(desc.channels());
  const double eps = 1e-3;
  const std::optional<double> momentum = f.cumulative ? std::nullopt : std::optional<double>(0.3);
  std::vector<float> gamma = uniform(C, seed + 1, 0.5f, 1.5f), beta = uniform(C, seed + 2, -1.0f, 1.0f);
  const float* g = f.affine ? gamma.data() : nullptr;
  const float* b = f.affine ? beta.data() : nullptr;
  std::vector<float> rmean = uniform(C, seed + 3, -0.5f, 0.5f), rvar = uniform(C, seed + 4, 0.5f, 2.0f);
  std::vector<double> want_rmean(rmean.begin(), rmean.end()), want_rvar(rvar.begin(), rvar.end());
  std::int64_t tracked = 5;
  std::vector<float> save_mean(C), save_invstd(C);
  const double count = static_cast<double>(desc.batch() * desc.spatial());

  Buffer src(desc), dst(desc);
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    fill_normal(src, seed * 31 + static_cast<std::uint64_t>(step), 0.5 * step, 1.0 + step);
    const Buffer original = src;
    const TrainingExpectation e = expect_training(src, g, b, eps);
    Buffer& out = f.inplace ? src : dst;
    RunningStats running;
    if (f.running) running = {rmean.data(), rvar.data(), &tracked};
    batch_norm_forward_training(desc, src.data(), desc, out.data(), g, b, save_mean.data(),
                                save_invstd.data(), running, BatchNormConfig{eps, momentum});
    ASSERT_TRUE(check_output(out, e.dst, "dst"));
    std::vector<double> want_invstd(C);
    for (std::size_t c = 0; c < C; ++c) want_invstd[c] = 1.0 / std::sqrt(e.var[c] + eps);
    ASSERT_TRUE(check_mean(save_mean.data(), e));
    ASSERT_TRUE(check_channels(save_invstd.data(), want_invstd, 2e-6, 0.0, "save_invstd"));
    if (f.running) {
      // The running-average rule of DESIGN.md section 2, written out here.
      const double w = momentum ? *momentum : 1.0 / static_cast<double>(tracked);
      for (std::size_t c = 0; c < C; ++c) {
        want_rmean[c] = (1 - w) * want_rmean[c] + w * e.mean[c];
        want_rvar[c] = (1 - w) * want_rvar[c] + w * e.var[c] * count / (count - 1);
      }
      ASSERT_EQ(tracked, 6 + step);
      ASSERT_TRUE(check_channels(rmean.data(), want_rmean, 2e-6, 1e-6, "running_mean"));
      ASSERT_TRUE(check_channels(rvar.data(), want_rvar, 2e-6, 1e-6, "running_var"));
    }
    if (f.inplace) src = original;  // keep the forward input for backward
  }

  // Inference with the running statistics (or the last batch's).
  {
    std::vector<double> mean_d(C), var_d(C);
    for (std::size_t c = 0; c < C; ++c) {
      mean_d[c] = rmean[c];
      var_d[c] = rvar[c];
    }
    std::vector<double> want(static_cast<std::size_t>(desc.elements()));
    bref::normalize(ref_shape(desc), src.data(), mean_d.data(), var_d.data(), eps, g, b, want.data());
    Buffer in = src;
    Buffer& out = f.inplace ? in : dst;
    batch_norm_forward_inference(desc, in.data(), desc, out.data(), g, b, rmean.data(), rvar.data(), eps);
    ASSERT_TRUE(check_output(out, want, "inference dst"));
  }

  // Backward of the last training step, and with fixed statistics.
  Buffer diff_dst(desc);
  fill_normal(diff_dst, seed + 99);
  for (BackwardStats stats : {BackwardStats::batch, BackwardStats::fixed}) {
    SCOPED_TRACE(stats == BackwardStats::batch ? "backward batch" : "backward fixed");
    const BackwardExpectation e = expect_backward(src, diff_dst, g, save_mean.data(), save_invstd.data(),
                                                  stats == BackwardStats::batch);
    Buffer dy = diff_dst, dx(desc);
    Buffer& out = f.inplace ? dy : dx;  // diff_src aliasing diff_dst
    std::vector<float> dgamma(C, -7.0f), dbeta(C, -7.0f);
    batch_norm_backward(desc, src.data(), desc, dy.data(), desc, out.data(), g, save_mean.data(),
                        save_invstd.data(), dgamma.data(), dbeta.data(), stats);
    ASSERT_TRUE(check_backward(e, &out, dgamma.data(), dbeta.data()));
  }
}

class BatchNormGrid : public ::testing::TestWithParam<std::tuple<DType, Layout>> {};

TEST_P(BatchNormGrid, MatchesReference) {
  const auto [dtype, layout] = GetParam();
  for_each_isa([&](const std::string&) {
    const auto& dims = grid_dims();
    for (std::size_t i = 0; i < dims.size(); ++i) {
      // Walk the flag combinations along the grid so every flag value meets
      // every dtype and layout several times.
      const std::size_t k = i + static_cast<std::size_t>(dtype) * 5 + static_cast<std::size_t>(layout) * 3;
      const Flags f{(k & 1) != 0, (k & 2) != 0, (k & 4) != 0, (k & 8) != 0};
      run_case(TensorDesc(dtype, layout, std::span<const std::int64_t>(dims[i])), f, 1000 + i);
      if (HasFatalFailure()) return;
    }
  });
}

INSTANTIATE_TEST_SUITE_P(AllTypes, BatchNormGrid,
                         ::testing::Combine(::testing::Values(DType::f32, DType::bf16, DType::f16),
                                            ::testing::Values(Layout::channels_first, Layout::channels_last)),
                         [](const auto& info) {
                           return std::string(to_string(std::get<0>(info.param))) + "_" +
                                  std::string(to_string(std::get<1>(info.param)));
                         });

// Every flag combination on two shapes, so no combination goes untested.
TEST(BatchNormGridFlags, EveryCombination) {
  for (int bits = 0; bits < 16; ++bits) {
    const Flags f{(bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0, (bits & 8) != 0};
    run_case(TensorDesc(DType::f32, Layout::channels_first, {3, 5, 7}), f,
             50 + static_cast<std::uint64_t>(bits));
    run_case(TensorDesc(DType::bf16, Layout::channels_last, {3, 5, 7}), f,
             70 + static_cast<std::uint64_t>(bits));
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace bnorm::test

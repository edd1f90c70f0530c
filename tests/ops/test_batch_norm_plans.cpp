// Every thread plan of the batch-norm ops (channel slabs, split channels with
// barrier groups, row blocks with statistics tiles, streaming stores) against
// the reference, on small shapes that a forced plan makes take that path.

#include <gtest/gtest.h>

#include <vector>

#include "common/bn_oracle.hpp"
#include "common/test_util.hpp"
#include "ops/batch_norm/plan.hpp"
#include "ops/parallel.hpp"

namespace bnorm::test {
namespace {

namespace obn = ops::batch_norm;

std::vector<obn::Plan> plans_for(const obn::Problem& p) {
  std::vector<obn::Plan> plans;
  for (bool stream : {false, true}) {
    for (int workers : {1, 2, 3, 5}) {
      if (p.rows_view()) {
        for (std::int64_t tile : {1, 2, 7, 1 << 20})
          plans.push_back({obn::Strategy::rows, workers, 1, tile, stream});
      }
      if (p.layout == Layout::channels_first) {
        for (std::int64_t block : {1, 2, 3})
          for (bool pipeline : {false, true})
            plans.push_back({obn::Strategy::channel_slabs, workers, block, 1, stream, pipeline});
        plans.push_back({obn::Strategy::split_channels, workers, 1, 1, stream});
        plans.push_back({obn::Strategy::planes, workers, 1, 1, stream});
      }
    }
  }
  return plans;
}

std::string plan_name(const obn::Plan& plan) {
  const char* names[] = {"channel_slabs", "split_channels", "planes", "rows"};
  return std::string(names[static_cast<int>(plan.strategy)]) + " workers=" + std::to_string(plan.workers) +
         " block=" + std::to_string(plan.block_channels) + " tile=" + std::to_string(plan.tile_rows) +
         (plan.stream ? " stream" : "") + (plan.pipeline ? " pipeline" : "");
}

void check_plans(const TensorDesc& desc) {
  SCOPED_TRACE(desc.str());
  const obn::Problem p = obn::Problem::of(desc);
  const auto C = static_cast<std::size_t>(desc.channels());
  const double eps = 1e-4;
  const std::vector<float> gamma = uniform(C, 1, 0.5f, 2.0f), beta = uniform(C, 2, -1.0f, 1.0f);
  Buffer src(desc), diff_dst(desc);
  fill_normal(src, 3, 2.0, 3.0);
  fill_normal(diff_dst, 4);
  const TrainingExpectation e = expect_training(src, gamma.data(), beta.data(), eps);
  const double count = static_cast<double>(p.count());

  for (const obn::Plan& plan : plans_for(p)) {
    SCOPED_TRACE(plan_name(plan));
    Buffer dst(desc);
    std::vector<float> save_mean(C), save_invstd(C), rmean(C, 0.25f), rvar(C, 2.0f);
    obn::forward_training(p, plan, src.data(), dst.data(), gamma.data(), beta.data(), save_mean.data(),
                          save_invstd.data(), rmean.data(), rvar.data(), eps, 0.5);
    ASSERT_TRUE(check_output(dst, e.dst, "training dst"));
    std::vector<double> want_rmean(C), want_rvar(C);
    for (std::size_t c = 0; c < C; ++c) {
      want_rmean[c] = 0.5 * 0.25 + 0.5 * e.mean[c];
      want_rvar[c] = 0.5 * 2.0 + 0.5 * e.var[c] * count / (count - 1);
    }
    ASSERT_TRUE(check_mean(save_mean.data(), e));
    ASSERT_TRUE(check_channels(rmean.data(), want_rmean, 2e-6, 1e-6, "running_mean"));
    ASSERT_TRUE(check_channels(rvar.data(), want_rvar, 2e-6, 1e-6, "running_var"));

    Buffer inf(desc);
    obn::forward_inference(p, plan, src.data(), inf.data(), gamma.data(), beta.data(), rmean.data(),
                           rvar.data(), eps);
    std::vector<double> mean_d(rmean.begin(), rmean.end()), var_d(rvar.begin(), rvar.end());
    std::vector<double> want(static_cast<std::size_t>(desc.elements()));
    bref::normalize(ref_shape(desc), src.data(), mean_d.data(), var_d.data(), eps, gamma.data(), beta.data(),
                    want.data());
    ASSERT_TRUE(check_output(inf, want, "inference dst"));

    for (BackwardStats stats : {BackwardStats::batch, BackwardStats::fixed}) {
      const BackwardExpectation be = expect_backward(src, diff_dst, gamma.data(), save_mean.data(),
                                                     save_invstd.data(), stats == BackwardStats::batch);
      Buffer dx(desc);
      std::vector<float> dgamma(C), dbeta(C);
      obn::backward(p, plan, src.data(), diff_dst.data(), dx.data(), gamma.data(), save_mean.data(),
                    save_invstd.data(), dgamma.data(), dbeta.data(), stats);
      ASSERT_TRUE(check_backward(be, &dx, dgamma.data(), dbeta.data()));
      // Each output is optional on its own.
      Buffer dx_only(desc);
      obn::backward(p, plan, src.data(), diff_dst.data(), dx_only.data(), gamma.data(), save_mean.data(),
                    save_invstd.data(), nullptr, nullptr, stats);
      ASSERT_TRUE(check_backward(be, &dx_only, nullptr, nullptr));
      std::vector<float> dbeta_only(C);
      obn::backward(p, plan, src.data(), diff_dst.data(), nullptr, gamma.data(), save_mean.data(),
                    save_invstd.data(), nullptr, dbeta_only.data(), stats);
      ASSERT_TRUE(check_backward(be, nullptr, nullptr, dbeta_only.data()));
    }
  }
}

TEST(BatchNormPlans, ChannelsFirst) {
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    check_plans(TensorDesc(dt, Layout::channels_first, {3, 5, 37}));     // runs shorter than the split
    check_plans(TensorDesc(dt, Layout::channels_first, {2, 3, 4, 33}));  // C not divisible by workers
    check_plans(TensorDesc(dt, Layout::channels_first, {1, 2, 129}));    // N = 1: split inside a run
    check_plans(TensorDesc(dt, Layout::channels_first, {7, 4}));         // S = 1
    if (HasFatalFailure()) return;
  }
}

TEST(BatchNormPlans, ChannelsLast) {
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    check_plans(TensorDesc(dt, Layout::channels_last, {3, 5, 37}));
    check_plans(TensorDesc(dt, Layout::channels_last, {2, 67, 3, 5}));  // C just above the cyclic pad
    check_plans(TensorDesc(dt, Layout::channels_last, {2, 1, 50}));     // C = 1
    check_plans(TensorDesc(dt, Layout::channels_last, {2, 3}));         // fewer rows than workers
    if (HasFatalFailure()) return;
  }
}

TEST(BatchNormPlans, EveryIsa) {
  for_each_isa([](const std::string&) {
    check_plans(TensorDesc(DType::bf16, Layout::channels_first, {2, 3, 4, 33}));
    check_plans(TensorDesc(DType::f16, Layout::channels_last, {2, 19, 3, 5}));
  });
}

// The pipelined walk takes the next block's sums in vectors from each plane's
// start, not in the chunks of the output walk (which follow the output's
// alignment): the statistics and gradients must not depend on where dst or
// diff_src lie.
TEST(BatchNormPlans, PipelineResultsIndependentOfOutputAddress) {
  for (DType dt : {DType::f32, DType::bf16}) {
    const TensorDesc desc(dt, Layout::channels_first, {3, 4, 45});
    SCOPED_TRACE(desc.str());
    const obn::Problem p = obn::Problem::of(desc);
    const auto C = static_cast<std::size_t>(desc.channels());
    const std::size_t esize = size_of(dt), bytes = static_cast<std::size_t>(desc.bytes());
    Buffer src(desc), dy(desc);
    fill_normal(src, 11, 1.0, 2.0);
    fill_normal(dy, 12);
    const obn::Plan plan{obn::Strategy::channel_slabs, 1, 1, 1, true, true};
    std::vector<std::byte> out(bytes + 64 + esize);
    std::vector<std::vector<float>> means, grads;
    for (std::size_t shift : {std::size_t{0}, esize, 3 * esize}) {
      // Start the output `shift` bytes past a 64-byte boundary.
      void* dst = out.data() + bytes_to_line(out.data()) + shift;
      std::vector<float> mean(C), invstd(C), dg(C), db(C);
      obn::forward_training(p, plan, src.data(), dst, nullptr, nullptr, mean.data(), invstd.data(), nullptr,
                            nullptr, 1e-5, 0.0);
      obn::backward(p, plan, src.data(), dy.data(), dst, nullptr, mean.data(), invstd.data(), dg.data(),
                    db.data(), BackwardStats::batch);
      means.push_back(mean);
      grads.push_back(dg);
    }
    EXPECT_EQ(means[0], means[1]);
    EXPECT_EQ(means[0], means[2]);
    EXPECT_EQ(grads[0], grads[1]);
    EXPECT_EQ(grads[0], grads[2]);
  }
}

TEST(BatchNormPlans, PublicPlanChoice) {
  using obn::Pass;
  using obn::Strategy;
  // Channels-last always goes by rows, on up to `threads` workers.
  const obn::Problem cl{DType::f32, Layout::channels_last, 64, 256, 56 * 56};
  EXPECT_EQ(obn::plan_for(cl, 2, Pass::training).strategy, Strategy::rows);
  EXPECT_EQ(obn::plan_for(cl, 2, Pass::training).workers, 2);
  // Three channels on two workers: share every channel.
  const obn::Problem uneven{DType::f32, Layout::channels_first, 64, 3, 224 * 224};
  EXPECT_EQ(obn::plan_for(uneven, 2, Pass::training).strategy, Strategy::split_channels);
  // Channels-first training and backward pipeline their blocks when planes
  // are big (12 KiB here), not for small planes (784 B) nor in inference.
  // Batches of as many such planes as fill the re-read budget (83 with the
  // 1 MiB of a 2 MiB L2 or less), so that a channel's x fits the budget for
  // training but its x and dy do not for backward.
  const std::int64_t n_fit = static_cast<std::int64_t>(obn::reread_budget_bytes() / (56 * 56 * 4));
  const obn::Problem big{DType::f32, Layout::channels_first, n_fit, 256, 56 * 56};
  EXPECT_TRUE(obn::plan_for(big, 2, Pass::training).pipeline);
  // (f32 backward shares each channel: x and dy of one exceed the budget.)
  EXPECT_EQ(obn::plan_for(big, 2, Pass::backward).strategy, Strategy::split_channels);
  EXPECT_FALSE(obn::plan_for(big, 2, Pass::backward).pipeline);
  const obn::Problem big16{DType::bf16, Layout::channels_first, n_fit, 256, 56 * 56};
  EXPECT_TRUE(obn::plan_for(big16, 2, Pass::backward).pipeline);
  EXPECT_FALSE(obn::plan_for(big, 2, Pass::inference).pipeline);
  EXPECT_FALSE(
      obn::plan_for(obn::Problem{DType::f32, Layout::channels_first, 256, 1024, 14 * 14}, 2, Pass::training)
          .pipeline);
  // Small slabs, many channels: own them.
  const obn::Problem small{DType::f32, Layout::channels_first, 256, 1024, 14 * 14};
  EXPECT_EQ(obn::plan_for(small, 2, Pass::training).strategy, Strategy::channel_slabs);
  // Backward with planes under 1 KiB sums them in memory order; 3 KiB
  // planes stay in channel blocks.
  EXPECT_EQ(obn::plan_for(small, 2, Pass::backward).strategy, Strategy::planes);
  EXPECT_EQ(obn::plan_for(small, 1, Pass::backward).strategy, Strategy::planes);
  const obn::Problem mid_planes{DType::f32, Layout::channels_first, 32, 64, 28 * 28};
  EXPECT_EQ(obn::plan_for(mid_planes, 2, Pass::backward).strategy, Strategy::channel_slabs);
  // A channel that fits the budget for training (x) but not for backward (x and dy).
  const std::int64_t count = static_cast<std::int64_t>(3 * obn::reread_budget_bytes() / 4 / 4);
  const obn::Problem mid{DType::f32, Layout::channels_first, 1, 64, count};
  EXPECT_EQ(obn::plan_for(mid, 2, Pass::training).strategy, Strategy::channel_slabs);
  EXPECT_EQ(obn::plan_for(mid, 2, Pass::backward).strategy, Strategy::split_channels);
  // Tiny problems stay on one thread.
  const obn::Problem tiny{DType::f32, Layout::channels_first, 1, 64, 1};
  EXPECT_EQ(obn::plan_for(tiny, 2, Pass::training).workers, 1);
}

}  // namespace
}  // namespace bnorm::test

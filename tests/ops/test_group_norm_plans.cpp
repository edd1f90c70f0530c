// Every thread plan of the group-norm ops (owned pipelined blocks, shared
// blocks with a barrier per block, owned samples and shared samples in row
// tiles, streaming stores) against the reference, on small shapes that a
// forced plan makes take that path; with the running statistics of
// instance norm (G = C) updated by each plan.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/group_norm_oracle.hpp"
#include "common/test_util.hpp"
#include "kernels/instance_norm/ref.hpp"
#include "ops/group_norm/plan.hpp"
#include "ops/parallel.hpp"

namespace bnorm::test {
namespace {

namespace ogn = ops::group_norm;

std::vector<ogn::Plan> plans_for(const ogn::Problem& p) {
  std::vector<ogn::Plan> plans;
  for (bool stream : {false, true}) {
    for (int workers : {1, 2, 3, 5}) {
      if (p.rows_view()) {
        for (std::int64_t tile : {1, 2, 7, 1 << 20}) {
          plans.push_back({ogn::Strategy::samples, workers, tile, stream});
          plans.push_back({ogn::Strategy::split_samples, workers, tile, stream});
        }
        plans.push_back({ogn::Strategy::samples, workers, 7, stream, 1, true});
      } else {
        for (std::int64_t unit : {1, 2, 3, 1 << 20})
          for (bool pipelined :
               {false, true})  // forward: planes walked with the next sums, or blocks summed whole
            plans.push_back({ogn::Strategy::blocks, workers, 1, stream, unit, pipelined});
        plans.push_back({ogn::Strategy::split_blocks, workers, 1, stream});
      }
    }
  }
  return plans;
}

std::string plan_name(const ogn::Plan& plan) {
  const char* names[] = {"blocks", "split_blocks", "samples", "split_samples"};
  return std::string(names[static_cast<int>(plan.strategy)]) + " workers=" + std::to_string(plan.workers) +
         " tile=" + std::to_string(plan.tile_rows) + " unit=" + std::to_string(plan.unit_blocks) +
         (plan.stream ? " stream" : "") + (plan.pipelined ? " pipelined" : "");
}

void check_plans(const TensorDesc& desc, std::int64_t groups) {
  SCOPED_TRACE(desc.str() + " G=" + std::to_string(groups));
  const ogn::Problem p = ogn::Problem::of(desc, groups);
  const auto C = static_cast<std::size_t>(desc.channels()), G = static_cast<std::size_t>(groups);
  const auto stats = static_cast<std::size_t>(desc.batch()) * G;
  const double eps = 1e-4, momentum = 0.3;
  const std::vector<float> gamma = uniform(C, 1, 0.5f, 2.0f), beta = uniform(C, 2, -1.0f, 1.0f);
  Buffer src(desc), diff_dst(desc);
  fill_normal(src, 3, 2.0, 3.0);
  fill_normal(diff_dst, 4);
  const GroupExpectation e = expect_group_norm(src, groups, gamma.data(), beta.data(), eps);
  // Running statistics of the groups (instance norm's rule), when S > 1 and G = C.
  const bool running = groups == desc.channels() && p.group_count() > 1;
  std::vector<double> want_rmean(G, 0.25), want_rvar(G, 2.0);
  if (running)
    kernels::instance_norm::ref::update_running(group_shape(desc, groups), e.mean.data(), e.var.data(), momentum,
                                                want_rmean.data(), want_rvar.data());

  for (const ogn::Plan& plan : plans_for(p)) {
    SCOPED_TRACE(plan_name(plan));
    Buffer dst(desc);
    std::vector<float> save_mean(stats), save_invstd(stats), rmean(G, 0.25f), rvar(G, 2.0f);
    const ogn::GroupRunning r{rmean.data(), rvar.data(), momentum};
    ogn::forward(p, plan, src.data(), dst.data(), gamma.data(), beta.data(), save_mean.data(), save_invstd.data(),
                 eps, running ? &r : nullptr);
    ASSERT_TRUE(check_output(dst, e.dst, "dst"));
    ASSERT_TRUE(check_group_stats(save_mean.data(), save_invstd.data(), e, eps));
    if (running) {
      ASSERT_TRUE(check_channels(rmean.data(), want_rmean, 2e-6, 1e-6, "running_mean"));
      ASSERT_TRUE(check_channels(rvar.data(), want_rvar, 2e-6, 1e-6, "running_var"));
    }
    const GroupBackwardExpectation be =
        expect_group_backward(src, diff_dst, groups, gamma.data(), save_mean.data(), save_invstd.data());
    Buffer dx(desc);
    std::vector<float> dgamma(C, -7.0f), dbeta(C, -7.0f);
    ogn::backward(p, plan, src.data(), diff_dst.data(), dx.data(), gamma.data(), save_mean.data(),
                  save_invstd.data(), dgamma.data(), dbeta.data());
    ASSERT_TRUE(check_group_backward(be, &dx, dgamma.data(), dbeta.data()));
    // Parameter gradients alone (no elementwise pass), then diff_src alone.
    std::vector<float> dbeta2(C, -7.0f);
    ogn::backward(p, plan, src.data(), diff_dst.data(), nullptr, gamma.data(), save_mean.data(),
                  save_invstd.data(), nullptr, dbeta2.data());
    ASSERT_TRUE(check_group_backward(be, nullptr, nullptr, dbeta2.data()));
    Buffer dx2(desc);
    ogn::backward(p, plan, src.data(), diff_dst.data(), dx2.data(), nullptr, save_mean.data(), save_invstd.data(),
                  nullptr, nullptr);
    const GroupBackwardExpectation be1 =
        expect_group_backward(src, diff_dst, groups, nullptr, save_mean.data(), save_invstd.data());
    ASSERT_TRUE(check_group_backward(be1, &dx2, nullptr, nullptr));
  }
}

TEST(GroupNormPlans, ChannelsFirstBlocks) {
  for (DType dt : {DType::f32, DType::bf16})
    for (const auto& [dims, groups] : std::vector<std::pair<std::vector<std::int64_t>, std::int64_t>>{
             {{3, 6, 17}, 3}, {{2, 4, 5, 7}, 4}, {{1, 8, 33}, 2}, {{5, 3, 2, 3, 3}, 1}, {{4, 6, 3}, 6}}) {
      check_plans(TensorDesc(dt, Layout::channels_first, std::span<const std::int64_t>(dims)), groups);
      if (HasFatalFailure()) return;
    }
}

TEST(GroupNormPlans, Rows) {
  for (DType dt : {DType::f32, DType::f16})
    for (const auto& [dims, groups, layout] :
         std::vector<std::tuple<std::vector<std::int64_t>, std::int64_t, Layout>>{
             {{3, 6, 17}, 3, Layout::channels_last},
             {{2, 4, 5, 7}, 4, Layout::channels_last},
             {{1, 24, 3, 3}, 6, Layout::channels_last},
             {{5, 3, 2, 3, 3}, 1, Layout::channels_last},
             {{7, 6, 3}, 6, Layout::channels_last},
             {{9, 12}, 4, Layout::channels_first},
             {{9, 12, 1, 1}, 12, Layout::channels_first}}) {
      check_plans(TensorDesc(dt, layout, std::span<const std::int64_t>(dims)), groups);
      if (HasFatalFailure()) return;
    }
}

// Rows whose channels fill whole vectors (C = 16, 32, 48: every
// instruction set's f32 and 16-bit vectors, and a row that ends in a single
// vector of AVX-512 f32), so that pipelined owned samples walk each
// sample's output with the next sample's sums, on every instruction set; 7
// samples give workers several each.
TEST(GroupNormPlans, PipelinedRows) {
  for_each_isa([&](const std::string&) {
    for (DType dt : {DType::f32, DType::bf16, DType::f16})
      for (const auto& [dims, groups] : std::vector<std::pair<std::vector<std::int64_t>, std::int64_t>>{
               {{7, 32, 3, 5}, 4}, {{6, 48, 2, 5}, 3}, {{7, 16, 4, 4}, 16}}) {
        check_plans(TensorDesc(dt, Layout::channels_last, std::span<const std::int64_t>(dims)), groups);
        if (HasFatalFailure()) return;
      }
  });
}

// The plans the public functions pick for large problems, on 2 threads.
TEST(GroupNormPlans, Choices) {
  auto plan = [](Layout layout, const std::vector<std::int64_t>& dims, std::int64_t groups, ogn::Pass pass) {
    return ogn::plan_for(ogn::Problem::of(TensorDesc(DType::f32, layout, std::span<const std::int64_t>(dims)), groups),
                         2, pass);
  };
  const auto f = ogn::Pass::forward;
  EXPECT_EQ(plan(Layout::channels_first, {64, 256, 56, 56}, 32, f).strategy, ogn::Strategy::blocks);
  EXPECT_EQ(plan(Layout::channels_first, {64, 256, 56, 56}, 256, f).strategy, ogn::Strategy::blocks);
  EXPECT_EQ(plan(Layout::channels_first, {1, 256, 56, 56}, 1, f).strategy, ogn::Strategy::split_blocks);
  EXPECT_EQ(plan(Layout::channels_first, {3, 4, 64, 64}, 1, f).strategy, ogn::Strategy::split_blocks);
  EXPECT_TRUE(plan(Layout::channels_first, {64, 256, 56, 56}, 32, f).stream);
  // Channels-first planes under 2 KiB store their output plainly, however
  // large the tensor; channels-last rows stream whatever C.
  EXPECT_FALSE(plan(Layout::channels_first, {256, 1024, 14, 14}, 32, f).stream);
  EXPECT_FALSE(plan(Layout::channels_first, {512, 512, 7, 7}, 512, ogn::Pass::backward).stream);
  EXPECT_TRUE(plan(Layout::channels_first, {128, 512, 24, 24}, 32, f).stream);
  EXPECT_TRUE(plan(Layout::channels_last, {256, 1024, 14, 14}, 32, f).stream);
  // Steps of about 8 KiB: single blocks of 56x56 planes, several of 12x16 ones.
  EXPECT_EQ(plan(Layout::channels_first, {64, 256, 56, 56}, 256, f).unit_blocks, 1);
  EXPECT_EQ(plan(Layout::channels_first, {256, 1024, 12, 16}, 1024, f).unit_blocks, 10);
  EXPECT_EQ(plan(Layout::channels_first, {256, 1024, 12, 16}, 1024, ogn::Pass::backward).unit_blocks, 10);
  EXPECT_EQ(plan(Layout::channels_first, {1, 4, 8}, 2, f).workers, 1);
  const ogn::Strategy rows = plan(Layout::channels_last, {64, 256, 56, 56}, 32, f).strategy;
  EXPECT_TRUE(rows == ogn::Strategy::samples || rows == ogn::Strategy::split_samples);
  EXPECT_EQ(plan(Layout::channels_last, {1, 64, 32, 32}, 8, f).strategy, ogn::Strategy::split_samples);
  EXPECT_EQ(plan(Layout::channels_last, {64, 64, 8, 8}, 8, f).strategy, ogn::Strategy::samples);
  // Channels-first forward takes the moments of whole blocks of planes of
  // up to 400 values instead of walking each plane with the next step's
  // sums, whatever the number of planes per block or the dtype.
  EXPECT_TRUE(plan(Layout::channels_first, {64, 256, 56, 56}, 32, f).pipelined);
  EXPECT_TRUE(plan(Layout::channels_first, {64, 256, 401}, 256, f).pipelined);
  EXPECT_FALSE(plan(Layout::channels_first, {64, 512, 20, 20}, 32, f).pipelined);
  EXPECT_FALSE(plan(Layout::channels_first, {64, 512, 7, 7}, 512, f).pipelined) << "instance norm";
  EXPECT_FALSE(plan(Layout::channels_first, {64, 512, 7, 7}, 256, f).pipelined) << "2 planes per block";
  // Samples that fit a core's L2 take turns; larger ones are pipelined,
  // backward only up to 4 L2 of x and dy (C = 256 f32: 1 KiB of x per
  // position).
  const auto l2_positions = static_cast<std::int64_t>(ops::l2_cache_bytes() / 1024);
  const auto b = ogn::Pass::backward;
  EXPECT_FALSE(plan(Layout::channels_last, {64, 64, 8, 8}, 8, f).pipelined);
  EXPECT_FALSE(plan(Layout::channels_last, {64, 64, 8, 8}, 8, b).pipelined);
  EXPECT_TRUE(plan(Layout::channels_last, {4, 256, 2 * l2_positions, 1}, 32, f).pipelined);
  EXPECT_TRUE(plan(Layout::channels_last, {4, 256, 2 * l2_positions, 1}, 32, b).pipelined)
      << "x and dy: 4 L2";
  EXPECT_TRUE(plan(Layout::channels_last, {4, 256, 2 * l2_positions + 1, 1}, 32, f).pipelined);
  EXPECT_FALSE(plan(Layout::channels_last, {4, 256, 2 * l2_positions + 1, 1}, 32, b).pipelined);
}

}  // namespace
}  // namespace bnorm::test

// Every thread plan of layer norm and RMS norm (workers, rows per block,
// streaming stores) on shapes whose rows do not divide evenly among the
// workers, against the double reference; and the default plans' choices.

#include <gtest/gtest.h>
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "common/ln_oracle.hpp"
#include "common/test_util.hpp"
#include "ops/layer_norm/plan.hpp"

namespace bnorm::test {
namespace {

namespace oln = ops::layer_norm;

std::vector<oln::Plan> plans() {
  std::vector<oln::Plan> out;
  for (int workers : {1, 2, 3, 5})
    for (std::int64_t block : {1, 2, 7, 1000})
      for (bool stream : {false, true}) {
        out.push_back({workers, block, stream});
        if (block == 2) out.push_back({workers, block, stream, true});
      }
  return out;
}

std::string plan_name(const oln::Plan& p) {
  return "workers " + std::to_string(p.workers) + " block " + std::to_string(p.block_rows) +
         (p.stream ? " stream" : "") + (p.pipelined ? " pipelined" : "");
}

TEST(LayerNormPlans, EveryPlanMatchesReference) {
  for (DType dt : {DType::f32, DType::bf16}) {
    for (const auto& [rows, len] : std::vector<std::pair<std::int64_t, std::int64_t>>{
             {11, 1}, {11, 17}, {7, 300}, {40, 33}, {3, 2000}}) {
      const TensorDesc d(dt, Layout::channels_first, {rows, len});
      const oln::Problem p = oln::Problem::of(d, 1);
      Buffer src(d), dy(d);
      fill_normal(src, static_cast<std::uint64_t>(rows * len), 5.0, 0.5);
      fill_normal(dy, 2);
      const std::vector<float> gamma = uniform(static_cast<std::size_t>(len), 3, 0.5f, 1.5f),
                               beta = uniform(static_cast<std::size_t>(len), 4, -1.0f, 1.0f);
      const LayerNormExpectation e = expect_layer_norm(src, 1, gamma.data(), beta.data(), 1e-5);
      const RmsNormExpectation re = expect_rms_norm(src, 1, gamma.data(), 1e-5);
      for (const oln::Plan& plan : plans()) {
        SCOPED_TRACE(d.str() + " " + plan_name(plan));
        Buffer y(d), dx(d);
        std::vector<float> mean(static_cast<std::size_t>(rows)), invstd(mean.size()),
            dg(static_cast<std::size_t>(len)), db(dg.size());
        oln::forward(p, plan, oln::Kind::layer, src.data(), y.data(), gamma.data(), beta.data(), mean.data(),
                     invstd.data(), 1e-5);
        ASSERT_TRUE(check_values(y, e.dst, "layer dst"));
        ASSERT_TRUE(check_each(mean.data(), e.mean, e.mean_tol, "mean"));
        const NormBackwardExpectation be =
            expect_layer_norm_backward(src, dy, 1, gamma.data(), mean.data(), invstd.data());
        oln::backward(p, plan, oln::Kind::layer, src.data(), dy.data(), dx.data(), gamma.data(), mean.data(),
                      invstd.data(), dg.data(), db.data());
        ASSERT_TRUE(check_diff_src(dx, be, "layer diff_src"));
        ASSERT_TRUE(check_each(dg.data(), be.diff_gamma, be.gamma_tol, "layer diff_gamma"));
        ASSERT_TRUE(check_each(db.data(), be.diff_beta, be.beta_tol, "layer diff_beta"));

        oln::forward(p, plan, oln::Kind::rms, src.data(), y.data(), gamma.data(), nullptr, nullptr,
                     invstd.data(), 1e-5);
        ASSERT_TRUE(check_values(y, re.dst, "rms dst"));
        const NormBackwardExpectation rbe = expect_rms_norm_backward(src, dy, 1, gamma.data(), invstd.data());
        oln::backward(p, plan, oln::Kind::rms, src.data(), dy.data(), dx.data(), gamma.data(), nullptr,
                      invstd.data(), dg.data(), nullptr);
        ASSERT_TRUE(check_diff_src(dx, rbe, "rms diff_src"));
        ASSERT_TRUE(check_each(dg.data(), rbe.diff_gamma, rbe.gamma_tol, "rms diff_gamma"));
      }
    }
  }
}

// Results do not depend on the team size: a plan's workers run on however
// many threads OpenMP gives (here one thread runs them all in turn).
TEST(LayerNormPlans, SameResultsOnFewerThreads) {
  const TensorDesc d(DType::f32, Layout::channels_first, {23, 129});
  const oln::Problem p = oln::Problem::of(d, 1);
  Buffer src(d), dy(d), y1(d), y2(d), dx1(d), dx2(d);
  fill_normal(src, 1);
  fill_normal(dy, 2);
  std::vector<float> m1(23), i1(23), m2(23), i2(23), g1(129), g2(129), b1(129), b2(129);
  const oln::Plan plan{3, 2, false};
  oln::forward(p, plan, oln::Kind::layer, src.data(), y1.data(), nullptr, nullptr, m1.data(), i1.data(), 1e-5);
  oln::backward(p, plan, oln::Kind::layer, src.data(), dy.data(), dx1.data(), nullptr, m1.data(), i1.data(),
                g1.data(), b1.data());
  const int levels = omp_get_max_active_levels();
  omp_set_max_active_levels(1);
#pragma omp parallel num_threads(2)
  {
#pragma omp single
    {
      oln::forward(p, plan, oln::Kind::layer, src.data(), y2.data(), nullptr, nullptr, m2.data(), i2.data(),
                   1e-5);
      oln::backward(p, plan, oln::Kind::layer, src.data(), dy.data(), dx2.data(), nullptr, m2.data(),
                    i2.data(), g2.data(), b2.data());
    }
  }
  omp_set_max_active_levels(levels);
  EXPECT_EQ(y1.bytes, y2.bytes);
  EXPECT_EQ(dx1.bytes, dx2.bytes);
  EXPECT_EQ(g1, g2);
  EXPECT_EQ(b1, b2);
}

// A row's dx does not depend on the plan: pipelined blocks take each row's
// sums beside the previous block's dx with the bits of the unpipelined sums,
// whichever rows start a worker's range, with dx apart or in place over dy
// or src. The parameter gradients of a pipelined plan are those of the same
// plan unpipelined.
TEST(LayerNormPlans, PipelinedGivesTheSameBits) {
  for (DType dt : {DType::f32, DType::bf16})
    for (const auto& [rows, len] : std::vector<std::pair<std::int64_t, std::int64_t>>{
             {9, 1024}, {14, 300}, {40, 33}, {7, 64}, {4, 2000}})
      for (oln::Kind kind : {oln::Kind::layer, oln::Kind::rms})
        for (int variant = 0; variant < 4; ++variant) {
          // variant: bit 0 gamma, bit 1 parameter gradients.
          const bool with_gamma = variant & 1, params = variant & 2;
          const TensorDesc d(dt, Layout::channels_first, {rows, len});
          const oln::Problem p = oln::Problem::of(d, 1);
          Buffer src(d), dy(d);
          fill_normal(src, static_cast<std::uint64_t>(rows + len), 3.0, 2.0);
          fill_normal(dy, 5);
          const std::vector<float> gamma = uniform(static_cast<std::size_t>(len), 3, 0.5f, 1.5f);
          std::vector<float> mean(static_cast<std::size_t>(rows)), invstd(mean.size());
          const float* g = with_gamma ? gamma.data() : nullptr;
          oln::forward(p, oln::Plan{}, kind, src.data(), Buffer(d).data(), g, nullptr, mean.data(),
                       invstd.data(), 1e-5);
          const bool layer = kind == oln::Kind::layer;
          // dx (a copy of src or dy for in place) on a cache line, so that
          // streaming plans take the pipelined kernel.
          auto run = [&](const oln::Plan& plan, int where) {
            std::vector<std::byte> xs(src.bytes.size() + 64), gs(xs.size()), out(xs.size());
            auto line = [](std::vector<std::byte>& v) { return v.data() + bytes_to_line(v.data()); };
            std::byte* x = line(xs);
            std::byte* gy = line(gs);
            std::memcpy(x, src.data(), src.bytes.size());
            std::memcpy(gy, dy.data(), dy.bytes.size());
            std::byte* dx = where == 0 ? line(out) : where == 1 ? gy : x;
            std::vector<float> dg(static_cast<std::size_t>(len), -1.0f), db(dg);
            oln::backward(p, plan, kind, x, gy, dx, g, layer ? mean.data() : nullptr, invstd.data(),
                          params ? dg.data() : nullptr, params && layer ? db.data() : nullptr);
            std::vector<std::byte> got(dx, dx + src.bytes.size());
            return std::make_tuple(got, dg, db);
          };
          const auto [one_dx, one_dg, one_db] = run(oln::Plan{1, 7, false}, 0);
          for (int workers : {1, 2, 3})
            for (bool stream : {false, true})
              for (int where = 0; where < 3; ++where) {  // dx apart, over dy, over src
                SCOPED_TRACE(d.str() + (layer ? " layer" : " rms") + " variant " + std::to_string(variant) +
                             " workers " + std::to_string(workers) + (stream ? " stream" : "") + " where " +
                             std::to_string(where));
                const auto [plain_dx, plain_dg, plain_db] = run(oln::Plan{workers, 2, stream, false}, where);
                const auto [piped_dx, piped_dg, piped_db] = run(oln::Plan{workers, 2, stream, true}, where);
                EXPECT_EQ(piped_dx, one_dx);
                EXPECT_EQ(plain_dx, one_dx);
                EXPECT_EQ(piped_dg, plain_dg);
                EXPECT_EQ(piped_db, plain_db);
              }
        }
}

TEST(LayerNormPlans, DefaultPlans) {
  // Small: one worker. Big: every thread, no more workers than rows,
  // streaming once the output exceeds the caches.
  const oln::Problem small{DType::f32, 4, 100};
  EXPECT_EQ(oln::plan_for(small, 8, oln::Pass::forward).workers, 1);
  const oln::Problem big{DType::f32, 8192, 4096};
  const oln::Plan fwd = oln::plan_for(big, 2, oln::Pass::forward);
  EXPECT_EQ(fwd.workers, 2);
  EXPECT_TRUE(fwd.stream);
  EXPECT_GE(fwd.block_rows, 1);
  const oln::Problem few_rows{DType::f32, 3, 1 << 20};
  EXPECT_EQ(oln::plan_for(few_rows, 8, oln::Pass::forward).workers, 3);
  EXPECT_LE(oln::plan_for(big, 2, oln::Pass::backward).block_rows, 32);
  // Rows too long for blocks of more than two pipeline their backward.
  EXPECT_FALSE(fwd.pipelined);
  EXPECT_TRUE(oln::plan_for(big, 2, oln::Pass::backward).pipelined);
  EXPECT_FALSE(oln::plan_for(oln::Problem{DType::f32, 8192, 256}, 2, oln::Pass::backward).pipelined);
}

}  // namespace
}  // namespace bnorm::test

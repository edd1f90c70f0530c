// Finite-difference gradient check in double. The loss is L = sum(w * y) with
// y the batch-norm forward written out here in double (the definition, not
// bnorm's code); central differences of L are compared with the gradients
// of the reference backward (double) and of bnorm's backward (f32).

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/bn_oracle.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

struct Problem {
  bref::Shape shape;
  std::vector<double> w;  // dL/dy
  double eps;
  bool batch_stats;
  std::vector<double> fixed_mean, fixed_var;  // for frozen statistics
};

double loss(const Problem& p, const std::vector<double>& x, const std::vector<double>& gamma,
            const std::vector<double>& beta) {
  const auto& s = p.shape;
  double total = 0.0;
  for (std::int64_t c = 0; c < s.c; ++c) {
    double mean = 0.0, var = 0.0;
    const double count = static_cast<double>(s.n * s.s);
    if (p.batch_stats) {
      for (std::int64_t n = 0; n < s.n; ++n)
        for (std::int64_t i = 0; i < s.s; ++i) mean += x[static_cast<std::size_t>(s.index(n, c, i))];
      mean /= count;
      for (std::int64_t n = 0; n < s.n; ++n)
        for (std::int64_t i = 0; i < s.s; ++i) {
          const double d = x[static_cast<std::size_t>(s.index(n, c, i))] - mean;
          var += d * d;
        }
      var /= count;
    } else {
      mean = p.fixed_mean[static_cast<std::size_t>(c)];
      var = p.fixed_var[static_cast<std::size_t>(c)];
    }
    for (std::int64_t n = 0; n < s.n; ++n)
      for (std::int64_t i = 0; i < s.s; ++i) {
        const auto k = static_cast<std::size_t>(s.index(n, c, i));
        const double y = (x[k] - mean) / std::sqrt(var + p.eps) * gamma[static_cast<std::size_t>(c)] +
                         beta[static_cast<std::size_t>(c)];
        total += p.w[k] * y;
      }
  }
  return total;
}

void gradcheck(Layout layout, bool batch_stats) {
  SCOPED_TRACE(std::string(to_string(layout)) + (batch_stats ? " batch stats" : " fixed stats"));
  const TensorDesc d(DType::f32, layout, {3, 2, 2, 3});
  Buffer src(d), dy(d);
  fill_normal(src, 1, 0.5, 2.0);
  fill_normal(dy, 2);
  const std::vector<float> gamma = {1.5f, -0.75f}, beta = {0.25f, 2.0f};
  Problem p{ref_shape(d), {}, 1e-3, batch_stats, {0.3, -0.2}, {1.7, 0.6}};
  std::vector<double> x(static_cast<std::size_t>(d.elements()));
  for (std::size_t i = 0; i < x.size(); ++i) {
    x[i] = src.get(static_cast<std::int64_t>(i));
    p.w.push_back(dy.get(static_cast<std::int64_t>(i)));
  }
  std::vector<double> g(gamma.begin(), gamma.end()), b(beta.begin(), beta.end());

  // Statistics the backward is given, as a forward would have saved them.
  std::vector<float> mean(2), invstd(2);
  if (batch_stats) {
    std::vector<float> rm(2), rv(2);
    Buffer out(d);
    batch_norm_forward_training(d, src.data(), d, out.data(), gamma.data(), beta.data(), mean.data(),
                                invstd.data(), {}, BatchNormConfig{p.eps, 0.1});
  } else {
    for (std::size_t c = 0; c < 2; ++c) {
      mean[c] = static_cast<float>(p.fixed_mean[c]);
      p.fixed_mean[c] = mean[c];
      invstd[c] = static_cast<float>(1.0 / std::sqrt(p.fixed_var[c] + p.eps));
    }
  }

  const BackwardExpectation ref =
      expect_backward(src, dy, gamma.data(), mean.data(), invstd.data(), batch_stats);
  Buffer dx(d);
  std::vector<float> dgamma(2), dbeta(2);
  batch_norm_backward(d, src.data(), d, dy.data(), d, dx.data(), gamma.data(), mean.data(), invstd.data(),
                      dgamma.data(), dbeta.data(), batch_stats ? BackwardStats::batch : BackwardStats::fixed);

  auto f = [&] { return loss(p, x, g, b); };
  double scale = 0.0;
  for (double v : ref.diff_src) scale = std::max(scale, std::fabs(v));
  for (std::size_t k = 0; k < x.size(); ++k) {
    const double fd = central_difference(x, k, f);
    // The reference takes invstd as f32, hence 1e-6 rather than 1e-9.
    EXPECT_NEAR(ref.diff_src[k], fd, 1e-6 * scale + 1e-8) << "reference dx[" << k << "]";
    EXPECT_NEAR(dx.get(static_cast<std::int64_t>(k)), fd, 2e-5 * scale + 1e-7) << "bnorm dx[" << k << "]";
  }
  for (std::size_t c = 0; c < 2; ++c) {
    const double fd_gamma = central_difference(g, c, f);
    const double fd_beta = central_difference(b, c, f);
    EXPECT_NEAR(ref.diff_gamma[c], fd_gamma, 1e-6 * (1 + std::fabs(fd_gamma)));
    EXPECT_NEAR(dgamma[c], fd_gamma, 2e-5 * (1 + std::fabs(fd_gamma))) << "bnorm dgamma[" << c << "]";
    EXPECT_NEAR(ref.diff_beta[c], fd_beta, 1e-6 * (1 + std::fabs(fd_beta)));
    EXPECT_NEAR(dbeta[c], fd_beta, 2e-5 * (1 + std::fabs(fd_beta))) << "bnorm dbeta[" << c << "]";
  }
}

TEST(BatchNormGradcheck, TrainingChannelsFirst) { gradcheck(Layout::channels_first, true); }
TEST(BatchNormGradcheck, TrainingChannelsLast) { gradcheck(Layout::channels_last, true); }
TEST(BatchNormGradcheck, FixedStatsChannelsFirst) { gradcheck(Layout::channels_first, false); }
TEST(BatchNormGradcheck, FixedStatsChannelsLast) { gradcheck(Layout::channels_last, false); }

}  // namespace
}  // namespace bnorm::test

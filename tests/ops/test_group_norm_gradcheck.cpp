// Finite-difference gradient check in double for group norm (G = 1, 2, C)
// and instance norm with running statistics (fixed). The loss is L =
// sum(w * y) with y the forward written out here in double (the definition,
// not bnorm's code); central differences of L are compared with the
// reference backward (double) and bnorm's backward (f32).

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/group_norm_oracle.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

// L = sum(w * y), y = (x - mean_ng) / sqrt(var_ng + eps) * gamma_c + beta_c.
double loss(const gref::Shape& s, const std::vector<double>& w, double eps, const std::vector<double>& x,
            const std::vector<double>& gamma, const std::vector<double>& beta) {
  const std::int64_t cg = s.c / s.g;
  const double count = static_cast<double>(cg * s.s);
  double total = 0.0;
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t g = 0; g < s.g; ++g) {
      double mean = 0.0, var = 0.0;
      for (std::int64_t c = g * cg; c < (g + 1) * cg; ++c)
        for (std::int64_t i = 0; i < s.s; ++i) mean += x[static_cast<std::size_t>(s.index(n, c, i))];
      mean /= count;
      for (std::int64_t c = g * cg; c < (g + 1) * cg; ++c)
        for (std::int64_t i = 0; i < s.s; ++i) {
          const double d = x[static_cast<std::size_t>(s.index(n, c, i))] - mean;
          var += d * d;
        }
      var /= count;
      for (std::int64_t c = g * cg; c < (g + 1) * cg; ++c)
        for (std::int64_t i = 0; i < s.s; ++i) {
          const auto k = static_cast<std::size_t>(s.index(n, c, i));
          total += w[k] * ((x[k] - mean) / std::sqrt(var + eps) * gamma[static_cast<std::size_t>(c)] +
                           beta[static_cast<std::size_t>(c)]);
        }
    }
  return total;
}

void gradcheck(Layout layout, std::int64_t groups, bool instance) {
  SCOPED_TRACE(std::string(to_string(layout)) + " G=" + std::to_string(groups) + (instance ? " instance" : ""));
  const TensorDesc d(DType::f32, layout, {3, 4, 2, 3});
  Buffer src(d), dy(d);
  fill_normal(src, 1, 0.5, 2.0);
  fill_normal(dy, 2);
  const std::vector<float> gamma = {1.5f, -0.75f, 0.5f, 2.0f}, beta = {0.25f, 2.0f, -1.0f, 0.0f};
  const double eps = 1e-3;
  const gref::Shape sh = group_shape(d, groups);
  std::vector<double> x(static_cast<std::size_t>(d.elements())), w(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    x[i] = src.get(static_cast<std::int64_t>(i));
    w[i] = dy.get(static_cast<std::int64_t>(i));
  }
  std::vector<double> g(gamma.begin(), gamma.end()), b(beta.begin(), beta.end());
  const std::size_t stats = 3 * static_cast<std::size_t>(groups);
  std::vector<float> mean(stats), invstd(stats);
  Buffer out(d);
  if (instance) {
    std::vector<float> rm(4, 0.0f), rv(4, 1.0f);
    instance_norm_forward_training(d, src.data(), d, out.data(), gamma.data(), beta.data(), mean.data(),
                                   invstd.data(), rm.data(), rv.data(), InstanceNormConfig{eps, 0.1});
  } else {
    group_norm_forward(d, src.data(), d, out.data(), groups, gamma.data(), beta.data(), mean.data(), invstd.data(),
                       eps);
  }
  const GroupBackwardExpectation ref = expect_group_backward(src, dy, groups, gamma.data(), mean.data(), invstd.data());
  Buffer dx(d);
  std::vector<float> dgamma(4), dbeta(4);
  if (instance) {
    instance_norm_backward(d, src.data(), d, dy.data(), d, dx.data(), gamma.data(), mean.data(), invstd.data(),
                           dgamma.data(), dbeta.data());
  } else {
    group_norm_backward(d, src.data(), d, dy.data(), d, dx.data(), groups, gamma.data(), mean.data(), invstd.data(),
                        dgamma.data(), dbeta.data());
  }
  auto f = [&] { return loss(sh, w, eps, x, g, b); };
  double scale = 0.0;
  for (double v : ref.diff_src) scale = std::max(scale, std::fabs(v));
  for (std::size_t k = 0; k < x.size(); ++k) {
    const double fd = central_difference(x, k, f);
    // The reference takes mean and invstd as f32, hence 1e-6 rather than 1e-9.
    EXPECT_NEAR(ref.diff_src[k], fd, 1e-6 * scale + 1e-8) << "reference dx[" << k << "]";
    EXPECT_NEAR(dx.get(static_cast<std::int64_t>(k)), fd, 2e-5 * scale + 1e-7) << "bnorm dx[" << k << "]";
  }
  for (std::size_t c = 0; c < 4; ++c) {
    const double fd_gamma = central_difference(g, c, f), fd_beta = central_difference(b, c, f);
    EXPECT_NEAR(ref.diff_gamma[c], fd_gamma, 1e-6 * (1 + std::fabs(fd_gamma)));
    EXPECT_NEAR(dgamma[c], fd_gamma, 2e-5 * (1 + std::fabs(fd_gamma))) << "bnorm dgamma[" << c << "]";
    EXPECT_NEAR(ref.diff_beta[c], fd_beta, 1e-6 * (1 + std::fabs(fd_beta)));
    EXPECT_NEAR(dbeta[c], fd_beta, 2e-5 * (1 + std::fabs(fd_beta))) << "bnorm dbeta[" << c << "]";
  }
}

TEST(GroupNormGradcheck, ChannelsFirst) {
  for (std::int64_t groups : {1, 2, 4}) gradcheck(Layout::channels_first, groups, false);
}
TEST(GroupNormGradcheck, ChannelsLast) {
  for (std::int64_t groups : {1, 2, 4}) gradcheck(Layout::channels_last, groups, false);
}
TEST(GroupNormGradcheck, InstanceNorm) {
  gradcheck(Layout::channels_first, 4, true);
  gradcheck(Layout::channels_last, 4, true);
}

}  // namespace
}  // namespace bnorm::test

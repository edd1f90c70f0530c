// Finite-difference gradient check in double for layer norm and RMS norm.
// The loss is L = sum(w * y) with y the forward written out here in double
// (the definition, not bnorm's code); central differences of L are compared
// with the gradients of the reference backward (double) and of bnorm's
// backward (f32).

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/ln_oracle.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

struct Problem {
  std::int64_t rows, len;
  std::vector<double> w;  // dL/dy
  double eps;
  bool rms;
};

double loss(const Problem& p, const std::vector<double>& x, const std::vector<double>& gamma,
            const std::vector<double>& beta) {
  double total = 0.0;
  const auto L = static_cast<double>(p.len);
  for (std::int64_t r = 0; r < p.rows; ++r) {
    const double* row = x.data() + r * p.len;
    double mean = 0.0, var = 0.0;
    if (p.rms) {
      for (std::int64_t j = 0; j < p.len; ++j) var += row[j] * row[j];
      var /= L;  // mean square, about 0
    } else {
      for (std::int64_t j = 0; j < p.len; ++j) mean += row[j];
      mean /= L;
      for (std::int64_t j = 0; j < p.len; ++j) var += (row[j] - mean) * (row[j] - mean);
      var /= L;
    }
    for (std::int64_t j = 0; j < p.len; ++j) {
      const auto k = static_cast<std::size_t>(j);
      const double y = (row[j] - mean) / std::sqrt(var + p.eps) * gamma[k] + (p.rms ? 0.0 : beta[k]);
      total += p.w[static_cast<std::size_t>(r * p.len + j)] * y;
    }
  }
  return total;
}

void gradcheck(bool rms) {
  SCOPED_TRACE(rms ? "rms_norm" : "layer_norm");
  // Three rows of 2x3 normalized elements.
  const TensorDesc d(DType::f32, Layout::channels_first, {3, 2, 3});
  const int nd = 2;
  Buffer src(d), dy(d);
  fill_normal(src, 1, 0.5, 2.0);
  fill_normal(dy, 2);
  const std::vector<float> gamma = {1.5f, -0.75f, 0.5f, 2.0f, 1.0f, -1.25f};
  const std::vector<float> beta = {0.25f, 2.0f, -1.0f, 0.5f, 0.0f, 1.5f};
  Problem p{3, 6, {}, 1e-3, rms};
  std::vector<double> x(18);
  for (std::size_t i = 0; i < 18; ++i) {
    x[i] = src.get(static_cast<std::int64_t>(i));
    p.w.push_back(dy.get(static_cast<std::int64_t>(i)));
  }
  std::vector<double> g(gamma.begin(), gamma.end()), b(beta.begin(), beta.end());

  Buffer out(d), dx(d);
  std::vector<float> mean(3), invstd(3), dgamma(6), dbeta(6);
  NormBackwardExpectation ref;
  if (rms) {
    rms_norm_forward(d, src.data(), d, out.data(), nd, gamma.data(), invstd.data(), p.eps);
    ref = expect_rms_norm_backward(src, dy, nd, gamma.data(), invstd.data());
    rms_norm_backward(d, src.data(), d, dy.data(), d, dx.data(), nd, gamma.data(), invstd.data(), dgamma.data());
  } else {
    layer_norm_forward(d, src.data(), d, out.data(), nd, gamma.data(), beta.data(), mean.data(), invstd.data(),
                       p.eps);
    ref = expect_layer_norm_backward(src, dy, nd, gamma.data(), mean.data(), invstd.data());
    layer_norm_backward(d, src.data(), d, dy.data(), d, dx.data(), nd, gamma.data(), mean.data(),
                        invstd.data(), dgamma.data(), dbeta.data());
  }

  auto f = [&] { return loss(p, x, g, b); };
  double scale = 0.0;
  for (double v : ref.diff_src) scale = std::max(scale, std::fabs(v));
  for (std::size_t k = 0; k < x.size(); ++k) {
    const double fd = central_difference(x, k, f);
    // The reference takes the f32 statistics, hence 1e-6 rather than 1e-9.
    EXPECT_NEAR(ref.diff_src[k], fd, 1e-6 * scale + 1e-8) << "reference dx[" << k << "]";
    EXPECT_NEAR(dx.get(static_cast<std::int64_t>(k)), fd, 2e-5 * scale + 1e-7) << "bnorm dx[" << k << "]";
  }
  for (std::size_t j = 0; j < 6; ++j) {
    const double fd_gamma = central_difference(g, j, f);
    EXPECT_NEAR(ref.diff_gamma[j], fd_gamma, 1e-6 * (1 + std::fabs(fd_gamma)));
    EXPECT_NEAR(dgamma[j], fd_gamma, 2e-5 * (1 + std::fabs(fd_gamma))) << "bnorm dgamma[" << j << "]";
    if (rms) continue;
    const double fd_beta = central_difference(b, j, f);
    EXPECT_NEAR(ref.diff_beta[j], fd_beta, 1e-6 * (1 + std::fabs(fd_beta)));
    EXPECT_NEAR(dbeta[j], fd_beta, 2e-5 * (1 + std::fabs(fd_beta))) << "bnorm dbeta[" << j << "]";
  }
}

TEST(LayerNormGradcheck, FiniteDifferences) { gradcheck(false); }
TEST(RmsNormGradcheck, FiniteDifferences) { gradcheck(true); }

}  // namespace
}  // namespace bnorm::test

// Runs bnorm's batch norm and the double-precision reference on the same
// data and checks every output against it (used by the grid and plan tests).
#pragma once

#include <algorithm>
#include <optional>
#include <vector>

#include "common/test_util.hpp"
#include "kernels/batch_norm/ref.hpp"

namespace bnorm::test {

namespace bref = kernels::batch_norm::ref;

inline bref::Shape ref_shape(const TensorDesc& d) {
  return {d.dtype(), d.layout(), d.batch(), d.channels(), d.spatial()};
}

/// Expected outputs of one training step, computed in double.
struct TrainingExpectation {
  std::vector<double> dst, mean, var;
};

inline TrainingExpectation expect_training(const Buffer& src, const float* gamma, const float* beta,
                                           double eps) {
  const auto shape = ref_shape(src.desc);
  TrainingExpectation e;
  e.mean.resize(static_cast<std::size_t>(shape.c));
  e.var.resize(static_cast<std::size_t>(shape.c));
  e.dst.resize(static_cast<std::size_t>(shape.elements()));
  bref::batch_stats(shape, src.data(), e.mean.data(), e.var.data());
  bref::normalize(shape, src.data(), e.mean.data(), e.var.data(), eps, gamma, beta, e.dst.data());
  return e;
}

/// Checks a normalized output against the double reference. The f32
/// arithmetic is held to 2e-6 relative to the output's scale.
inline ::testing::AssertionResult check_output(const Buffer& got, const std::vector<double>& want,
                                               const std::string& what) {
  double scale = 1.0;
  for (double w : want) scale = std::max(scale, std::isfinite(w) ? std::fabs(w) : 0.0);
  const DType dt = got.desc.dtype();
  return all_close(
      got.size(), [&](std::int64_t i) { return static_cast<double>(got.get(i)); }, want.data(),
      [&](double w) { return element_tolerance(dt, w, 2e-6 * scale); }, what);
}

/// Checks f32 per-channel values against doubles with a relative tolerance.
inline ::testing::AssertionResult check_channels(const float* got, const std::vector<double>& want,
                                                 double rel, double abs, const std::string& what) {
  return all_close(
      static_cast<std::int64_t>(want.size()), [&](std::int64_t i) { return static_cast<double>(got[i]); },
      want.data(), [&](double w) { return abs + rel * std::fabs(w); }, what);
}

/// Checks save_mean: f32 sums of n values of spread sigma carry an error of
/// order eps * sigma * sqrt(n) in the mean, so the bar is relative to the
/// spread (2e-6 sigma, 50x below what the 1e-5 output bar allows).
inline ::testing::AssertionResult check_mean(const float* got, const TrainingExpectation& e) {
  for (std::size_t c = 0; c < e.mean.size(); ++c) {
    const double tol = 2e-6 * std::sqrt(e.var[c]) + 1e-6 * std::fabs(e.mean[c]) + 1e-12;
    if (!(std::fabs(got[c] - e.mean[c]) <= tol))
      return ::testing::AssertionFailure() << "save_mean[" << c << "] = " << got[c] << ", want " << e.mean[c]
                                           << " (tolerance " << tol << ")";
  }
  return ::testing::AssertionSuccess();
}

/// Backward expectations in double plus the scale of the summed terms
/// (sum |dy| and sum |dy * xhat|), which bounds the f32 summation error.
struct BackwardExpectation {
  std::vector<double> diff_src, diff_gamma, diff_beta, abs_dy, abs_dy_xhat;
};

inline BackwardExpectation expect_backward(const Buffer& src, const Buffer& diff_dst, const float* gamma,
                                           const float* mean, const float* invstd, bool batch_stats) {
  const auto shape = ref_shape(src.desc);
  BackwardExpectation e;
  const auto C = static_cast<std::size_t>(shape.c);
  e.diff_src.resize(static_cast<std::size_t>(shape.elements()));
  e.diff_gamma.resize(C);
  e.diff_beta.resize(C);
  bref::backward(shape, src.data(), diff_dst.data(), gamma, mean, invstd, batch_stats, e.diff_src.data(),
                 e.diff_gamma.data(), e.diff_beta.data());
  e.abs_dy.assign(C, 0.0);
  e.abs_dy_xhat.assign(C, 0.0);
  for (std::int64_t n = 0; n < shape.n; ++n)
    for (std::int64_t c = 0; c < shape.c; ++c)
      for (std::int64_t s = 0; s < shape.s; ++s) {
        const auto i = shape.index(n, c, s);
        const double dy = diff_dst.get(i);
        e.abs_dy[static_cast<std::size_t>(c)] += std::fabs(dy);
        e.abs_dy_xhat[static_cast<std::size_t>(c)] += std::fabs(dy * (src.get(i) - mean[c]) * invstd[c]);
      }
  return e;
}

inline ::testing::AssertionResult check_backward(const BackwardExpectation& e, const Buffer* diff_src,
                                                 const float* diff_gamma, const float* diff_beta) {
  if (diff_src) {
    auto r = check_output(*diff_src, e.diff_src, "diff_src");
    if (!r) return r;
  }
  // f32 partial sums of bounded length, folded into double: error well below
  // 1e-5 of the sum of magnitudes.
  for (std::size_t c = 0; c < e.diff_beta.size(); ++c) {
    if (diff_beta && !(std::fabs(diff_beta[c] - e.diff_beta[c]) <= 1e-5 * e.abs_dy[c] + 1e-6))
      return ::testing::AssertionFailure()
             << "diff_beta[" << c << "] = " << diff_beta[c] << ", want " << e.diff_beta[c];
    if (diff_gamma && !(std::fabs(diff_gamma[c] - e.diff_gamma[c]) <= 1e-5 * e.abs_dy_xhat[c] + 1e-6))
      return ::testing::AssertionFailure()
             << "diff_gamma[" << c << "] = " << diff_gamma[c] << ", want " << e.diff_gamma[c];
  }
  return ::testing::AssertionSuccess();
}

}  // namespace bnorm::test

// Runs the double-precision group-norm reference (InstanceNorm: G = C) on a
// test buffer and checks bnorm's outputs against it (grid, plan, layer and
// instance-norm tests).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/bn_oracle.hpp"
#include "common/test_util.hpp"
#include "kernels/group_norm/ref.hpp"

namespace bnorm::test {

namespace gref = kernels::group_norm::ref;

inline gref::Shape group_shape(const TensorDesc& d, std::int64_t groups) {
  return {d.dtype(), d.layout(), d.batch(), d.channels(), d.spatial(), groups};
}

/// Expected outputs of a forward pass, in double: dst and the N x G mean
/// and biased variance.
struct GroupExpectation {
  std::vector<double> dst, mean, var;
};

inline GroupExpectation expect_group_norm(const Buffer& src, std::int64_t groups, const float* gamma,
                                          const float* beta, double eps) {
  const gref::Shape sh = group_shape(src.desc, groups);
  GroupExpectation e;
  e.mean.resize(static_cast<std::size_t>(sh.n * sh.g));
  e.var.resize(e.mean.size());
  e.dst.resize(static_cast<std::size_t>(sh.elements()));
  gref::group_stats(sh, src.data(), e.mean.data(), e.var.data());
  gref::normalize(sh, src.data(), e.mean.data(), e.var.data(), eps, gamma, beta, e.dst.data());
  return e;
}

/// save_mean within 2e-6 of each group's standard deviation (f32 sums of n
/// values carry about eps * sigma * sqrt(n)), save_invstd within 2e-6
/// relative.
inline ::testing::AssertionResult check_group_stats(const float* mean, const float* invstd,
                                                    const GroupExpectation& e, double eps) {
  for (std::size_t i = 0; i < e.mean.size(); ++i) {
    const double tol = 2e-6 * std::sqrt(e.var[i]) + 1e-6 * std::fabs(e.mean[i]) + 1e-12;
    if (mean && !(std::fabs(mean[i] - e.mean[i]) <= tol))
      return ::testing::AssertionFailure() << "save_mean[" << i << "] = " << mean[i] << ", want " << e.mean[i];
    const double want = 1.0 / std::sqrt(e.var[i] + eps);
    if (invstd && !(std::fabs(invstd[i] - want) <= 2e-6 * want))
      return ::testing::AssertionFailure() << "save_invstd[" << i << "] = " << invstd[i] << ", want " << want;
  }
  return ::testing::AssertionSuccess();
}

/// Backward expectations in double, and per channel the sums of |dy| and
/// |dy * xhat| that bound the f32 summation error of the parameter gradients.
struct GroupBackwardExpectation : BackwardExpectation {
  double term_scale = 0.0;  ///< largest |gamma * invstd * dy|
};

inline GroupBackwardExpectation expect_group_backward(const Buffer& src, const Buffer& diff_dst, std::int64_t groups,
                                                 const float* gamma, const float* mean, const float* invstd) {
  const gref::Shape sh = group_shape(src.desc, groups);
  GroupBackwardExpectation e;
  const auto C = static_cast<std::size_t>(sh.c);
  e.diff_src.resize(static_cast<std::size_t>(sh.elements()));
  e.diff_gamma.resize(C);
  e.diff_beta.resize(C);
  gref::backward(sh, src.data(), diff_dst.data(), gamma, mean, invstd, e.diff_src.data(), e.diff_gamma.data(),
                 e.diff_beta.data());
  e.abs_dy.assign(C, 0.0);
  e.abs_dy_xhat.assign(C, 0.0);
  e.term_scale = 0.0;
  const std::int64_t cg = sh.c / sh.g;
  for (std::int64_t n = 0; n < sh.n; ++n)
    for (std::int64_t c = 0; c < sh.c; ++c)
      for (std::int64_t s = 0; s < sh.s; ++s) {
        const auto i = sh.index(n, c, s);
        const std::int64_t k = n * sh.g + c / cg;
        const double dy = diff_dst.get(i);
        e.abs_dy[static_cast<std::size_t>(c)] += std::fabs(dy);
        e.abs_dy_xhat[static_cast<std::size_t>(c)] += std::fabs(dy * (src.get(i) - mean[k]) * invstd[k]);
        e.term_scale = std::max(e.term_scale, std::fabs(dy * invstd[k] * (gamma ? gamma[c] : 1.0)));
      }
  return e;
}

/// Checks a backward against the expectation. dx = k_dy * dy + (terms of
/// similar size) can cancel, so its f32 error is bounded relative to the
/// largest |gamma * invstd * dy| as well as to the largest |dx|.
inline ::testing::AssertionResult check_group_backward(const GroupBackwardExpectation& e, const Buffer* diff_src,
                                                       const float* diff_gamma, const float* diff_beta) {
  if (diff_src) {
    double scale = 1.0;
    for (double w : e.diff_src) scale = std::max(scale, std::fabs(w));
    scale = std::max(scale, e.term_scale);
    const DType dt = diff_src->desc.dtype();
    auto r = all_close(
        diff_src->size(), [&](std::int64_t i) { return static_cast<double>(diff_src->get(i)); },
        e.diff_src.data(), [&](double w) { return element_tolerance(dt, w, 2e-6 * scale); }, "diff_src");
    if (!r) return r;
  }
  return check_backward(e, nullptr, diff_gamma, diff_beta);
}

}  // namespace bnorm::test

// Runs bnorm's layer norm / RMS norm and checks every output against the
// double-precision references (kernels/layer_norm/ref.hpp,
// kernels/rms_norm/ref.hpp). Used by the grid, plan and layer tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/test_util.hpp"
#include "kernels/layer_norm/ref.hpp"
#include "kernels/rms_norm/ref.hpp"

namespace bnorm::test {

namespace lref = kernels::layer_norm::ref;
namespace rref = kernels::rms_norm::ref;

inline lref::Shape row_shape(const TensorDesc& d, int normalized_dims) {
  lref::Shape s{d.dtype(), 1, 1};
  for (int i = 0; i < d.rank(); ++i) (i < d.rank() - normalized_dims ? s.rows : s.len) *= d.dim(i);
  return s;
}

/// Checks a normalized output against the double reference: the f32
/// arithmetic is held to 2e-6 of the output's scale, plus one step of a
/// 16-bit output type.
inline ::testing::AssertionResult check_values(const Buffer& got, const std::vector<double>& want,
                                               const std::string& what, double rel = 2e-6) {
  double scale = 1.0;
  for (double w : want) scale = std::max(scale, std::isfinite(w) ? std::fabs(w) : 0.0);
  const DType dt = got.desc.dtype();
  return all_close(
      got.size(), [&](std::int64_t i) { return static_cast<double>(got.get(i)); }, want.data(),
      [&](double w) { return element_tolerance(dt, w, rel * scale); }, what);
}

/// f32 per-row or per-column values against doubles, each within its own
/// tolerance tol[i].
inline ::testing::AssertionResult check_each(const float* got, const std::vector<double>& want,
                                             const std::vector<double>& tol, const std::string& what) {
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i]) && std::isnan(got[i])) continue;
    if (!(std::fabs(got[i] - want[i]) <= tol[i]))
      return ::testing::AssertionFailure() << what << "[" << i << "] = " << got[i] << ", want " << want[i]
                                           << " (tolerance " << tol[i] << ")";
  }
  return ::testing::AssertionSuccess();
}

/// Forward expectations of layer norm: output, row means and invstd, and
/// the tolerances of the statistics (f32 sums of L values of spread sigma
/// carry an error of order 1e-7 * sigma * sqrt(L) in the mean).
struct LayerNormExpectation {
  std::vector<double> dst, mean, invstd, mean_tol, invstd_tol;
};

inline LayerNormExpectation expect_layer_norm(const Buffer& src, int normalized_dims, const float* gamma,
                                              const float* beta, double eps) {
  const lref::Shape s = row_shape(src.desc, normalized_dims);
  LayerNormExpectation e;
  std::vector<double> var(static_cast<std::size_t>(s.rows));
  e.mean.resize(var.size());
  e.dst.resize(static_cast<std::size_t>(s.elements()));
  lref::row_stats(s, src.data(), e.mean.data(), var.data());
  lref::normalize(s, src.data(), e.mean.data(), var.data(), eps, gamma, beta, e.dst.data());
  for (std::size_t r = 0; r < var.size(); ++r) {
    e.invstd.push_back(1.0 / std::sqrt(var[r] + eps));
    e.mean_tol.push_back(2e-6 * std::sqrt(var[r]) + 1e-6 * std::fabs(e.mean[r]) + 1e-12);
    e.invstd_tol.push_back(4e-6 * e.invstd.back());
  }
  return e;
}

/// Forward expectations of RMS norm: output and 1/rms per row.
struct RmsNormExpectation {
  std::vector<double> dst, invrms, invrms_tol;
};

inline RmsNormExpectation expect_rms_norm(const Buffer& src, int normalized_dims, const float* gamma,
                                          double eps) {
  const lref::Shape s = row_shape(src.desc, normalized_dims);
  RmsNormExpectation e;
  std::vector<double> ms(static_cast<std::size_t>(s.rows));
  e.dst.resize(static_cast<std::size_t>(s.elements()));
  rref::row_mean_squares(s, src.data(), ms.data());
  rref::normalize(s, src.data(), ms.data(), eps, gamma, e.dst.data());
  for (double m : ms) {
    e.invrms.push_back(1.0 / std::sqrt(m + eps));
    e.invrms_tol.push_back(4e-6 * e.invrms.back());
  }
  return e;
}

/// Backward expectations in double, from the statistics the forward saved
/// (f32), with the scale of each output for its tolerance: dx's terms are
/// of size invstd * |dy * gamma|, the parameter gradients are sums of
/// |dy * xhat| and |dy| over the rows.
struct NormBackwardExpectation {
  std::vector<double> diff_src, diff_gamma, diff_beta, gamma_tol, beta_tol;
  double diff_src_scale = 0.0;
};

inline void finish_backward_scales(const lref::Shape& s, const Buffer& src, const Buffer& diff_dst,
                                   const float* gamma, const float* mean, const float* invstd,
                                   NormBackwardExpectation& e) {
  const auto L = static_cast<std::size_t>(s.len);
  std::vector<double> abs_gx(L, 0.0), abs_g(L, 0.0);
  for (std::int64_t r = 0; r < s.rows; ++r)
    for (std::int64_t j = 0; j < s.len; ++j) {
      const std::int64_t i = r * s.len + j;
      const double dy = diff_dst.get(i);
      const double xhat = (src.get(i) - (mean ? mean[r] : 0.0)) * invstd[r];
      abs_gx[static_cast<std::size_t>(j)] += std::fabs(dy * xhat);
      abs_g[static_cast<std::size_t>(j)] += std::fabs(dy);
      e.diff_src_scale = std::max(e.diff_src_scale, invstd[r] * std::fabs(dy * (gamma ? gamma[j] : 1.0)) *
                                                        (1.0 + std::fabs(xhat)));
    }
  for (std::size_t j = 0; j < L; ++j) {
    e.gamma_tol.push_back(2e-6 * abs_gx[j] + 1e-12);
    e.beta_tol.push_back(2e-6 * abs_g[j] + 1e-12);
  }
}

inline NormBackwardExpectation expect_layer_norm_backward(const Buffer& src, const Buffer& diff_dst,
                                                          int normalized_dims, const float* gamma,
                                                          const float* mean, const float* invstd) {
  const lref::Shape s = row_shape(src.desc, normalized_dims);
  NormBackwardExpectation e;
  e.diff_src.resize(static_cast<std::size_t>(s.elements()));
  e.diff_gamma.resize(static_cast<std::size_t>(s.len));
  e.diff_beta.resize(static_cast<std::size_t>(s.len));
  lref::backward(s, src.data(), diff_dst.data(), gamma, mean, invstd, e.diff_src.data(), e.diff_gamma.data(),
                 e.diff_beta.data());
  finish_backward_scales(s, src, diff_dst, gamma, mean, invstd, e);
  return e;
}

inline NormBackwardExpectation expect_rms_norm_backward(const Buffer& src, const Buffer& diff_dst,
                                                        int normalized_dims, const float* gamma,
                                                        const float* invrms) {
  const lref::Shape s = row_shape(src.desc, normalized_dims);
  NormBackwardExpectation e;
  e.diff_src.resize(static_cast<std::size_t>(s.elements()));
  e.diff_gamma.resize(static_cast<std::size_t>(s.len));
  rref::backward(s, src.data(), diff_dst.data(), gamma, invrms, e.diff_src.data(), e.diff_gamma.data());
  finish_backward_scales(s, src, diff_dst, gamma, nullptr, invrms, e);
  return e;
}

/// dx against the reference: 4e-6 of the size of its terms, plus one step
/// of a 16-bit output type.
inline ::testing::AssertionResult check_diff_src(const Buffer& got, const NormBackwardExpectation& e,
                                                 const std::string& what) {
  const DType dt = got.desc.dtype();
  const double abs = 4e-6 * e.diff_src_scale + 1e-30;
  return all_close(
      got.size(), [&](std::int64_t i) { return static_cast<double>(got.get(i)); }, e.diff_src.data(),
      [&](double w) { return element_tolerance(dt, w, abs); }, what);
}

}  // namespace bnorm::test

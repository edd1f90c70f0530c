// The training example's own math (examples/mnist_bn): the GEMMs against
// plain double loops, softmax cross-entropy and the whole network's
// gradients (Linear, sigmoid / ReLU, bnorm BatchNorm, softmax-CE) against
// central finite differences of an independent double-precision forward.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "gemm.hpp"
#include "idx.hpp"
#include "mlp.hpp"

namespace mnist_bn {
namespace {

std::vector<float> random_floats(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(MnistBnGemm, MatchesDoubleLoopsOnAwkwardShapes) {
  std::mt19937 rng(1);
  for (std::int64_t M : {1, 3, 17, 60})
    for (std::int64_t N : {1, 7, 10, 100})
      for (std::int64_t K : {1, 5, 63, 64, 65, 130}) {
        const auto A = random_floats(static_cast<std::size_t>(M * K), rng);
        const auto B = random_floats(static_cast<std::size_t>(K * N), rng);
        auto C = random_floats(static_cast<std::size_t>(M * N), rng);
        const auto C0 = C;
        for (bool accumulate : {false, true}) {
          C = C0;
          gemm(M, N, K, A.data(), B.data(), C.data(), accumulate);
          for (std::int64_t m = 0; m < M; ++m)
            for (std::int64_t n = 0; n < N; ++n) {
              double want = accumulate ? C0[m * N + n] : 0.0, mag = std::fabs(want);
              for (std::int64_t k = 0; k < K; ++k) {
                want += double(A[m * K + k]) * B[k * N + n];
                mag += std::fabs(double(A[m * K + k]) * B[k * N + n]);
              }
              ASSERT_NEAR(C[m * N + n], want, 1e-6 * mag + 1e-30)
                  << "M=" << M << " N=" << N << " K=" << K << " accumulate=" << accumulate;
            }
        }
      }
}

TEST(MnistBnGemm, SumsOverKInAscendingOrder) {
  // C = A * B summed in ascending k in float exactly: 1e8 + 1 - 1e8 is 0
  // in that order (1 is lost), 1 in any order that adds 1 last.
  const float A[3] = {1, 1, 1}, B[3] = {1e8f, 1, -1e8f};
  float C = -5;
  gemm(1, 1, 3, A, B, &C, false);
  EXPECT_EQ(C, 0.0f);
}

TEST(MnistBnGemm, WeightGradientIsADoubleSumOverRows) {
  std::mt19937 rng(2);
  const std::int64_t M = 60, N = 100, K = 70;
  auto A = random_floats(static_cast<std::size_t>(M * K), rng);
  for (std::size_t i = 0; i < A.size(); i += 3) A[i] = 0;  // skipped zeros must not matter
  const auto B = random_floats(static_cast<std::size_t>(M * N), rng);
  std::vector<double> C(static_cast<std::size_t>(K * N), 0.5), halves(C.size(), 0.0), second(C.size(), 0.0);
  gemm_at_b_accumulate(M, N, K, A.data(), B.data(), C.data());
  // The data-parallel split: rows [0, 30) on one process, [30, 60) on the other.
  gemm_at_b_accumulate(30, N, K, A.data(), B.data(), halves.data());
  gemm_at_b_accumulate(30, N, K, A.data() + 30 * K, B.data() + 30 * N, second.data());
  for (std::int64_t k = 0; k < K; ++k)
    for (std::int64_t n = 0; n < N; ++n) {
      double want = 0;
      for (std::int64_t m = 0; m < M; ++m) want += double(A[m * K + k]) * B[m * N + n];
      ASSERT_NEAR(C[k * N + n], 0.5 + want, 1e-12);
      ASSERT_EQ(static_cast<float>(halves[k * N + n] + second[k * N + n]), static_cast<float>(want));
    }
}

TEST(MnistBnGemm, Transpose) {
  const float src[6] = {1, 2, 3, 4, 5, 6};
  float dst[6];
  transpose(2, 3, src, dst);
  EXPECT_EQ(std::vector<float>(dst, dst + 6), (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

TEST(MnistBnSoftmaxCrossEntropy, ValueAndFiniteDifferences) {
  std::mt19937 rng(3);
  const std::int64_t rows = 5, classes = 10;
  std::vector<double> z(rows * classes);
  std::normal_distribution<double> d(0, 3);
  for (auto& v : z) v = d(rng);
  const std::uint8_t labels[rows] = {0, 9, 3, 3, 7};
  std::vector<double> grad(z.size());
  const double scale = 1.0 / 60;
  const double loss = softmax_cross_entropy(rows, classes, z.data(), labels, scale, grad.data());
  double want = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (std::int64_t j = 0; j < classes; ++j) s += std::exp(z[r * classes + j]);
    want += std::log(s) - z[r * classes + labels[r]];
  }
  EXPECT_NEAR(loss, want, 1e-12);
  const double h = 1e-6;
  for (std::size_t i = 0; i < z.size(); ++i) {
    auto zp = z, zm = z;
    zp[i] += h;
    zm[i] -= h;
    const double fd = (softmax_cross_entropy<double>(rows, classes, zp.data(), labels, 0, nullptr) -
                       softmax_cross_entropy<double>(rows, classes, zm.data(), labels, 0, nullptr)) /
                      (2 * h) * scale;
    EXPECT_NEAR(grad[i], fd, 1e-9) << "logit " << i;
  }
}

TEST(MnistBnSoftmaxCrossEntropy, StableForHugeLogitsAndPropagatesNaN) {
  const float z[3] = {1000.0f, -1000.0f, 999.0f};
  const std::uint8_t label = 2;
  float g[3];
  const double loss = softmax_cross_entropy(1, 3, z, &label, 1.0, g);
  EXPECT_NEAR(loss, std::log(1 + std::exp(-1.0)) + 1.0, 1e-9);
  EXPECT_TRUE(std::isfinite(g[0]) && std::isfinite(g[1]) && std::isfinite(g[2]));
  const float zn[3] = {1.0f, NAN, 0.0f};
  EXPECT_TRUE(std::isnan(softmax_cross_entropy(1, 3, zn, &label, 1.0, g)));
  const float zi[3] = {INFINITY, 0.0f, 0.0f};
  EXPECT_FALSE(std::isfinite(softmax_cross_entropy(1, 3, zi, &label, 1.0, g)));
}

// An independent double-precision forward of the network's loss: Linear,
// (BatchNorm with batch statistics, biased variance), activation, ..., mean
// softmax cross-entropy. Parameters are read from the float network.
struct DoubleParams {
  std::vector<std::vector<double>> wt, bias, gamma, beta;
};

DoubleParams params_of(Network& net) {
  DoubleParams p;
  for (auto& lin : net.linears()) {
    p.wt.emplace_back(lin.wt.begin(), lin.wt.end());
    p.bias.emplace_back(lin.bias.begin(), lin.bias.end());
  }
  for (auto& norm : net.norms()) {
    p.gamma.emplace_back(norm->weight().begin(), norm->weight().end());
    p.beta.emplace_back(norm->bias().begin(), norm->bias().end());
  }
  return p;
}

double reference_loss(const NetworkConfig& cfg, const DoubleParams& p, const std::vector<float>& x,
                      const std::vector<std::uint8_t>& labels, std::int64_t n) {
  std::vector<double> a(x.begin(), x.end());
  const std::size_t layers = cfg.widths.size() - 1;
  for (std::size_t l = 0; l < layers; ++l) {
    const std::int64_t in = cfg.widths[l], out = cfg.widths[l + 1];
    std::vector<double> z(static_cast<std::size_t>(n * out), 0.0);
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t o = 0; o < out; ++o) {
        double s = p.bias[l].empty() ? 0.0 : p.bias[l][o];
        for (std::int64_t i = 0; i < in; ++i) s += a[r * in + i] * p.wt[l][i * out + o];
        z[r * out + o] = s;
      }
    if (l + 1 == layers)
      return softmax_cross_entropy<double>(n, out, z.data(), labels.data(), 0, nullptr) / n;
    if (cfg.batch_norm) {
      for (std::int64_t o = 0; o < out; ++o) {
        double mean = 0, var = 0;
        for (std::int64_t r = 0; r < n; ++r) mean += z[r * out + o];
        mean /= n;
        for (std::int64_t r = 0; r < n; ++r) var += (z[r * out + o] - mean) * (z[r * out + o] - mean);
        var /= n;
        for (std::int64_t r = 0; r < n; ++r)
          z[r * out + o] = (z[r * out + o] - mean) / std::sqrt(var + 1e-5) * p.gamma[l][o] + p.beta[l][o];
      }
    }
    a.resize(z.size());
    for (std::size_t i = 0; i < z.size(); ++i)
      a[i] = cfg.activation == Activation::sigmoid ? 1.0 / (1.0 + std::exp(-z[i])) : std::max(z[i], 0.0);
  }
  return 0;
}

void check_network_gradients(Activation activation, bool batch_norm) {
  NetworkConfig cfg;
  cfg.widths = {7, 6, 5, 4, 3};
  cfg.activation = activation;
  cfg.batch_norm = batch_norm;
  Network net(cfg, 42);
  std::mt19937 rng(5);
  const std::int64_t n = 9;
  const auto x = random_floats(static_cast<std::size_t>(n * cfg.widths[0]), rng);
  std::vector<std::uint8_t> labels(n);
  for (std::int64_t r = 0; r < n; ++r) labels[r] = static_cast<std::uint8_t>(r % 3);
  // Non-trivial BN parameters and Linear biases.
  for (auto& norm : net.norms())
    for (std::size_t c = 0; c < norm->weight().size(); ++c) {
      norm->weight()[c] = 0.5f + 0.25f * c;
      norm->bias()[c] = 0.1f * c - 0.2f;
    }
  for (auto& lin : net.linears())
    for (std::size_t o = 0; o < lin.bias.size(); ++o) lin.bias[o] = 0.05f * o;

  const double loss = net.forward_backward(x.data(), labels.data(), n, 1.0 / n) / n;
  const DoubleParams p0 = params_of(net);
  EXPECT_NEAR(loss, reference_loss(cfg, p0, x, labels, n), 1e-5);

  const double h = 1e-5;
  auto fd = [&](auto&& poke) {
    DoubleParams pp = p0, pm = p0;
    poke(pp, h);
    poke(pm, -h);
    return (reference_loss(cfg, pp, x, labels, n) - reference_loss(cfg, pm, x, labels, n)) / (2 * h);
  };
  const std::string what = to_string(activation) + (batch_norm ? " with BN" : " plain");
  const auto grads = net.linear_grads();
  int checked = 0;
  for (std::size_t l = 0; l < net.linears().size(); ++l) {
    const Linear& lin = net.linears()[l];
    for (std::size_t i = 0; i < lin.wt.size(); ++i, ++checked) {
      const double want = fd([&](DoubleParams& q, double d) { q.wt[l][i] += d; });
      EXPECT_NEAR(grads[lin.grad_offset + i], want, 2e-5 + 2e-4 * std::fabs(want))
          << what << ": layer " << l << " weight " << i;
    }
    for (std::size_t o = 0; o < lin.bias.size(); ++o, ++checked) {
      const double want = fd([&](DoubleParams& q, double d) { q.bias[l][o] += d; });
      EXPECT_NEAR(grads[lin.grad_offset + lin.wt.size() + o], want, 2e-5 + 2e-4 * std::fabs(want))
          << what << ": layer " << l << " bias " << o;
    }
  }
  for (std::size_t k = 0; k < net.norms().size(); ++k) {
    const auto gw = net.norms()[k]->weight_grad();
    const auto gb = net.norms()[k]->bias_grad();
    for (std::size_t c = 0; c < gw.size(); ++c, checked += 2) {
      const double wg = fd([&](DoubleParams& q, double d) { q.gamma[k][c] += d; });
      const double bg = fd([&](DoubleParams& q, double d) { q.beta[k][c] += d; });
      EXPECT_NEAR(gw[c], wg, 2e-5 + 2e-4 * std::fabs(wg)) << what << ": BN " << k << " gamma " << c;
      EXPECT_NEAR(gb[c], bg, 2e-5 + 2e-4 * std::fabs(bg)) << what << ": BN " << k << " beta " << c;
    }
  }
  // Without BN every Linear has a bias; with BN only the last one.
  EXPECT_EQ(checked, batch_norm ? 7 * 6 + 6 * 5 + 5 * 4 + 4 * 3 + 3 + 2 * (6 + 5 + 4)
                                : 7 * 6 + 6 * 5 + 5 * 4 + 4 * 3 + 6 + 5 + 4 + 3);
}

TEST(MnistBnNetwork, GradientsSigmoidPlain) { check_network_gradients(Activation::sigmoid, false); }
TEST(MnistBnNetwork, GradientsSigmoidBatchNorm) { check_network_gradients(Activation::sigmoid, true); }
TEST(MnistBnNetwork, GradientsReluPlain) { check_network_gradients(Activation::relu, false); }
TEST(MnistBnNetwork, GradientsReluBatchNorm) { check_network_gradients(Activation::relu, true); }

TEST(MnistBnNetwork, SameInitialWeightsWithAndWithoutBatchNorm) {
  NetworkConfig plain, bn;
  bn.batch_norm = true;
  Network a(plain, 7), b(bn, 7), c(plain, 8);
  for (std::size_t l = 0; l < a.linears().size(); ++l) EXPECT_EQ(a.linears()[l].wt, b.linears()[l].wt);
  EXPECT_NE(a.linears()[0].wt, c.linears()[0].wt);
  EXPECT_TRUE(b.linears()[0].bias.empty());
  EXPECT_EQ(b.linears()[3].bias.size(), 10u);
  EXPECT_EQ(b.norms().size(), 3u);
}

TEST(MnistBnIdx, ReadsGzipAndRejectsBadFiles) {
  const std::string path = ::testing::TempDir() + "mnist_bn_idx_test.gz";
  auto write = [&](const std::vector<unsigned char>& bytes) {
    gzFile f = gzopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  };
  std::vector<std::int64_t> dims;
  write({0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9});
  EXPECT_EQ(read_idx(path, 1, dims), (std::vector<std::uint8_t>{7, 8, 9}));
  EXPECT_EQ(dims, (std::vector<std::int64_t>{3}));
  write({0, 0, 8, 1, 0, 0, 0, 4, 7, 8, 9});  // one byte short
  EXPECT_THROW(read_idx(path, 1, dims), std::runtime_error);
  write({0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0});  // float elements
  EXPECT_THROW(read_idx(path, 1, dims), std::runtime_error);
  EXPECT_THROW(read_idx(path + ".missing", 1, dims), std::runtime_error);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace mnist_bn

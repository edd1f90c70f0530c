#include "mlp.hpp"

#include <algorithm>
#include <numbers>
#include <stdexcept>

#include "bnorm/batch_norm.hpp"
#include "gemm.hpp"

namespace mnist_bn {

std::string to_string(Activation a) { return a == Activation::sigmoid ? "sigmoid" : "relu"; }

namespace {

std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

bnorm::TensorDesc nc_desc(std::int64_t n, std::int64_t c) {
  return bnorm::TensorDesc(bnorm::DType::f32, bnorm::Layout::channels_first, {n, c});
}

}  // namespace

std::unique_ptr<Norm> make_batch_norm(std::int64_t channels) {
  bnorm::BatchNorm::Options o;
  o.num_features = channels;
  return std::make_unique<NormOf<bnorm::BatchNorm>>(o);
}

std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ull);
  splitmix64(x);
  return splitmix64(x);
}

Random::Random(std::uint64_t seed) {
  std::uint64_t x = seed;
  for (auto& s : state_) s = splitmix64(x);
}

std::uint64_t Random::next() {
  const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
  const std::uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = rotl(state_[3], 45);
  return result;
}

double Random::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

std::uint64_t Random::below(std::uint64_t n) {
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
}

double Random::normal() {
  // Box-Muller with u1 in (0, 1]: no log(0).
  const double u1 = 1.0 - uniform(), u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

Network::Network(const NetworkConfig& config, std::uint64_t init_seed, NormFactory make_norm)
    : config_(config) {
  const auto& w = config_.widths;
  if (w.size() < 2) throw std::invalid_argument("the network needs at least an input and an output width");
  Random rng(init_seed);
  std::size_t offset = 0;
  const std::size_t layers = w.size() - 1;
  for (std::size_t l = 0; l < layers; ++l) {
    Linear lin;
    lin.in = w[l];
    lin.out = w[l + 1];
    lin.wt.resize(static_cast<std::size_t>(lin.in * lin.out));
    const double stddev = 1.0 / std::sqrt(static_cast<double>(lin.in));
    for (auto& v : lin.wt) v = static_cast<float>(rng.normal() * stddev);
    const bool hidden = l + 1 < layers;
    if (!(hidden && config_.batch_norm)) lin.bias.assign(static_cast<std::size_t>(lin.out), 0.0f);
    lin.grad_offset = offset;
    offset += lin.wt.size() + lin.bias.size();
    linears_.push_back(std::move(lin));
    if (hidden && config_.batch_norm) norms_.push_back(make_norm(w[l + 1]));
  }
  grads_.assign(offset, 0.0);
}

void Network::forward(Workspace& ws, const float* x, std::int64_t n) {
  const std::size_t layers = linears_.size();
  ws.z.resize(layers - 1);
  ws.y.resize(layers - 1);
  ws.h.resize(layers - 1);
  const float* src = x;
  for (std::size_t l = 0; l < layers; ++l) {
    const Linear& lin = linears_[l];
    const bool hidden = l + 1 < layers;
    std::vector<float>& z = hidden ? ws.z[l] : ws.logits;
    z.resize(static_cast<std::size_t>(n * lin.out));
    gemm(n, lin.out, lin.in, src, lin.wt.data(), z.data(), false);
    if (!lin.bias.empty())
      for (std::int64_t r = 0; r < n; ++r)
        for (std::int64_t o = 0; o < lin.out; ++o)
          z[static_cast<std::size_t>(r * lin.out + o)] += lin.bias[o];
    if (!hidden) break;
    const float* y = z.data();
    if (config_.batch_norm) {
      ws.y[l].resize(z.size());
      norms_[l]->forward(nc_desc(n, lin.out), z.data(), ws.y[l].data());
      y = ws.y[l].data();
    }
    ws.h[l].resize(z.size());
    activation_forward(config_.activation, n * lin.out, y, ws.h[l].data());
    src = ws.h[l].data();
  }
}

double Network::forward_backward(const float* x, const std::uint8_t* labels, std::int64_t n,
                                 double grad_scale) {
  Workspace& ws = train_ws_;
  for (auto& norm : norms_) norm->train(true);
  forward(ws, x, n);
  const std::size_t layers = linears_.size();
  ws.diff.resize(ws.logits.size());
  const double loss =
      softmax_cross_entropy(n, linears_.back().out, ws.logits.data(), labels, grad_scale, ws.diff.data());
  std::fill(grads_.begin(), grads_.end(), 0.0);
  // ws.diff holds d loss / d (Linear l's output) on entry to each iteration.
  for (std::size_t l = layers; l-- > 0;) {
    const Linear& lin = linears_[l];
    const float* layer_in = l == 0 ? x : ws.h[l - 1].data();
    double* g = grads_.data() + lin.grad_offset;
    gemm_at_b_accumulate(n, lin.out, lin.in, layer_in, ws.diff.data(), g);
    if (!lin.bias.empty()) {
      double* gb = g + lin.wt.size();
      for (std::int64_t r = 0; r < n; ++r)
        for (std::int64_t o = 0; o < lin.out; ++o) gb[o] += static_cast<double>(ws.diff[r * lin.out + o]);
    }
    if (l == 0) break;
    // d loss / d h[l-1] = diff * W (W = wt^T, out x in).
    ws.wt_transposed.resize(lin.wt.size());
    transpose(lin.in, lin.out, lin.wt.data(), ws.wt_transposed.data());
    ws.diff2.resize(static_cast<std::size_t>(n * lin.in));
    gemm(n, lin.in, lin.out, ws.diff.data(), ws.wt_transposed.data(), ws.diff2.data(), false);
    // Through the activation (in place), then BN into ws.diff.
    const std::size_t k = l - 1;
    const float* y = config_.batch_norm ? ws.y[k].data() : ws.z[k].data();
    activation_backward(config_.activation, n * lin.in, y, ws.h[k].data(), ws.diff2.data(), ws.diff2.data());
    ws.diff.resize(ws.diff2.size());
    if (config_.batch_norm)
      norms_[k]->backward(nc_desc(n, lin.in), ws.z[k].data(), ws.diff2.data(), ws.diff.data());
    else
      ws.diff.swap(ws.diff2);
  }
  return loss;
}

void Network::sgd_step(double lr) {
  for (Linear& lin : linears_) {
    const double* g = grads_.data() + lin.grad_offset;
    for (std::size_t i = 0; i < lin.wt.size(); ++i)
      lin.wt[i] = static_cast<float>(static_cast<double>(lin.wt[i]) - lr * g[i]);
    g += lin.wt.size();
    for (std::size_t i = 0; i < lin.bias.size(); ++i)
      lin.bias[i] = static_cast<float>(static_cast<double>(lin.bias[i]) - lr * g[i]);
  }
  for (auto& norm : norms_) {
    auto w = norm->weight();
    auto b = norm->bias();
    auto gw = norm->weight_grad();
    auto gb = norm->bias_grad();
    for (std::size_t i = 0; i < w.size(); ++i)
      w[i] = static_cast<float>(w[i] - lr * static_cast<double>(gw[i]));
    for (std::size_t i = 0; i < b.size(); ++i)
      b[i] = static_cast<float>(b[i] - lr * static_cast<double>(gb[i]));
  }
}

void Network::predict(const float* x, std::int64_t n, std::vector<float>& logits) {
  for (auto& norm : norms_) norm->train(false);
  forward(eval_ws_, x, n);
  for (auto& norm : norms_) norm->train(true);
  logits = eval_ws_.logits;
}

std::int64_t Network::count_correct(const float* x, const std::uint8_t* labels, std::int64_t n,
                                    std::int64_t chunk) {
  const std::int64_t in = linears_.front().in, classes = linears_.back().out;
  std::int64_t correct = 0;
  for (auto& norm : norms_) norm->train(false);
  for (std::int64_t r0 = 0; r0 < n; r0 += chunk) {
    const std::int64_t rows = std::min(chunk, n - r0);
    forward(eval_ws_, x + r0 * in, rows);
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* z = eval_ws_.logits.data() + r * classes;
      // A NaN logit never wins (comparisons with NaN are false), so a
      // diverged network scores at most chance.
      std::int64_t best = 0;
      for (std::int64_t j = 1; j < classes; ++j)
        if (z[j] > z[best]) best = j;
      correct += (best == labels[r0 + r] && !std::isnan(z[best])) ? 1 : 0;
    }
  }
  for (auto& norm : norms_) norm->train(true);
  return correct;
}

}  // namespace mnist_bn

// The network of Ioffe & Szegedy's MNIST experiment (2015, section 4.1):
// fully connected 784-100-100-100-10, sigmoid (or ReLU) hidden units, softmax
// cross-entropy, plain SGD, optionally with BatchNorm between each hidden
// Linear and its activation (the Linear then has no bias: BN's beta takes
// its place, as in the paper).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/tensor.hpp"

namespace mnist_bn {

enum class Activation { sigmoid, relu };

/// "sigmoid" or "relu".
std::string to_string(Activation a);

/// Sigmoid or ReLU, elementwise over n values: dst = f(src).
template <class T>
void activation_forward(Activation a, std::int64_t n, const T* src, T* dst) {
  if (a == Activation::sigmoid) {
    for (std::int64_t i = 0; i < n; ++i) dst[i] = T(1) / (T(1) + std::exp(-src[i]));
  } else {
    for (std::int64_t i = 0; i < n; ++i) dst[i] = src[i] > T(0) ? src[i] : T(0);
  }
}

/// diff_src = diff_dst * f'(src), with dst = f(src) from the forward (the
/// sigmoid's derivative is dst * (1 - dst); ReLU's is 1 where src > 0).
template <class T>
void activation_backward(Activation a, std::int64_t n, const T* src, const T* dst, const T* diff_dst,
                         T* diff_src) {
  if (a == Activation::sigmoid) {
    for (std::int64_t i = 0; i < n; ++i) diff_src[i] = diff_dst[i] * dst[i] * (T(1) - dst[i]);
  } else {
    for (std::int64_t i = 0; i < n; ++i) diff_src[i] = src[i] > T(0) ? diff_dst[i] : T(0);
  }
}

/// Softmax cross-entropy over `rows` rows of `classes` logits. Returns the
/// SUM of the per-row losses log(sum_j exp z_j) - z_label, in double and
/// computed stably (max subtracted). diff_logits (optional) receives
/// (softmax(z) - onehot(label)) * grad_scale; grad_scale is 1 / the global
/// batch size, so that shards of a data-parallel batch add up to the mean.
template <class T>
double softmax_cross_entropy(std::int64_t rows, std::int64_t classes, const T* logits,
                             const std::uint8_t* labels, double grad_scale, T* diff_logits) {
  double total = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* z = logits + r * classes;
    double zmax = z[0];
    for (std::int64_t j = 1; j < classes; ++j) zmax = std::fmax(zmax, static_cast<double>(z[j]));
    double sum = 0;
    for (std::int64_t j = 0; j < classes; ++j) sum += std::exp(static_cast<double>(z[j]) - zmax);
    const double log_sum = zmax + std::log(sum);
    total += log_sum - static_cast<double>(z[labels[r]]);
    if (diff_logits) {
      T* d = diff_logits + r * classes;
      for (std::int64_t j = 0; j < classes; ++j) {
        const double p = std::exp(static_cast<double>(z[j]) - log_sum);
        d[j] = static_cast<T>((p - (j == labels[r] ? 1.0 : 0.0)) * grad_scale);
      }
    }
  }
  return total;
}

/// A normalization layer between a Linear and its activation: BatchNorm or
/// SyncBatchNorm behind one interface (rank-2 (N, C) f32 data).
class Norm {
 public:
  virtual ~Norm() = default;
  virtual void train(bool on) = 0;
  virtual void forward(const bnorm::TensorDesc& desc, const float* src, float* dst) = 0;
  virtual void backward(const bnorm::TensorDesc& desc, const float* src, const float* diff_dst,
                        float* diff_src) = 0;
  virtual std::span<float> weight() = 0;
  virtual std::span<float> bias() = 0;
  /// Gradients of the last backward, already summed over every process.
  virtual std::span<const float> weight_grad() const = 0;
  virtual std::span<const float> bias_grad() const = 0;
};

/// Norm over a bnorm layer class (BatchNorm, SyncBatchNorm: same interface).
template <class Layer>
class NormOf final : public Norm {
 public:
  template <class... Args>
  explicit NormOf(Args&&... args) : layer_(std::forward<Args>(args)...) {}
  void train(bool on) override { layer_.train(on); }
  void forward(const bnorm::TensorDesc& desc, const float* src, float* dst) override {
    layer_.forward(desc, src, desc, dst);
  }
  void backward(const bnorm::TensorDesc& desc, const float* src, const float* diff_dst,
                float* diff_src) override {
    layer_.backward(desc, src, desc, diff_dst, desc, diff_src);
  }
  std::span<float> weight() override { return layer_.weight(); }
  std::span<float> bias() override { return layer_.bias(); }
  std::span<const float> weight_grad() const override { return layer_.weight_grad(); }
  std::span<const float> bias_grad() const override { return layer_.bias_grad(); }
  Layer& layer() noexcept { return layer_; }

 private:
  Layer layer_;
};

/// Makes the normalization layer for `channels` features.
using NormFactory = std::function<std::unique_ptr<Norm>(std::int64_t channels)>;

/// bnorm::BatchNorm (BatchNorm1d defaults: eps 1e-5, momentum 0.1, affine).
std::unique_ptr<Norm> make_batch_norm(std::int64_t channels);

/// A small deterministic random source (xoshiro256**, seeded by SplitMix64)
/// with its own uniform and Gaussian draws: the numbers do not depend on the
/// standard library's distributions, which are implementation-defined.
class Random {
 public:
  explicit Random(std::uint64_t seed);
  std::uint64_t next();
  /// Uniform in [0, 1) with 53 random bits.
  double uniform();
  /// Uniform integer in [0, n).
  std::uint64_t below(std::uint64_t n);
  /// Standard normal (Box-Muller).
  double normal();

 private:
  std::uint64_t state_[4];
};

/// Mixes a seed with a stream number (SplitMix64), for independent streams.
std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream);

/// One fully connected layer: dst = src * wt (+ bias), wt stored in x out.
struct Linear {
  std::int64_t in = 0, out = 0;
  std::vector<float> wt;        ///< in x out
  std::vector<float> bias;      ///< out values, or empty (BN follows)
  std::size_t grad_offset = 0;  ///< where d wt (then d bias) start in the network's gradient buffer
};

struct NetworkConfig {
  std::vector<std::int64_t> widths{784, 100, 100, 100, 10};
  Activation activation = Activation::sigmoid;
  bool batch_norm = false;
};

class Network {
 public:
  /// Weights ~ N(0, 1 / fan_in) (LeCun normal) drawn in layer order from
  /// `init_seed`, biases 0: the same draws with and without BN, which only
  /// drops the hidden Linear biases. `make_norm` is used when
  /// config.batch_norm (default: bnorm::BatchNorm).
  Network(const NetworkConfig& config, std::uint64_t init_seed, NormFactory make_norm = make_batch_norm);

  const NetworkConfig& config() const noexcept { return config_; }

  /// Forward and backward of one (shard of a) training batch of n rows.
  /// Sets the Linear gradients (the gradient buffer) and the norms'
  /// gradients; diff of the loss is scaled by grad_scale (1 / global batch).
  /// Returns the sum of the n rows' losses.
  double forward_backward(const float* x, const std::uint8_t* labels, std::int64_t n, double grad_scale);

  /// All Linear weight and bias gradients in one buffer (double), so a
  /// data-parallel run can sum them over processes in one collective.
  std::span<double> linear_grads() noexcept { return grads_; }

  /// Plain SGD: p -= lr * grad for every Linear and norm parameter.
  void sgd_step(double lr);

  /// Logits of n rows in evaluation mode (BN uses its running statistics).
  void predict(const float* x, std::int64_t n, std::vector<float>& logits);
  /// Number of the n rows whose arg-max logit is the label (evaluation mode,
  /// in chunks of `chunk` rows).
  std::int64_t count_correct(const float* x, const std::uint8_t* labels, std::int64_t n,
                             std::int64_t chunk = 1000);

  std::vector<Linear>& linears() noexcept { return linears_; }
  std::vector<std::unique_ptr<Norm>>& norms() noexcept { return norms_; }

 private:
  struct Workspace {
    // Per hidden layer: z (Linear out), y (BN out, = z without BN), h = f(y).
    std::vector<std::vector<float>> z, y, h;
    std::vector<float> logits, diff, diff2, wt_transposed;
  };
  void forward(Workspace& ws, const float* x, std::int64_t n);

  NetworkConfig config_;
  std::vector<Linear> linears_;
  std::vector<std::unique_ptr<Norm>> norms_;
  std::vector<double> grads_;
  Workspace train_ws_, eval_ws_;
};

}  // namespace mnist_bn

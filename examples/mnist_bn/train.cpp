#include "train.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>

namespace mnist_bn {
namespace {

// Streams of the run's seed: weights and data order are independent, and
// identical with and without BN for the same seed.
constexpr std::uint64_t kInitStream = 1, kOrderStream = 2;
// The test subset is the same for every run and seed.
constexpr std::uint64_t kSubsetSeed = 20150211;

std::int64_t split_point(std::int64_t total, int parts, int part) {
  const std::int64_t base = total / parts, extra = total % parts;
  return base * part + std::min<std::int64_t>(part, extra);
}

void shuffle(std::vector<std::int32_t>& v, Random& rng) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

}  // namespace

std::string RunSpec::name() const {
  std::ostringstream o;
  o << to_string(activation) << ' ' << variant() << " lr=" << lr;
  return o.str();
}

TestSubset make_test_subset(const Dataset& test, std::int64_t rows) {
  TestSubset s;
  s.rows = rows <= 0 || rows > test.count ? test.count : rows;
  std::vector<std::int32_t> order(static_cast<std::size_t>(test.count));
  std::iota(order.begin(), order.end(), 0);
  if (s.rows < test.count) {
    Random rng(kSubsetSeed);
    shuffle(order, rng);
  }
  s.images.resize(static_cast<std::size_t>(s.rows * test.pixels));
  s.labels.resize(static_cast<std::size_t>(s.rows));
  for (std::int64_t i = 0; i < s.rows; ++i) {
    std::copy_n(test.images.begin() + order[i] * test.pixels, test.pixels,
                s.images.begin() + i * test.pixels);
    s.labels[i] = test.labels[order[i]];
  }
  return s;
}

RunResult train_run(const RunSpec& spec, const Dataset& train, const Dataset& test, const TestSubset& subset,
                    bnorm::comm::Communicator& comm, const NormFactory& make_norm,
                    const std::function<void(const RunResult&)>& progress) {
  const auto start = std::chrono::steady_clock::now();
  RunResult result;
  result.spec = spec;
  const bool lead = comm.rank() == 0;

  NetworkConfig config;
  config.widths = {train.pixels, 100, 100, 100, 10};
  config.activation = spec.activation;
  config.batch_norm = spec.batch_norm;
  Network net(config, derive_seed(spec.seed, kInitStream), make_norm);

  Random order_rng(derive_seed(spec.seed, kOrderStream));
  std::vector<std::int32_t> order(static_cast<std::size_t>(train.count));
  std::iota(order.begin(), order.end(), 0);
  shuffle(order, order_rng);
  std::size_t next = 0;

  // This process's rows of every global batch.
  const std::int64_t lo = split_point(spec.batch, comm.size(), comm.rank());
  const std::int64_t hi = split_point(spec.batch, comm.size(), comm.rank() + 1);
  std::vector<float> x(static_cast<std::size_t>(std::max<std::int64_t>(hi - lo, 1) * train.pixels));
  std::vector<std::uint8_t> y(static_cast<std::size_t>(std::max<std::int64_t>(hi - lo, 1)));

  auto evaluate = [&](std::int64_t step, double train_loss) {
    if (!lead) return;
    const std::int64_t correct = net.count_correct(subset.images.data(), subset.labels.data(), subset.rows);
    result.curve.push_back(
        {step, train_loss, static_cast<double>(correct) / static_cast<double>(subset.rows)});
    if (progress) progress(result);
  };
  evaluate(0, std::numeric_limits<double>::quiet_NaN());

  double interval_loss = 0;
  std::int64_t interval_steps = 0;
  result.step_loss.reserve(static_cast<std::size_t>(spec.steps));
  for (std::int64_t step = 1; step <= spec.steps; ++step) {
    // Epochs: a new permutation when the next global batch would not fit.
    if (next + static_cast<std::size_t>(spec.batch) > order.size()) {
      shuffle(order, order_rng);
      next = 0;
    }
    for (std::int64_t r = lo; r < hi; ++r) {
      const std::int32_t i = order[next + static_cast<std::size_t>(r)];
      std::copy_n(train.images.begin() + static_cast<std::int64_t>(i) * train.pixels, train.pixels,
                  x.begin() + (r - lo) * train.pixels);
      y[static_cast<std::size_t>(r - lo)] = train.labels[static_cast<std::size_t>(i)];
    }
    next += static_cast<std::size_t>(spec.batch);

    double loss = net.forward_backward(x.data(), y.data(), hi - lo, 1.0 / static_cast<double>(spec.batch));
    if (comm.size() > 1) {
      // SyncBatchNorm's gamma / beta gradients are already global sums;
      // only the Linear layers' and the loss need summing.
      comm.allreduce_sum(net.linear_grads().data(), net.linear_grads().size());
      comm.allreduce_sum(&loss, 1);
    }
    loss /= static_cast<double>(spec.batch);
    result.step_loss.push_back(loss);
    if (!std::isfinite(loss)) {
      result.diverged = true;
      result.diverged_at = step;
      evaluate(step, loss);
      break;
    }
    net.sgd_step(spec.lr);
    interval_loss += loss;
    ++interval_steps;
    if (step % spec.eval_every == 0 || step == spec.steps) {
      evaluate(step, interval_loss / static_cast<double>(interval_steps));
      interval_loss = 0;
      interval_steps = 0;
    }
  }
  if (lead && spec.final_full_eval && !result.diverged)
    result.final_accuracy =
        static_cast<double>(net.count_correct(test.images.data(), test.labels.data(), test.count)) /
        static_cast<double>(test.count);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

std::int64_t steps_to_reach(const RunResult& r, double target) {
  for (const EvalPoint& p : r.curve)
    if (p.test_accuracy >= target) return p.step;
  return -1;
}

}  // namespace mnist_bn

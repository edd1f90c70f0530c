// bnorm-exec-bench: the executor's throughput next to the time its oneDNN
// convolutions take. For each model it runs the graph on random input of a
// given batch size, interleaving the models repetition by repetition (so a
// folded and an unfolded model see the same machine), and reports the
// median time per batch, rows per second, and, from a profiled run, the
// time inside oneDNN's convolution primitives (execute only) and the rest
// by op type. Nothing asserts a time; docs/PERFORMANCE.md records runs.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "exec/executor.hpp"

namespace {

using bnorm::exec::Executor;
using bnorm::exec::Tensor;

struct Bench {
  std::string path;
  bnorm::model::OnnxModel model;
  Executor executor;
  std::vector<Tensor> inputs;
  std::vector<double> times;
};

std::vector<Tensor> random_inputs(const Executor& ex, std::int64_t batch, std::uint64_t seed) {
  std::vector<Tensor> out;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const auto& in : ex.inputs()) {
    if (in.type != bnorm::exec::ElementType::f32 || !in.known_rank || in.shape.empty())
      throw std::runtime_error("input '" + in.name + "': the bench feeds float32 inputs of known rank");
    bnorm::exec::Shape shape = in.shape;
    shape[0] = batch;
    for (std::size_t d = 1; d < shape.size(); ++d)
      if (shape[d] < 0) throw std::runtime_error("input '" + in.name + "' has a symbolic dim besides the batch");
    Tensor t(bnorm::exec::ElementType::f32, shape);
    for (std::int64_t i = 0; i < t.elements(); ++i) t.data<float>()[i] = normal(rng);
    out.push_back(std::move(t));
  }
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bnorm-exec-bench: executor throughput and its oneDNN convolution time"};
  std::vector<std::string> paths;
  std::int64_t batch = 8;
  int reps = 11;
  app.add_option("MODELS", paths, "The .onnx files, run side by side")->required();
  app.add_option("--batch", batch, "Rows per run")->capture_default_str();
  app.add_option("--reps", reps, "Timed repetitions (median)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    std::vector<Bench> benches;
    for (const auto& p : paths) {
      auto m = bnorm::model::OnnxModel::load(p);
      Executor ex(m);
      auto inputs = random_inputs(ex, batch, 42);
      benches.push_back({p, std::move(m), std::move(ex), std::move(inputs), {}});
    }
    using clock = std::chrono::steady_clock;
    for (auto& b : benches)
      for (int i = 0; i < 2; ++i) b.executor.run(b.inputs);  // warm-up: primitives, caches, pages
    for (int r = 0; r < reps; ++r)
      for (auto& b : benches) {
        const auto start = clock::now();
        b.executor.run(b.inputs);
        b.times.push_back(std::chrono::duration<double>(clock::now() - start).count());
      }
    std::printf("bnorm-exec-bench: batch %lld, medians of %d interleaved repetitions\n", static_cast<long long>(batch),
                reps);
    std::printf("%-44s %10s %10s %12s %10s %9s  %s\n", "model", "run_ms", "rows/s", "onednn_conv", "conv/run",
                "nodes", "profiled run: ms per op type");
    for (auto& b : benches) {
      const double run = median(b.times);
      // One profiled pass, averaged over a few runs, for the breakdown.
      b.executor.reset_profile();
      b.executor.set_profiling(true);
      const int profiled = std::max(3, reps / 3);
      for (int i = 0; i < profiled; ++i) b.executor.run(b.inputs);
      b.executor.set_profiling(false);
      const auto& prim = b.executor.primitive_seconds();
      const double conv = (prim.count("convolution") ? prim.at("convolution") : 0.0) / profiled;
      std::vector<std::pair<double, std::string>> ops;
      for (const auto& [op, s] : b.executor.profile().seconds) ops.emplace_back(s / profiled, op);
      std::sort(ops.rbegin(), ops.rend());
      std::string breakdown;
      for (std::size_t i = 0; i < ops.size() && i < 6; ++i) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s%s %.2f", i ? ", " : "", ops[i].second.c_str(), ops[i].first * 1e3);
        breakdown += buf;
      }
      std::printf("%-44s %10.3f %10.1f %12.3f %10.2f %9d  %s\n", b.path.c_str(), run * 1e3,
                  static_cast<double>(batch) / run, conv * 1e3, conv / run, b.model.graph().node_size(),
                  breakdown.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bnorm-exec-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}

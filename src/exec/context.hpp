// What ops share while a graph runs: the oneDNN engine and stream, and how
// BatchNormalization nodes behave (running statistics, or batch statistics,
// possibly supplied from outside, for calibration).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <chrono>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "exec/tensor.hpp"

namespace bnorm::exec {

/// Which statistics inference-mode BatchNormalization nodes normalize with.
enum class BatchNormStatistics {
  running,  ///< the stored input_mean / input_var (inference)
  batch,    ///< the current batch's (as in training; for calibration)
};

/// Supplies the statistics BatchNormalization nodes normalize with in
/// BatchNormStatistics::batch mode (calibration): the batch's own, or, when
/// several processes share a batch, the statistics of the whole batch.
class BatchStatisticsSource {
 public:
  virtual ~BatchStatisticsSource() = default;
  /// `node` is the node's index in the graph and `input` its X (N, C,
  /// ...); sets the per-channel mean and biased variance to normalize with.
  virtual void statistics(int node, const Tensor& input, std::vector<double>& mean, std::vector<double>& var) = 0;
};

class ExecContext {
 public:
  ExecContext() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  dnnl::engine& engine() noexcept { return engine_; }
  dnnl::stream& stream() noexcept { return stream_; }

  /// Time spent inside oneDNN primitives (execute only: no reorders, no
  /// conversions), per primitive kind, while `profiling` is on.
  bool profiling = false;
  std::map<std::string, double> primitive_seconds;

  /// Runs a oneDNN primitive, timing it under `kind` when profiling.
  void execute(const char* kind, const dnnl::primitive& p, const std::unordered_map<int, dnnl::memory>& args) {
    const auto start = profiling ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    p.execute(stream_, args);
    stream_.wait();
    if (profiling) primitive_seconds[kind] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  BatchNormStatistics batch_norm_statistics = BatchNormStatistics::running;
  /// Null: batch mode computes each batch's statistics itself.
  BatchStatisticsSource* statistics_source = nullptr;

 private:
  dnnl::engine engine_;
  dnnl::stream stream_;
};

}  // namespace bnorm::exec

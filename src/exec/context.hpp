// What ops share while a graph runs: the oneDNN engine and stream, and how
// BatchNormalization nodes behave (running statistics, or batch statistics
// with an observer, for calibration).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <string>

#include "exec/tensor.hpp"

namespace bnorm::exec {

/// Which statistics inference-mode BatchNormalization nodes normalize with.
enum class BatchNormStatistics {
  running,  ///< the stored input_mean / input_var (inference)
  batch,    ///< the current batch's (as in training; for calibration)
};

/// Sees the input of every BatchNormalization node as it runs.
class BatchNormObserver {
 public:
  virtual ~BatchNormObserver() = default;
  /// `node` is the node's index in the graph, `input` its X.
  virtual void observe(int node, const Tensor& input) = 0;
};

class ExecContext {
 public:
  ExecContext() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  dnnl::engine& engine() noexcept { return engine_; }
  dnnl::stream& stream() noexcept { return stream_; }

  BatchNormStatistics batch_norm_statistics = BatchNormStatistics::running;
  BatchNormObserver* observer = nullptr;

 private:
  dnnl::engine engine_;
  dnnl::stream stream_;
};

}  // namespace bnorm::exec

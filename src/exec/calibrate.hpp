// Recalibrating the statistics of every BatchNormalization node ("precise
// BN", as PyTorch's update_bn and fvcore do): one pass over the data with
// every BN normalizing by the current batch's statistics, while each BN's
// input is accumulated per channel. The stored input_mean and input_var
// become the exact mean and the unbiased variance of that input over the
// whole set: per-batch (count, mean, M2) in double, merged with Chan's
// formula, never an average of batch variances.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "bnorm/communicator.hpp"
#include "exec/input_data.hpp"
#include "model/onnx_model.hpp"

namespace bnorm::exec {

/// Per-channel count, mean and sum of squared deviations.
struct Moments {
  std::int64_t count = 0;
  std::vector<double> mean, m2;

  /// Adds the channels of x (N, C, spatial...) to these moments.
  void add(const Tensor& x);
  /// Chan's parallel merge of another set of moments of the same channels.
  void merge(const Moments& other);
};

/// What calibration did to one BatchNormalization node.
struct CalibratedNode {
  int node = -1;
  std::string name;
  std::int64_t channels = 0;
  std::int64_t count = 0;  // values per channel seen
  std::vector<double> old_mean, old_var, new_mean, new_var;
  /// Largest |new_mean - old_mean| / sqrt(old_var + eps) over the channels
  /// (the shift in units of the old standard deviation), and its channel;
  /// NaN, and the first such channel, when a channel's old statistics are.
  double max_mean_shift = 0.0;
  std::int64_t max_mean_shift_channel = 0;
  /// Largest (new_var + eps) / (old_var + eps), or its inverse when larger,
  /// and its channel; NaN as for max_mean_shift.
  double max_var_ratio = 1.0;
  std::int64_t max_var_ratio_channel = 0;
};

struct CalibrationOptions {
  std::int64_t batch_size = 64;
  /// Called after each batch with (rows done, rows total) of this process.
  std::function<void(std::int64_t, std::int64_t)> progress;
  /// Processes sharing the work: each batch of batch_size rows is split
  /// over them, and every BN normalizes with the statistics of the whole
  /// batch (merged over the processes, as SyncBatchNorm does), so the result
  /// is the one-process result whatever the number of processes. Null: one
  /// process.
  comm::Communicator* comm = nullptr;
};

/// Recalibrates `model` in place from `data` and returns, per BN node in
/// graph order, the old and new statistics. Throws Error(invalid_argument)
/// when a BN's input_mean or input_var is not a constant of the model, a
/// batch gives a BN fewer than 2 values per channel (a larger batch size is
/// needed), or a new statistic is NaN or infinite as stored (the model is
/// then partly rewritten: the caller must not write it); Error from the
/// executor otherwise.
std::vector<CalibratedNode> calibrate(model::OnnxModel& model, const std::filesystem::path& data,
                                      const CalibrationOptions& options);

}  // namespace bnorm::exec

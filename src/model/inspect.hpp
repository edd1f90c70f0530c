// Inspecting the BatchNormalization nodes of a model: one row per node and
// findings about their statistics and parameters.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "model/onnx_model.hpp"

namespace bnorm::model {

enum class Severity { info, warning, error };
std::string_view to_string(Severity s) noexcept;

struct Finding {
  Severity severity = Severity::info;
  std::string code;     // stable identifier, e.g. "untrained_statistics"
  std::string node;     // the BN node's name
  std::string message;  // one line
};

/// min / max / mean of a parameter's values.
struct Summary {
  double min = 0.0, max = 0.0, mean = 0.0;
};

struct BatchNormRow {
  std::string name;
  std::string producer;  // e.g. "Conv 'conv1'", or "graph input 'x'"
  std::string input, output;
  std::int64_t channels = -1;  // -1 when unknown
  double epsilon = 0.0, momentum = 0.0;
  bool training_mode = false;
  /// scale, B, input_mean, input_var; empty when not a constant.
  std::optional<Summary> params[4];
  /// Where it folds, or why it cannot (exactly one is set).
  std::optional<std::string> fold_into, fold_refusal;
};

struct InspectReport {
  std::vector<BatchNormRow> rows;
  std::vector<Finding> findings;
  int count(Severity s) const;
};

/// Examines every BatchNormalization of the main graph. Findings:
/// statistics missing or computed at run time; statistics that look never
/// trained (every mean 0 and every var 1); NaN or Inf in a parameter;
/// negative var; var + eps == 0; eps too small for a float16 model; channels
/// whose scale is 0; channel means or variances that are extreme outliers in
/// their layer; training_mode = 1; and whether the node can be folded.
InspectReport inspect(const OnnxModel& model);

}  // namespace bnorm::model

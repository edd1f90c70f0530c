// The per-layer calibration report, shared by calibrate and prepare.
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "exec/calibrate.hpp"

namespace bnorm::cli {

/// JSON of one node: statistics before and after, largest shifts.
nlohmann::json calibration_json(const exec::CalibratedNode& n);

/// Prints the report: a table, or (json) one object with `header` fields
/// plus "batch_norms".
void print_calibration(const std::vector<exec::CalibratedNode>& report, bool json, nlohmann::json header);

}  // namespace bnorm::cli

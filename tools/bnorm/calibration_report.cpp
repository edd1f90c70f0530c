#include "calibration_report.hpp"

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "command.hpp"

namespace bnorm::cli {
namespace {

nlohmann::json summary(const std::vector<double>& v) {
  if (v.empty()) return nullptr;
  double lo = v[0], hi = v[0], sum = 0.0;
  for (double x : v) {
    lo = std::min(lo, x);
    hi = std::max(hi, x);
    sum += x;
  }
  return {{"min", lo}, {"max", hi}, {"mean", sum / static_cast<double>(v.size())}};
}

double average(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

}  // namespace

nlohmann::json calibration_json(const exec::CalibratedNode& n) {
  return {{"name", n.name},
          {"channels", n.channels},
          {"values_per_channel", n.count},
          {"old_mean", summary(n.old_mean)},
          {"new_mean", summary(n.new_mean)},
          {"old_var", summary(n.old_var)},
          {"new_var", summary(n.new_var)},
          {"max_mean_shift", {{"value", n.max_mean_shift}, {"channel", n.max_mean_shift_channel}}},
          {"max_var_ratio", {{"value", n.max_var_ratio}, {"channel", n.max_var_ratio_channel}}}};
}

void print_calibration(const std::vector<exec::CalibratedNode>& report, bool json, nlohmann::json header) {
  if (json) {
    nlohmann::json nodes = nlohmann::json::array();
    for (const auto& n : report) nodes.push_back(calibration_json(n));
    header["batch_norms"] = nodes;
    print_json(header);
    return;
  }
  std::printf("%-40s %6s %12s %12s %12s %12s %16s %16s\n", "batch_norm", "C", "mean before", "mean after",
              "var before", "var after", "max mean shift", "max var ratio");
  for (const auto& n : report)
    std::printf("%-40s %6lld %12.4g %12.4g %12.4g %12.4g %9.3g sd @%-4lld %9.3gx @%-4lld\n", n.name.c_str(),
                static_cast<long long>(n.channels), average(n.old_mean), average(n.new_mean), average(n.old_var),
                average(n.new_var), n.max_mean_shift, static_cast<long long>(n.max_mean_shift_channel),
                n.max_var_ratio, static_cast<long long>(n.max_var_ratio_channel));
  std::printf("recalibrated %zu BatchNormalization node%s; mean/var columns average over channels, shifts are in "
              "units of the old standard deviation\n",
              report.size(), report.size() == 1 ? "" : "s");
}

}  // namespace bnorm::cli

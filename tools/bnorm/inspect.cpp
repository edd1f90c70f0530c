// `bnorm inspect MODEL [--json] [--fail-on error|warning]`: one row per
// BatchNormalization and findings about its statistics (docs/CLI.md).

#include "model/inspect.hpp"

#include <charconv>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

#include "command.hpp"

namespace bnorm::cli {
namespace {

using model::Severity;

// A float attribute as written (1e-05, not 9.999999747378752e-06): the
// shortest decimal that reads back as the same float.
double as_written(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, static_cast<float>(v));
  return std::strtod(std::string(buf, r.ptr).c_str(), nullptr);
}

nlohmann::json summary_json(const std::optional<model::Summary>& s) {
  if (!s) return nullptr;
  return {{"min", s->min}, {"max", s->max}, {"mean", s->mean}};
}

nlohmann::json report_json(const std::string& path, const model::InspectReport& r) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : r.rows) {
    rows.push_back(
        {{"name", row.name},
         {"op_type", "BatchNormalization"},
         {"producer", row.producer},
         {"input", row.input},
         {"output", row.output},
         {"channels", row.channels < 0 ? nlohmann::json(nullptr) : nlohmann::json(row.channels)},
         {"epsilon", as_written(row.epsilon)},
         {"momentum", as_written(row.momentum)},
         {"training_mode", row.training_mode},
         {"scale", summary_json(row.params[0])},
         {"bias", summary_json(row.params[1])},
         {"mean", summary_json(row.params[2])},
         {"var", summary_json(row.params[3])},
         {"foldable", row.fold_into.has_value()},
         {"fold_into", row.fold_into ? nlohmann::json(*row.fold_into) : nlohmann::json(nullptr)},
         {"fold_refusal", row.fold_refusal ? nlohmann::json(*row.fold_refusal) : nlohmann::json(nullptr)}});
  }
  nlohmann::json findings = nlohmann::json::array();
  for (const auto& f : r.findings)
    findings.push_back({{"severity", model::to_string(f.severity)},
                        {"code", f.code},
                        {"node", f.node},
                        {"message", f.message}});
  return {{"model", path},
          {"batch_norms", rows},
          {"findings", findings},
          {"summary",
           {{"batch_norms", r.rows.size()},
            {"errors", r.count(Severity::error)},
            {"warnings", r.count(Severity::warning)},
            {"infos", r.count(Severity::info)}}}};
}

std::string summary_text(const std::optional<model::Summary>& s) {
  if (!s) return "runtime";
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.3g..%.3g", s->min, s->max);
  return buf;
}

void print_text(const model::InspectReport& r) {
  std::printf("%-24s %-28s %6s %9s %8s %5s %-17s %-17s %-17s %-17s\n", "batch_norm", "producer", "C",
              "epsilon", "momentum", "train", "scale", "bias", "mean", "var");
  for (const auto& row : r.rows) {
    const std::string channels = row.channels < 0 ? "-" : std::to_string(row.channels);
    std::printf("%-24s %-28s %6s %9.3g %8.3g %5s %-17s %-17s %-17s %-17s\n", row.name.c_str(),
                row.producer.c_str(), channels.c_str(), row.epsilon, row.momentum,
                row.training_mode ? "yes" : "no", summary_text(row.params[0]).c_str(),
                summary_text(row.params[1]).c_str(), summary_text(row.params[2]).c_str(),
                summary_text(row.params[3]).c_str());
  }
  if (!r.findings.empty()) std::printf("\n");
  for (const auto& f : r.findings)
    std::printf("%-7s %-20s %s: %s\n", std::string(model::to_string(f.severity)).c_str(), f.code.c_str(),
                f.node.c_str(), f.message.c_str());
  std::printf("\n%zu BatchNormalization node%s: %d error%s, %d warning%s\n", r.rows.size(),
              r.rows.size() == 1 ? "" : "s", r.count(Severity::error),
              r.count(Severity::error) == 1 ? "" : "s", r.count(Severity::warning),
              r.count(Severity::warning) == 1 ? "" : "s");
}

}  // namespace

void add_inspect_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "inspect", "Report every BatchNormalization of an ONNX model and problems with its statistics");
  struct Args {
    std::string model;
    bool json = false;
    std::string fail_on;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("MODEL", args->model, "The .onnx file")->required();
  cmd->add_flag("--json", args->json, "Print the report as JSON on stdout (schema: docs/CLI.md)");
  cmd->add_option("--fail-on", args->fail_on,
                  "Exit with status 1 when a finding of this severity or worse exists")
      ->check(CLI::IsMember({"error", "warning"}));
  cmd->callback([&action, args] {
    action = [args] {
      const model::OnnxModel m = model::OnnxModel::load(args->model);
      const model::InspectReport report = model::inspect(m);
      if (args->json) {
        print_json(report_json(args->model, report));
      } else {
        print_text(report);
      }
      const int errors = report.count(Severity::error), warnings = report.count(Severity::warning);
      if (args->fail_on == "error" && errors > 0) return 1;
      if (args->fail_on == "warning" && errors + warnings > 0) return 1;
      return 0;
    };
  });
}

}  // namespace bnorm::cli

// `bnorm fold MODEL -o OUT [--in-place] [--json] [--scale-shift]`: fold
// BatchNormalization into the node before it (docs/CLI.md).

#include "model/fold.hpp"

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bnorm/error.hpp"
#include "command.hpp"

namespace bnorm::cli {
namespace {

const char* action_name(model::FoldOutcome::Action a) {
  switch (a) {
    case model::FoldOutcome::Action::folded:
      return "folded";
    case model::FoldOutcome::Action::scale_shift:
      return "scale_shift";
    case model::FoldOutcome::Action::left:
      break;
  }
  return "left";
}

}  // namespace

void add_fold_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "fold", "Fold BatchNormalization into the Conv, ConvTranspose, Gemm or MatMul before it");
  struct Args {
    std::string model, output;
    bool in_place = false, json = false, scale_shift = false;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("MODEL", args->model, "The .onnx file to read")->required();
  cmd->add_option("-o,--output", args->output, "Where to write the folded model");
  cmd->add_flag("--in-place", args->in_place, "Overwrite MODEL (instead of -o)");
  cmd->add_flag("--json", args->json, "Print the report as JSON on stdout (schema: docs/CLI.md)");
  cmd->add_flag("--scale-shift", args->scale_shift,
                "Replace each BatchNormalization that cannot be folded by Mul + Add with constants");
  cmd->callback([&action, args] {
    // Usage errors (exit 2), found while parsing.
    if (args->output.empty() && !args->in_place)
      throw CLI::ValidationError("no output: give -o OUT, or --in-place to overwrite MODEL");
    if (!args->output.empty() && args->in_place)
      throw CLI::ValidationError("-o and --in-place exclude each other");
    action = [args] {
      const std::string out = args->in_place ? args->model : args->output;
      if (!args->in_place) refuse_overwrite(out, {args->model}, " unless --in-place is given");
      model::OnnxModel m = model::OnnxModel::load(args->model);
      refuse_overwrite(out, m.external_files());
      const model::FoldReport report = model::fold_batch_norms(m, {args->scale_shift});
      m.save(out);
      const int folded = report.count(model::FoldOutcome::Action::folded);
      const int replaced = report.count(model::FoldOutcome::Action::scale_shift);
      const int left = report.count(model::FoldOutcome::Action::left);
      if (args->json) {
        nlohmann::json items = nlohmann::json::array();
        for (const auto& o : report.outcomes) {
          items.push_back(
              {{"batch_norm", o.batch_norm},
               {"action", action_name(o.action)},
               {"target", o.target.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.target)},
               {"reason", o.reason.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.reason)}});
        }
        print_json(
            nlohmann::json{{"model", args->model},
                           {"output", out},
                           {"batch_norms", items},
                           {"summary", {{"folded", folded}, {"scale_shift", replaced}, {"left", left}}}});
      } else {
        for (const auto& o : report.outcomes) std::cout << model::to_string(o) << "\n";
        std::cout << folded << " folded, " << replaced << " replaced by Mul + Add, " << left
                  << " left; wrote " << out << "\n";
      }
      return 0;
    };
  });
}

}  // namespace bnorm::cli

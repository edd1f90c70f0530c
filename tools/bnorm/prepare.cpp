// `bnorm prepare MODEL --calib CALIB -o OUT.onnx [--eval EVAL.npz]`: the
// deployment pipeline in one command: inspect, recalibrate the
// BatchNormalization statistics, fold, verify the folded model against the
// calibrated one, and report what changed (docs/CLI.md).

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bnorm/error.hpp"
#include "calibration_report.hpp"
#include "command.hpp"
#include "exec/calibrate.hpp"
#include "exec/compare.hpp"
#include "exec/input_data.hpp"
#include "model/fold.hpp"
#include "model/inspect.hpp"
#include "progress.hpp"

namespace bnorm::cli {
namespace {

struct Evaluation {
  double seconds = 0.0;    // executor time over the whole set
  std::int64_t rows = 0;
  std::optional<double> accuracy;  // when the data has labels
};

// Runs `m` over `data` (a warm-up batch first) and scores argmax of the
// first output against the data's `labels` when it has them.
Evaluation evaluate(const model::OnnxModel& m, const std::string& data_path, std::int64_t batch_size,
                    const char* label) {
  exec::Executor ex(m);
  const exec::InputData data = exec::InputData::open(data_path, ex.inputs());
  const exec::NpyArray* labels = data.extra("labels");
  if (labels && (labels->rows() != data.rows() || labels->shape().size() != 1 ||
                 (labels->type() != exec::NpyType::i64 && labels->type() != exec::NpyType::i32)))
    throw Error(ErrorKind::invalid_argument, data_path + ": 'labels' must be a 1-D int64 or int32 array with one "
                                                         "label per row");
  Evaluation e;
  e.rows = data.rows();
  ex.run(data.batch(0, std::min<std::int64_t>(batch_size, data.rows())));  // warm-up: primitives, caches
  std::int64_t correct = 0;
  Progress progress(label);
  const auto start = std::chrono::steady_clock::now();
  double scoring = 0.0;
  exec::run_batches(ex, data, batch_size, 0, data.rows(), [&](std::int64_t row, std::vector<exec::Tensor>& out) {
    const auto t0 = std::chrono::steady_clock::now();
    if (labels) {
      const exec::Tensor& y = out[0];
      if (y.rank() != 2 || y.dim(0) != std::min(batch_size, data.rows() - row))
        throw Error(ErrorKind::invalid_argument, "accuracy needs the first output to be (rows, classes), got " +
                                                     y.str());
      for (std::int64_t i = 0; i < y.dim(0); ++i) {
        std::int64_t best = 0;
        for (std::int64_t k = 1; k < y.dim(1); ++k)
          if (exec::value_at(y, i * y.dim(1) + k) > exec::value_at(y, i * y.dim(1) + best)) best = k;
        std::int64_t want = 0;
        const std::size_t size = labels->type() == exec::NpyType::i64 ? 8 : 4;
        if (size == 8) {
          std::memcpy(&want, labels->row(row + i), 8);
        } else {
          std::int32_t w32 = 0;
          std::memcpy(&w32, labels->row(row + i), 4);
          want = w32;
        }
        correct += best == want;
      }
    }
    scoring += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.update(row + std::min(batch_size, data.rows() - row), data.rows());
  });
  e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() - scoring;
  if (labels) e.accuracy = static_cast<double>(correct) / static_cast<double>(data.rows());
  return e;
}

nlohmann::json evaluation_json(const Evaluation& e) {
  return {{"seconds", e.seconds},
          {"rows_per_second", e.rows / e.seconds},
          {"accuracy", e.accuracy ? nlohmann::json(*e.accuracy) : nlohmann::json(nullptr)}};
}

std::string percent(const std::optional<double>& a) {
  if (!a) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100.0 * *a);
  return buf;
}

}  // namespace

void add_prepare_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "prepare", "Inspect, recalibrate, fold and verify a model for deployment, and report what changed");
  struct Args {
    std::string model, calib, eval, output;
    std::int64_t batch_size = 64;
    double atol = exec::Tolerance{}.atol, rtol = exec::Tolerance{}.rtol;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("MODEL", args->model, "The .onnx file")->required();
  cmd->add_option("--calib", args->calib, "Calibration inputs (.npy or .npz) from the deployment distribution")
      ->required();
  cmd->add_option("-o,--output", args->output, "Where to write the calibrated, folded model")->required();
  cmd->add_option("--eval", args->eval,
                  "Evaluation set (.npz with the inputs and, for accuracy, 'labels'); default: the calibration set");
  add_batch_size_option(*cmd, args->batch_size,
                        "Rows per batch (default: the batch the model fixes, else 64)");
  cmd->add_option("--atol", args->atol, "Parity tolerance of the folded model, absolute")->capture_default_str();
  cmd->add_option("--rtol", args->rtol, "Parity tolerance of the folded model, relative")->capture_default_str();
  cmd->add_flag("--json", args->json, "Print the report as JSON on stdout (schema: docs/CLI.md)");
  cmd->callback([&action, args, cmd] {
    const bool batch_given = cmd->count("--batch-size") > 0;
    action = [args, batch_given] {
      std::vector<std::string> inputs = {args->model, args->calib};
      if (!args->eval.empty()) inputs.push_back(args->eval);
      refuse_overwrite(args->output, inputs);
      const std::string eval_path = args->eval.empty() ? args->calib : args->eval;
      const model::OnnxModel original = model::OnnxModel::load(args->model);
      refuse_overwrite(args->output, original.external_files());
      if (!batch_given) args->batch_size = exec::default_batch_size(exec::graph_inputs(original));
      // 1. inspect
      const model::InspectReport inspection = model::inspect(original);
      // 2. recalibrate
      model::OnnxModel calibrated = original;
      Progress calib_progress("calibrate");
      exec::CalibrationOptions options;
      options.batch_size = args->batch_size;
      options.progress = [&](std::int64_t d, std::int64_t t) { calib_progress.update(d, t); };
      const auto calibration = exec::calibrate(calibrated, args->calib, options);
      calib_progress.done();
      // 3. fold
      model::OnnxModel folded = calibrated;
      const model::FoldReport fold = model::fold_batch_norms(folded);
      // 4. verify the folded model against the calibrated one
      Progress verify_progress("verify");
      const auto parity = exec::compare_models(calibrated, folded, eval_path, args->batch_size,
                                               {args->atol, args->rtol},
                                               [&](std::int64_t d, std::int64_t t) { verify_progress.update(d, t); });
      verify_progress.done();
      bool parity_ok = true;
      for (const auto& p : parity) parity_ok &= p.passed();
      // 5. speed and accuracy before / after
      const Evaluation before = evaluate(original, eval_path, args->batch_size, "evaluate original");
      const Evaluation recal = evaluate(calibrated, eval_path, args->batch_size, "evaluate calibrated");
      const Evaluation after = evaluate(folded, eval_path, args->batch_size, "evaluate folded");
      if (parity_ok) folded.save(args->output);
      const int nodes_before = original.graph().node_size(), nodes_after = folded.graph().node_size();
      if (args->json) {
        nlohmann::json findings = nlohmann::json::array();
        for (const auto& f : inspection.findings)
          if (f.severity != model::Severity::info)
            findings.push_back({{"severity", model::to_string(f.severity)},
                                {"code", f.code},
                                {"node", f.node},
                                {"message", f.message}});
        nlohmann::json cal = nlohmann::json::array();
        for (const auto& n : calibration) cal.push_back(calibration_json(n));
        nlohmann::json par = nlohmann::json::array();
        for (const auto& p : parity)
          par.push_back({{"name", p.name()},
                         {"max_abs_error", p.max_abs()},
                         {"max_rel_error", p.max_rel()},
                         {"violations", p.violations()},
                         {"passed", p.passed()}});
        print_json(nlohmann::json{
            {"model", args->model},
            {"output", parity_ok ? nlohmann::json(args->output) : nlohmann::json(nullptr)},
            {"findings", findings},
            {"calibration", cal},
            {"fold",
             {{"folded", fold.count(model::FoldOutcome::Action::folded)},
              {"left", fold.count(model::FoldOutcome::Action::left)},
              {"nodes_before", nodes_before},
              {"nodes_after", nodes_after}}},
            {"parity", {{"atol", args->atol}, {"rtol", args->rtol}, {"outputs", par}, {"passed", parity_ok}}},
            {"evaluation",
             {{"data", eval_path},
              {"rows", before.rows},
              {"original", evaluation_json(before)},
              {"calibrated", evaluation_json(recal)},
              {"folded", evaluation_json(after)}}}});
      } else {
        std::printf("bnorm prepare %s\n\n", args->model.c_str());
        std::printf("1. inspect: %zu BatchNormalization nodes, %d errors, %d warnings\n", inspection.rows.size(),
                    inspection.count(model::Severity::error), inspection.count(model::Severity::warning));
        for (const auto& f : inspection.findings)
          if (f.severity != model::Severity::info)
            std::printf("   %-7s %s: %s\n", std::string(model::to_string(f.severity)).c_str(), f.node.c_str(),
                        f.message.c_str());
        std::printf("\n2. recalibrate on %s (batch size %lld):\n", args->calib.c_str(),
                    static_cast<long long>(args->batch_size));
        print_calibration(calibration, false, {});
        std::printf("\n3. fold: %d folded, %d left; %d nodes -> %d\n", fold.count(model::FoldOutcome::Action::folded),
                    fold.count(model::FoldOutcome::Action::left), nodes_before, nodes_after);
        for (const auto& o : fold.outcomes)
          if (o.action == model::FoldOutcome::Action::left)
            std::printf("   %s\n", model::to_string(o).c_str());
        std::printf("\n4. verify folded vs calibrated on %s (atol %g, rtol %g):\n", eval_path.c_str(), args->atol,
                    args->rtol);
        for (const auto& p : parity)
          std::printf("   %-4s %s: max abs error %.3g, max rel error %.3g, %lld beyond tolerance\n",
                      p.passed() ? "ok" : "FAIL", p.name().c_str(), p.max_abs(), p.max_rel(),
                      static_cast<long long>(p.violations()));
        std::printf("\n5. evaluate on %s (%lld rows):\n", eval_path.c_str(), static_cast<long long>(before.rows));
        std::printf("   %-12s %10s %12s %10s\n", "model", "accuracy", "rows/s", "time");
        for (const auto& [name, e] : {std::pair<const char*, const Evaluation&>{"original", before},
                                      {"calibrated", recal},
                                      {"folded", after}})
          std::printf("   %-12s %10s %12.0f %8.3f s\n", name, percent(e.accuracy).c_str(), e.rows / e.seconds,
                      e.seconds);
        std::printf("\n%s\n", parity_ok ? ("wrote " + args->output).c_str()
                                        : "parity check FAILED: nothing written");
      }
      return parity_ok ? 0 : 1;
    };
  });
}

}  // namespace bnorm::cli

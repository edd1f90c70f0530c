// `bnorm verify A.onnx B.onnx --data X [--atol A] [--rtol R] [--batch-size B]
// [--json]`: run two models on the same data and compare every output
// (docs/CLI.md).

#include <iostream>
#include <nlohmann/json.hpp>

#include "bnorm/error.hpp"
#include "command.hpp"
#include "exec/compare.hpp"
#include "exec/input_data.hpp"
#include "progress.hpp"

namespace bnorm::cli {

void add_verify_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "verify", "Run two models on the same data and check that every output agrees within tolerance");
  struct Args {
    std::string a, b, data;
    double atol = exec::Tolerance{}.atol, rtol = exec::Tolerance{}.rtol;
    std::int64_t batch_size = 64;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("A", args->a, "The reference model (.onnx)")->required();
  cmd->add_option("B", args->b, "The model to check against it (.onnx)")->required();
  cmd->add_option("--data", args->data, "Inputs: .npy or .npz, as for bnorm run")->required();
  cmd->add_option("--atol", args->atol, "Absolute tolerance")->capture_default_str();
  cmd->add_option("--rtol", args->rtol, "Relative tolerance: |b - a| <= atol + rtol * |a|")->capture_default_str();
  add_batch_size_option(*cmd, args->batch_size, "Rows per batch (default: the batch A fixes, else 64)");
  cmd->add_flag("--json", args->json, "Print the comparison as JSON on stdout (schema: docs/CLI.md)");
  cmd->callback([&action, args, cmd] {
    const bool batch_given = cmd->count("--batch-size") > 0;
    action = [args, batch_given] {
      if (!(args->atol >= 0) || !(args->rtol >= 0))
        throw Error(ErrorKind::invalid_argument, "--atol and --rtol must be >= 0");
      const auto a = model::OnnxModel::load(args->a);
      const auto b = model::OnnxModel::load(args->b);
      if (!batch_given) args->batch_size = exec::default_batch_size(exec::graph_inputs(a));
      Progress progress("verify");
      const auto results = exec::compare_models(a, b, args->data, args->batch_size, {args->atol, args->rtol},
                                                [&](std::int64_t done, std::int64_t total) { progress.update(done, total); });
      progress.done();
      bool ok = true;
      for (const auto& r : results) ok &= r.passed();
      if (args->json) {
        nlohmann::json outs = nlohmann::json::array();
        for (const auto& r : results)
          outs.push_back({{"name", r.name()},
                          {"elements", r.elements()},
                          {"max_abs_error", r.max_abs()},
                          {"max_rel_error", r.max_rel()},
                          {"violations", r.violations()},
                          {"worst", {{"index", r.worst_index()}, {"a", r.worst_a()}, {"b", r.worst_b()}}},
                          {"passed", r.passed()}});
        print_json(nlohmann::json{{"a", args->a},
                                  {"b", args->b},
                                  {"data", args->data},
                                  {"atol", args->atol},
                                  {"rtol", args->rtol},
                                  {"outputs", outs},
                                  {"passed", ok}});
      } else {
        for (const auto& r : results)
          std::printf("%-4s %s: %lld elements, max abs error %.3g, max rel error %.3g, %lld beyond tolerance; "
                      "worst element #%lld: %.9g vs %.9g\n",
                      r.passed() ? "ok" : "FAIL", r.name().c_str(), static_cast<long long>(r.elements()), r.max_abs(),
                      r.max_rel(), static_cast<long long>(r.violations()), static_cast<long long>(r.worst_index()),
                      r.worst_a(), r.worst_b());
        std::printf("%s (atol %g, rtol %g)\n", ok ? "the models agree" : "the models differ", args->atol,
                    args->rtol);
      }
      return ok ? 0 : 1;
    };
  });
}

}  // namespace bnorm::cli

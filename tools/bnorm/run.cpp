// `bnorm run MODEL --data X.npy -o Y.npy [--output-name NAME]
// [--batch-size B] [--profile]`: run a model on data with bnorm's executor (docs/CLI.md).

#include <chrono>
#include <filesystem>
#include <iostream>

#include "bnorm/error.hpp"
#include "command.hpp"
#include "exec/input_data.hpp"
#include "progress.hpp"

namespace bnorm::cli {
namespace {

int output_index(const exec::Executor& ex, const std::string& name) {
  const auto& outs = ex.outputs();
  std::string list;
  for (const auto& o : outs) list += (list.empty() ? "'" : ", '") + o.name + "'";
  if (name.empty()) {
    if (outs.size() == 1) return 0;
    throw Error(ErrorKind::invalid_argument,
                "the model has " + std::to_string(outs.size()) + " outputs (" + list + "); choose one with --output-name");
  }
  for (std::size_t i = 0; i < outs.size(); ++i)
    if (outs[i].name == name) return static_cast<int>(i);
  throw Error(ErrorKind::invalid_argument, "--output-name '" + name + "' is not an output of the model (" + list + ")");
}

}  // namespace

void add_run_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("run", "Run an ONNX model on .npy/.npz data and write an output as .npy");
  struct Args {
    std::string model, data, output_path, output_name;
    std::int64_t batch_size = 64;
    bool profile = false;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("MODEL", args->model, "The .onnx file")->required();
  cmd->add_option("--data", args->data, "Inputs: .npy (one-input models) or .npz (an array per input name)")
      ->required();
  cmd->add_option("-o,--output", args->output_path, "Where to write the output (.npy)")->required();
  cmd->add_option("--output-name", args->output_name,
                  "Which graph output to write (needed when there are several)");
  add_batch_size_option(
      *cmd, args->batch_size,
      "Rows per batch (memory use grows with it; default: the batch the model fixes, else 64)");
  cmd->add_flag("--profile", args->profile, "Print the time spent per op type on stderr");
  cmd->callback([&action, args, cmd] {
    const bool batch_given = cmd->count("--batch-size") > 0;
    action = [args, batch_given] {
      refuse_overwrite(args->output_path, {args->data, args->model});
      const auto model = model::OnnxModel::load(args->model);
      refuse_overwrite(args->output_path, model.external_files());
      if (!batch_given) args->batch_size = exec::default_batch_size(exec::graph_inputs(model));
      exec::Executor executor(model);
      const int out = output_index(executor, args->output_name);
      const exec::InputData data = exec::InputData::open(args->data, executor.inputs());
      executor.set_profiling(args->profile);
      std::optional<exec::NpyWriter> writer;
      Progress progress("run");
      const auto start = std::chrono::steady_clock::now();
      exec::run_batches(executor, data, args->batch_size, 0, data.rows(), [&](std::int64_t row, auto& outputs) {
        const exec::Tensor& y = outputs[static_cast<std::size_t>(out)];
        const std::int64_t count = std::min(args->batch_size, data.rows() - row);
        if (y.rank() == 0 || y.dim(0) != count)
          throw Error(ErrorKind::unsupported, "output '" + executor.outputs()[static_cast<std::size_t>(out)].name +
                                                  "' is " + y.str() + " for a batch of " + std::to_string(count) +
                                                  " rows; only outputs with the batch as axis 0 can be written");
        if (!writer) {
          exec::Shape shape = y.shape();
          shape[0] = data.rows();
          writer.emplace(args->output_path, exec::to_npy(y.type()), shape);
        }
        writer->append(y.raw(), count);
        progress.update(row + count, data.rows());
      });
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      progress.done();
      if (!writer) throw Error(ErrorKind::invalid_argument, args->data + " holds no rows");
      writer->commit();
      std::cerr << "bnorm run: " << data.rows() << " rows in " << seconds << " s (" << data.rows() / seconds
                << " rows/s), wrote " << args->output_path << "\n";
      if (args->profile) {
        const auto& p = executor.profile();
        std::cerr << "time per op type (" << p.runs << " batches):\n";
        std::vector<std::pair<double, std::string>> rows;
        for (const auto& [op, s] : p.seconds) rows.emplace_back(s, op);
        std::sort(rows.rbegin(), rows.rend());
        for (const auto& [s, op] : rows)
          std::fprintf(stderr, "  %-20s %9.3f ms %5.1f%%  (%ld calls)\n", op.c_str(), s * 1e3,
                       100.0 * s / p.total, p.calls.at(op));
        std::fprintf(stderr, "  %-20s %9.3f ms\n", "total", p.total * 1e3);
      }
      return 0;
    };
  });
}

}  // namespace bnorm::cli

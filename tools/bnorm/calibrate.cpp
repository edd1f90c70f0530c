// `bnorm calibrate MODEL --data CALIB -o OUT.onnx [--batch-size B] [--json]`:
// recompute every BatchNormalization's statistics on representative data
// (docs/CLI.md). Under mpirun each process reads its shard of the rows and
// the statistics are merged over all of them; rank 0 writes the model.

#include "exec/calibrate.hpp"

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "bnorm/comm_world.hpp"
#include "bnorm/error.hpp"
#include "calibration_report.hpp"
#include "command.hpp"
#include "exec/input_data.hpp"
#include "progress.hpp"

namespace bnorm::cli {

void add_calibrate_command(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand(
      "calibrate", "Recompute the statistics of every BatchNormalization on representative data");
  struct Args {
    std::string model, data, output;
    std::int64_t batch_size = 64;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("MODEL", args->model, "The .onnx file")->required();
  cmd->add_option("--data", args->data, "Calibration inputs: .npy or .npz, as for bnorm run")->required();
  cmd->add_option("-o,--output", args->output, "Where to write the recalibrated model")->required();
  add_batch_size_option(*cmd, args->batch_size,
                        "Rows per batch; each BN normalizes a batch with its own statistics, as in training "
                        "(default: the batch the model fixes times the processes, else 64)");
  cmd->add_flag("--json", args->json, "Print the report as JSON on stdout (schema: docs/CLI.md)");
  cmd->callback([&action, args, cmd] {
    const bool batch_given = cmd->count("--batch-size") > 0;
    action = [args, batch_given] {
      comm::Communicator& world = comm::world();
      try {
        refuse_overwrite(args->output, {args->model, args->data});
        model::OnnxModel m = model::OnnxModel::load(args->model);
        refuse_overwrite(args->output, m.external_files());
        if (!batch_given) args->batch_size = exec::default_batch_size(exec::graph_inputs(m), world.size());
        Progress progress(world.size() > 1 ? "calibrate (rank 0)" : "calibrate");
        exec::CalibrationOptions options;
        options.batch_size = args->batch_size;
        options.comm = &world;
        if (world.rank() == 0)
          options.progress = [&](std::int64_t d, std::int64_t t) { progress.update(d, t); };
        const auto report = exec::calibrate(m, args->data, options);
        progress.done();
        // Every process got here: one that failed aborts the job instead, so
        // rank 0 never writes the model of a failed run.
        const char ok = 1;
        std::vector<char> all(static_cast<std::size_t>(world.size()));
        world.allgather(&ok, 1, all.data());
        if (world.rank() != 0) return 0;
        m.save(args->output);
        print_calibration(report, args->json, {{"model", args->model},
                                               {"data", args->data},
                                               {"output", args->output},
                                               {"processes", world.size()},
                                               {"batch_size", args->batch_size}});
        return 0;
      } catch (const std::exception& e) {
        if (world.size() > 1) {
          // Another rank may be waiting in a collective: stop them all, with
          // the status this error has in one process.
          std::cerr << "bnorm: error (rank " << world.rank() << "): " << e.what() << "\n";
          const auto* error = dynamic_cast<const Error*>(&e);
          world.abort(error ? exit_code(error->kind()) : 6);
        }
        throw;
      }
    };
  });
}

}  // namespace bnorm::cli

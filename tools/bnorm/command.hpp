// The bnorm CLI: each subcommand lives in its own file and registers itself
// with the CLI11 app through one function declared here.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "bnorm/error.hpp"

namespace bnorm::cli {

/// What a subcommand does once its arguments are parsed; returns the exit code.
using Action = std::function<int()>;

/// `bnorm info`: version, instruction set, threads.
void add_info_command(CLI::App& app, Action& action);
/// `bnorm inspect`: BatchNormalization rows and findings of an ONNX model.
void add_inspect_command(CLI::App& app, Action& action);
/// `bnorm fold`: fold BatchNormalization into the producing node.
void add_fold_command(CLI::App& app, Action& action);
/// `bnorm run`: run a model on .npy / .npz data.
void add_run_command(CLI::App& app, Action& action);
/// `bnorm verify`: compare two models' outputs on the same data.
void add_verify_command(CLI::App& app, Action& action);
/// `bnorm calibrate`: recompute BatchNormalization statistics.
void add_calibrate_command(CLI::App& app, Action& action);
/// `bnorm prepare`: inspect, calibrate, fold and verify in one go.
void add_prepare_command(CLI::App& app, Action& action);

/// The exit status of an error of this kind (docs/CLI.md): 3 invalid input,
/// 4 I/O, 5 invalid model, 6 runtime.
int exit_code(ErrorKind kind) noexcept;

/// Adds `--batch-size` to `cmd`, read into `value` as a whole number from 1
/// to INT64_MAX: anything else is a usage error naming the value (CLI11
/// alone clamps an out-of-range number without a word).
CLI::Option* add_batch_size_option(CLI::App& cmd, std::int64_t& value, const std::string& help);

/// Prints `report` on stdout as --json does (indent 2, newline). Bytes that
/// are not UTF-8 (protobuf does not check names, nor the file system paths)
/// print as U+FFFD instead of failing after the output was written.
void print_json(const nlohmann::json& report);

/// Throws Error(invalid_argument) when the output path `out` names one of
/// `inputs` (by any spelling): an input is never overwritten. `hint` ends
/// the message (e.g. " unless --in-place is given").
void refuse_overwrite(const std::string& out, const std::vector<std::string>& inputs, const std::string& hint = "");

}  // namespace bnorm::cli

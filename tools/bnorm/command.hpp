// The bnorm CLI: each subcommand lives in its own file and registers itself
// with the CLI11 app through one function declared here.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace bnorm::cli {

/// What a subcommand does once its arguments are parsed; returns the exit code.
using Action = std::function<int()>;

/// `bnorm info`: version, instruction set, threads.
void add_info_command(CLI::App& app, Action& action);
/// `bnorm inspect`: BatchNormalization rows and findings of an ONNX model.
void add_inspect_command(CLI::App& app, Action& action);
/// `bnorm fold`: fold BatchNormalization into the producing node.
void add_fold_command(CLI::App& app, Action& action);

}  // namespace bnorm::cli

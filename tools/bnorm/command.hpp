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

}  // namespace bnorm::cli

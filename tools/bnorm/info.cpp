// `bnorm info`: what this build and machine will run.

#include <iostream>

#include "bnorm/bnorm.hpp"
#include "command.hpp"

namespace bnorm::cli {

void add_info_command(CLI::App& app, Action& action) {
  auto* cmd =
      app.add_subcommand("info", "Print the version, the instruction set in use and the thread count");
  cmd->callback([&action] {
    action = [] {
      std::cout << "bnorm " << kVersion << "\n"
                << "isa: " << isa() << " (available:";
      for (const auto& name : supported_isas()) std::cout << ' ' << name;
      std::cout << ")\nthreads: " << num_threads() << "\n";
      return 0;
    };
  });
}

}  // namespace bnorm::cli

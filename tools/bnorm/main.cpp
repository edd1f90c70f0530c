// bnorm command-line tool. Exit codes (docs/CLI.md): 0 success, 1 a check
// failed, 2 usage error, 3 invalid input, 4 I/O error, 5 invalid model,
// 6 runtime failure.

#include <charconv>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>

#include "bnorm/bnorm.hpp"
#include "command.hpp"

namespace bnorm::cli {

int exit_code(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::io:
      return 4;
    case ErrorKind::invalid_model:
      return 5;
    case ErrorKind::runtime:
      return 6;
    default:
      return 3;
  }
}

CLI::Option* add_batch_size_option(CLI::App& cmd, std::int64_t& value, const std::string& help) {
  const CLI::Validator whole_number(
      [](std::string& text) -> std::string {
        std::int64_t v = 0;
        const char* end = text.data() + text.size();
        const auto [ptr, ec] = std::from_chars(text.data(), end, v);
        if (ec == std::errc() && ptr == end && v >= 1) return {};
        return "'" + text + "' is not a whole number from 1 to " +
               std::to_string(std::numeric_limits<std::int64_t>::max());
      },
      "INT");
  return cmd.add_option("--batch-size", value, help)->check(whole_number);
}

namespace {

// JSON has no NaN or infinity (nlohmann writes both as null, which also
// means "absent" in the schemas): they become the strings JavaScript and
// Python's json module use for them.
void spell_non_finite(nlohmann::json& j) {
  if (j.is_structured()) {
    for (auto& v : j) spell_non_finite(v);
  } else if (j.is_number_float()) {
    const double v = j.get<double>();
    if (!std::isfinite(v)) j = std::isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
  }
}

}  // namespace

void print_json(const nlohmann::json& report) {
  nlohmann::json spelled = report;
  spell_non_finite(spelled);
  std::cout << spelled.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

void refuse_overwrite(const std::string& out, const std::vector<std::string>& inputs, const std::string& hint) {
  std::error_code ec;
  for (const auto& in : inputs)
    if (std::filesystem::exists(out, ec) && std::filesystem::equivalent(out, in, ec))
      throw Error(ErrorKind::invalid_argument,
                  "-o '" + out + "' is '" + in + "', an input of this command; it is never overwritten" + hint);
}

}  // namespace bnorm::cli

int main(int argc, char** argv) {
  CLI::App app{"bnorm: batch normalization tools"};
  app.require_subcommand(1);
  app.set_version_flag("--version", bnorm::kVersion);
  bnorm::cli::Action action;
  bnorm::cli::add_info_command(app, action);
  bnorm::cli::add_inspect_command(app, action);
  bnorm::cli::add_fold_command(app, action);
  bnorm::cli::add_run_command(app, action);
  bnorm::cli::add_verify_command(app, action);
  bnorm::cli::add_calibrate_command(app, action);
  bnorm::cli::add_prepare_command(app, action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << "bnorm: error: " << e.what() << "\nRun with --help for more information.\n";
    return 2;
  }
  try {
    return action ? action() : 0;
  } catch (const bnorm::Error& e) {
    std::cerr << "bnorm: error: " << e.what() << "\n";
    return bnorm::cli::exit_code(e.kind());
  } catch (const std::exception& e) {
    std::cerr << "bnorm: error: " << e.what() << "\n";
    return 6;
  }
}

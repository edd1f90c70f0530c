// What a set of runs writes: the curves (CSV), every step's loss (CSV), a
// summary table (Markdown and CSV) and the accuracy plot (SVG).
#pragma once

#include <string>
#include <vector>

#include "train.hpp"

namespace mnist_bn {

/// Writes `text` to `path` through a temporary file and a rename, so a
/// reader never sees half a file (bnorm::model::OutputFile: durable before
/// the rename, the existing file untouched on failure). Throws bnorm::Error
/// (a std::runtime_error) on failure.
void write_file(const std::string& path, const std::string& text);

/// activation,variant,lr,step,train_loss,test_accuracy: one row per evaluation.
std::string curves_csv(const std::vector<RunResult>& runs);
/// activation,variant,lr,step,loss: one row per training step.
std::string step_loss_csv(const std::vector<RunResult>& runs);
/// One row per run: steps to each target, best and final accuracy, divergence.
std::string summary_csv(const std::vector<RunResult>& runs, const std::vector<double>& targets);

/// Facts about the run for the Markdown summary.
struct RunContext {
  std::string command;
  std::string machine;
  std::string date;
  double seconds = 0;
  int threads = 1;
  int processes = 1;
  std::int64_t eval_rows = 0;
};
/// The Markdown tables (per run, and BN against plain per learning rate).
std::string summary_markdown(const std::vector<RunResult>& runs, const std::vector<double>& targets,
                             const RunContext& context);
/// Test accuracy against steps, one line per run.
std::string curves_svg(const std::vector<RunResult>& runs, const std::vector<double>& targets,
                       std::int64_t eval_rows);

}  // namespace mnist_bn

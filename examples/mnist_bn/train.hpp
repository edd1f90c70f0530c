// One training run of the experiment: a network, a learning rate, a fixed
// data order, SGD for a number of steps with periodic test evaluations;
// optionally data-parallel over the processes of a communicator.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bnorm/communicator.hpp"
#include "idx.hpp"
#include "mlp.hpp"

namespace mnist_bn {

struct RunSpec {
  Activation activation = Activation::sigmoid;
  bool batch_norm = false;
  double lr = 0.1;
  std::uint64_t seed = 1;
  std::int64_t steps = 5000;
  std::int64_t batch = 60;        ///< global mini-batch
  std::int64_t eval_every = 100;  ///< test-subset evaluation cadence, in steps
  std::int64_t eval_rows = 2000;  ///< rows of the test subset (0 = all)
  bool final_full_eval = true;    ///< evaluate on the whole test set at the end

  /// "bn" or "plain".
  std::string variant() const { return batch_norm ? "bn" : "plain"; }
  /// e.g. "sigmoid bn lr=0.5".
  std::string name() const;
};

struct EvalPoint {
  std::int64_t step = 0;
  double train_loss = 0;     ///< mean mini-batch loss since the previous point (NaN at step 0)
  double test_accuracy = 0;  ///< on the test subset
};

struct RunResult {
  RunSpec spec;
  std::vector<EvalPoint> curve;
  std::vector<double> step_loss;  ///< the global mini-batch loss of every step (index = step - 1)
  bool diverged = false;
  std::int64_t diverged_at = 0;  ///< step whose loss was NaN or infinite
  double final_accuracy = -1;    ///< on the whole test set (-1: not evaluated)
  double seconds = 0;
};

/// The test subset used for the periodic evaluations: `rows` images picked
/// by a fixed permutation (seed independent of the run's), or all of them.
struct TestSubset {
  std::vector<float> images;
  std::vector<std::uint8_t> labels;
  std::int64_t rows = 0;
};
TestSubset make_test_subset(const Dataset& test, std::int64_t rows);

/// Trains one run. With a communicator of several processes each one takes
/// its contiguous share of every global batch (the same global order on
/// every process), the norm layers come from make_norm (SyncBatchNorm) and
/// the Linear gradients and the loss are summed over the processes; only
/// rank 0 evaluates (`curve` and final_accuracy are empty elsewhere).
/// `progress` (optional) is called after each evaluation.
RunResult train_run(const RunSpec& spec, const Dataset& train, const Dataset& test, const TestSubset& subset,
                    bnorm::comm::Communicator& comm, const NormFactory& make_norm,
                    const std::function<void(const RunResult&)>& progress = {});

/// First step at which the evaluated test accuracy reached `target`, or -1.
std::int64_t steps_to_reach(const RunResult& r, double target);

}  // namespace mnist_bn

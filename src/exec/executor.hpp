// A small executor for ONNX inference graphs of the kind CNN exports
// produce. Compiling checks every node (unsupported ops and attributes are
// reported before anything runs); running takes the graph inputs and
// returns the graph outputs, freeing each intermediate tensor after its last
// reader.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "exec/context.hpp"
#include "exec/op.hpp"
#include "exec/tensor.hpp"
#include "model/onnx_model.hpp"

namespace bnorm::exec {

/// A graph input or output: name, element type and declared shape (-1 for
/// a symbolic or unknown dim; empty with known_rank false when unknown).
struct ValueInfo {
  std::string name;
  ElementType type = ElementType::f32;
  Shape shape;
  bool known_rank = false;
};

/// The inputs a model takes, as Executor::inputs() lists them: its graph
/// inputs that are not initializers, in graph order.
std::vector<ValueInfo> graph_inputs(const model::OnnxModel& model);

/// Time spent per step over the runs since the last reset.
struct StepProfile {
  std::string op_type;  // "Conv", or "Conv+Relu" for a fused step
  int node = -1;        // index of the node in the graph
  std::vector<Shape> input_shapes;  // of the last run (absent inputs: empty)
  double seconds = 0.0;
  long calls = 0;
};

/// Time spent per op type and per step over the runs since the last reset.
struct Profile {
  std::map<std::string, double> seconds;  // op type -> seconds
  std::map<std::string, long> calls;
  std::vector<StepProfile> steps;  // in execution order
  double total = 0.0;
  int runs = 0;
};

class Executor {
 public:
  /// Compiles the model's main graph. Throws Error(unsupported) naming the
  /// first node whose op, domain, attribute or attribute value the executor
  /// does not run, Error(invalid_model) for a malformed graph.
  explicit Executor(const model::OnnxModel& model);
  ~Executor();
  Executor(Executor&&) noexcept;
  Executor& operator=(Executor&&) noexcept;

  /// The inputs the caller provides (graph inputs that are not initializers).
  const std::vector<ValueInfo>& inputs() const noexcept { return inputs_; }
  const std::vector<ValueInfo>& outputs() const noexcept { return outputs_; }

  /// Runs the graph on one set of inputs, in the order of inputs(). Throws
  /// Error naming the input (count, type, rank or a fixed dim that differs
  /// from its declaration) or the node that failed.
  std::vector<Tensor> run(const std::vector<Tensor>& inputs);

  /// How BatchNormalization nodes normalize, and who sees their inputs.
  ExecContext& context() noexcept { return *ctx_; }

  /// Records time per op type when on.
  void set_profiling(bool on) noexcept {
    profiling_ = on;
    ctx_->profiling = on;
  }
  const Profile& profile() const noexcept { return profile_; }
  /// Time inside oneDNN primitives per kind ("convolution", "matmul", ...).
  const std::map<std::string, double>& primitive_seconds() const noexcept { return ctx_->primitive_seconds; }
  void reset_profile() {
    profile_ = {};
    ctx_->primitive_seconds.clear();
  }

 private:
  struct Step {
    std::unique_ptr<Op> op;
    int node = -1;
    std::string op_type;
    std::string where;         // "node 'name' (Op)": the prefix of its errors
    std::vector<int> inputs;   // value slots, -1 for absent
    std::vector<int> outputs;  // value slots, -1 for unnamed
    std::vector<int> release;  // slots whose last reader this is
  };

  std::vector<ValueInfo> inputs_, outputs_;
  std::vector<int> input_slots_, output_slots_;
  // slot -> constant value (empty for computed). A deque: ops keep pointers
  // to constants, which must survive the slots added after them.
  std::deque<Tensor> constants_;
  std::vector<Step> steps_;
  std::size_t slot_count_ = 0;
  std::unique_ptr<ExecContext> ctx_;
  std::unique_ptr<TensorPool> pool_;  // storage of the tensors run() allocates
  bool profiling_ = false;
  Profile profile_;
};

/// Checks a caller's tensor against a graph input: element type, rank and
/// every fixed dim. Throws Error(shape_mismatch) naming the input.
void check_input(const ValueInfo& info, const Tensor& t);

}  // namespace bnorm::exec

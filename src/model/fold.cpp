// The folding driver: for each BatchNormalization, the checks every
// producer shares, the dispatch to the producer's pass, and the rewiring.

#include "model/fold.hpp"

#include <algorithm>
#include <set>

#include "bnorm/error.hpp"
#include "model/batch_norm_node.hpp"
#include "model/fold_passes.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::model {

int FoldReport::count(FoldOutcome::Action a) const {
  return static_cast<int>(
      std::count_if(outcomes.begin(), outcomes.end(), [&](const auto& o) { return o.action == a; }));
}

std::string to_string(const FoldOutcome& o) {
  switch (o.action) {
    case FoldOutcome::Action::folded:
      return "folded BatchNormalization '" + o.batch_norm + "' into " + o.target;
    case FoldOutcome::Action::scale_shift:
      return "replaced BatchNormalization '" + o.batch_norm + "' by " + o.target +
             " (not foldable: " + o.reason + ")";
    case FoldOutcome::Action::left:
      break;
  }
  return "left BatchNormalization '" + o.batch_norm + "': " + o.reason;
}

std::optional<Weight> constant_weight(const OnnxModel& model, int node, int slot, const char* role,
                                      std::string* why, bool values) {
  const auto& n = model.graph().node(node);
  if (n.input_size() <= slot || n.input(slot).empty()) {
    *why = std::string(role) + " is missing";
    return std::nullopt;
  }
  const std::string& name = n.input(slot);
  const onnx::TensorProto* t = model.constant(name);
  if (!t) {
    *why = std::string(role) + " '" + name + "' is not a constant";
    return std::nullopt;
  }
  if (!is_floating(t->data_type())) {
    *why = std::string(role) + " '" + name + "' has element type " + data_type_name(t->data_type());
    return std::nullopt;
  }
  try {
    Weight w{t, {}};
    if (values) {
      w.values = to_doubles(*t, std::string(role) + " '" + name + "'");
    } else {
      check_data(*t, std::string(role) + " '" + name + "'");
    }
    return w;
  } catch (const Error& e) {
    *why = e.what();
    return std::nullopt;
  }
}

void write_weight(OnnxModel& model, int node, int slot, const std::vector<double>& values) {
  const std::string name = model.graph().node(node).input(slot);
  onnx::TensorProto* t = model.mutable_constant(name);
  const bool shared = model.consumers(name).size() > 1 || model.is_graph_output(name) ||
                      model.producer(name).has_value();  // a Constant node: store an initializer instead
  if (!shared) {
    set_values(*t, values);
    return;
  }
  onnx::TensorProto copy = *t;
  copy.set_name(model.unique_name(name + "_folded"));
  set_values(copy, values);
  model.graph().mutable_node(node)->set_input(slot, copy.name());
  model.add_initializer(std::move(copy));
}

std::optional<ChannelBias> channel_bias(const OnnxModel& model, int node, std::size_t channels,
                                        std::string* why, bool values) {
  const auto& n = model.graph().node(node);
  ChannelBias bias{n.input_size() > 2 && !n.input(2).empty(), std::vector<double>(channels, 0.0)};
  if (!bias.present) return bias;
  auto b = constant_weight(model, node, 2, "bias", why, values);
  if (!b) return std::nullopt;
  if (element_count(*b->tensor) != static_cast<std::int64_t>(channels)) {
    *why = "bias has " + std::to_string(element_count(*b->tensor)) + " values";
    return std::nullopt;
  }
  if (values) bias.values = std::move(b->values);
  return bias;
}

void store_channel_bias(OnnxModel& model, int node, const ChannelBias& bias, std::int32_t data_type) {
  if (bias.present) {
    write_weight(model, node, 2, bias.values);
    return;
  }
  add_weight_input(model, node, 2, model.graph().node(node).input(1) + "_bias", data_type,
                   {static_cast<std::int64_t>(bias.values.size())}, bias.values);
}

void add_weight_input(OnnxModel& model, int node, int slot, const std::string& base_name,
                      std::int32_t data_type, const std::vector<std::int64_t>& dims,
                      const std::vector<double>& values) {
  onnx::TensorProto t;
  t.set_name(model.unique_name(base_name));
  t.set_data_type(data_type);
  for (std::int64_t d : dims) t.add_dims(d);
  set_values(t, values);
  auto* n = model.graph().mutable_node(node);
  while (n->input_size() <= slot) n->add_input("");
  n->set_input(slot, t.name());
  model.add_initializer(std::move(t));
}

void remove_node(OnnxModel& model, int index) {
  auto& g = model.graph();
  std::set<std::string> inputs(g.node(index).input().begin(), g.node(index).input().end());
  g.mutable_node()->DeleteSubrange(index, 1);
  model.refresh();
  std::set<std::string> unused;
  for (const auto& name : inputs)
    if (!name.empty() && model.consumers(name).empty() && !model.is_graph_output(name)) unused.insert(name);
  model.remove_initializers(unused);
  model.refresh();
}

namespace {

// Why the producer of a BN may not take over its work, before looking at
// the producer's own op.
std::optional<std::string> shared_checks(const OnnxModel& model, const BatchNormNode& bn) {
  if (bn.training_mode) return "it runs in training mode (" + bn.training_why + ")";
  if (bn.extra_outputs_used) return "its running-statistics outputs are used";
  const auto producer = model.producer(bn.input);
  if (!producer) return "its input '" + bn.input + "' is not produced by a node (a graph input or constant)";
  const auto& p = model.graph().node(*producer);
  const auto n_consumers = model.consumers(bn.input).size();
  if (n_consumers > 1)
    return describe(p, *producer) + "'s output '" + bn.input + "' has " + std::to_string(n_consumers - 1) +
           " other consumer" + (n_consumers > 2 ? "s" : "");
  if (model.is_graph_output(bn.input))
    return describe(p, *producer) + "'s output '" + bn.input +
           "' is also a graph output and must keep its value";
  if (p.output_size() != 1) return describe(p, *producer) + " has more than one output";
  return std::nullopt;
}

// The producer's pass: only the checks (apply false), or the fold.
std::optional<std::string> run_pass(OnnxModel& model, const BatchNormNode& bn, const ChannelAffine& f,
                                    bool apply) {
  if (auto refusal = shared_checks(model, bn)) return refusal;
  const int producer = *model.producer(bn.input);
  const auto& p = model.graph().node(producer);
  const std::string& op = p.op_type();
  if (!p.domain().empty() && p.domain() != "ai.onnx")
    return "produced by " + describe(p, producer) + " of domain '" + p.domain() + "'";
  std::optional<std::string> refusal;
  if (op == "Conv") {
    refusal = fold_into_conv(model, producer, f, apply);
  } else if (op == "ConvTranspose") {
    refusal = fold_into_conv_transpose(model, producer, f, apply);
  } else if (op == "Gemm") {
    refusal = fold_into_gemm(model, producer, f, apply);
  } else if (op == "MatMul") {
    refusal = fold_into_matmul(model, producer, f, apply);
  } else {
    return "produced by " + describe(p, producer) + ", which cannot absorb a per-channel scale";
  }
  if (refusal) return describe(model.graph().node(producer), producer) + ": " + *refusal;
  return std::nullopt;
}

}  // namespace

std::optional<std::string> fold_refusal(const OnnxModel& model, const BatchNormNode& bn) {
  std::string why;
  const auto f = channel_affine(bn, &why);
  if (!f) return why;
  // The passes change nothing when not applying.
  return run_pass(const_cast<OnnxModel&>(model), bn, *f, false);
}

FoldReport fold_batch_norms(OnnxModel& model, const FoldOptions& options) {
  FoldReport report;
  // Indexes shift as nodes go; walk by output name.
  std::vector<std::string> outputs;
  for (int i : batch_norm_nodes(model)) {
    const auto& n = model.graph().node(i);
    if (n.output_size() > 0 && !n.output(0).empty()) {
      outputs.push_back(n.output(0));
    } else {
      FoldOutcome outcome;
      outcome.batch_norm = read_batch_norm(model, i).name;
      outcome.reason = "it has no output";
      report.outcomes.push_back(std::move(outcome));
    }
  }
  for (const std::string& out : outputs) {
    const auto index = model.producer(out);
    if (!index) continue;
    const BatchNormNode bn = read_batch_norm(model, *index);
    FoldOutcome outcome;
    outcome.batch_norm = bn.name;
    std::string why;
    const auto f = channel_affine(bn, &why);
    std::optional<std::string> refusal = f ? run_pass(model, bn, *f, false) : std::optional<std::string>(why);
    if (!refusal) {
      const int producer = *model.producer(bn.input);
      const std::string before = describe(model.graph().node(producer), producer);
      run_pass(model, bn, *f, true);
      // The producer now computes the BN's output: it takes over the name.
      // (The pass may have removed nodes: find both again by name.)
      model.refresh();
      const int p = *model.producer(bn.input), b = *model.producer(bn.output);
      const std::string& op = model.graph().node(p).op_type();
      model.graph().mutable_node(p)->set_output(0, bn.output);
      remove_node(model, b);
      outcome.action = FoldOutcome::Action::folded;
      outcome.target = before.rfind(op + " ", 0) == 0 ? before : before + " (now a " + op + ")";
    } else {
      outcome.reason = *refusal;
      std::string nodes;
      if (options.scale_shift && f && !bn.training_mode && !bn.extra_outputs_used) {
        const auto not_replaced = replace_with_scale_shift(model, bn, *f, &nodes);
        if (!not_replaced) {
          outcome.action = FoldOutcome::Action::scale_shift;
          outcome.target = nodes;
        } else {
          outcome.reason += "; no Mul + Add either: " + *not_replaced;
        }
      }
    }
    report.outcomes.push_back(std::move(outcome));
  }
  return report;
}

}  // namespace bnorm::model

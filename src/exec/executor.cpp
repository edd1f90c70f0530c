#include "exec/executor.hpp"

#include <chrono>
#include <limits>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "bnorm/error.hpp"
#include "exec/ops/ops.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::exec {

namespace {

// "2x3, scalar, absent" for messages.
std::string shapes_of(const std::vector<const Tensor*>& tensors) {
  std::string s;
  for (const Tensor* t : tensors)
    s += (s.empty() ? "" : ", ") + (t ? to_string(t->shape()) : std::string("absent"));
  return s;
}

ValueInfo value_info(const onnx::ValueInfoProto& v) {
  ValueInfo info;
  info.name = v.name();
  if (!v.type().has_tensor_type())
    throw Error(ErrorKind::unsupported, "graph value '" + v.name() + "' is not a tensor (sequence, map or optional)");
  const auto& tt = v.type().tensor_type();
  info.type = from_onnx(tt.elem_type(), "graph value '" + v.name() + "'");
  info.known_rank = tt.has_shape();
  for (const auto& d : tt.shape().dim()) info.shape.push_back(d.has_dim_value() ? d.dim_value() : -1);
  return info;
}

// Conv / ConvTranspose nodes whose output only an activation reads:
// producer index -> (activation index, the activation).
std::map<int, std::pair<int, FusedActivation>> find_fusions(const model::OnnxModel& model) {
  std::map<int, std::pair<int, FusedActivation>> out;
  const auto& g = model.graph();
  auto standard = [](const onnx::NodeProto& n) { return n.domain().empty() || n.domain() == "ai.onnx"; };
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& p = g.node(i);
    if (!standard(p) || (p.op_type() != "Conv" && p.op_type() != "ConvTranspose") || p.output_size() != 1) continue;
    const std::string& y = p.output(0);
    const auto& readers = model.consumers(y);
    if (readers.size() != 1 || model.is_graph_output(y)) continue;
    const int j = readers[0];
    const auto& a = g.node(j);
    if (!standard(a) || j <= i || a.input_size() < 1 || a.input(0) != y || a.output_size() != 1 || a.output(0).empty())
      continue;
    FusedActivation f;
    bool ok = true;
    for (const auto& attr : a.attribute()) ok &= a.op_type() == "LeakyRelu" && attr.name() == "alpha";
    if (a.op_type() == "Relu" && a.input_size() == 1) {
      f.kind = FusedActivation::Kind::relu;
    } else if (a.op_type() == "LeakyRelu" && a.input_size() == 1) {
      f.kind = FusedActivation::Kind::leaky_relu;
      f.alpha = model::float_attribute(a, "alpha", 0.01f);
    } else if (a.op_type() == "Clip" && model.opset() >= 11) {
      // Constant float bounds only (ReLU6 and the like).
      f.kind = FusedActivation::Kind::clip;
      f.alpha = -std::numeric_limits<float>::infinity();
      f.beta = std::numeric_limits<float>::infinity();
      for (int k = 1; k <= 2 && k < a.input_size(); ++k) {
        if (a.input(k).empty()) continue;
        const onnx::TensorProto* t = model.constant(a.input(k));
        if (!t || t->data_type() != onnx::TensorProto::FLOAT || model::element_count(*t) != 1) {
          ok = false;
          break;
        }
        (k == 1 ? f.alpha : f.beta) = static_cast<float>(model::to_doubles(*t, a.input(k))[0]);
      }
      ok &= f.alpha <= f.beta;  // else every value is max: oneDNN's clip refuses that, the op alone does it
    } else {
      ok = false;
    }
    if (ok) out[i] = {j, f};
  }
  return out;
}

}  // namespace

std::vector<ValueInfo> graph_inputs(const model::OnnxModel& model) {
  const auto& g = model.graph();
  // An initializer listed as an input is a default value, not an input.
  std::unordered_set<std::string> seen;
  for (const auto& t : g.initializer()) seen.insert(t.name());
  std::vector<ValueInfo> out;
  for (const auto& in : g.input())
    if (seen.insert(in.name()).second) out.push_back(value_info(in));
  return out;
}

void check_input(const ValueInfo& info, const Tensor& t) {
  auto fail = [&](const std::string& why) {
    throw Error(ErrorKind::shape_mismatch, "input '" + info.name + "': " + why);
  };
  if (t.empty()) fail("no data given");
  if (t.type() != info.type)
    fail("element type is " + std::string(to_string(t.type())) + ", the model expects " +
         std::string(to_string(info.type)));
  if (!info.known_rank) return;
  if (t.rank() != static_cast<int>(info.shape.size()))
    fail("shape " + to_string(t.shape()) + " has rank " + std::to_string(t.rank()) + ", the model expects rank " +
         std::to_string(info.shape.size()) + " (" + to_string(info.shape) + ", -1 = any)");
  for (int i = 0; i < t.rank(); ++i)
    if (info.shape[static_cast<std::size_t>(i)] >= 0 && info.shape[static_cast<std::size_t>(i)] != t.dim(i))
      fail("shape " + to_string(t.shape()) + " differs from the model's " + to_string(info.shape) + " in dim " +
           std::to_string(i) + " (-1 = any)");
}

Executor::Executor(const model::OnnxModel& model)
    : ctx_(std::make_unique<ExecContext>()), pool_(std::make_unique<TensorPool>()) {
  const auto& g = model.graph();
  const std::int64_t opset = model.opset();
  std::unordered_map<std::string, int> slot;
  auto new_slot = [&](const std::string& name) {
    const int s = static_cast<int>(slot_count_++);
    slot[name] = s;
    constants_.emplace_back();
    return s;
  };
  for (const auto& t : g.initializer()) {
    const int s = new_slot(t.name());
    constants_[static_cast<std::size_t>(s)] = from_onnx(t, "initializer '" + t.name() + "'");
  }
  inputs_ = graph_inputs(model);
  for (const auto& in : inputs_) input_slots_.push_back(new_slot(in.name));
  auto lookup_constant = [&](const std::string& name) -> const Tensor* {
    const auto it = slot.find(name);
    if (it == slot.end()) return nullptr;
    const Tensor& c = constants_[static_cast<std::size_t>(it->second)];
    return c.empty() ? nullptr : &c;
  };
  const std::map<int, std::pair<int, FusedActivation>> fusions = find_fusions(model);
  std::set<int> fused_away;
  for (const auto& [producer, fusion] : fusions) fused_away.insert(fusion.first);
  for (int index = 0; index < g.node_size(); ++index) {
    if (fused_away.count(index)) continue;  // runs inside its producer
    const auto& node = g.node(index);
    NodeInfo info(node, index, opset, lookup_constant);
    const auto fusion = fusions.find(index);
    if (fusion != fusions.end()) info.fused = fusion->second.second;
    if (!node.domain().empty() && node.domain() != "ai.onnx")
      info.unsupported("ops of domain '" + node.domain() + "' are not supported by the executor");
    const OpFactory factory = find_op(node.op_type());
    if (!factory) {
      std::string list;
      for (const auto& op : supported_ops()) list += (list.empty() ? "" : ", ") + op;
      info.unsupported("op " + node.op_type() + " is not supported by the executor (it runs: " + list + ")");
    }
    Step step;
    step.node = index;
    step.op_type = node.op_type();
    step.where = info.describe();
    for (const auto& name : node.input()) {
      if (name.empty()) {
        step.inputs.push_back(-1);
        continue;
      }
      const auto it = slot.find(name);
      if (it == slot.end())
        info.invalid("input '" + name + "' is neither a graph input, an initializer nor an earlier node's output");
      step.inputs.push_back(it->second);
    }
    if (node.op_type() == "Constant") {
      // Evaluated once here; later nodes see it as a constant.
      Tensor value = constant_value(info);
      info.check_attributes_used();
      if (node.output_size() != 1 || node.output(0).empty()) info.invalid("expected one output");
      if (slot.count(node.output(0))) info.invalid("output '" + node.output(0) + "' is already defined");
      constants_[static_cast<std::size_t>(new_slot(node.output(0)))] = std::move(value);
      continue;
    }
    step.op = factory(info);
    info.check_attributes_used();
    if (fusion != fusions.end()) {
      // The producer writes the activation's output instead of its own.
      const auto& act = g.node(fusion->second.first);
      step.op_type += "+" + act.op_type();
      if (slot.count(act.output(0))) info.invalid("output '" + act.output(0) + "' is already defined");
      step.outputs.push_back(new_slot(act.output(0)));
      steps_.push_back(std::move(step));
      continue;
    }
    for (const auto& name : node.output()) {
      if (name.empty()) {
        step.outputs.push_back(-1);
        continue;
      }
      if (slot.count(name)) info.invalid("output '" + name + "' is already defined");
      step.outputs.push_back(new_slot(name));
    }
    steps_.push_back(std::move(step));
  }
  for (const auto& out : g.output()) {
    const auto it = slot.find(out.name());
    if (it == slot.end())
      throw Error(ErrorKind::invalid_model, "graph output '" + out.name() + "' is never produced");
    outputs_.push_back(value_info(out));
    output_slots_.push_back(it->second);
  }
  // Each computed value is released after its last reader (never graph
  // outputs or constants).
  std::vector<int> last(slot_count_, -1);
  for (std::size_t s = 0; s < steps_.size(); ++s)
    for (int v : steps_[s].inputs)
      if (v >= 0) last[static_cast<std::size_t>(v)] = static_cast<int>(s);
  for (int v : output_slots_) last[static_cast<std::size_t>(v)] = -1;
  for (std::size_t v = 0; v < slot_count_; ++v)
    if (last[v] >= 0 && constants_[v].empty()) steps_[static_cast<std::size_t>(last[v])].release.push_back(static_cast<int>(v));
}

Executor::~Executor() = default;
Executor::Executor(Executor&&) noexcept = default;
Executor& Executor::operator=(Executor&&) noexcept = default;

std::vector<Tensor> Executor::run(const std::vector<Tensor>& inputs) {
  if (inputs.size() != inputs_.size())
    throw Error(ErrorKind::invalid_argument, "the model takes " + std::to_string(inputs_.size()) +
                                                 " input(s), " + std::to_string(inputs.size()) + " given");
  const TensorPool::Scope pool_scope(*pool_);
  std::vector<Tensor> values(slot_count_);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    check_input(inputs_[i], inputs[i]);
    values[static_cast<std::size_t>(input_slots_[i])] = inputs[i];
  }
  auto value = [&](int v) -> const Tensor* {
    if (v < 0) return nullptr;
    const Tensor& c = constants_[static_cast<std::size_t>(v)];
    return c.empty() ? &values[static_cast<std::size_t>(v)] : &c;
  };
  using clock = std::chrono::steady_clock;
  const auto run_start = clock::now();
  std::vector<const Tensor*> in;
  std::vector<Tensor> out;
  for (auto& step : steps_) {
    in.clear();
    for (int v : step.inputs) in.push_back(value(v));
    out.assign(step.outputs.size(), Tensor());
    const auto start = profiling_ ? clock::now() : clock::time_point();
    try {
      step.op->run(in, out, *ctx_);
    } catch (const std::bad_alloc&) {
      throw Error(ErrorKind::runtime,
                  step.where + ": out of memory for its outputs (input shapes " + shapes_of(in) + ")");
    } catch (const Error& e) {
      // Most ops name themselves; a tensor too big to address does not.
      if (std::string_view(e.what()).starts_with(step.where)) throw;
      throw Error(e.kind(), step.where + ": " + e.what());
    }
    if (profiling_) {
      const double seconds = std::chrono::duration<double>(clock::now() - start).count();
      profile_.seconds[step.op_type] += seconds;
      profile_.calls[step.op_type] += 1;
      const std::size_t k = static_cast<std::size_t>(&step - steps_.data());
      if (profile_.steps.size() != steps_.size()) {
        profile_.steps.assign(steps_.size(), {});
        for (std::size_t i = 0; i < steps_.size(); ++i)
          profile_.steps[i] = {steps_[i].op_type, steps_[i].node, {}, 0.0, 0};
      }
      auto& record = profile_.steps[k];
      record.input_shapes.clear();
      for (const Tensor* t : in) record.input_shapes.push_back(t ? t->shape() : Shape{});
      record.seconds += seconds;
      record.calls += 1;
    }
    for (std::size_t o = 0; o < step.outputs.size(); ++o)
      if (step.outputs[o] >= 0) values[static_cast<std::size_t>(step.outputs[o])] = std::move(out[o]);
    for (int v : step.release) values[static_cast<std::size_t>(v)] = Tensor();
  }
  std::vector<Tensor> results;
  for (int v : output_slots_) results.push_back(*value(v));
  if (profiling_) {
    profile_.total += std::chrono::duration<double>(clock::now() - run_start).count();
    profile_.runs += 1;
  }
  return results;
}

}  // namespace bnorm::exec

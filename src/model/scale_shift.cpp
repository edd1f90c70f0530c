// Replacing a BatchNormalization that cannot be folded by Mul + Add with
// constant per-channel vectors of shape (C, 1, ..., 1), which broadcast over
// the channel dim 1 of the input (for runtimes without BatchNormalization).

#include "model/fold_passes.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::model {

std::optional<std::string> replace_with_scale_shift(OnnxModel& model, const BatchNormNode& bn,
                                                    const ChannelAffine& f, std::string* nodes) {
  const auto rank = model.rank(bn.input);
  if (!rank) return "the rank of input '" + bn.input + "' is unknown";
  if (*rank < 2) return "input '" + bn.input + "' has rank " + std::to_string(*rank);
  std::int32_t type = model.element_type(bn.input);
  if (!is_floating(type)) type = bn.value[0]->data_type();
  std::vector<std::int64_t> dims(static_cast<std::size_t>(*rank - 1), 1);
  dims[0] = static_cast<std::int64_t>(f.a.size());
  // The new nodes replace the BN in place, so the graph stays topologically sorted.
  onnx::NodeProto mul, add;
  mul.set_op_type("Mul");
  mul.set_name(model.unique_name(bn.name + "_scale"));
  add.set_op_type("Add");
  add.set_name(model.unique_name(bn.name + "_shift"));
  const std::string scaled = model.unique_name(bn.output + "_scaled");
  auto constant = [&](const std::string& base, const std::vector<double>& values) {
    onnx::TensorProto t;
    t.set_name(model.unique_name(base));
    t.set_data_type(type);
    for (std::int64_t d : dims) t.add_dims(d);
    set_values(t, values);
    return model.add_initializer(std::move(t));
  };
  mul.add_input(bn.input);
  mul.add_input(constant(bn.name + "_a", f.a));
  mul.add_output(scaled);
  add.add_input(scaled);
  add.add_input(constant(bn.name + "_b", f.b));
  add.add_output(bn.output);
  auto* list = model.graph().mutable_node();
  *list->Mutable(bn.index) = std::move(add);
  list->Add(std::move(mul));
  // Move the Mul (now last) to just before the Add.
  for (int i = list->size() - 1; i > bn.index; --i) list->SwapElements(i, i - 1);
  *nodes = "Mul '" + list->Get(bn.index).name() + "' + Add '" + list->Get(bn.index + 1).name() + "'";
  // The BN's parameters go when nothing else reads them.
  model.refresh();
  std::set<std::string> unused;
  for (const auto& p : bn.param)
    if (model.consumers(p).empty() && !model.is_graph_output(p) && model.constant(p)) unused.insert(p);
  model.remove_initializers(unused);
  model.refresh();
  return std::nullopt;
}

}  // namespace bnorm::model

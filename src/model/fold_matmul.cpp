// Folding into MatMul whose second input is a constant (K, N) matrix, or
// the Transpose of a constant (N, K) one, when the product is 2-D (so the
// BatchNormalization's channel dim 1 is MatMul's N). The MatMul becomes a
// Gemm with the scaled weight and the BN's shift as C.

#include "model/fold_passes.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::model {

std::optional<std::string> fold_into_matmul(OnnxModel& model, int node, const ChannelAffine& f, bool apply) {
  std::string why;
  const auto& n = model.graph().node(node);
  if (n.input_size() != 2) return "expected 2 inputs";
  const auto rank_a = model.rank(n.input(0));
  if (!rank_a) return "the rank of input A '" + n.input(0) + "' is unknown";
  if (*rank_a != 2)
    return "the product has rank " + std::to_string(*rank_a) +
           "; BatchNormalization normalizes its dim 1, which is not MatMul's output column";
  // B itself, or the constant behind a Transpose.
  int owner = node, slot = 1;
  bool transposed = false;
  std::optional<int> transpose;
  if (!model.constant(n.input(1))) {
    transpose = model.producer(n.input(1));
    const auto* t = transpose ? &model.graph().node(*transpose) : nullptr;
    if (!t || t->op_type() != "Transpose")
      return "B '" + n.input(1) + "' is not a constant (nor a transposed one)";
    const auto perm = ints_attribute(*t, "perm");
    if (!perm.empty() && perm != std::vector<std::int64_t>{1, 0})
      return "B is a Transpose with a permutation other than (1, 0)";
    owner = *transpose;
    slot = 0;
    transposed = true;
  }
  auto w = constant_weight(model, owner, slot, "B", &why, apply);
  if (!w) return why;
  if (w->tensor->dims_size() != 2) return "B has rank " + std::to_string(w->tensor->dims_size());
  const auto rows = static_cast<std::size_t>(w->tensor->dims(0)),
             cols = static_cast<std::size_t>(w->tensor->dims(1));
  const std::size_t N = transposed ? rows : cols;
  if (N != f.a.size())
    return "B gives " + std::to_string(N) + " output columns, the BatchNormalization " +
           std::to_string(f.a.size());
  if (!apply) return std::nullopt;
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) w->values[r * cols + c] *= f.a[transposed ? r : c];
  // The scaled weight becomes the Gemm's own B (a copy when shared).
  const std::int32_t type = w->tensor->data_type();
  const std::string weight_name = model.graph().node(owner).input(slot);
  auto* g = model.graph().mutable_node(node);
  g->set_op_type("Gemm");
  g->clear_attribute();
  if (transposed) {
    auto* a = g->add_attribute();
    a->set_name("transB");
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(1);
    g->set_input(1, weight_name);
    model.refresh();
  }
  write_weight(model, node, 1, w->values);
  add_weight_input(model, node, 2, weight_name + "_bias", type, {static_cast<std::int64_t>(N)}, f.b);
  model.refresh();
  // The Transpose left without readers goes, with its weight when nothing
  // else reads that (the Gemm has its own scaled copy).
  if (transpose && model.consumers(model.graph().node(*transpose).output(0)).empty() &&
      !model.is_graph_output(model.graph().node(*transpose).output(0)))
    remove_node(model, *transpose);
  return std::nullopt;
}

}  // namespace bnorm::model

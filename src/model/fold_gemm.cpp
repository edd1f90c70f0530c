// Folding into Gemm (transB 0 or 1, any alpha and beta, with or without C):
// Y = alpha*A'B' + beta*C has output channel n in column n of B'. The new
// B' column is alpha*a[n] times the old, C becomes a[n]*beta*C + b[n], and
// alpha = beta = 1.

#include "model/fold_passes.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::model {
namespace {
void set_float_attribute(onnx::NodeProto& node, const std::string& name, float value) {
  for (auto& a : *node.mutable_attribute()) {
    if (a.name() == name) {
      a.set_f(value);
      return;
    }
  }
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(value);
}
}  // namespace

std::optional<std::string> fold_into_gemm(OnnxModel& model, int node, const ChannelAffine& f, bool apply) {
  std::string why;
  const auto& n = model.graph().node(node);
  auto b = constant_weight(model, node, 1, "B", &why, apply);
  if (!b) return why;
  if (b->tensor->dims_size() != 2) return "B has rank " + std::to_string(b->tensor->dims_size());
  const bool trans_b = int_attribute(n, "transB", 0) != 0;
  const double alpha = float_attribute(n, "alpha", 1.0f), beta = float_attribute(n, "beta", 1.0f);
  const auto rows = static_cast<std::size_t>(b->tensor->dims(0)),
             cols = static_cast<std::size_t>(b->tensor->dims(1));
  const std::size_t N = trans_b ? rows : cols;
  if (N != f.a.size())
    return "B gives " + std::to_string(N) + " output columns, the BatchNormalization " +
           std::to_string(f.a.size());
  const bool has_c = n.input_size() > 2 && !n.input(2).empty();
  std::vector<double> c_new(N, 0.0);
  std::vector<std::int64_t> c_dims = {static_cast<std::int64_t>(N)};
  if (has_c) {
    auto c = constant_weight(model, node, 2, "C", &why, apply);
    if (!c) return why;
    const auto& cd = c->tensor->dims();
    const auto size = static_cast<std::size_t>(element_count(*c->tensor));
    const bool per_column =
        size == 1 || (size == N && cd.size() <= 2 && cd[cd.size() - 1] == static_cast<std::int64_t>(N));
    const bool per_element = !per_column && cd.size() == 2 && cd[1] == static_cast<std::int64_t>(N);
    if (!per_column && !per_element)
      return "C of shape " + std::to_string(cd.size()) + "-D with " + std::to_string(size) +
             " values does not broadcast per output column";
    if (!apply) return std::nullopt;
    if (per_column) {
      for (std::size_t j = 0; j < N; ++j) c_new[j] = f.a[j] * beta * c->values[size == 1 ? 0 : j] + f.b[j];
      if (size != 1) c_dims.assign(cd.begin(), cd.end());
    } else {
      c_new.resize(size);
      for (std::size_t i = 0; i < size; ++i) c_new[i] = f.a[i % N] * beta * c->values[i] + f.b[i % N];
      c_dims.assign(cd.begin(), cd.end());
    }
  }
  if (!apply) return std::nullopt;
  if (!has_c)
    for (std::size_t j = 0; j < N; ++j) c_new[j] = f.b[j];
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) b->values[r * cols + c] *= alpha * f.a[trans_b ? r : c];
  const std::int32_t type = b->tensor->data_type();
  write_weight(model, node, 1, b->values);
  const auto* c_tensor = has_c ? model.constant(model.graph().node(node).input(2)) : nullptr;
  if (c_tensor && static_cast<std::size_t>(element_count(*c_tensor)) == c_new.size()) {
    write_weight(model, node, 2, c_new);
  } else {
    add_weight_input(model, node, 2, model.graph().node(node).input(1) + "_bias", type, c_dims, c_new);
  }
  auto* g = model.graph().mutable_node(node);
  set_float_attribute(*g, "alpha", 1.0f);
  set_float_attribute(*g, "beta", 1.0f);
  return std::nullopt;
}

}  // namespace bnorm::model

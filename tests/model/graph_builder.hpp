// Builds small ONNX graphs in memory for the model-toolkit tests.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "model/onnx_model.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::test {

class GraphBuilder {
 public:
  explicit GraphBuilder(std::int64_t opset = 13) {
    model_.set_ir_version(7);
    model_.set_producer_name("bnorm-tests");
    auto* op = model_.add_opset_import();
    op->set_domain("");
    op->set_version(opset);
    model_.mutable_graph()->set_name("test");
  }

  /// A graph input or output with a full shape (dims < 0: symbolic).
  void input(const std::string& name, std::int32_t type, const std::vector<std::int64_t>& dims) {
    value(*model_.mutable_graph()->add_input(), name, type, dims);
  }
  void output(const std::string& name, std::int32_t type, const std::vector<std::int64_t>& dims) {
    value(*model_.mutable_graph()->add_output(), name, type, dims);
  }

  onnx::TensorProto& initializer(const std::string& name, const std::vector<std::int64_t>& dims,
                                 const std::vector<double>& values, std::int32_t type = onnx::TensorProto::FLOAT) {
    auto* t = model_.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(type);
    for (auto d : dims) t->add_dims(d);
    model::set_values(*t, values);
    return *t;
  }

  /// A 1-D int64 initializer (shapes, pads, axes, steps): exact beyond
  /// 2^53, unlike initializer()'s doubles.
  onnx::TensorProto& int64_initializer(const std::string& name, const std::vector<std::int64_t>& values) {
    auto* t = model_.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_dims(static_cast<std::int64_t>(values.size()));
    for (auto v : values) t->add_int64_data(v);
    return *t;
  }

  onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::vector<std::string>& outputs, const std::string& name = "") {
    auto* n = model_.mutable_graph()->add_node();
    n->set_op_type(op);
    n->set_name(name.empty() ? op + "_" + std::to_string(model_.graph().node_size()) : name);
    for (const auto& i : inputs) n->add_input(i);
    for (const auto& o : outputs) n->add_output(o);
    return *n;
  }

  static void attr(onnx::NodeProto& n, const std::string& name, std::int64_t v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto& n, const std::string& name, float v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  static void attr(onnx::NodeProto& n, const std::string& name, const std::vector<std::int64_t>& v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (auto x : v) a->add_ints(x);
  }

  /// Scale, B, mean, var initializers for a BN of C channels: name + "_scale" etc.
  std::vector<std::string> batch_norm_params(const std::string& name, std::int64_t C, std::uint64_t seed,
                                             std::int32_t type = onnx::TensorProto::FLOAT) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::vector<double> scale, bias, mean, var;
    for (std::int64_t c = 0; c < C; ++c) {
      scale.push_back(0.5 + u(rng));
      bias.push_back(u(rng) * 2 - 1);
      mean.push_back(u(rng) * 2 - 1);
      var.push_back(0.5 + 1.5 * u(rng));
    }
    initializer(name + "_scale", {C}, scale, type);
    initializer(name + "_bias", {C}, bias, type);
    initializer(name + "_mean", {C}, mean, type);
    initializer(name + "_var", {C}, var, type);
    return {name + "_scale", name + "_bias", name + "_mean", name + "_var"};
  }

  /// A BatchNormalization node reading `x` (with batch_norm_params).
  onnx::NodeProto& batch_norm(const std::string& name, const std::string& x, const std::string& y, std::int64_t C,
                              std::uint64_t seed, std::int32_t type = onnx::TensorProto::FLOAT) {
    auto p = batch_norm_params(name, C, seed, type);
    auto& n = node("BatchNormalization", {x, p[0], p[1], p[2], p[3]}, {y}, name);
    attr(n, "epsilon", 1e-3f);
    return n;
  }

  static std::vector<double> random(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> d(0.0, 1.0);
    std::vector<double> v(n);
    for (auto& x : v) x = d(rng);
    return v;
  }

  onnx::ModelProto& proto() { return model_; }
  model::OnnxModel model() const { return model::OnnxModel(model_); }

 private:
  static void value(onnx::ValueInfoProto& v, const std::string& name, std::int32_t type,
                    const std::vector<std::int64_t>& dims) {
    v.set_name(name);
    auto* tt = v.mutable_type()->mutable_tensor_type();
    tt->set_elem_type(type);
    auto* shape = tt->mutable_shape();
    for (auto d : dims) {
      auto* dim = shape->add_dim();
      if (d >= 0) {
        dim->set_dim_value(d);
      } else {
        dim->set_dim_param("n");
      }
    }
  }

  onnx::ModelProto model_;
};

}  // namespace bnorm::test

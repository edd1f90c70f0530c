// Folding BatchNormalization into hand-built graphs: every producer kind and
// variant, checked against the formula W' = W * a, b' = a * b + (B - mean *
// a) with a = scale / sqrt(var + eps); and every must-not-fold case, which
// must leave the model exactly as it was.

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "model/batch_norm_node.hpp"
#include "model/fold.hpp"
#include "model/graph_builder.hpp"

namespace bnorm::test {
namespace {

using model::FoldOutcome;
using TP = onnx::TensorProto;

struct Affine {
  std::vector<double> a, b;
};

// The BN's map, from the builder's tensors (the test's own formula).
// eps is the float attribute the builder writes, widened exactly.
Affine expected_affine(const onnx::ModelProto& m, const std::string& bn, double eps = static_cast<double>(1e-3f)) {
  auto get = [&](const std::string& name) {
    for (const auto& t : m.graph().initializer())
      if (t.name() == name) return model::to_doubles(t, name);
    ADD_FAILURE() << "no initializer " << name;
    return std::vector<double>{};
  };
  const auto s = get(bn + "_scale"), b = get(bn + "_bias"), mean = get(bn + "_mean"), var = get(bn + "_var");
  Affine f;
  for (std::size_t c = 0; c < s.size(); ++c) {
    f.a.push_back(s[c] / std::sqrt(var[c] + eps));
    f.b.push_back(b[c] - mean[c] * f.a.back());
  }
  return f;
}

std::vector<double> tensor(const model::OnnxModel& m, const std::string& name) {
  const auto* t = m.constant(name);
  EXPECT_NE(t, nullptr) << name;
  return t ? model::to_doubles(*t, name) : std::vector<double>{};
}

double tolerance(std::int32_t type) {
  return type == TP::FLOAT16 ? 2e-3 : type == TP::DOUBLE ? 1e-14 : 1e-6;
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double rel, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], rel * (1 + std::fabs(want[i]))) << what << "[" << i << "]";
}

const onnx::NodeProto* producer_of(const model::OnnxModel& m, const std::string& tensor) {
  const auto p = m.producer(tensor);
  return p ? &m.graph().node(*p) : nullptr;
}

TEST(FoldConv, EveryVariant) {
  for (std::int32_t type : {TP::FLOAT, TP::FLOAT16, TP::DOUBLE}) {
    for (int rank : {1, 2, 3}) {
      for (std::int64_t group : {1, 2, 4}) {
        for (bool bias : {false, true}) {
          SCOPED_TRACE("type " + std::to_string(type) + " rank " + std::to_string(rank) + " group " +
                       std::to_string(group) + (bias ? " bias" : ""));
          const std::int64_t cin = 4, cout = group == 4 ? 4 : 6;  // group 4 = depthwise
          GraphBuilder g;
          std::vector<std::int64_t> xdims = {2, cin}, wdims = {cout, cin / group};
          for (int k = 0; k < rank; ++k) {
            xdims.push_back(7);
            wdims.push_back(3);
          }
          g.input("x", type, xdims);
          std::size_t wn = 1;
          for (auto d : wdims) wn *= static_cast<std::size_t>(d);
          g.initializer("w", wdims, GraphBuilder::random(wn, 1), type);
          std::vector<std::string> inputs = {"x", "w"};
          if (bias) {
            g.initializer("b", {cout}, GraphBuilder::random(static_cast<std::size_t>(cout), 2), type);
            inputs.push_back("b");
          }
          auto& conv = g.node("Conv", inputs, {"c"}, "conv");
          GraphBuilder::attr(conv, "group", group);
          GraphBuilder::attr(conv, "strides", std::vector<std::int64_t>(static_cast<std::size_t>(rank), 2));
          GraphBuilder::attr(conv, "dilations", std::vector<std::int64_t>(static_cast<std::size_t>(rank), 1));
          GraphBuilder::attr(conv, "pads", std::vector<std::int64_t>(static_cast<std::size_t>(2 * rank), 1));
          g.batch_norm("bn", "c", "y", cout, 3, type);
          g.output("y", type, {});
          const Affine f = expected_affine(g.proto(), "bn");
          const auto w0 = model::to_doubles(g.proto().graph().initializer(0), "w");
          const auto b0 = bias ? model::to_doubles(g.proto().graph().initializer(1), "b")
                               : std::vector<double>(static_cast<std::size_t>(cout), 0.0);
          model::OnnxModel m = g.model();
          const auto report = model::fold_batch_norms(m);
          ASSERT_EQ(report.outcomes.size(), 1u);
          ASSERT_EQ(report.outcomes[0].action, FoldOutcome::Action::folded) << report.outcomes[0].reason;
          EXPECT_EQ(report.outcomes[0].target, "Conv 'conv'");
          // The Conv now produces the BN's output; the BN and its parameters are gone.
          const auto* c = producer_of(m, "y");
          ASSERT_NE(c, nullptr);
          EXPECT_EQ(c->op_type(), "Conv");
          EXPECT_EQ(m.graph().node_size(), 1);
          EXPECT_EQ(m.constant("bn_scale"), nullptr);
          std::vector<double> w_want(w0.size()), b_want(static_cast<std::size_t>(cout));
          const std::size_t per = w0.size() / static_cast<std::size_t>(cout);
          for (std::size_t o = 0; o < static_cast<std::size_t>(cout); ++o) {
            for (std::size_t i = 0; i < per; ++i) w_want[o * per + i] = w0[o * per + i] * f.a[o];
            b_want[o] = f.a[o] * b0[o] + f.b[o];
          }
          expect_near_all(tensor(m, c->input(1)), w_want, tolerance(type), "weight");
          ASSERT_EQ(c->input_size(), 3);
          expect_near_all(tensor(m, c->input(2)), b_want, tolerance(type), "bias");
          EXPECT_EQ(m.constant(c->input(2))->data_type(), type);
        }
      }
    }
  }
}

TEST(FoldConvTranspose, GroupedWithOutputPadding) {
  for (std::int64_t group : {1, 2}) {
    for (bool bias : {false, true}) {
      SCOPED_TRACE("group " + std::to_string(group) + (bias ? " bias" : ""));
      const std::int64_t cin = 4, per_group_out = 3, cout = per_group_out * group;
      GraphBuilder g;
      g.input("x", TP::FLOAT, {1, cin, 5, 5});
      g.initializer("w", {cin, per_group_out, 3, 3},
                    GraphBuilder::random(static_cast<std::size_t>(cin * per_group_out * 9), 4));
      std::vector<std::string> inputs = {"x", "w"};
      if (bias) {
        g.initializer("b", {cout}, GraphBuilder::random(static_cast<std::size_t>(cout), 5));
        inputs.push_back("b");
      }
      auto& ct = g.node("ConvTranspose", inputs, {"c"}, "up");
      GraphBuilder::attr(ct, "group", group);
      GraphBuilder::attr(ct, "strides", std::vector<std::int64_t>{2, 2});
      GraphBuilder::attr(ct, "output_padding", std::vector<std::int64_t>{1, 1});
      g.batch_norm("bn", "c", "y", cout, 6);
      g.output("y", TP::FLOAT, {});
      const Affine f = expected_affine(g.proto(), "bn");
      const auto w0 = model::to_doubles(g.proto().graph().initializer(0), "w");
      const auto b0 = bias ? model::to_doubles(g.proto().graph().initializer(1), "b")
                           : std::vector<double>(static_cast<std::size_t>(cout), 0.0);
      model::OnnxModel m = g.model();
      const auto report = model::fold_batch_norms(m);
      ASSERT_EQ(report.outcomes[0].action, FoldOutcome::Action::folded) << report.outcomes[0].reason;
      const auto* c = producer_of(m, "y");
      // W[i, j] feeds output channel (i / (cin/group)) * per_group_out + j.
      std::vector<double> w_want(w0);
      for (std::int64_t i = 0; i < cin; ++i)
        for (std::int64_t j = 0; j < per_group_out; ++j)
          for (int k = 0; k < 9; ++k) {
            const auto o = static_cast<std::size_t>((i / (cin / group)) * per_group_out + j);
            w_want[static_cast<std::size_t>((i * per_group_out + j) * 9 + k)] *= f.a[o];
          }
      std::vector<double> b_want(static_cast<std::size_t>(cout));
      for (std::size_t o = 0; o < b_want.size(); ++o) b_want[o] = f.a[o] * b0[o] + f.b[o];
      expect_near_all(tensor(m, c->input(1)), w_want, 1e-6, "weight");
      expect_near_all(tensor(m, c->input(2)), b_want, 1e-6, "bias");
    }
  }
}

TEST(FoldGemm, TransposesScalesAndBiases) {
  const std::int64_t M = 3, K = 5, N = 4;
  struct Case {
    bool trans_b;
    float alpha, beta;
    std::vector<std::int64_t> c_dims;  // empty: no C; {0}: scalar
  };
  for (const Case& cs : {Case{false, 1.0f, 1.0f, {}}, Case{true, 0.5f, 2.0f, {N}}, Case{false, 2.0f, 0.25f, {0}},
                         Case{true, 1.5f, 1.0f, {1, N}}, Case{false, 1.0f, 3.0f, {M, N}}}) {
    SCOPED_TRACE(std::string("transB ") + (cs.trans_b ? "1" : "0") + " C rank " + std::to_string(cs.c_dims.size()));
    GraphBuilder g;
    g.input("a", TP::FLOAT, {M, K});
    g.initializer("w", cs.trans_b ? std::vector<std::int64_t>{N, K} : std::vector<std::int64_t>{K, N},
                  GraphBuilder::random(static_cast<std::size_t>(K * N), 7));
    std::vector<std::string> inputs = {"a", "w"};
    std::vector<double> c0;
    if (!cs.c_dims.empty()) {
      std::vector<std::int64_t> dims = cs.c_dims == std::vector<std::int64_t>{0} ? std::vector<std::int64_t>{} : cs.c_dims;
      std::size_t n = 1;
      for (auto d : dims) n *= static_cast<std::size_t>(d);
      c0 = GraphBuilder::random(n, 8);
      g.initializer("cc", dims, c0);
      inputs.push_back("cc");
    }
    auto& gemm = g.node("Gemm", inputs, {"g"}, "gemm");
    GraphBuilder::attr(gemm, "transB", static_cast<std::int64_t>(cs.trans_b));
    GraphBuilder::attr(gemm, "alpha", cs.alpha);
    GraphBuilder::attr(gemm, "beta", cs.beta);
    g.batch_norm("bn", "g", "y", N, 9);
    g.output("y", TP::FLOAT, {M, N});
    const Affine f = expected_affine(g.proto(), "bn");
    const auto w0 = model::to_doubles(g.proto().graph().initializer(0), "w");
    model::OnnxModel m = g.model();
    const auto report = model::fold_batch_norms(m);
    ASSERT_EQ(report.outcomes[0].action, FoldOutcome::Action::folded) << report.outcomes[0].reason;
    const auto* p = producer_of(m, "y");
    EXPECT_EQ(model::float_attribute(*p, "alpha", 0), 1.0f);
    EXPECT_EQ(model::float_attribute(*p, "beta", 0), 1.0f);
    std::vector<double> w_want(w0);
    for (std::int64_t r = 0; r < (cs.trans_b ? N : K); ++r)
      for (std::int64_t c = 0; c < (cs.trans_b ? K : N); ++c)
        w_want[static_cast<std::size_t>(r * (cs.trans_b ? K : N) + c)] *=
            cs.alpha * f.a[static_cast<std::size_t>(cs.trans_b ? r : c)];
    expect_near_all(tensor(m, p->input(1)), w_want, 1e-6, "B");
    // C' evaluated at every (m, n) must be a*beta*C + b.
    const auto c_new = tensor(m, p->input(2));
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t j = 0; j < N; ++j) {
        double c_old = 0.0;
        if (!c0.empty()) c_old = c0.size() == 1 ? c0[0] : c0.size() == static_cast<std::size_t>(N) ? c0[static_cast<std::size_t>(j)] : c0[static_cast<std::size_t>(i * N + j)];
        const double want = f.a[static_cast<std::size_t>(j)] * cs.beta * c_old + f.b[static_cast<std::size_t>(j)];
        const double got = c_new.size() == static_cast<std::size_t>(N) ? c_new[static_cast<std::size_t>(j)] : c_new[static_cast<std::size_t>(i * N + j)];
        ASSERT_NEAR(got, want, 1e-6 * (1 + std::fabs(want))) << i << "," << j;
      }
  }
}

TEST(FoldMatMul, ConstantAndTransposedConstantBecomeGemm) {
  const std::int64_t M = 2, K = 6, N = 5;
  for (bool transposed : {false, true}) {
    SCOPED_TRACE(transposed ? "Transpose(const)" : "const");
    GraphBuilder g;
    g.input("a", TP::FLOAT, {M, K});
    g.initializer("w", transposed ? std::vector<std::int64_t>{N, K} : std::vector<std::int64_t>{K, N},
                  GraphBuilder::random(static_cast<std::size_t>(K * N), 10));
    std::string b = "w";
    if (transposed) {
      auto& t = g.node("Transpose", {"w"}, {"wt"}, "transpose");
      GraphBuilder::attr(t, "perm", std::vector<std::int64_t>{1, 0});
      b = "wt";
    }
    g.node("MatMul", {"a", b}, {"mm"}, "matmul");
    g.batch_norm("bn", "mm", "y", N, 11);
    g.output("y", TP::FLOAT, {M, N});
    const Affine f = expected_affine(g.proto(), "bn");
    const auto w0 = model::to_doubles(g.proto().graph().initializer(0), "w");
    model::OnnxModel m = g.model();
    const auto report = model::fold_batch_norms(m);
    ASSERT_EQ(report.outcomes[0].action, FoldOutcome::Action::folded) << report.outcomes[0].reason;
    EXPECT_EQ(report.outcomes[0].target, "MatMul 'matmul' (now a Gemm)");
    const auto* p = producer_of(m, "y");
    EXPECT_EQ(p->op_type(), "Gemm");
    EXPECT_EQ(model::int_attribute(*p, "transB", 0), transposed ? 1 : 0);
    EXPECT_EQ(m.graph().node_size(), 1);  // the Transpose went with the MatMul's old input
    // Only the Gemm's weight and bias are left: the Transpose's weight,
    // now read by nothing, went with it.
    EXPECT_EQ(m.graph().initializer_size(), 2);
    std::vector<double> w_want(w0);
    for (std::int64_t r = 0; r < (transposed ? N : K); ++r)
      for (std::int64_t c = 0; c < (transposed ? K : N); ++c)
        w_want[static_cast<std::size_t>(r * (transposed ? K : N) + c)] *= f.a[static_cast<std::size_t>(transposed ? r : c)];
    expect_near_all(tensor(m, p->input(1)), w_want, 1e-6, "B");
    expect_near_all(tensor(m, p->input(2)), f.b, 1e-6, "C");
  }
}

// A Conv-BN graph for the must-not-fold cases, with a hook to spoil it.
template <class Spoil>
model::OnnxModel conv_bn(Spoil&& spoil) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {1, 2, 4, 4});
  g.initializer("w", {3, 2, 1, 1}, GraphBuilder::random(6, 12));
  g.node("Conv", {"x", "w"}, {"c"}, "conv");
  g.batch_norm("bn", "c", "y", 3, 13);
  g.output("y", TP::FLOAT, {1, 3, 4, 4});
  spoil(g);
  return g.model();
}

void expect_left(model::OnnxModel m, const std::string& reason_part) {
  const std::string before = m.proto().SerializeAsString();
  const auto report = model::fold_batch_norms(m);
  ASSERT_EQ(report.outcomes.size(), 1u);
  EXPECT_EQ(report.outcomes[0].action, FoldOutcome::Action::left);
  EXPECT_NE(report.outcomes[0].reason.find(reason_part), std::string::npos) << report.outcomes[0].reason;
  EXPECT_EQ(m.proto().SerializeAsString(), before) << "a refused fold changed the model";
}

TEST(FoldRefuses, EveryMustNotFoldCase) {
  expect_left(conv_bn([](GraphBuilder& g) { g.node("Relu", {"c"}, {"r"}, "other"); g.output("r", TP::FLOAT, {}); }),
              "1 other consumer");
  expect_left(conv_bn([](GraphBuilder& g) { g.output("c", TP::FLOAT, {}); }), "graph output");
  expect_left(conv_bn([](GraphBuilder& g) {
                GraphBuilder::attr(*g.proto().mutable_graph()->mutable_node(1), "training_mode", std::int64_t{1});
              }),
              "training mode");
  // Before opset 14 an output besides Y is training mode, read or not;
  // before opset 7 so is is_test = 0, its default.
  for (const bool read : {true, false})
    expect_left(conv_bn([&](GraphBuilder& g) {
                  g.proto().mutable_graph()->mutable_node(1)->add_output("running_mean");
                  if (read) g.output("running_mean", TP::FLOAT, {3});
                }),
                "training mode (output 'running_mean' besides Y (opset 13))");
  expect_left(conv_bn([](GraphBuilder& g) { g.proto().mutable_opset_import(0)->set_version(6); }),
              "training mode (is_test = 0 (opset 6))");
  {
    model::OnnxModel m = conv_bn([](GraphBuilder& g) {
      g.proto().mutable_opset_import(0)->set_version(6);
      GraphBuilder::attr(*g.proto().mutable_graph()->mutable_node(1), "is_test", std::int64_t{1});
    });
    EXPECT_EQ(model::fold_batch_norms(m).outcomes[0].action, FoldOutcome::Action::folded) << "is_test = 1";
  }
  // From opset 14 such outputs belong to training_mode = 1 only; read with
  // training_mode = 0 (not a valid model) they still keep the BN.
  expect_left(conv_bn([](GraphBuilder& g) {
                g.proto().mutable_opset_import(0)->set_version(15);
                g.proto().mutable_graph()->mutable_node(1)->add_output("running_mean");
                g.output("running_mean", TP::FLOAT, {3});
              }),
              "running-statistics outputs");
  // A BN with no output (found by the fuzzer: the fold walked off the end
  // of the node's outputs).
  expect_left(conv_bn([](GraphBuilder& g) {
                g.proto().mutable_graph()->mutable_node(1)->clear_output();
                g.proto().mutable_graph()->mutable_output()->Clear();
                g.output("c", TP::FLOAT, {});
              }),
              "no output");
  // spatial = 0 (opsets 7 and 8): parameters per activation, not per
  // channel. --scale-shift turned them into Mul / Add constants that
  // broadcast to another output shape (found by a helper's audit).
  for (const bool scale_shift : {false, true}) {
    GraphBuilder g(8);
    g.input("x", TP::FLOAT, {2, 1, 4});
    g.node("Relu", {"x"}, {"r"});
    auto& bn = g.node("BatchNormalization", {"r", "s", "b", "m", "v"}, {"y"}, "bn");
    GraphBuilder::attr(bn, "spatial", std::int64_t{0});
    for (const char* p : {"s", "b", "m", "v"}) g.initializer(p, {1, 4}, {1.0, 2.0, 3.0, 4.0});
    g.output("y", TP::FLOAT, {2, 1, 4});
    model::OnnxModel m = g.model();
    const std::string before = m.proto().SerializeAsString();
    const auto report = model::fold_batch_norms(m, {scale_shift});
    EXPECT_EQ(report.outcomes[0].action, FoldOutcome::Action::left);
    EXPECT_NE(report.outcomes[0].reason.find("spatial = 0"), std::string::npos) << report.outcomes[0].reason;
    EXPECT_EQ(m.proto().SerializeAsString(), before);
  }
  // A weight with a 0 dim (the fold divided by it: SIGFPE; found by a
  // helper's audit): a Conv with no output channels, a ConvTranspose with
  // no input channels.
  for (const auto& [op, x, w, channels, y] :
       {std::tuple{"Conv", std::vector<std::int64_t>{1, 1, 4, 4}, std::vector<std::int64_t>{0, 1, 3, 3}, 0,
                   std::vector<std::int64_t>{1, 0, 2, 2}},
        std::tuple{"ConvTranspose", std::vector<std::int64_t>{1, 0, 4, 4},
                   std::vector<std::int64_t>{0, 2, 3, 3}, 2, std::vector<std::int64_t>{1, 2, 6, 6}}}) {
    GraphBuilder g;
    g.input("x", TP::FLOAT, x);
    g.initializer("w", w, {});
    g.node(op, {"x", "w"}, {"c"}, "conv");
    g.batch_norm("bn", "c", "y", channels, 13);
    g.output("y", TP::FLOAT, y);
    expect_left(g.model(), "weight has no elements");
  }
  // Weights that are a graph input (not a constant).
  expect_left(conv_bn([](GraphBuilder& g) {
                g.proto().mutable_graph()->mutable_initializer()->DeleteSubrange(0, 1);
                g.input("w", TP::FLOAT, {3, 2, 1, 1});
              }),
              "weight 'w' is not a constant");
  // BN statistics that are a graph input.
  expect_left(conv_bn([](GraphBuilder& g) {
                auto* inits = g.proto().mutable_graph()->mutable_initializer();
                for (int i = 0; i < inits->size(); ++i)
                  if (inits->Get(i).name() == "bn_mean") inits->DeleteSubrange(i, 1);
                g.input("bn_mean", TP::FLOAT, {3});
              }),
              "input_mean 'bn_mean' is not a constant");
  // BN after a node that cannot absorb a scale.
  {
    GraphBuilder g;
    g.input("x", TP::FLOAT, {1, 3, 4, 4});
    g.node("Relu", {"x"}, {"r"}, "relu");
    g.batch_norm("bn", "r", "y", 3, 14);
    g.output("y", TP::FLOAT, {});
    expect_left(g.model(), "cannot absorb");
  }
  // BN on a graph input.
  {
    GraphBuilder g;
    g.input("x", TP::FLOAT, {1, 3, 4, 4});
    g.batch_norm("bn", "x", "y", 3, 15);
    g.output("y", TP::FLOAT, {});
    expect_left(g.model(), "not produced by a node");
  }
  // MatMul whose product has rank 3: the BN's channel is not MatMul's column.
  {
    GraphBuilder g;
    g.input("a", TP::FLOAT, {2, 3, 4});
    g.initializer("w", {4, 3}, GraphBuilder::random(12, 16));
    g.node("MatMul", {"a", "w"}, {"mm"}, "matmul");
    g.batch_norm("bn", "mm", "y", 3, 17);
    g.output("y", TP::FLOAT, {});
    expect_left(g.model(), "rank 3");
  }
  // Gemm with a C that does not broadcast per column.
  {
    GraphBuilder g;
    g.input("a", TP::FLOAT, {3, 4});
    g.initializer("w", {4, 2}, GraphBuilder::random(8, 18));
    g.initializer("cc", {3, 1}, GraphBuilder::random(3, 19));
    g.node("Gemm", {"a", "w", "cc"}, {"g"}, "gemm");
    g.batch_norm("bn", "g", "y", 2, 20);
    g.output("y", TP::FLOAT, {});
    expect_left(g.model(), "does not broadcast");
  }
  // Channel counts that disagree.
  expect_left(conv_bn([](GraphBuilder& g) {
                auto* inits = g.proto().mutable_graph()->mutable_initializer();
                for (int i = 0; i < inits->size(); ++i)
                  if (inits->Get(i).name() == "w") model::set_values(*inits->Mutable(i), {});
                auto* w = inits->Mutable(0);
                w->clear_dims();
                for (auto d : {4, 2, 1, 1}) w->add_dims(d);
                model::set_values(*w, GraphBuilder::random(8, 21));
              }),
              "4 output channels");
}

// An If node on cond whose then-branch reads `then_reads` (through one node
// of `op`) and whose else-branch returns x: a reader the main graph's
// node list does not show.
void add_if_reading(GraphBuilder& g, const std::string& op, const std::vector<std::string>& then_reads) {
  g.input("cond", TP::BOOL, {});
  auto& n = g.node("If", {"cond"}, {"z"}, "if");
  auto branch = [&](const char* name, const std::string& body_op, const std::vector<std::string>& reads) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::GRAPH);
    auto* sg = a->mutable_g();
    sg->set_name(name);
    auto* b = sg->add_node();
    b->set_op_type(body_op);
    b->set_name(std::string(name) + "_node");
    for (const auto& r : reads) b->add_input(r);
    b->add_output(std::string(name) + "_out");
    sg->add_output()->set_name(std::string(name) + "_out");
  };
  branch("then_branch", op, then_reads);
  branch("else_branch", "Identity", {"x"});
  g.output("z", TP::FLOAT, {});
}

// A weight also read inside a subgraph is copied, not changed; a producer
// output read inside one has another reader, so its BN is left.
TEST(FoldSubgraphs, ReadersInsideIfBranchesCount) {
  {
    GraphBuilder g;
    g.input("x", TP::FLOAT, {1, 2, 4, 4});
    g.initializer("w", {3, 2, 1, 1}, GraphBuilder::random(6, 24));
    g.node("Conv", {"x", "w"}, {"c1"}, "conv1");
    g.batch_norm("bn", "c1", "y1", 3, 25);
    g.output("y1", TP::FLOAT, {});
    add_if_reading(g, "Conv", {"x", "w"});
    const auto w0 = model::to_doubles(g.proto().graph().initializer(0), "w");
    model::OnnxModel m = g.model();
    ASSERT_EQ(model::fold_batch_norms(m).outcomes[0].action, FoldOutcome::Action::folded);
    EXPECT_EQ(tensor(m, "w"), w0) << "the then-branch's Conv still reads w";
    EXPECT_NE(producer_of(m, "y1")->input(1), "w");
  }
  expect_left(conv_bn([](GraphBuilder& g) { add_if_reading(g, "Identity", {"c"}); }), "1 other consumer");
}

TEST(FoldConv, SharedWeightsAreCopiedNotChanged) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {1, 2, 4, 4});
  g.initializer("w", {3, 2, 1, 1}, GraphBuilder::random(6, 22));
  g.node("Conv", {"x", "w"}, {"c1"}, "conv1");
  g.node("Conv", {"x", "w"}, {"c2"}, "conv2");
  g.batch_norm("bn", "c1", "y1", 3, 23);
  g.output("y1", TP::FLOAT, {});
  g.output("c2", TP::FLOAT, {});
  const auto w0 = model::to_doubles(g.proto().graph().initializer(0), "w");
  model::OnnxModel m = g.model();
  ASSERT_EQ(model::fold_batch_norms(m).outcomes[0].action, FoldOutcome::Action::folded);
  // conv2 still reads the original weights; conv1 reads a folded copy.
  EXPECT_EQ(tensor(m, "w"), w0);
  const auto* c1 = producer_of(m, "y1");
  EXPECT_NE(c1->input(1), "w");
}

TEST(FoldConv, ParametersFromConstantNodes) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {1, 2, 4, 4});
  // Weight and BN statistics as Constant nodes instead of initializers.
  auto constant = [&](const std::string& name, const std::vector<std::int64_t>& dims, const std::vector<double>& v) {
    auto& n = g.node("Constant", {}, {name}, name + "_node");
    auto* a = n.add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    a->mutable_t()->set_data_type(TP::FLOAT);
    for (auto d : dims) a->mutable_t()->add_dims(d);
    model::set_values(*a->mutable_t(), v);
  };
  constant("w", {3, 2, 1, 1}, GraphBuilder::random(6, 24));
  constant("s", {3}, {1.0, 2.0, 0.5});
  constant("bb", {3}, {0.0, 1.0, -1.0});
  constant("mu", {3}, {0.5, 0.25, 0.0});
  constant("v", {3}, {1.0, 4.0, 0.25});
  g.node("Conv", {"x", "w"}, {"c"}, "conv");
  auto& bn = g.node("BatchNormalization", {"c", "s", "bb", "mu", "v"}, {"y"}, "bn");
  GraphBuilder::attr(bn, "epsilon", 0.0f);
  g.output("y", TP::FLOAT, {});
  model::OnnxModel m = g.model();
  const auto report = model::fold_batch_norms(m);
  ASSERT_EQ(report.outcomes[0].action, FoldOutcome::Action::folded) << report.outcomes[0].reason;
  const auto* c = producer_of(m, "y");
  // a = s / sqrt(v) = {1, 1, 1}; b = bb - mu * a.
  expect_near_all(tensor(m, c->input(2)), {-0.5, 0.75, -1.0}, 1e-7, "bias");
}

// IR version 3 models list every initializer among the graph inputs: the
// initializers a fold adds (a bias for a Conv without one, a copy of a
// shared weight, scale-shift's constants) must be declared there too, and
// the ones it removes undeclared, or the model fails onnx::checker.
TEST(FoldIrVersion3, AddedAndRemovedInitializersAreGraphInputs) {
  for (bool scale_shift : {false, true}) {
    SCOPED_TRACE(scale_shift ? "scale-shift" : "fold into Conv");
    GraphBuilder g(9);
    g.proto().set_ir_version(3);
    g.input("x", TP::FLOAT, {1, 2, 4, 4});
    g.initializer("w", {3, 2, 1, 1}, GraphBuilder::random(6, 31));
    g.node("Conv", {"x", "w"}, {"c"}, "conv");
    std::string bn_in = "c";
    if (scale_shift) {
      g.node("Relu", {"c"}, {"r"}, "relu");
      bn_in = "r";
    }
    g.batch_norm("bn", bn_in, "y", 3, 32);
    g.output("y", TP::FLOAT, {1, 3, 4, 4});
    for (const auto& t : g.proto().graph().initializer())
      g.input(t.name(), t.data_type(), {t.dims().begin(), t.dims().end()});
    model::OnnxModel m = g.model();
    const auto report = model::fold_batch_norms(m, {scale_shift});
    ASSERT_EQ(report.outcomes[0].action,
              scale_shift ? FoldOutcome::Action::scale_shift : FoldOutcome::Action::folded)
        << report.outcomes[0].reason;
    std::set<std::string> inits, inputs;
    for (const auto& t : m.graph().initializer()) inits.insert(t.name());
    for (const auto& v : m.graph().input())
      if (v.name() != "x") inputs.insert(v.name());
    EXPECT_EQ(inputs, inits);
    EXPECT_EQ(inits.count("bn_mean"), 0u);
    const auto path =
        std::filesystem::temp_directory_path() / ("bnorm_ir3_fold_" + std::to_string(scale_shift) + ".onnx");
    EXPECT_NO_THROW(m.save(path));  // runs onnx::checker
    std::filesystem::remove(path);
  }
}

TEST(FoldScaleShift, ReplacesWhatCannotFold) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {1, 3, 4, 4});
  g.node("Relu", {"x"}, {"r"}, "relu");
  g.batch_norm("bn", "r", "y", 3, 25);
  g.output("y", TP::FLOAT, {1, 3, 4, 4});
  const Affine f = expected_affine(g.proto(), "bn");
  model::OnnxModel m = g.model();
  const auto report = model::fold_batch_norms(m, {true});
  ASSERT_EQ(report.outcomes[0].action, FoldOutcome::Action::scale_shift) << report.outcomes[0].reason;
  const auto* add = producer_of(m, "y");
  ASSERT_EQ(add->op_type(), "Add");
  const auto* mul = producer_of(m, add->input(0));
  ASSERT_EQ(mul->op_type(), "Mul");
  EXPECT_EQ(mul->input(0), "r");
  const auto* a = m.constant(mul->input(1));
  ASSERT_EQ(a->dims_size(), 3);  // (C, 1, 1): broadcasts over dim 1 of NCHW
  EXPECT_EQ(a->dims(0), 3);
  expect_near_all(tensor(m, mul->input(1)), f.a, 1e-6, "a");
  expect_near_all(tensor(m, add->input(1)), f.b, 1e-6, "b");
  EXPECT_EQ(m.constant("bn_mean"), nullptr);
}

}  // namespace
}  // namespace bnorm::test

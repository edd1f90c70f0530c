// The executor on hand-built graphs: what the ONNX node cases do not reach
// (scalar broadcasting, input checks, errors before computing, values
// shared between nodes, Constant nodes, batch-statistics mode).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <tuple>

#include "bnorm/error.hpp"
#include "common/test_util.hpp"
#include "exec/compare.hpp"
#include "exec/dispatch.hpp"
#include "exec/executor.hpp"
#include "exec/input_data.hpp"
#include "model/graph_builder.hpp"

namespace bnorm::test {
namespace {

using TP = onnx::TensorProto;
using exec::ElementType;
using exec::Tensor;

Tensor filled(ElementType type, exec::Shape shape, std::vector<float> values) {
  Tensor t(ElementType::f32, std::move(shape));
  for (std::int64_t i = 0; i < t.elements(); ++i) t.data<float>()[i] = values[static_cast<std::size_t>(i) % values.size()];
  return type == ElementType::f32 ? t : exec::cast(t, type);
}

// verify's rule (numpy.allclose's): equal infinities agree; a NaN on either
// side or both, or an infinity against a finite value, is a difference, and
// the worst element is the one furthest beyond the tolerance (a NaN or
// infinity before any finite excess).
TEST(OutputComparison, NonFiniteValues) {
  const float nan = std::nanf("");
  {
    exec::OutputComparison same("y", {});
    same.add(filled(ElementType::f32, {2}, {1.0f, INFINITY}), filled(ElementType::f32, {2}, {1.0f, INFINITY}),
             0);
    EXPECT_TRUE(same.passed());
    EXPECT_EQ(same.max_abs(), 0.0);
  }
  {
    // Two models that both give NaN have not been shown to agree (an audit
    // had verify and prepare's parity check pass on all-NaN outputs).
    exec::OutputComparison both("y", {.atol = 100.0, .rtol = 0.0});
    both.add(filled(ElementType::f32, {3}, {1.0f, nan, 2.0f}),
             filled(ElementType::f32, {3}, {1.0f, nan, 2.0f}), 0);
    EXPECT_FALSE(both.passed());
    EXPECT_EQ(both.violations(), 1);
    EXPECT_EQ(both.worst_index(), 1);
  }
  exec::OutputComparison c("y", {.atol = 100.0, .rtol = 0.0});
  // Within tolerance, NaN on one side, both NaN, infinity vs finite.
  c.add(filled(ElementType::f32, {4}, {0.5f, nan, nan, INFINITY}),
        filled(ElementType::f32, {4}, {1.5f, 2.0f, nan, 3.0f}), 10);
  EXPECT_EQ(c.violations(), 3);
  EXPECT_EQ(c.worst_index(), 11) << "the first element beyond the tolerance, not the one within it";
  EXPECT_TRUE(std::isnan(c.worst_a()));
  EXPECT_EQ(c.worst_b(), 2.0);
}

// Float outputs of different types are compared as values; other types
// must match.
TEST(OutputComparison, FloatTypesCompareAsValues) {
  exec::OutputComparison c("y", {.atol = 0.0, .rtol = 1e-3});
  c.add(filled(ElementType::f32, {2}, {1.0f, 0.1f}), filled(ElementType::f16, {2}, {1.0f, 0.1f}), 0);
  EXPECT_TRUE(c.passed());
  EXPECT_GT(c.max_abs(), 0.0) << "0.1 rounds in float16";
  EXPECT_THROW(c.add(filled(ElementType::f32, {2}, {1.0f}), filled(ElementType::i64, {2}, {1.0f}), 2), Error);
  EXPECT_THROW(c.add(filled(ElementType::f32, {2}, {1.0f}), filled(ElementType::f16, {1, 2}, {1.0f}), 2),
               Error);
}

TEST(Executor, ScalarOperandsBroadcast) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {});
  g.input("y", TP::FLOAT, {2, 3});
  g.node("Mul", {"x", "y"}, {"a"});
  g.node("Add", {"a", "x"}, {"b"});
  g.output("b", TP::FLOAT, {2, 3});
  exec::Executor ex(g.model());
  const auto out = ex.run({filled(ElementType::f32, {}, {2.0f}), filled(ElementType::f32, {2, 3}, {1, 2, 3, 4, 5, 6})});
  ASSERT_EQ(out[0].shape(), (exec::Shape{2, 3}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(out[0].data<float>()[i], 2.0f * static_cast<float>(i + 1) + 2.0f);
}

// NaN goes through a Conv's fused activation and through MaxPool as it goes
// through the ops alone and through PyTorch (oneDNN's post-ops turned it
// into 0 or a bound, and its max pooling skipped it: an all-NaN window gave
// -FLT_MAX). Found by an audit of calibrate, which a NaN then fed finite
// garbage.
TEST(Executor, NaNThroughFusedActivationsAndMaxPool) {
  const float nan = std::nanf("");
  GraphBuilder g;
  g.input("x", TP::FLOAT, {1, 1, 2, 2});
  g.initializer("w", {1, 1, 1, 1}, {1.0});
  g.initializer("lo", {}, {0.0});
  g.initializer("hi", {}, {6.0});
  for (const char* act : {"Relu", "LeakyRelu", "Clip"}) {
    const std::string c = std::string("c_") + act, y = std::string("y_") + act;
    g.node("Conv", {"x", "w"}, {c});
    if (std::string(act) == "Clip") {
      g.node("Clip", {c, "lo", "hi"}, {y});
    } else {
      g.node(act, {c}, {y});
    }
    g.output(y, TP::FLOAT, {1, 1, 2, 2});
  }
  auto& pool = g.node("MaxPool", {"x"}, {"p"});
  GraphBuilder::attr(pool, "kernel_shape", std::vector<std::int64_t>{1, 2});
  g.output("p", TP::FLOAT, {1, 1, 2, 1});
  exec::Executor ex(g.model());
  ex.set_profiling(true);
  // Row 0 holds a NaN, row 1 only NaN; then finite values, fused as before.
  auto out = ex.run({filled(ElementType::f32, {1, 1, 2, 2}, {nan, -2.0f, nan, nan})});
  for (const char* fused : {"Conv+Relu", "Conv+LeakyRelu", "Conv+Clip"})
    EXPECT_EQ(ex.profile().calls.count(fused), 1u) << fused;
  for (int o = 0; o < 3; ++o) {
    const float* y = out[static_cast<std::size_t>(o)].data<float>();
    EXPECT_TRUE(std::isnan(y[0]) && std::isnan(y[2]) && std::isnan(y[3])) << "output " << o;
    EXPECT_EQ(y[1], o == 1 ? -0.02f : 0.0f) << "output " << o;
  }
  EXPECT_TRUE(std::isnan(out[3].data<float>()[0])) << "a window with a NaN";
  EXPECT_TRUE(std::isnan(out[3].data<float>()[1])) << "a window of NaN only";
  out = ex.run({filled(ElementType::f32, {1, 1, 2, 2}, {-1.0f, 7.0f, INFINITY, 2.0f})});
  EXPECT_EQ(out[0].data<float>()[0], 0.0f);
  EXPECT_EQ(out[2].data<float>()[1], 6.0f);
  EXPECT_EQ(out[2].data<float>()[2], 6.0f) << "Clip(inf)";
  EXPECT_EQ(out[3].data<float>()[0], 7.0f);
  EXPECT_EQ(out[3].data<float>()[1], INFINITY);
  out = ex.run({filled(ElementType::f32, {1, 1, 2, 2}, {-1.0f, 7.0f, 0.5f, 2.0f})});
  EXPECT_EQ(out[2].data<float>()[1], 6.0f);
  EXPECT_EQ(out[1].data<float>()[0], -0.01f);
}

// A non-finite Conv weight on zero padding gives NaN (0 times NaN or
// infinity), as the ONNX definition has it (PyTorch too when it does not
// go through mkldnn); oneDNN skips the padding, so those outputs were finite. Checked against a direct loop that
// multiplies the padding, with the weight constant and as an input, grouped,
// strided, dilated, with asymmetric pads, and through a fused Relu.
TEST(Executor, NonFiniteConvWeightOnPadding) {
  const float nan = std::nanf("");
  constexpr std::int64_t N = 2, C = 16, M = 16, G = 2, H = 6, W = 7, Cg = C / G;
  const exec::Shape xs = {N, C, H, W}, ws = {M, Cg, 3, 3};
  std::vector<float> w(static_cast<std::size_t>(M * Cg * 9));
  for (std::size_t j = 0; j < w.size(); ++j)
    w[j] = static_cast<float>(static_cast<int>(j * 5 % 9) - 4) * 0.0625f;
  auto tap = [&](std::int64_t m, std::int64_t i, std::int64_t kh, std::int64_t kw) -> float& {
    return w[static_cast<std::size_t>(((m * Cg + i) * 3 + kh) * 3 + kw)];
  };
  tap(0, 3, 0, 0) = nan;
  tap(5, 0, 1, 1) = -INFINITY;  // the centre tap
  tap(9, 7, 2, 1) = INFINITY;   // in the second group; the other channels are finite
  const Tensor x = [&] {
    Tensor t(ElementType::f32, xs);
    for (std::int64_t i = 0; i < t.elements(); ++i)
      t.data<float>()[i] = 0.5f + 0.1f * static_cast<float>(i * 7 % 11);
    return t;
  }();
  struct Window {
    std::vector<std::int64_t> pads, strides, dilations;
  };
  for (const Window& win : {Window{{1, 1, 1, 1}, {1, 1}, {1, 1}}, Window{{2, 0, 1, 2}, {2, 1}, {1, 2}}})
    for (bool constant : {true, false})
      for (bool relu : {false, true}) {
        const std::string what = "pads " + exec::to_string(win.pads) + (constant ? " constant" : " input") +
                                 (relu ? " + Relu" : "");
        std::vector<std::int64_t> out(2);
        for (int d = 0; d < 2; ++d)
          out[d] =
              (xs[d + 2] + win.pads[d] + win.pads[d + 2] - win.dilations[d] * 2 - 1) / win.strides[d] + 1;
        GraphBuilder g;
        g.input("x", TP::FLOAT, xs);
        if (constant) {
          g.initializer("w", ws, std::vector<double>(w.begin(), w.end()));
        } else {
          g.input("w", TP::FLOAT, ws);
        }
        auto& conv = g.node("Conv", {"x", "w"}, {relu ? "c" : "y"});
        GraphBuilder::attr(conv, "group", G);
        GraphBuilder::attr(conv, "pads", win.pads);
        GraphBuilder::attr(conv, "strides", win.strides);
        GraphBuilder::attr(conv, "dilations", win.dilations);
        if (relu) g.node("Relu", {"c"}, {"y"});
        g.output("y", TP::FLOAT, {N, M, out[0], out[1]});
        exec::Executor ex(g.model());
        std::vector<Tensor> in = {x};
        if (!constant) in.push_back(filled(ElementType::f32, ws, w));
        const auto y = ex.run(in);
        ASSERT_EQ(y[0].shape(), (exec::Shape{N, M, out[0], out[1]})) << what;
        int nans = 0;
        for (std::int64_t n = 0; n < N; ++n)
          for (std::int64_t m = 0; m < M; ++m)
            for (std::int64_t oh = 0; oh < out[0]; ++oh)
              for (std::int64_t ow = 0; ow < out[1]; ++ow) {
                float ref = 0.0f;
                for (std::int64_t i = 0; i < Cg; ++i)
                  for (std::int64_t kh = 0; kh < 3; ++kh)
                    for (std::int64_t kw = 0; kw < 3; ++kw) {
                      const std::int64_t ih = oh * win.strides[0] - win.pads[0] + kh * win.dilations[0];
                      const std::int64_t iw = ow * win.strides[1] - win.pads[1] + kw * win.dilations[1];
                      const bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
                      const std::int64_t c = m / (M / G) * Cg + i;
                      ref += tap(m, i, kh, kw) *
                             (inside ? x.data<float>()[((n * C + c) * H + ih) * W + iw] : 0.0f);
                    }
                if (relu && ref < 0.0f) ref = 0.0f;
                const float got = y[0].data<float>()[((n * M + m) * out[0] + oh) * out[1] + ow];
                const std::string at = what + " at " + std::to_string(n) + "," + std::to_string(m) + "," +
                                       std::to_string(oh) + "," + std::to_string(ow);
                nans += std::isnan(ref);
                if (std::isnan(ref) || std::isinf(ref)) {
                  EXPECT_TRUE(std::isnan(ref) ? std::isnan(got) : got == ref)
                      << at << ": " << got << " vs " << ref;
                } else {
                  EXPECT_NEAR(got, ref, 1e-4f) << at;
                }
              }
        EXPECT_GT(nans, N * out[0] * out[1]) << what << ": padding NaN beyond channel 0";
      }
}
// ONNX semantics at the edges (found by an audit against numpy / the spec).
TEST(Executor, SpecEdgeCases) {
  const float nan = std::nanf("");
  auto run1 = [](GraphBuilder& g, const Tensor& x) { return exec::Executor(g.model()).run({x}); };
  {
    // Clip with min > max gives max everywhere (Min(max, Max(x, min))),
    // also after a Conv (not fused: oneDNN's clip refuses such bounds); a
    // NaN stays NaN, and Relu keeps NaN too.
    GraphBuilder g;
    g.input("x", TP::FLOAT, {1, 1, 1, 3});
    g.initializer("w", {1, 1, 1, 1}, {1.0});
    g.initializer("lo", {}, {1.0});
    g.initializer("hi", {}, {-1.0});
    g.node("Clip", {"x", "lo", "hi"}, {"a"});
    g.node("Conv", {"x", "w"}, {"c"});
    g.node("Clip", {"c", "lo", "hi"}, {"b"});
    g.node("Relu", {"x"}, {"r"});
    for (const char* o : {"a", "b", "r"}) g.output(o, TP::FLOAT, {1, 1, 1, 3});
    const auto out = run1(g, filled(ElementType::f32, {1, 1, 1, 3}, {-5.0f, 0.5f, 7.0f}));
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(out[0].data<float>()[i], -1.0f) << i;
      EXPECT_EQ(out[1].data<float>()[i], -1.0f) << "fused " << i;
    }
    const auto nan_out = run1(g, filled(ElementType::f32, {1, 1, 1, 3}, {nan, 0.5f, -2.0f}));
    EXPECT_TRUE(std::isnan(nan_out[0].data<float>()[0]));
    EXPECT_TRUE(std::isnan(nan_out[2].data<float>()[0])) << "Relu(NaN)";
    EXPECT_EQ(nan_out[2].data<float>()[2], 0.0f);
  }
  {
    // Clip (opset 6) without max keeps a double beyond float's range.
    GraphBuilder g(6);
    g.input("x", TP::DOUBLE, {2});
    GraphBuilder::attr(g.node("Clip", {"x"}, {"y"}), "min", 0.0f);
    g.output("y", TP::DOUBLE, {2});
    const auto out = run1(g, exec::cast(filled(ElementType::f32, {2}, {1.0f, -1.0f}), ElementType::f64));
    EXPECT_EQ(out[0].data<double>()[1], 0.0);
    Tensor big(ElementType::f64, {2});
    big.data<double>()[0] = 1e300;
    big.data<double>()[1] = -3.0;
    EXPECT_EQ(run1(g, big)[0].data<double>()[0], 1e300);
  }
  {
    // float64 -> float16 / bfloat16 rounds once: 1 + 2^-11 + 2^-40 is just
    // above the float16 midpoint between 1 and 1 + 2^-10.
    GraphBuilder g;
    g.input("x", TP::DOUBLE, {1});
    GraphBuilder::attr(g.node("Cast", {"x"}, {"h"}), "to", std::int64_t{TP::FLOAT16});
    GraphBuilder::attr(g.node("Cast", {"x"}, {"b"}), "to", std::int64_t{TP::BFLOAT16});
    g.output("h", TP::FLOAT16, {1});
    g.output("b", TP::BFLOAT16, {1});
    Tensor x(ElementType::f64, {1});
    x.data<double>()[0] = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
    const auto out = run1(g, x);
    EXPECT_EQ(exec::widen(out[0].data<exec::Half>()[0]), 1.0f + std::ldexp(1.0f, -10));
    x.data<double>()[0] = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40);
    EXPECT_EQ(exec::widen(run1(g, x)[1].data<exec::BFloat>()[0]), 1.0f + std::ldexp(1.0f, -7));
  }
  {
    // Dropout: before opset 7 is_test defaults to 0 (training): refused;
    // in opsets 7 to 9 the mask has the input's type.
    GraphBuilder g6(6);
    g6.input("x", TP::FLOAT, {2});
    g6.node("Dropout", {"x"}, {"y"});
    g6.output("y", TP::FLOAT, {2});
    EXPECT_THROW(exec::Executor ex(g6.model()), Error);
    GraphBuilder g9(9);
    g9.input("x", TP::FLOAT, {2});
    g9.node("Dropout", {"x"}, {"y", "mask"});
    g9.node("Mul", {"y", "mask"}, {"z"});
    g9.output("z", TP::FLOAT, {2});
    const auto out = run1(g9, filled(ElementType::f32, {2}, {3.0f, -4.0f}));
    EXPECT_EQ(out[0].data<float>()[1], -4.0f);
  }
  // Invalid models are refused, not run: Concat of rank-0 inputs (wrote out
  // of bounds), a Pad value of another type (read past it).
  {
    GraphBuilder g;
    g.input("x", TP::FLOAT, {});
    GraphBuilder::attr(g.node("Concat", {"x", "x"}, {"y"}), "axis", std::int64_t{0});
    g.output("y", TP::FLOAT, {});
    EXPECT_THROW(run1(g, filled(ElementType::f32, {}, {1.0f})), Error);
  }
  {
    GraphBuilder g;
    g.input("x", TP::DOUBLE, {2});
    g.int64_initializer("pads", {1, 1});
    g.initializer("v", {}, {2.0}, TP::FLOAT16);
    g.node("Pad", {"x", "pads", "v"}, {"y"});
    g.output("y", TP::DOUBLE, {4});
    EXPECT_THROW(run1(g, exec::cast(filled(ElementType::f32, {2}, {1.0f}), ElementType::f64)), Error);
  }
  {
    // Slice with steps of magnitude near 2^63 takes one element, as numpy's
    // x[0::big] (the count's e - b + step - 1 overflowed to 0 elements).
    constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
    for (const auto& [start, step, want] :
         {std::tuple{std::int64_t{0}, kMax, 5.0f}, std::tuple{std::int64_t{-1}, -kMax, 8.0f},
          std::tuple{std::int64_t{-1}, std::numeric_limits<std::int64_t>::min(), 8.0f}}) {
      GraphBuilder g;
      g.input("x", TP::FLOAT, {4});
      g.int64_initializer("starts", {start});
      g.int64_initializer("ends", {step > 0 ? kMax : -kMax});
      g.int64_initializer("axes", {0});
      g.int64_initializer("steps", {step});
      g.node("Slice", {"x", "starts", "ends", "axes", "steps"}, {"y"});
      g.output("y", TP::FLOAT, {-1});
      const auto out = run1(g, filled(ElementType::f32, {4}, {5.0f, 6.0f, 7.0f, 8.0f}));
      ASSERT_EQ(out[0].shape(), exec::Shape{1}) << "step " << step;
      EXPECT_EQ(out[0].data<float>()[0], want) << "step " << step;
    }
  }
}

// Found by a helper's differential audit against the spec.
TEST(Executor, EmptyDimsAndSliceClamps) {
  auto run1 = [](GraphBuilder& g, const Tensor& x) { return exec::Executor(g.model()).run({x}); };
  {
    // A product with a 0 dim: zeros, or empty, plus C (oneDNN divided by
    // the dims: SIGFPE).
    for (const auto& [k, n] : {std::pair<std::int64_t, std::int64_t>{0, 5}, {4, 0}}) {
      GraphBuilder g;
      g.input("a", TP::FLOAT, {3, k});
      g.initializer("b", {k, n}, std::vector<double>(static_cast<std::size_t>(k * n), 1.0));
      g.initializer("c", {n}, std::vector<double>(static_cast<std::size_t>(n), 2.5));
      g.node("MatMul", {"a", "b"}, {"m"});
      g.node("Gemm", {"a", "b", "c"}, {"y"});
      g.output("m", TP::FLOAT, {3, n});
      g.output("y", TP::FLOAT, {3, n});
      const auto out = run1(g, filled(ElementType::f32, {3, k}, {1.0f}));
      ASSERT_EQ(out[0].shape(), (exec::Shape{3, n}));
      ASSERT_EQ(out[1].shape(), (exec::Shape{3, n}));
      for (std::int64_t i = 0; i < 3 * n; ++i) {
        EXPECT_EQ(out[0].data<float>()[i], 0.0f) << i;
        EXPECT_EQ(out[1].data<float>()[i], 2.5f) << i;
      }
    }
  }
  {
    // A Conv with 0 channels is refused naming them (oneDNN's message spoke
    // of dilation).
    GraphBuilder g;
    g.input("x", TP::FLOAT, {2, 0, 5, 5});
    g.initializer("w", {3, 0, 3, 3}, {});
    g.node("Conv", {"x", "w"}, {"y"}, "conv");
    g.output("y", TP::FLOAT, {2, 3, 3, 3});
    exec::Executor ex(g.model());
    expect_error(
        [&] {
          ex.run({filled(ElementType::f32, {2, 0, 5, 5}, {1.0f})});
        },
        ErrorKind::unsupported, {"Conv 'conv'", "0 input and 3 output channels"});
  }
  {
    // Flatten with a 0 dim before the axis keeps the inner product.
    GraphBuilder g;
    g.input("x", TP::FLOAT, {1, 0, 3});
    GraphBuilder::attr(g.node("Flatten", {"x"}, {"y"}), "axis", std::int64_t{2});
    g.output("y", TP::FLOAT, {0, 3});
    EXPECT_EQ(run1(g, filled(ElementType::f32, {1, 0, 3}, {1.0f}))[0].shape(), (exec::Shape{0, 3}));
  }
  {
    // Slice-13: with a negative step, starts clamp to [0, n - 1]: -10 on 4
    // elements is element 0 (numpy's rule gave nothing).
    GraphBuilder g;
    g.input("x", TP::FLOAT, {4});
    g.int64_initializer("starts", {-10});
    g.int64_initializer("ends", {-100});
    g.int64_initializer("axes", {0});
    g.int64_initializer("steps", {-1});
    g.node("Slice", {"x", "starts", "ends", "axes", "steps"}, {"y"});
    g.output("y", TP::FLOAT, {-1});
    const auto out = run1(g, filled(ElementType::f32, {4}, {5.0f, 6.0f, 7.0f, 8.0f}));
    ASSERT_EQ(out[0].shape(), exec::Shape{1});
    EXPECT_EQ(out[0].data<float>()[0], 5.0f);
  }
}

TEST(Executor, UnsupportedOpIsNamedBeforeAnythingRuns) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {1, 2});
  g.node("Relu", {"x"}, {"r"}, "first");
  g.node("Erf", {"r"}, {"y"}, "the_erf");
  g.output("y", TP::FLOAT, {1, 2});
  try {
    exec::Executor ex(g.model());
    FAIL() << "compiled an unsupported op";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::unsupported);
    EXPECT_NE(std::string(e.what()).find("Erf 'the_erf'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Conv"), std::string::npos) << "lists what it runs: " << e.what();
  }
}

TEST(Executor, UnknownAttributeIsRefused) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {1, 2});
  auto& n = g.node("LeakyRelu", {"x"}, {"y"}, "lr");
  GraphBuilder::attr(n, "alpha", 0.1f);
  GraphBuilder::attr(n, "gamma", 2.0f);
  g.output("y", TP::FLOAT, {1, 2});
  try {
    exec::Executor ex(g.model());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::unsupported);
    EXPECT_NE(std::string(e.what()).find("'gamma'"), std::string::npos) << e.what();
  }
}

TEST(Executor, InputsAreChecked) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {-1, 3, 4});
  g.node("Relu", {"x"}, {"y"});
  g.output("y", TP::FLOAT, {-1, 3, 4});
  exec::Executor ex(g.model());
  EXPECT_NO_THROW(ex.run({filled(ElementType::f32, {5, 3, 4}, {1})}));  // any batch
  auto expect = [&](const Tensor& t, const char* word) {
    try {
      ex.run({t});
      FAIL() << word;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::shape_mismatch);
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("'x'"), std::string::npos) << e.what();
    }
  };
  expect(filled(ElementType::f32, {5, 3, 5}, {1}), "dim 2");
  expect(filled(ElementType::f32, {5, 3}, {1}), "rank");
  expect(filled(ElementType::f64, {5, 3, 4}, {1}), "float64");
  EXPECT_THROW(ex.run({}), Error);
}

// A model exported with a fixed batch dim runs in batches of exactly that
// size: it is the default, and another size, or rows that do not fill whole
// batches, are refused before anything runs.
TEST(Executor, FixedBatchDim) {
  GraphBuilder g;
  g.input("w", TP::FLOAT, {3});  // an initializer listed as an input is not an input
  g.initializer("w", {3}, {1, 2, 3});
  g.input("x", TP::FLOAT, {2, 3});
  g.node("Mul", {"x", "w"}, {"y"});
  g.output("y", TP::FLOAT, {2, 3});
  const auto inputs = exec::graph_inputs(g.model());
  ASSERT_EQ(inputs.size(), 1u);
  EXPECT_EQ(inputs[0].name, "x");
  EXPECT_EQ(exec::default_batch_size(inputs), 2);
  EXPECT_EQ(exec::default_batch_size(inputs, 3), 6);  // 2 rows for each of 3 processes
  const exec::ValueInfo any{"x", ElementType::f32, {-1, 3}, true}, unknown{"x", ElementType::f32, {}, false};
  EXPECT_EQ(exec::default_batch_size({any}), 64);
  EXPECT_EQ(exec::default_batch_size({unknown}), 64);
  EXPECT_NO_THROW(exec::check_batch_size(inputs, 2, 6));
  EXPECT_NO_THROW(exec::check_batch_size(inputs, 4, 8, 2));
  EXPECT_NO_THROW(exec::check_batch_size({any}, 5, 7));
  expect_error([&] { exec::check_batch_size(inputs, 4, 8); }, ErrorKind::invalid_argument,
               {"'x'", "fixed batch of 2", "--batch-size 4", "use --batch-size 2"});
  expect_error([&] { exec::check_batch_size(inputs, 2, 5); }, ErrorKind::invalid_argument,
               {"'x'", "5 rows", "batches of 2"});
  expect_error([&] { exec::check_batch_size(inputs, 2, 6, 2); }, ErrorKind::invalid_argument,
               {"use --batch-size 4", "over 2 processes"});
  expect_error([&] { exec::check_batch_size({any}, 0, 5); }, ErrorKind::invalid_argument,
               {"--batch-size 0", "at least 1"});
}

TEST(Executor, SharedValuesAndConstantsSurviveTheirFirstReader) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {4});
  auto& c = g.node("Constant", {}, {"k"}, "const");
  auto* a = c.add_attribute();
  a->set_name("value_floats");
  a->set_type(onnx::AttributeProto::FLOATS);
  for (float v : {1.0f, 2.0f, 3.0f, 4.0f}) a->add_floats(v);
  g.node("Relu", {"x"}, {"r"});
  g.node("Add", {"r", "k"}, {"s"});
  g.node("Mul", {"r", "s"}, {"y"});  // r read again after Add
  g.output("y", TP::FLOAT, {4});
  g.output("r", TP::FLOAT, {4});
  exec::Executor ex(g.model());
  for (int run = 0; run < 2; ++run) {
    const auto out = ex.run({filled(ElementType::f32, {4}, {-1, 1, 2, -3})});
    const float r[4] = {0, 1, 2, 0}, k[4] = {1, 2, 3, 4};
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(out[0].data<float>()[i], r[i] * (r[i] + k[i]));
      EXPECT_EQ(out[1].data<float>()[i], r[i]);
    }
  }
}

TEST(Executor, BatchStatisticsModeNormalizesWithTheBatch) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {-1, 2, 3});
  g.batch_norm("bn", "x", "y", 2, 7);
  g.output("y", TP::FLOAT, {-1, 2, 3});
  exec::Executor ex(g.model());
  ex.context().batch_norm_statistics = exec::BatchNormStatistics::batch;
  const Tensor x = filled(ElementType::f32, {4, 2, 3}, {1, 5, -2, 7, 3, 3.5f, 0, 9});
  const auto y = ex.run({x})[0];
  // Each channel of y is scale * xhat + B: its mean is B, its biased
  // variance scale^2 * var / (var + eps).
  auto param = [&](const std::string& name) { return model::to_doubles(*g.model().constant(name), name); };
  const auto scale = param("bn_scale"), bias = param("bn_bias");
  for (int c = 0; c < 2; ++c) {
    double sum = 0, sq = 0, xs = 0, xq = 0;
    for (int n = 0; n < 4; ++n)
      for (int s = 0; s < 3; ++s) {
        const double v = y.data<float>()[(n * 2 + c) * 3 + s], u = x.data<float>()[(n * 2 + c) * 3 + s];
        sum += v;
        sq += v * v;
        xs += u;
        xq += u * u;
      }
    const double mean = sum / 12, var = sq / 12 - mean * mean;
    const double xvar = xq / 12 - (xs / 12) * (xs / 12);
    EXPECT_NEAR(mean, bias[static_cast<std::size_t>(c)], 1e-5);
    EXPECT_NEAR(var, scale[static_cast<std::size_t>(c)] * scale[static_cast<std::size_t>(c)] * xvar / (xvar + 1e-3),
                1e-4);
  }
}

// Opsets 9 to 13: extra outputs make training mode; saved_mean / saved_var
// listed with empty names are absent, so the model runs (it was refused
// for them, which no valid model could avoid: the checker wants 1 or 5
// outputs). Named, they are refused as not computed.
TEST(Executor, Opset12TrainingWithEmptySavedOutputsRuns) {
  for (const bool named : {false, true}) {
    GraphBuilder g(12);
    g.input("x", TP::FLOAT, {4, 2, 3});
    const auto params = g.batch_norm_params("bn", 2, 5);
    std::vector<std::string> inputs = {"x"};
    inputs.insert(inputs.end(), params.begin(), params.end());
    g.node("BatchNormalization", inputs, {"y", "rm", "rv", named ? "sm" : "", named ? "sv" : ""}, "bn");
    g.output("y", TP::FLOAT, {4, 2, 3});
    if (named) {
      expect_error([&] { exec::Executor ex(g.model()); }, ErrorKind::unsupported, {"saved_mean / saved_var"});
      continue;
    }
    exec::Executor ex(g.model());
    const auto y = ex.run({filled(ElementType::f32, {4, 2, 3}, {1, 5, -2, 7, 3, 3.5f, 0, 9})})[0];
    const auto bias = model::to_doubles(*g.model().constant("bn_bias"), "bn_bias");
    for (int c = 0; c < 2; ++c) {  // training: each channel's mean is B
      double sum = 0;
      for (int n = 0; n < 4; ++n)
        for (int k = 0; k < 3; ++k) sum += y.data<float>()[(n * 2 + c) * 3 + k];
      EXPECT_NEAR(sum / 12, bias[static_cast<std::size_t>(c)], 1e-5) << c;
    }
  }
}

// Opset 14 on, running_mean and running_var are outputs of training_mode = 1
// only: a model listing them in inference is refused when compiled, not run
// with outputs no one fills. Omitted ones (empty names) are fine.
TEST(Executor, InferenceBatchNormWithStatisticsOutputsIsRefused) {
  for (bool named : {true, false}) {
    GraphBuilder g(15);
    g.input("x", TP::FLOAT, {-1, 2, 3});
    auto& n = g.batch_norm("bn", "x", "y", 2, 7);
    n.add_output(named ? "running_mean" : "");
    n.add_output(named ? "running_var" : "");
    g.output("y", TP::FLOAT, {-1, 2, 3});
    if (named) g.output("running_mean", TP::FLOAT, {2});
    if (!named) {
      exec::Executor ex(g.model());
      EXPECT_EQ(ex.run({filled(ElementType::f32, {4, 2, 3}, {1, 5, -2})}).size(), 1u);
      continue;
    }
    try {
      exec::Executor ex(g.model());
      FAIL() << "compiled an inference BatchNormalization with statistics outputs";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::invalid_model);
      EXPECT_NE(std::string(e.what()).find("'running_mean'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("training_mode = 1"), std::string::npos) << e.what();
    }
  }
}

// Conv followed by its only reader, an activation: one fused step that
// computes what the two nodes do.
TEST(Executor, ConvActivationFusion) {
  struct Case {
    const char* op;
    std::function<float(float)> f;
  };
  for (const Case& c : {Case{"Relu", [](float v) { return std::max(v, 0.0f); }},
                        Case{"LeakyRelu", [](float v) { return v >= 0 ? v : 0.25f * v; }},
                        Case{"Clip", [](float v) { return std::clamp(v, -0.5f, 0.75f); }}}) {
    SCOPED_TRACE(c.op);
    GraphBuilder g;
    g.input("x", TP::FLOAT, {1, 2, 4, 4});
    g.initializer("w", {3, 2, 3, 3}, GraphBuilder::random(54, 3));
    g.initializer("lo", {}, {-0.5});
    g.initializer("hi", {}, {0.75});
    auto& conv = g.node("Conv", {"x", "w"}, {"c"}, "conv");
    GraphBuilder::attr(conv, "pads", std::vector<std::int64_t>{1, 1, 1, 1});
    std::vector<std::string> in = {"c"};
    if (std::string(c.op) == "Clip") in = {"c", "lo", "hi"};
    auto& act = g.node(c.op, in, {"y"}, "act");
    if (std::string(c.op) == "LeakyRelu") GraphBuilder::attr(act, "alpha", 0.25f);
    g.output("y", TP::FLOAT, {1, 3, 4, 4});
    // The same Conv alone, as the reference.
    GraphBuilder plain;
    plain.input("x", TP::FLOAT, {1, 2, 4, 4});
    plain.initializer("w", {3, 2, 3, 3}, GraphBuilder::random(54, 3));
    auto& conv2 = plain.node("Conv", {"x", "w"}, {"c"}, "conv");
    GraphBuilder::attr(conv2, "pads", std::vector<std::int64_t>{1, 1, 1, 1});
    plain.output("c", TP::FLOAT, {1, 3, 4, 4});
    exec::Executor fused(g.model()), alone(plain.model());
    fused.set_profiling(true);
    std::vector<float> values(32);
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(GraphBuilder::random(32, 9)[i]);
    const Tensor x = filled(ElementType::f32, {1, 2, 4, 4}, values);
    const auto y = fused.run({x})[0];
    const auto ref = alone.run({x})[0];
    EXPECT_EQ(fused.profile().calls.count(std::string("Conv+") + c.op), 1u) << "not fused";
    EXPECT_EQ(fused.profile().calls.count(c.op), 0u);
    for (std::int64_t i = 0; i < ref.elements(); ++i)
      ASSERT_NEAR(y.data<float>()[i], c.f(ref.data<float>()[i]), 1e-6f) << i;
  }
}

TEST(Executor, RunTimeErrorsNameTheNode) {
  GraphBuilder g;
  g.input("a", TP::FLOAT, {-1, 3});
  g.input("b", TP::FLOAT, {-1, 3});
  g.node("Add", {"a", "b"}, {"y"}, "adder");
  g.output("y", TP::FLOAT, {-1, 3});
  exec::Executor ex(g.model());
  try {
    ex.run({filled(ElementType::f32, {2, 3}, {1}), filled(ElementType::f32, {4, 3}, {1})});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::shape_mismatch);
    EXPECT_NE(std::string(e.what()).find("Add 'adder'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("2x3"), std::string::npos) << e.what();
  }
}

// Sizes from a small model: 2^62 floats made a byte count that wrapped to 0
// (a 1-byte block, then a segfault); 2^40 floats, std::bad_alloc without a
// node; an initializer whose dims overflow with no data was allocated
// before its data was checked.
TEST(Executor, HugeTensorsAreRefusedNamingTheNode) {
  for (const auto& [dim, kind, word] :
       {std::tuple{std::int64_t{1} << 62, ErrorKind::invalid_argument, "too many bytes to address"},
        std::tuple{std::int64_t{1} << 40, ErrorKind::runtime, "out of memory"}}) {
    GraphBuilder g;
    g.input("x", TP::FLOAT, {2});
    g.int64_initializer("shape", {dim});
    g.node("ConstantOfShape", {"shape"}, {"c"}, "cos");
    g.node("Add", {"x", "c"}, {"y"});
    g.output("y", TP::FLOAT, {-1});
    exec::Executor ex(g.model());
    expect_error(
        [&] {
          ex.run({filled(ElementType::f32, {2}, {1.0f, 2.0f})});
        },
        kind, {"ConstantOfShape 'cos'", word});
  }
  GraphBuilder g;
  g.input("x", TP::DOUBLE, {1});
  g.initializer("w", {std::int64_t{1} << 61}, {}, TP::DOUBLE);
  g.node("Add", {"x", "w"}, {"y"});
  g.output("y", TP::DOUBLE, {-1});
  expect_error([&] { exec::Executor ex(g.model()); }, ErrorKind::invalid_model,
               {"initializer 'w'", "too many bytes"});
}

}  // namespace
}  // namespace bnorm::test

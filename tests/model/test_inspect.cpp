// Each inspect finding triggered by a crafted model, and the row it reports.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "model/graph_builder.hpp"
#include "model/inspect.hpp"

namespace bnorm::test {
namespace {

using model::Severity;
using TP = onnx::TensorProto;

// A Conv-BN model whose BN parameters the test sets (C = 16).
struct Crafted {
  GraphBuilder g;
  std::vector<double> scale = std::vector<double>(16, 1.0), bias = std::vector<double>(16, 0.0);
  std::vector<double> mean, var;
  std::int32_t type = TP::FLOAT;
  float epsilon = 1e-5f;
  std::int64_t training_mode = 0;
  Crafted() {
    for (int c = 0; c < 16; ++c) {
      mean.push_back(0.1 * c - 0.7);
      var.push_back(1.0 + 0.05 * c);
    }
  }
  model::InspectReport run() {
    g.input("x", type, {1, 2, 4, 4});
    g.initializer("w", {16, 2, 1, 1}, GraphBuilder::random(32, 1), type);
    g.node("Conv", {"x", "w"}, {"c"}, "conv");
    g.initializer("s", {16}, scale, type);
    g.initializer("b", {16}, bias, type);
    g.initializer("m", {16}, mean, type);
    g.initializer("v", {16}, var, type);
    auto& bn = g.node("BatchNormalization", {"c", "s", "b", "m", "v"}, {"y"}, "bn");
    GraphBuilder::attr(bn, "epsilon", epsilon);
    if (training_mode) GraphBuilder::attr(bn, "training_mode", training_mode);
    g.output("y", type, {});
    return model::inspect(g.model());
  }
};

const model::Finding* find(const model::InspectReport& r, const std::string& code) {
  for (const auto& f : r.findings)
    if (f.code == code) return &f;
  return nullptr;
}

::testing::AssertionResult has(const model::InspectReport& r, const std::string& code, Severity s,
                               const std::string& fragment = "") {
  const auto* f = find(r, code);
  if (!f) {
    std::string all;
    for (const auto& x : r.findings) all += " " + x.code;
    return ::testing::AssertionFailure() << "no finding '" << code << "' (have:" << all << ")";
  }
  if (f->severity != s) return ::testing::AssertionFailure() << code << " has severity " << model::to_string(f->severity);
  if (f->message.find(fragment) == std::string::npos)
    return ::testing::AssertionFailure() << code << ": '" << fragment << "' not in: " << f->message;
  return ::testing::AssertionSuccess();
}

TEST(Inspect, CleanModelHasOnlyTheFoldabilityNote) {
  Crafted c;
  const auto r = c.run();
  ASSERT_EQ(r.rows.size(), 1u);
  const auto& row = r.rows[0];
  EXPECT_EQ(row.name, "bn");
  EXPECT_EQ(row.producer, "Conv 'conv'");
  EXPECT_EQ(row.channels, 16);
  EXPECT_FLOAT_EQ(static_cast<float>(row.epsilon), 1e-5f);
  ASSERT_TRUE(row.params[3].has_value());
  EXPECT_NEAR(row.params[3]->min, 1.0, 1e-6);
  EXPECT_NEAR(row.params[3]->max, 1.75, 1e-6);
  EXPECT_TRUE(row.fold_into.has_value());
  EXPECT_TRUE(has(r, "foldable", Severity::info, "Conv 'conv'"));
  EXPECT_EQ(r.count(Severity::warning) + r.count(Severity::error), 0);
}

TEST(Inspect, UntrainedStatistics) {
  Crafted c;
  c.mean.assign(16, 0.0);
  c.var.assign(16, 1.0);
  EXPECT_TRUE(has(c.run(), "untrained_statistics", Severity::warning, "never trained"));
}

TEST(Inspect, NonFiniteParameters) {
  Crafted c;
  c.scale[3] = std::numeric_limits<double>::quiet_NaN();
  c.mean[5] = std::numeric_limits<double>::infinity();
  const auto r = c.run();
  EXPECT_TRUE(has(r, "non_finite", Severity::error, "scale is NaN or Inf in 1 channel (3)"));
}

// min / max / mean summarize the finite values: a NaN first made all three
// NaN, a NaN later was skipped by min and max only (found by a helper).
TEST(Inspect, SummariesAreOverTheFiniteValues) {
  for (std::size_t at : {std::size_t{0}, std::size_t{5}}) {
    Crafted c;
    c.var[at] = std::numeric_limits<double>::quiet_NaN();
    c.mean[at + 1] = -std::numeric_limits<double>::infinity();
    const auto r = c.run();
    const auto& var = *r.rows[0].params[3];
    const auto& mean = *r.rows[0].params[2];
    EXPECT_TRUE(std::isfinite(var.min) && std::isfinite(var.max) && std::isfinite(var.mean)) << at;
    EXPECT_TRUE(std::isfinite(mean.min)) << "-inf is not a summary value, at " << at;
  }
}

TEST(Inspect, NegativeEpsilon) {
  for (const std::int32_t type : {TP::FLOAT, TP::FLOAT16}) {
    Crafted c;
    c.type = type;
    c.epsilon = -1.0f;
    const auto r = c.run();
    EXPECT_TRUE(has(r, "negative_epsilon", Severity::error, "epsilon -1 is negative"));
    EXPECT_EQ(find(r, "epsilon_underflow"), nullptr) << "-1 does not round to 0";
  }
}

TEST(Inspect, NegativeVarianceAndZeroDenominator) {
  Crafted c;
  c.var[2] = -0.5;
  c.var[7] = -1e-5;  // var + eps == 0
  const auto r = c.run();
  EXPECT_TRUE(has(r, "negative_variance", Severity::error, "2 channels (2, 7)"));
  EXPECT_TRUE(has(r, "zero_denominator", Severity::error, "1 channel (7)"));
}

TEST(Inspect, EpsilonTooSmallForFloat16) {
  Crafted c;
  c.type = TP::FLOAT16;
  EXPECT_TRUE(has(c.run(), "epsilon_too_small", Severity::warning, "float16"));
  Crafted d;
  d.type = TP::FLOAT16;
  d.epsilon = 1e-9f;
  EXPECT_TRUE(has(d.run(), "epsilon_underflow", Severity::error, "rounds to 0"));
  for (const float eps : {0x1p-25f, 0x1.000002p-25f}) {
    // Exactly half the smallest subnormal ties to even, 0; just above
    // rounds up to the subnormal.
    Crafted h;
    h.type = TP::FLOAT16;
    h.epsilon = eps;
    EXPECT_EQ(find(h.run(), "epsilon_underflow") != nullptr, eps == 0x1p-25f) << eps;
  }
  Crafted e;  // f32: 1e-5 is fine
  EXPECT_EQ(find(e.run(), "epsilon_too_small"), nullptr);
}

// A float16 activation that reaches the BN through Resize is float16 too
// (Resize was not in the type propagation: the f32 parameters decided).
TEST(Inspect, Float16ThroughResize) {
  GraphBuilder g;
  g.input("x", TP::FLOAT16, {1, 2, 4, 4});
  g.initializer("scales", {4}, {1.0, 1.0, 2.0, 2.0});
  g.node("Resize", {"x", "", "scales"}, {"r"}, "resize");
  for (const char* p : {"s", "b", "m", "v"}) g.initializer(p, {2}, {1.0, 1.0});
  GraphBuilder::attr(g.node("BatchNormalization", {"r", "s", "b", "m", "v"}, {"y"}, "bn"), "epsilon", 1e-7f);
  g.output("y", TP::FLOAT16, {});
  EXPECT_TRUE(has(model::inspect(g.model()), "epsilon_too_small", Severity::warning, "float16"));
}

TEST(Inspect, DeadChannels) {
  Crafted c;
  c.scale[0] = 0.0;
  c.scale[9] = 0.0;
  EXPECT_TRUE(has(c.run(), "dead_channels", Severity::warning, "2 channels (0, 9)"));
}

TEST(Inspect, OutlierStatistics) {
  Crafted c;
  c.mean[4] = 500.0;
  c.var[11] = 1e6;
  const auto r = c.run();
  EXPECT_TRUE(has(r, "outlier_mean", Severity::warning, "1 channel (4)"));
  EXPECT_TRUE(has(r, "outlier_variance", Severity::warning, "1 channel (11)"));
}

// The median of an even count is the mean of the middle two (it was the
// upper one), and when more than half the channels share a value (MAD 0)
// the mean absolute deviation scales the distance (nothing fired).
TEST(Inspect, OutliersWithEvenCountsAndEqualValues) {
  Crafted c;
  c.mean = {0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 30};  // median 1, MAD 1: z(30) = 19.6
  EXPECT_TRUE(has(c.run(), "outlier_mean", Severity::warning, "1 channel (15)"));
  Crafted d;
  d.mean.assign(16, 0.5);
  d.mean[3] = 1000.0;  // MAD 0; z = 999.5 / (1.2533 * 999.5 / 16) = 12.8
  d.var.assign(16, 1.0);
  d.var[9] = 1e6;
  const auto r = d.run();
  EXPECT_TRUE(has(r, "outlier_mean", Severity::warning, "1 channel (3)"));
  EXPECT_TRUE(has(r, "outlier_variance", Severity::warning, "1 channel (9)"));
  Crafted e;
  e.mean.assign(16, 0.5);  // all equal: no outlier, and no division by 0
  EXPECT_EQ(find(e.run(), "outlier_mean"), nullptr);
}

// Constant's value_floats is a constant like its value tensor (it was
// reported as computed at run time, and the BN as not foldable).
TEST(Inspect, ConstantValueFloatsIsAConstant) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {1, 2, 4, 4});
  g.initializer("w", {2, 2, 1, 1}, {1, 0, 0, 1});
  g.node("Conv", {"x", "w"}, {"c"}, "conv");
  for (const char* p : {"s", "b", "v"}) g.initializer(p, {2}, {1.0, 1.0});
  auto* a = g.node("Constant", {}, {"m"}, "cm").add_attribute();
  a->set_name("value_floats");
  a->set_type(onnx::AttributeProto::FLOATS);
  a->add_floats(0.1f);
  a->add_floats(0.2f);
  g.node("BatchNormalization", {"c", "s", "b", "m", "v"}, {"y"}, "bn");
  g.output("y", TP::FLOAT, {});
  const auto r = model::inspect(g.model());
  EXPECT_EQ(find(r, "runtime_statistics"), nullptr);
  EXPECT_TRUE(has(r, "foldable", Severity::info, "Conv 'conv'"));
  ASSERT_TRUE(r.rows[0].params[2].has_value());
  EXPECT_FLOAT_EQ(static_cast<float>(r.rows[0].params[2]->max), 0.2f);
}

TEST(Inspect, TrainingModeLeftOn) {
  Crafted c;
  c.training_mode = 1;
  const auto r = c.run();
  EXPECT_TRUE(has(r, "training_mode", Severity::warning, "training_mode = 1"));
  EXPECT_TRUE(has(r, "not_foldable", Severity::info, "training mode"));
  EXPECT_TRUE(r.rows[0].training_mode);
}

TEST(Inspect, StatisticsComputedAtRunTime) {
  GraphBuilder g;
  g.input("x", TP::FLOAT, {1, 3, 4, 4});
  g.input("running_mean", TP::FLOAT, {3});
  g.initializer("s", {3}, {1, 1, 1});
  g.initializer("b", {3}, {0, 0, 0});
  g.initializer("v", {3}, {1, 1, 1});
  g.node("Relu", {"x"}, {"r"}, "relu");
  g.node("Abs", {"v"}, {"v_abs"}, "abs");
  g.node("BatchNormalization", {"r", "s", "b", "running_mean", "v_abs"}, {"y"}, "bn");
  g.output("y", TP::FLOAT, {});
  const auto r = model::inspect(g.model());
  EXPECT_TRUE(has(r, "runtime_statistics", Severity::warning, "'running_mean' is a graph input"));
  EXPECT_TRUE(has(r, "runtime_statistics", Severity::warning));
  int runtime = 0;
  for (const auto& f : r.findings) runtime += f.code == "runtime_statistics";
  EXPECT_EQ(runtime, 2);  // the mean (graph input) and the var (computed by Abs)
  EXPECT_TRUE(has(r, "not_foldable", Severity::info, "not a constant"));
  EXPECT_FALSE(r.rows[0].params[2].has_value());
  EXPECT_EQ(r.rows[0].producer, "Relu 'relu'");
}

}  // namespace
}  // namespace bnorm::test

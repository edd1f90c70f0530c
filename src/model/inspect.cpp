// The inspect rules, one function each.

#include "model/inspect.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>

#include "bnorm/error.hpp"
#include "model/batch_norm_node.hpp"
#include "model/fold.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::model {

std::string_view to_string(Severity s) noexcept {
  switch (s) {
    case Severity::info:
      return "info";
    case Severity::warning:
      return "warning";
    case Severity::error:
      return "error";
  }
  return "info";
}

int InspectReport::count(Severity s) const {
  return static_cast<int>(
      std::count_if(findings.begin(), findings.end(), [&](const auto& f) { return f.severity == s; }));
}

namespace {

constexpr double kF16SmallestNormal = 6.103515625e-05;                 // 2^-14
constexpr double kF16SmallestSubnormalHalf =
    2.98023223876953125e-08;  // 2^-25: rounds to 0 (ties to even) and below
// A channel is an outlier when its robust z-score (distance from the
// layer's median in units of 1.4826 median absolute deviations) exceeds this.
constexpr double kOutlierZ = 10.0;

std::string fmt(double v) {
  std::ostringstream s;
  s.precision(6);
  s << v;
  return s.str();
}

// "3 channels (0, 5, 17)" with at most 8 listed.
std::string channel_list(const std::vector<std::size_t>& channels) {
  std::string out = std::to_string(channels.size()) + " channel" + (channels.size() == 1 ? "" : "s") + " (";
  for (std::size_t i = 0; i < channels.size() && i < 8; ++i)
    out += (i ? ", " : "") + std::to_string(channels[i]);
  return out + (channels.size() > 8 ? ", ...)" : ")");
}

// The median (the mean of the middle two for an even count).
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// Channels whose value is a robust outlier in the layer: modified z-score
// |x - median| / (1.4826 MAD), or, when more than half the values are
// equal (MAD 0), / (1.2533 mean absolute deviation) (Iglewicz and Hoaglin).
std::vector<std::size_t> outliers(const std::vector<double>& v) {
  const double m = median(v);
  std::vector<double> dev(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) dev[i] = std::fabs(v[i] - m);
  double scale = 1.4826 * median(dev);
  if (scale == 0.0)
    scale = 1.2533 * std::accumulate(dev.begin(), dev.end(), 0.0) / static_cast<double>(dev.size());
  std::vector<std::size_t> out;
  if (!(scale > 0.0)) return out;  // all equal (or NaN)
  for (std::size_t i = 0; i < v.size(); ++i)
    if (dev[i] / scale > kOutlierZ) out.push_back(i);
  return out;
}

struct Rules {
  const OnnxModel& model;
  const BatchNormNode& bn;
  InspectReport& report;

  void add(Severity s, const std::string& code, const std::string& message) const {
    report.findings.push_back({s, code, bn.name, message});
  }

  // Parameters computed at run time. (A missing one is refused by the
  // schema check when the model is loaded.)
  void statistics_constant() const {
    for (int i = 0; i < 4; ++i) {
      if (!bn.value[i]) {
        const auto p = model.producer(bn.param[i]);
        const std::string from = p ? "computed by " + describe(model.graph().node(*p), *p)
                                 : model.is_graph_input(bn.param[i]) ? "a graph input"
                                                                     : "never produced";
        add(i >= 2 ? Severity::warning : Severity::info, i >= 2 ? "runtime_statistics" : "runtime_parameter",
            std::string(kBatchNormParams[i]) + " '" + bn.param[i] + "' is " + from +
                ", not stored as a constant");
      }
    }
  }

  void values(const std::vector<double> v[4]) const {
    const auto& scale = v[0];
    const auto& mean = v[2];
    const auto& var = v[3];
    // NaN or Inf.
    for (int i = 0; i < 4; ++i) {
      std::vector<std::size_t> bad;
      for (std::size_t c = 0; c < v[i].size(); ++c)
        if (!std::isfinite(v[i][c])) bad.push_back(c);
      if (!bad.empty())
        add(Severity::error, "non_finite",
            std::string(kBatchNormParams[i]) + " is NaN or Inf in " + channel_list(bad));
    }
    // Never trained: the initial values of every framework.
    if (!mean.empty() && std::all_of(mean.begin(), mean.end(), [](double m) { return m == 0.0; }) &&
        std::all_of(var.begin(), var.end(), [](double x) { return x == 1.0; }))
      add(Severity::warning, "untrained_statistics",
          "every mean is 0 and every var is 1: the statistics look never trained (or reset in export)");
    std::vector<std::size_t> negative, zero_den, dead;
    for (std::size_t c = 0; c < var.size(); ++c) {
      if (var[c] < 0.0) negative.push_back(c);
      if (var[c] + bn.epsilon == 0.0 || static_cast<float>(var[c]) + static_cast<float>(bn.epsilon) == 0.0f)
        zero_den.push_back(c);
    }
    for (std::size_t c = 0; c < scale.size(); ++c)
      if (scale[c] == 0.0) dead.push_back(c);
    if (!negative.empty())
      add(Severity::error, "negative_variance", "var is negative in " + channel_list(negative));
    if (!zero_den.empty())
      add(Severity::error, "zero_denominator",
          "var + eps is 0 in " + channel_list(zero_den) + ": division by zero");
    if (!dead.empty())
      add(Severity::warning, "dead_channels", "scale is 0 in " + channel_list(dead) + ": they output only B");
    if (mean.size() >= 8) {
      const auto m = outliers(mean);
      if (!m.empty())
        add(Severity::warning, "outlier_mean",
            "mean is an extreme outlier (robust z > " + fmt(kOutlierZ) + ") in " + channel_list(m));
      std::vector<double> log_var;
      bool positive = true;
      for (double x : var) {
        positive &= x > 0.0 && std::isfinite(x);
        log_var.push_back(std::log(std::max(x, 1e-300)));
      }
      if (positive) {
        const auto o = outliers(log_var);
        if (!o.empty())
          add(Severity::warning, "outlier_variance",
              "var is an extreme outlier (robust z > " + fmt(kOutlierZ) + " on log var) in " +
                  channel_list(o));
      }
    }
  }

  // eps negative, or too small for a float16 model.
  void epsilon() const {
    if (bn.epsilon < 0.0) {
      add(Severity::error, "negative_epsilon",
          "epsilon " + fmt(bn.epsilon) +
              " is negative: var + eps can be 0 or negative (division by zero, NaN)");
      return;
    }
    std::int32_t type = model.element_type(bn.input);
    if (type == 0 && bn.value[0]) type = bn.value[0]->data_type();
    if (type != onnx::TensorProto::FLOAT16) return;
    if (bn.epsilon <= kF16SmallestSubnormalHalf) {
      add(Severity::error, "epsilon_underflow", "epsilon " + fmt(bn.epsilon) + " rounds to 0 in float16");
    } else if (bn.epsilon < kF16SmallestNormal) {
      add(Severity::warning, "epsilon_too_small",
          "epsilon " + fmt(bn.epsilon) +
              " is below float16's smallest normal number (6.1e-05): in a float16 "
              "model var + eps loses precision or underflows; use at least 1e-3");
    }
  }

  void training_mode() const {
    if (bn.training_mode)
      add(Severity::warning, "training_mode",
          bn.training_why +
              ": the node runs in training mode, normalizing with batch statistics and updating running "
              "ones; an inference model should have training_mode = 0 (opset 14 on), no outputs besides Y, "
              "and is_test = 1 before opset 7");
  }
};

}  // namespace

InspectReport inspect(const OnnxModel& model) {
  InspectReport report;
  for (int index : batch_norm_nodes(model)) {
    const BatchNormNode bn = read_batch_norm(model, index);
    BatchNormRow row;
    row.name = bn.name;
    row.input = bn.input;
    row.output = bn.output;
    row.epsilon = bn.epsilon;
    row.momentum = bn.momentum;
    row.training_mode = bn.training_mode;
    if (const auto p = model.producer(bn.input)) {
      row.producer = describe(model.graph().node(*p), *p);
    } else {
      row.producer = (model.is_graph_input(bn.input) ? "graph input '" : "constant '") + bn.input + "'";
    }
    const Rules rules{model, bn, report};
    rules.statistics_constant();
    std::vector<double> v[4];
    bool all = true;
    for (int i = 0; i < 4; ++i) {
      if (!bn.value[i]) {
        all = false;
        continue;
      }
      try {
        v[i] = to_doubles(*bn.value[i], std::string(kBatchNormParams[i]) + " '" + bn.param[i] + "'");
      } catch (const Error& e) {
        rules.add(Severity::error, "bad_parameter", e.what());
        all = false;
        continue;
      }
      if (!v[i].empty()) {
        // Over the finite values (NaN compared in whatever order it came);
        // the others are the non_finite finding's. NaN when there is none.
        const double nan = std::numeric_limits<double>::quiet_NaN();
        Summary s{nan, nan, 0.0};
        std::size_t finite = 0;
        for (double x : v[i]) {
          if (!std::isfinite(x)) continue;
          s.min = finite ? std::min(s.min, x) : x;
          s.max = finite ? std::max(s.max, x) : x;
          s.mean += x;
          ++finite;
        }
        s.mean = finite ? s.mean / static_cast<double>(finite) : nan;
        row.params[i] = s;
      }
      if (row.channels < 0) row.channels = static_cast<std::int64_t>(v[i].size());
    }
    if (all) {
      bool same = true;
      for (int i = 1; i < 4; ++i) same &= v[i].size() == v[0].size();
      if (same) {
        rules.values(v);
      } else {
        rules.add(Severity::error, "channel_mismatch", "scale, B, input_mean and input_var differ in length");
      }
    }
    rules.epsilon();
    rules.training_mode();
    if (const auto refusal = fold_refusal(model, bn)) {
      row.fold_refusal = *refusal;
      report.findings.push_back({Severity::info, "not_foldable", bn.name, "cannot be folded: " + *refusal});
    } else {
      const int p = *model.producer(bn.input);
      row.fold_into = describe(model.graph().node(p), p);
      report.findings.push_back(
          {Severity::info, "foldable", bn.name, "can be folded into " + *row.fold_into});
    }
    report.rows.push_back(std::move(row));
  }
  return report;
}

}  // namespace bnorm::model

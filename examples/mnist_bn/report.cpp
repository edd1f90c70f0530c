#include "report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "model/output_file.hpp"
#include "plot.hpp"

namespace mnist_bn {
namespace {

std::string num(double v, const char* f = "%.6g") {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string pct(double v) { return v < 0 ? "—" : num(v * 100, "%.2f%%"); }

const RunResult* find_run(const std::vector<RunResult>& runs, Activation a, bool bn, double lr) {
  for (const auto& r : runs)
    if (r.spec.activation == a && r.spec.batch_norm == bn && r.spec.lr == lr) return &r;
  return nullptr;
}

struct Best {
  double accuracy = -1;
  std::int64_t step = 0;
};
Best best_of(const RunResult& r) {
  Best b;
  for (const auto& p : r.curve)
    if (p.test_accuracy > b.accuracy) b = {p.test_accuracy, p.step};
  return b;
}

double last_train_loss(const RunResult& r) {
  for (auto it = r.curve.rbegin(); it != r.curve.rend(); ++it)
    if (std::isfinite(it->train_loss)) return it->train_loss;
  return NAN;
}

}  // namespace

void write_file(const std::string& path, const std::string& text) {
  bnorm::model::OutputFile file(path);
  file.write(text.data(), text.size());
  file.commit();
}

std::string curves_csv(const std::vector<RunResult>& runs) {
  std::ostringstream o;
  o << "activation,variant,lr,step,train_loss,test_accuracy\n";
  for (const auto& r : runs)
    for (const auto& p : r.curve)
      o << to_string(r.spec.activation) << ',' << r.spec.variant() << ',' << r.spec.lr << ',' << p.step << ','
        << num(p.train_loss, "%.9g") << ',' << num(p.test_accuracy, "%.6f") << '\n';
  return o.str();
}

std::string step_loss_csv(const std::vector<RunResult>& runs) {
  std::ostringstream o;
  o << "activation,variant,lr,step,loss\n";
  for (const auto& r : runs)
    for (std::size_t i = 0; i < r.step_loss.size(); ++i)
      o << to_string(r.spec.activation) << ',' << r.spec.variant() << ',' << r.spec.lr << ',' << i + 1 << ','
        << num(r.step_loss[i], "%.12g") << '\n';
  return o.str();
}

std::string summary_csv(const std::vector<RunResult>& runs, const std::vector<double>& targets) {
  std::ostringstream o;
  o << "activation,variant,lr,steps";
  for (double t : targets) o << ",steps_to_" << num(t * 100, "%g");
  o << ",best_accuracy,best_step,final_accuracy,final_train_loss,diverged,diverged_at,seconds\n";
  for (const auto& r : runs) {
    const Best b = best_of(r);
    o << to_string(r.spec.activation) << ',' << r.spec.variant() << ',' << r.spec.lr << ',' << r.spec.steps;
    for (double t : targets) o << ',' << steps_to_reach(r, t);
    o << ',' << num(b.accuracy, "%.6f") << ',' << b.step << ',' << num(r.final_accuracy, "%.6f") << ','
      << num(last_train_loss(r), "%.6g") << ',' << (r.diverged ? 1 : 0) << ',' << r.diverged_at << ','
      << num(r.seconds, "%.2f") << '\n';
  }
  return o.str();
}

std::string summary_markdown(const std::vector<RunResult>& runs, const std::vector<double>& targets,
                             const RunContext& ctx) {
  std::ostringstream o;
  const std::string subset =
      "the " + std::to_string(ctx.eval_rows) + "-image test subset, every " +
      (runs.empty() ? std::string("?") : std::to_string(runs.front().spec.eval_every)) + " steps";
  o << "Command: `" << ctx.command << "`  \n";
  o << "Machine: " << ctx.machine << "; " << ctx.threads << " thread(s), " << ctx.processes
    << " process(es); " << ctx.date << "; wall time " << num(ctx.seconds, "%.0f") << " s.\n\n";
  o << "| activation | variant | lr |";
  for (double t : targets) o << " steps to " << num(t * 100, "%g") << "% |";
  o << " best acc (step) | final acc, 10k test | final train loss | diverged |\n|---|---|---|";
  for (std::size_t i = 0; i < targets.size(); ++i) o << "---|";
  o << "---|---|---|---|\n";
  for (const auto& r : runs) {
    const Best b = best_of(r);
    o << "| " << to_string(r.spec.activation) << " | " << (r.spec.batch_norm ? "BN" : "plain") << " | "
      << r.spec.lr << " |";
    for (double t : targets) {
      const auto s = steps_to_reach(r, t);
      o << ' ' << (s < 0 ? std::string("not reached") : std::to_string(s)) << " |";
    }
    o << ' ' << pct(b.accuracy) << " (" << b.step << ") | " << pct(r.final_accuracy) << " | "
      << (std::isfinite(last_train_loss(r)) ? num(last_train_loss(r), "%.4f") : std::string("—")) << " | "
      << (r.diverged ? "yes, step " + std::to_string(r.diverged_at) : std::string("no")) << " |\n";
  }
  o << "\nSteps to a target and best accuracy are read on " << subset
    << " (so a step count is a multiple of that cadence); final accuracy is on all 10,000 test images "
       "after the last step. Train loss is the mean mini-batch loss over the last evaluation interval.\n";

  // BN against plain at each learning rate.
  std::vector<std::pair<Activation, double>> keys;
  for (const auto& r : runs)
    if (std::find(keys.begin(), keys.end(), std::make_pair(r.spec.activation, r.spec.lr)) == keys.end())
      keys.emplace_back(r.spec.activation, r.spec.lr);
  bool header = false;
  for (const auto& [act, lr] : keys) {
    const RunResult* bn = find_run(runs, act, true, lr);
    const RunResult* plain = find_run(runs, act, false, lr);
    if (!bn || !plain) continue;
    if (!header) {
      o << "\n| activation | lr |";
      for (double t : targets) o << " steps to " << num(t * 100, "%g") << "%: plain / BN |";
      o << " final acc: plain / BN |\n|---|---|";
      for (std::size_t i = 0; i < targets.size(); ++i) o << "---|";
      o << "---|\n";
      header = true;
    }
    o << "| " << to_string(act) << " | " << lr << " |";
    for (double t : targets) {
      const auto sp = steps_to_reach(*plain, t), sb = steps_to_reach(*bn, t);
      const auto show = [](std::int64_t s) { return s < 0 ? std::string("—") : std::to_string(s); };
      o << ' ' << show(sp) << " / " << show(sb);
      if (sp > 0 && sb > 0)
        o << " (" << num(static_cast<double>(sp) / static_cast<double>(sb), "%.1f") << "x)";
      else if (sp < 0 && sb > 0)
        o << " (BN only)";
      o << " |";
    }
    o << ' ' << pct(plain->final_accuracy) << " / " << pct(bn->final_accuracy) << " |\n";
  }

  // The paper's two claims, per activation: the fastest run of each variant
  // to each target, and the learning rates at which each variant gets there.
  std::vector<Activation> acts;
  for (const auto& r : runs)
    if (std::find(acts.begin(), acts.end(), r.spec.activation) == acts.end())
      acts.push_back(r.spec.activation);
  header = false;
  for (Activation act : acts)
    for (double t : targets) {
      const RunResult* fastest[2] = {nullptr, nullptr};  // plain, BN
      std::string reached[2];
      for (const auto& r : runs) {
        if (r.spec.activation != act) continue;
        const auto s = steps_to_reach(r, t);
        if (s < 0) continue;
        const int v = r.spec.batch_norm ? 1 : 0;
        std::ostringstream lr;
        lr << r.spec.lr;
        reached[v] += (reached[v].empty() ? "" : ", ") + lr.str();
        if (!fastest[v] || s < steps_to_reach(*fastest[v], t)) fastest[v] = &r;
      }
      if (!header) {
        o << "\n| activation | target | fastest plain run | fastest BN run | plain / BN | learning rates "
             "reaching "
             "it: plain | BN |\n|---|---|---|---|---|---|---|\n";
        header = true;
      }
      auto show = [&](const RunResult* r) {
        if (!r) return std::string("not reached");
        std::ostringstream x;
        x << steps_to_reach(*r, t) << " steps (lr " << r->spec.lr << ")";
        return x.str();
      };
      o << "| " << to_string(act) << " | " << num(t * 100, "%g") << "% | " << show(fastest[0]) << " | "
        << show(fastest[1]) << " | ";
      if (fastest[0] && fastest[1])
        o << num(static_cast<double>(steps_to_reach(*fastest[0], t)) /
                     static_cast<double>(steps_to_reach(*fastest[1], t)),
                 "%.1f")
          << "x";
      else
        o << "—";
      o << " | " << (reached[0].empty() ? "none" : reached[0]) << " | "
        << (reached[1].empty() ? "none" : reached[1]) << " |\n";
    }
  return o.str();
}

std::string curves_svg(const std::vector<RunResult>& runs, const std::vector<double>& targets,
                       std::int64_t eval_rows) {
  // One colour per learning rate; BN solid, plain dashed. Top panel: the
  // whole accuracy range; bottom: log steps (the early phase, where the
  // variants differ most) and a zoom on the range of the targets.
  static const char* palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  std::vector<double> lrs;
  for (const auto& r : runs)
    if (std::find(lrs.begin(), lrs.end(), r.spec.lr) == lrs.end()) lrs.push_back(r.spec.lr);
  std::sort(lrs.begin(), lrs.end());
  std::vector<std::string> acts;
  std::int64_t max_step = 1;
  for (const auto& r : runs) {
    max_step = std::max(max_step, r.spec.steps);
    if (std::find(acts.begin(), acts.end(), to_string(r.spec.activation)) == acts.end())
      acts.push_back(to_string(r.spec.activation));
  }
  std::string act_list;
  for (const auto& a : acts) act_list += (act_list.empty() ? "" : ", ") + a;
  const int markers = static_cast<int>(acts.size());
  std::vector<Series> series;
  for (const auto& r : runs) {
    Series s;
    const std::size_t li =
        static_cast<std::size_t>(std::find(lrs.begin(), lrs.end(), r.spec.lr) - lrs.begin());
    s.color = palette[li % 10];
    s.dashed = !r.spec.batch_norm;
    std::ostringstream label;
    label << (r.spec.batch_norm ? "BN" : "plain") << ", lr " << r.spec.lr;
    if (markers > 1) label << ", " << to_string(r.spec.activation);
    s.label = label.str();
    s.diverged = r.diverged;
    for (const auto& p : r.curve) {
      s.x.push_back(static_cast<double>(p.step));
      s.y.push_back(p.test_accuracy);
    }
    series.push_back(std::move(s));
  }
  Chart full;
  full.title = "Fashion-MNIST, 784-100-100-100-10 " + act_list + ", batch " +
               std::to_string(runs.empty() ? 60 : runs.front().spec.batch) +
               ", SGD: with BatchNorm (solid), without (dashed)";
  full.x_label = "training steps";
  full.y_label = "test accuracy (" + std::to_string(eval_rows) + " images)";
  full.x_max = static_cast<double>(max_step);
  full.y_marks = targets;
  full.series = series;
  Chart zoom = full;
  zoom.title = "the same on a logarithmic step axis, accuracy zoomed";
  zoom.x_log = true;
  zoom.x_min = static_cast<double>(
      std::min(runs.empty() ? std::int64_t{100} : runs.front().spec.eval_every, max_step));
  zoom.x_label = "training steps (log scale)";
  double lo = 1, hi = 0;
  for (double t : targets) lo = std::min(lo, t), hi = std::max(hi, t);
  if (targets.empty()) lo = 0.7, hi = 0.85;
  zoom.y_min = std::max(0.0, std::floor((lo - 0.1) * 20 + 1e-9) / 20);
  zoom.y_max = std::min(1.0, std::ceil((hi + 0.05) * 20 - 1e-9) / 20);
  zoom.y_tick = 0.02;
  return render_svg({full, zoom});
}

}  // namespace mnist_bn

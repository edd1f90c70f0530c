#include "exec/compare.hpp"

#include <algorithm>
#include <cmath>

#include "bnorm/error.hpp"
#include "exec/input_data.hpp"

namespace bnorm::exec {

void OutputComparison::add(const Tensor& a, const Tensor& b, std::int64_t offset) {
  // Float outputs of different types (a float16 model against its float32
  // original) are compared as their values.
  if (a.shape() != b.shape() || (a.type() != b.type() && !(is_floating(a.type()) && is_floating(b.type()))))
    throw Error(ErrorKind::shape_mismatch,
                "output '" + name_ + "': the models give " + a.str() + " and " + b.str() + " for the same batch");
  for (std::int64_t i = 0; i < a.elements(); ++i) {
    const double x = value_at(a, i), y = value_at(b, i);
    double diff = std::fabs(y - x), excess = -INFINITY;
    // Equal infinities agree (never the worst element). A NaN, on one side
    // or both (numpy.allclose's default: two models that both give NaN have
    // not been shown to agree), or an infinity against anything else, is as
    // far beyond the tolerance as can be.
    if (x == y) {
      diff = 0.0;
    } else {
      if (std::isnan(diff)) diff = INFINITY;
      excess = diff - (tol_.atol + tol_.rtol * std::fabs(x));
      if (std::isnan(excess)) excess = INFINITY;  // inf - inf: an infinity against a finite value or -inf
    }
    if (excess > 0) ++violations_;
    if (diff > max_abs_) max_abs_ = diff;
    if (x != 0.0 && std::isfinite(x) && diff / std::fabs(x) > max_rel_) max_rel_ = diff / std::fabs(x);
    if (excess > worst_excess_ || worst_index_ < 0) {
      worst_excess_ = excess;
      worst_index_ = offset + i;
      worst_a_ = x;
      worst_b_ = y;
    }
  }
  elements_ += a.elements();
}

std::vector<OutputComparison> compare_models(const model::OnnxModel& a, const model::OnnxModel& b,
                                             const std::filesystem::path& data_path, std::int64_t batch_size,
                                             Tolerance tol,
                                             const std::function<void(std::int64_t, std::int64_t)>& progress) {
  Executor ea(a), eb(b);
  if (ea.outputs().size() != eb.outputs().size())
    throw Error(ErrorKind::invalid_argument, "the models have " + std::to_string(ea.outputs().size()) + " and " +
                                                 std::to_string(eb.outputs().size()) + " outputs");
  if (ea.inputs().size() != eb.inputs().size())
    throw Error(ErrorKind::invalid_argument, "the models have " + std::to_string(ea.inputs().size()) + " and " +
                                                 std::to_string(eb.inputs().size()) + " inputs");
  for (std::size_t i = 0; i < ea.inputs().size(); ++i)
    if (ea.inputs()[i].name != eb.inputs()[i].name)
      throw Error(ErrorKind::invalid_argument,
                  "the models' inputs differ ('" + ea.inputs()[i].name + "' and '" + eb.inputs()[i].name + "')");
  // Outputs are compared position by position: they must be the same ones.
  for (std::size_t i = 0; i < ea.outputs().size(); ++i)
    if (ea.outputs()[i].name != eb.outputs()[i].name)
      throw Error(ErrorKind::invalid_argument,
                  "the models' outputs differ (output " + std::to_string(i) + ": '" + ea.outputs()[i].name +
                      "' and '" + eb.outputs()[i].name + "'): outputs are compared by name, in order");
  // Each model gets the rows in its own input types (a float array feeds
  // any float input).
  const InputData data = InputData::open(data_path, ea.inputs());
  const InputData data_b = InputData::open(data_path, eb.inputs());
  check_batch_size(eb.inputs(), batch_size, data.rows());  // run_batches checks a's
  check_rows_independent(eb, data_b, batch_size, 0, data.rows());
  std::vector<OutputComparison> results;
  for (const auto& o : ea.outputs()) results.emplace_back(o.name, tol);
  std::vector<std::int64_t> offsets(results.size(), 0);
  run_batches(ea, data, batch_size, 0, data.rows(), [&](std::int64_t row, std::vector<Tensor>& outputs_a) {
    const std::int64_t count = std::min(batch_size, data.rows() - row);
    const auto outputs_b = eb.run(data_b.batch(row, count));
    for (std::size_t i = 0; i < results.size(); ++i) {
      results[i].add(outputs_a[i], outputs_b[i], offsets[i]);
      offsets[i] += outputs_a[i].elements();
    }
    if (progress) progress(row + count, data.rows());
  });
  return results;
}

}  // namespace bnorm::exec

// Comparing two models' outputs element by element, batch by batch, with
// numpy.allclose's rule: |b - a| <= atol + rtol * |a|, a the reference.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "exec/tensor.hpp"
#include "model/onnx_model.hpp"

namespace bnorm::exec {

struct Tolerance {
  double atol = 1e-5;
  double rtol = 1e-4;
};

/// Running comparison of one output.
class OutputComparison {
 public:
  OutputComparison(std::string name, Tolerance tol) : name_(std::move(name)), tol_(tol) {}

  /// Compares a batch: `a` (reference) and `b` of the same shape, whose
  /// first element is element `offset` of the whole output. Throws
  /// Error(shape_mismatch) when the shapes differ, or the types unless both
  /// are floating-point.
  void add(const Tensor& a, const Tensor& b, std::int64_t offset);

  const std::string& name() const noexcept { return name_; }
  std::int64_t elements() const noexcept { return elements_; }
  /// Elements outside the tolerance (every NaN counts, on one side or both).
  std::int64_t violations() const noexcept { return violations_; }
  double max_abs() const noexcept { return max_abs_; }
  /// Largest |b - a| / |a| over elements with a != 0.
  double max_rel() const noexcept { return max_rel_; }
  /// The element furthest beyond (or closest to) the tolerance: its flat
  /// index in the output, and the two values.
  std::int64_t worst_index() const noexcept { return worst_index_; }
  double worst_a() const noexcept { return worst_a_; }
  double worst_b() const noexcept { return worst_b_; }
  bool passed() const noexcept { return violations_ == 0; }

 private:
  std::string name_;
  Tolerance tol_;
  std::int64_t elements_ = 0, violations_ = 0, worst_index_ = -1;
  double max_abs_ = 0.0, max_rel_ = 0.0, worst_excess_ = -INFINITY, worst_a_ = 0.0, worst_b_ = 0.0;
};

/// Runs `a` (the reference) and `b` on every row of `data` in batches and
/// compares all outputs. progress(rows done, rows total) after each batch.
/// Throws Error(invalid_argument) when the models' inputs or output counts
/// differ.
std::vector<OutputComparison> compare_models(const model::OnnxModel& a, const model::OnnxModel& b,
                                             const std::filesystem::path& data, std::int64_t batch_size,
                                             Tolerance tol,
                                             const std::function<void(std::int64_t, std::int64_t)>& progress = {});

}  // namespace bnorm::exec

// The side-by-side benchmark's implementations: the roofline (a streaming
// y = a*x + b over the same bytes), bnorm, oneDNN and ATen. Each is set up
// once per case on shared buffers, then timed call by call, interleaved.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/bnorm.hpp"

namespace bnorm::bench {

enum class Direction { forward_training, forward_inference, backward };

const char* to_string(Direction d);

struct Case {
  Direction direction = Direction::forward_training;
  TensorDesc desc;
  int threads = 1;
};

/// Buffers shared by every implementation of a case (64-byte aligned).
struct Buffers {
  void* src = nullptr;
  void* dst = nullptr;
  void* diff_dst = nullptr;
  void* diff_src = nullptr;
  std::vector<float> gamma, beta, mean, var, invstd, running_mean, running_var, diff_gamma, diff_beta;
};

class Impl {
 public:
  virtual ~Impl() = default;
  /// "roofline", "bnorm", "onednn" or "aten".
  virtual const char* name() const = 0;
  /// Prepares the case (primitives, saved statistics for backward). Returns
  /// false with *why filled when the implementation cannot run it.
  virtual bool setup(const Case& c, Buffers& b, std::string* why) = 0;
  /// One call of the measured operation.
  virtual void run() = 0;
  /// Implementation detail worth reporting (e.g. oneDNN's kernel name).
  virtual std::string detail() const { return {}; }
};

std::unique_ptr<Impl> make_roofline();
std::unique_ptr<Impl> make_bnorm();
std::unique_ptr<Impl> make_onednn();
std::unique_ptr<Impl> make_aten();

/// Sets every library's thread count (OpenMP, bnorm, ATen).
void set_all_threads(int threads);

/// Prints read-only, write-only (non-temporal) and read+write bandwidth over
/// `bytes`, for each thread count.
void print_bandwidth(std::size_t bytes, const std::vector<int>& thread_counts, int reps);

}  // namespace bnorm::bench

// The side-by-side benchmark's implementations: the roofline (a streaming
// y = a*x + b over the same bytes), bnorm, oneDNN and ATen, and for the
// fused BN ops bnorm's plain BN ("plain") and BN followed by separate add /
// ReLU passes ("unfused"). Each is set up once per case on shared buffers,
// then timed call by call, interleaved.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/bnorm.hpp"

namespace bnorm::bench {

enum class Direction { forward_training, forward_inference, backward };

/// The measured operation. Layer and RMS norm normalize over the last dim
/// (normalized_dims = 1); group norm uses Case::groups.
enum class Op { batch_norm, bn_relu, bn_add_relu, layer_norm, rms_norm, group_norm, instance_norm };

const char* to_string(Direction d);
const char* to_string(Op op);

struct Case {
  Op op = Op::batch_norm;
  Direction direction = Direction::forward_training;
  TensorDesc desc;
  int threads = 1;
  std::int64_t groups = 32;  ///< group_norm's G

  bool fused() const { return op == Op::bn_relu || op == Op::bn_add_relu; }
  bool batch_norm_family() const { return op == Op::batch_norm || fused(); }
  /// Elements of a row (layer / RMS norm's normalized size).
  std::int64_t row() const { return desc.dims().back(); }
};

/// Buffers shared by every implementation of a case (64-byte aligned).
/// Parameter vectors hold max(C, row) values, statistics vectors enough for
/// every op (C, rows, or N x C).
struct Buffers {
  void* src = nullptr;
  void* dst = nullptr;
  void* diff_dst = nullptr;
  void* diff_src = nullptr;
  void* residual = nullptr;       ///< bn_add_relu's second input
  void* diff_residual = nullptr;  ///< and its gradient
  std::vector<float> gamma, beta, mean, var, invstd, running_mean, running_var, diff_gamma, diff_beta;
};

/// The benchmark's parameter values in `b`: gamma, beta and their gradients
/// (`params` values), saved or running statistics (`stats`), running
/// statistics (`channels`).
inline void fill_parameters(Buffers& b, std::size_t params, std::size_t stats, std::size_t channels) {
  b.gamma.assign(params, 1.25f);
  b.beta.assign(params, -0.5f);
  b.diff_gamma.assign(params, 0.0f);
  b.diff_beta.assign(params, 0.0f);
  b.mean.assign(stats, 0.0f);
  b.var.assign(stats, 1.0f);
  b.invstd.assign(stats, 1.0f);
  b.running_mean.assign(channels, 0.5f);
  b.running_var.assign(channels, 1.0f);
}

class Impl {
 public:
  virtual ~Impl() = default;
  /// "roofline", "bnorm", "onednn", "aten", "plain" or "unfused".
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
/// bnorm's plain batch norm, same direction (the fused ops' baseline).
std::unique_ptr<Impl> make_plain();
/// bnorm's plain batch norm plus separate add / ReLU passes (ATen's
/// vectorized in-place ops; backward: ATen's threshold_backward, then BN).
std::unique_ptr<Impl> make_unfused();

/// Sets every library's thread count (OpenMP, bnorm, ATen).
void set_all_threads(int threads);

/// Prints read-only, write-only (non-temporal) and read+write bandwidth over
/// `bytes`, for each thread count.
void print_bandwidth(std::size_t bytes, const std::vector<int>& thread_counts, int reps);

/// Prints the time of bare loops of batch norm's channels-first access
/// patterns (f32) beside the roofline's, per shape and thread count.
void print_patterns(const std::vector<std::string>& shapes, const std::vector<int>& thread_counts, int reps);

}  // namespace bnorm::bench

// The SyncBatchNorm functions with the caller's own argument checks folded
// into the agreement between processes (for the layer, whose C must match
// num_features): a process whose arguments are refused still takes part in
// the first collective, so the others fail with it instead of waiting.
#pragma once

#include <exception>

#include "bnorm/error.hpp"
#include "bnorm/sync_batch_norm.hpp"

namespace bnorm::ops::sync_batch_norm {

/// What `check` threw (an Error), or null: a process's own checks are
/// carried into the agreement between processes rather than thrown before
/// it, where the other processes would be left waiting in the collective.
template <class F>
std::exception_ptr error_of(F&& check) {
  try {
    check();
  } catch (const Error&) {
    return std::current_exception();
  }
  return nullptr;
}

/// sync_batch_norm_forward_training; `refused` (may be null): the error of
/// a check the caller made on this process. Every process then throws:
/// this one its own error, the others Error(invalid_argument) naming it.
void forward_training(comm::Communicator& comm, const TensorDesc& src_desc, const void* src,
                      const TensorDesc& dst_desc, void* dst, const float* gamma, const float* beta,
                      float* save_mean, float* save_invstd, const RunningStats& running,
                      const BatchNormConfig& config, std::exception_ptr refused);

/// sync_batch_norm_backward, with `refused` as for forward_training.
void backward(comm::Communicator& comm, const TensorDesc& src_desc, const void* src,
              const TensorDesc& diff_dst_desc, const void* diff_dst, const TensorDesc& diff_src_desc,
              void* diff_src, const float* gamma, const float* mean, const float* invstd, float* diff_gamma,
              float* diff_beta, std::exception_ptr refused);

}  // namespace bnorm::ops::sync_batch_norm

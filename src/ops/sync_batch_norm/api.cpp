// SyncBatchNorm's functions: batch norm whose statistics span every process
// of a communicator. Local exact moments, one allgather, a Chan merge in
// double in rank order (so every process holds the same bits), then batch
// norm's normalizers and kernels; backward sums this process's reductions
// over the processes and applies the global coefficients.

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/runtime.hpp"
#include "bnorm/sync_batch_norm.hpp"
#include "ops/batch_norm/plan.hpp"
#include "ops/sync_batch_norm/sync.hpp"
#include "ops/validate.hpp"

namespace bnorm {
namespace obn = ops::batch_norm;

namespace {

enum class Call : std::int64_t { forward_training = 1, backward = 2 };

const char* call_name(std::int64_t call) {
  return call == static_cast<std::int64_t>(Call::forward_training) ? "sync_batch_norm_forward_training"
         : call == static_cast<std::int64_t>(Call::backward)       ? "sync_batch_norm_backward"
                                                                   : "another collective";
}

// What every process says about its call before the first collective: a
// mismatch is an error on every process (they all see every header) instead
// of a hang or a silent mix of different tensors.
struct Header {
  std::int64_t magic = 0x62536e796e63424e;  // tells our headers from other traffic
  std::int64_t call = 0;
  std::int64_t channels = 0;
  std::int64_t dtype = 0;
  std::int64_t refused = 0;  // this process's own argument checks failed
};

// `refused`: this process's argument checks failed with that error (null:
// they passed). It is rethrown here once every process knows.
void agree(comm::Communicator& comm, Call call, const TensorDesc& desc, const std::exception_ptr& refused) {
  const Header mine{.call = static_cast<std::int64_t>(call),
                    .channels = desc.channels(),
                    .dtype = static_cast<std::int64_t>(desc.dtype()),
                    .refused = refused ? 1 : 0};
  thread_local std::vector<Header> all;
  all.resize(static_cast<std::size_t>(comm.size()));
  comm.allgather(&mine, sizeof mine, all.data());
  const std::string here = std::string(call_name(mine.call)) + " on rank " + std::to_string(comm.rank()) + " of " +
                           std::to_string(comm.size());
  for (int r = 0; r < comm.size(); ++r) {
    const Header& h = all[static_cast<std::size_t>(r)];
    if (h.magic != mine.magic || h.call != mine.call)
      throw Error(ErrorKind::invalid_argument,
                  here + ": rank " + std::to_string(r) + " is in " + call_name(h.call) +
                      ": every process must make the same collective calls in the "
                      "same order");
  }
  if (refused) std::rethrow_exception(refused);
  for (int r = 0; r < comm.size(); ++r) {
    const Header& h = all[static_cast<std::size_t>(r)];
    const std::string there = "rank " + std::to_string(r);
    if (h.refused)
      throw Error(ErrorKind::invalid_argument, here + ": " + there +
                                                   " refused its arguments (its own error says why), so no "
                                                   "process runs the call");
    if (h.channels != mine.channels)
      throw Error(ErrorKind::invalid_argument, here + ": argument 'src_desc' has C = " +
                                                   std::to_string(mine.channels) + " but " + there + " has C = " +
                                                   std::to_string(h.channels) +
                                                   ": every process must pass the same channels");
    if (h.dtype != mine.dtype)
      throw Error(ErrorKind::invalid_argument,
                  here + ": argument 'src_desc' has dtype " + std::string(to_string(desc.dtype())) + " but " +
                      there + " has dtype " + std::string(to_string(static_cast<DType>(h.dtype))) +
                      ": every process must pass the same dtype");
  }
}

// Scratch reused across calls (grows only).
struct Scratch {
  std::vector<double> local, all, mean, m2, invstd, sums;
  std::vector<float> center, scale, shift;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

namespace ops::sync_batch_norm {

void forward_training(comm::Communicator& comm, const TensorDesc& src_desc, const void* src,
                      const TensorDesc& dst_desc, void* dst, const float* gamma, const float* beta,
                      float* save_mean, float* save_invstd, const RunningStats& running,
                      const BatchNormConfig& config, std::exception_ptr refused) {
  obn::TrainingCall call;
  if (!refused)
    refused = error_of(
        [&] { call = obn::check_training(src_desc, src, dst_desc, dst, running, config, /*shard=*/true); });
  agree(comm, Call::forward_training, src_desc, refused);
  const obn::Problem& p = call.problem;

  // This process's (count, mean[C], m2[C]), gathered from every process.
  const auto C = static_cast<std::size_t>(p.c), ranks = static_cast<std::size_t>(comm.size());
  const std::size_t record = 1 + 2 * C;
  Scratch& s = scratch();
  s.local.assign(record, 0.0);
  s.local[0] = static_cast<double>(p.count());
  if (p.elements() > 0) {
    if (p.rows_view()) {
      obn::moments_rows(p, obn::plan_for(p, num_threads(), obn::Pass::training), src, &s.local[1],
                        &s.local[1 + C]);
    } else {
      obn::moments_channels_first(p, num_threads(), src, &s.local[1], &s.local[1 + C]);
    }
  }
  s.all.resize(ranks * record);
  comm.allgather(s.local.data(), record * sizeof(double), s.all.data());

  // Chan's merge in rank order: the same on every process.
  s.mean.assign(C, 0.0);
  s.m2.assign(C, 0.0);
  double count = 0.0;
  for (std::size_t r = 0; r < ranks; ++r) {
    const double* rec = &s.all[r * record];
    count = obn::merge_moments(p.c, count, s.mean.data(), s.m2.data(), rec[0], rec + 1, rec + 1 + C);
  }
  if (count <= 1.0) {
    throw Error(ErrorKind::invalid_argument,
                "sync_batch_norm_forward_training: the global batch has " + ops::format_value(count) +
                    " value(s) per channel over " + std::to_string(comm.size()) +
                    " process(es) (this one's argument 'src_desc' has dims " + src_desc.dims_str() +
                    "): expected more than 1 when training");
  }

  // Normalizers from the global statistics; saved and running statistics
  // written (identical on every process).
  const obn::Plan plan = obn::plan_for(p, num_threads(), obn::Pass::inference);
  const std::size_t L = static_cast<std::size_t>(plan.strategy == obn::Strategy::rows ? obn::k::cyclic_length(p.c) : p.c);
  s.center.resize(L);
  s.scale.resize(L);
  s.shift.resize(L);
  s.invstd.resize(C);
  const obn::TrainingOutputs out{gamma,       beta,        save_mean,   save_invstd,
                                 running.mean, running.var, config.eps,  call.factor,
                                 config.unbiased_running_var};
  out.finish(0, p.c, count, s.mean.data(), s.m2.data(), s.center.data(), s.scale.data(), s.shift.data(),
             s.invstd.data(), true);
  ops::batch_norm::count_batch(running);
  if (p.elements() == 0) return;
  if (plan.strategy == obn::Strategy::rows) {
    obn::inference_rows(p, plan, src, dst, s.center.data(), s.scale.data(), s.shift.data(), {});
  } else {
    obn::inference_channels_first(p, plan, src, dst, s.center.data(), s.scale.data(), s.shift.data(), {});
  }
}

void backward(comm::Communicator& comm, const TensorDesc& src_desc, const void* src,
              const TensorDesc& diff_dst_desc, const void* diff_dst, const TensorDesc& diff_src_desc,
              void* diff_src, const float* gamma, const float* mean, const float* invstd, float* diff_gamma,
              float* diff_beta, std::exception_ptr refused) {
  if (!refused) {
    refused = error_of([&] {
      ops::require_activation(src_desc, "src_desc", 2, kMaxRank);
      ops::require_same(src_desc, "src_desc", diff_dst_desc, "diff_dst_desc");
      ops::require_same(src_desc, "src_desc", diff_src_desc, "diff_src_desc");
      ops::require_pointer(mean, "mean", "C values are required");
      ops::require_pointer(invstd, "invstd", "C values are required");
      if (src_desc.elements() > 0) {
        ops::require_pointer(src, "src", "the forward input is required");
        ops::require_pointer(diff_dst, "diff_dst", "the output gradient is required");
      }
    });
  }
  agree(comm, Call::backward, src_desc, refused);
  const obn::Problem p = obn::Problem::of(src_desc);

  // This process's sum(dy) and sum(dy * (x - mean)), then every process's.
  const auto C = static_cast<std::size_t>(p.c);
  Scratch& s = scratch();
  s.sums.assign(2 * C + 1, 0.0);
  s.sums[2 * C] = static_cast<double>(p.count());
  const obn::Plan plan = obn::plan_for(p, num_threads(), obn::Pass::backward);
  obn::BackwardOutputs out{gamma, invstd, nullptr, nullptr, BackwardStats::batch};
  if (p.elements() > 0) {
    out.local_sum_dy = s.sums.data();
    out.local_sum_dy_xc = s.sums.data() + C;
    if (plan.strategy == obn::Strategy::rows) {
      obn::backward_rows(p, plan, src, diff_dst, nullptr, mean, true, out);
    } else {
      obn::backward_channels_first(p, plan, src, diff_dst, nullptr, mean, true, out);
    }
  }
  comm.allreduce_sum(s.sums.data(), s.sums.size());
  const double count = s.sums[2 * C];
  const double* sum_dy = s.sums.data();
  const double* sum_dy_xc = s.sums.data() + C;
  for (std::size_t c = 0; c < C; ++c) {
    if (diff_beta) diff_beta[c] = static_cast<float>(sum_dy[c]);
    if (diff_gamma) diff_gamma[c] = static_cast<float>(sum_dy_xc[c] * invstd[c]);
  }
  if (!diff_src || p.elements() == 0) return;
  // dx with the global sums and count.
  out.local_sum_dy = out.local_sum_dy_xc = nullptr;
  out.global_sum_dy = sum_dy;
  out.global_sum_dy_xc = sum_dy_xc;
  out.global_count = count;
  if (plan.strategy == obn::Strategy::rows) {
    obn::backward_rows(p, plan, src, diff_dst, diff_src, mean, false, out);
  } else {
    obn::backward_channels_first(p, plan, src, diff_dst, diff_src, mean, false, out);
  }
}

}  // namespace ops::sync_batch_norm

void sync_batch_norm_forward_training(comm::Communicator& comm, const TensorDesc& src_desc, const void* src,
                                      const TensorDesc& dst_desc, void* dst, const float* gamma,
                                      const float* beta, float* save_mean, float* save_invstd,
                                      const RunningStats& running, const BatchNormConfig& config) {
  ops::sync_batch_norm::forward_training(comm, src_desc, src, dst_desc, dst, gamma, beta, save_mean,
                                         save_invstd, running, config, nullptr);
}

void sync_batch_norm_backward(comm::Communicator& comm, const TensorDesc& src_desc, const void* src,
                              const TensorDesc& diff_dst_desc, const void* diff_dst,
                              const TensorDesc& diff_src_desc, void* diff_src, const float* gamma,
                              const float* mean, const float* invstd, float* diff_gamma, float* diff_beta) {
  ops::sync_batch_norm::backward(comm, src_desc, src, diff_dst_desc, diff_dst, diff_src_desc, diff_src, gamma,
                                 mean, invstd, diff_gamma, diff_beta, nullptr);
}

}  // namespace bnorm

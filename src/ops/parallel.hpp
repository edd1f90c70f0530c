// Threading and scratch-memory helpers for the ops: a team of OpenMP threads
// running a fixed set of logical workers with barriers between phases, and a
// per-thread scratch buffer that grows only when a larger problem arrives.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace bnorm::ops {

/// The calling thread's view of a team running `workers` logical workers.
/// A worker is a fixed part of the problem (DESIGN.md section 4: one static
/// partition reused across phases). When OpenMP gives fewer threads than
/// workers (nested parallelism), each thread runs several workers in turn,
/// so results never depend on the team size.
struct Team {
  int thread = 0;
  int threads = 1;
  int workers = 1;

  template <class F>
  void for_each_worker(F&& f) const {
    for (int w = thread; w < workers; w += threads) f(w);
  }
  /// Waits until every thread of the team has finished the phase before.
  void barrier() const {
    if (threads > 1) {
#pragma omp barrier
    }
  }
};

/// Calls body(team) on `workers` threads (or inline when workers <= 1).
template <class F>
void run_team(int workers, F&& body) {
  if (workers <= 1) {
    body(Team{});
    return;
  }
#pragma omp parallel num_threads(workers)
  { body(Team{omp_get_thread_num(), omp_get_num_threads(), workers}); }
}

/// Start of worker w's share of [0, total) split into `workers` near-equal parts.
/// The first min(w, total % workers) parts get one extra element.
inline std::int64_t split_point(std::int64_t total, int workers, int w) noexcept {
  const std::int64_t base = total / workers, extra = total % workers;
  return base * w + std::min<std::int64_t>(w, extra);
}

/// Lays out several arrays in one scratch block, each 64-byte aligned.
class ScratchLayout {
 public:
  /// Reserves count objects of T; returns their byte offset.
  template <class T>
  std::size_t add(std::size_t count) {
    const std::size_t offset = (bytes_ + 63) / 64 * 64;
    bytes_ = offset + count * sizeof(T);
    return offset;
  }
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  std::size_t bytes_ = 0;
};

/// A 64-byte aligned buffer of at least `bytes` owned by the calling thread.
/// It is reused by the next call on the same thread, so an op takes it once,
/// before its parallel region. Allocates only when `bytes` exceeds every
/// earlier request on this thread.
std::byte* thread_scratch(std::size_t bytes);

template <class T>
T* scratch_at(std::byte* base, std::size_t offset) noexcept {
  return reinterpret_cast<T*>(base + offset);
}

/// Size of the L2 cache of one core in bytes (1 MiB when unknown).
std::size_t l2_cache_bytes() noexcept;

}  // namespace bnorm::ops

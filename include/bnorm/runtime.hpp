// Process-wide execution settings: thread count and the instruction set in use.
#pragma once

#include <string>
#include <vector>

namespace bnorm {

/// Threads bnorm's kernels use (OpenMP). Defaults to the calling thread's
/// omp_get_max_threads(), i.e. OMP_NUM_THREADS or the number of cores. The
/// functions may be called from several threads at once (docs/OPS.md,
/// "Threads and instruction sets"); their results depend on this count in
/// the last bits.
int num_threads() noexcept;

/// Sets the thread count for later calls (also while others run); n <= 0
/// restores the default.
void set_num_threads(int n) noexcept;

/// Name of the instruction set the optimized kernels dispatch to on this
/// machine, e.g. "AVX3" (AVX-512), "AVX2", "SSE4" or "SCALAR" (portable;
/// "EMU128" with a Highway that builds that instead).
std::string isa();

/// Every instruction set compiled into this build that this CPU can run,
/// best first.
std::vector<std::string> supported_isas();

/// Restricts dispatch to the named instruction set (one of supported_isas())
/// or, for an empty name, restores automatic selection. Throws
/// Error(invalid_argument) for an unknown or unsupported name, after
/// restoring automatic selection. Meant for testing and benchmarking; affects
/// the whole process. Not to be called while kernels run: the dispatcher
/// could then stay on another instruction set than isa() reports.
void set_isa(const std::string& name);

}  // namespace bnorm

#include "bnorm/runtime.hpp"

#include <omp.h>

#include <atomic>

#include "bnorm/error.hpp"
#include "hwy/highway.h"
#include "hwy/targets.h"

namespace bnorm {
namespace {
std::atomic<int> g_threads{0};  // 0 = OpenMP's default
}  // namespace

int num_threads() noexcept {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

void set_num_threads(int n) noexcept { g_threads.store(n > 0 ? n : 0, std::memory_order_relaxed); }

// This file is compiled with the same HWY_DISABLED_TARGETS as the kernels, so
// HWY_TARGETS here lists exactly the instruction sets compiled into them.
std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets())
    names.emplace_back(hwy::TargetName(target));
  return names;
}

std::string isa() {
  const auto targets = hwy::SupportedAndGeneratedTargets();
  return targets.empty() ? std::string("none") : std::string(hwy::TargetName(targets.front()));
}

void set_isa(const std::string& name) {
  if (name.empty()) {
    hwy::SetSupportedTargetsForTest(0);
    hwy::GetChosenTarget().Update(hwy::SupportedTargets());
    return;
  }
  hwy::SetSupportedTargetsForTest(0);  // consider every target the CPU has
  std::string known;
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    if (name == hwy::TargetName(target)) {
      hwy::SetSupportedTargetsForTest(target);
      hwy::GetChosenTarget().Update(hwy::SupportedTargets());
      return;
    }
    known += known.empty() ? "" : ", ";
    known += hwy::TargetName(target);
  }
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
  throw Error(ErrorKind::invalid_argument,
              "isa '" + name + "': not an instruction set this build and CPU support (" + known + ")");
}

}  // namespace bnorm

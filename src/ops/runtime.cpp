#include "bnorm/runtime.hpp"

#include <omp.h>

#include <atomic>

#include "bnorm/error.hpp"
#include "hwy/highway.h"
#include "hwy/targets.h"
#include "kernels/common/native_bf16.hpp"

namespace bnorm::kernels {

bool cpu_has_avx512_bf16() noexcept {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();  // this runs from a static initializer, maybe before libgcc's own
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

bool native_bf16 = cpu_has_avx512_bf16();

}  // namespace bnorm::kernels

namespace bnorm {
namespace {
std::atomic<int> g_threads{0};  // 0 = OpenMP's default
}  // namespace

int num_threads() noexcept {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

void set_num_threads(int n) noexcept { g_threads.store(n > 0 ? n : 0, std::memory_order_relaxed); }

// "AVX3" with AVX512-BF16's rounding instruction (kernels/common/native_bf16.hpp).
constexpr const char* kAvx3Bf16 = "AVX3_BF16";

// This file is compiled with the same HWY_DISABLED_TARGETS as the kernels, so
// HWY_TARGETS here lists exactly the instruction sets compiled into them.
std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (const std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    if (target == HWY_AVX3 && kernels::cpu_has_avx512_bf16()) names.emplace_back(kAvx3Bf16);
    names.emplace_back(hwy::TargetName(target));
  }
  return names;
}

std::string isa() {
  const auto targets = hwy::SupportedAndGeneratedTargets();
  if (targets.empty()) return "none";
  if (targets.front() == HWY_AVX3 && kernels::native_bf16) return kAvx3Bf16;
  return hwy::TargetName(targets.front());
}

void set_isa(const std::string& name) {
  hwy::SetSupportedTargetsForTest(0);  // consider every target the CPU has
  if (name.empty()) {
    kernels::native_bf16 = kernels::cpu_has_avx512_bf16();
    hwy::GetChosenTarget().Update(hwy::SupportedTargets());
    return;
  }
  std::string known;
  for (const std::string& candidate : supported_isas()) {
    if (name == candidate) {
      const bool bf16 = name == kAvx3Bf16;
      for (const std::int64_t target : hwy::SupportedAndGeneratedTargets())
        if (bf16 ? target == HWY_AVX3 : name == hwy::TargetName(target))
          hwy::SetSupportedTargetsForTest(target);
      kernels::native_bf16 = bf16;
      hwy::GetChosenTarget().Update(hwy::SupportedTargets());
      return;
    }
    known += known.empty() ? "" : ", ";
    known += candidate;
  }
  kernels::native_bf16 = kernels::cpu_has_avx512_bf16();
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
  throw Error(ErrorKind::invalid_argument,
              "isa '" + name + "': not an instruction set this build and CPU support (" + known + ")");
}

}  // namespace bnorm

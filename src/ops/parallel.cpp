#include "ops/parallel.hpp"

#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <new>

namespace bnorm::ops {
namespace {
struct AlignedFree {
  void operator()(std::byte* p) const noexcept { std::free(p); }
};
}  // namespace

std::byte* thread_scratch(std::size_t bytes) {
  thread_local std::unique_ptr<std::byte, AlignedFree> buffer;
  thread_local std::size_t capacity = 0;
  if (bytes > capacity) {
    const std::size_t rounded = (bytes + 4095) / 4096 * 4096;
    buffer.reset(static_cast<std::byte*>(std::aligned_alloc(64, rounded)));
    if (!buffer) {
      capacity = 0;
      throw std::bad_alloc();
    }
    capacity = rounded;
  }
  return buffer.get();
}

std::size_t l2_cache_bytes() noexcept {
  static const std::size_t bytes = [] {
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return l2 > 0 ? static_cast<std::size_t>(l2) : std::size_t{1} << 20;
  }();
  return bytes;
}

}  // namespace bnorm::ops

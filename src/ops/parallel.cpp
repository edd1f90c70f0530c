#include "ops/parallel.hpp"

#include <unistd.h>

#include <memory>
#include <new>

namespace bnorm::ops {
namespace {
struct AlignedDelete {
  void operator()(std::byte* p) const noexcept { ::operator delete(p, std::align_val_t{64}); }
};
}  // namespace

std::byte* thread_scratch(std::size_t bytes) {
  thread_local std::unique_ptr<std::byte, AlignedDelete> buffer;
  thread_local std::size_t capacity = 0;
  if (bytes > capacity) {
    const std::size_t rounded = (bytes + 4095) / 4096 * 4096;
    buffer.reset();
    capacity = 0;
    buffer.reset(static_cast<std::byte*>(::operator new(rounded, std::align_val_t{64})));
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

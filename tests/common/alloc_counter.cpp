// glibc lets a program define malloc and friends; these count, then forward
// to glibc's own implementations.

#include "common/alloc_counter.hpp"

#include <atomic>
#include <cerrno>
#include <cstddef>

namespace {
std::atomic<long> g_allocations{0};
void count() noexcept { g_allocations.fetch_add(1, std::memory_order_relaxed); }
}  // namespace

extern "C" {
void* __libc_malloc(std::size_t);                   // NOLINT: glibc's allocator
void* __libc_calloc(std::size_t, std::size_t);      // NOLINT
void* __libc_realloc(void*, std::size_t);           // NOLINT
void* __libc_memalign(std::size_t, std::size_t);    // NOLINT

void* malloc(std::size_t n) noexcept {
  count();
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t size) noexcept {
  count();
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t n) noexcept {
  count();
  return __libc_realloc(p, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) noexcept {
  count();
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) noexcept {
  count();
  void* p = __libc_memalign(alignment, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
}

namespace bnorm::test {
long heap_allocations() noexcept { return g_allocations.load(std::memory_order_relaxed); }
}  // namespace bnorm::test

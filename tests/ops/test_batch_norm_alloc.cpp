// The hot path allocates nothing: after a first call has sized the per-thread
// scratch, repeated calls of every function, layout and plan make no heap
// allocation. Counts global operator new (bnorm's only allocator) in this
// test binary.

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "common/test_util.hpp"

namespace {
std::atomic<long> g_allocations{0};
}

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t a) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::aligned_alloc(static_cast<std::size_t>(a), (n + static_cast<std::size_t>(a) - 1) /
                                                                    static_cast<std::size_t>(a) *
                                                                    static_cast<std::size_t>(a)))
    return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace bnorm::test {
namespace {

TEST(BatchNormAllocations, NoneAfterTheFirstCall) {
  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    for (const auto& dims : {std::vector<std::int64_t>{1, 64, 1, 1}, std::vector<std::int64_t>{2, 64, 7, 7},
                             std::vector<std::int64_t>{8, 2048}, std::vector<std::int64_t>{16, 32, 32, 32},
                             std::vector<std::int64_t>{64, 3, 64, 64}}) {
      const TensorDesc d(DType::bf16, layout, std::span<const std::int64_t>(dims));
      SCOPED_TRACE(d.str());
      const auto C = static_cast<std::size_t>(d.channels());
      Buffer x(d), y(d), dy(d), dx(d);
      fill_normal(x, 1);
      fill_normal(dy, 2);
      std::vector<float> gamma(C, 1.0f), beta(C, 0.0f), mean(C), invstd(C), rm(C, 0.0f), rv(C, 1.0f), dg(C), db(C);
      std::int64_t tracked = 0;
      const bool can_train = d.batch() * d.spatial() > 1;
      auto all = [&] {
        if (can_train)
          batch_norm_forward_training(d, x.data(), d, y.data(), gamma.data(), beta.data(), mean.data(),
                                      invstd.data(), RunningStats{rm.data(), rv.data(), &tracked});
        batch_norm_forward_inference(d, x.data(), d, y.data(), gamma.data(), beta.data(), rm.data(), rv.data());
        batch_norm_backward(d, x.data(), d, dy.data(), d, dx.data(), gamma.data(), rm.data(), rv.data(), dg.data(),
                            db.data());
      };
      all();  // sizes the scratch
      const long before = g_allocations.load();
      for (int i = 0; i < 3; ++i) all();
      EXPECT_EQ(g_allocations.load() - before, 0);
    }
  }
}

}  // namespace
}  // namespace bnorm::test

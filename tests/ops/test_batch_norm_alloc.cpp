// The hot path allocates nothing: after a first call has sized the per-thread
// scratch, repeated calls of every function, layout and plan make no heap
// allocation (common/alloc_counter.hpp counts every heap allocation).

#include <gtest/gtest.h>

#include <cstdlib>
#include <vector>

#include "common/alloc_counter.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

std::vector<int>* volatile g_sink;  // keeps the compiler from eliding new/delete

TEST(AllocationCounter, SeesOperatorNewAndMalloc) {
  // Else the tests below would prove nothing.
  const long before = heap_allocations();
  g_sink = new std::vector<int>(3);
  delete g_sink;
  const long after_new = heap_allocations();
  EXPECT_EQ(after_new - before, 2);  // the vector and its storage
  void* volatile p = std::malloc(16);
  std::free(p);
  EXPECT_EQ(heap_allocations() - after_new, 1);
}

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
      const long before = heap_allocations();
      for (int i = 0; i < 3; ++i) all();
      EXPECT_EQ(heap_allocations() - before, 0);
    }
  }
}

}  // namespace
}  // namespace bnorm::test

// Layer norm and RMS norm allocate nothing per call: after a first call has
// sized the per-thread scratch, repeated forward and backward calls make no
// heap allocation.

#include <gtest/gtest.h>

#include <vector>

#include "common/alloc_counter.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

TEST(LayerNormAllocations, NoneAfterTheFirstCall) {

  for (const auto& dims : {std::vector<std::int64_t>{1, 64}, std::vector<std::int64_t>{7, 3, 17},
                           std::vector<std::int64_t>{64, 4096}, std::vector<std::int64_t>{512, 1000},
                           std::vector<std::int64_t>{2, 100000}}) {
    for (DType dt : {DType::f32, DType::bf16}) {
      const TensorDesc d(dt, Layout::channels_first, std::span<const std::int64_t>(dims));
      SCOPED_TRACE(d.str());
      const auto L = static_cast<std::size_t>(d.dim(d.rank() - 1));
      const auto R = static_cast<std::size_t>(d.elements()) / L;
      Buffer x(d), y(d), dy(d), dx(d);
      fill_normal(x, 1);
      fill_normal(dy, 2);
      std::vector<float> gamma(L, 1.0f), beta(L, 0.0f), mean(R), invstd(R), dg(L), db(L);
      auto all = [&] {
        layer_norm_forward(d, x.data(), d, y.data(), 1, gamma.data(), beta.data(), mean.data(), invstd.data());
        layer_norm_backward(d, x.data(), d, dy.data(), d, dx.data(), 1, gamma.data(), mean.data(),
                            invstd.data(), dg.data(), db.data());
        layer_norm_backward(d, x.data(), d, dy.data(), d, dx.data(), 1, gamma.data(), mean.data(),
                            invstd.data(), nullptr, nullptr);
        rms_norm_forward(d, x.data(), d, y.data(), 1, gamma.data(), invstd.data());
        rms_norm_backward(d, x.data(), d, dy.data(), d, dx.data(), 1, gamma.data(), invstd.data(), dg.data());
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

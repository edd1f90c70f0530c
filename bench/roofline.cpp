// The roofline of the benchmark: y = a*x + b over the same elements and
// dtype, streaming (non-temporal) stores, one static split across threads.
// It moves exactly what inference must (read x, write y), so a batch-norm
// direction's time divided by it says how close to the memory bound it is.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "roofline.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/common/simd_io-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm::bench::HWY_NAMESPACE {
namespace kn = bnorm::kernels::HWY_NAMESPACE;
namespace hn = hwy::HWY_NAMESPACE;

template <DType kType>
void AxpbT(const kn::Storage<kType>* x, kn::Storage<kType>* y, size_t n, float a, float b) {
  const kn::DF d;
  const kn::VF va = hn::Set(d, a), vb = hn::Set(d, b);
  kn::ForEachOutputVector<kType>(d, y, n, true, [&](size_t i, size_t count) {
    // bnorm's in-order passes prefetch ahead; so does the roofline, for the
    // dtypes where that makes it faster (16-bit: 10.5 -> 6.6 ms on
    // 64x256x56x56, 2 threads; f32 measured 1-4% slower with it).
    if constexpr (sizeof(kn::Storage<kType>) == 2) kn::PrefetchAhead(x, i, n);
    return hn::MulAdd(kn::LoadSomeAsF32<kType>(d, x + i, count, 0.0f), va, vb);
  });
  hwy::FlushStream();
}

void Axpb(DType dt, const void* x, void* y, size_t n, float a, float b) {
  switch (dt) {
    case DType::f32:
      return AxpbT<DType::f32>(static_cast<const float*>(x), static_cast<float*>(y), n, a, b);
    case DType::bf16:
      return AxpbT<DType::bf16>(static_cast<const std::uint16_t*>(x), static_cast<std::uint16_t*>(y), n, a,
                                b);
    case DType::f16:
      return AxpbT<DType::f16>(static_cast<const std::uint16_t*>(x), static_cast<std::uint16_t*>(y), n, a, b);
  }
}

}  // namespace bnorm::bench::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <omp.h>

#include "ops/parallel.hpp"
#include "peers.hpp"

namespace bnorm::bench {
HWY_EXPORT(Axpb);

namespace {
class Roofline final : public Impl {
 public:
  const char* name() const override { return "roofline"; }
  bool setup(const Case& c, Buffers& b, std::string*) override {
    dtype_ = c.desc.dtype();
    n_ = c.desc.elements();
    threads_ = c.threads;
    x_ = b.src;
    y_ = b.diff_src;  // never read by the others' checks
    return true;
  }
  void run() override {
    const std::size_t esize = size_of(dtype_);
#pragma omp parallel num_threads(threads_)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      // Split on 64-byte boundaries so each thread's stores stay aligned.
      const std::int64_t per_line = 64 / static_cast<std::int64_t>(esize);
      const std::int64_t lines = (n_ + per_line - 1) / per_line;
      const std::int64_t b = std::min(n_, ops::split_point(lines, nt, t) * per_line);
      const std::int64_t e = std::min(n_, ops::split_point(lines, nt, t + 1) * per_line);
      HWY_DYNAMIC_DISPATCH(Axpb)
      (dtype_, static_cast<const std::byte*>(x_) + b * static_cast<std::int64_t>(esize),
       static_cast<std::byte*>(y_) + b * static_cast<std::int64_t>(esize), static_cast<std::size_t>(e - b),
       1.0009765625f, 0.5f);
    }
  }

 private:
  DType dtype_ = DType::f32;
  std::int64_t n_ = 0;
  int threads_ = 1;
  const void* x_ = nullptr;
  void* y_ = nullptr;
};
}  // namespace

std::unique_ptr<Impl> make_roofline() { return std::make_unique<Roofline>(); }

}  // namespace bnorm::bench
#endif  // HWY_ONCE

// The machine's memory bandwidth as bnorm-bench sees it: a read-only pass,
// a write-only pass (non-temporal stores) and the roofline's read+write pass
// over the same bytes, per thread count. Explains the ratios: a direction
// that must read x twice cannot beat twice the read-only time, etc.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "bandwidth.cpp"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/common/simd_io-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm::bench::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
namespace kn = bnorm::kernels::HWY_NAMESPACE;

float ReadAll(const float* x, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t lanes = hn::Lanes(d);
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  size_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    // Prefetched as bnorm's in-order passes are (about 8% faster here).
    for (size_t j = 0; j < 4 * lanes; j += 64 / sizeof(float)) kn::PrefetchAhead(x, i + j, n);
    a0 = hn::Add(a0, hn::LoadU(d, x + i));
    a1 = hn::Add(a1, hn::LoadU(d, x + i + lanes));
    a2 = hn::Add(a2, hn::LoadU(d, x + i + 2 * lanes));
    a3 = hn::Add(a3, hn::LoadU(d, x + i + 3 * lanes));
  }
  float rest = 0.0f;
  for (; i < n; ++i) rest += x[i];
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)))) + rest;
}

void WriteAll(float* y, size_t n, float value) {
  const hn::ScalableTag<float> d;
  const size_t lanes = hn::Lanes(d);
  const auto v = hn::Set(d, value);
  size_t i = 0;
  for (; i < n && reinterpret_cast<std::uintptr_t>(y + i) % (lanes * sizeof(float)) != 0; ++i) y[i] = value;
  for (; i + lanes <= n; i += lanes) hn::Stream(v, d, y + i);
  for (; i < n; ++i) y[i] = value;
  hwy::FlushStream();
}

}  // namespace bnorm::bench::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "ops/parallel.hpp"
#include "peers.hpp"

namespace bnorm::bench {
HWY_EXPORT(ReadAll);
HWY_EXPORT(WriteAll);

namespace {

template <class F>
double best_seconds(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
  }
  return best;
}

}  // namespace

void print_bandwidth(std::size_t bytes, const std::vector<int>& thread_counts, int reps) {
  const std::size_t n = bytes / sizeof(float);
  float* x = static_cast<float*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096));
  float* y = static_cast<float*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096));
  if (!x || !y) {
    std::free(x);
    std::free(y);
    return;
  }
  std::printf("memory bandwidth over %.0f MB (best of %d; read+write counts both directions):\n",
              static_cast<double>(bytes) / 1e6, reps);
  std::printf("%8s %14s %15s %16s\n", "threads", "read GB/s", "NT write GB/s", "read+write GB/s");
  for (int threads : thread_counts) {
    auto parallel = [&](auto&& body) {
#pragma omp parallel num_threads(threads)
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const std::int64_t b = ops::split_point(static_cast<std::int64_t>(n / 64), nt, t) * 64;
        const std::int64_t e = ops::split_point(static_cast<std::int64_t>(n / 64), nt, t + 1) * 64;
        body(static_cast<std::size_t>(b), static_cast<std::size_t>(e - b));
      }
    };
    parallel([&](std::size_t b, std::size_t len) {
      HWY_DYNAMIC_DISPATCH(WriteAll)(x + b, len, 1.0f);
    });  // first touch
    volatile float sink = 0.0f;
    const double read = best_seconds(reps, [&] {
      parallel(
          [&](std::size_t b, std::size_t len) { sink = sink + HWY_DYNAMIC_DISPATCH(ReadAll)(x + b, len); });
    });
    const double write = best_seconds(reps, [&] {
      parallel([&](std::size_t b, std::size_t len) { HWY_DYNAMIC_DISPATCH(WriteAll)(y + b, len, 2.0f); });
    });
    auto roofline = make_roofline();
    Buffers buffers;
    buffers.src = x;
    buffers.diff_src = y;
    Case c;
    c.desc = TensorDesc(DType::f32, Layout::channels_first, {1, 1, static_cast<std::int64_t>(n)});
    c.threads = threads;
    std::string why;
    roofline->setup(c, buffers, &why);
    const double both = best_seconds(reps, [&] { roofline->run(); });
    const double gb = static_cast<double>(bytes) / 1e9;
    std::printf("%8d %14.1f %15.1f %16.1f\n", threads, gb / read, gb / write, 2 * gb / both);
  }
  std::free(x);
  std::free(y);
}

}  // namespace bnorm::bench
#endif  // HWY_ONCE

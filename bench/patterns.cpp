// Bare loops of the memory-access patterns batch norm's channels-first
// passes can take, timed beside the roofline and bnorm itself: what each
// pattern costs on this machine before any normalization arithmetic. They
// say which target a pattern can reach at all: a direction cannot beat the
// bare loop of the pattern it walks. f32, one FMA (and for sums, an add and
// an FMA) per element, the same 4 KiB software prefetch as bnorm's in-order
// passes.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "patterns.cpp"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/common/simd_io-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm::bench::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
namespace kn = bnorm::kernels::HWY_NAMESPACE;

// Over n floats (n a multiple of the vector, y aligned to it): y = a*x + b
// * g (g may be null: y = a*x + b) with streaming stores; when sx is not
// null, also s += {sum sg, sum sg * sx} over the next run (sx, sg) of the
// same length, walked in the same loop. Reads prefetch 4 KiB ahead.
void Walk(const float* x, const float* g, float* y, size_t n, const float* sx, const float* sg, double* s) {
  const hn::ScalableTag<float> d;
  const size_t lanes = hn::Lanes(d);
  const auto a = hn::Set(d, 1.0009765625f), b = hn::Set(d, 0.5f);
  auto s0 = hn::Zero(d), s1 = hn::Zero(d);
  for (size_t i = 0; i < n; i += lanes) {
    if (y) {
      kn::PrefetchAhead(x, i, n);
      if (g) kn::PrefetchAhead(g, i, n);
      const auto xv = hn::Load(d, x + i);
      hn::Stream(g ? hn::MulAdd(a, xv, hn::Mul(b, hn::Load(d, g + i))) : hn::MulAdd(a, xv, b), d, y + i);
    }
    if (sx) {
      kn::PrefetchAhead(sx, i, n);
      if (sg) kn::PrefetchAhead(sg, i, n);
      const auto xv = hn::Load(d, sx + i);
      const auto gv = sg ? hn::Load(d, sg + i) : xv;
      s0 = hn::Add(s0, gv);
      s1 = hn::MulAdd(gv, xv, s1);
    }
  }
  if (sx) {
    s[0] += kn::SumLanesInDouble(d, s0);
    s[1] += kn::SumLanesInDouble(d, s1);
  }
}

void Fence() { hwy::FlushStream(); }

}  // namespace bnorm::bench::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ops/parallel.hpp"
#include "peers.hpp"

namespace bnorm::bench {
HWY_EXPORT(Walk);
HWY_EXPORT(Fence);

namespace {

// One pattern: body(thread, threads, shape) run by each of `threads`
// OpenMP threads.
struct Pattern {
  const char* name;
  const char* what;
  bool backward;  // reads dy beside x
};

const Pattern kPatterns[] = {
    {"roofline", "the main table's roofline: y = a*x + b, one stream (x -> y)", false},
    {"train-pipelined", "per channel N runs: y of channel c from cache + sums of c+1 from DRAM", false},
    {"train-turns", "per channel N runs: sums, then y (x again, from cache)", false},
    {"bwd-one-stream", "dx = a*x + b*dy, one stream: backward's traffic with no sums", true},
    {"bwd-runs", "the same per channel, N runs of S: no sums, no second read", true},
    {"bwd-pipelined", "per channel N runs: dx of c from cache + sums of c+1 from DRAM", true},
    {"bwd-turns", "per channel N runs: sums, then dx (x, dy again, from cache)", true},
    {"bwd-two-reads", "sums over the thread's range in memory order, barrier, dx over it", true},
    {"planes-pipelined", "per plane in memory order: y of plane p from cache + sums of p+1 from DRAM", false},
    {"planes-bwd-pipe", "the same with dy: dx of plane p from cache + sums of p+1 from DRAM", true},
    {"bnorm-training", "bnorm's batch norm, forward training, on the same data", false},
    {"bnorm-backward", "bnorm's batch norm, backward, on the same data", true},
    {"bnorm-in-training", "bnorm's instance norm (one plane per instance), forward training", false},
    {"bnorm-in-backward", "bnorm's instance norm, backward", true},
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

void print_patterns(const std::vector<std::string>& shapes, const std::vector<int>& thread_counts, int reps) {
  std::printf(
      "bare access patterns, f32 channels-first (medians of %d interleaved repetitions; x roof = time / "
      "roofline time):\n",
      reps);
  for (const Pattern& p : kPatterns) std::printf("  %-18s %s\n", p.name, p.what);
  std::printf("%-18s %-16s %4s %10s %8s\n", "pattern", "shape", "thr", "ms", "x roof");
  for (const std::string& shape : shapes) {
    std::int64_t dims[3] = {0, 0, 1};
    int k = 0;
    std::int64_t prod_s = 1;
    for (std::size_t pos = 0, next = 0; next != std::string::npos; pos = next + 1) {
      next = shape.find('x', pos);
      const std::int64_t v = std::stoll(shape.substr(pos, next == std::string::npos ? next : next - pos));
      if (k < 2) {
        dims[k++] = v;
      } else {
        prod_s *= v;
      }
    }
    const std::int64_t N = dims[0], C = dims[1], S = prod_s;
    const std::size_t n = static_cast<std::size_t>(N * C * S),
                      bytes = (n * sizeof(float) + 4095) / 4096 * 4096;
    auto* x = static_cast<float*>(std::aligned_alloc(4096, bytes));
    auto* g = static_cast<float*>(std::aligned_alloc(4096, bytes));
    auto* y = static_cast<float*>(std::aligned_alloc(4096, bytes));
    if (!x || !g || !y || S % 16 != 0) {
      std::printf("%-16s %-16s skipped (allocation failed, or S not a multiple of 16)\n", "-", shape.c_str());
      std::free(x);
      std::free(g);
      std::free(y);
      continue;
    }
    for (std::size_t i = 0; i < n; ++i) {
      x[i] = static_cast<float>(i % 97) * 0.01f;
      g[i] = static_cast<float>(i % 89) * 0.01f;
      y[i] = 0.0f;
    }
    for (int threads : thread_counts) {
      auto roofline = make_roofline();
      Buffers buffers;
      buffers.src = x;
      buffers.diff_src = y;
      Case c;
      c.desc = TensorDesc(DType::f32, Layout::channels_first, {N, C, S});
      c.threads = threads;
      std::string why;
      roofline->setup(c, buffers, &why);
      // bnorm itself beside the bare loops.
      set_all_threads(threads);
      const auto uC = static_cast<std::size_t>(C);
      buffers.dst = y;
      buffers.diff_dst = g;
      fill_parameters(buffers, uC, static_cast<std::size_t>(N) * uC, uC);
      // bnorm's batch and instance norm, training and backward.
      std::unique_ptr<Impl> own[4];
      bool own_ok[4];
      for (int i = 0; i < 4; ++i) {
        own[i] = make_bnorm();
        c.op = i < 2 ? Op::batch_norm : Op::instance_norm;
        c.direction = i % 2 == 0 ? Direction::forward_training : Direction::backward;
        own_ok[i] = own[i]->setup(c, buffers, &why);
      }
      auto own_index = [](const std::string& name) {
        const char* names[] = {"bnorm-training", "bnorm-backward", "bnorm-in-training", "bnorm-in-backward"};
        for (int i = 0; i < 4; ++i)
          if (name == names[i]) return i;
        return -1;
      };
      std::vector<std::vector<double>> times(std::size(kPatterns));
      double sink = 0.0;
      for (int rep = 0; rep < reps; ++rep) {
        for (std::size_t k2 = 0; k2 < std::size(kPatterns); ++k2) {
          const std::string name = kPatterns[k2].name;
          const auto t0 = std::chrono::steady_clock::now();
          if (name == "roofline" || own_index(name) >= 0) {
            if (name == "roofline") roofline->run();
            if (const int i = own_index(name); i >= 0 && own_ok[i]) own[i]->run();
            times[k2].push_back(
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
            continue;
          }
#pragma omp parallel num_threads(threads) reduction(+ : sink)
          {
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();
            const std::int64_t c0 = ops::split_point(C, nt, t), c1 = ops::split_point(C, nt, t + 1);
            const std::int64_t p0 = ops::split_point(N * C, nt, t), p1 = ops::split_point(N * C, nt, t + 1);
            double s[2] = {0.0, 0.0};
            auto walk = [&](const float* wx, const float* wg, float* wy, std::int64_t len, const float* sx,
                            const float* sg) {
              HWY_DYNAMIC_DISPATCH(Walk)(wx, wg, wy, static_cast<std::size_t>(len), sx, sg, s);
            };
            const bool bwd = kPatterns[k2].backward;
            const float* gb = bwd ? g : nullptr;
            auto run = [&](std::int64_t c, std::int64_t nn) { return (nn * C + c) * S; };
            if (name == "bwd-one-stream") {
              walk(x + p0 * S, gb ? gb + p0 * S : nullptr, y + p0 * S, (p1 - p0) * S, nullptr, nullptr);
            } else if (name == "bwd-runs") {
              for (std::int64_t c = c0; c < c1; ++c)
                for (std::int64_t nn = 0; nn < N; ++nn)
                  walk(x + run(c, nn), g + run(c, nn), y + run(c, nn), S, nullptr, nullptr);
            } else if (name == "train-turns" || name == "bwd-turns") {
              for (std::int64_t c = c0; c < c1; ++c) {
                for (std::int64_t nn = 0; nn < N; ++nn)
                  walk(nullptr, nullptr, nullptr, S, x + run(c, nn), gb ? gb + run(c, nn) : nullptr);
                for (std::int64_t nn = 0; nn < N; ++nn)
                  walk(x + run(c, nn), gb ? gb + run(c, nn) : nullptr, y + run(c, nn), S, nullptr, nullptr);
              }
            } else if (name == "train-pipelined" || name == "bwd-pipelined") {
              for (std::int64_t nn = 0; c0 < c1 && nn < N; ++nn)
                walk(nullptr, nullptr, nullptr, S, x + run(c0, nn), gb ? gb + run(c0, nn) : nullptr);
              for (std::int64_t c = c0; c < c1; ++c)
                for (std::int64_t nn = 0; nn < N; ++nn) {
                  const std::int64_t o = run(c, nn);
                  const bool more = c + 1 < c1;
                  walk(x + o, gb ? gb + o : nullptr, y + o, S, more ? x + o + S : nullptr,
                       more && gb ? gb + o + S : nullptr);
                }
            } else if (name == "planes-pipelined" || name == "planes-bwd-pipe") {
              const float* gp = gb ? gb + p0 * S : nullptr;
              if (p1 > p0) walk(nullptr, nullptr, nullptr, S, x + p0 * S, gp);
              for (std::int64_t q = p0; q < p1; ++q) {
                const std::int64_t o = q * S;
                const bool more = q + 1 < p1;
                walk(x + o, gb ? gb + o : nullptr, y + o, S, more ? x + o + S : nullptr,
                     more && gb ? gb + o + S : nullptr);
              }
            } else {  // bwd-two-reads
              walk(nullptr, nullptr, nullptr, (p1 - p0) * S, x + p0 * S, g + p0 * S);
#pragma omp barrier
              walk(x + p0 * S, g + p0 * S, y + p0 * S, (p1 - p0) * S, nullptr, nullptr);
            }
            HWY_DYNAMIC_DISPATCH(Fence)();
            sink += s[0];
          }
          const auto t1 = std::chrono::steady_clock::now();
          times[k2].push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        }
      }
      const double roof = median(times[0]);
      for (std::size_t k2 = 0; k2 < std::size(kPatterns); ++k2) {
        const std::string name = kPatterns[k2].name;
        if (const int i = own_index(name); i >= 0 && !own_ok[i]) {
          std::printf("%-18s %-16s %4d %10s %8s\n", kPatterns[k2].name, shape.c_str(), threads, "n/a", "-");
          continue;
        }
        const double ms = median(times[k2]);
        std::printf("%-18s %-16s %4d %10.3f %8.2f\n", kPatterns[k2].name, shape.c_str(), threads, ms,
                    ms / roof);
      }
      if (sink == 1234.5) std::printf(" ");  // keeps the sums
    }
    std::free(x);
    std::free(g);
    std::free(y);
  }
  std::printf("\n");
}

}  // namespace bnorm::bench
#endif  // HWY_ONCE

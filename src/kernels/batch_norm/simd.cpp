// Optimized batch-norm building blocks, compiled once per instruction set by
// Highway (foreach_target.h) and chosen at run time by HWY_DYNAMIC_DISPATCH.
// Declarations and contracts: kernels.hpp.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/batch_norm/simd.cpp"
#include <cstring>
#include <type_traits>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/batch_norm/kernels.hpp"
#include "kernels/batch_norm/simd-inl.h"
#include "kernels/common/simd_io-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm::kernels::HWY_NAMESPACE {
namespace {

using batch_norm::cyclic_period;
using batch_norm::kCyclicPad;
using batch_norm::Rows;
using batch_norm::Runs;
using batch_norm::ZeroVariance;

// ---------------------------------------------------------------- channels-first runs

// A channel's runs lie far apart (a sample's worth of data), so the hardware
// prefetcher starts cold on each; fetching the start of a run a little ahead
// hides that ramp. Short runs need more of them ahead to cover DRAM's
// latency: about 4 KiB over the `streams` read, 2 to 8 runs (measured on
// 256x1024x14x14, 2 threads: training bf16 (392-byte runs) 19.5 -> 11.7 ms,
// f32 18.9 -> 17.1; backward bf16 27.9 -> 23.5; f32 backward, 2 runs
// either way, was 9% slower at 5).
template <DType kType>
HWY_INLINE std::int64_t RunsAhead(std::int64_t len, std::int64_t streams) {
  const std::int64_t bytes = std::max<std::int64_t>(1, len * streams * static_cast<std::int64_t>(sizeof(Storage<kType>)));
  return std::clamp<std::int64_t>(4096 / bytes, 2, 8);
}
// Prefetches the cache lines of p[0, len), at most 1 KiB of them, into L1
// (kLocality 3) or L2 only (2).
template <DType kType, int kLocality = 3>
HWY_INLINE void PrefetchSpan(const Storage<kType>* p, size_t len) {
  const size_t bytes = std::min<size_t>(len * sizeof(Storage<kType>), 1024);
  for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch(reinterpret_cast<const std::uint8_t*>(p) + b, 0, kLocality);
}
// A gate's mask is read in order with the data: nothing to prefetch.
template <DType kType, int kLocality = 3>
HWY_INLINE void PrefetchSpan(BitsIn, size_t) {}

// Sums of term_a(v) and term_b(v) over the runs, v the f32 values (padded
// lanes of tails load as `fill`, for which both terms must give 0). Two
// accumulators of each so the additions pipeline, folded into double every
// kAddsPerFlush rounds.
template <DType kType, class TermA, class TermB>
HWY_INLINE void TwoSumsOverRuns(const Storage<kType>* HWY_RESTRICT x, Runs runs, float fill,
                                const TermA& term_a, const TermB& term_b, double out[2]) {
  const DF d;
  const size_t lanes = hn::Lanes(d);
  VF a0 = hn::Zero(d), a1 = hn::Zero(d), b0 = hn::Zero(d), b1 = hn::Zero(d);
  DoubleLanes sum_a(d), sum_b(d);
  size_t rounds = 0;
  const std::int64_t ahead = RunsAhead<kType>(runs.len, 1);
  for (std::int64_t r = 0; r < runs.count; ++r) {
    const Storage<kType>* HWY_RESTRICT p = x + r * runs.stride;
    const size_t n = static_cast<size_t>(runs.len);
    if (r + ahead < runs.count) PrefetchSpan<kType>(x + (r + ahead) * runs.stride, n);
    size_t i = 0;
    for (; i + 2 * lanes <= n; i += 2 * lanes) {
      const VF v0 = LoadAsF32<kType>(d, p + i), v1 = LoadAsF32<kType>(d, p + i + lanes);
      a0 = hn::Add(a0, term_a(v0));
      a1 = hn::Add(a1, term_a(v1));
      b0 = hn::Add(b0, term_b(v0));
      b1 = hn::Add(b1, term_b(v1));
      if (HWY_UNLIKELY(++rounds == kAddsPerFlush)) {
        sum_a.Fold(d, hn::Add(a0, a1));
        sum_b.Fold(d, hn::Add(b0, b1));
        a0 = a1 = b0 = b1 = hn::Zero(d);
        rounds = 0;
      }
    }
    // At most one full and one partial vector remain: one addition each.
    if (i + lanes <= n) {
      const VF v = LoadAsF32<kType>(d, p + i);
      a0 = hn::Add(a0, term_a(v));
      b0 = hn::Add(b0, term_b(v));
      i += lanes;
    }
    if (i < n) {
      const VF v = LoadPartialAsF32<kType>(d, p + i, n - i, fill);
      a1 = hn::Add(a1, term_a(v));
      b1 = hn::Add(b1, term_b(v));
    }
    if (++rounds >= kAddsPerFlush) {
      sum_a.Fold(d, hn::Add(a0, a1));
      sum_b.Fold(d, hn::Add(b0, b1));
      a0 = a1 = b0 = b1 = hn::Zero(d);
      rounds = 0;
    }
  }
  sum_a.Fold(d, hn::Add(a0, a1));
  sum_b.Fold(d, hn::Add(b0, b1));
  out[0] = sum_a.Total(d);
  out[1] = sum_b.Total(d);
}

template <DType kType>
void ShiftedSumsT(const Storage<kType>* x, Runs runs, float pivot, double out[2]) {
  const DF d;
  const VF vp = hn::Set(d, pivot);
  TwoSumsOverRuns<kType>(
      x, runs, pivot, [vp](VF v) HWY_ATTR { return hn::Sub(v, vp); },
      [vp](VF v) HWY_ATTR {
        const VF e = hn::Sub(v, vp);
        return hn::Mul(e, e);
      },
      out);
}

template <DType kType>
double SumSqCenteredT(const Storage<kType>* x, Runs runs, float center) {
  const DF d;
  const VF vc = hn::Set(d, center);
  double out[2];
  // One useful sum: the second term is the same, which costs nothing here.
  auto sq = [vc](VF v) HWY_ATTR {
    const VF e = hn::Sub(v, vc);
    return hn::Mul(e, e);
  };
  TwoSumsOverRuns<kType>(
      x, runs, center, sq, [](VF v) HWY_ATTR { return hn::Zero(DF()) * v; }, out);
  return out[0];
}

// Exact two-pass moments of contiguous blocks (small enough to stay in L1
// or L2 between the passes): the sum of w = x - pivot (the block's first
// value), then of (w - mean(w))^2, in f32 lanes folded into double every
// kAddsPerFlush vectors. The pivot keeps w small where the values are
// large against their spread; the centered second pass needs no guard.
template <DType kType>
void BlockMomentsT(const Storage<kType>* x, std::int64_t blocks, std::int64_t len, double* mean, double* m2) {
  const DF d;
  const size_t lanes = hn::Lanes(d), n = static_cast<size_t>(len);
  const double count = static_cast<double>(len);
  // Sum of term(v, k) over the block's vectors (k valid lanes; padded
  // lanes load as the pivot).
  auto sum_over = [&](const Storage<kType>* HWY_RESTRICT p, float pivot, const auto& term) HWY_ATTR {
    double total = 0.0;
    VF acc = hn::Zero(d);
    size_t rounds = 0;
    for (size_t i = 0; i < n; i += lanes) {
      const size_t k = std::min(lanes, n - i);
      acc = hn::Add(acc, term(LoadSomeAsF32<kType>(d, p + i, k, pivot), k));
      if (HWY_UNLIKELY(++rounds == kAddsPerFlush)) {
        total += SumLanesInDouble(d, acc);
        acc = hn::Zero(d);
        rounds = 0;
      }
    }
    return total + SumLanesInDouble(d, acc);
  };
  for (std::int64_t b = 0; b < blocks; ++b) {
    const Storage<kType>* HWY_RESTRICT p = x + static_cast<size_t>(b) * n;
    float pivot = hn::GetLane(LoadSomeAsF32<kType>(d, p, 1, 0.0f));
    if (!(pivot - pivot == 0.0f)) pivot = 0.0f;  // an infinite or NaN first value
    const VF vp = hn::Set(d, pivot);
    const double mean_w = sum_over(p, pivot, [&](VF v, size_t) HWY_ATTR { return hn::Sub(v, vp); }) / count;
    const float center_w = static_cast<float>(mean_w);
    const VF vc = hn::Set(d, center_w);
    const double sq = sum_over(p, pivot, [&](VF v, size_t k) HWY_ATTR {
      VF e = hn::Sub(hn::Sub(v, vp), vc);
      if (k < lanes) e = hn::IfThenElseZero(hn::FirstN(d, k), e);
      return hn::Mul(e, e);
    });
    const double dm = mean_w - static_cast<double>(center_w);
    mean[b] = static_cast<double>(pivot) + mean_w;
    m2[b] = std::max(sq - count * dm * dm, 0.0);  // std::max keeps a NaN first argument
  }
}

// Planes of S values where S is a power of two up to half the vector (2x2
// maps): several planes per vector, lane i in plane i / S. Per-plane values
// come from one load, spread over their planes' lanes. Per-plane sums are
// taken in double lanes (each f32 half promoted): the first lane of each
// plane adds the lanes 1, 2, ..., S - 1 above it in turn, the order of the
// lane loop that totals a plane's sums elsewhere (DoubleLanes::Total), so the
// bits are the same. Whether a plane length is handled so: TinyPlanes(S).
using DD = hn::Repartition<double, DF>;
HWY_INLINE bool TinyPlanes(size_t S) {
  const size_t lanes = hn::Lanes(DD());
  return HWY_TARGET != HWY_SCALAR && S >= 1 && S <= lanes && (S & (S - 1)) == 0 && lanes % S == 0;
}

// Lane i -> min(i / div + add, Lanes - 1): the table of TableLookupLanes
// for spreading per-plane values (add 0, div S) and for the lane k above
// (add k, div 1).
template <class D>
HWY_INLINE auto TinyIndices(D d, size_t add, size_t div) {
  const hn::RebindToSigned<D> di;
  using I = hn::TFromD<decltype(di)>;
  HWY_ALIGN I idx[hn::MaxLanes(di)];
  const size_t lanes = hn::Lanes(d);
  for (size_t i = 0; i < lanes; ++i) idx[i] = static_cast<I>(std::min(i / div + add, lanes - 1));
  return hn::IndicesFromVec(d, hn::Load(di, idx));
}

// out[2q] = sum(dy), out[2q + 1] = sum(dy * (x - center[q])) of each plane:
// the f32 terms of backward_reduce, added in double.
template <DType kType>
void TinyPlaneGradSumsT(const Storage<kType>* x, const Storage<kType>* dy, std::int64_t planes,
                        std::int64_t plane_len, const float* center, double* out) {
#if HWY_TARGET == HWY_SCALAR
  (void)x, (void)dy, (void)planes, (void)plane_len, (void)center, (void)out;  // TinyPlanes is false
#else
  const DF d;
  const DD dd;
  const hn::Half<DF> dh;
  const size_t lanes = hn::Lanes(d), half = hn::Lanes(dd), S = static_cast<size_t>(plane_len),
               per = lanes / S;
  const size_t total = static_cast<size_t>(planes) * S;
  const auto spread = TinyIndices(d, 0, S);
  decltype(TinyIndices(dd, 0, 1)) above[8] = {};
  for (size_t k = 1; k < S; ++k) above[k] = TinyIndices(dd, k, 1);
  HWY_ALIGN double sums[4][hn::MaxLanes(DD())];
  for (size_t i = 0, q = 0; i < total; i += lanes, q += per) {
    const size_t count = std::min(lanes, total - i), np = count / S;
    // Lanes past the last plane load 0 and belong to no plane.
    const VF c = hn::TableLookupLanes(LoadSomeAsF32<DType::f32>(d, center + q, np, 0.0f), spread);
    const VF g = LoadSomeAsF32<kType>(d, dy + i, count, 0.0f);
    const VF h = hn::Mul(g, hn::Sub(LoadSomeAsF32<kType>(d, x + i, count, 0.0f), c));
    hn::Vec<DD> v[4] = {hn::PromoteTo(dd, hn::LowerHalf(dh, g)), hn::PromoteTo(dd, hn::UpperHalf(dh, g)),
                        hn::PromoteTo(dd, hn::LowerHalf(dh, h)), hn::PromoteTo(dd, hn::UpperHalf(dh, h))};
    for (size_t k = 0; k < 4; ++k) {
      auto total = v[k];
      for (size_t t = 1; t < S; ++t) total = hn::Add(total, hn::TableLookupLanes(v[k], above[t]));
      hn::Store(total, dd, sums[k]);
    }
    for (size_t j = 0; j < np; ++j) {
      const size_t lane = j * S, part = lane / half, at = lane % half;  // lo or hi half
      out[2 * (q + j)] = sums[part][at];
      out[2 * (q + j) + 1] = sums[2 + part][at];
    }
  }
#endif
}

// dx = k_dy[q] * dy + k_xc[q] * (x - center[q]) + k_const[q] over each plane
// q (the arithmetic of backward_apply, so the same bits), plain stores.
template <DType kType>
void TinyPlaneApplyT(const Storage<kType>* x, const Storage<kType>* dy, Storage<kType>* dx,
                     std::int64_t planes, std::int64_t plane_len, const float* center, const float* k_dy,
                     const float* k_xc, const float* k_const) {
  const DF d;
  const size_t lanes = hn::Lanes(d), S = static_cast<size_t>(plane_len), per = lanes / S;
  const size_t total = static_cast<size_t>(planes) * S;
  const auto spread = TinyIndices(d, 0, S);
  auto at = [&](const float* v, size_t q, size_t np) HWY_ATTR {
    return hn::TableLookupLanes(LoadSomeAsF32<DType::f32>(d, v + q, np, 0.0f), spread);
  };
  for (size_t i = 0, q = 0; i < total; i += lanes, q += per) {
    const size_t count = std::min(lanes, total - i), np = count / S;
    const VF g = LoadSomeAsF32<kType>(d, dy + i, count, 0.0f);
    const VF xv = LoadSomeAsF32<kType>(d, x + i, count, 0.0f);
    const VF v = hn::MulAdd(at(k_dy, q, np), g,
                            hn::MulAdd(at(k_xc, q, np), hn::Sub(xv, at(center, q, np)), at(k_const, q, np)));
    StoreOutput<kType>(d, v, dx + i, count, false);
  }
}

// Backward's terms of elements [i, i + 2 * Lanes) of a run: the (gated) dy
// into g0 / g1, dy * (x - center) into h0 / h1.
template <DType kType, bool kGate, class Y>
HWY_INLINE void AddGradPair(DF d, const Storage<kType>* HWY_RESTRICT px,
                            const Storage<kType>* HWY_RESTRICT pg, Y py, size_t i, VF vc, VF& g0, VF& g1,
                            VF& h0, VF& h1) {
  const size_t lanes = hn::Lanes(d);
  const VF gv0 = Gated<kType, kGate>(d, LoadAsF32<kType>(d, pg + i), py, i, lanes);
  const VF gv1 = Gated<kType, kGate>(d, LoadAsF32<kType>(d, pg + i + lanes), py, i + lanes, lanes);
  g0 = hn::Add(g0, gv0);
  g1 = hn::Add(g1, gv1);
  h0 = hn::MulAdd(gv0, hn::Sub(LoadAsF32<kType>(d, px + i), vc), h0);
  h1 = hn::MulAdd(gv1, hn::Sub(LoadAsF32<kType>(d, px + i + lanes), vc), h1);
}

template <DType kType, bool kGate, class Y>
void BackwardReduceT(const Storage<kType>* x, const Storage<kType>* dy, Y y, Runs runs, float center,
                     double sums[2]) {
  const DF d;
  const size_t lanes = hn::Lanes(d);
  const VF vc = hn::Set(d, center);
  VF g0 = hn::Zero(d), g1 = hn::Zero(d), h0 = hn::Zero(d), h1 = hn::Zero(d);
  DoubleLanes sum_g(d), sum_h(d);
  size_t rounds = 0;
  auto fold = [&]() HWY_ATTR {
    sum_g.Fold(d, hn::Add(g0, g1));
    sum_h.Fold(d, hn::Add(h0, h1));
    g0 = g1 = h0 = h1 = hn::Zero(d);
    rounds = 0;
  };
  const std::int64_t ahead = RunsAhead<kType>(runs.len, kGate ? 3 : 2);
  for (std::int64_t r = 0; r < runs.count; ++r) {
    const Storage<kType>* HWY_RESTRICT px = x + r * runs.stride;
    const Storage<kType>* HWY_RESTRICT pg = dy + r * runs.stride;
    Y py{};
    if constexpr (kGate) py = y + r * runs.stride;
    const size_t len = static_cast<size_t>(runs.len);
    if (r + ahead < runs.count) {
      PrefetchSpan<kType>(x + (r + ahead) * runs.stride, len);
      PrefetchSpan<kType>(dy + (r + ahead) * runs.stride, len);
      if constexpr (kGate) PrefetchSpan<kType>(y + (r + ahead) * runs.stride, len);
    }
    size_t i = 0;
    for (; i + 2 * lanes <= len; i += 2 * lanes) {
      AddGradPair<kType, kGate>(d, px, pg, py, i, vc, g0, g1, h0, h1);
      if (HWY_UNLIKELY(++rounds == kAddsPerFlush)) fold();
    }
    if (i + lanes <= len) {
      const VF gv = Gated<kType, kGate>(d, LoadAsF32<kType>(d, pg + i), py, i, lanes);
      g0 = hn::Add(g0, gv);
      h0 = hn::MulAdd(gv, hn::Sub(LoadAsF32<kType>(d, px + i), vc), h0);
      i += lanes;
    }
    if (i < len) {
      // dy is padded with 0, so padded lanes add nothing to either sum.
      const VF gv = Gated<kType, kGate>(d, LoadPartialAsF32<kType>(d, pg + i, len - i, 0.0f), py, i, len - i);
      g1 = hn::Add(g1, gv);
      h1 = hn::MulAdd(gv, hn::Sub(LoadPartialAsF32<kType>(d, px + i, len - i, center), vc), h1);
    }
    if (++rounds >= kAddsPerFlush) fold();
  }
  fold();
  sums[0] += sum_g.Total(d);
  sums[1] += sum_h.Total(d);
}

template <DType kType, bool kAdd, bool kRelu, bool kMask>
void NormalizeT(const Storage<kType>* x, Storage<kType>* y, const Storage<kType>* z, Runs runs, float center,
                float scale, float shift, bool stream, const batch_norm::Epilogue& post) {
  const DF d;
  const VF vc = hn::Set(d, center), vs = hn::Set(d, scale), vb = hn::Set(d, shift);
  for (std::int64_t r = 0; r < runs.count; ++r) {
    const Storage<kType>* HWY_RESTRICT p = x + r * runs.stride;
    const Storage<kType>* HWY_RESTRICT pz = nullptr;
    if constexpr (kAdd) pz = z + r * runs.stride;
    auto bits = BitsFor<kMask>(post, r * runs.stride);
    const size_t n = static_cast<size_t>(runs.len);
    ForEachOutputVector<kType>(d, y + r * runs.stride, n, stream,
                               [&](size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
                                 PrefetchAhead(p, i, n);
                                 if constexpr (kAdd) PrefetchAhead(pz, i, n);
                                 const VF v = LoadSomeAsF32<kType>(d, p + i, count, 0.0f);
                                 return Post<kType, kAdd, kRelu>(d, hn::MulAdd(hn::Sub(v, vc), vs, vb), pz, i,
                                                                 count, bits);
                               });
    bits.Finish();
  }
}

template <DType kType, bool kGate, bool kDz, class Y>
void BackwardApplyT(const Storage<kType>* x, const Storage<kType>* dy, Storage<kType>* dx, Y y,
                    Storage<kType>* dz, Runs runs, float center, float k_dy, float k_xc, float k_const,
                    bool stream) {
  const DF d;
  const VF vc = hn::Set(d, center), a = hn::Set(d, k_dy), b = hn::Set(d, k_xc), k = hn::Set(d, k_const);
  const bool dz_like_dx = kDz && SameLineOffset(dz, dx);
  for (std::int64_t r = 0; r < runs.count; ++r) {
    const Storage<kType>* HWY_RESTRICT px = x + r * runs.stride;
    const Storage<kType>* HWY_RESTRICT pg = dy + r * runs.stride;
    Y py{};
    Storage<kType>* HWY_RESTRICT pz = nullptr;
    if constexpr (kGate) py = y + r * runs.stride;
    if constexpr (kDz) pz = dz + r * runs.stride;
    const size_t n = static_cast<size_t>(runs.len);
    Storage<kType>* HWY_RESTRICT pdx = dx + r * runs.stride;
    ForEachOutputPosition<kType>(
        d, pdx, n, stream, [&](size_t i, size_t count, bool nt) HWY_ATTR BNORM_ALWAYS_INLINE {
          PrefetchAhead(px, i, n);
          PrefetchAhead(pg, i, n);
          if constexpr (kGate) PrefetchAhead(py, i, n);
          const VF xv = LoadSomeAsF32<kType>(d, px + i, count, 0.0f);
          const VF gv = Gated<kType, kGate>(d, LoadSomeAsF32<kType>(d, pg + i, count, 0.0f), py, i, count);
          // dz streams where dx does when the two share their alignment.
          if constexpr (kDz) StoreOutput<kType>(d, gv, pz + i, count, nt && dz_like_dx);
          StoreOutput<kType>(d, hn::MulAdd(a, gv, hn::MulAdd(b, hn::Sub(xv, vc), k)), pdx + i, count, nt);
        });
  }
}

// ---------------------------------------------------------------- channels-first planes
//
// `planes` consecutive planes of S elements; plane i uses parameter index
// (first + i) % period. A vector that straddles two planes takes each
// lane's parameters, so the walk is one aligned (streamable) pass.

// Where a planes walk is: elements left in the current plane and the
// parameter index of the current plane.
struct PlaneCursor {
  size_t S, left;
  std::int64_t index, period;

  // Advances past `count` lanes. Returns the number of them that were in the
  // plane the walk was in, which is count unless the plane changed.
  HWY_INLINE size_t Advance(size_t count) {
    if (HWY_LIKELY(left > count)) {
      left -= count;
      return count;
    }
    const size_t split = left;
    left = S - (count - split);
    if (++index == period) index = 0;
    return split;
  }
};

// Parameters of one plane as broadcast vectors: K arrays indexed by plane.
template <size_t K>
struct PlaneParams {
  const float* arrays[K];
  VF v[K];
  HWY_INLINE void Load(DF d, std::int64_t index) {
    for (size_t k = 0; k < K; ++k) v[k] = hn::Set(d, arrays[k][index]);
  }
};

// Walks planes: `compute(params, i, count)` gives the result for lanes
// [i, i + count), once per vector; a vector across two planes gets each
// lane's plane's parameters.
template <DType kType, size_t K, class Compute>
HWY_INLINE void WalkPlanes(DF d, Storage<kType>* HWY_RESTRICT y, std::int64_t planes, std::int64_t plane_len,
                           std::int64_t first, std::int64_t period, PlaneParams<K> params, bool stream,
                           const Compute& compute) {
  const size_t S = static_cast<size_t>(plane_len);
  PlaneCursor cur{S, S, first, period};
  params.Load(d, first);
  if (S < hn::Lanes(d)) {
    // Planes shorter than a vector: one partial vector each.
    for (std::int64_t p = 0; p < planes; ++p) {
      const size_t i = static_cast<size_t>(p) * S;
      StorePartialFromF32<kType>(d, compute(params, i, S), y + i, S);
      if (++cur.index == period) cur.index = 0;
      params.Load(d, cur.index);
    }
    return;
  }
  ForEachOutputVector<kType>(d, y, static_cast<size_t>(planes) * S, stream,
                             [&](size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
                               const size_t split = cur.Advance(count);
                               if (HWY_LIKELY(split == count && cur.left != S))
                                 return compute(params, i, count);
                               if (split == count) {  // the vector ends the plane
                                 const VF out = compute(params, i, count);
                                 params.Load(d, cur.index);
                                 return out;
                               }
                               // Lanes from two planes: one compute with each lane's
                               // parameters (compute may store, e.g. dz, and its
                               // target may be one of its inputs: computing twice
                               // would read a stored lane back).
                               PlaneParams<K> mixed = params;
                               params.Load(d, cur.index);
                               const auto head = hn::FirstN(d, split);
                               for (size_t k = 0; k < K; ++k)
                                 mixed.v[k] = hn::IfThenElse(head, mixed.v[k], params.v[k]);
                               return compute(mixed, i, count);
                             });
}

// Channel sums of consecutive planes in memory order: each plane in vectors
// from its start, its two sums added in double to its channel's.
template <DType kType, bool kGate, class Y>
void PlanesBackwardReduceT(const Storage<kType>* x, const Storage<kType>* dy, Y y, std::int64_t planes,
                           std::int64_t plane_len, std::int64_t first, std::int64_t period,
                           const float* center, double* sums) {
  const DF d;
  const size_t lanes = hn::Lanes(d), S = static_cast<size_t>(plane_len);
  const size_t n = static_cast<size_t>(planes) * S;
  std::int64_t k = first;
  for (size_t off = 0; off < n; off += S, k = k + 1 == period ? 0 : k + 1) {
    const Storage<kType>* HWY_RESTRICT px = x + off;
    const Storage<kType>* HWY_RESTRICT pg = dy + off;
    Y py{};
    if constexpr (kGate) py = y + off;
    const VF vc = hn::Set(d, center[k]);
    VF g0 = hn::Zero(d), g1 = hn::Zero(d), h0 = hn::Zero(d), h1 = hn::Zero(d);
    DoubleLanes total_g(d), total_h(d);
    auto fold = [&]() HWY_ATTR {
      total_g.Fold(d, hn::Add(g0, g1));
      total_h.Fold(d, hn::Add(h0, h1));
      g0 = g1 = h0 = h1 = hn::Zero(d);
    };
    auto prefetch = [&](size_t i) HWY_ATTR BNORM_ALWAYS_INLINE {
      PrefetchAhead(x, off + i, n);
      PrefetchAhead(dy, off + i, n);
      if constexpr (kGate) PrefetchAhead(y, off + i, n);
    };
    size_t i = 0, rounds = 0;
    for (; i + 2 * lanes <= S; i += 2 * lanes) {
      prefetch(i);
      prefetch(i + lanes);
      AddGradPair<kType, kGate>(d, px, pg, py, i, vc, g0, g1, h0, h1);
      if (HWY_UNLIKELY(++rounds == kAddsPerFlush)) {
        fold();
        rounds = 0;
      }
    }
    for (; i < S; i += lanes) {
      // dy is padded with 0 and x with the center, so padded lanes add
      // nothing to either sum.
      const size_t count = std::min(lanes, S - i);
      prefetch(i);
      const VF gv = Gated<kType, kGate>(d, LoadSomeAsF32<kType>(d, pg + i, count, 0.0f), py, i, count);
      g0 = hn::Add(g0, gv);
      h0 = hn::MulAdd(gv, hn::Sub(LoadSomeAsF32<kType>(d, px + i, count, center[k]), vc), h0);
    }
    fold();
    sums[2 * k] += total_g.Reduced(d);
    sums[2 * k + 1] += total_h.Reduced(d);
  }
}

template <DType kType, bool kAdd, bool kRelu, bool kMask>
void NormalizePlanesT(const Storage<kType>* x, Storage<kType>* y, const Storage<kType>* z,
                      std::int64_t planes, std::int64_t plane_len, std::int64_t first, std::int64_t period,
                      const float* center, const float* scale, const float* shift, bool stream,
                      const batch_norm::Epilogue& post) {
  const DF d;
  const size_t n = static_cast<size_t>(planes * plane_len);
  auto bits = BitsFor<kMask>(post, 0);
  WalkPlanes<kType, 3>(d, y, planes, plane_len, first, period, PlaneParams<3>{{center, scale, shift}, {}},
                       stream,
                       [&](const PlaneParams<3>& p, size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
                         PrefetchAhead(x, i, n);
                         if constexpr (kAdd) PrefetchAhead(z, i, n);
                         const VF v = LoadSomeAsF32<kType>(d, x + i, count, 0.0f);
                         return Post<kType, kAdd, kRelu>(d, hn::MulAdd(hn::Sub(v, p.v[0]), p.v[1], p.v[2]), z,
                                                         i, count, bits);
                       });
  bits.Finish();
}

template <DType kType, bool kGate, bool kDz, class Y>
void ApplyPlanesT(const Storage<kType>* x, const Storage<kType>* dy, Storage<kType>* dx, Y y,
                  Storage<kType>* dz, std::int64_t planes, std::int64_t plane_len, std::int64_t first,
                  std::int64_t period, const float* center, const float* k_dy, const float* k_xc,
                  const float* k_const, bool stream) {
  const DF d;
  const size_t n = static_cast<size_t>(planes * plane_len);
  WalkPlanes<kType, 4>(d, dx, planes, plane_len, first, period,
                       PlaneParams<4>{{center, k_dy, k_xc, k_const}, {}}, stream,
                       [&](const PlaneParams<4>& p, size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
                         PrefetchAhead(x, i, n);
                         PrefetchAhead(dy, i, n);
                         if constexpr (kGate) PrefetchAhead(y, i, n);
                         const VF xv = LoadSomeAsF32<kType>(d, x + i, count, 0.0f);
                         const VF gv = Gated<kType, kGate>(d, LoadSomeAsF32<kType>(d, dy + i, count, 0.0f), y,
                                                           i, count);
                         if constexpr (kDz) StoreSomeFromF32<kType>(d, gv, dz + i, count);
                         return hn::MulAdd(p.v[1], gv, hn::MulAdd(p.v[2], hn::Sub(xv, p.v[0]), p.v[3]));
                       });
}

// ---------------------------------------------------------------- channels-last rows

// Adds the cyclic f32 scratch into the per-channel double sums and clears it.
HWY_INLINE void FoldCyclic(float* HWY_RESTRICT scratch, std::int64_t channels, double* acc) {
  const std::int64_t length = cyclic_period(channels) + kCyclicPad;
  for (std::int64_t base = 0; base < length; base += channels) {
    const std::int64_t end = std::min(channels, length - base);
    for (std::int64_t c = 0; c < end; ++c) acc[c] += scratch[base + c];
  }
  std::memset(scratch, 0, static_cast<size_t>(length) * sizeof(float));
}

// Walks a channels-last block vector by vector. `step(i, count, c)` gets the
// element offset, the number of valid lanes and the position c in the cyclic
// arrays; `flush()` runs every kAddsPerFlush periods and at the end.
template <class Step, class Flush>
HWY_INLINE void WalkRows(DF d, Rows rows, const Step& step, const Flush& flush) {
  const size_t lanes = hn::Lanes(d);
  const size_t n = static_cast<size_t>(rows.elements);
  const size_t period = static_cast<size_t>(cyclic_period(rows.channels));
  const size_t flush_elems = kAddsPerFlush * period;
  size_t c = 0, pending = 0, i = 0;
  for (; i + lanes <= n; i += lanes) {
    step(i, lanes, c);
    c += lanes;
    if (c >= period) c -= period;
    pending += lanes;
    if (HWY_UNLIKELY(pending >= flush_elems)) {
      flush();
      pending = 0;
    }
  }
  if (i < n) step(i, n - i, c);
  flush();
}

// Adds v (with only `count` valid lanes) to the cyclic accumulator at c.
HWY_INLINE void AddAt(DF d, float* HWY_RESTRICT acc, size_t c, size_t count, VF v) {
  if (count != hn::Lanes(d)) v = hn::IfThenElseZero(hn::FirstN(d, count), v);
  hn::StoreU(hn::Add(hn::LoadU(d, acc + c), v), d, acc + c);
}

// Whether rows can be walked channel vector by channel vector: C a multiple
// of the vector length and, for streaming, every row aligned. Then the
// per-channel arrays are read at the same offsets every row, with no
// wrap-around bookkeeping.
template <DType kType>
HWY_INLINE bool WholeVectorRows(DF d, const Storage<kType>* y, Rows rows, bool stream) {
  const size_t lanes = hn::Lanes(d);
  if (static_cast<size_t>(rows.channels) % lanes != 0) return false;
  return !stream || reinterpret_cast<std::uintptr_t>(y) % (lanes * sizeof(Storage<kType>)) == 0;
}

// Per-channel sums of two terms over rows whose C is a multiple of the
// vector length: tiles of kTileRows rows, and within a tile, four channel
// vectors at a time (then two, then one) summed down the rows in registers,
// then added in double. One pass over the data in memory order, no
// accumulator traffic per row. Four rather than two take more of each row
// per step (all of it at C = 64 in f32 or bf16); one process, alternating,
// 2 threads, 32x64x56x56 channels-last batch norm: backward f32 0.91-0.94x
// the time, bf16 0.88x, training f32 0.90-0.93x, bf16 0.92x; 1 thread f32
// 0.86-0.92x; AVX2 0.95-0.98x; 64x256x56x56 0.98-1.03x (noise). Group
// and instance norm's channels-last forward (64x256x56x56, the pipelined
// walk below): bf16 0.78-0.93x, f32 0.96-0.97x; backward 0.98-1.02x. Eight
// measured no better. Each channel's sum adds the same values in the same
// order whatever the group.
// Only for rows of at most kTiledRowBytes: walking down longer rows puts the
// tile's lines of a column in one L1 set (4 KiB apart) and thrashes it
// (measured: C = 1024 f32 backward 58 -> 83 ms).
constexpr size_t kTileRows = kAddsPerFlush;
constexpr size_t kTiledRowBytes = 1024;
template <DType kType>
HWY_INLINE bool TiledRows(DF d, Rows rows) {
  return static_cast<size_t>(rows.channels) % hn::Lanes(d) == 0 &&
         static_cast<size_t>(rows.channels) * sizeof(Storage<kType>) <= kTiledRowBytes;
}
//
// The hardware prefetcher follows this walk down a tile's columns poorly, so
// each step prefetches the same columns about kTiledPrefetchBytes further
// on, through prefetch(i, count) (element offset, elements), into L2: that
// far ahead, lines fetched into L1 were evicted before use (backward on
// 32x64x56x56 f32 ran 2.5 -> 3.5 ms with L1 prefetches, 2.6 with L2 ones).
// Measured on 64x256x56x56 channels-last, 2 threads: batch-norm statistics
// f32 25.6 -> 22.6 ms, bf16 23.9 -> 18.7 ms; group norm forward f32 20.3 ->
// 17.4 ms.
constexpr size_t kTiledPrefetchBytes = 32768;
// K channel vectors from column c summed down rows [r0, r1) in registers.
template <size_t K, class Terms, class Prefetch>
HWY_INLINE void TileColumns(DF d, size_t r0, size_t r1, size_t c, size_t C, size_t n_rows, size_t ahead,
                            const Terms& terms, const Prefetch& prefetch, double* out_a, double* out_b) {
  const size_t lanes = hn::Lanes(d);
  VF a[K], b[K];
  for (size_t k = 0; k < K; ++k) a[k] = b[k] = hn::Zero(d);
  for (size_t r = r0; r < r1; ++r) {
    if (r + ahead < n_rows) prefetch((r + ahead) * C + c, K * lanes);
    for (size_t k = 0; k < K; ++k) terms(r * C + c + k * lanes, c + k * lanes, a[k], b[k]);
  }
  for (size_t k = 0; k < K; ++k) {
    AddToDoubles(d, a[k], out_a + c + k * lanes);
    AddToDoubles(d, b[k], out_b + c + k * lanes);
  }
}
template <DType kType, class Terms, class Prefetch>
HWY_INLINE void TiledRowSums(DF d, Rows rows, const Terms& terms, const Prefetch& prefetch, double* out_a,
                             double* out_b) {
  const size_t lanes = hn::Lanes(d), C = static_cast<size_t>(rows.channels);
  const size_t n_rows = static_cast<size_t>(rows.elements) / C;
  const size_t ahead = std::max<size_t>(1, kTiledPrefetchBytes / (C * sizeof(Storage<kType>)));
  for (size_t r0 = 0; r0 < n_rows; r0 += kTileRows) {
    const size_t r1 = std::min(n_rows, r0 + kTileRows);
    size_t c = 0;
    for (; c + 4 * lanes <= C; c += 4 * lanes)
      TileColumns<4>(d, r0, r1, c, C, n_rows, ahead, terms, prefetch, out_a, out_b);
    for (; c + 2 * lanes <= C; c += 2 * lanes)
      TileColumns<2>(d, r0, r1, c, C, n_rows, ahead, terms, prefetch, out_a, out_b);
    if (c < C) TileColumns<1>(d, r0, r1, c, C, n_rows, ahead, terms, prefetch, out_a, out_b);
  }
}

template <DType kType>
void RowsShiftedSumsT(const Storage<kType>* x, Rows rows, const float* pivot, float* scratch, double* sum,
                      double* sum_sq) {
  const DF d;
  if (TiledRows<kType>(d, rows)) {
    TiledRowSums<kType>(
        d, rows,
        [&](size_t i, size_t c, VF& a, VF& b) HWY_ATTR BNORM_ALWAYS_INLINE {
          const VF v = hn::Sub(LoadAsF32<kType>(d, x + i), hn::LoadU(d, pivot + c));
          a = hn::Add(a, v);
          b = hn::MulAdd(v, v, b);
        },
        [&](size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE { PrefetchSpan<kType, 2>(x + i, count); },
        sum, sum_sq);
    return;
  }
  const size_t length = static_cast<size_t>(cyclic_period(rows.channels) + kCyclicPad);
  const size_t n = static_cast<size_t>(rows.elements);
  float* HWY_RESTRICT acc = scratch;
  float* HWY_RESTRICT acc_sq = scratch + length;
  std::memset(scratch, 0, 2 * length * sizeof(float));
  WalkRows(
      d, rows,
      [&](size_t i, size_t count, size_t c) HWY_ATTR BNORM_ALWAYS_INLINE {
        PrefetchAhead(x, i, n);
        const VF v = hn::Sub(LoadSomeAsF32<kType>(d, x + i, count, 0.0f), hn::LoadU(d, pivot + c));
        AddAt(d, acc, c, count, v);
        AddAt(d, acc_sq, c, count, hn::Mul(v, v));
      },
      [&]() HWY_ATTR {
        FoldCyclic(acc, rows.channels, sum);
        FoldCyclic(acc_sq, rows.channels, sum_sq);
      });
}

template <DType kType>
void RowsSumSqCenteredT(const Storage<kType>* x, Rows rows, const float* center, float* scratch,
                        double* acc) {
  const DF d;
  std::memset(scratch, 0, static_cast<size_t>(cyclic_period(rows.channels) + kCyclicPad) * sizeof(float));
  WalkRows(
      d, rows,
      [&](size_t i, size_t count, size_t c) HWY_ATTR BNORM_ALWAYS_INLINE {
        const VF v = hn::Sub(LoadSomeAsF32<kType>(d, x + i, count, 0.0f), hn::LoadU(d, center + c));
        AddAt(d, scratch, c, count, hn::Mul(v, v));
      },
      [&]() HWY_ATTR { FoldCyclic(scratch, rows.channels, acc); });
}

template <DType kType, bool kAdd, bool kRelu, bool kMask>
void RowsNormalizeT(const Storage<kType>* x, Storage<kType>* y, const Storage<kType>* z, Rows rows,
                    const float* center, const float* scale, const float* shift, bool stream,
                    const batch_norm::Epilogue& post) {
  const DF d;
  auto bits = BitsFor<kMask>(post, 0);
  if (WholeVectorRows<kType>(d, y, rows, stream)) {
    const size_t lanes = hn::Lanes(d), C = static_cast<size_t>(rows.channels);
    const size_t n = static_cast<size_t>(rows.elements);
    for (size_t r = 0; r < n; r += C) {
      for (size_t c = 0; c < C; c += lanes) {
        PrefetchAhead(x, r + c, n);
        if constexpr (kAdd) PrefetchAhead(z, r + c, n);
        const VF v = LoadAsF32<kType>(d, x + r + c);
        const VF out = Post<kType, kAdd, kRelu>(d,
                                                hn::MulAdd(hn::Sub(v, hn::LoadU(d, center + c)),
                                                           hn::LoadU(d, scale + c), hn::LoadU(d, shift + c)),
                                                z, r + c, lanes, bits);
        if (stream) {
          StreamFromF32<kType>(d, out, y + r + c);
        } else {
          StoreFromF32<kType>(d, out, y + r + c);
        }
      }
    }
    bits.Finish();
    return;
  }
  const size_t period = static_cast<size_t>(cyclic_period(rows.channels));
  size_t c = 0;
  const size_t n = static_cast<size_t>(rows.elements);
  ForEachOutputVector<kType>(d, y, n, stream,
                             [&](size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
                               PrefetchAhead(x, i, n);
                               if constexpr (kAdd) PrefetchAhead(z, i, n);
                               const VF v = LoadSomeAsF32<kType>(d, x + i, count, 0.0f);
                               const VF out = Post<kType, kAdd, kRelu>(
                                   d,
                                   hn::MulAdd(hn::Sub(v, hn::LoadU(d, center + c)), hn::LoadU(d, scale + c),
                                              hn::LoadU(d, shift + c)),
                                   z, i, count, bits);
                               c += count;
                               if (c >= period) c -= period;
                               return out;
                             });
  bits.Finish();
}

// Whether a walk down the tiles' columns may stream y: y's rows whole
// cache lines from a line boundary, and each store of the walk's groups of
// four or two channel vectors whole lines (vectors of 32 bytes or more;
// where C leaves a single vector at the end of a row, that vector is a
// whole line too then).
template <DType kType>
HWY_INLINE bool TileStreams(DF d, const Storage<kType>* y, Rows rows, bool stream) {
  constexpr size_t kSize = sizeof(Storage<kType>);
  return stream && reinterpret_cast<std::uintptr_t>(y) % 64 == 0 &&
         (static_cast<size_t>(rows.channels) * kSize) % 64 == 0 && (2 * hn::Lanes(d) * kSize) % 64 == 0;
}

template <DType kType, bool kGate, bool kDz, class Y>
void RowsBackwardReduceT(const Storage<kType>* x, const Storage<kType>* dy, Y y, Storage<kType>* dz,
                         Rows rows, const float* center, float* scratch, double* sum_dy, double* sum_dy_xc,
                         bool stream) {
  const DF d;
  // Every row of dz starts a cache line, so whole vectors at multiples of
  // the vector length are aligned.
  const bool nt = kDz && stream && reinterpret_cast<std::uintptr_t>(dz) % 64 == 0 &&
                  (static_cast<size_t>(rows.channels) * sizeof(Storage<kType>)) % 64 == 0;
  if (TiledRows<kType>(d, rows)) {
    // A line streamed in parts is slow.
    const bool tile_nt = kDz && TileStreams<kType>(d, dz, rows, stream);
    TiledRowSums<kType>(
        d, rows,
        [&](size_t i, size_t c, VF& a, VF& b) HWY_ATTR BNORM_ALWAYS_INLINE {
          const VF gv = Gated<kType, kGate>(d, LoadAsF32<kType>(d, dy + i), y, i, hn::Lanes(d));
          if constexpr (kDz) StoreOutput<kType>(d, gv, dz + i, hn::Lanes(d), tile_nt);
          a = hn::Add(a, gv);
          b = hn::MulAdd(gv, hn::Sub(LoadAsF32<kType>(d, x + i), hn::LoadU(d, center + c)), b);
        },
        [&](size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
          PrefetchSpan<kType, 2>(x + i, count);
          PrefetchSpan<kType, 2>(dy + i, count);
          if constexpr (kGate) PrefetchSpan<kType, 2>(y + i, count);
        },
        sum_dy, sum_dy_xc);
    return;
  }
  const size_t length = static_cast<size_t>(cyclic_period(rows.channels) + kCyclicPad);
  const size_t n = static_cast<size_t>(rows.elements);
  float* HWY_RESTRICT acc_dy = scratch;
  float* HWY_RESTRICT acc_dy_xc = scratch + length;
  std::memset(scratch, 0, 2 * length * sizeof(float));
  WalkRows(
      d, rows,
      [&](size_t i, size_t count, size_t c) HWY_ATTR BNORM_ALWAYS_INLINE {
        PrefetchAhead(x, i, n);
        PrefetchAhead(dy, i, n);
        if constexpr (kGate) PrefetchAhead(y, i, n);
        // dy is padded with 0, so padded lanes add nothing.
        const VF gv = Gated<kType, kGate>(d, LoadSomeAsF32<kType>(d, dy + i, count, 0.0f), y, i, count);
        if constexpr (kDz) StoreOutput<kType>(d, gv, dz + i, count, nt);
        const VF xc = hn::Sub(LoadSomeAsF32<kType>(d, x + i, count, 0.0f), hn::LoadU(d, center + c));
        hn::StoreU(hn::Add(hn::LoadU(d, acc_dy + c), gv), d, acc_dy + c);
        hn::StoreU(hn::MulAdd(gv, xc, hn::LoadU(d, acc_dy_xc + c)), d, acc_dy_xc + c);
      },
      [&]() HWY_ATTR {
        FoldCyclic(acc_dy, rows.channels, sum_dy);
        FoldCyclic(acc_dy_xc, rows.channels, sum_dy_xc);
      });
}

template <DType kType, bool kGate, bool kDz, class Y>
void RowsBackwardApplyT(const Storage<kType>* x, const Storage<kType>* dy, Storage<kType>* dx, Y y,
                        Storage<kType>* dz, Rows rows, const float* center, const float* k_dy,
                        const float* k_xc, const float* k_const, bool stream) {
  const DF d;
  if (WholeVectorRows<kType>(d, dx, rows, stream)) {
    const size_t lanes = hn::Lanes(d), C = static_cast<size_t>(rows.channels);
    const size_t n = static_cast<size_t>(rows.elements);
    for (size_t r = 0; r < n; r += C) {
      for (size_t c = 0; c < C; c += lanes) {
        PrefetchAhead(x, r + c, n);
        PrefetchAhead(dy, r + c, n);
        if constexpr (kGate) PrefetchAhead(y, r + c, n);
        const VF xc = hn::Sub(LoadAsF32<kType>(d, x + r + c), hn::LoadU(d, center + c));
        const VF gv = Gated<kType, kGate>(d, LoadAsF32<kType>(d, dy + r + c), y, r + c, lanes);
        if constexpr (kDz) StoreFromF32<kType>(d, gv, dz + r + c);
        const VF out = hn::MulAdd(hn::LoadU(d, k_dy + c), gv,
                                  hn::MulAdd(hn::LoadU(d, k_xc + c), xc, hn::LoadU(d, k_const + c)));
        if (stream) {
          StreamFromF32<kType>(d, out, dx + r + c);
        } else {
          StoreFromF32<kType>(d, out, dx + r + c);
        }
      }
    }
    return;
  }
  const size_t period = static_cast<size_t>(cyclic_period(rows.channels));
  size_t c = 0;
  const size_t n = static_cast<size_t>(rows.elements);
  ForEachOutputVector<kType>(d, dx, n, stream,
                             [&](size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
                               PrefetchAhead(x, i, n);
                               PrefetchAhead(dy, i, n);
                               if constexpr (kGate) PrefetchAhead(y, i, n);
                               const VF xv = LoadSomeAsF32<kType>(d, x + i, count, 0.0f);
                               const VF gv = Gated<kType, kGate>(d, LoadSomeAsF32<kType>(d, dy + i, count, 0.0f),
                                                                 y, i, count);
                               if constexpr (kDz) StoreSomeFromF32<kType>(d, gv, dz + i, count);
                               const VF xc = hn::Sub(xv, hn::LoadU(d, center + c));
                               const VF out = hn::MulAdd(
                                   hn::LoadU(d, k_dy + c), gv,
                                   hn::MulAdd(hn::LoadU(d, k_xc + c), xc, hn::LoadU(d, k_const + c)));
                               c += count;
                               if (c >= period) c -= period;
                               return out;
                             });
}

// Pipelined rows (group and instance norm's channels-last samples too big
// for a core's L2): a block's output walks in one loop with the sums of the
// next block of the same shape, down the tiles' columns as TiledRowSums
// walks, so that the next block's reads and the output's writes are in
// flight together instead of taking turns (bare loops over 3.2 MB blocks, 2
// threads: taking turns 1.2-1.45x a single y = a*x + b pass, pipelined
// 1.02-1.15x, though the block is read again from memory).
template <DType kType>
bool RowsNormalizeAndSumT(const Storage<kType>* x, Storage<kType>* y, Rows rows, const float* center,
                          const float* scale, const float* shift, bool stream, const Storage<kType>* next,
                          const float* pivot, double* sum, double* sum_sq) {
  const DF d;
  if (!TiledRows<kType>(d, rows)) return false;
  const bool nt = TileStreams<kType>(d, y, rows, stream);
  TiledRowSums<kType>(
      d, rows,
      [&](size_t i, size_t c, VF& a, VF& b) HWY_ATTR BNORM_ALWAYS_INLINE {
        const VF out = hn::MulAdd(hn::Sub(LoadAsF32<kType>(d, x + i), hn::LoadU(d, center + c)),
                                  hn::LoadU(d, scale + c), hn::LoadU(d, shift + c));
        StoreOutput<kType>(d, out, y + i, hn::Lanes(d), nt);
        const VF v = hn::Sub(LoadAsF32<kType>(d, next + i), hn::LoadU(d, pivot + c));
        a = hn::Add(a, v);
        b = hn::MulAdd(v, v, b);
      },
      [&](size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
        PrefetchSpan<kType, 2>(x + i, count);
        PrefetchSpan<kType, 2>(next + i, count);
      },
      sum, sum_sq);
  return true;
}

// Backward's pipelined rows: rows_backward_apply beside rows_backward_reduce
// of the next block, in memory order, each of the four read streams front
// to back as the hardware prefetcher follows best, the next block's sums
// through the cyclic accumulators. (Down the tiles' columns, as forward
// walks, it measured 1.03-1.17x the time of taking turns; in memory order
// 0.77-0.87x. Forward in memory order measured 0.91-0.97x for f32, against
// 0.80-0.90x down the columns.)
template <DType kType>
void RowsApplyAndReduceT(const Storage<kType>* x, const Storage<kType>* dy, Storage<kType>* dx, Rows rows,
                         const float* center, const float* k_dy, const float* k_xc, const float* k_const,
                         bool stream, const Storage<kType>* next_x, const Storage<kType>* next_dy,
                         const float* next_center, float* scratch, double* sum_dy, double* sum_dy_xc) {
  const DF d;
  const size_t length = static_cast<size_t>(cyclic_period(rows.channels) + kCyclicPad);
  const size_t n = static_cast<size_t>(rows.elements),
               period = static_cast<size_t>(cyclic_period(rows.channels));
  const size_t flush_elems = kAddsPerFlush * period;
  float* HWY_RESTRICT acc_dy = scratch;
  float* HWY_RESTRICT acc_dy_xc = scratch + length;
  std::memset(scratch, 0, 2 * length * sizeof(float));
  size_t c = 0, pending = 0;
  ForEachOutputVector<kType>(d, dx, n, stream, [&](size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
    PrefetchAhead(x, i, n);
    PrefetchAhead(dy, i, n);
    PrefetchAhead(next_x, i, n);
    PrefetchAhead(next_dy, i, n);
    const VF xc = hn::Sub(LoadSomeAsF32<kType>(d, x + i, count, 0.0f), hn::LoadU(d, center + c));
    const VF out = hn::MulAdd(hn::LoadU(d, k_dy + c), LoadSomeAsF32<kType>(d, dy + i, count, 0.0f),
                              hn::MulAdd(hn::LoadU(d, k_xc + c), xc, hn::LoadU(d, k_const + c)));
    // next_dy is padded with 0, so padded lanes add nothing.
    const VF g = LoadSomeAsF32<kType>(d, next_dy + i, count, 0.0f);
    const VF nxc = hn::Sub(LoadSomeAsF32<kType>(d, next_x + i, count, 0.0f), hn::LoadU(d, next_center + c));
    hn::StoreU(hn::Add(hn::LoadU(d, acc_dy + c), g), d, acc_dy + c);
    hn::StoreU(hn::MulAdd(g, nxc, hn::LoadU(d, acc_dy_xc + c)), d, acc_dy_xc + c);
    c += count;
    if (c >= period) c -= period;
    pending += count;
    if (HWY_UNLIKELY(pending >= flush_elems)) {
      FoldCyclic(acc_dy, rows.channels, sum_dy);
      FoldCyclic(acc_dy_xc, rows.channels, sum_dy_xc);
      pending = 0;
    }
    return out;
  });
  FoldCyclic(acc_dy, rows.channels, sum_dy);
  FoldCyclic(acc_dy_xc, rows.channels, sum_dy_xc);
}

}  // namespace

// ---------------------------------------------------------------- per channel

void FinishChannels(std::int64_t n, double count, const double* mean, const double* m2, double eps,
                    ZeroVariance zero_variance, const float* gamma, const float* beta, float* center,
                    float* scale, float* shift, double* invstd) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  const size_t lanes = hn::Lanes(dd);
  const auto inv_count = hn::Set(dd, 1.0 / count), veps = hn::Set(dd, eps), one = hn::Set(dd, 1.0);
  const auto zero = hn::Zero(dd);
  const bool zero_invstd = zero_variance == ZeroVariance::zero && eps == 0.0;
  auto step = [&](const double* pm, const double* pq, const float* pg, const float* pb, float* oc, float* os,
                  float* ob, double* oi) HWY_ATTR {
    const auto vm = hn::LoadU(dd, pm), vq = hn::LoadU(dd, pq);
    auto is = hn::Div(one, hn::Sqrt(hn::MulAdd(vq, inv_count, veps)));
    if (zero_invstd) is = hn::IfThenZeroElse(hn::Eq(vq, zero), is);
    // The center is the mean rounded to f32; the rest of the mean goes into
    // the shift. (Rounded with vector conversions: GCC 12 folded a scalar
    // double -> float -> double round trip away in this file.)
    const auto vc32 = hn::DemoteTo(df, vm);
    const auto vc = hn::PromoteTo(dd, vc32);
    const auto sc = hn::Mul(pg ? hn::PromoteTo(dd, hn::LoadU(df, pg)) : one, is);
    const auto sh = hn::NegMulAdd(hn::Sub(vm, vc), sc, pb ? hn::PromoteTo(dd, hn::LoadU(df, pb)) : zero);
    hn::StoreU(vc32, df, oc);
    hn::StoreU(hn::DemoteTo(df, sc), df, os);
    hn::StoreU(hn::DemoteTo(df, sh), df, ob);
    hn::StoreU(is, dd, oi);
  };
  size_t i = 0;
  for (; i + lanes <= static_cast<size_t>(n); i += lanes)
    step(mean + i, m2 + i, gamma ? gamma + i : nullptr, beta ? beta + i : nullptr, center + i, scale + i,
         shift + i, invstd + i);
  if (i == static_cast<size_t>(n)) return;
  // The last partial vector, through a padded copy.
  const size_t k = static_cast<size_t>(n) - i;
  HWY_ALIGN double m[hn::MaxLanes(dd)] = {}, q[hn::MaxLanes(dd)] = {}, oi[hn::MaxLanes(dd)];
  HWY_ALIGN float g[hn::MaxLanes(dd)] = {}, b[hn::MaxLanes(dd)] = {};
  HWY_ALIGN float oc[hn::MaxLanes(dd)], os[hn::MaxLanes(dd)], ob[hn::MaxLanes(dd)];
  for (size_t j = 0; j < k; ++j) {
    m[j] = mean[i + j];
    q[j] = m2[i + j];
    g[j] = gamma ? gamma[i + j] : 1.0f;
    b[j] = beta ? beta[i + j] : 0.0f;
  }
  step(m, q, g, b, oc, os, ob, oi);
  for (size_t j = 0; j < k; ++j) {
    center[i + j] = oc[j];
    scale[i + j] = os[j];
    shift[i + j] = ob[j];
    invstd[i + j] = oi[j];
  }
}

void BackwardCoefficients(std::int64_t n, double inv_count, const double* sum_dy, const double* sum_dy_xc,
                          const float* gamma, const float* invstd, float* k_dy, float* k_xc, float* k_const) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  const size_t lanes = hn::Lanes(dd);
  const auto one = hn::Set(dd, 1.0), neg_inv = hn::Set(dd, -inv_count);
  const bool fixed = inv_count == 0.0;
  auto step = [&](const double* a, const double* b, const float* g, const float* is, float* o1, float* o2,
                  float* o3) HWY_ATTR {
    const auto vis = hn::PromoteTo(dd, hn::LoadU(df, is));
    const auto gis = hn::Mul(g ? hn::PromoteTo(dd, hn::LoadU(df, g)) : one, vis);
    hn::StoreU(hn::DemoteTo(df, gis), df, o1);
    if (fixed) {
      hn::StoreU(hn::Zero(df), df, o2);
      hn::StoreU(hn::Zero(df), df, o3);
      return;
    }
    hn::StoreU(hn::DemoteTo(df, hn::Mul(hn::Mul(gis, hn::Mul(vis, vis)), hn::Mul(hn::LoadU(dd, b), neg_inv))),
               df, o2);
    hn::StoreU(hn::DemoteTo(df, hn::Mul(gis, hn::Mul(hn::LoadU(dd, a), neg_inv))), df, o3);
  };
  size_t i = 0;
  for (; i + lanes <= static_cast<size_t>(n); i += lanes)
    step(sum_dy + i, sum_dy_xc + i, gamma ? gamma + i : nullptr, invstd + i, k_dy + i, k_xc + i, k_const + i);
  if (i == static_cast<size_t>(n)) return;
  // The last partial vector, through a padded copy.
  const size_t k = static_cast<size_t>(n) - i;
  HWY_ALIGN double a[hn::MaxLanes(dd)] = {}, b[hn::MaxLanes(dd)] = {};
  HWY_ALIGN float g[hn::MaxLanes(dd)] = {}, is[hn::MaxLanes(dd)] = {}, o1[hn::MaxLanes(dd)],
                  o2[hn::MaxLanes(dd)], o3[hn::MaxLanes(dd)];
  for (size_t j = 0; j < k; ++j) {
    a[j] = sum_dy[i + j];
    b[j] = sum_dy_xc[i + j];
    g[j] = gamma ? gamma[i + j] : 1.0f;
    is[j] = invstd[i + j];
  }
  step(a, b, g, is, o1, o2, o3);
  for (size_t j = 0; j < k; ++j) {
    k_dy[i + j] = o1[j];
    k_xc[i + j] = o2[j];
    k_const[i + j] = o3[j];
  }
}

// ---------------------------------------------------------------- per-target entry points

void ShiftedSums(DType dt, const void* x, Runs runs, float pivot, double out[2]) {
  WithDType(dt, [&](auto t) { ShiftedSumsT<t()>(static_cast<const Storage<t()>*>(x), runs, pivot, out); });
}
void BlockMoments(DType dt, const void* x, std::int64_t blocks, std::int64_t len, double* mean, double* m2) {
  WithDType(dt,
            [&](auto t) { BlockMomentsT<t()>(static_cast<const Storage<t()>*>(x), blocks, len, mean, m2); });
}
double SumSqCentered(DType dt, const void* x, Runs runs, float center) {
  return WithDType(
      dt, [&](auto t) { return SumSqCenteredT<t()>(static_cast<const Storage<t()>*>(x), runs, center); });
}
void Normalize(DType dt, const void* x, void* y, Runs runs, float center, float scale, float shift,
               bool stream, const batch_norm::Epilogue& post) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    WithPost(post, [&](auto add, auto relu, auto mask) {
      NormalizeT<t(), add(), relu(), mask()>(static_cast<const T*>(x), static_cast<T*>(y),
                                             static_cast<const T*>(post.residual), runs, center, scale, shift,
                                             stream, post);
    });
  });
}
void BackwardReduce(DType dt, const void* x, const void* dy, Runs runs, float center, double sums[2],
                    const batch_norm::Gate& gate) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    WithGate<t()>(gate, [&](auto g, auto, auto gy) {
      BackwardReduceT<t(), g()>(static_cast<const T*>(x), static_cast<const T*>(dy), gy, runs, center, sums);
    });
  });
}
void BackwardApply(DType dt, const void* x, const void* dy, void* dx, Runs runs, float center, float k_dy,
                   float k_xc, float k_const, bool stream, const batch_norm::Gate& gate) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    WithGate<t()>(gate, [&](auto g, auto z, auto gy) {
      BackwardApplyT<t(), g(), z()>(static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dx),
                                    gy, static_cast<T*>(gate.dz), runs, center, k_dy, k_xc, k_const, stream);
    });
  });
}
bool TinyPlanesHandled(std::int64_t plane_len) { return TinyPlanes(static_cast<size_t>(plane_len)); }
void TinyPlaneGradSums(DType dt, const void* x, const void* dy, std::int64_t planes, std::int64_t plane_len,
                       const float* center, double* sums) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    TinyPlaneGradSumsT<t()>(static_cast<const T*>(x), static_cast<const T*>(dy), planes, plane_len, center,
                            sums);
  });
}
void TinyPlaneApply(DType dt, const void* x, const void* dy, void* dx, std::int64_t planes,
                    std::int64_t plane_len, const float* center, const float* k_dy, const float* k_xc,
                    const float* k_const) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    TinyPlaneApplyT<t()>(static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dx), planes,
                         plane_len, center, k_dy, k_xc, k_const);
  });
}
void NormalizePlanes(DType dt, const void* x, void* y, std::int64_t planes, std::int64_t plane_len,
                     std::int64_t first, std::int64_t period, const float* center, const float* scale,
                     const float* shift, bool stream, const batch_norm::Epilogue& post) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    WithPost(post, [&](auto add, auto relu, auto mask) {
      NormalizePlanesT<t(), add(), relu(), mask()>(static_cast<const T*>(x), static_cast<T*>(y),
                                                   static_cast<const T*>(post.residual), planes, plane_len,
                                                   first, period, center, scale, shift, stream, post);
    });
  });
}
void PlanesBackwardReduce(DType dt, const void* x, const void* dy, std::int64_t planes,
                          std::int64_t plane_len, std::int64_t first, std::int64_t period,
                          const float* center, double* sums, const batch_norm::Gate& gate) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    WithGate<t()>(gate, [&](auto g, auto, auto gy) {
      PlanesBackwardReduceT<t(), g()>(static_cast<const T*>(x), static_cast<const T*>(dy), gy, planes,
                                      plane_len, first, period, center, sums);
    });
  });
}
void ApplyPlanes(DType dt, const void* x, const void* dy, void* dx, std::int64_t planes,
                 std::int64_t plane_len, std::int64_t first, std::int64_t period, const float* center,
                 const float* k_dy, const float* k_xc, const float* k_const, bool stream,
                 const batch_norm::Gate& gate) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    WithGate<t()>(gate, [&](auto g, auto z, auto gy) {
      ApplyPlanesT<t(), g(), z()>(static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dx),
                                  gy, static_cast<T*>(gate.dz), planes, plane_len, first, period, center,
                                  k_dy, k_xc, k_const, stream);
    });
  });
}
void RowsShiftedSums(DType dt, const void* x, Rows rows, const float* pivot, float* scratch, double* sum,
                     double* sum_sq) {
  WithDType(dt, [&](auto t) {
    RowsShiftedSumsT<t()>(static_cast<const Storage<t()>*>(x), rows, pivot, scratch, sum, sum_sq);
  });
}
void RowsSumSqCentered(DType dt, const void* x, Rows rows, const float* center, float* scratch, double* acc) {
  WithDType(dt, [&](auto t) {
    RowsSumSqCenteredT<t()>(static_cast<const Storage<t()>*>(x), rows, center, scratch, acc);
  });
}
void RowsNormalize(DType dt, const void* x, void* y, Rows rows, const float* center, const float* scale,
                   const float* shift, bool stream, const batch_norm::Epilogue& post) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    WithPost(post, [&](auto add, auto relu, auto mask) {
      RowsNormalizeT<t(), add(), relu(), mask()>(static_cast<const T*>(x), static_cast<T*>(y),
                                                 static_cast<const T*>(post.residual), rows, center, scale,
                                                 shift, stream, post);
    });
  });
}
void RowsBackwardReduce(DType dt, const void* x, const void* dy, Rows rows, const float* center,
                        float* scratch, double* sum_dy, double* sum_dy_xc, const batch_norm::Gate& gate,
                        bool stream) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    WithGate<t()>(gate, [&](auto g, auto z, auto gy) {
      RowsBackwardReduceT<t(), g(), z()>(static_cast<const T*>(x), static_cast<const T*>(dy), gy,
                                         static_cast<T*>(gate.dz), rows, center, scratch, sum_dy, sum_dy_xc,
                                         stream);
    });
  });
}
void RowsBackwardApply(DType dt, const void* x, const void* dy, void* dx, Rows rows, const float* center,
                       const float* k_dy, const float* k_xc, const float* k_const, bool stream,
                       const batch_norm::Gate& gate) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    WithGate<t()>(gate, [&](auto g, auto z, auto gy) {
      RowsBackwardApplyT<t(), g(), z()>(static_cast<const T*>(x), static_cast<const T*>(dy),
                                        static_cast<T*>(dx), gy, static_cast<T*>(gate.dz), rows, center, k_dy,
                                        k_xc, k_const, stream);
    });
  });
}

bool RowsNormalizeAndSum(DType dt, const void* x, void* y, Rows rows, const float* center, const float* scale,
                         const float* shift, bool stream, const void* next, const float* pivot, double* sum,
                         double* sum_sq) {
  return WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    return RowsNormalizeAndSumT<t()>(static_cast<const T*>(x), static_cast<T*>(y), rows, center, scale, shift,
                                     stream, static_cast<const T*>(next), pivot, sum, sum_sq);
  });
}

void RowsApplyAndReduce(DType dt, const void* x, const void* dy, void* dx, Rows rows, const float* center,
                        const float* k_dy, const float* k_xc, const float* k_const, bool stream,
                        const void* next_x, const void* next_dy, const float* next_center, float* scratch,
                        double* sum_dy, double* sum_dy_xc) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    RowsApplyAndReduceT<t()>(static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dx), rows,
                             center, k_dy, k_xc, k_const, stream, static_cast<const T*>(next_x),
                             static_cast<const T*>(next_dy), next_center, scratch, sum_dy, sum_dy_xc);
  });
}
}  // namespace bnorm::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnorm::kernels::batch_norm {

HWY_EXPORT(ShiftedSums);
HWY_EXPORT(BlockMoments);
HWY_EXPORT(SumSqCentered);
HWY_EXPORT(Normalize);
HWY_EXPORT(BackwardReduce);
HWY_EXPORT(BackwardApply);
HWY_EXPORT(TinyPlanesHandled);
HWY_EXPORT(TinyPlaneGradSums);
HWY_EXPORT(TinyPlaneApply);
HWY_EXPORT(NormalizePlanes);
HWY_EXPORT(PlanesBackwardReduce);
HWY_EXPORT(ApplyPlanes);
HWY_EXPORT(RowsShiftedSums);
HWY_EXPORT(RowsSumSqCentered);
HWY_EXPORT(RowsNormalize);
HWY_EXPORT(RowsBackwardReduce);
HWY_EXPORT(RowsBackwardApply);
HWY_EXPORT(RowsNormalizeAndSum);
HWY_EXPORT(RowsApplyAndReduce);
HWY_EXPORT(FinishChannels);
HWY_EXPORT(BackwardCoefficients);

void shifted_sums(DType dtype, const void* x, Runs runs, float pivot, double out[2]) {
  HWY_DYNAMIC_DISPATCH(ShiftedSums)(dtype, x, runs, pivot, out);
}
void block_moments(DType dtype, const void* x, std::int64_t blocks, std::int64_t len, double* mean,
                   double* m2) {
  HWY_DYNAMIC_DISPATCH(BlockMoments)(dtype, x, blocks, len, mean, m2);
}
double sum_sq_centered(DType dtype, const void* x, Runs runs, float center) {
  return HWY_DYNAMIC_DISPATCH(SumSqCentered)(dtype, x, runs, center);
}
void normalize(DType dtype, const void* x, void* y, Runs runs, float center, float scale, float shift,
               bool stream, const Epilogue& post) {
  HWY_DYNAMIC_DISPATCH(Normalize)(dtype, x, y, runs, center, scale, shift, stream, post);
}
void backward_reduce(DType dtype, const void* x, const void* dy, Runs runs, float center, double sums[2],
                     const Gate& gate) {
  HWY_DYNAMIC_DISPATCH(BackwardReduce)(dtype, x, dy, runs, center, sums, gate);
}
void backward_apply(DType dtype, const void* x, const void* dy, void* dx, Runs runs, float center, float k_dy,
                    float k_xc, float k_const, bool stream, const Gate& gate) {
  HWY_DYNAMIC_DISPATCH(BackwardApply)(dtype, x, dy, dx, runs, center, k_dy, k_xc, k_const, stream, gate);
}
bool tiny_planes_handled(std::int64_t plane_len) {
  return HWY_DYNAMIC_DISPATCH(TinyPlanesHandled)(plane_len);
}
void tiny_plane_grad_sums(DType dtype, const void* x, const void* dy, std::int64_t planes,
                          std::int64_t plane_len, const float* center, double* sums) {
  HWY_DYNAMIC_DISPATCH(TinyPlaneGradSums)(dtype, x, dy, planes, plane_len, center, sums);
}
void tiny_plane_apply(DType dtype, const void* x, const void* dy, void* dx, std::int64_t planes,
                      std::int64_t plane_len, const float* center, const float* k_dy, const float* k_xc,
                      const float* k_const) {
  HWY_DYNAMIC_DISPATCH(TinyPlaneApply)(dtype, x, dy, dx, planes, plane_len, center, k_dy, k_xc, k_const);
}
void normalize_planes(DType dtype, const void* x, void* y, std::int64_t planes, std::int64_t plane_len,
                      std::int64_t first, std::int64_t period, const float* center, const float* scale,
                      const float* shift, bool stream, const Epilogue& post) {
  HWY_DYNAMIC_DISPATCH(NormalizePlanes)
  (dtype, x, y, planes, plane_len, first, period, center, scale, shift, stream, post);
}
void planes_backward_reduce(DType dtype, const void* x, const void* dy, std::int64_t planes,
                            std::int64_t plane_len, std::int64_t first, std::int64_t period,
                            const float* center, double* sums, const Gate& gate) {
  HWY_DYNAMIC_DISPATCH(PlanesBackwardReduce)
  (dtype, x, dy, planes, plane_len, first, period, center, sums, gate);
}
void apply_planes(DType dtype, const void* x, const void* dy, void* dx, std::int64_t planes,
                  std::int64_t plane_len, std::int64_t first, std::int64_t period, const float* center,
                  const float* k_dy, const float* k_xc, const float* k_const, bool stream, const Gate& gate) {
  HWY_DYNAMIC_DISPATCH(ApplyPlanes)
  (dtype, x, dy, dx, planes, plane_len, first, period, center, k_dy, k_xc, k_const, stream, gate);
}
void rows_shifted_sums(DType dtype, const void* x, Rows rows, const float* pivot_cyclic, float* scratch,
                       double* sum, double* sum_sq) {
  HWY_DYNAMIC_DISPATCH(RowsShiftedSums)(dtype, x, rows, pivot_cyclic, scratch, sum, sum_sq);
}
void rows_sum_sq_centered(DType dtype, const void* x, Rows rows, const float* center_cyclic, float* scratch,
                          double* acc) {
  HWY_DYNAMIC_DISPATCH(RowsSumSqCentered)(dtype, x, rows, center_cyclic, scratch, acc);
}
void rows_normalize(DType dtype, const void* x, void* y, Rows rows, const float* center_cyclic,
                    const float* scale_cyclic, const float* shift_cyclic, bool stream, const Epilogue& post) {
  HWY_DYNAMIC_DISPATCH(RowsNormalize)
  (dtype, x, y, rows, center_cyclic, scale_cyclic, shift_cyclic, stream, post);
}
void rows_backward_reduce(DType dtype, const void* x, const void* dy, Rows rows, const float* center_cyclic,
                          float* scratch, double* sum_dy, double* sum_dy_xc, const Gate& gate, bool stream) {
  HWY_DYNAMIC_DISPATCH(RowsBackwardReduce)
  (dtype, x, dy, rows, center_cyclic, scratch, sum_dy, sum_dy_xc, gate, stream);
}
void rows_backward_apply(DType dtype, const void* x, const void* dy, void* dx, Rows rows,
                         const float* center_cyclic, const float* k_dy_cyclic, const float* k_xc_cyclic,
                         const float* k_const_cyclic, bool stream, const Gate& gate) {
  HWY_DYNAMIC_DISPATCH(RowsBackwardApply)
  (dtype, x, dy, dx, rows, center_cyclic, k_dy_cyclic, k_xc_cyclic, k_const_cyclic, stream, gate);
}
bool rows_normalize_and_sum(DType dtype, const void* x, void* y, Rows rows, const float* center_cyclic,
                            const float* scale_cyclic, const float* shift_cyclic, bool stream,
                            const void* next, const float* pivot_cyclic, double* sum, double* sum_sq) {
  return HWY_DYNAMIC_DISPATCH(RowsNormalizeAndSum)(dtype, x, y, rows, center_cyclic, scale_cyclic,
                                                   shift_cyclic, stream, next, pivot_cyclic, sum, sum_sq);
}
void rows_apply_and_reduce(DType dtype, const void* x, const void* dy, void* dx, Rows rows,
                           const float* center_cyclic, const float* k_dy_cyclic, const float* k_xc_cyclic,
                           const float* k_const_cyclic, bool stream, const void* next_x, const void* next_dy,
                           const float* next_center_cyclic, float* scratch, double* sum_dy,
                           double* sum_dy_xc) {
  HWY_DYNAMIC_DISPATCH(RowsApplyAndReduce)
  (dtype, x, dy, dx, rows, center_cyclic, k_dy_cyclic, k_xc_cyclic, k_const_cyclic, stream, next_x, next_dy,
   next_center_cyclic, scratch, sum_dy, sum_dy_xc);
}
void finish_channels(std::int64_t n, double count, const double* mean, const double* m2, double eps,
                     ZeroVariance zero_variance, const float* gamma, const float* beta, float* center,
                     float* scale, float* shift, double* invstd) {
  HWY_DYNAMIC_DISPATCH(FinishChannels)
  (n, count, mean, m2, eps, zero_variance, gamma, beta, center, scale, shift, invstd);
}
void backward_coefficients(std::int64_t n, double inv_count, const double* sum_dy, const double* sum_dy_xc,
                           const float* gamma, const float* invstd, float* k_dy, float* k_xc,
                           float* k_const) {
  HWY_DYNAMIC_DISPATCH(BackwardCoefficients)
  (n, inv_count, sum_dy, sum_dy_xc, gamma, invstd, k_dy, k_xc, k_const);
}
void stream_fence() { hwy::FlushStream(); }

}  // namespace bnorm::kernels::batch_norm
#endif  // HWY_ONCE

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
#include "kernels/common/simd_io-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm::kernels::HWY_NAMESPACE {
namespace {

using batch_norm::cyclic_period;
using batch_norm::kCyclicPad;
using batch_norm::Rows;
using batch_norm::Runs;

// f32 partial sums are folded into double after this many additions per
// accumulator lane, which bounds their rounding error (DESIGN.md section 3).
constexpr size_t kAddsPerFlush = 64;

template <class F>
HWY_INLINE decltype(auto) WithDType(DType dtype, F&& f) {
  switch (dtype) {
    case DType::bf16:
      return f(std::integral_constant<DType, DType::bf16>{});
    case DType::f16:
      return f(std::integral_constant<DType, DType::f16>{});
    case DType::f32:
      break;
  }
  return f(std::integral_constant<DType, DType::f32>{});
}

// f32 partial sums are folded into double lane by lane (no horizontal step,
// so the loop never stalls) every kAddsPerFlush additions.
#if HWY_TARGET == HWY_SCALAR
struct DoubleLanes {
  double sum = 0.0;
  explicit DoubleLanes(DF) {}
  HWY_INLINE void Fold(DF d, VF v) { sum += SumLanesInDouble(d, v); }
  HWY_INLINE double Total(DF) const { return sum; }
};
#else
struct DoubleLanes {
  using DD = hn::Repartition<double, DF>;
  hn::Vec<DD> lo, hi;
  explicit DoubleLanes(DF) : lo(hn::Zero(DD())), hi(hn::Zero(DD())) {}
  HWY_INLINE void Fold(DF, VF v) {
    const hn::Half<DF> dh;
    const DD dd;
    lo = hn::Add(lo, hn::PromoteTo(dd, hn::LowerHalf(dh, v)));
    hi = hn::Add(hi, hn::PromoteTo(dd, hn::UpperHalf(dh, v)));
  }
  HWY_INLINE double Total(DF) const {
    HWY_ALIGN double lanes[hn::MaxLanes(DD())];
    hn::Store(hn::Add(lo, hi), DD(), lanes);
    double sum = 0.0;
    for (size_t i = 0; i < hn::Lanes(DD()); ++i) sum += lanes[i];
    return sum;
  }
};
#endif

// A running f32 vector sum folded into double every kAddsPerFlush additions.
struct FlushingSum {
  VF acc;
  size_t adds = 0;
  DoubleLanes total;

  explicit FlushingSum(DF d) : acc(hn::Zero(d)), total(d) {}
  HWY_INLINE void Add(DF d, VF v) {
    acc = hn::Add(acc, v);
    if (++adds == kAddsPerFlush) Fold(d);
  }
  HWY_INLINE void MulAdd(DF d, VF a, VF b) {
    acc = hn::MulAdd(a, b, acc);
    if (++adds == kAddsPerFlush) Fold(d);
  }
  HWY_INLINE void Fold(DF d) {
    total.Fold(d, acc);
    acc = hn::Zero(d);
    adds = 0;
  }
  HWY_INLINE double Total(DF d) {
    Fold(d);
    return total.Total(d);
  }
};

// Sum of term(x) over the runs: four independent f32 accumulators (so the
// additions pipeline), folded into double every kAddsPerFlush rounds. Tail
// lanes are loaded as `fill`, for which term must give 0.
template <DType kType, class Term>
HWY_INLINE double SumOverRuns(const Storage<kType>* HWY_RESTRICT x, Runs runs, float fill, const Term& term) {
  const DF d;
  const size_t lanes = hn::Lanes(d);
  VF a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  DoubleLanes total(d);
  size_t rounds = 0;
  auto fold = [&]() HWY_ATTR {
    total.Fold(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)));
    a0 = a1 = a2 = a3 = hn::Zero(d);
    rounds = 0;
  };
  for (std::int64_t r = 0; r < runs.count; ++r) {
    const Storage<kType>* HWY_RESTRICT p = x + r * runs.stride;
    const size_t n = static_cast<size_t>(runs.len);
    size_t i = 0;
    for (; i + 4 * lanes <= n; i += 4 * lanes) {
      a0 = hn::Add(a0, term(LoadAsF32<kType>(d, p + i)));
      a1 = hn::Add(a1, term(LoadAsF32<kType>(d, p + i + lanes)));
      a2 = hn::Add(a2, term(LoadAsF32<kType>(d, p + i + 2 * lanes)));
      a3 = hn::Add(a3, term(LoadAsF32<kType>(d, p + i + 3 * lanes)));
      if (++rounds == kAddsPerFlush) fold();
    }
    // Fewer than four vectors remain: at most one more addition each.
    if (i + lanes <= n) {
      a0 = hn::Add(a0, term(LoadAsF32<kType>(d, p + i)));
      i += lanes;
    }
    if (i + lanes <= n) {
      a1 = hn::Add(a1, term(LoadAsF32<kType>(d, p + i)));
      i += lanes;
    }
    if (i + lanes <= n) {
      a2 = hn::Add(a2, term(LoadAsF32<kType>(d, p + i)));
      i += lanes;
    }
    if (i < n) a3 = hn::Add(a3, term(LoadPartialAsF32<kType>(d, p + i, n - i, fill)));
    if (++rounds >= kAddsPerFlush) fold();
  }
  fold();
  return total.Total(d);
}

template <DType kType>
double SumShiftedT(const Storage<kType>* x, Runs runs, float pivot) {
  const DF d;
  const VF vp = hn::Set(d, pivot);
  return SumOverRuns<kType>(x, runs, pivot, [vp](VF v) HWY_ATTR { return hn::Sub(v, vp); });
}

template <DType kType>
double SumSqCenteredT(const Storage<kType>* x, Runs runs, float center) {
  const DF d;
  const VF vc = hn::Set(d, center);
  return SumOverRuns<kType>(x, runs, center, [vc](VF v) HWY_ATTR {
    const VF dv = hn::Sub(v, vc);
    return hn::Mul(dv, dv);
  });
}

// Splits every run into pieces of at most kChunk elements, so that
// accumulations riding along an elementwise pass get flushed in time and
// streaming alignment is found once per piece.
constexpr size_t kPieceElements = 1 << 14;

template <DType kType>
double NormalizeT(const Storage<kType>* x, Storage<kType>* y, Runs runs, float center, float scale,
                  float shift, bool stream, const Storage<kType>* next, float next_pivot) {
  const DF d;
  const VF vc = hn::Set(d, center), vs = hn::Set(d, scale), vb = hn::Set(d, shift);
  const VF vp = hn::Set(d, next_pivot);
  FlushingSum next_sum(d);
  for (std::int64_t r = 0; r < runs.count; ++r) {
    const std::int64_t offset = r * runs.stride;
    const size_t len = static_cast<size_t>(runs.len);
    for (size_t i0 = 0; i0 < len; i0 += kPieceElements) {
      const Storage<kType>* HWY_RESTRICT p = x + offset + i0;
      const Storage<kType>* HWY_RESTRICT pn = next ? next + offset + i0 : nullptr;
      ForEachOutputVector<kType>(d, y + offset + i0, std::min(kPieceElements, len - i0), stream,
                                 [&](size_t i, size_t count) HWY_ATTR {
                                   // The next channel is read while this one is written, so DRAM
                                   // reads and writes overlap as in a single streaming pass.
                                   if (pn)
                                     next_sum.Add(
                                         d, hn::Sub(LoadSomeAsF32<kType>(d, pn + i, count, next_pivot), vp));
                                   const VF v = LoadSomeAsF32<kType>(d, p + i, count, 0.0f);
                                   return hn::MulAdd(hn::Sub(v, vc), vs, vb);
                                 });
    }
  }
  return next_sum.Total(d);
}

template <DType kType>
void BackwardReduceT(const Storage<kType>* x, const Storage<kType>* dy, Runs runs, float center,
                     double sums[2]) {
  const DF d;
  const size_t lanes = hn::Lanes(d);
  const VF vc = hn::Set(d, center);
  FlushingSum g0(d), g1(d), h0(d), h1(d);
  for (std::int64_t r = 0; r < runs.count; ++r) {
    const Storage<kType>* HWY_RESTRICT px = x + r * runs.stride;
    const Storage<kType>* HWY_RESTRICT pg = dy + r * runs.stride;
    const size_t len = static_cast<size_t>(runs.len);
    size_t i = 0;
    for (; i + 2 * lanes <= len; i += 2 * lanes) {
      const VF gv0 = LoadAsF32<kType>(d, pg + i), gv1 = LoadAsF32<kType>(d, pg + i + lanes);
      g0.Add(d, gv0);
      g1.Add(d, gv1);
      h0.MulAdd(d, gv0, hn::Sub(LoadAsF32<kType>(d, px + i), vc));
      h1.MulAdd(d, gv1, hn::Sub(LoadAsF32<kType>(d, px + i + lanes), vc));
    }
    for (; i < len; i += lanes) {
      const size_t count = std::min(lanes, len - i);
      // dy is padded with 0, so padded lanes add nothing to either sum.
      const VF gv = LoadSomeAsF32<kType>(d, pg + i, count, 0.0f);
      g0.Add(d, gv);
      h0.MulAdd(d, gv, hn::Sub(LoadSomeAsF32<kType>(d, px + i, count, center), vc));
    }
  }
  sums[0] += g0.Total(d) + g1.Total(d);
  sums[1] += h0.Total(d) + h1.Total(d);
}

template <DType kType>
void BackwardApplyT(const Storage<kType>* x, const Storage<kType>* dy, Storage<kType>* dx, Runs runs,
                    float center, float k_dy, float k_xc, float k_const, bool stream,
                    const Storage<kType>* next_x, const Storage<kType>* next_dy, float next_center,
                    double* next_sums) {
  const DF d;
  const VF vc = hn::Set(d, center), a = hn::Set(d, k_dy), b = hn::Set(d, k_xc), k = hn::Set(d, k_const);
  const VF vnc = hn::Set(d, next_center);
  FlushingSum g(d), h(d);
  for (std::int64_t r = 0; r < runs.count; ++r) {
    const std::int64_t offset = r * runs.stride;
    const size_t len = static_cast<size_t>(runs.len);
    for (size_t i0 = 0; i0 < len; i0 += kPieceElements) {
      const Storage<kType>* HWY_RESTRICT px = x + offset + i0;
      const Storage<kType>* HWY_RESTRICT pg = dy + offset + i0;
      const Storage<kType>* HWY_RESTRICT nx = next_x ? next_x + offset + i0 : nullptr;
      const Storage<kType>* HWY_RESTRICT ng = next_dy ? next_dy + offset + i0 : nullptr;
      ForEachOutputVector<kType>(
          d, dx + offset + i0, std::min(kPieceElements, len - i0), stream,
          [&](size_t i, size_t count) HWY_ATTR {
            if (nx) {
              // Reduce the next channel while this one is written.
              const VF gv = LoadSomeAsF32<kType>(d, ng + i, count, 0.0f);
              g.Add(d, gv);
              h.MulAdd(d, gv, hn::Sub(LoadSomeAsF32<kType>(d, nx + i, count, next_center), vnc));
            }
            const VF xv = LoadSomeAsF32<kType>(d, px + i, count, 0.0f);
            const VF gv = LoadSomeAsF32<kType>(d, pg + i, count, 0.0f);
            return hn::MulAdd(a, gv, hn::MulAdd(b, hn::Sub(xv, vc), k));
          });
    }
  }
  if (next_sums) {
    next_sums[0] += g.Total(d);
    next_sums[1] += h.Total(d);
  }
}

// ---- channels-first planes walked in memory order ----
//
// `planes` consecutive planes of S elements; plane i uses parameter index
// (first + i) % period. A vector that straddles two planes computes both
// and blends them, so the walk is one aligned (streamable) pass.

// Adds delta to acc[i, i + Lanes): every lane is written back (padded lanes
// of delta are zero), so acc needs Lanes floats of slack at its end.
HWY_INLINE void AccumulateAt(DF d, float* HWY_RESTRICT acc, size_t i, VF delta) {
  hn::StoreU(hn::Add(hn::LoadU(d, acc + i), delta), d, acc + i);
}

// Where a planes walk is: elements left in the current plane and the
// parameter index of the current plane.
struct PlaneCursor {
  size_t S, left;
  std::int64_t index, period;
};

// One vector of the normalize walk at element i with `count` valid lanes.
// The hot loop calls it with count == Lanes; the head and tail with fewer.
template <DType kType>
struct NormalizeWalk {
  const Storage<kType>* HWY_RESTRICT x;
  const Storage<kType>* HWY_RESTRICT next;
  const float* center;
  const float* scale;
  const float* shift;
  const float* next_pivot;
  float* HWY_RESTRICT next_acc;

  HWY_INLINE void Load(DF d, std::int64_t k, VF& vc, VF& vs, VF& vb, VF& vp) const {
    vc = hn::Set(d, center[k]);
    vs = hn::Set(d, scale[k]);
    vb = hn::Set(d, shift[k]);
    vp = next ? hn::Set(d, next_pivot[k]) : hn::Zero(d);
  }
  HWY_INLINE VF Step(DF d, size_t i, size_t count, PlaneCursor& cur, VF& vc, VF& vs, VF& vb, VF& vp) const {
    const VF v = LoadSomeAsF32<kType>(d, x + i, count, 0.0f);
    VF out = hn::MulAdd(hn::Sub(v, vc), vs, vb);
    VF pivot = vp;
    if (HWY_UNLIKELY(cur.left <= count)) {
      // The vector reaches the next plane: blend both planes' results.
      const size_t split = cur.left;
      cur.left = cur.S - (count - split);
      if (++cur.index == cur.period) cur.index = 0;
      Load(d, cur.index, vc, vs, vb, vp);
      if (split < count) {
        const auto head = hn::FirstN(d, split);
        out = hn::IfThenElse(head, out, hn::MulAdd(hn::Sub(v, vc), vs, vb));
        pivot = hn::IfThenElse(head, pivot, vp);
      }
    } else {
      cur.left -= count;
    }
    if (next) {
      // The next block is read while this one is written, so DRAM reads and
      // writes overlap as in a single streaming pass.
      VF delta = hn::Sub(LoadSomeAsF32<kType>(d, next + i, count, 0.0f), pivot);
      if (count != hn::Lanes(d)) delta = hn::IfThenElseZero(hn::FirstN(d, count), delta);
      AccumulateAt(d, next_acc, i, delta);
    }
    return out;
  }
};

// One vector of the backward apply walk.
template <DType kType>
struct ApplyWalk {
  const Storage<kType>* HWY_RESTRICT x;
  const Storage<kType>* HWY_RESTRICT dy;
  const Storage<kType>* HWY_RESTRICT next_x;
  const Storage<kType>* HWY_RESTRICT next_dy;
  const float* center;
  const float* k_dy;
  const float* k_xc;
  const float* k_const;
  const float* next_center;
  float* HWY_RESTRICT next_acc_dy;
  float* HWY_RESTRICT next_acc_dy_xc;

  struct Params {
    VF c, a, b, k, nc;
  };
  HWY_INLINE void Load(DF d, std::int64_t i, Params& p) const {
    p.c = hn::Set(d, center[i]);
    p.a = hn::Set(d, k_dy[i]);
    p.b = hn::Set(d, k_xc[i]);
    p.k = hn::Set(d, k_const[i]);
    p.nc = next_x ? hn::Set(d, next_center[i]) : hn::Zero(d);
  }
  HWY_INLINE VF Step(DF d, size_t i, size_t count, PlaneCursor& cur, Params& p) const {
    const VF xv = LoadSomeAsF32<kType>(d, x + i, count, 0.0f);
    const VF gv = LoadSomeAsF32<kType>(d, dy + i, count, 0.0f);
    VF out = hn::MulAdd(p.a, gv, hn::MulAdd(p.b, hn::Sub(xv, p.c), p.k));
    VF nc = p.nc;
    if (HWY_UNLIKELY(cur.left <= count)) {
      const size_t split = cur.left;
      cur.left = cur.S - (count - split);
      if (++cur.index == cur.period) cur.index = 0;
      Load(d, cur.index, p);
      if (split < count) {
        const auto head = hn::FirstN(d, split);
        out = hn::IfThenElse(head, out, hn::MulAdd(p.a, gv, hn::MulAdd(p.b, hn::Sub(xv, p.c), p.k)));
        nc = hn::IfThenElse(head, nc, p.nc);
      }
    } else {
      cur.left -= count;
    }
    if (next_x) {
      // dy is padded with 0, so padded lanes add nothing.
      const VF ng = LoadSomeAsF32<kType>(d, next_dy + i, count, 0.0f);
      const VF nxc = hn::Sub(LoadSomeAsF32<kType>(d, next_x + i, count, 0.0f), nc);
      AccumulateAt(d, next_acc_dy, i, ng);
      AccumulateAt(d, next_acc_dy_xc, i, hn::Mul(ng, nxc));
    }
    return out;
  }
};

// Number of leading elements to store normally so that y + head is aligned
// for streaming, or SIZE_MAX when it can never be (not element-aligned).
template <DType kType>
HWY_INLINE size_t StreamHead(DF d, const Storage<kType>* y, size_t n) {
  const size_t align = hn::Lanes(d) * sizeof(Storage<kType>);
  const size_t misalign = reinterpret_cast<std::uintptr_t>(y) % align;
  if (misalign % sizeof(Storage<kType>) != 0) return SIZE_MAX;
  return misalign == 0 ? 0 : std::min(n, (align - misalign) / sizeof(Storage<kType>));
}

// Short planes (fewer elements than a vector): one partial vector each.
template <DType kType, class Walk, class... State>
void WalkShortPlanes(DF d, const Walk& walk, Storage<kType>* y, size_t planes, PlaneCursor cur,
                     State&... state) {
  for (size_t p = 0; p < planes; ++p) {
    const size_t i = p * cur.S;
    cur.left = cur.S + 1;  // a partial vector never reaches the next plane here
    const VF out = walk.Step(d, i, cur.S, cur, state...);
    StorePartialFromF32<kType>(d, out, y + i, cur.S);
    walk.Load(d, cur.index = (cur.index + 1 == cur.period ? 0 : cur.index + 1), state...);
  }
}

template <DType kType, class Walk, class... State>
HWY_INLINE void WalkPlanes(DF d, const Walk& walk, Storage<kType>* HWY_RESTRICT y, size_t n, bool stream,
                           PlaneCursor cur, State&... state) {
  const size_t lanes = hn::Lanes(d);
  size_t i = 0;
  size_t head = stream ? StreamHead<kType>(d, y, n) : 0;
  if (head == SIZE_MAX) {
    stream = false;
    head = 0;
  }
  if (head) {
    StorePartialFromF32<kType>(d, walk.Step(d, 0, head, cur, state...), y, head);
    i = head;
  }
  if (stream) {
    for (; i + lanes <= n; i += lanes) StreamFromF32<kType>(d, walk.Step(d, i, lanes, cur, state...), y + i);
  } else {
    for (; i + lanes <= n; i += lanes) StoreFromF32<kType>(d, walk.Step(d, i, lanes, cur, state...), y + i);
  }
  if (i < n) StorePartialFromF32<kType>(d, walk.Step(d, i, n - i, cur, state...), y + i, n - i);
}

template <DType kType>
void NormalizePlanesT(const Storage<kType>* x, Storage<kType>* y, std::int64_t planes, std::int64_t plane_len,
                      std::int64_t first, std::int64_t period, const float* center, const float* scale,
                      const float* shift, bool stream, const Storage<kType>* next, const float* next_pivot,
                      float* next_acc) {
  const DF d;
  const NormalizeWalk<kType> walk{x, next, center, scale, shift, next_pivot, next_acc};
  const size_t S = static_cast<size_t>(plane_len);
  PlaneCursor cur{S, S, first, period};
  VF vc, vs, vb, vp;
  walk.Load(d, first, vc, vs, vb, vp);
  if (S < hn::Lanes(d)) {
    WalkShortPlanes<kType>(d, walk, y, static_cast<size_t>(planes), cur, vc, vs, vb, vp);
  } else {
    WalkPlanes<kType>(d, walk, y, static_cast<size_t>(planes) * S, stream, cur, vc, vs, vb, vp);
  }
}

template <DType kType>
void ApplyPlanesT(const Storage<kType>* x, const Storage<kType>* dy, Storage<kType>* dx, std::int64_t planes,
                  std::int64_t plane_len, std::int64_t first, std::int64_t period, const float* center,
                  const float* k_dy, const float* k_xc, const float* k_const, bool stream,
                  const Storage<kType>* next_x, const Storage<kType>* next_dy, const float* next_center,
                  float* next_acc_dy, float* next_acc_dy_xc) {
  const DF d;
  const ApplyWalk<kType> walk{x,    dy,      next_x,      next_dy,     center,        k_dy,
                              k_xc, k_const, next_center, next_acc_dy, next_acc_dy_xc};
  const size_t S = static_cast<size_t>(plane_len);
  PlaneCursor cur{S, S, first, period};
  typename ApplyWalk<kType>::Params p;
  walk.Load(d, first, p);
  if (S < hn::Lanes(d)) {
    WalkShortPlanes<kType>(d, walk, dx, static_cast<size_t>(planes), cur, p);
  } else {
    WalkPlanes<kType>(d, walk, dx, static_cast<size_t>(planes) * S, stream, cur, p);
  }
}

// ---- channels-last blocks with cyclic per-channel arrays ----

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
// arrays; every kAddsPerFlush * period elements `flush()` runs.
template <class Step, class Flush>
HWY_INLINE void WalkRows(DF d, Rows rows, Step&& step, Flush&& flush) {
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
    if (pending >= flush_elems) {
      flush();
      pending = 0;
    }
  }
  if (i < n) step(i, n - i, c);
  flush();
}

template <DType kType>
void RowsSumShiftedT(const Storage<kType>* x, Rows rows, const float* pivot, float* scratch, double* acc) {
  const DF d;
  std::memset(scratch, 0, static_cast<size_t>(cyclic_period(rows.channels) + kCyclicPad) * sizeof(float));
  WalkRows(
      d, rows,
      [&](size_t i, size_t count, size_t c) {
        VF v = hn::Sub(LoadSomeAsF32<kType>(d, x + i, count, 0.0f), hn::LoadU(d, pivot + c));
        v = hn::IfThenElseZero(hn::FirstN(d, count), v);
        hn::StoreU(hn::Add(hn::LoadU(d, scratch + c), v), d, scratch + c);
      },
      [&] { FoldCyclic(scratch, rows.channels, acc); });
}

template <DType kType>
void RowsSumSqCenteredT(const Storage<kType>* x, Rows rows, const float* center, float* scratch,
                        double* acc) {
  const DF d;
  std::memset(scratch, 0, static_cast<size_t>(cyclic_period(rows.channels) + kCyclicPad) * sizeof(float));
  WalkRows(
      d, rows,
      [&](size_t i, size_t count, size_t c) {
        VF v = hn::Sub(LoadSomeAsF32<kType>(d, x + i, count, 0.0f), hn::LoadU(d, center + c));
        v = hn::IfThenElseZero(hn::FirstN(d, count), v);
        hn::StoreU(hn::MulAdd(v, v, hn::LoadU(d, scratch + c)), d, scratch + c);
      },
      [&] { FoldCyclic(scratch, rows.channels, acc); });
}

template <DType kType>
void RowsNormalizeT(const Storage<kType>* x, Storage<kType>* y, Rows rows, const float* center,
                    const float* scale, const float* shift, bool stream) {
  const DF d;
  const size_t period = static_cast<size_t>(cyclic_period(rows.channels));
  size_t c = 0;
  ForEachOutputVector<kType>(d, y, static_cast<size_t>(rows.elements), stream, [&](size_t i, size_t count) {
    const VF v = LoadSomeAsF32<kType>(d, x + i, count, 0.0f);
    const VF out =
        hn::MulAdd(hn::Sub(v, hn::LoadU(d, center + c)), hn::LoadU(d, scale + c), hn::LoadU(d, shift + c));
    c += count;
    if (c >= period) c -= period;
    return out;
  });
}

template <DType kType>
void RowsBackwardReduceT(const Storage<kType>* x, const Storage<kType>* dy, Rows rows, const float* center,
                         float* scratch, double* sum_dy, double* sum_dy_xc) {
  const DF d;
  const size_t length = static_cast<size_t>(cyclic_period(rows.channels) + kCyclicPad);
  float* HWY_RESTRICT acc_dy = scratch;
  float* HWY_RESTRICT acc_dy_xc = scratch + length;
  std::memset(scratch, 0, 2 * length * sizeof(float));
  WalkRows(
      d, rows,
      [&](size_t i, size_t count, size_t c) {
        // dy is padded with 0, so padded lanes add nothing.
        const VF gv = LoadSomeAsF32<kType>(d, dy + i, count, 0.0f);
        const VF xc = hn::Sub(LoadSomeAsF32<kType>(d, x + i, count, 0.0f), hn::LoadU(d, center + c));
        hn::StoreU(hn::Add(hn::LoadU(d, acc_dy + c), gv), d, acc_dy + c);
        hn::StoreU(hn::MulAdd(gv, xc, hn::LoadU(d, acc_dy_xc + c)), d, acc_dy_xc + c);
      },
      [&] {
        FoldCyclic(acc_dy, rows.channels, sum_dy);
        FoldCyclic(acc_dy_xc, rows.channels, sum_dy_xc);
      });
}

template <DType kType>
void RowsBackwardApplyT(const Storage<kType>* x, const Storage<kType>* dy, Storage<kType>* dx, Rows rows,
                        const float* center, const float* k_dy, const float* k_xc, const float* k_const,
                        bool stream) {
  const DF d;
  const size_t period = static_cast<size_t>(cyclic_period(rows.channels));
  size_t c = 0;
  ForEachOutputVector<kType>(d, dx, static_cast<size_t>(rows.elements), stream, [&](size_t i, size_t count) {
    const VF xv = LoadSomeAsF32<kType>(d, x + i, count, 0.0f);
    const VF gv = LoadSomeAsF32<kType>(d, dy + i, count, 0.0f);
    const VF xc = hn::Sub(xv, hn::LoadU(d, center + c));
    const VF out = hn::MulAdd(hn::LoadU(d, k_dy + c), gv,
                              hn::MulAdd(hn::LoadU(d, k_xc + c), xc, hn::LoadU(d, k_const + c)));
    c += count;
    if (c >= period) c -= period;
    return out;
  });
}

}  // namespace

void FinishChannels(std::int64_t n, double count, const double* mean, const double* m2, double eps,
                    const float* gamma, const float* beta, float* center, float* scale, float* shift,
                    double* invstd) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  const size_t lanes = hn::Lanes(dd);
  const auto inv_count = hn::Set(dd, 1.0 / count), veps = hn::Set(dd, eps), one = hn::Set(dd, 1.0);
  const auto zero = hn::Zero(dd);
  // Full vectors straight from the arrays; the last partial one from a
  // padded copy.
  auto step = [&](const double* pm, const double* pq, const float* pg, const float* pb, float* oc, float* os,
                  float* ob, double* oi) HWY_ATTR {
    const auto vm = hn::LoadU(dd, pm);
    const auto is = hn::Div(one, hn::Sqrt(hn::MulAdd(hn::LoadU(dd, pq), inv_count, veps)));
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

// ---- per-target entry points (exported below) ----

double SumShifted(DType dt, const void* x, Runs runs, float pivot) {
  return WithDType(
      dt, [&](auto t) { return SumShiftedT<t()>(static_cast<const Storage<t()>*>(x), runs, pivot); });
}
double SumSqCentered(DType dt, const void* x, Runs runs, float center) {
  return WithDType(
      dt, [&](auto t) { return SumSqCenteredT<t()>(static_cast<const Storage<t()>*>(x), runs, center); });
}
double Normalize(DType dt, const void* x, void* y, Runs runs, float center, float scale, float shift,
                 bool stream, const void* next, float next_pivot) {
  return WithDType(dt, [&](auto t) {
    return NormalizeT<t()>(static_cast<const Storage<t()>*>(x), static_cast<Storage<t()>*>(y), runs, center,
                           scale, shift, stream, static_cast<const Storage<t()>*>(next), next_pivot);
  });
}
void NormalizePlanes(DType dt, const void* x, void* y, std::int64_t planes, std::int64_t plane_len,
                     std::int64_t first, std::int64_t period, const float* center, const float* scale,
                     const float* shift, bool stream, const void* next, const float* next_pivot,
                     float* next_acc) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    NormalizePlanesT<t()>(static_cast<const T*>(x), static_cast<T*>(y), planes, plane_len, first, period,
                          center, scale, shift, stream, static_cast<const T*>(next), next_pivot, next_acc);
  });
}
void ApplyPlanes(DType dt, const void* x, const void* dy, void* dx, std::int64_t planes,
                 std::int64_t plane_len, std::int64_t first, std::int64_t period, const float* center,
                 const float* k_dy, const float* k_xc, const float* k_const, bool stream, const void* next_x,
                 const void* next_dy, const float* next_center, float* next_acc_dy, float* next_acc_dy_xc) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    ApplyPlanesT<t()>(static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dx), planes,
                      plane_len, first, period, center, k_dy, k_xc, k_const, stream,
                      static_cast<const T*>(next_x), static_cast<const T*>(next_dy), next_center, next_acc_dy,
                      next_acc_dy_xc);
  });
}
void BackwardReduce(DType dt, const void* x, const void* dy, Runs runs, float center, double sums[2]) {
  WithDType(dt, [&](auto t) {
    BackwardReduceT<t()>(static_cast<const Storage<t()>*>(x), static_cast<const Storage<t()>*>(dy), runs,
                         center, sums);
  });
}
void BackwardApply(DType dt, const void* x, const void* dy, void* dx, Runs runs, float center, float k_dy,
                   float k_xc, float k_const, bool stream, const void* next_x, const void* next_dy,
                   float next_center, double* next_sums) {
  WithDType(dt, [&](auto t) {
    using T = Storage<t()>;
    BackwardApplyT<t()>(static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dx), runs,
                        center, k_dy, k_xc, k_const, stream, static_cast<const T*>(next_x),
                        static_cast<const T*>(next_dy), next_center, next_sums);
  });
}
void RowsSumShifted(DType dt, const void* x, Rows rows, const float* pivot, float* scratch, double* acc) {
  WithDType(dt, [&](auto t) {
    RowsSumShiftedT<t()>(static_cast<const Storage<t()>*>(x), rows, pivot, scratch, acc);
  });
}
void RowsSumSqCentered(DType dt, const void* x, Rows rows, const float* center, float* scratch, double* acc) {
  WithDType(dt, [&](auto t) {
    RowsSumSqCenteredT<t()>(static_cast<const Storage<t()>*>(x), rows, center, scratch, acc);
  });
}
void RowsNormalize(DType dt, const void* x, void* y, Rows rows, const float* center, const float* scale,
                   const float* shift, bool stream) {
  WithDType(dt, [&](auto t) {
    RowsNormalizeT<t()>(static_cast<const Storage<t()>*>(x), static_cast<Storage<t()>*>(y), rows, center,
                        scale, shift, stream);
  });
}
void RowsBackwardReduce(DType dt, const void* x, const void* dy, Rows rows, const float* center,
                        float* scratch, double* sum_dy, double* sum_dy_xc) {
  WithDType(dt, [&](auto t) {
    RowsBackwardReduceT<t()>(static_cast<const Storage<t()>*>(x), static_cast<const Storage<t()>*>(dy), rows,
                             center, scratch, sum_dy, sum_dy_xc);
  });
}
void RowsBackwardApply(DType dt, const void* x, const void* dy, void* dx, Rows rows, const float* center,
                       const float* k_dy, const float* k_xc, const float* k_const, bool stream) {
  WithDType(dt, [&](auto t) {
    RowsBackwardApplyT<t()>(static_cast<const Storage<t()>*>(x), static_cast<const Storage<t()>*>(dy),
                            static_cast<Storage<t()>*>(dx), rows, center, k_dy, k_xc, k_const, stream);
  });
}

}  // namespace bnorm::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnorm::kernels::batch_norm {

HWY_EXPORT(SumShifted);
HWY_EXPORT(SumSqCentered);
HWY_EXPORT(Normalize);
HWY_EXPORT(NormalizePlanes);
HWY_EXPORT(FinishChannels);
HWY_EXPORT(ApplyPlanes);
HWY_EXPORT(BackwardReduce);
HWY_EXPORT(BackwardApply);
HWY_EXPORT(RowsSumShifted);
HWY_EXPORT(RowsSumSqCentered);
HWY_EXPORT(RowsNormalize);
HWY_EXPORT(RowsBackwardReduce);
HWY_EXPORT(RowsBackwardApply);

double sum_shifted(DType dtype, const void* x, Runs runs, float pivot) {
  return HWY_DYNAMIC_DISPATCH(SumShifted)(dtype, x, runs, pivot);
}
double sum_sq_centered(DType dtype, const void* x, Runs runs, float center) {
  return HWY_DYNAMIC_DISPATCH(SumSqCentered)(dtype, x, runs, center);
}
double normalize(DType dtype, const void* x, void* y, Runs runs, float center, float scale, float shift,
                 bool stream, const void* next, float next_pivot) {
  return HWY_DYNAMIC_DISPATCH(Normalize)(dtype, x, y, runs, center, scale, shift, stream, next, next_pivot);
}
void normalize_planes(DType dtype, const void* x, void* y, std::int64_t planes, std::int64_t plane_len,
                      std::int64_t first, std::int64_t period, const float* center, const float* scale,
                      const float* shift, bool stream, const void* next, const float* next_pivot,
                      float* next_acc) {
  HWY_DYNAMIC_DISPATCH(NormalizePlanes)
  (dtype, x, y, planes, plane_len, first, period, center, scale, shift, stream, next, next_pivot, next_acc);
}
void apply_planes(DType dtype, const void* x, const void* dy, void* dx, std::int64_t planes,
                  std::int64_t plane_len, std::int64_t first, std::int64_t period, const float* center,
                  const float* k_dy, const float* k_xc, const float* k_const, bool stream, const void* next_x,
                  const void* next_dy, const float* next_center, float* next_acc_dy, float* next_acc_dy_xc) {
  HWY_DYNAMIC_DISPATCH(ApplyPlanes)
  (dtype, x, dy, dx, planes, plane_len, first, period, center, k_dy, k_xc, k_const, stream, next_x, next_dy,
   next_center, next_acc_dy, next_acc_dy_xc);
}
void backward_reduce(DType dtype, const void* x, const void* dy, Runs runs, float center, double sums[2]) {
  HWY_DYNAMIC_DISPATCH(BackwardReduce)(dtype, x, dy, runs, center, sums);
}
void backward_apply(DType dtype, const void* x, const void* dy, void* dx, Runs runs, float center, float k_dy,
                    float k_xc, float k_const, bool stream, const void* next_x, const void* next_dy,
                    float next_center, double* next_sums) {
  HWY_DYNAMIC_DISPATCH(BackwardApply)
  (dtype, x, dy, dx, runs, center, k_dy, k_xc, k_const, stream, next_x, next_dy, next_center, next_sums);
}
void rows_sum_shifted(DType dtype, const void* x, Rows rows, const float* pivot_cyclic, float* scratch,
                      double* acc) {
  HWY_DYNAMIC_DISPATCH(RowsSumShifted)(dtype, x, rows, pivot_cyclic, scratch, acc);
}
void rows_sum_sq_centered(DType dtype, const void* x, Rows rows, const float* center_cyclic, float* scratch,
                          double* acc) {
  HWY_DYNAMIC_DISPATCH(RowsSumSqCentered)(dtype, x, rows, center_cyclic, scratch, acc);
}
void rows_normalize(DType dtype, const void* x, void* y, Rows rows, const float* center_cyclic,
                    const float* scale_cyclic, const float* shift_cyclic, bool stream) {
  HWY_DYNAMIC_DISPATCH(RowsNormalize)(dtype, x, y, rows, center_cyclic, scale_cyclic, shift_cyclic, stream);
}
void rows_backward_reduce(DType dtype, const void* x, const void* dy, Rows rows, const float* center_cyclic,
                          float* scratch, double* sum_dy, double* sum_dy_xc) {
  HWY_DYNAMIC_DISPATCH(RowsBackwardReduce)(dtype, x, dy, rows, center_cyclic, scratch, sum_dy, sum_dy_xc);
}
void rows_backward_apply(DType dtype, const void* x, const void* dy, void* dx, Rows rows,
                         const float* center_cyclic, const float* k_dy_cyclic, const float* k_xc_cyclic,
                         const float* k_const_cyclic, bool stream) {
  HWY_DYNAMIC_DISPATCH(RowsBackwardApply)
  (dtype, x, dy, dx, rows, center_cyclic, k_dy_cyclic, k_xc_cyclic, k_const_cyclic, stream);
}
void finish_channels(std::int64_t n, double count, const double* mean, const double* m2, double eps,
                     const float* gamma, const float* beta, float* center, float* scale, float* shift,
                     double* invstd) {
  HWY_DYNAMIC_DISPATCH(FinishChannels)(n, count, mean, m2, eps, gamma, beta, center, scale, shift, invstd);
}
void stream_fence() { hwy::FlushStream(); }

}  // namespace bnorm::kernels::batch_norm
#endif  // HWY_ONCE

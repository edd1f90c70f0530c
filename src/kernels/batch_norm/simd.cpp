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

// Accumulates term(x) over the runs in four f32 vector accumulators that are
// folded into double every kAddsPerFlush additions. term maps an f32 vector
// of x to the vector to add; tail lanes are loaded as `fill`, for which term
// must give 0.
template <DType kType, class Term>
HWY_INLINE double SumOverRuns(const Storage<kType>* HWY_RESTRICT x, Runs runs, float fill, Term&& term) {
  const DF d;
  const size_t lanes = hn::Lanes(d);
  const size_t flush_elems = 4 * lanes * kAddsPerFlush;
  double total = 0.0;
  VF a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  size_t pending = 0;
  auto flush = [&] {
    total +=
        SumLanesInDouble(d, a0) + SumLanesInDouble(d, a1) + SumLanesInDouble(d, a2) + SumLanesInDouble(d, a3);
    a0 = a1 = a2 = a3 = hn::Zero(d);
    pending = 0;
  };
  for (std::int64_t r = 0; r < runs.count; ++r) {
    const Storage<kType>* HWY_RESTRICT p = x + r * runs.stride;
    const size_t len = static_cast<size_t>(runs.len);
    size_t i = 0;
    for (; i + 4 * lanes <= len; i += 4 * lanes) {
      a0 = hn::Add(a0, term(LoadAsF32<kType>(d, p + i)));
      a1 = hn::Add(a1, term(LoadAsF32<kType>(d, p + i + lanes)));
      a2 = hn::Add(a2, term(LoadAsF32<kType>(d, p + i + 2 * lanes)));
      a3 = hn::Add(a3, term(LoadAsF32<kType>(d, p + i + 3 * lanes)));
      pending += 4 * lanes;
      if (pending >= flush_elems) flush();
    }
    // The rest (fewer than 4 vectors) goes one vector per accumulator, so no
    // accumulator takes more than one addition per pending round.
    VF* const accs[4] = {&a0, &a1, &a2, &a3};
    for (size_t k = 0; i < len; i += lanes, ++k) {
      *accs[k] = hn::Add(*accs[k], term(LoadSomeAsF32<kType>(d, p + i, std::min(lanes, len - i), fill)));
    }
    pending += 4 * lanes;
    if (pending >= flush_elems) flush();
  }
  flush();
  return total;
}

template <DType kType>
double SumShiftedT(const Storage<kType>* x, Runs runs, float pivot) {
  const DF d;
  const VF vp = hn::Set(d, pivot);
  return SumOverRuns<kType>(x, runs, pivot, [&](VF v) { return hn::Sub(v, vp); });
}

template <DType kType>
double SumSqCenteredT(const Storage<kType>* x, Runs runs, float center) {
  const DF d;
  const VF vc = hn::Set(d, center);
  return SumOverRuns<kType>(x, runs, center, [&](VF v) {
    const VF dv = hn::Sub(v, vc);
    return hn::Mul(dv, dv);
  });
}

template <DType kType>
void NormalizeT(const Storage<kType>* x, Storage<kType>* y, Runs runs, float center, float scale, float shift,
                bool stream) {
  const DF d;
  const VF vc = hn::Set(d, center), vs = hn::Set(d, scale), vb = hn::Set(d, shift);
  for (std::int64_t r = 0; r < runs.count; ++r) {
    const Storage<kType>* HWY_RESTRICT p = x + r * runs.stride;
    ForEachOutputVector<kType>(d, y + r * runs.stride, static_cast<size_t>(runs.len), stream,
                               [&](size_t i, size_t count) {
                                 const VF v = LoadSomeAsF32<kType>(d, p + i, count, 0.0f);
                                 return hn::MulAdd(hn::Sub(v, vc), vs, vb);
                               });
  }
}

template <DType kType>
void BackwardReduceT(const Storage<kType>* x, const Storage<kType>* dy, Runs runs, float center,
                     double sums[2]) {
  const DF d;
  const size_t lanes = hn::Lanes(d);
  const size_t flush_elems = 2 * lanes * kAddsPerFlush;
  const VF vc = hn::Set(d, center);
  VF g0 = hn::Zero(d), g1 = hn::Zero(d), h0 = hn::Zero(d), h1 = hn::Zero(d);
  size_t pending = 0;
  auto flush = [&] {
    sums[0] += SumLanesInDouble(d, g0) + SumLanesInDouble(d, g1);
    sums[1] += SumLanesInDouble(d, h0) + SumLanesInDouble(d, h1);
    g0 = g1 = h0 = h1 = hn::Zero(d);
    pending = 0;
  };
  for (std::int64_t r = 0; r < runs.count; ++r) {
    const Storage<kType>* HWY_RESTRICT px = x + r * runs.stride;
    const Storage<kType>* HWY_RESTRICT pg = dy + r * runs.stride;
    const size_t len = static_cast<size_t>(runs.len);
    size_t i = 0;
    for (; i + 2 * lanes <= len; i += 2 * lanes) {
      const VF gv0 = LoadAsF32<kType>(d, pg + i), gv1 = LoadAsF32<kType>(d, pg + i + lanes);
      g0 = hn::Add(g0, gv0);
      g1 = hn::Add(g1, gv1);
      h0 = hn::MulAdd(gv0, hn::Sub(LoadAsF32<kType>(d, px + i), vc), h0);
      h1 = hn::MulAdd(gv1, hn::Sub(LoadAsF32<kType>(d, px + i + lanes), vc), h1);
      pending += 2 * lanes;
      if (pending >= flush_elems) flush();
    }
    // At most two vectors remain: one per accumulator pair.
    VF* const gs[2] = {&g0, &g1};
    VF* const hs[2] = {&h0, &h1};
    for (size_t k = 0; i < len; i += lanes, ++k) {
      const size_t count = std::min(lanes, len - i);
      // dy is padded with 0, so padded lanes add nothing to either sum.
      const VF gv = LoadSomeAsF32<kType>(d, pg + i, count, 0.0f);
      *gs[k] = hn::Add(*gs[k], gv);
      *hs[k] = hn::MulAdd(gv, hn::Sub(LoadSomeAsF32<kType>(d, px + i, count, center), vc), *hs[k]);
    }
    pending += 2 * lanes;
    if (pending >= flush_elems) flush();
  }
  flush();
}

template <DType kType>
void BackwardApplyT(const Storage<kType>* x, const Storage<kType>* dy, Storage<kType>* dx, Runs runs,
                    float center, float k_dy, float k_xc, float k_const, bool stream) {
  const DF d;
  const VF vc = hn::Set(d, center), a = hn::Set(d, k_dy), b = hn::Set(d, k_xc), k = hn::Set(d, k_const);
  for (std::int64_t r = 0; r < runs.count; ++r) {
    const Storage<kType>* HWY_RESTRICT px = x + r * runs.stride;
    const Storage<kType>* HWY_RESTRICT pg = dy + r * runs.stride;
    ForEachOutputVector<kType>(d, dx + r * runs.stride, static_cast<size_t>(runs.len), stream,
                               [&](size_t i, size_t count) {
                                 const VF xv = LoadSomeAsF32<kType>(d, px + i, count, 0.0f);
                                 const VF gv = LoadSomeAsF32<kType>(d, pg + i, count, 0.0f);
                                 return hn::MulAdd(a, gv, hn::MulAdd(b, hn::Sub(xv, vc), k));
                               });
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

// ---- per-target entry points (exported below) ----

double SumShifted(DType dt, const void* x, Runs runs, float pivot) {
  return WithDType(
      dt, [&](auto t) { return SumShiftedT<t()>(static_cast<const Storage<t()>*>(x), runs, pivot); });
}
double SumSqCentered(DType dt, const void* x, Runs runs, float center) {
  return WithDType(
      dt, [&](auto t) { return SumSqCenteredT<t()>(static_cast<const Storage<t()>*>(x), runs, center); });
}
void Normalize(DType dt, const void* x, void* y, Runs runs, float center, float scale, float shift,
               bool stream) {
  WithDType(dt, [&](auto t) {
    NormalizeT<t()>(static_cast<const Storage<t()>*>(x), static_cast<Storage<t()>*>(y), runs, center, scale,
                    shift, stream);
  });
}
void BackwardReduce(DType dt, const void* x, const void* dy, Runs runs, float center, double sums[2]) {
  WithDType(dt, [&](auto t) {
    BackwardReduceT<t()>(static_cast<const Storage<t()>*>(x), static_cast<const Storage<t()>*>(dy), runs,
                         center, sums);
  });
}
void BackwardApply(DType dt, const void* x, const void* dy, void* dx, Runs runs, float center, float k_dy,
                   float k_xc, float k_const, bool stream) {
  WithDType(dt, [&](auto t) {
    BackwardApplyT<t()>(static_cast<const Storage<t()>*>(x), static_cast<const Storage<t()>*>(dy),
                        static_cast<Storage<t()>*>(dx), runs, center, k_dy, k_xc, k_const, stream);
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
void normalize(DType dtype, const void* x, void* y, Runs runs, float center, float scale, float shift,
               bool stream) {
  HWY_DYNAMIC_DISPATCH(Normalize)(dtype, x, y, runs, center, scale, shift, stream);
}
void backward_reduce(DType dtype, const void* x, const void* dy, Runs runs, float center, double sums[2]) {
  HWY_DYNAMIC_DISPATCH(BackwardReduce)(dtype, x, dy, runs, center, sums);
}
void backward_apply(DType dtype, const void* x, const void* dy, void* dx, Runs runs, float center, float k_dy,
                    float k_xc, float k_const, bool stream) {
  HWY_DYNAMIC_DISPATCH(BackwardApply)(dtype, x, dy, dx, runs, center, k_dy, k_xc, k_const, stream);
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
void stream_fence() { hwy::FlushStream(); }

}  // namespace bnorm::kernels::batch_norm
#endif  // HWY_ONCE

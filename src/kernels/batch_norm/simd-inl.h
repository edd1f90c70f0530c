// Per-target helpers shared by batch norm's kernels (simd.cpp) and the
// pipelined kernels (pipeline.cpp): the dtype switch, the double lanes that
// f32 partial sums fold into, and the fused activation (epilogue and gate).
// Included once per Highway target, hence the toggle guard.

#if defined(BNORM_KERNELS_BATCH_NORM_SIMD_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BNORM_KERNELS_BATCH_NORM_SIMD_INL_H_
#undef BNORM_KERNELS_BATCH_NORM_SIMD_INL_H_
#else
#define BNORM_KERNELS_BATCH_NORM_SIMD_INL_H_
#endif

#include <type_traits>

#include "hwy/highway.h"
#include "kernels/batch_norm/kernels.hpp"
#include "kernels/common/simd_io-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm::kernels::HWY_NAMESPACE {

// f32 partial sums are folded into double after this many additions per
// accumulator lane, which bounds their rounding error (DESIGN.md section 3).
inline constexpr size_t kAddsPerFlush = 32;

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

// Double lanes that f32 partial sums are folded into, lane by lane (no
// horizontal step, so the loop never stalls).
#if HWY_TARGET == HWY_SCALAR
struct DoubleLanes {
  double sum = 0.0;
  explicit DoubleLanes(DF) {}
  HWY_INLINE void Fold(DF d, VF v) { sum += SumLanesInDouble(d, v); }
  HWY_INLINE double Total(DF) const { return sum; }
  HWY_INLINE double Reduced(DF) const { return sum; }
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
  /// The total by a shuffle tree: a few instructions, where Total's lane
  /// loop is a chain of dependent additions (for sums taken often).
  HWY_INLINE double Reduced(DF) const { return hn::GetLane(hn::SumOfLanes(DD(), hn::Add(lo, hi))); }
};
#endif

// ---------------------------------------------------------------- fused activation
//
// The normalize kernels take <kAdd, kRelu>: y = relu(normalized + z); the
// backward kernels <kGate>: dy is zeroed where the forward output y <= 0,
// and <kDz>: the gated dy is also stored (the residual's gradient). Each
// combination is its own instantiation, so the plain kernels are unchanged.

template <DType kType, bool kAdd, bool kRelu>
HWY_INLINE VF Post(DF d, VF v, const Storage<kType>* HWY_RESTRICT z, size_t i, size_t count) {
  if constexpr (kAdd) v = hn::Add(v, LoadSomeAsF32<kType>(d, z + i, count, 0.0f));
  if constexpr (kRelu) v = hn::IfThenZeroElse(hn::Lt(v, hn::Zero(d)), v);  // NaN stays NaN
  return v;
}

template <DType kType, bool kGate>
HWY_INLINE VF Gated(DF d, VF g, const Storage<kType>* HWY_RESTRICT y, size_t i, size_t count) {
  if constexpr (kGate) {
    return hn::IfThenElseZero(hn::Gt(LoadSomeAsF32<kType>(d, y + i, count, 0.0f), hn::Zero(d)), g);
  } else {
    return g;
  }
}

template <DType kType>
HWY_INLINE void StoreSomeFromF32(DF d, VF v, Storage<kType>* HWY_RESTRICT p, size_t count) {
  if (count == hn::Lanes(d)) {
    StoreFromF32<kType>(d, v, p);
  } else {
    StorePartialFromF32<kType>(d, v, p, count);
  }
}

// Calls f(kAdd, kRelu) as std::bool_constant for an epilogue.
template <class F>
HWY_INLINE void WithPost(const batch_norm::Epilogue& e, F&& f) {
  using T = std::true_type;
  using N = std::false_type;
  if (e.residual) {
    if (e.relu) return f(T{}, T{});
    return f(T{}, N{});
  }
  if (e.relu) return f(N{}, T{});
  f(N{}, N{});
}

// Calls f(kGate, kDz) as std::bool_constant for a gate.
template <class F>
HWY_INLINE void WithGate(const batch_norm::Gate& g, F&& f) {
  using T = std::true_type;
  using N = std::false_type;
  if (g.y) {
    if (g.dz) return f(T{}, T{});
    return f(T{}, N{});
  }
  if (g.dz) return f(N{}, T{});
  f(N{}, N{});
}

}  // namespace bnorm::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BNORM_KERNELS_BATCH_NORM_SIMD_INL_H_

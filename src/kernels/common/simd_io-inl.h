// Per-target SIMD helpers shared by the optimized kernels: load any dtype as
// f32 lanes, store f32 lanes back with round-to-nearest-even, partial vectors,
// and an elementwise driver that aligns the output for streaming stores.
// Included once per Highway target (foreach_target.h), hence the toggle guard.

// For lambdas that carry loop state: forcing them inline lets the compiler
// keep that state in registers.
#ifndef BNORM_ALWAYS_INLINE
#define BNORM_ALWAYS_INLINE __attribute__((always_inline))
#endif

#if defined(BNORM_KERNELS_COMMON_SIMD_IO_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BNORM_KERNELS_COMMON_SIMD_IO_INL_H_
#undef BNORM_KERNELS_COMMON_SIMD_IO_INL_H_
#else
#define BNORM_KERNELS_COMMON_SIMD_IO_INL_H_
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "bnorm/tensor.hpp"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kernels/common/native_bf16.hpp"
#include "kernels/common/scalar.hpp"

HWY_BEFORE_NAMESPACE();
namespace bnorm::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
using DU16 = hn::Rebind<std::uint16_t, DF>;

/// Storage type of each dtype in memory.
template <DType kType>
using Storage = std::conditional_t<kType == DType::f32, float, std::uint16_t>;

// F16C (part of Highway's AVX2 and AVX3 targets) converts binary16 with
// round-to-nearest-even; Highway's emulation on older targets truncates, so
// those convert lane by lane with the exact scalar routines instead.
inline constexpr bool kHardwareF16 = HWY_TARGET <= HWY_AVX2;

// Whether kType converts in registers on this target (everything but f16
// without F16C).
template <DType kType>
inline constexpr bool kVectorConvert = kType != DType::f16 || kHardwareF16;

// Whether masked loads and stores of kType's storage are single instructions
// that never touch masked-off memory: 32-bit lanes from AVX2 (vmaskmov),
// 16-bit lanes with AVX-512BW. Elsewhere Highway emulates them (reading past
// the end, or storing element by element), so partial vectors go through a
// small buffer instead.
template <DType kType>
inline constexpr bool kNativeMasked = kVectorConvert<kType> &&
                                      (kType == DType::f32 ? HWY_TARGET <= HWY_AVX2 : HWY_TARGET <= HWY_AVX3);

/// f32 lanes from 16-bit patterns of kType (bf16 or f16) held in u16 lanes.
template <DType kType>
HWY_INLINE VF WidenBits(DF d, hn::Vec<DU16> bits) {
  if constexpr (kType == DType::bf16) {
    const hn::RebindToUnsigned<DF> du32;
    return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du32, bits)));
  } else {
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(d, hn::BitCast(dh, bits));
  }
}

/// f32 lanes rounded to the 16-bit pattern of kType, one per u16 lane.
template <DType kType>
HWY_INLINE hn::Vec<DU16> DemoteBits(DF /*d*/, VF v) {
  const DU16 du16;
  if constexpr (kType == DType::bf16) {
#if HWY_TARGET == HWY_AVX3 && HWY_ARCH_X86_64
    // AVX512-BF16 rounds to nearest even in one instruction, but treats
    // subnormal inputs as 0 and keeps a NaN's sign and payload: lanes that
    // are NaN or subnormal (rare) take the emulation below.
    if (native_bf16 && HWY_LIKELY(_mm512_fpclass_ps_mask(v.raw, 0x01 | 0x20 | 0x80) == 0)) {
      __m256i r;
      asm("vcvtneps2bf16 %1, %0" : "=v"(r) : "v"(v.raw));
      return hn::Vec<DU16>{r};
    }
#endif
    // Round to nearest even by adding 0x7FFF plus the lowest kept bit; NaN
    // would carry into the exponent, so it is replaced by the canonical quiet
    // NaN, as c10::BFloat16 does.
    const hn::RebindToUnsigned<DF> du32;
    const hn::RebindToSigned<DF> di32;
    const auto bits = hn::BitCast(du32, v);
    const auto lsb = hn::And(hn::ShiftRight<16>(bits), hn::Set(du32, 1u));
    auto rounded = hn::ShiftRight<16>(hn::Add(bits, hn::Add(hn::Set(du32, 0x7FFFu), lsb)));
    rounded = hn::IfThenElse(hn::RebindMask(du32, hn::IsNaN(v)), hn::Set(du32, 0x7FC0u), rounded);
    return hn::DemoteTo(du16, hn::BitCast(di32, rounded));
  } else {
    static_assert(kType == DType::f16 && kHardwareF16);
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::BitCast(du16, hn::DemoteTo(dh, v));
  }
}

/// Loads Lanes(d) elements of kType from p (unaligned) as f32.
template <DType kType>
HWY_INLINE VF LoadAsF32(DF d, const Storage<kType>* HWY_RESTRICT p) {
  if constexpr (kType == DType::f32) {
    return hn::LoadU(d, p);
  } else if constexpr (kVectorConvert<kType>) {
    return WidenBits<kType>(d, hn::LoadU(DU16(), p));
  } else {
    HWY_ALIGN float lanes[hn::MaxLanes(d)];
    for (size_t i = 0; i < hn::Lanes(d); ++i) lanes[i] = f16_bits_to_float(p[i]);
    return hn::Load(d, lanes);
  }
}

/// Loads 2 * Lanes(d) elements of kType from p (unaligned) as f32 into lo
/// and hi, each element once but in no particular order: for sums. bf16
/// takes one 32-bit operation per vector (the even elements shifted up, the
/// odd ones masked) instead of a widening and a shift.
template <DType kType>
HWY_INLINE void LoadPairAsF32AnyOrder(DF d, const Storage<kType>* HWY_RESTRICT p, VF& lo, VF& hi) {
  if constexpr (kType == DType::bf16 && HWY_TARGET != HWY_SCALAR) {
    const hn::RebindToUnsigned<DF> du32;
    const hn::Repartition<std::uint16_t, DF> du16;
    const auto w = hn::BitCast(du32, hn::LoadU(du16, p));
    lo = hn::BitCast(d, hn::ShiftLeft<16>(w));
    hi = hn::BitCast(d, hn::And(w, hn::Set(du32, 0xFFFF0000u)));
  } else {
    lo = LoadAsF32<kType>(d, p);
    hi = LoadAsF32<kType>(d, p + hn::Lanes(d));
  }
}

/// Stores f32 lanes to p (unaligned) as kType.
template <DType kType>
HWY_INLINE void StoreFromF32(DF d, VF v, Storage<kType>* HWY_RESTRICT p) {
  if constexpr (kType == DType::f32) {
    hn::StoreU(v, d, p);
  } else if constexpr (kVectorConvert<kType>) {
    hn::StoreU(DemoteBits<kType>(d, v), DU16(), p);
  } else {
    HWY_ALIGN float lanes[hn::MaxLanes(d)];
    hn::Store(v, d, lanes);
    for (size_t i = 0; i < hn::Lanes(d); ++i) p[i] = float_to_f16_bits(lanes[i]);
  }
}

/// Non-temporal store of f32 lanes as kType; p is aligned to the stored size.
template <DType kType>
HWY_INLINE void StreamFromF32(DF d, VF v, Storage<kType>* HWY_RESTRICT p) {
  if constexpr (kType == DType::f32) {
    hn::Stream(v, d, p);
  } else if constexpr (kVectorConvert<kType> && hn::MaxLanes(DU16()) * 2 >= 16) {
    hn::Stream(DemoteBits<kType>(d, v), DU16(), p);
  } else {
    // Highway streams whole 16-byte registers: a half-filled one (16-bit
    // data on 128-bit targets) would write past the vector, so store it.
    StoreFromF32<kType>(d, v, p);
  }
}

/// Loads the first `count` (< Lanes) elements of p as f32; the other lanes
/// hold `fill`. Never touches memory past p + count.
template <DType kType>
HWY_INLINE VF LoadPartialAsF32(DF d, const Storage<kType>* HWY_RESTRICT p, size_t count, float fill) {
  if constexpr (kNativeMasked<kType>) {
    const auto m = hn::FirstN(d, count);
    if constexpr (kType == DType::f32) {
      return hn::IfThenElse(m, hn::MaskedLoad(m, d, p), hn::Set(d, fill));
    } else {
      const DU16 du16;
      return hn::IfThenElse(m, WidenBits<kType>(d, hn::MaskedLoad(hn::FirstN(du16, count), du16, p)),
                            hn::Set(d, fill));
    }
  } else {
    HWY_ALIGN float lanes[hn::MaxLanes(d)];
    for (size_t i = 0; i < hn::Lanes(d); ++i) {
      if constexpr (kType == DType::f32) {
        lanes[i] = i < count ? p[i] : fill;
      } else if constexpr (kType == DType::bf16) {
        lanes[i] = i < count ? bf16_bits_to_float(p[i]) : fill;
      } else {
        lanes[i] = i < count ? f16_bits_to_float(p[i]) : fill;
      }
    }
    return hn::Load(d, lanes);
  }
}

/// Stores the first `count` (< Lanes) lanes of v to p as kType.
template <DType kType>
HWY_INLINE void StorePartialFromF32(DF d, VF v, Storage<kType>* HWY_RESTRICT p, size_t count) {
  if constexpr (kNativeMasked<kType>) {
    if constexpr (kType == DType::f32) {
      hn::BlendedStore(v, hn::FirstN(d, count), d, p);
    } else {
      const DU16 du16;
      hn::BlendedStore(DemoteBits<kType>(d, v), hn::FirstN(du16, count), du16, p);
    }
  } else {
    HWY_ALIGN float lanes[hn::MaxLanes(d)];
    hn::Store(v, d, lanes);
    for (size_t i = 0; i < count; ++i) {
      if constexpr (kType == DType::f32) {
        p[i] = lanes[i];
      } else if constexpr (kType == DType::bf16) {
        p[i] = float_to_bf16_bits(lanes[i]);
      } else {
        p[i] = float_to_f16_bits(lanes[i]);
      }
    }
  }
}

/// Loads count elements (full vector when count == Lanes) as f32.
template <DType kType>
HWY_INLINE VF LoadSomeAsF32(DF d, const Storage<kType>* HWY_RESTRICT p, size_t count, float fill) {
  return count == hn::Lanes(d) ? LoadAsF32<kType>(d, p) : LoadPartialAsF32<kType>(d, p, count, fill);
}

/// Software prefetch for a stream read in order: the hardware prefetcher
/// alone leaves such reads well short of DRAM bandwidth here, most for
/// 16-bit data (measured with 2 threads on 64x256x56x56 bf16: y = a*x + b
/// 10.5 -> 6.6 ms, batch-norm inference channels-last 10.5 -> 7.5 ms).
inline constexpr size_t kPrefetchAheadBytes = 4096;

/// Prefetches p[i + kPrefetchAheadBytes / sizeof(T)] when it lies before p[n].
template <class T>
HWY_INLINE void PrefetchAhead(const T* p, size_t i, size_t n) {
  constexpr size_t ahead = kPrefetchAheadBytes / sizeof(T);
  if (i + ahead < n) hwy::Prefetch(p + i + ahead);
}

/// Sum of the lanes of v, added in double (by a shuffle tree: a loop over
/// the lanes is a chain of dependent additions, which made per-plane and
/// per-row sums compute-bound).
HWY_INLINE double SumLanesInDouble(DF d, VF v) {
#if HWY_TARGET == HWY_SCALAR
  (void)d;
  return static_cast<double>(hn::GetLane(v));
#else
  const hn::Repartition<double, DF> dd;
  const hn::Half<DF> dh;
  const auto lo = hn::PromoteTo(dd, hn::LowerHalf(dh, v));
  const auto hi = hn::PromoteTo(dd, hn::UpperHalf(dh, v));
  return hn::GetLane(hn::SumOfLanes(dd, hn::Add(lo, hi)));
#endif
}

/// Adds the double lanes of v into out[0, Lanes).
HWY_INLINE void AddToDoubles(DF d, VF v, double* HWY_RESTRICT out) {
#if HWY_TARGET == HWY_SCALAR
  out[0] += hn::GetLane(v);
  (void)d;
#else
  const hn::Repartition<double, DF> dd;
  const hn::Half<DF> dh;
  const size_t half = hn::Lanes(dd);
  hn::StoreU(hn::Add(hn::LoadU(dd, out), hn::PromoteTo(dd, hn::LowerHalf(dh, v))), dd, out);
  hn::StoreU(hn::Add(hn::LoadU(dd, out + half), hn::PromoteTo(dd, hn::UpperHalf(dh, v))), dd, out + half);
#endif
}

/// Whether a and b lie at the same offset within a cache line: outputs
/// walked at the same element positions can then stream at the same ones.
HWY_INLINE bool SameLineOffset(const void* a, const void* b) {
  return (reinterpret_cast<std::uintptr_t>(a) - reinterpret_cast<std::uintptr_t>(b)) % 64 == 0;
}

/// Whether ForEachOutputVector over y calls compute with i = 0, Lanes,
/// 2 Lanes, ... (whole vectors from the start, a partial one last): always
/// without streaming, and with it when y starts a cache line.
template <DType kType>
HWY_INLINE bool OutputWalkInWholeVectors(const Storage<kType>* y, bool stream) {
  return !stream || reinterpret_cast<std::uintptr_t>(y) % 64 == 0;
}

/// Stores the first count (<= Lanes) lanes of v to p as kType: a partial
/// vector plainly, a whole one non-temporally when `nt` (p aligned to the
/// stored size), plainly otherwise.
template <DType kType>
HWY_INLINE void StoreOutput(DF d, VF v, Storage<kType>* HWY_RESTRICT p, size_t count, bool nt) {
  if (count != hn::Lanes(d)) {
    StorePartialFromF32<kType>(d, v, p, count);
  } else if (nt) {
    StreamFromF32<kType>(d, v, p);
  } else {
    StoreFromF32<kType>(d, v, p);
  }
}

#if HWY_TARGET != HWY_SCALAR
/// Full vectors of 16-bit lanes: two f32 vectors' worth of bf16 or f16.
using DU16Full = hn::Repartition<std::uint16_t, DF>;

/// Two f32 vectors rounded to kType's 16-bit patterns in one vector of
/// 16-bit lanes, lo's lanes first. With AVX512-BF16, one vcvtne2ps2bf16 for
/// both, after DemoteBits' test for NaN or subnormal lanes on both.
template <DType kType>
HWY_INLINE hn::Vec<DU16Full> DemotePairBits(DF d, VF lo, VF hi) {
#if HWY_TARGET == HWY_AVX3 && HWY_ARCH_X86_64
  if constexpr (kType == DType::bf16) {
    constexpr int kSpecial = 0x01 | 0x20 | 0x80;
    // kortestw of both masks: one instruction, where or-ing them as
    // integers moves each mask to a general register first.
    if (native_bf16 && HWY_LIKELY(_kortestz_mask16_u8(_mm512_fpclass_ps_mask(lo.raw, kSpecial),
                                                      _mm512_fpclass_ps_mask(hi.raw, kSpecial)))) {
      __m512i r;
      asm("vcvtne2ps2bf16 %2, %1, %0" : "=v"(r) : "v"(hi.raw), "v"(lo.raw));
      return hn::Vec<DU16Full>{r};
    }
  }
#endif
  return hn::Combine(DU16Full(), DemoteBits<kType>(d, hi), DemoteBits<kType>(d, lo));
}
#endif

/// Stores lo and hi to p[0, 2 Lanes) as kType, non-temporally when `nt`
/// (p aligned to the size of the pair's store: for 16-bit data on AVX3, a
/// whole line). 16-bit data takes one conversion and one store for both.
template <DType kType>
HWY_INLINE void StorePairFromF32(DF d, VF lo, VF hi, Storage<kType>* HWY_RESTRICT p, bool nt) {
#if HWY_TARGET != HWY_SCALAR
  if constexpr (kType != DType::f32 && kVectorConvert<kType>) {
    if (nt) {
      hn::Stream(DemotePairBits<kType>(d, lo, hi), DU16Full(), p);
    } else {
      hn::StoreU(DemotePairBits<kType>(d, lo, hi), DU16Full(), p);
    }
    return;
  }
#endif
  StoreOutput<kType>(d, lo, p, hn::Lanes(d), nt);
  StoreOutput<kType>(d, hi, p + hn::Lanes(d), hn::Lanes(d), nt);
}

/// Walks elements [0, n) of the output y in order: step(i, count, nt) for
/// each vector position, count <= Lanes(d) (less only where the stores meet
/// a cache line boundary or the end), which stores its result(s) with
/// StoreOutput(..., count, nt). With `stream`, nt marks the whole 64-byte
/// lines of y (the caller issues the fence) and the partial lines at either
/// end take plain stores: a line written partly by each is slow (16-bit runs
/// of 49 or 196 values, whose vectors are half a line, ran 3-6x slower than
/// with plain stores). Without `stream`, nt is false throughout. Outputs at
/// a whole number of cache lines from y (or any, without `stream`) can be
/// stored at the same positions.
template <DType kType, class Step>
HWY_INLINE void ForEachOutputPosition(DF d, const Storage<kType>* y, size_t n, bool stream, Step&& step) {
  const size_t lanes = hn::Lanes(d);
  constexpr size_t kLine = 64 / sizeof(Storage<kType>);
  size_t i = 0, stream_end = 0;
  if (stream) {
    const size_t misalign = reinterpret_cast<std::uintptr_t>(y) % 64;
    if (misalign % sizeof(Storage<kType>) == 0) {
      i = std::min(n, misalign ? (64 - misalign) / sizeof(Storage<kType>) : size_t{0});
      stream_end = i + (n - i) / kLine * kLine;
    }
    // The head up to the first line boundary, plain: a partial vector
    // first, so that the full ones after it end on the boundary.
    size_t j = 0;
    if (const size_t part = i % lanes) {
      step(j, part, false);
      j = part;
    }
    for (; j < i; j += lanes) step(j, lanes, false);
    for (; i < stream_end; i += lanes) step(i, lanes, true);
  }
  for (; i + lanes <= n; i += lanes) step(i, lanes, false);
  if (i < n) step(i, n - i, false);
}

/// Runs `compute(i, count)` -> VF over elements [0, n) of the output y in
/// order, storing each result to y + i as ForEachOutputPosition says.
template <DType kType, class Compute>
HWY_INLINE void ForEachOutputVector(DF d, Storage<kType>* HWY_RESTRICT y, size_t n, bool stream,
                                    Compute&& compute) {
  ForEachOutputPosition<kType>(d, y, n, stream,
                               [&](size_t i, size_t count, bool nt) HWY_ATTR BNORM_ALWAYS_INLINE {
                                 StoreOutput<kType>(d, compute(i, count), y + i, count, nt);
                               });
}

}  // namespace bnorm::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BNORM_KERNELS_COMMON_SIMD_IO_INL_H_

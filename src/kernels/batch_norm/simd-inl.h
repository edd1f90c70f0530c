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

#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
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
// The normalize kernels take <kAdd, kRelu>: y = relu(normalized + z), and
// a bit writer (NoBits, or MaskBits when the forward keeps the ReLU's mask);
// the backward kernels <kGate>: dy is zeroed where the forward output y <=
// 0, told by y itself (a pointer into it) or by the mask (BitsIn), and
// <kDz>: the gated dy is also stored (the residual's gradient). Each
// combination is its own instantiation, so the plain kernels are unchanged.

static_assert(std::endian::native == std::endian::little, "mask bits are written as little-endian words");

// The smallest f32 sum whose output in kType is > 0 is just above this: a
// 16-bit output rounds a positive sum at or below half its smallest
// subnormal to 0, and the mask must say what the output says.
template <DType kType>
inline constexpr float kZeroBelow = kType == DType::bf16  ? 0x1p-134f
                                    : kType == DType::f16 ? 0x1p-25f
                                                          : 0.0f;

// The bits of a mask's lanes as an integer, lane 0 lowest.
HWY_INLINE std::uint64_t LaneBits(DF d, hn::Mask<DF> m) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
  (void)d;
  return static_cast<std::uint64_t>(m.raw);  // a mask register: no trip through memory
#else
  std::uint8_t bytes[8] = {};
  hn::StoreMaskBits(d, m, bytes);
  std::uint64_t bits;
  std::memcpy(&bits, bytes, sizeof(bits));
  return bits;
#endif
}

// No mask kept.
struct NoBits {
  HWY_INLINE void Put(DF, hn::Mask<DF>, size_t) {}
  HWY_INLINE void Finish() {}
};

// Writes the mask bits of one run of consecutive elements, in order (Put
// once per vector, then Finish): whole bytes with plain stores, each once;
// the bytes at the run's ends, which may hold other runs' bits (another
// thread's), by atomic and / or of this run's bits only.
class MaskBits {
 public:
  MaskBits(std::uint8_t* mask, std::int64_t first)
      : byte_(mask + batch_norm::mask_byte(first)), lead_(batch_norm::mask_shift(first)), n_(lead_) {}
  // Appends the first `count` lanes of m.
  HWY_INLINE void Put(DF d, hn::Mask<DF> m, size_t count) {
    std::uint64_t bits = LaneBits(d, m);
    if (count != hn::Lanes(d)) bits &= (std::uint64_t{1} << count) - 1;
    acc_ |= bits << n_;
    n_ += static_cast<unsigned>(count);
    if (n_ >= 32) {
      const auto word = static_cast<std::uint32_t>(acc_);
      if (HWY_UNLIKELY(lead_ != 0)) {
        Merge(byte_, static_cast<std::uint8_t>(word), lead_, 8);
        std::memcpy(byte_ + 1, reinterpret_cast<const std::uint8_t*>(&word) + 1, 3);
        lead_ = 0;
      } else {
        std::memcpy(byte_, &word, sizeof(word));
      }
      acc_ >>= 32;
      n_ -= 32;
      byte_ += 4;
    }
  }
  // Writes the bits still held.
  HWY_INLINE void Finish() {
    for (unsigned k = 0; 8 * k < n_; ++k) {
      const auto bits = static_cast<std::uint8_t>(acc_ >> (8 * k));
      const unsigned lo = k == 0 ? lead_ : 0, hi = std::min(8u, n_ - 8 * k);
      if (lo == 0 && hi == 8) {
        byte_[k] = bits;
      } else {
        Merge(byte_ + k, bits, lo, hi);
      }
    }
    n_ = lead_ = 0;
    acc_ = 0;
  }

 private:
  // Sets bits [lo, hi) of *p to those of `bits`, atomically: another run
  // may be writing the byte's other bits.
  static void Merge(std::uint8_t* p, std::uint8_t bits, unsigned lo, unsigned hi) {
    const auto mine = static_cast<std::uint8_t>(((1u << hi) - 1) & ~((1u << lo) - 1));
    std::atomic_ref<std::uint8_t> byte(*p);
    // One locked instruction unless another run's write comes between.
    std::uint8_t old = byte.load(std::memory_order_relaxed);
    while (!byte.compare_exchange_weak(old, static_cast<std::uint8_t>((old & ~mine) | (bits & mine)),
                                       std::memory_order_relaxed)) {
    }
  }
  std::uint8_t* byte_;
  unsigned lead_;  // bits of the first byte before the run (not ours)
  unsigned n_;     // bits in acc_, lead_ included
  std::uint64_t acc_ = 0;
};

// The bit writer for a kernel's run from element `offset` of the epilogue.
template <bool kMask>
HWY_INLINE auto BitsFor(const batch_norm::Epilogue& post, std::int64_t offset) {
  if constexpr (kMask) {
    return MaskBits(post.mask, post.mask_first + offset);
  } else {
    return NoBits{};
  }
}

template <DType kType, bool kAdd, bool kRelu, class Bits>
HWY_INLINE VF Post(DF d, VF v, const Storage<kType>* HWY_RESTRICT z, size_t i, size_t count, Bits& bits) {
  if constexpr (kAdd) v = hn::Add(v, LoadSomeAsF32<kType>(d, z + i, count, 0.0f));
  // The gate passes where the output is not <= 0, NaN included (PyTorch's
  // threshold_backward: result <= 0 ? 0 : grad).
  if constexpr (!std::is_same_v<Bits, NoBits>)
    bits.Put(d, hn::Not(hn::Le(v, hn::Set(d, kZeroBelow<kType>))), count);
  if constexpr (kRelu) v = hn::IfThenZeroElse(hn::Lt(v, hn::Zero(d)), v);  // NaN stays NaN
  return v;
}

// A gate read from the forward's mask: element i's bit at first + i.
struct BitsIn {
  const std::uint8_t* mask = nullptr;
  std::int64_t first = 0;
  BitsIn operator+(std::int64_t offset) const { return {mask, first + offset}; }
  BitsIn operator+(size_t offset) const { return *this + static_cast<std::int64_t>(offset); }
};
// The mask is 1/16 to 1/32 of the data and read in order: the hardware
// prefetcher keeps up.
HWY_INLINE void PrefetchAhead(BitsIn, size_t, size_t) {}

template <DType kType, bool kGate, class Y>
HWY_INLINE VF Gated(DF d, VF g, Y y, size_t i, size_t count) {
  if constexpr (!kGate) {
    return g;
  } else if constexpr (std::is_same_v<Y, BitsIn>) {
    // Lanes past count are dy's padding (0) or not stored.
    const std::int64_t at = y.first + static_cast<std::int64_t>(i);
    std::uint32_t word;
    std::memcpy(&word, y.mask + batch_norm::mask_byte(at), sizeof(word));  // into the padding at the end
    const hn::RebindToUnsigned<DF> du;
    HWY_ALIGN static constexpr std::uint32_t kLane[16] = {
        1u << 0, 1u << 1, 1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,
        1u << 8, 1u << 9, 1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15};
    static_assert(hn::MaxLanes(DF()) <= 16);
    const auto on = hn::TestBit(hn::Set(du, word >> batch_norm::mask_shift(at)), hn::Load(du, kLane));
    (void)count;
    return hn::IfThenElseZero(hn::RebindMask(d, on), g);
  } else {
    return hn::IfThenZeroElse(hn::Le(LoadSomeAsF32<kType>(d, y + i, count, 0.0f), hn::Zero(d)), g);
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

// Calls f(kAdd, kRelu, kMask) as std::bool_constant for an epilogue.
template <class F>
HWY_INLINE void WithPost(const batch_norm::Epilogue& e, F&& f) {
  using T = std::true_type;
  using N = std::false_type;
  if (e.residual) {
    if (e.relu) return e.mask ? f(T{}, T{}, T{}) : f(T{}, T{}, N{});
    return f(T{}, N{}, N{});
  }
  if (e.relu) return e.mask ? f(N{}, T{}, T{}) : f(N{}, T{}, N{});
  f(N{}, N{}, N{});
}

// Calls f(kGate, kDz, y) for a gate: std::bool_constant, and y the gate's
// source (a pointer into the forward output, or BitsIn).
template <DType kType, class F>
HWY_INLINE void WithGate(const batch_norm::Gate& g, F&& f) {
  using T = std::true_type;
  using N = std::false_type;
  const auto* y = static_cast<const Storage<kType>*>(g.y);
  if (g.mask) {
    const BitsIn bits{g.mask, g.mask_first};
    if (g.dz) return f(T{}, T{}, bits);
    return f(T{}, N{}, bits);
  }
  if (g.y) {
    if (g.dz) return f(T{}, T{}, y);
    return f(T{}, N{}, y);
  }
  if (g.dz) return f(N{}, T{}, y);
  f(N{}, N{}, y);
}

}  // namespace bnorm::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // BNORM_KERNELS_BATCH_NORM_SIMD_INL_H_

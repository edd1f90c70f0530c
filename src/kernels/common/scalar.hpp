// Scalar element access shared by the reference kernels and the SIMD tails.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "bnorm/tensor.hpp"

namespace bnorm::kernels {

/// Inline forms of bnorm's scalar conversions (tensor.hpp), for hot loops.
inline float bf16_bits_to_float(std::uint16_t bits) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}
inline std::uint16_t float_to_bf16_bits(float x) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;  // NaN: the canonical quiet NaN
  // Round to nearest even on the 16 dropped bits.
  return static_cast<std::uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}
// Portable f16 conversions in integer and f32 arithmetic, bit-identical to
// IEEE conversion with round-to-nearest-even (NaN: quiet, payload's top bits
// kept). Used where the compiler has no _Float16 (e.g. Clang before 15 on
// x86-64); tested against _Float16 where it has.
inline float f16_bits_to_float_portable(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in f32
    const float m = static_cast<float>(mant) * 0x1p-24f;
    return std::bit_cast<float>(std::bit_cast<std::uint32_t>(m) | sign);
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13) | (mant ? 0x400000u : 0u));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}
inline std::uint16_t float_to_f16_bits_portable(float x) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  std::uint32_t a = bits & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));  // NaN
  if (a >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520: rounds to Inf
  if (a < 0x38800000u) {
    // Below 2^-14: the result is subnormal (or the smallest normal). Adding
    // 0.5 makes the f32 unit in the last place 2^-24, the f16 subnormal
    // step, so the FPU rounds (to nearest even) exactly as f16 would.
    const float r = std::bit_cast<float>(a) + 0.5f;
    return static_cast<std::uint16_t>(sign | (std::bit_cast<std::uint32_t>(r) - 0x3F000000u));
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits to
  // nearest even; a carry out of the mantissa correctly bumps the exponent.
  a += 0xC8000FFFu + ((a >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | (a >> 13));
}

#if defined(__FLT16_MANT_DIG__)
// GCC and Clang >= 15 convert _Float16 with IEEE round-to-nearest-even (F16C
// or AVX512-FP16 instructions when enabled, libgcc otherwise).
inline float f16_bits_to_float(std::uint16_t bits) noexcept {
  return static_cast<float>(std::bit_cast<_Float16>(bits));
}
inline std::uint16_t float_to_f16_bits(float x) noexcept {
  return std::bit_cast<std::uint16_t>(static_cast<_Float16>(x));
}
#else
inline float f16_bits_to_float(std::uint16_t bits) noexcept { return f16_bits_to_float_portable(bits); }
inline std::uint16_t float_to_f16_bits(float x) noexcept { return float_to_f16_bits_portable(x); }
#endif

/// Byte address of element `index` of an array of `dtype`.
inline const void* element_ptr(const void* base, DType dtype, std::int64_t index) noexcept {
  return static_cast<const std::byte*>(base) + index * static_cast<std::int64_t>(size_of(dtype));
}
inline void* element_ptr(void* base, DType dtype, std::int64_t index) noexcept {
  return static_cast<std::byte*>(base) + index * static_cast<std::int64_t>(size_of(dtype));
}

/// Element `index` of `base` widened to float (exact for every dtype).
inline float load_float(DType dtype, const void* base, std::int64_t index) noexcept {
  if (dtype == DType::f32) return static_cast<const float*>(base)[index];
  const std::uint16_t bits = static_cast<const std::uint16_t*>(base)[index];
  return dtype == DType::bf16 ? bf16_bits_to_float(bits) : f16_bits_to_float(bits);
}

/// Widens n elements of src to float (the dtype switch hoisted out of the loop).
inline void load_floats(DType dtype, const void* src, std::int64_t n, float* out) noexcept {
  switch (dtype) {
    case DType::f32:
      std::memcpy(out, src, static_cast<std::size_t>(n) * sizeof(float));
      return;
    case DType::bf16:
      for (std::int64_t i = 0; i < n; ++i)
        out[i] = bf16_bits_to_float(static_cast<const std::uint16_t*>(src)[i]);
      return;
    case DType::f16:
      for (std::int64_t i = 0; i < n; ++i)
        out[i] = f16_bits_to_float(static_cast<const std::uint16_t*>(src)[i]);
      return;
  }
}

/// Stores x into element `index`, rounding to nearest even for 16-bit types.
inline void store_float(DType dtype, void* base, std::int64_t index, float x) noexcept {
  if (dtype == DType::f32) {
    static_cast<float*>(base)[index] = x;
  } else {
    static_cast<std::uint16_t*>(base)[index] =
        dtype == DType::bf16 ? float_to_bf16_bits(x) : float_to_f16_bits(x);
  }
}

/// Stores a double rounded to the element type (via f32 for the 16-bit
/// types: that differs from one direct rounding only for values within
/// 2^-24, relatively, of a tie of the 16-bit type).
inline void store_double(DType dtype, void* base, std::int64_t index, double x) noexcept {
  store_float(dtype, base, index, static_cast<float>(x));
}

}  // namespace bnorm::kernels

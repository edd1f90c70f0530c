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
// GCC and Clang convert _Float16 with IEEE round-to-nearest-even (F16C or
// AVX512-FP16 instructions when enabled, libgcc otherwise).
inline float f16_bits_to_float(std::uint16_t bits) noexcept {
  return static_cast<float>(std::bit_cast<_Float16>(bits));
}
inline std::uint16_t float_to_f16_bits(float x) noexcept {
  return std::bit_cast<std::uint16_t>(static_cast<_Float16>(x));
}

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

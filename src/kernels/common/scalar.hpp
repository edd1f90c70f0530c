// Scalar element access shared by the reference kernels and the SIMD tails.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "bnorm/tensor.hpp"

namespace bnorm::kernels {

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
  return dtype == DType::bf16 ? bf16_to_float(bits) : f16_to_float(bits);
}

/// Stores x into element `index`, rounding to nearest even for 16-bit types.
inline void store_float(DType dtype, void* base, std::int64_t index, float x) noexcept {
  if (dtype == DType::f32) {
    static_cast<float*>(base)[index] = x;
  } else {
    static_cast<std::uint16_t*>(base)[index] = dtype == DType::bf16 ? bf16_from_float(x) : f16_from_float(x);
  }
}

/// Stores a double, rounding once to the element type (via f32 for the 16-bit
/// types, whose double rounding cannot differ from direct rounding by more
/// than the f32 step, far below their own step).
inline void store_double(DType dtype, void* base, std::int64_t index, double x) noexcept {
  store_float(dtype, base, index, static_cast<float>(x));
}

}  // namespace bnorm::kernels

// Calling a template with the C++ type of an ElementType, and converting
// single values between element types (ONNX Cast semantics).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "exec/tensor.hpp"
#include "kernels/common/scalar.hpp"

namespace bnorm::exec {

/// Storage types of the 16-bit floats (bits).
struct Half {
  std::uint16_t bits;
};
struct BFloat {
  std::uint16_t bits;
};

template <class T>
struct TypeTag {
  using type = T;
};

/// Calls f(TypeTag<T>{}) with T the storage type of `type`.
template <class F>
decltype(auto) dispatch(ElementType type, F&& f) {
  switch (type) {
    case ElementType::f32:
      return f(TypeTag<float>{});
    case ElementType::f64:
      return f(TypeTag<double>{});
    case ElementType::f16:
      return f(TypeTag<Half>{});
    case ElementType::bf16:
      return f(TypeTag<BFloat>{});
    case ElementType::i8:
      return f(TypeTag<std::int8_t>{});
    case ElementType::u8:
      return f(TypeTag<std::uint8_t>{});
    case ElementType::i16:
      return f(TypeTag<std::int16_t>{});
    case ElementType::u16:
      return f(TypeTag<std::uint16_t>{});
    case ElementType::i32:
      return f(TypeTag<std::int32_t>{});
    case ElementType::u32:
      return f(TypeTag<std::uint32_t>{});
    case ElementType::i64:
      return f(TypeTag<std::int64_t>{});
    case ElementType::u64:
      return f(TypeTag<std::uint64_t>{});
    case ElementType::boolean:
      break;
  }
  return f(TypeTag<bool>{});
}

template <class T>
inline constexpr bool is_half_v = std::is_same_v<T, Half> || std::is_same_v<T, BFloat>;

/// The type arithmetic on T is done in: float for the 16-bit floats, T otherwise.
template <class T>
using compute_t = std::conditional_t<is_half_v<T>, float, T>;

/// Widens a stored value to its compute type.
template <class T>
inline compute_t<T> widen(T v) noexcept {
  if constexpr (std::is_same_v<T, Half>) {
    return kernels::f16_bits_to_float(v.bits);
  } else if constexpr (std::is_same_v<T, BFloat>) {
    return kernels::bf16_bits_to_float(v.bits);
  } else {
    return v;
  }
}

/// v as a float rounded to odd: the float toward zero, its last bit set when
/// v was not exact. Rounding that to 16 bits (nearest even) gives what one
/// rounding of v would (float keeps more than two bits beyond either 16-bit
/// format); rounding v to nearest float first could round twice.
inline float to_float_round_odd(double v) noexcept {
  float f = static_cast<float>(v);
  if (std::isnan(v) || static_cast<double>(f) == v) return f;
  if (std::fabs(static_cast<double>(f)) > std::fabs(v)) f = std::nextafter(f, 0.0f);
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits |= 1;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// Converts a value of any arithmetic type to T with ONNX Cast semantics:
/// to a 16-bit float rounds to nearest even (once, also from double);
/// floating to integer truncates toward zero and saturates (NaN gives 0;
/// ONNX leaves out-of-range undefined).
template <class T, class V>
inline T narrow(V v) noexcept {
  // A float, or a wider value rounded to odd (exact in the 16-bit rounding).
  auto as_float = [](V x) {
    if constexpr (std::is_floating_point_v<V> && (sizeof(V) > sizeof(float))) {
      return to_float_round_odd(static_cast<double>(x));
    } else {
      return static_cast<float>(x);
    }
  };
  if constexpr (std::is_same_v<T, Half>) {
    return Half{kernels::float_to_f16_bits(as_float(v))};
  } else if constexpr (std::is_same_v<T, BFloat>) {
    return BFloat{kernels::float_to_bf16_bits(as_float(v))};
  } else if constexpr (std::is_same_v<T, bool>) {
    return v != V{};
  } else if constexpr (std::is_integral_v<T> && std::is_floating_point_v<V>) {
    if (std::isnan(v)) return T{};
    const V t = std::trunc(v);
    if (t <= static_cast<V>(std::numeric_limits<T>::lowest())) return std::numeric_limits<T>::lowest();
    if (t >= static_cast<V>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
    return static_cast<T>(t);
  } else {
    return static_cast<T>(v);
  }
}

}  // namespace bnorm::exec

// Element types, memory layouts and the descriptor of a dense activation tensor.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

namespace bnorm {

/// Element type of activation data. Parameters and statistics are always f32.
enum class DType : std::uint8_t {
  f32,   ///< IEEE binary32
  bf16,  ///< bfloat16, stored as uint16_t bits
  f16,   ///< IEEE binary16, stored as uint16_t bits
};

/// Memory order of a tensor whose logical dims are (N, C, spatial...).
enum class Layout : std::uint8_t {
  channels_first,  ///< N, C, D, H, W in memory (PyTorch contiguous, "NCHW")
  channels_last,   ///< N, D, H, W, C in memory (PyTorch channels_last, "NHWC")
};

/// "f32", "bf16" or "f16".
std::string_view to_string(DType dtype) noexcept;
/// "channels_first" or "channels_last".
std::string_view to_string(Layout layout) noexcept;
/// Bytes per element of dtype.
std::size_t size_of(DType dtype) noexcept;

/// Largest rank a TensorDesc holds (N, C and up to three spatial dims).
inline constexpr int kMaxRank = 5;

/// Describes a dense tensor on caller-owned memory. Dims are always given in
/// logical order (N, C, spatial...) whatever the layout, as PyTorch's sizes are;
/// the layout says how they are ordered in memory. No strides: the tensor is
/// packed in its layout.
class TensorDesc {
 public:
  TensorDesc() = default;
  /// Throws Error(invalid_argument) for a dtype or layout that is none of
  /// the enumerators, a rank above kMaxRank, a negative dim, or more
  /// elements than int64 counts in bytes.
  TensorDesc(DType dtype, Layout layout, std::initializer_list<std::int64_t> dims);
  /// Same, from a span of dims.
  TensorDesc(DType dtype, Layout layout, std::span<const std::int64_t> dims);

  DType dtype() const noexcept { return dtype_; }
  Layout layout() const noexcept { return layout_; }
  int rank() const noexcept { return rank_; }
  /// The logical dims (N, C, spatial...).
  std::span<const std::int64_t> dims() const noexcept {
    return {dims_.data(), static_cast<std::size_t>(rank_)};
  }
  /// Logical dim i (0 = N, 1 = C); i must be below rank().
  std::int64_t dim(int i) const noexcept { return dims_[static_cast<std::size_t>(i)]; }
  /// N (dim 0), or 0 for rank 0.
  std::int64_t batch() const noexcept { return rank_ > 0 ? dims_[0] : 0; }
  /// C (dim 1), or 1 below rank 2.
  std::int64_t channels() const noexcept { return rank_ > 1 ? dims_[1] : 1; }
  /// Product of the spatial dims (1 for rank 2).
  std::int64_t spatial() const noexcept;
  /// Number of elements.
  std::int64_t elements() const noexcept;
  /// Size of the packed tensor in bytes.
  std::size_t bytes() const noexcept { return static_cast<std::size_t>(elements()) * size_of(dtype_); }

  /// Same dtype, layout and dims.
  friend bool operator==(const TensorDesc& a, const TensorDesc& b) noexcept;

  /// Human-readable form, e.g. "f32 channels_last 8x64x56x56".
  std::string str() const;
  /// Just the dims, e.g. "8x64x56x56".
  std::string dims_str() const;

 private:
  DType dtype_ = DType::f32;
  Layout layout_ = Layout::channels_first;
  int rank_ = 0;
  std::array<std::int64_t, kMaxRank> dims_{};
};

/// bfloat16 bits of x, rounded to nearest even; NaN becomes a quiet NaN.
std::uint16_t bf16_from_float(float x) noexcept;
/// The float a bfloat16 represents (exact).
float bf16_to_float(std::uint16_t bits) noexcept;
/// binary16 bits of x, rounded to nearest even, with subnormals, inf and NaN.
std::uint16_t f16_from_float(float x) noexcept;
/// The float a binary16 represents (exact).
float f16_to_float(std::uint16_t bits) noexcept;

}  // namespace bnorm

#include "bnorm/tensor.hpp"

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "bnorm/error.hpp"
#include "kernels/common/scalar.hpp"

namespace bnorm {

std::string_view to_string(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32:
      return "f32";
    case DType::bf16:
      return "bf16";
    case DType::f16:
      return "f16";
  }
  return "unknown";
}

std::string_view to_string(Layout layout) noexcept {
  return layout == Layout::channels_first ? "channels_first" : "channels_last";
}

std::size_t size_of(DType dtype) noexcept { return dtype == DType::f32 ? 4 : 2; }

TensorDesc::TensorDesc(DType dtype, Layout layout, std::initializer_list<std::int64_t> dims)
    : TensorDesc(dtype, layout, std::span<const std::int64_t>(dims.begin(), dims.size())) {}

TensorDesc::TensorDesc(DType dtype, Layout layout, std::span<const std::int64_t> dims)
    : dtype_(dtype), layout_(layout) {
  if (dtype != DType::f32 && dtype != DType::bf16 && dtype != DType::f16) {
    throw Error(ErrorKind::invalid_argument, "TensorDesc dtype " + std::to_string(static_cast<int>(dtype)) +
                                                 ": not a DType (f32, bf16 or f16)");
  }
  if (layout != Layout::channels_first && layout != Layout::channels_last) {
    throw Error(ErrorKind::invalid_argument, "TensorDesc layout " + std::to_string(static_cast<int>(layout)) +
                                                 ": not a Layout (channels_first or channels_last)");
  }
  if (dims.size() > static_cast<std::size_t>(kMaxRank)) {
    throw Error(ErrorKind::invalid_argument, "TensorDesc dims: rank " + std::to_string(dims.size()) +
                                                 " is above the maximum rank " + std::to_string(kMaxRank) +
                                                 " (N, C and up to three spatial dims)");
  }
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0) {
      throw Error(ErrorKind::invalid_argument, "TensorDesc dims[" + std::to_string(i) +
                                                   "] = " + std::to_string(dims[i]) + ": dims must be >= 0");
    }
    dims_[i] = dims[i];
  }
  rank_ = static_cast<int>(dims.size());
  // elements(), spatial() and bytes() multiply dims: the product of the
  // nonzero ones, in bytes, must fit in int64 (it bounds all of them).
  const auto limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) /
                     static_cast<std::uint64_t>(size_of(dtype));
  std::uint64_t product = 1;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    const auto d = static_cast<std::uint64_t>(dims[i]);
    if (d == 0) continue;
    if (product > limit / d) {
      throw Error(ErrorKind::invalid_argument, "TensorDesc dims " + dims_str() + ": " +
                                                   std::to_string(size_of(dtype)) +
                                                   "-byte elements, too many to count: the product of the "
                                                   "nonzero dims times the element size must fit in int64");
    }
    product *= d;
  }
}

std::int64_t TensorDesc::spatial() const noexcept {
  std::int64_t s = 1;
  for (int i = 2; i < rank_; ++i) s *= dims_[static_cast<std::size_t>(i)];
  return s;
}

std::int64_t TensorDesc::elements() const noexcept {
  std::int64_t e = 1;
  for (int i = 0; i < rank_; ++i) e *= dims_[static_cast<std::size_t>(i)];
  return e;
}

bool operator==(const TensorDesc& a, const TensorDesc& b) noexcept {
  if (a.dtype_ != b.dtype_ || a.layout_ != b.layout_ || a.rank_ != b.rank_) return false;
  for (int i = 0; i < a.rank_; ++i)
    if (a.dims_[static_cast<std::size_t>(i)] != b.dims_[static_cast<std::size_t>(i)]) return false;
  return true;
}

std::string TensorDesc::dims_str() const {
  std::string out;
  for (int i = 0; i < rank_; ++i) {
    if (i) out += 'x';
    out += std::to_string(dims_[static_cast<std::size_t>(i)]);
  }
  return out.empty() ? "scalar" : out;
}

std::string TensorDesc::str() const {
  return std::string(to_string(dtype_)) + " " + std::string(to_string(layout_)) + " " + dims_str();
}

std::uint16_t bf16_from_float(float x) noexcept { return kernels::float_to_bf16_bits(x); }
float bf16_to_float(std::uint16_t bits) noexcept { return kernels::bf16_bits_to_float(bits); }
std::uint16_t f16_from_float(float x) noexcept { return kernels::float_to_f16_bits(x); }
float f16_to_float(std::uint16_t bits) noexcept { return kernels::f16_bits_to_float(bits); }

}  // namespace bnorm

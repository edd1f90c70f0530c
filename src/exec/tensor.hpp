// The executor's tensors: an element type, a shape and shared, 64-byte
// aligned storage, dense in C order (ONNX's layout). Copies share storage;
// ops write only to tensors they created.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace bnorm::exec {

/// Element types the executor holds (ONNX's numeric types and bool).
enum class ElementType : std::uint8_t { f32, f64, f16, bf16, i8, u8, i16, u16, i32, u32, i64, u64, boolean };

/// Bytes per element.
std::size_t size_of(ElementType type) noexcept;
/// "float32", "float16", "int64", "bool", ... (numpy's names).
std::string_view to_string(ElementType type) noexcept;
/// True for f32, f64, f16, bf16.
bool is_floating(ElementType type) noexcept;
/// The ElementType of an onnx::TensorProto::DataType; throws
/// Error(unsupported) naming `what` for strings, complex and other types.
ElementType from_onnx(std::int32_t data_type, const std::string& what);
/// The onnx::TensorProto::DataType of an ElementType.
std::int32_t to_onnx(ElementType type) noexcept;

using Shape = std::vector<std::int64_t>;

/// Number of elements of a shape; throws Error(invalid_argument) naming
/// `what` when a dim is negative or the product overflows.
std::int64_t element_count(const Shape& shape, const std::string& what = "shape");
/// Bytes of a tensor of `shape` and `type`; throws Error(invalid_argument)
/// naming `what` when they do not fit in int64.
std::size_t byte_count(const Shape& shape, ElementType type, const std::string& what);
/// "2x3x4" ("scalar" for rank 0).
std::string to_string(const Shape& shape);

/// Recycles the storage of freed tensors: an executor allocates the same
/// sizes batch after batch, and fresh pages cost a page fault each (large
/// blocks come from mmap). While a TensorPool::Scope is alive on a thread,
/// the tensors that thread allocates take their storage from the pool and
/// give it back when their last copy goes; storage outlives the pool as
/// long as a tensor uses it.
class TensorPool {
 public:
  TensorPool();
  ~TensorPool();
  TensorPool(const TensorPool&) = delete;
  TensorPool& operator=(const TensorPool&) = delete;

  /// Makes `pool` the allocating thread's pool until destroyed.
  class Scope {
   public:
    explicit Scope(TensorPool& pool);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    TensorPool* previous_;
  };

  struct State;

 private:
  friend class Tensor;
  std::shared_ptr<State> state_;
};

class Tensor {
 public:
  /// An empty tensor (no storage): an absent optional input.
  Tensor() = default;
  /// Allocates storage for `shape` (uninitialized).
  Tensor(ElementType type, Shape shape);
  /// A tensor over memory owned by someone else; `keep_alive` holds it.
  static Tensor view(ElementType type, Shape shape, std::shared_ptr<const void> keep_alive, const void* data);

  bool empty() const noexcept { return !data_; }
  ElementType type() const noexcept { return type_; }
  const Shape& shape() const noexcept { return shape_; }
  int rank() const noexcept { return static_cast<int>(shape_.size()); }
  std::int64_t dim(int i) const noexcept { return shape_[static_cast<std::size_t>(i)]; }
  std::int64_t elements() const noexcept { return elements_; }
  std::size_t bytes() const noexcept { return static_cast<std::size_t>(elements_) * size_of(type_); }

  const void* raw() const noexcept { return data_; }
  /// Writable data; only for a tensor this code allocated.
  void* raw() noexcept { return data_; }
  template <class T>
  const T* data() const noexcept {
    return static_cast<const T*>(data_);
  }
  template <class T>
  T* data() noexcept {
    return static_cast<T*>(data_);
  }

  /// Same storage, another shape of the same element count.
  Tensor reshaped(Shape shape) const;
  /// "float32 2x3x4".
  std::string str() const;

 private:
  ElementType type_ = ElementType::f32;
  Shape shape_;
  std::int64_t elements_ = 0;
  std::shared_ptr<const void> storage_;
  void* data_ = nullptr;
};

/// A copy of an ONNX tensor's values (raw or typed fields). Throws
/// Error(invalid_model) naming `what` when the data does not match the dims,
/// Error(unsupported) for non-numeric types.
Tensor from_onnx(const onnx::TensorProto& t, const std::string& what);

/// Element-wise conversion with ONNX Cast semantics: floating to integer
/// truncates toward zero (out of range is undefined in ONNX: saturated
/// here), to f16/bf16 rounds to nearest even, to bool is x != 0.
Tensor cast(const Tensor& x, ElementType to);

/// Element i of a tensor of any numeric type, as double.
double value_at(const Tensor& x, std::int64_t i);

}  // namespace bnorm::exec

#include "exec/tensor.hpp"

#include <cstring>
#include <mutex>
#include <unordered_map>
#include <new>

#include "bnorm/error.hpp"
#include "exec/dispatch.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::exec {

using TP = onnx::TensorProto;

std::size_t size_of(ElementType type) noexcept {
  switch (type) {
    case ElementType::f64:
    case ElementType::i64:
    case ElementType::u64:
      return 8;
    case ElementType::f32:
    case ElementType::i32:
    case ElementType::u32:
      return 4;
    case ElementType::f16:
    case ElementType::bf16:
    case ElementType::i16:
    case ElementType::u16:
      return 2;
    case ElementType::i8:
    case ElementType::u8:
    case ElementType::boolean:
      return 1;
  }
  return 1;
}

std::string_view to_string(ElementType type) noexcept {
  switch (type) {
    case ElementType::f32:
      return "float32";
    case ElementType::f64:
      return "float64";
    case ElementType::f16:
      return "float16";
    case ElementType::bf16:
      return "bfloat16";
    case ElementType::i8:
      return "int8";
    case ElementType::u8:
      return "uint8";
    case ElementType::i16:
      return "int16";
    case ElementType::u16:
      return "uint16";
    case ElementType::i32:
      return "int32";
    case ElementType::u32:
      return "uint32";
    case ElementType::i64:
      return "int64";
    case ElementType::u64:
      return "uint64";
    case ElementType::boolean:
      return "bool";
  }
  return "?";
}

bool is_floating(ElementType type) noexcept {
  return type == ElementType::f32 || type == ElementType::f64 || type == ElementType::f16 ||
         type == ElementType::bf16;
}

ElementType from_onnx(std::int32_t data_type, const std::string& what) {
  switch (data_type) {
    case TP::FLOAT:
      return ElementType::f32;
    case TP::DOUBLE:
      return ElementType::f64;
    case TP::FLOAT16:
      return ElementType::f16;
    case TP::BFLOAT16:
      return ElementType::bf16;
    case TP::INT8:
      return ElementType::i8;
    case TP::UINT8:
      return ElementType::u8;
    case TP::INT16:
      return ElementType::i16;
    case TP::UINT16:
      return ElementType::u16;
    case TP::INT32:
      return ElementType::i32;
    case TP::UINT32:
      return ElementType::u32;
    case TP::INT64:
      return ElementType::i64;
    case TP::UINT64:
      return ElementType::u64;
    case TP::BOOL:
      return ElementType::boolean;
    default:
      break;
  }
  throw Error(ErrorKind::unsupported, what + ": element type " + model::data_type_name(data_type) +
                                          " is not supported by the executor (numeric types and bool only)");
}

std::int32_t to_onnx(ElementType type) noexcept {
  switch (type) {
    case ElementType::f32:
      return TP::FLOAT;
    case ElementType::f64:
      return TP::DOUBLE;
    case ElementType::f16:
      return TP::FLOAT16;
    case ElementType::bf16:
      return TP::BFLOAT16;
    case ElementType::i8:
      return TP::INT8;
    case ElementType::u8:
      return TP::UINT8;
    case ElementType::i16:
      return TP::INT16;
    case ElementType::u16:
      return TP::UINT16;
    case ElementType::i32:
      return TP::INT32;
    case ElementType::u32:
      return TP::UINT32;
    case ElementType::i64:
      return TP::INT64;
    case ElementType::u64:
      return TP::UINT64;
    case ElementType::boolean:
      return TP::BOOL;
  }
  return TP::UNDEFINED;
}

std::int64_t element_count(const Shape& shape, const std::string& what) {
  std::int64_t n = 1;
  for (std::int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(n, d, &n))
      throw Error(ErrorKind::invalid_argument,
                  what + " " + to_string(shape) + " has a negative dim or too many elements");
  return n;
}

std::string to_string(const Shape& shape) {
  if (shape.empty()) return "scalar";
  std::string s;
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s;
}

namespace {
constexpr std::align_val_t kAlign{64};
// Blocks below this size come from malloc's own free lists anyway.
constexpr std::size_t kPoolMinBytes = 64 * 1024;
// Free blocks kept per size; beyond, they go back to the system.
constexpr std::size_t kPoolBlocksPerSize = 4;
thread_local TensorPool* current_pool = nullptr;
}  // namespace

struct TensorPool::State {
  std::mutex mutex;
  std::unordered_map<std::size_t, std::vector<void*>> free;  // bytes -> blocks
  ~State() {
    for (auto& [bytes, blocks] : free)
      for (void* p : blocks) ::operator delete(p, kAlign);
  }
};

TensorPool::TensorPool() : state_(std::make_shared<State>()) {}
TensorPool::~TensorPool() = default;
TensorPool::Scope::Scope(TensorPool& pool) : previous_(current_pool) { current_pool = &pool; }
TensorPool::Scope::~Scope() { current_pool = previous_; }

std::size_t byte_count(const Shape& shape, ElementType type, const std::string& what) {
  const std::int64_t n = element_count(shape, what);
  std::int64_t bytes = 0;
  if (__builtin_mul_overflow(n, static_cast<std::int64_t>(size_of(type)), &bytes))
    throw Error(ErrorKind::invalid_argument, what + " " + to_string(shape) + " of " +
                                                 std::string(to_string(type)) + ": " + std::to_string(n) +
                                                 " elements, too many bytes to address");
  return static_cast<std::size_t>(bytes);
}

Tensor::Tensor(ElementType type, Shape shape) : type_(type), shape_(std::move(shape)) {
  // The byte count must not wrap (a 1-byte block for 2^62 floats).
  elements_ = static_cast<std::int64_t>(byte_count(shape_, type_, "tensor shape") / size_of(type_));
  // At least one byte, so that an empty tensor still has storage (and is
  // told apart from an absent one).
  const std::size_t bytes = std::max<std::size_t>(1, static_cast<std::size_t>(elements_) * size_of(type_));
  if (current_pool && bytes >= kPoolMinBytes) {
    std::shared_ptr<TensorPool::State> state = current_pool->state_;
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(state->mutex);
      auto& blocks = state->free[bytes];
      if (!blocks.empty()) {
        p = blocks.back();
        blocks.pop_back();
      }
    }
    if (!p) p = ::operator new(bytes, kAlign);
    storage_ = std::shared_ptr<void>(p, [state, bytes](void* q) {
      std::lock_guard<std::mutex> lock(state->mutex);
      auto& blocks = state->free[bytes];
      if (blocks.size() < kPoolBlocksPerSize) {
        blocks.push_back(q);
      } else {
        ::operator delete(q, kAlign);
      }
    });
    data_ = p;
    return;
  }
  void* p = ::operator new(bytes, kAlign);
  storage_ = std::shared_ptr<void>(p, [](void* q) { ::operator delete(q, kAlign); });
  data_ = p;
}

Tensor Tensor::view(ElementType type, Shape shape, std::shared_ptr<const void> keep_alive, const void* data) {
  Tensor t;
  t.type_ = type;
  t.shape_ = std::move(shape);
  t.elements_ = element_count(t.shape_, "tensor shape");
  t.storage_ = std::move(keep_alive);
  t.data_ = const_cast<void*>(data);  // read-only by contract: ops write only to tensors they allocate
  return t;
}

Tensor Tensor::reshaped(Shape shape) const {
  Tensor t = *this;
  const std::int64_t n = element_count(shape, "new shape");
  if (n != elements_)
    throw Error(ErrorKind::shape_mismatch, "cannot reshape " + str() + " to " + to_string(shape) + " (" +
                                               std::to_string(n) + " elements)");
  t.shape_ = std::move(shape);
  return t;
}

std::string Tensor::str() const { return std::string(to_string(type_)) + " " + to_string(shape_); }

Tensor from_onnx(const onnx::TensorProto& t, const std::string& what) {
  const ElementType type = from_onnx(t.data_type(), what);
  Shape shape(t.dims().begin(), t.dims().end());
  if (t.data_location() == TP::EXTERNAL)
    throw Error(ErrorKind::invalid_model, what + ": external data was not loaded");
  // The data held is checked against the dims before anything is allocated:
  // a small file cannot ask for a huge tensor.
  std::size_t bytes = 0;
  try {
    bytes = byte_count(shape, type, what + " dims");
  } catch (const Error& e) {
    throw Error(ErrorKind::invalid_model, e.what());
  }
  const auto elements = static_cast<std::int64_t>(bytes / size_of(type));
  if (t.has_raw_data()) {
    if (t.raw_data().size() != bytes)
      throw Error(ErrorKind::invalid_model, what + ": holds " + std::to_string(t.raw_data().size()) +
                                                " bytes, its dims and type need " + std::to_string(bytes));
    Tensor out(type, shape);
    std::memcpy(out.raw(), t.raw_data().data(), out.bytes());
    return out;
  }
  Tensor out;
  // Typed fields (ONNX stores the small types widened in int32_data).
  auto fill = [&](const auto& field) {
    if (static_cast<std::int64_t>(field.size()) != elements)
      throw Error(ErrorKind::invalid_model, what + ": holds " + std::to_string(field.size()) +
                                                " values, its dims say " + std::to_string(elements));
    out = Tensor(type, shape);
    dispatch(type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* dst = out.data<T>();
      for (std::int64_t i = 0; i < out.elements(); ++i) {
        const auto v = field[static_cast<int>(i)];
        if constexpr (is_half_v<T>) {
          dst[i] = T{static_cast<std::uint16_t>(v)};
        } else {
          dst[i] = static_cast<T>(v);
        }
      }
    });
  };
  switch (type) {
    case ElementType::f32:
      fill(t.float_data());
      break;
    case ElementType::f64:
      fill(t.double_data());
      break;
    case ElementType::i64:
      fill(t.int64_data());
      break;
    case ElementType::u32:
    case ElementType::u64:
      fill(t.uint64_data());
      break;
    default:
      fill(t.int32_data());
      break;
  }
  return out;
}

Tensor cast(const Tensor& x, ElementType to) {
  Tensor y(to, x.shape());
  dispatch(x.type(), [&](auto from_tag) {
    using From = typename decltype(from_tag)::type;
    dispatch(to, [&](auto to_tag) {
      using To = typename decltype(to_tag)::type;
      const From* src = x.data<From>();
      To* dst = y.data<To>();
      for (std::int64_t i = 0; i < x.elements(); ++i) dst[i] = narrow<To>(widen(src[i]));
    });
  });
  return y;
}

double value_at(const Tensor& x, std::int64_t i) {
  return dispatch(x.type(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    return static_cast<double>(widen(x.data<T>()[i]));
  });
}

}  // namespace bnorm::exec

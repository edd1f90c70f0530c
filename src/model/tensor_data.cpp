#include "model/tensor_data.hpp"

#include <bit>
#include <cstring>

#include "bnorm/error.hpp"
#include "kernels/common/scalar.hpp"

namespace bnorm::model {
namespace {
using TP = onnx::TensorProto;

std::size_t element_bytes(std::int32_t t) {
  switch (t) {
    case TP::FLOAT:
    case TP::INT32:
    case TP::UINT32:
      return 4;
    case TP::DOUBLE:
    case TP::INT64:
    case TP::UINT64:
      return 8;
    case TP::FLOAT16:
    case TP::BFLOAT16:
    case TP::INT16:
    case TP::UINT16:
      return 2;
    case TP::INT8:
    case TP::UINT8:
    case TP::BOOL:
      return 1;
    default:
      return 0;
  }
}

template <class T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

double from_raw(std::int32_t type, const char* p) {
  switch (type) {
    case TP::FLOAT:
      return load<float>(p);
    case TP::DOUBLE:
      return load<double>(p);
    case TP::FLOAT16:
      return kernels::f16_bits_to_float(load<std::uint16_t>(p));
    case TP::BFLOAT16:
      return kernels::bf16_bits_to_float(load<std::uint16_t>(p));
    case TP::INT32:
      return load<std::int32_t>(p);
    case TP::UINT32:
      return load<std::uint32_t>(p);
    case TP::INT64:
      return static_cast<double>(load<std::int64_t>(p));
    case TP::UINT64:
      return static_cast<double>(load<std::uint64_t>(p));
    case TP::INT16:
      return load<std::int16_t>(p);
    case TP::UINT16:
      return load<std::uint16_t>(p);
    case TP::INT8:
      return load<std::int8_t>(p);
    case TP::UINT8:
    case TP::BOOL:
      return load<std::uint8_t>(p);
    default:
      return 0.0;
  }
}
}  // namespace

bool is_floating(std::int32_t t) {
  return t == TP::FLOAT || t == TP::FLOAT16 || t == TP::BFLOAT16 || t == TP::DOUBLE;
}

std::string data_type_name(std::int32_t t) {
  if (onnx::TensorProto_DataType_IsValid(t))
    return onnx::TensorProto_DataType_Name(static_cast<onnx::TensorProto_DataType>(t));
  return "type " + std::to_string(t);
}

std::int64_t element_count(const onnx::TensorProto& t) {
  std::int64_t n = 1;
  for (std::int64_t d : t.dims())
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  return n;
}

namespace {
// The number of values the tensor's data holds (raw or typed field).
std::size_t stored_count(const onnx::TensorProto& t, std::size_t esize) {
  if (t.has_raw_data()) return t.raw_data().size() / esize;
  switch (t.data_type()) {
    case TP::FLOAT:
      return static_cast<std::size_t>(t.float_data_size());
    case TP::DOUBLE:
      return static_cast<std::size_t>(t.double_data_size());
    case TP::INT64:
      return static_cast<std::size_t>(t.int64_data_size());
    case TP::UINT32:
    case TP::UINT64:
      return static_cast<std::size_t>(t.uint64_data_size());
    default:
      return static_cast<std::size_t>(t.int32_data_size());
  }
}
}  // namespace

std::size_t check_data(const onnx::TensorProto& t, const std::string& what) {
  const std::int32_t type = t.data_type();
  const std::size_t esize = element_bytes(type);
  if (esize == 0)
    throw Error(ErrorKind::invalid_model,
                what + ": element type " + data_type_name(type) + " is not numeric");
  if (t.data_location() == TP::EXTERNAL)
    throw Error(ErrorKind::invalid_model, what + ": external data was not loaded");
  const std::int64_t n = element_count(t);
  if (n < 0) throw Error(ErrorKind::invalid_model, what + ": a dimension is negative or their product overflows");
  const std::size_t have = stored_count(t, esize);
  if (have != static_cast<std::size_t>(n) || (t.has_raw_data() && t.raw_data().size() % esize != 0))
    throw Error(ErrorKind::invalid_model,
                what + ": holds " + std::to_string(have) + " values, its dims say " + std::to_string(n));
  return static_cast<std::size_t>(n);
}

std::vector<double> to_doubles(const onnx::TensorProto& t, const std::string& what) {
  const std::int32_t type = t.data_type();
  std::vector<double> out(check_data(t, what));
  if (t.has_raw_data()) {
    const std::size_t esize = element_bytes(type);
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = from_raw(type, t.raw_data().data() + i * esize);
    return out;
  }
  auto copy = [&](const auto& field, auto convert) {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = convert(field[static_cast<int>(i)]);
  };
  switch (type) {
    case TP::FLOAT:
      copy(t.float_data(), [](float v) { return static_cast<double>(v); });
      break;
    case TP::DOUBLE:
      copy(t.double_data(), [](double v) { return v; });
      break;
    case TP::INT64:
      copy(t.int64_data(), [](std::int64_t v) { return static_cast<double>(v); });
      break;
    case TP::UINT32:
    case TP::UINT64:
      copy(t.uint64_data(), [](std::uint64_t v) { return static_cast<double>(v); });
      break;
    case TP::FLOAT16:
      copy(t.int32_data(), [](std::int32_t v) {
        return static_cast<double>(kernels::f16_bits_to_float(static_cast<std::uint16_t>(v)));
      });
      break;
    case TP::BFLOAT16:
      copy(t.int32_data(), [](std::int32_t v) {
        return static_cast<double>(kernels::bf16_bits_to_float(static_cast<std::uint16_t>(v)));
      });
      break;
    default:
      copy(t.int32_data(), [](std::int32_t v) { return static_cast<double>(v); });
      break;
  }
  return out;
}

void set_values(onnx::TensorProto& t, const std::vector<double>& values) {
  const std::int32_t type = t.data_type();
  const std::size_t esize = element_bytes(type);
  std::string raw(values.size() * esize, '\0');
  for (std::size_t i = 0; i < values.size(); ++i) {
    char* p = raw.data() + i * esize;
    const double v = values[i];
    switch (type) {
      case TP::FLOAT: {
        const float f = static_cast<float>(v);
        std::memcpy(p, &f, 4);
        break;
      }
      case TP::DOUBLE:
        std::memcpy(p, &v, 8);
        break;
      case TP::FLOAT16: {
        // Via f32: differs from one direct rounding only within 2^-24 of a tie.
        const std::uint16_t b = kernels::float_to_f16_bits(static_cast<float>(v));
        std::memcpy(p, &b, 2);
        break;
      }
      case TP::BFLOAT16: {
        const std::uint16_t b = kernels::float_to_bf16_bits(static_cast<float>(v));
        std::memcpy(p, &b, 2);
        break;
      }
      default:
        throw Error(ErrorKind::unsupported, "writing tensor values of type " + data_type_name(type));
    }
  }
  t.clear_float_data();
  t.clear_double_data();
  t.clear_int32_data();
  t.clear_int64_data();
  t.clear_uint64_data();
  t.set_raw_data(std::move(raw));
}

}  // namespace bnorm::model

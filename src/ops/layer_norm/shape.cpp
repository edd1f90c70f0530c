#include "ops/layer_norm/shape.hpp"

#include <span>
#include <string>

#include "bnorm/error.hpp"

namespace bnorm::ops::layer_norm {
namespace {
std::string dims_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}
}  // namespace

std::int64_t check_normalized_shape(const std::vector<std::int64_t>& shape) {
  if (shape.empty() || shape.size() > static_cast<std::size_t>(kMaxRank)) {
    throw Error(ErrorKind::invalid_argument, "argument 'options.normalized_shape' = " + dims_string(shape) +
                                                 ": it must have 1 to " + std::to_string(kMaxRank) + " dims");
  }
  for (std::int64_t d : shape) {
    if (d < 0) {
      throw Error(ErrorKind::invalid_argument, "argument 'options.normalized_shape' = " + dims_string(shape) +
                                                   ": dims must be >= 0");
    }
  }
  // The count (and its f32 parameters' bytes) must fit in int64, as a
  // TensorDesc's: TensorDesc's own check, on these dims.
  try {
    return TensorDesc(DType::f32, Layout::channels_first, std::span<const std::int64_t>(shape)).elements();
  } catch (const Error&) {
    throw Error(ErrorKind::invalid_argument,
                "argument 'options.normalized_shape' = " + dims_string(shape) +
                    ": too many elements; their count times 4 bytes (the f32 weight) "
                    "must fit in int64");
  }
}

void check_trailing_dims(const TensorDesc& desc, const char* name, const std::vector<std::int64_t>& shape) {
  const auto k = static_cast<int>(shape.size());
  bool same = desc.rank() >= k;
  for (int i = 0; same && i < k; ++i) same = desc.dim(desc.rank() - k + i) == shape[static_cast<std::size_t>(i)];
  if (!same) {
    throw Error(ErrorKind::shape_mismatch, std::string("argument '") + name + "' has dims " + desc.dims_str() +
                                               ": expected input with shape [*, " +
                                               dims_string(shape).substr(1) + " (normalized_shape = " +
                                               dims_string(shape) + ")");
  }
}

std::size_t leading_rows(const TensorDesc& desc, int normalized_dims) {
  std::int64_t rows = 1;
  for (int i = 0; i < desc.rank() - normalized_dims; ++i) rows *= desc.dim(i);
  return static_cast<std::size_t>(rows);
}

}  // namespace bnorm::ops::layer_norm

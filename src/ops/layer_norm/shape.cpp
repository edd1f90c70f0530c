#include "ops/layer_norm/shape.hpp"

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
  std::int64_t len = 1;
  for (std::int64_t d : shape) {
    if (d < 0) {
      throw Error(ErrorKind::invalid_argument, "argument 'options.normalized_shape' = " + dims_string(shape) +
                                                   ": dims must be >= 0");
    }
    len *= d;
  }
  return len;
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

void check_same_rows(const TensorDesc& desc, int normalized_dims, std::size_t rows, const char* layer) {
  const std::size_t here = leading_rows(desc, normalized_dims);
  if (here != rows) {
    throw Error(ErrorKind::invalid_argument,
                std::string(layer) + "::backward: argument 'src_desc' (dims " + desc.dims_str() + ") has " +
                    std::to_string(here) + " rows but the last forward had " + std::to_string(rows) +
                    ": backward needs the input of the last forward");
  }
}

}  // namespace bnorm::ops::layer_norm

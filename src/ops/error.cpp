#include "bnorm/error.hpp"

namespace bnorm {

std::string_view to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::invalid_argument:
      return "invalid_argument";
    case ErrorKind::shape_mismatch:
      return "shape_mismatch";
    case ErrorKind::null_pointer:
      return "null_pointer";
    case ErrorKind::unsupported:
      return "unsupported";
    case ErrorKind::io:
      return "io";
    case ErrorKind::invalid_model:
      return "invalid_model";
    case ErrorKind::runtime:
      return "runtime";
  }
  return "unknown";
}

Error::Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}

}  // namespace bnorm

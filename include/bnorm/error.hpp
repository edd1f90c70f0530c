// The one error type of bnorm's public API.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace bnorm {

/// What kind of rule a call broke. The CLI maps each kind to an exit code.
enum class ErrorKind {
  invalid_argument,  ///< a value is outside its documented range
  shape_mismatch,    ///< dims, layout or dtype of two tensors disagree
  null_pointer,      ///< a required buffer is missing
  unsupported,       ///< valid, but not implemented (e.g. an op or attribute)
  io,                ///< reading or writing a file failed
  invalid_model,     ///< a model file is malformed or inconsistent
  runtime,           ///< a failure while running (e.g. a collective)
};

/// Name of an ErrorKind, e.g. "invalid_argument".
std::string_view to_string(ErrorKind kind) noexcept;

/// Thrown by every public function of bnorm. The message names the argument,
/// the offending value and the rule it broke.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message);

  /// The kind of rule that was broken.
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace bnorm

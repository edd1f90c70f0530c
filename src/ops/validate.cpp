#include "ops/validate.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

namespace bnorm::ops {

std::string format_value(double value) {
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, result.ptr);
}

void require_pointer(const void* p, const char* name, const char* why) {
  if (p == nullptr) {
    throw Error(ErrorKind::null_pointer, std::string("argument '") + name + "' is null: " + why);
  }
}

void require_activation(const TensorDesc& desc, const char* name, int min_rank, int max_rank) {
  if (desc.rank() < min_rank || desc.rank() > max_rank) {
    throw Error(ErrorKind::invalid_argument, std::string("argument '") + name + "' has rank " +
                                                 std::to_string(desc.rank()) + " (dims " + desc.dims_str() +
                                                 "): the rank must be " + std::to_string(min_rank) + " to " +
                                                 std::to_string(max_rank) + " (N, C, spatial...)");
  }
  if (desc.channels() == 0) {
    throw Error(ErrorKind::invalid_argument, std::string("argument '") + name + "' has C = 0 (dims " +
                                                 desc.dims_str() + "): at least one channel is required");
  }
}

void require_same(const TensorDesc& a, const char* a_name, const TensorDesc& b, const char* b_name) {
  if (a == b) return;
  std::string what;
  if (a.dtype() != b.dtype()) {
    what =
        "dtype " + std::string(to_string(b.dtype())) + " differs from " + std::string(to_string(a.dtype()));
  } else if (a.layout() != b.layout()) {
    what = "layout " + std::string(to_string(b.layout())) + " differs from " +
           std::string(to_string(a.layout()));
  } else {
    what = "dims " + b.dims_str() + " differ from " + a.dims_str();
  }
  throw Error(ErrorKind::shape_mismatch, std::string("argument '") + b_name + "': " + what + " of '" +
                                             a_name + "'; both must have the same dtype, layout and dims");
}

void require_forward_of(const TensorDesc& src_desc, const TensorDesc& forward_desc, const char* layer) {
  if (forward_desc.rank() == 0) {
    throw Error(ErrorKind::invalid_argument,
                std::string(layer) +
                    "::backward called before any forward that saved statistics: there "
                    "is nothing to differentiate through yet");
  }
  if (!std::ranges::equal(src_desc.dims(), forward_desc.dims())) {
    throw Error(ErrorKind::shape_mismatch, "argument 'src_desc' has dims " + src_desc.dims_str() +
                                               ": the last forward had " + forward_desc.dims_str() +
                                               ", and " + layer +
                                               "::backward differentiates through its statistics");
  }
}

void grow_saved(std::vector<float>& saved, std::size_t count, const TensorDesc& src_desc) {
  const std::size_t want = std::max<std::size_t>(count, 1);
  if (saved.size() >= want) return;
  try {
    saved.resize(want);
  } catch (const std::exception&) {  // std::bad_alloc, std::length_error
    throw Error(ErrorKind::runtime, "argument 'src_desc' (dims " + src_desc.dims_str() +
                                        "): the layer saves " + std::to_string(count) +
                                        " statistics for its backward, which cannot be allocated");
  }
}

void require_eps(double eps, const char* name) {
  if (!(eps >= 0.0) || !std::isfinite(eps)) {
    throw Error(ErrorKind::invalid_argument, std::string("argument '") + name + "' = " + format_value(eps) +
                                                 ": eps must be finite and >= 0");
  }
}

void require_channels(std::int64_t channels, const char* name) {
  if (channels <= 0) {
    throw Error(ErrorKind::invalid_argument, std::string("argument '") + name + "' = " + std::to_string(channels) +
                                                 ": the number of channels must be > 0");
  }
  // As a TensorDesc's dims: C f32 values must have a byte count in int64.
  if (channels > std::numeric_limits<std::int64_t>::max() / 4) {
    throw Error(ErrorKind::invalid_argument,
                std::string("argument '") + name + "' = " + std::to_string(channels) +
                    ": too many channels; C times 4 bytes (f32 parameters) must fit "
                    "in int64");
  }
}

void require_momentum(double momentum, const char* name, bool or_cumulative) {
  if (!(momentum >= 0.0 && momentum <= 1.0)) {
    throw Error(ErrorKind::invalid_argument,
                std::string("argument '") + name + "' = " + format_value(momentum) + ": momentum must be in [0, 1]" +
                    (or_cumulative ? ", or std::nullopt for a cumulative average" : ""));
  }
}

}  // namespace bnorm::ops

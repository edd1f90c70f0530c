// Argument checks shared by the public functions. Each throws bnorm::Error
// with a message naming the argument, the value and the rule.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/tensor.hpp"

namespace bnorm::ops {

/// Throws Error(null_pointer) when p is null and the data is required.
void require_pointer(const void* p, const char* name, const char* why);

/// Throws unless desc has rank in [min_rank, max_rank] and C >= 1.
void require_activation(const TensorDesc& desc, const char* name, int min_rank, int max_rank);

/// Throws Error(shape_mismatch) unless b has a's dtype, layout and dims.
void require_same(const TensorDesc& a, const char* a_name, const TensorDesc& b, const char* b_name);

/// A layer's backward (`layer` names it, e.g. "BatchNorm"): throws
/// Error(invalid_argument) when no forward has saved statistics yet
/// (forward_desc has rank 0), and Error(shape_mismatch) unless src_desc has
/// the dims of that forward, whose statistics backward differentiates
/// through.
void require_forward_of(const TensorDesc& src_desc, const TensorDesc& forward_desc, const char* layer);

/// Grows a layer's saved statistics to at least max(count, 1) values (never
/// shrinks: a repeated or smaller batch allocates nothing; never empty, so
/// the pointers handed to backward are valid even for an empty batch).
/// Throws Error(runtime) naming src_desc and the count when they cannot be
/// allocated (an empty input with 2^60 rows), before anything is written.
void grow_saved(std::vector<float>& saved, std::size_t count, const TensorDesc& src_desc);

/// Throws unless eps is finite and >= 0.
void require_eps(double eps, const char* name);

/// Throws unless a layer's channel count is > 0.
void require_channels(std::int64_t channels, const char* name);

/// Throws unless momentum is in [0, 1] (the weight of a new batch in a
/// running average). `or_cumulative`: the message also offers std::nullopt.
void require_momentum(double momentum, const char* name, bool or_cumulative = false);

/// Formats a double for messages (shortest round-trip form).
std::string format_value(double value);

}  // namespace bnorm::ops

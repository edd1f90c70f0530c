// Shape checks of the LayerNorm and RMSNorm layers (torch.nn's
// normalized_shape), shared by both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "bnorm/tensor.hpp"

namespace bnorm::ops::layer_norm {

/// Throws Error(invalid_argument) unless shape has 1 to kMaxRank dims, each
/// >= 0. Returns the number of elements of a row (their product).
std::int64_t check_normalized_shape(const std::vector<std::int64_t>& shape);

/// Throws Error(shape_mismatch) unless the trailing dims of desc (the
/// argument `name`) equal shape, as torch.nn.LayerNorm requires.
void check_trailing_dims(const TensorDesc& desc, const char* name, const std::vector<std::int64_t>& shape);

/// Product of the dims of desc before its last normalized_dims.
std::size_t leading_rows(const TensorDesc& desc, int normalized_dims);

}  // namespace bnorm::ops::layer_norm

// Reading and writing the values of ONNX tensors (initializers, Constant
// values) as doubles, whatever their element type and encoding.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bnorm::model {

/// True for the element types the passes compute with: float, float16,
/// bfloat16, double.
bool is_floating(std::int32_t data_type);

/// Number of elements a tensor's dims describe; -1 when a dimension is
/// negative or the product overflows.
std::int64_t element_count(const onnx::TensorProto& t);

/// Checks that the tensor holds numeric data of the size its dims say and
/// returns that size; throws Error(invalid_model) otherwise (see to_doubles).
std::size_t check_data(const onnx::TensorProto& t, const std::string& what);

/// The tensor's values as doubles (exact for every floating type and for
/// integers up to 2^53). `what` names the tensor in error messages. Throws
/// Error(invalid_model) when the data is missing, of the wrong size, stored
/// externally and not loaded, or of an element type that is not numeric.
std::vector<double> to_doubles(const onnx::TensorProto& t, const std::string& what);

/// Replaces the tensor's values, rounding each once to its element type
/// (round to nearest even), written as raw_data. values.size() must equal
/// element_count(t).
void set_values(onnx::TensorProto& t, const std::vector<double>& values);

/// Name of an element type for messages, e.g. "float16".
std::string data_type_name(std::int32_t data_type);

}  // namespace bnorm::model

// The executor's op factories (one per op type, grouped by file) and the
// helpers they share.
#pragma once

#include <string>
#include <vector>

#include "exec/context.hpp"
#include "exec/op.hpp"

namespace bnorm::exec {

// elementwise.cpp
std::unique_ptr<Op> make_binary(NodeInfo& info);  // Add Sub Mul Div Pow
std::unique_ptr<Op> make_unary(NodeInfo& info);   // Relu LeakyRelu Sigmoid HardSigmoid HardSwish Tanh Sqrt
std::unique_ptr<Op> make_clip(NodeInfo& info);
// conv.cpp
std::unique_ptr<Op> make_conv(NodeInfo& info);
std::unique_ptr<Op> make_conv_transpose(NodeInfo& info);
// matmul.cpp
std::unique_ptr<Op> make_gemm(NodeInfo& info);
std::unique_ptr<Op> make_matmul(NodeInfo& info);
// pool.cpp
std::unique_ptr<Op> make_pool(NodeInfo& info);  // MaxPool AveragePool
std::unique_ptr<Op> make_global_average_pool(NodeInfo& info);
// softmax.cpp
std::unique_ptr<Op> make_softmax(NodeInfo& info);
// batch_norm.cpp
std::unique_ptr<Op> make_batch_norm(NodeInfo& info);
// shape_ops.cpp
std::unique_ptr<Op> make_reshape(NodeInfo& info);
std::unique_ptr<Op> make_flatten(NodeInfo& info);
std::unique_ptr<Op> make_transpose(NodeInfo& info);
std::unique_ptr<Op> make_concat(NodeInfo& info);
std::unique_ptr<Op> make_squeeze(NodeInfo& info);  // Squeeze Unsqueeze
std::unique_ptr<Op> make_shape(NodeInfo& info);
std::unique_ptr<Op> make_gather(NodeInfo& info);
std::unique_ptr<Op> make_pad(NodeInfo& info);
std::unique_ptr<Op> make_identity(NodeInfo& info);  // Identity Dropout
std::unique_ptr<Op> make_cast(NodeInfo& info);
std::unique_ptr<Op> make_constant(NodeInfo& info);
std::unique_ptr<Op> make_slice(NodeInfo& info);
std::unique_ptr<Op> make_constant_of_shape(NodeInfo& info);
/// The value of a Constant node (evaluated once, when compiling).
Tensor constant_value(NodeInfo& info);

// ---- helpers shared by the ops (common.cpp)

/// An axis in [-rank, rank) made non-negative; throws naming the node.
int normalize_axis(std::int64_t axis, int rank, const std::string& node, const char* what = "axis");
/// x itself when it is f32, else converted to f32.
Tensor to_f32(const Tensor& x);
/// Whether an f32 tensor holds a NaN or an infinity.
bool any_non_finite(const Tensor& f32);
/// Throws unless x is one of f32, f64, f16, bf16.
void require_floating(const Tensor& x, const std::string& node, const char* what);
/// The numpy broadcast of two shapes; throws naming the node.
Shape broadcast_shapes(const Shape& a, const Shape& b, const std::string& node);
/// The int64 values of a 1-D (or 0-D) integer tensor (shape operands).
std::vector<std::int64_t> int_values(const Tensor& t, const std::string& node, const char* what);
/// Output size of a sliding window along one axis (ONNX Conv/Pool rules).
std::int64_t window_output(std::int64_t in, std::int64_t kernel, std::int64_t stride, std::int64_t dilation,
                           std::int64_t pad_begin, std::int64_t pad_end, bool ceil_mode);

/// ONNX auto_pad, resolved per run (SAME_* depends on the input size).
struct Padding {
  std::string auto_pad = "NOTSET";  // NOTSET, SAME_UPPER, SAME_LOWER, VALID
  std::vector<std::int64_t> pads;   // begins then ends (NOTSET only)
  /// Begin and end pads for spatial dims `in` with the given windows.
  void resolve(const std::vector<std::int64_t>& in, const std::vector<std::int64_t>& kernel,
               const std::vector<std::int64_t>& strides, const std::vector<std::int64_t>& dilations,
               std::vector<std::int64_t>& begin, std::vector<std::int64_t>& end) const;
};
/// Reads auto_pad and pads; checks the values.
Padding read_padding(NodeInfo& info, int spatial);

/// oneDNN memory descriptor of a dense C-order f32 tensor.
dnnl::memory::desc plain_desc(const Shape& shape, dnnl::memory::data_type type = dnnl::memory::data_type::f32);

}  // namespace bnorm::exec

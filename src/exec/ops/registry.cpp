// The op types the executor runs and their factories.

#include <map>

#include "exec/ops/ops.hpp"

namespace bnorm::exec {
namespace {

const std::map<std::string, OpFactory, std::less<>>& registry() {
  static const std::map<std::string, OpFactory, std::less<>> ops = {
      {"Add", make_binary},
      {"AveragePool", make_pool},
      {"BatchNormalization", make_batch_norm},
      {"Cast", make_cast},
      {"Clip", make_clip},
      {"Concat", make_concat},
      {"Constant", make_constant},
      {"ConstantOfShape", make_constant_of_shape},
      {"Conv", make_conv},
      {"ConvTranspose", make_conv_transpose},
      {"Div", make_binary},
      {"Dropout", make_identity},
      {"Flatten", make_flatten},
      {"Gather", make_gather},
      {"Gemm", make_gemm},
      {"GlobalAveragePool", make_global_average_pool},
      {"HardSigmoid", make_unary},
      {"HardSwish", make_unary},
      {"Identity", make_identity},
      {"LeakyRelu", make_unary},
      {"MatMul", make_matmul},
      {"MaxPool", make_pool},
      {"Mul", make_binary},
      {"Pad", make_pad},
      {"Pow", make_binary},
      {"Relu", make_unary},
      {"Reshape", make_reshape},
      {"Shape", make_shape},
      {"Sigmoid", make_unary},
      {"Slice", make_slice},
      {"Softmax", make_softmax},
      {"Sqrt", make_unary},
      {"Squeeze", make_squeeze},
      {"Sub", make_binary},
      {"Tanh", make_unary},
      {"Transpose", make_transpose},
      {"Unsqueeze", make_squeeze},
  };
  return ops;
}

}  // namespace

OpFactory find_op(std::string_view op_type) {
  const auto& r = registry();
  const auto it = r.find(op_type);
  return it == r.end() ? nullptr : it->second;
}

std::vector<std::string> supported_ops() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : registry()) names.push_back(name);
  return names;
}

}  // namespace bnorm::exec

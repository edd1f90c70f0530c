#include "exec/op.hpp"

#include "bnorm/error.hpp"
#include "model/onnx_model.hpp"

namespace bnorm::exec {

using AP = onnx::AttributeProto;

NodeInfo::NodeInfo(const onnx::NodeProto& node, int index, std::int64_t opset,
                   std::function<const Tensor*(const std::string&)> constant)
    : node_(node),
      index_(index),
      opset_(opset),
      describe_(model::describe(node, index)),
      constant_(std::move(constant)) {}

const Tensor* NodeInfo::constant_input(int i) const { return has_input(i) ? constant_(node_.input(i)) : nullptr; }

const onnx::AttributeProto* NodeInfo::find(const std::string& name, int type) {
  used_.insert(name);
  const auto* a = model::find_attribute(node_, name);
  if (!a) return nullptr;
  if (a->type() != type) {
    invalid("attribute " + name + " has type " + AP::AttributeType_Name(static_cast<AP::AttributeType>(a->type())) +
            ", expected " + AP::AttributeType_Name(static_cast<AP::AttributeType>(type)));
  }
  return a;
}

std::int64_t NodeInfo::i(const std::string& name, std::int64_t fallback) {
  const auto* a = find(name, AP::INT);
  return a ? a->i() : fallback;
}

float NodeInfo::f(const std::string& name, float fallback) {
  const auto* a = find(name, AP::FLOAT);
  return a ? a->f() : fallback;
}

std::string NodeInfo::s(const std::string& name, const std::string& fallback) {
  const auto* a = find(name, AP::STRING);
  return a ? a->s() : fallback;
}

std::vector<std::int64_t> NodeInfo::ints(const std::string& name, std::vector<std::int64_t> fallback) {
  const auto* a = find(name, AP::INTS);
  return a ? std::vector<std::int64_t>(a->ints().begin(), a->ints().end()) : fallback;
}

std::vector<float> NodeInfo::floats(const std::string& name) {
  const auto* a = find(name, AP::FLOATS);
  return a ? std::vector<float>(a->floats().begin(), a->floats().end()) : std::vector<float>{};
}

const onnx::TensorProto* NodeInfo::t(const std::string& name) {
  const auto* a = find(name, AP::TENSOR);
  return a ? &a->t() : nullptr;
}

bool NodeInfo::has(const std::string& name) const { return model::find_attribute(node_, name) != nullptr; }

void NodeInfo::check_attributes_used() const {
  for (const auto& a : node_.attribute())
    if (!used_.count(a.name())) unsupported("attribute '" + a.name() + "' is not supported by the executor");
}

void NodeInfo::unsupported(const std::string& what) const {
  throw Error(ErrorKind::unsupported, describe_ + ": " + what);
}

void NodeInfo::invalid(const std::string& what) const {
  throw Error(ErrorKind::invalid_model, describe_ + ": " + what);
}

void fail_shape(const std::string& node, const std::string& what) {
  throw Error(ErrorKind::shape_mismatch, node + ": " + what);
}

void fail_unsupported(const std::string& node, const std::string& what) {
  throw Error(ErrorKind::unsupported, node + ": " + what);
}

}  // namespace bnorm::exec

// Element-wise ops: binary with numpy broadcasting (Add, Sub, Mul, Div,
// Pow), unary activations, and Clip. 16-bit floats compute in f32.

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "bnorm/error.hpp"
#include "exec/dispatch.hpp"
#include "exec/ops/ops.hpp"

namespace bnorm::exec {
namespace {

// Below this many elements a loop runs on one thread.
constexpr std::int64_t kParallelElements = 1 << 15;

// Calls f(offset_a, offset_b, offset_out, count) over contiguous runs of
// the output, with a's and b's element offsets under numpy broadcasting.
template <class F>
void for_each_broadcast(const Shape& a, const Shape& b, const Shape& out, F&& f) {
  const std::size_t rank = out.size();
  auto strides_of = [&](const Shape& s) {
    std::vector<std::int64_t> st(rank, 0);
    std::int64_t stride = 1;
    for (std::size_t i = s.size(); i-- > 0;) {
      const std::size_t o = i + rank - s.size();
      st[o] = s[i] == 1 ? 0 : stride;
      stride *= s[i];
    }
    return st;
  };
  const auto sa = strides_of(a), sb = strides_of(b);
  const std::int64_t total = element_count(out);
  if (total == 0) return;
  // Inner run: the last dim (a stride of 0 or 1 on each side).
  const std::int64_t inner = rank ? out[rank - 1] : 1;
  std::vector<std::int64_t> index(rank, 0);
  const std::int64_t outer = total / std::max<std::int64_t>(inner, 1);
  for (std::int64_t o = 0; o < outer; ++o) {
    std::int64_t oa = 0, ob = 0;
    for (std::size_t d = 0; d + 1 < rank; ++d) {
      oa += index[d] * sa[d];
      ob += index[d] * sb[d];
    }
    f(oa, ob, o * inner, inner, rank ? sa[rank - 1] : 0, rank ? sb[rank - 1] : 0);
    for (std::size_t d = rank ? rank - 1 : 0; d-- > 0;) {
      if (++index[d] < out[d]) break;
      index[d] = 0;
    }
  }
}

enum class BinaryKind { add, sub, mul, div, pow };

template <class T>
inline T apply(BinaryKind k, T x, T y) {
  switch (k) {
    case BinaryKind::add:
      return x + y;
    case BinaryKind::sub:
      return x - y;
    case BinaryKind::mul:
      return x * y;
    case BinaryKind::div:
      if constexpr (std::is_integral_v<T>) {
        return y == 0 ? T{} : static_cast<T>(x / y);
      } else {
        return x / y;
      }
    case BinaryKind::pow:
      break;
  }
  return static_cast<T>(std::pow(x, y));
}

class Binary final : public Op {
 public:
  Binary(BinaryKind kind, std::string node) : kind_(kind), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    if (kind_ != BinaryKind::pow && a.type() != b.type())
      fail_shape(node_, "inputs have element types " + std::string(to_string(a.type())) + " and " +
                            std::string(to_string(b.type())) + "; they must match");
    if (a.type() == ElementType::boolean) fail_unsupported(node_, "arithmetic on bool tensors is not supported");
    const Shape shape = broadcast_shapes(a.shape(), b.shape(), node_);
    Tensor y(a.type(), shape);
    if (kind_ == BinaryKind::pow && b.type() != a.type()) {
      // Pow with an exponent of another type: compute in double.
      const Tensor bb = cast(b, ElementType::f64);
      dispatch(a.type(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* pa = a.data<T>();
        T* py = y.data<T>();
        for_each_broadcast(a.shape(), bb.shape(), shape,
                           [&](std::int64_t oa, std::int64_t ob, std::int64_t oy, std::int64_t n, std::int64_t sa,
                               std::int64_t sb) {
                             for (std::int64_t i = 0; i < n; ++i)
                               py[oy + i] = narrow<T>(std::pow(static_cast<double>(widen(pa[oa + i * sa])),
                                                               value_at(bb, ob + i * sb)));
                           });
      });
      out[0] = std::move(y);
      return;
    }
    dispatch(a.type(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, bool>) {
        return;
      } else {
        using C = compute_t<T>;
        const T* pa = a.data<T>();
        const T* pb = b.data<T>();
        T* py = y.data<T>();
        const BinaryKind k = kind_;
        if (a.shape() == b.shape() && std::is_same_v<T, float>) {
          const std::int64_t n = y.elements();
#pragma omp parallel for if (n > kParallelElements) schedule(static)
          for (std::int64_t i = 0; i < n; ++i) py[i] = narrow<T>(apply<C>(k, widen(pa[i]), widen(pb[i])));
          return;
        }
        for_each_broadcast(a.shape(), b.shape(), shape,
                           [&](std::int64_t oa, std::int64_t ob, std::int64_t oy, std::int64_t n, std::int64_t sa,
                               std::int64_t sb) {
                             for (std::int64_t i = 0; i < n; ++i)
                               py[oy + i] = narrow<T>(apply<C>(k, widen(pa[oa + i * sa]), widen(pb[ob + i * sb])));
                           });
      }
    });
    out[0] = std::move(y);
  }

 private:
  BinaryKind kind_;
  std::string node_;
};

enum class UnaryKind { relu, leaky_relu, sigmoid, hard_sigmoid, hard_swish, tanh, sqrt };

class Unary final : public Op {
 public:
  Unary(UnaryKind kind, float alpha, float beta, std::string node)
      : kind_(kind), alpha_(alpha), beta_(beta), node_(std::move(node)) {}

  // Calls body(f) with f the op's function, generic in the compute type.
  template <class Body>
  void with_kind(Body&& body) const {
    const float alpha = alpha_, beta = beta_;
    switch (kind_) {
      case UnaryKind::relu:
        return body([](auto x) { return x < decltype(x)(0) ? decltype(x)(0) : x; });  // NaN stays NaN
      case UnaryKind::leaky_relu:
        return body([alpha](auto x) { return x >= decltype(x)(0) ? x : static_cast<decltype(x)>(alpha) * x; });
      case UnaryKind::sigmoid:
        return body([](auto x) { return decltype(x)(1) / (decltype(x)(1) + std::exp(-x)); });
      case UnaryKind::hard_sigmoid:
        return body([alpha, beta](auto x) {
          using C = decltype(x);
          return std::clamp(static_cast<C>(alpha) * x + static_cast<C>(beta), C(0), C(1));
        });
      case UnaryKind::hard_swish:
        return body([](auto x) {
          using C = decltype(x);
          return x * std::clamp(x / C(6) + C(0.5), C(0), C(1));
        });
      case UnaryKind::tanh:
        return body([](auto x) { return std::tanh(x); });
      case UnaryKind::sqrt:
        break;
    }
    body([](auto x) { return std::sqrt(x); });
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& x = *in[0];
    require_floating(x, node_, "input");
    Tensor y(x.type(), x.shape());
    dispatch(x.type(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_floating_point_v<T> || is_half_v<T>) {
        // One loop per kind, so that the compiler vectorizes each.
        with_kind([&](auto f) {
          const T* px = x.data<T>();
          T* py = y.data<T>();
          const std::int64_t n = x.elements();
#pragma omp parallel for if (n > kParallelElements) schedule(static)
          for (std::int64_t i = 0; i < n; ++i) py[i] = narrow<T>(f(widen(px[i])));
        });
      }
    });
    out[0] = std::move(y);
  }

 private:
  UnaryKind kind_;
  float alpha_, beta_;
  std::string node_;
};

// Clip: bounds from inputs 1 and 2 (opset 11 on) or from the min / max
// attributes (before; absent: the element type's own limits).
class Clip final : public Op {
 public:
  Clip(bool from_inputs, std::optional<float> min, std::optional<float> max, std::string node)
      : from_inputs_(from_inputs), min_(min), max_(max), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& x = *in[0];
    if (x.type() == ElementType::boolean) fail_unsupported(node_, "Clip of bool is not supported");
    Tensor y(x.type(), x.shape());
    auto bound = [&](std::size_t i) -> const Tensor* {
      if (!from_inputs_ || in.size() <= i || !in[i]) return nullptr;
      if (in[i]->elements() != 1) fail_shape(node_, "min and max must be scalars");
      if (in[i]->type() != x.type()) fail_shape(node_, "min and max must have the input's element type");
      return in[i];
    };
    const Tensor* lo = bound(1);
    const Tensor* hi = bound(2);
    dispatch(x.type(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!std::is_same_v<T, bool>) {
        using C = compute_t<T>;
        C low = std::numeric_limits<C>::lowest(), high = std::numeric_limits<C>::max();
        if (from_inputs_) {
          if (lo) low = widen(lo->data<T>()[0]);
          if (hi) high = widen(hi->data<T>()[0]);
        } else {
          if (min_) low = static_cast<C>(*min_);
          if (max_) high = static_cast<C>(*max_);
        }
        const T* px = x.data<T>();
        T* py = y.data<T>();
        for (std::int64_t i = 0; i < x.elements(); ++i) {
          // Min(max, Max(x, min)), the spec's order: min > max gives max.
          const C v = widen(px[i]), raised = v < low ? low : v;
          py[i] = narrow<T>(raised > high ? high : raised);
        }
      }
    });
    out[0] = std::move(y);
  }

 private:
  bool from_inputs_;
  std::optional<float> min_, max_;
  std::string node_;
};

}  // namespace

std::unique_ptr<Op> make_binary(NodeInfo& info) {
  const std::string& op = info.node().op_type();
  if (info.input_count() != 2) info.invalid("expected 2 inputs");
  if (info.has("broadcast") || info.has("axis")) {
    // Opset < 7 legacy broadcasting.
    if (info.i("broadcast", 0) != 0 || info.has("axis")) info.unsupported("legacy broadcast/axis attributes (opset < 7)");
  }
  const BinaryKind k = op == "Add"   ? BinaryKind::add
                       : op == "Sub" ? BinaryKind::sub
                       : op == "Mul" ? BinaryKind::mul
                       : op == "Div" ? BinaryKind::div
                                     : BinaryKind::pow;
  return std::make_unique<Binary>(k, info.describe());
}

std::unique_ptr<Op> make_unary(NodeInfo& info) {
  const std::string& op = info.node().op_type();
  float alpha = 0.0f, beta = 0.0f;
  UnaryKind k = UnaryKind::relu;
  if (op == "LeakyRelu") {
    k = UnaryKind::leaky_relu;
    alpha = info.f("alpha", 0.01f);
  } else if (op == "Sigmoid") {
    k = UnaryKind::sigmoid;
  } else if (op == "HardSigmoid") {
    k = UnaryKind::hard_sigmoid;
    alpha = info.f("alpha", 0.2f);
    beta = info.f("beta", 0.5f);
  } else if (op == "HardSwish") {
    k = UnaryKind::hard_swish;
  } else if (op == "Tanh") {
    k = UnaryKind::tanh;
  } else if (op == "Sqrt") {
    k = UnaryKind::sqrt;
  }
  if (info.has("consumed_inputs")) info.unsupported("consumed_inputs (opset < 6)");
  return std::make_unique<Unary>(k, alpha, beta, info.describe());
}

std::unique_ptr<Op> make_clip(NodeInfo& info) {
  if (info.opset() < 11) {
    std::optional<float> lo, hi;
    if (info.has("min")) lo = info.f("min", 0.0f);
    if (info.has("max")) hi = info.f("max", 0.0f);
    return std::make_unique<Clip>(false, lo, hi, info.describe());
  }
  return std::make_unique<Clip>(true, std::nullopt, std::nullopt, info.describe());
}

}  // namespace bnorm::exec

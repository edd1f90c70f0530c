// Ops that move or relabel data without arithmetic: Reshape, Flatten,
// Squeeze, Unsqueeze, Identity and Dropout (inference) share their input's
// storage; Transpose, Concat, Gather and Pad copy; Shape and Cast; and the
// value of Constant nodes.

#include <algorithm>
#include <cstring>
#include <numeric>
#include <optional>

#include "bnorm/error.hpp"
#include "exec/dispatch.hpp"
#include "exec/ops/ops.hpp"

namespace bnorm::exec {
namespace {

// An unsigned integer of `size` bytes, for type-blind copies.
template <class F>
void by_size(std::size_t size, F&& f) {
  switch (size) {
    case 1:
      return f(TypeTag<std::uint8_t>{});
    case 2:
      return f(TypeTag<std::uint16_t>{});
    case 4:
      return f(TypeTag<std::uint32_t>{});
    default:
      return f(TypeTag<std::uint64_t>{});
  }
}

class Reshape final : public Op {
 public:
  Reshape(bool allow_zero, std::string node) : allow_zero_(allow_zero), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& x = *in[0];
    if (!in[1]) fail_shape(node_, "the shape input is missing");
    std::vector<std::int64_t> shape = int_values(*in[1], node_, "shape");
    int infer = -1;
    std::int64_t known = 1;
    for (std::size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] == 0 && !allow_zero_) {
        if (i >= static_cast<std::size_t>(x.rank()))
          fail_shape(node_, "shape " + to_string(shape) + " copies dim " + std::to_string(i) + " of a rank " +
                                std::to_string(x.rank()) + " input");
        shape[i] = x.dim(static_cast<int>(i));
      }
      if (shape[i] == -1) {
        if (infer >= 0) fail_shape(node_, "shape " + to_string(shape) + " has more than one -1");
        infer = static_cast<int>(i);
        continue;
      }
      if (shape[i] < 0) fail_shape(node_, "shape " + to_string(shape) + " has a negative dim");
      known *= shape[i];
    }
    if (infer >= 0) {
      if (known == 0 || x.elements() % known != 0)
        fail_shape(node_, "cannot infer the -1 in " + to_string(shape) + " for input " + to_string(x.shape()));
      shape[static_cast<std::size_t>(infer)] = x.elements() / known;
    }
    if (element_count(shape) != x.elements())
      fail_shape(node_, "cannot reshape " + to_string(x.shape()) + " to " + to_string(shape));
    out[0] = x.reshaped(shape);
  }

 private:
  bool allow_zero_;
  std::string node_;
};

class Flatten final : public Op {
 public:
  Flatten(std::int64_t axis, std::string node) : axis_(axis), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& x = *in[0];
    const int r = x.rank();
    if (axis_ < -r || axis_ > r)
      fail_shape(node_, "axis " + std::to_string(axis_) + " is outside [" + std::to_string(-r) + ", " +
                            std::to_string(r) + "]");
    const int axis = static_cast<int>(axis_ < 0 ? axis_ + r : axis_);
    // Both products from the dims (elements / outer lost the inner dims
    // when an outer one was 0).
    std::int64_t outer = 1, inner = 1;
    for (int i = 0; i < r; ++i) (i < axis ? outer : inner) *= x.dim(i);
    out[0] = x.reshaped({outer, inner});
  }

 private:
  std::int64_t axis_;
  std::string node_;
};

class Squeeze final : public Op {
 public:
  Squeeze(bool unsqueeze, std::optional<std::vector<std::int64_t>> axes, std::string node)
      : unsqueeze_(unsqueeze), axes_(std::move(axes)), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& x = *in[0];
    std::optional<std::vector<std::int64_t>> axes = axes_;
    if (!axes && in.size() > 1 && in[1]) axes = int_values(*in[1], node_, "axes");
    Shape shape;
    if (unsqueeze_) {
      if (!axes) fail_shape(node_, "axes are required");
      const int r = x.rank() + static_cast<int>(axes->size());
      std::vector<bool> inserted(static_cast<std::size_t>(r), false);
      for (auto a : *axes) {
        const int n = normalize_axis(a, r, node_, "axes value");
        if (inserted[static_cast<std::size_t>(n)]) fail_shape(node_, "axes repeat " + std::to_string(a));
        inserted[static_cast<std::size_t>(n)] = true;
      }
      int next = 0;
      for (int i = 0; i < r; ++i) shape.push_back(inserted[static_cast<std::size_t>(i)] ? 1 : x.dim(next++));
    } else {
      std::vector<bool> remove(static_cast<std::size_t>(x.rank()), false);
      if (axes) {
        for (auto a : *axes) {
          const int n = normalize_axis(a, x.rank(), node_, "axes value");
          if (x.dim(n) != 1)
            fail_shape(node_, "cannot squeeze dim " + std::to_string(n) + " of size " + std::to_string(x.dim(n)));
          remove[static_cast<std::size_t>(n)] = true;
        }
      } else {
        for (int i = 0; i < x.rank(); ++i) remove[static_cast<std::size_t>(i)] = x.dim(i) == 1;
      }
      for (int i = 0; i < x.rank(); ++i)
        if (!remove[static_cast<std::size_t>(i)]) shape.push_back(x.dim(i));
    }
    out[0] = x.reshaped(shape);
  }

 private:
  bool unsqueeze_;
  std::optional<std::vector<std::int64_t>> axes_;
  std::string node_;
};

class Transpose final : public Op {
 public:
  Transpose(std::vector<std::int64_t> perm, std::string node) : perm_(std::move(perm)), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& x = *in[0];
    const int r = x.rank();
    std::vector<int> perm(static_cast<std::size_t>(r));
    if (perm_.empty()) {
      for (int i = 0; i < r; ++i) perm[static_cast<std::size_t>(i)] = r - 1 - i;
    } else {
      if (static_cast<int>(perm_.size()) != r)
        fail_shape(node_, "perm has " + std::to_string(perm_.size()) + " values for a rank " + std::to_string(r) +
                              " input");
      std::vector<bool> seen(static_cast<std::size_t>(r), false);
      for (int i = 0; i < r; ++i) {
        const int p = normalize_axis(perm_[static_cast<std::size_t>(i)], r, node_, "perm value");
        if (seen[static_cast<std::size_t>(p)]) fail_shape(node_, "perm is not a permutation");
        seen[static_cast<std::size_t>(p)] = true;
        perm[static_cast<std::size_t>(i)] = p;
      }
    }
    Shape shape(static_cast<std::size_t>(r));
    std::vector<std::int64_t> in_strides(static_cast<std::size_t>(r)), strides(static_cast<std::size_t>(r));
    std::int64_t s = 1;
    for (int i = r; i-- > 0;) {
      in_strides[static_cast<std::size_t>(i)] = s;
      s *= x.dim(i);
    }
    for (int i = 0; i < r; ++i) {
      shape[static_cast<std::size_t>(i)] = x.dim(perm[static_cast<std::size_t>(i)]);
      strides[static_cast<std::size_t>(i)] = in_strides[static_cast<std::size_t>(perm[static_cast<std::size_t>(i)])];
    }
    Tensor y(x.type(), shape);
    by_size(size_of(x.type()), [&](auto tag) {
      using U = typename decltype(tag)::type;
      const U* px = x.data<U>();
      U* py = y.data<U>();
      std::vector<std::int64_t> index(static_cast<std::size_t>(r), 0);
      for (std::int64_t i = 0; i < y.elements(); ++i) {
        std::int64_t src = 0;
        for (int d = 0; d < r; ++d) src += index[static_cast<std::size_t>(d)] * strides[static_cast<std::size_t>(d)];
        py[i] = px[src];
        for (int d = r; d-- > 0;) {
          if (++index[static_cast<std::size_t>(d)] < shape[static_cast<std::size_t>(d)]) break;
          index[static_cast<std::size_t>(d)] = 0;
        }
      }
    });
    out[0] = std::move(y);
  }

 private:
  std::vector<std::int64_t> perm_;
  std::string node_;
};

class Concat final : public Op {
 public:
  Concat(std::int64_t axis, std::string node) : axis_(axis), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& first = *in[0];
    const int r = first.rank();
    const int axis = normalize_axis(axis_, r, node_);
    Shape shape = first.shape();
    shape[static_cast<std::size_t>(axis)] = 0;
    for (const Tensor* t : in) {
      if (!t) fail_shape(node_, "an input is missing");
      if (t->type() != first.type() || t->rank() != r)
        fail_shape(node_, "inputs " + first.str() + " and " + t->str() + " differ in type or rank");
      for (int d = 0; d < r; ++d)
        if (d != axis && t->dim(d) != first.dim(d))
          fail_shape(node_, "inputs " + to_string(first.shape()) + " and " + to_string(t->shape()) +
                                " differ outside axis " + std::to_string(axis));
      shape[static_cast<std::size_t>(axis)] += t->dim(axis);
    }
    Tensor y(first.type(), shape);
    std::int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; ++d) outer *= shape[static_cast<std::size_t>(d)];
    for (int d = axis + 1; d < r; ++d) inner *= shape[static_cast<std::size_t>(d)];
    const std::size_t esize = size_of(first.type());
    const std::size_t row = static_cast<std::size_t>(shape[static_cast<std::size_t>(axis)] * inner) * esize;
    auto* dst = static_cast<std::byte*>(y.raw());
    std::size_t offset = 0;
    for (const Tensor* t : in) {
      const std::size_t part = static_cast<std::size_t>(t->dim(axis) * inner) * esize;
      const auto* src = static_cast<const std::byte*>(t->raw());
      for (std::int64_t o = 0; o < outer; ++o)
        if (part) std::memcpy(dst + static_cast<std::size_t>(o) * row + offset, src + static_cast<std::size_t>(o) * part, part);
      offset += part;
    }
    out[0] = std::move(y);
  }

 private:
  std::int64_t axis_;
  std::string node_;
};

class ShapeOp final : public Op {
 public:
  ShapeOp(std::int64_t start, std::optional<std::int64_t> end) : start_(start), end_(end) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& x = *in[0];
    const std::int64_t r = x.rank();
    auto clamp = [&](std::int64_t v) { return std::clamp<std::int64_t>(v < 0 ? v + r : v, 0, r); };
    const std::int64_t b = clamp(start_), e = clamp(end_.value_or(r));
    Tensor y(ElementType::i64, {std::max<std::int64_t>(0, e - b)});
    for (std::int64_t i = b; i < e; ++i) y.data<std::int64_t>()[i - b] = x.dim(static_cast<int>(i));
    out[0] = std::move(y);
  }

 private:
  std::int64_t start_;
  std::optional<std::int64_t> end_;
};

class Gather final : public Op {
 public:
  Gather(std::int64_t axis, std::string node) : axis_(axis), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& x = *in[0];
    const Tensor& indices = *in[1];
    if (indices.type() != ElementType::i64 && indices.type() != ElementType::i32)
      fail_shape(node_, "indices have element type " + std::string(to_string(indices.type())) +
                            ", expected int32 or int64");
    const int axis = normalize_axis(axis_, x.rank(), node_);
    Shape shape(x.shape().begin(), x.shape().begin() + axis);
    shape.insert(shape.end(), indices.shape().begin(), indices.shape().end());
    shape.insert(shape.end(), x.shape().begin() + axis + 1, x.shape().end());
    Tensor y(x.type(), shape);
    std::int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; ++d) outer *= x.dim(d);
    for (int d = axis + 1; d < x.rank(); ++d) inner *= x.dim(d);
    const std::int64_t n = x.dim(axis);
    const std::size_t block = static_cast<std::size_t>(inner) * size_of(x.type());
    const auto* src = static_cast<const std::byte*>(x.raw());
    auto* dst = static_cast<std::byte*>(y.raw());
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t k = 0; k < indices.elements(); ++k) {
        std::int64_t i = indices.type() == ElementType::i64 ? indices.data<std::int64_t>()[k]
                                                            : indices.data<std::int32_t>()[k];
        if (i < -n || i >= n)
          fail_shape(node_, "index " + std::to_string(i) + " is outside [" + std::to_string(-n) + ", " +
                                std::to_string(n) + ")");
        if (i < 0) i += n;
        if (block)
          std::memcpy(dst + static_cast<std::size_t>(o * indices.elements() + k) * block,
                      src + static_cast<std::size_t>(o * n + i) * block, block);
      }
    out[0] = std::move(y);
  }

 private:
  std::int64_t axis_;
  std::string node_;
};

class Pad final : public Op {
 public:
  Pad(std::string mode, std::vector<std::int64_t> pads, float value, std::string node)
      : mode_(std::move(mode)), pads_(std::move(pads)), value_(value), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& x = *in[0];
    const int r = x.rank();
    std::vector<std::int64_t> pads = pads_;
    if (in.size() > 1 && in[1]) pads = int_values(*in[1], node_, "pads");
    if (static_cast<int>(pads.size()) != 2 * r)
      fail_shape(node_, "pads has " + std::to_string(pads.size()) + " values for a rank " + std::to_string(r) +
                            " input (2 per dim)");
    Shape shape(static_cast<std::size_t>(r));
    for (int d = 0; d < r; ++d) {
      shape[static_cast<std::size_t>(d)] = x.dim(d) + pads[static_cast<std::size_t>(d)] + pads[static_cast<std::size_t>(d + r)];
      if (shape[static_cast<std::size_t>(d)] < 0) fail_shape(node_, "pads make a negative dim");
      if (mode_ != "constant" && x.dim(d) == 0 && shape[static_cast<std::size_t>(d)] > 0)
        fail_shape(node_, mode_ + " padding of an empty dim");
      if (mode_ == "reflect" && (pads[static_cast<std::size_t>(d)] >= x.dim(d) || pads[static_cast<std::size_t>(d + r)] >= x.dim(d)) &&
          (pads[static_cast<std::size_t>(d)] > 0 || pads[static_cast<std::size_t>(d + r)] > 0))
        fail_shape(node_, "reflect pads must be smaller than the dim they pad");
    }
    Tensor y(x.type(), shape);
    const Tensor* value = in.size() > 2 ? in[2] : nullptr;
    if (value && value->elements() > 0 && value->type() != x.type())
      fail_shape(node_, "constant_value is " + value->str() + " for data " + x.str() +
                            ": it must have the data's element type");
    dispatch(x.type(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T fill = value && value->elements() > 0 ? value->data<T>()[0] : narrow<T>(value_);
      const T* px = x.data<T>();
      T* py = y.data<T>();
      std::vector<std::int64_t> index(static_cast<std::size_t>(r), 0);
      for (std::int64_t i = 0; i < y.elements(); ++i) {
        std::int64_t src = 0;
        bool outside = false;
        for (int d = 0; d < r; ++d) {
          const std::int64_t n = x.dim(d);
          std::int64_t j = index[static_cast<std::size_t>(d)] - pads[static_cast<std::size_t>(d)];
          if (j < 0 || j >= n) {
            if (mode_ == "constant") {
              outside = true;
              break;
            }
            if (mode_ == "edge") {
              j = j < 0 ? 0 : n - 1;
            } else {  // reflect, without repeating the edge
              j = j < 0 ? -j : 2 * (n - 1) - j;
            }
          }
          src = src * n + j;
        }
        py[i] = outside ? fill : px[src];
        for (int d = r; d-- > 0;) {
          if (++index[static_cast<std::size_t>(d)] < shape[static_cast<std::size_t>(d)]) break;
          index[static_cast<std::size_t>(d)] = 0;
        }
      }
    });
    out[0] = std::move(y);
  }

 private:
  std::string mode_;
  std::vector<std::int64_t> pads_;
  float value_;
  std::string node_;
};

// Identity, and Dropout at inference (its mask is all true).
class Identity final : public Op {
 public:
  // mask_of_input_type: Dropout's mask output has the input's type before
  // opset 10 (all ones), bool from 10.
  Identity(bool dropout, float ratio, bool mask_of_input_type, std::string node)
      : dropout_(dropout), ratio_(ratio), mask_of_input_type_(mask_of_input_type), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& x = *in[0];
    if (dropout_) {
      float ratio = ratio_;
      if (in.size() > 1 && in[1]) ratio = static_cast<float>(value_at(*in[1], 0));
      const bool training = in.size() > 2 && in[2] && value_at(*in[2], 0) != 0.0;
      if (training && ratio != 0.0f)
        fail_unsupported(node_, "Dropout in training mode (random masks) is not supported; the executor runs inference");
      if (out.size() > 1) {
        Tensor mask(ElementType::boolean, x.shape());
        std::fill_n(mask.data<bool>(), mask.elements(), true);
        out[1] = mask_of_input_type_ ? cast(mask, x.type()) : std::move(mask);
      }
    }
    out[0] = x;
  }

 private:
  bool dropout_;
  float ratio_;
  bool mask_of_input_type_;
  std::string node_;
};

class Cast final : public Op {
 public:
  explicit Cast(ElementType to) : to_(to) {}
  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    out[0] = in[0]->type() == to_ ? *in[0] : cast(*in[0], to_);
  }

 private:
  ElementType to_;
};

class Slice final : public Op {
 public:
  // Opsets 1 to 9 give starts / ends / axes as attributes.
  Slice(std::optional<std::vector<std::int64_t>> starts, std::vector<std::int64_t> ends,
        std::vector<std::int64_t> axes, std::string node)
      : starts_(std::move(starts)), ends_(std::move(ends)), axes_(std::move(axes)), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& x = *in[0];
    const int r = x.rank();
    std::vector<std::int64_t> starts, ends, axes, steps;
    if (starts_) {
      starts = *starts_;
      ends = ends_;
      axes = axes_;
    } else {
      if (in.size() < 3 || !in[1] || !in[2]) fail_shape(node_, "starts and ends are required");
      starts = int_values(*in[1], node_, "starts");
      ends = int_values(*in[2], node_, "ends");
      if (in.size() > 3 && in[3]) axes = int_values(*in[3], node_, "axes");
      if (in.size() > 4 && in[4]) steps = int_values(*in[4], node_, "steps");
    }
    if (axes.empty())
      for (std::size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<std::int64_t>(i));
    if (steps.empty()) steps.assign(starts.size(), 1);
    if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
      fail_shape(node_, "starts, ends, axes and steps differ in length");
    // Per dim: first index, step and count (the whole dim by default).
    std::vector<std::int64_t> first(static_cast<std::size_t>(r), 0), step(static_cast<std::size_t>(r), 1);
    Shape shape = x.shape();
    std::vector<bool> seen(static_cast<std::size_t>(r), false);
    for (std::size_t i = 0; i < starts.size(); ++i) {
      const int a = normalize_axis(axes[i], r, node_, "axes value");
      if (seen[static_cast<std::size_t>(a)]) fail_shape(node_, "axes repeat " + std::to_string(axes[i]));
      seen[static_cast<std::size_t>(a)] = true;
      const std::int64_t n = x.dim(a), st = steps[i];
      if (st == 0) fail_shape(node_, "a step is 0");
      auto clamp = [&](std::int64_t v, std::int64_t lo, std::int64_t hi) {
        if (v < 0) v += n;
        return std::clamp(v, lo, hi);
      };
      // Slice-13's text: starts clamp to [0, n] for positive steps and to
      // [0, n - 1] for negative ones (numpy's -1 there made x[-10:-100:-1]
      // of 5 elements empty instead of element 0); ends to [0, n] and
      // [-1, n - 1]. An empty dim stays empty.
      const std::int64_t b =
          st > 0 ? clamp(starts[i], 0, n) : clamp(starts[i], 0, std::max<std::int64_t>(n - 1, 0));
      const std::int64_t e = st > 0 ? clamp(ends[i], 0, n) : clamp(ends[i], -1, n - 1);
      // ceil(span / |step|), without forming span + step - 1 (which
      // overflowed for steps near INT64_MAX) or -step (INT64_MIN).
      const std::int64_t span = st > 0 ? e - b : b - e;
      const std::uint64_t magnitude =
          st > 0 ? static_cast<std::uint64_t>(st) : 0 - static_cast<std::uint64_t>(st);
      const std::int64_t count =
          span <= 0 || n == 0
              ? 0
              : 1 + static_cast<std::int64_t>(static_cast<std::uint64_t>(span - 1) / magnitude);
      first[static_cast<std::size_t>(a)] = b;
      step[static_cast<std::size_t>(a)] = st;
      shape[static_cast<std::size_t>(a)] = count;
    }
    Tensor y(x.type(), shape);
    std::vector<std::int64_t> strides(static_cast<std::size_t>(r));
    std::int64_t s = 1;
    for (int d = r; d-- > 0;) {
      strides[static_cast<std::size_t>(d)] = s;
      s *= x.dim(d);
    }
    by_size(size_of(x.type()), [&](auto tag) {
      using U = typename decltype(tag)::type;
      const U* px = x.data<U>();
      U* py = y.data<U>();
      std::vector<std::int64_t> index(static_cast<std::size_t>(r), 0);
      for (std::int64_t i = 0; i < y.elements(); ++i) {
        std::int64_t src = 0;
        for (int d = 0; d < r; ++d) {
          const auto k = static_cast<std::size_t>(d);
          src += (first[k] + index[k] * step[k]) * strides[k];
        }
        py[i] = px[src];
        for (int d = r; d-- > 0;) {
          if (++index[static_cast<std::size_t>(d)] < shape[static_cast<std::size_t>(d)]) break;
          index[static_cast<std::size_t>(d)] = 0;
        }
      }
    });
    out[0] = std::move(y);
  }

 private:
  std::optional<std::vector<std::int64_t>> starts_;
  std::vector<std::int64_t> ends_, axes_;
  std::string node_;
};

class ConstantOfShape final : public Op {
 public:
  ConstantOfShape(Tensor value, std::string node) : value_(std::move(value)), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const std::vector<std::int64_t> shape = int_values(*in[0], node_, "shape");
    Tensor y(value_.type(), shape);
    const std::size_t size = size_of(value_.type());
    auto* p = static_cast<std::byte*>(y.raw());
    for (std::int64_t i = 0; i < y.elements(); ++i) std::memcpy(p + static_cast<std::size_t>(i) * size, value_.raw(), size);
    out[0] = std::move(y);
  }

 private:
  Tensor value_;
  std::string node_;
};

}  // namespace

std::unique_ptr<Op> make_slice(NodeInfo& info) {
  if (info.opset() < 10) {
    return std::make_unique<Slice>(info.ints("starts"), info.ints("ends"), info.ints("axes"), info.describe());
  }
  return std::make_unique<Slice>(std::nullopt, std::vector<std::int64_t>{}, std::vector<std::int64_t>{},
                                 info.describe());
}

std::unique_ptr<Op> make_constant_of_shape(NodeInfo& info) {
  Tensor value(ElementType::f32, {1});
  value.data<float>()[0] = 0.0f;
  if (const auto* t = info.t("value")) {
    value = from_onnx(*t, info.describe() + " value");
    if (value.elements() != 1) info.invalid("value must hold one element");
  }
  return std::make_unique<ConstantOfShape>(value, info.describe());
}

std::unique_ptr<Op> make_reshape(NodeInfo& info) {
  if (info.opset() < 5) info.unsupported("Reshape with a shape attribute (opset < 5)");
  if (info.input_count() != 2) info.invalid("expected 2 inputs");
  return std::make_unique<Reshape>(info.i("allowzero", 0) != 0, info.describe());
}

std::unique_ptr<Op> make_flatten(NodeInfo& info) {
  return std::make_unique<Flatten>(info.i("axis", 1), info.describe());
}

std::unique_ptr<Op> make_squeeze(NodeInfo& info) {
  std::optional<std::vector<std::int64_t>> axes;
  if (info.has("axes")) axes = info.ints("axes");
  else info.ignore("axes");
  if (info.node().op_type() == "Unsqueeze" && !axes && !info.has_input(1)) info.invalid("axes are required");
  return std::make_unique<Squeeze>(info.node().op_type() == "Unsqueeze", std::move(axes), info.describe());
}

std::unique_ptr<Op> make_transpose(NodeInfo& info) {
  return std::make_unique<Transpose>(info.ints("perm"), info.describe());
}

std::unique_ptr<Op> make_concat(NodeInfo& info) {
  if (!info.has("axis")) info.invalid("axis is required");
  if (info.input_count() < 1) info.invalid("expected at least one input");
  return std::make_unique<Concat>(info.i("axis", 0), info.describe());
}

std::unique_ptr<Op> make_shape(NodeInfo& info) {
  const std::int64_t start = info.i("start", 0);
  std::optional<std::int64_t> end;
  if (info.has("end")) end = info.i("end", 0);
  else info.ignore("end");
  return std::make_unique<ShapeOp>(start, end);
}

std::unique_ptr<Op> make_gather(NodeInfo& info) {
  if (info.input_count() != 2) info.invalid("expected 2 inputs");
  return std::make_unique<Gather>(info.i("axis", 0), info.describe());
}

std::unique_ptr<Op> make_pad(NodeInfo& info) {
  const std::string mode = info.s("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge")
    info.unsupported("mode '" + mode + "' (constant, reflect and edge are supported)");
  std::vector<std::int64_t> pads;
  float value = 0.0f;
  if (info.opset() < 11) {
    pads = info.ints("pads");
    value = info.f("value", 0.0f);
  } else if (info.input_count() > 3) {
    info.unsupported("the axes input of Pad (opset 18)");
  }
  return std::make_unique<Pad>(mode, std::move(pads), value, info.describe());
}

std::unique_ptr<Op> make_identity(NodeInfo& info) {
  const bool dropout = info.node().op_type() == "Dropout";
  float ratio = 0.5f;
  if (dropout) {
    ratio = info.f("ratio", 0.5f);
    info.ignore("seed");  // only matters in training, which is refused at run time
    // Before opset 7, is_test defaults to 0: training.
    if (info.i("is_test", info.opset() < 7 ? 0 : 1) == 0)
      info.unsupported("is_test = 0 (the default before opset 7): Dropout in training mode (random masks)");
  }
  return std::make_unique<Identity>(dropout, ratio, dropout && info.opset() < 10, info.describe());
}

std::unique_ptr<Op> make_cast(NodeInfo& info) {
  if (!info.has("to")) info.invalid("attribute 'to' is required");
  const auto to = static_cast<std::int32_t>(info.i("to", 0));
  if (info.has("saturate")) info.ignore("saturate");  // float8 only
  return std::make_unique<Cast>(from_onnx(to, info.describe() + " 'to'"));
}

std::unique_ptr<Op> make_constant(NodeInfo& info) {
  info.invalid("Constant nodes are evaluated when compiling");
}

Tensor constant_value(NodeInfo& info) {
  if (const auto* t = info.t("value")) return from_onnx(*t, info.describe() + " value");
  if (info.has("value_float")) {
    Tensor y(ElementType::f32, {});
    y.data<float>()[0] = info.f("value_float", 0.0f);
    return y;
  }
  if (info.has("value_int")) {
    Tensor y(ElementType::i64, {});
    y.data<std::int64_t>()[0] = info.i("value_int", 0);
    return y;
  }
  if (info.has("value_floats")) {
    const auto v = info.floats("value_floats");
    Tensor y(ElementType::f32, {static_cast<std::int64_t>(v.size())});
    std::copy(v.begin(), v.end(), y.data<float>());
    return y;
  }
  if (info.has("value_ints")) {
    const auto v = info.ints("value_ints");
    Tensor y(ElementType::i64, {static_cast<std::int64_t>(v.size())});
    std::copy(v.begin(), v.end(), y.data<std::int64_t>());
    return y;
  }
  info.unsupported("a Constant without a numeric value (sparse and string values are not supported)");
}

}  // namespace bnorm::exec

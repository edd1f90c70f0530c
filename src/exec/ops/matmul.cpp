// Gemm and MatMul through oneDNN's matmul primitive (f32; transposes are
// expressed as strides, batch dims broadcast as numpy does). Other float
// types are converted to f32 and back.

#include <algorithm>
#include <map>

#include "bnorm/error.hpp"
#include "exec/dispatch.hpp"
#include "exec/ops/ops.hpp"

namespace bnorm::exec {
namespace {

using dt = dnnl::memory::data_type;

// dst = src x weights (+ bias), for dense row-major operands whose last two
// dims may be transposed.
struct MatmulPrimitive {
  dnnl::matmul prim;
  dnnl::memory::desc src, weights, bias, dst;
};

// `dims` are the logical (..., rows, cols); `transposed` says the matrix is
// stored as its transpose (ONNX Gemm's transA / transB).
dnnl::memory::desc matrix_desc(const Shape& dims, bool transposed) {
  // Row-major strides of the stored matrix, then swap the last two if the
  // logical matrix is its transpose.
  const std::size_t r = dims.size();
  Shape stored = dims;
  if (transposed) std::swap(stored[r - 1], stored[r - 2]);
  dnnl::memory::dims strides(r);
  std::int64_t s = 1;
  for (std::size_t i = r; i-- > 0;) {
    strides[i] = s;
    s *= std::max<std::int64_t>(stored[i], 1);
  }
  if (transposed) std::swap(strides[r - 1], strides[r - 2]);
  return dnnl::memory::desc(dnnl::memory::dims(dims.begin(), dims.end()), dt::f32, strides);
}

MatmulPrimitive make_matmul_primitive(const Shape& a, bool ta, const Shape& b, bool tb, const Shape& bias,
                                      const Shape& dst, ExecContext& ctx, const std::string& node) {
  MatmulPrimitive p;
  p.src = matrix_desc(a, ta);
  p.weights = matrix_desc(b, tb);
  p.dst = plain_desc(dst);
  try {
    if (!bias.empty()) {
      p.bias = plain_desc(bias);
      p.prim = dnnl::matmul(dnnl::matmul::primitive_desc({p.src, p.weights, p.bias, p.dst}, ctx.engine()));
    } else {
      p.prim = dnnl::matmul(dnnl::matmul::primitive_desc({p.src, p.weights, p.dst}, ctx.engine()));
    }
  } catch (const dnnl::error& e) {
    fail_unsupported(node, std::string("oneDNN cannot run this matrix product (") + e.what() + ")");
  }
  return p;
}

void execute(const MatmulPrimitive& p, const Tensor& a, const Tensor& b, const Tensor* bias, Tensor& y,
             ExecContext& ctx) {
  auto& eng = ctx.engine();
  std::unordered_map<int, dnnl::memory> args = {
      {DNNL_ARG_SRC, dnnl::memory(p.src, eng, const_cast<void*>(a.raw()))},
      {DNNL_ARG_WEIGHTS, dnnl::memory(p.weights, eng, const_cast<void*>(b.raw()))},
      {DNNL_ARG_DST, dnnl::memory(p.dst, eng, y.raw())}};
  if (bias) args[DNNL_ARG_BIAS] = dnnl::memory(p.bias, eng, const_cast<void*>(bias->raw()));
  ctx.execute("matmul", p.prim, args);
}

class Gemm final : public Op {
 public:
  Gemm(float alpha, float beta, bool ta, bool tb, std::string node)
      : alpha_(alpha), beta_(beta), ta_(ta), tb_(tb), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext& ctx) override {
    const Tensor& a = *in[0];
    const Tensor& b = *in[1];
    const Tensor* c = in.size() > 2 ? in[2] : nullptr;
    require_floating(a, node_, "input A");
    require_floating(b, node_, "input B");
    if (a.rank() != 2 || b.rank() != 2)
      fail_shape(node_, "A " + to_string(a.shape()) + " and B " + to_string(b.shape()) + " must be matrices");
    const std::int64_t m = ta_ ? a.dim(1) : a.dim(0), k = ta_ ? a.dim(0) : a.dim(1);
    const std::int64_t kb = tb_ ? b.dim(1) : b.dim(0), n = tb_ ? b.dim(0) : b.dim(1);
    if (k != kb)
      fail_shape(node_, "A " + to_string(a.shape()) + (ta_ ? " (transposed)" : "") + " and B " + to_string(b.shape()) +
                            (tb_ ? " (transposed)" : "") + " disagree on K: " + std::to_string(k) + " vs " +
                            std::to_string(kb));
    const Shape dst = {m, n};
    if (c && broadcast_shapes(dst, c->shape(), node_) != dst)
      fail_shape(node_, "C " + to_string(c->shape()) + " does not broadcast to the output " + to_string(dst));
    // A product with a 0 dim is all zeros (or empty): oneDNN is not asked
    // (it divides by the dims), and C is added below.
    const bool empty = m == 0 || n == 0 || k == 0;
    // C goes in as oneDNN's bias when nothing scales it.
    const bool fused = !empty && c && alpha_ == 1.0f && beta_ == 1.0f;
    Shape bias_shape;
    if (fused) {
      bias_shape = c->shape();
      while (bias_shape.size() < 2) bias_shape.insert(bias_shape.begin(), 1);
    }
    Tensor y(ElementType::f32, dst);
    Tensor cf;
    if (c) cf = to_f32(*c);
    if (empty) {
      std::fill_n(y.data<float>(), y.elements(), 0.0f);
    } else {
      Shape key = {a.dim(0), a.dim(1), b.dim(0), b.dim(1)};
      key.insert(key.end(), bias_shape.begin(), bias_shape.end());
      auto it = cache_.find(key);
      if (it == cache_.end())
        it = cache_.emplace(key, make_matmul_primitive({m, k}, ta_, {k, n}, tb_, bias_shape, dst, ctx, node_))
                 .first;
      execute(it->second, to_f32(a), to_f32(b), fused ? &cf : nullptr, y, ctx);
    }
    if (!fused && (alpha_ != 1.0f || c)) {
      float* py = y.data<float>();
      const float* pc = c ? cf.data<float>() : nullptr;
      const std::int64_t cm = c && cf.rank() == 2 ? cf.dim(0) : 1;
      const std::int64_t cn = c && cf.rank() >= 1 ? cf.dim(cf.rank() - 1) : 1;
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j) {
          float v = alpha_ * py[i * n + j];
          if (pc) v += beta_ * pc[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)];
          py[i * n + j] = v;
        }
    }
    out[0] = a.type() == ElementType::f32 ? std::move(y) : cast(y, a.type());
  }

 private:
  float alpha_, beta_;
  bool ta_, tb_;
  std::string node_;
  std::map<Shape, MatmulPrimitive> cache_;
};

class MatMul final : public Op {
 public:
  explicit MatMul(std::string node) : node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext& ctx) override {
    const Tensor& a0 = *in[0];
    const Tensor& b0 = *in[1];
    require_floating(a0, node_, "input A");
    require_floating(b0, node_, "input B");
    if (a0.rank() < 1 || b0.rank() < 1) fail_shape(node_, "MatMul of a scalar");
    // numpy: a 1-D operand is a row (A) or column (B) vector, dropped after.
    Shape a = a0.shape(), b = b0.shape();
    if (a.size() == 1) a.insert(a.begin(), 1);
    if (b.size() == 1) b.push_back(1);
    const std::size_t rank = std::max(a.size(), b.size());
    while (a.size() < rank) a.insert(a.begin(), 1);
    while (b.size() < rank) b.insert(b.begin(), 1);
    if (a[rank - 1] != b[rank - 2])
      fail_shape(node_, "A " + to_string(a0.shape()) + " and B " + to_string(b0.shape()) + " disagree on K");
    Shape batch_a(a.begin(), a.end() - 2), batch_b(b.begin(), b.end() - 2);
    Shape dst = broadcast_shapes(batch_a, batch_b, node_);
    dst.push_back(a[rank - 2]);
    dst.push_back(b[rank - 1]);
    Tensor y(ElementType::f32, dst);
    if (y.elements() == 0 || a[rank - 1] == 0) {
      std::fill_n(y.data<float>(), y.elements(), 0.0f);  // a 0 dim: oneDNN is not asked (it divides by them)
    } else {
      Shape key = a;
      key.insert(key.end(), b.begin(), b.end());
      auto it = cache_.find(key);
      if (it == cache_.end())
        it = cache_.emplace(key, make_matmul_primitive(a, false, b, false, {}, dst, ctx, node_)).first;
      execute(it->second, to_f32(a0), to_f32(b0), nullptr, y, ctx);
    }
    Shape final_shape = dst;
    if (b0.rank() == 1) final_shape.pop_back();
    if (a0.rank() == 1) final_shape.erase(final_shape.end() - (b0.rank() == 1 ? 1 : 2));
    y = y.reshaped(final_shape);
    out[0] = a0.type() == ElementType::f32 ? std::move(y) : cast(y, a0.type());
  }

 private:
  std::string node_;
  std::map<Shape, MatmulPrimitive> cache_;
};

}  // namespace

std::unique_ptr<Op> make_gemm(NodeInfo& info) {
  if (info.input_count() < 2 || info.input_count() > 3) info.invalid("expected 2 or 3 inputs");
  if (info.has("broadcast")) info.ignore("broadcast");  // opset < 7: C always broadcasts here
  const float alpha = info.f("alpha", 1.0f), beta = info.f("beta", 1.0f);
  const bool ta = info.i("transA", 0) != 0, tb = info.i("transB", 0) != 0;
  return std::make_unique<Gemm>(alpha, beta, ta, tb, info.describe());
}

std::unique_ptr<Op> make_matmul(NodeInfo& info) {
  if (info.input_count() != 2) info.invalid("expected 2 inputs");
  return std::make_unique<MatMul>(info.describe());
}

}  // namespace bnorm::exec

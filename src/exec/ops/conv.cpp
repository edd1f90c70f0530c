// Conv and ConvTranspose through oneDNN (convolution_forward and
// deconvolution_forward, f32, plain C-order activations; the weights are
// reordered once into the layout oneDNN prefers). Other float types are
// converted to f32 and back.

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <utility>

#include "bnorm/error.hpp"
#include "exec/ops/ops.hpp"

namespace bnorm::exec {
namespace {

using dt = dnnl::memory::data_type;

struct WindowAttributes {
  std::vector<std::int64_t> kernel_shape, strides, dilations, output_padding, output_shape;
  std::int64_t group = 1;
  Padding padding;
};

WindowAttributes read_window(NodeInfo& info, bool transpose) {
  WindowAttributes a;
  a.kernel_shape = info.ints("kernel_shape");
  a.strides = info.ints("strides");
  a.dilations = info.ints("dilations");
  a.group = info.i("group", 1);
  a.padding = read_padding(info, -1);
  if (transpose) {
    a.output_padding = info.ints("output_padding");
    a.output_shape = info.ints("output_shape");
  }
  if (a.group < 1) info.invalid("group " + std::to_string(a.group) + " must be positive");
  for (const auto* v : {&a.strides, &a.dilations, &a.kernel_shape})
    for (auto x : *v)
      if (x < 1) info.invalid("strides, dilations and kernel_shape must be positive");
  return a;
}

// Fills defaults once the spatial rank is known and checks the sizes.
void complete(WindowAttributes& a, std::size_t k, const Shape& w, const std::string& node) {
  auto fill = [&](std::vector<std::int64_t>& v, std::int64_t value, const char* name) {
    if (v.empty()) v.assign(k, value);
    if (v.size() != k)
      fail_shape(node, std::string(name) + " has " + std::to_string(v.size()) + " values for " + std::to_string(k) +
                           " spatial dims");
  };
  fill(a.strides, 1, "strides");
  fill(a.dilations, 1, "dilations");
  if (!a.kernel_shape.empty()) {
    for (std::size_t i = 0; i < a.kernel_shape.size() && i + 2 < w.size(); ++i)
      if (a.kernel_shape[i] != w[i + 2])
        fail_shape(node, "kernel_shape " + to_string(a.kernel_shape) + " differs from the weight's " + to_string(w));
  }
  a.kernel_shape.assign(w.begin() + 2, w.end());
  if (!a.padding.pads.empty() && a.padding.pads.size() != 2 * k)
    fail_shape(node, "pads has " + std::to_string(a.padding.pads.size()) + " values for " + std::to_string(k) +
                         " spatial dims");
  fill(a.output_padding, 0, "output_padding");
}

dnnl::memory::dims to_dims(const std::vector<std::int64_t>& v) { return dnnl::memory::dims(v.begin(), v.end()); }

// One compiled oneDNN primitive for a given input shape.
struct Compiled {
  dnnl::primitive prim;
  dnnl::memory::desc src, dst, weights, bias;
  // The layouts oneDNN's fastest kernel wants for src and dst (blocked, e.g.
  // nChw16c), with reorders from and to the plain tensors when they differ.
  dnnl::memory::desc src_inner, dst_inner;
  dnnl::memory src_buffer, dst_buffer;  // reused across runs
  Shape dst_shape;
  dnnl::memory weights_mem;  // reordered weights, when they are constant
  bool has_bias = false;
  // A ConvTranspose output longer than the inputs reach (output_padding or
  // output_shape past the natural size) where oneDNN refuses it: oneDNN
  // writes this prefix of dst_shape, and the rest is the bias (through the
  // fused activation). Empty: oneDNN writes all of dst_shape.
  Shape reached;
  // Conv: the input's spatial dims and the resolved window, to find the
  // outputs whose window puts a weight on padding.
  std::vector<std::int64_t> in, pad_begin, strides, dilations;
};

// The fused activation of one value, NaN kept as the ops alone keep it (the
// tail a ConvTranspose's inputs do not reach, and the output of a run
// without the fused activation).
float activate(const FusedActivation& f, float v) {
  switch (f.kind) {
    case FusedActivation::Kind::relu:
      return v < 0.0f ? 0.0f : v;
    case FusedActivation::Kind::leaky_relu:
      return v < 0.0f ? f.alpha * v : v;
    case FusedActivation::Kind::clip:
      return v < f.alpha ? f.alpha : v > f.beta ? f.beta : v;
    case FusedActivation::Kind::none:
      break;
  }
  return v;
}

// ONNX's Conv pads with zeros, and 0 times NaN or infinity is NaN: an output
// whose window puts a non-finite weight on padding is NaN. oneDNN skips the
// padding and gave a finite value there. (PyTorch 1.13 on the CPU depends on
// its path: its own kernels multiply the padding, as here; through mkldnn,
// which it takes for batches over 1 or groups, it skips it as oneDNN does.)
// `wf` is Conv's f32 weight (M, C/group, k...), `y` its output.
void nan_where_padding_meets_non_finite(const Compiled& c, const Tensor& wf, Tensor& y) {
  const std::size_t k = c.in.size();
  const std::int64_t m_count = wf.dim(0), per_m = wf.elements() / m_count;
  std::int64_t taps = 1, positions = 1;
  for (std::size_t d = 0; d < k; ++d) {
    taps *= wf.dim(static_cast<int>(d) + 2);
    positions *= c.dst_shape[d + 2];
  }
  std::vector<std::int64_t> tap(k), at(k);
  float* out = y.data<float>();
  for (std::int64_t m = 0; m < m_count; ++m) {
    const float* w = wf.data<float>() + m * per_m;
    for (std::int64_t t = 0; t < taps; ++t) {
      bool finite = true;
      for (std::int64_t i = t; i < per_m && finite; i += taps) finite = std::isfinite(w[i]);
      if (finite) continue;
      for (std::size_t d = k, rest = static_cast<std::size_t>(t); d-- > 0;) {
        tap[d] = static_cast<std::int64_t>(rest) % wf.dim(static_cast<int>(d) + 2);
        rest /= static_cast<std::size_t>(wf.dim(static_cast<int>(d) + 2));
      }
      std::fill(at.begin(), at.end(), 0);
      for (std::int64_t p = 0; p < positions; ++p) {
        bool padding = false;
        for (std::size_t d = 0; d < k; ++d) {
          const std::int64_t i = at[d] * c.strides[d] - c.pad_begin[d] + tap[d] * c.dilations[d];
          padding = padding || i < 0 || i >= c.in[d];
        }
        if (padding)
          for (std::int64_t n = 0; n < c.dst_shape[0]; ++n) out[(n * m_count + m) * positions + p] = NAN;
        for (std::size_t d = k; d-- > 0 && ++at[d] == c.dst_shape[d + 2];) at[d] = 0;
      }
    }
  }
}

// `whole` from `part`, whose dims are a prefix of each of whole's: every
// element outside part is tail[its channel] (dim 1).
void embed_prefix(const Tensor& part, const std::vector<float>& tail, Tensor& whole) {
  const int r = whole.rank();
  std::vector<std::int64_t> idx(static_cast<std::size_t>(r), 0);
  const float* src = part.data<float>();
  float* dst = whole.data<float>();
  for (std::int64_t e = 0; e < whole.elements(); ++e) {
    std::int64_t at = 0;
    bool inside = true;
    for (int d = 0; d < r; ++d) {
      inside = inside && idx[static_cast<std::size_t>(d)] < part.dim(d);
      at = at * part.dim(d) + idx[static_cast<std::size_t>(d)];
    }
    dst[e] = inside ? src[at] : tail[static_cast<std::size_t>(idx[1])];
    for (int d = r - 1; d >= 0 && ++idx[static_cast<std::size_t>(d)] == whole.dim(d); --d)
      idx[static_cast<std::size_t>(d)] = 0;
  }
}

class Window final : public Op {
 public:
  Window(bool transpose, WindowAttributes a, const Tensor* constant_w, FusedActivation fused, std::string node)
      : transpose_(transpose), attr_(std::move(a)), constant_w_(constant_w), fused_(fused), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext& ctx) override {
    const Tensor& x = *in[0];
    const Tensor& w = *in[1];
    const Tensor* b = in.size() > 2 ? in[2] : nullptr;
    require_floating(x, node_, "input X");
    require_floating(w, node_, "weight W");
    if (x.rank() < 3 || x.rank() > 5)
      fail_shape(node_, "input X " + to_string(x.shape()) + " must have rank 3 to 5 (1 to 3 spatial dims)");
    if (w.rank() != x.rank())
      fail_shape(node_, "weight W " + to_string(w.shape()) + " and input X " + to_string(x.shape()) +
                            " differ in rank");
    const Tensor xf = to_f32(x);
    if (!constant_w_non_finite_) constant_w_non_finite_ = constant_w_ && any_non_finite(to_f32(*constant_w_));
    Tensor wf;  // the weight in f32, unless it is constant (reordered once)
    if (!constant_w_) wf = to_f32(w);
    const bool w_non_finite = constant_w_ ? *constant_w_non_finite_ : any_non_finite(wf);
    // oneDNN's fused activations turn NaN into 0 or a bound. Where the
    // inputs are not all finite (so the convolution may give NaN), the
    // activation runs after it, as the op alone would.
    const bool apart = fused_.kind != FusedActivation::Kind::none &&
                       (w_non_finite || any_non_finite(xf) || (b && any_non_finite(to_f32(*b))));
    Compiled& c = compiled(x.shape(), w.shape(), b != nullptr, !apart, ctx);
    Tensor yf(ElementType::f32, c.dst_shape);
    Tensor reached;  // oneDNN's part of yf, when it is not all of it
    if (!c.reached.empty()) reached = Tensor(ElementType::f32, c.reached);
    auto& eng = ctx.engine();
    dnnl::memory src(c.src, eng, const_cast<void*>(xf.raw()));  // reassigned when reordered
    dnnl::memory dst(c.dst, eng, c.reached.empty() ? yf.raw() : reached.raw());
    dnnl::memory weights = c.weights_mem;
    if (!weights) weights = reorder_weights(c, wf, ctx);
    const bool reorder_src = c.src_inner != c.src, reorder_dst = c.dst_inner != c.dst;
    if (reorder_src) {
      dnnl::reorder(src, c.src_buffer).execute(ctx.stream(), src, c.src_buffer);
      src = c.src_buffer;
    }
    dnnl::memory inner_dst = reorder_dst ? c.dst_buffer : dst;
    std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, src}, {DNNL_ARG_DST, inner_dst}, {DNNL_ARG_WEIGHTS, weights}};
    Tensor bf;
    if (b) {
      if (b->rank() != 1 || b->dim(0) != c.dst_shape[1])
        fail_shape(node_, "bias B " + to_string(b->shape()) + " must hold one value per output channel (" +
                              std::to_string(c.dst_shape[1]) + ")");
      bf = to_f32(*b);
      args[DNNL_ARG_BIAS] = dnnl::memory(c.bias, eng, const_cast<void*>(bf.raw()));
    }
    ctx.execute(transpose_ ? "deconvolution" : "convolution", c.prim, args);
    if (reorder_dst) dnnl::reorder(c.dst_buffer, dst).execute(ctx.stream(), c.dst_buffer, dst);
    ctx.stream().wait();
    if (!c.reached.empty()) {
      std::vector<float> tail(static_cast<std::size_t>(c.dst_shape[1]));
      for (std::size_t o = 0; o < tail.size(); ++o) {
        const float bias = b ? bf.data<float>()[o] : 0.0f;
        tail[o] = apart ? bias : activate(fused_, bias);
      }
      embed_prefix(reached, tail, yf);
    }
    if (!transpose_ && w_non_finite)
      nan_where_padding_meets_non_finite(c, constant_w_ ? to_f32(*constant_w_) : wf, yf);
    if (apart) {
      float* y = yf.data<float>();
      const std::int64_t n = yf.elements();
#pragma omp parallel for if (n > (1 << 16)) schedule(static)
      for (std::int64_t i = 0; i < n; ++i) y[i] = activate(fused_, y[i]);
    }
    out[0] = x.type() == ElementType::f32 ? std::move(yf) : cast(yf, x.type());
  }

 private:
  // The weights in the (g, o, i, k...) logical dims oneDNN uses (without g
  // when group is 1), with the strides of the ONNX layout: Conv's W is
  // (M, C/G, k...) = (g, o, i, k...) in memory; ConvTranspose's W is
  // (C, M/G, k...) = (g, i, o, k...).
  dnnl::memory::desc user_weights(const Shape& w) const { return weights_desc(w, false); }

  dnnl::memory::desc weights_desc(const Shape& w, bool any) const {
    const std::int64_t g = attr_.group;
    std::int64_t spatial = 1;
    for (std::size_t i = 2; i < w.size(); ++i) spatial *= w[i];
    const std::int64_t o = transpose_ ? w[1] : w[0] / g, i = transpose_ ? w[0] / g : w[1];
    dnnl::memory::dims dims = {g, o, i}, strides = {o * i * spatial, transpose_ ? spatial : i * spatial,
                                                    transpose_ ? o * spatial : spatial};
    std::int64_t s = 1;
    std::vector<std::int64_t> ks(w.size() - 2);
    for (std::size_t d = w.size(); d-- > 2;) {
      ks[d - 2] = s;
      s *= w[d];
    }
    dims.insert(dims.end(), w.begin() + 2, w.end());
    strides.insert(strides.end(), ks.begin(), ks.end());
    if (g == 1) {
      dims.erase(dims.begin());
      strides.erase(strides.begin());
    }
    if (any) return dnnl::memory::desc(dims, dt::f32, dnnl::memory::format_tag::any);
    return dnnl::memory::desc(dims, dt::f32, strides);
  }

  dnnl::memory reorder_weights(const Compiled& c, const Tensor& wf, ExecContext& ctx) const {
    dnnl::memory user(user_weights(wf.shape()), ctx.engine(), const_cast<void*>(wf.raw()));
    dnnl::memory mem(c.weights, ctx.engine());
    dnnl::reorder(user, mem).execute(ctx.stream(), user, mem);
    ctx.stream().wait();
    return mem;
  }

  // `fuse`: with the fused activation as a post-op.
  Compiled& compiled(const Shape& x, const Shape& w, bool has_bias, bool fuse, ExecContext& ctx) {
    Shape key = x;
    key.insert(key.end(), w.begin(), w.end());
    key.push_back(has_bias);
    key.push_back(fuse);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    const std::size_t k = x.size() - 2;
    WindowAttributes a = attr_;
    complete(a, k, w, node_);
    const std::int64_t g = a.group;
    const std::int64_t c_in = x[1];
    std::int64_t c_out = 0;
    if (!transpose_) {
      if (w[1] * g != c_in)
        fail_shape(node_, "input X has " + std::to_string(c_in) + " channels, weight W " + to_string(w) +
                              " with group " + std::to_string(g) + " expects " + std::to_string(w[1] * g));
      if (w[0] % g != 0) fail_shape(node_, "group " + std::to_string(g) + " does not divide the weight's " +
                                              std::to_string(w[0]) + " output channels");
      c_out = w[0];
    } else {
      if (w[0] != c_in || c_in % g != 0)
        fail_shape(node_, "input X has " + std::to_string(c_in) + " channels, weight W " + to_string(w) +
                              " (C x M/group x k...) expects " + std::to_string(w[0]) + " divisible by group " +
                              std::to_string(g));
      c_out = w[1] * g;
    }
    if (c_in == 0 || c_out == 0)
      fail_unsupported(node_, "input X " + to_string(x) + " and weight W " + to_string(w) + " give " +
                                  std::to_string(c_in) + " input and " + std::to_string(c_out) +
                                  " output channels; 0 channels are not supported");
    std::vector<std::int64_t> in(x.begin() + 2, x.end()), begin, end;
    Shape dst = {x[0], c_out};
    if (!transpose_) {
      a.padding.resolve(in, a.kernel_shape, a.strides, a.dilations, begin, end);
      for (std::size_t i = 0; i < k; ++i) {
        const std::int64_t o = window_output(in[i], a.kernel_shape[i], a.strides[i], a.dilations[i], begin[i],
                                             end[i], false);
        if (o < 1) fail_shape(node_, "the kernel does not fit input X " + to_string(x) + " with these pads");
        dst.push_back(o);
      }
    } else {
      transpose_pads(a, in, begin, end);
      for (std::size_t i = 0; i < k; ++i) {
        const std::int64_t o = a.strides[i] * (in[i] - 1) + a.output_padding[i] +
                               (a.kernel_shape[i] - 1) * a.dilations[i] + 1 - begin[i] - end[i];
        if (o < 1) fail_shape(node_, "the output would be empty for input X " + to_string(x));
        dst.push_back(o);
      }
    }
    Compiled c;
    c.dst_shape = dst;
    if (!transpose_) {
      c.in = in;
      c.pad_begin = begin;
      c.strides = a.strides;
      c.dilations = a.dilations;
    }
    c.src = plain_desc(x);
    c.dst = plain_desc(dst);
    c.has_bias = has_bias;
    const dnnl::memory::desc weights_any = weights_desc(w, true);
    // Activations too: oneDNN picks its layout (blocked kernels are several
    // times faster than the im2col + GEMM it runs on plain NCHW).
    const dnnl::memory::desc src_any(c.src.dims(), dt::f32, dnnl::memory::format_tag::any);
    const dnnl::memory::desc dst_any(c.dst.dims(), dt::f32, dnnl::memory::format_tag::any);
    c.bias = dnnl::memory::desc({c_out}, dt::f32, dnnl::memory::format_tag::x);
    std::vector<std::int64_t> dil(k), pad_r(end);
    for (std::size_t i = 0; i < k; ++i) dil[i] = a.dilations[i] - 1;  // oneDNN counts the gaps
    try {
      if (!transpose_) {
        const auto d = has_bias ? dnnl::convolution_forward::desc(
                                      dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                      src_any, weights_any, c.bias, dst_any, to_dims(a.strides), to_dims(dil),
                                      to_dims(begin), to_dims(pad_r))
                                : dnnl::convolution_forward::desc(
                                      dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                      src_any, weights_any, dst_any, to_dims(a.strides), to_dims(dil), to_dims(begin),
                                      to_dims(pad_r));
        const dnnl::convolution_forward::primitive_desc pd(d, post_ops(fuse), ctx.engine());
        c.weights = pd.weights_desc();
        c.src_inner = pd.src_desc();
        c.dst_inner = pd.dst_desc();
        c.prim = dnnl::convolution_forward(pd);
      } else {
        // output_padding extends the output at the end: less end padding.
        for (std::size_t i = 0; i < k; ++i) pad_r[i] = end[i] - a.output_padding[i];
        auto make = [&](const dnnl::memory::desc& out_any) {
          const auto d =
              has_bias ? dnnl::deconvolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                           dnnl::algorithm::deconvolution_direct, src_any,
                                                           weights_any, c.bias, out_any, to_dims(a.strides),
                                                           to_dims(dil), to_dims(begin), to_dims(pad_r))
                       : dnnl::deconvolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                           dnnl::algorithm::deconvolution_direct, src_any,
                                                           weights_any, out_any, to_dims(a.strides),
                                                           to_dims(dil), to_dims(begin), to_dims(pad_r));
          const dnnl::deconvolution_forward::primitive_desc pd(d, post_ops(fuse), ctx.engine());
          c.weights = pd.weights_desc();
          c.src_inner = pd.src_desc();
          c.dst_inner = pd.dst_desc();
          c.prim = dnnl::deconvolution_forward(pd);
        };
        try {
          make(dst_any);
        } catch (const dnnl::error&) {
          // Negative end padding is output no input reaches (ONNX allows
          // output_padding up to max(stride, dilation) - 1; oneDNN refuses
          // it from the stride on): oneDNN computes the reached prefix,
          // run() adds the rest.
          if (std::all_of(pad_r.begin(), pad_r.end(), [](std::int64_t p) { return p >= 0; })) throw;
          c.reached = dst;
          for (std::size_t i = 0; i < k; ++i)
            if (pad_r[i] < 0) c.reached[i + 2] += std::exchange(pad_r[i], 0);
          c.dst = plain_desc(c.reached);
          make(dnnl::memory::desc(c.dst.dims(), dt::f32, dnnl::memory::format_tag::any));
        }
      }
    } catch (const dnnl::error& e) {
      fail_unsupported(node_, std::string("oneDNN cannot run this configuration (") + e.what() + ")");
    }
    if (c.src_inner != c.src) c.src_buffer = dnnl::memory(c.src_inner, ctx.engine());
    if (c.dst_inner != c.dst) c.dst_buffer = dnnl::memory(c.dst_inner, ctx.engine());
    if (constant_w_) {
      const Tensor wf = to_f32(*constant_w_);
      c.weights_mem = reorder_weights(c, wf, ctx);
    }
    return cache_.emplace(std::move(key), std::move(c)).first->second;
  }

  // The fused activation, as a oneDNN eltwise post-op (none unless `fuse`).
  dnnl::primitive_attr post_ops(bool fuse) const {
    dnnl::primitive_attr attr;
    dnnl::post_ops ops;
    switch (fuse ? fused_.kind : FusedActivation::Kind::none) {
      case FusedActivation::Kind::none:
        return attr;
      case FusedActivation::Kind::relu:
        ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
        break;
      case FusedActivation::Kind::leaky_relu:
        ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, fused_.alpha, 0.0f);
        break;
      case FusedActivation::Kind::clip:
        ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, fused_.alpha, fused_.beta);
        break;
    }
    attr.set_post_ops(ops);
    return attr;
  }

  // ConvTranspose pads: explicit, from auto_pad, or from output_shape.
  void transpose_pads(const WindowAttributes& a, const std::vector<std::int64_t>& in, std::vector<std::int64_t>& begin,
                      std::vector<std::int64_t>& end) const {
    const std::size_t k = in.size();
    begin.assign(k, 0);
    end.assign(k, 0);
    std::vector<std::int64_t> target;
    if (!a.output_shape.empty()) {
      target.assign(a.output_shape.end() - static_cast<std::ptrdiff_t>(std::min(k, a.output_shape.size())),
                    a.output_shape.end());
      if (target.size() != k) fail_shape(node_, "output_shape has the wrong number of values");
    } else if (a.padding.auto_pad == "SAME_UPPER" || a.padding.auto_pad == "SAME_LOWER") {
      for (std::size_t i = 0; i < k; ++i) target.push_back(in[i] * a.strides[i]);
    }
    if (target.empty()) {
      if (a.padding.auto_pad == "NOTSET" && !a.padding.pads.empty())
        for (std::size_t i = 0; i < k; ++i) {
          begin[i] = a.padding.pads[i];
          end[i] = a.padding.pads[i + k];
        }
      return;
    }
    for (std::size_t i = 0; i < k; ++i) {
      const std::int64_t total = a.strides[i] * (in[i] - 1) + a.output_padding[i] +
                                 (a.kernel_shape[i] - 1) * a.dilations[i] + 1 - target[i];
      // Floor division: a negative total (output_shape beyond the full
      // result) becomes negative end padding, i.e. extra output at the end.
      const std::int64_t half = total >= 0 ? total / 2 : -((-total + 1) / 2);
      if (a.padding.auto_pad == "SAME_UPPER") {
        begin[i] = half;
        end[i] = total - half;
      } else {
        begin[i] = total - half;
        end[i] = half;
      }
    }
  }

  bool transpose_;
  WindowAttributes attr_;
  const Tensor* constant_w_;
  FusedActivation fused_;
  std::optional<bool> constant_w_non_finite_;  // known after the first run
  std::string node_;
  std::map<Shape, Compiled> cache_;
};

std::unique_ptr<Op> make_window(NodeInfo& info, bool transpose) {
  if (info.input_count() < 2 || info.input_count() > 3) info.invalid("expected 2 or 3 inputs");
  WindowAttributes a = read_window(info, transpose);
  return std::make_unique<Window>(transpose, std::move(a), info.constant_input(1), info.fused, info.describe());
}

}  // namespace

std::unique_ptr<Op> make_conv(NodeInfo& info) { return make_window(info, false); }
std::unique_ptr<Op> make_conv_transpose(NodeInfo& info) { return make_window(info, true); }

}  // namespace bnorm::exec

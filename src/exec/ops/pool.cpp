// MaxPool and AveragePool through oneDNN (pooling_v2, f32; other types are
// converted to f32 and back, which is exact for max pooling of 8-bit
// integers and 16-bit floats), and GlobalAveragePool.

#include <cmath>
#include <limits>
#include <map>

#include "bnorm/error.hpp"
#include "exec/dispatch.hpp"
#include "exec/ops/ops.hpp"

namespace bnorm::exec {
namespace {

using dt = dnnl::memory::data_type;

struct PoolAttributes {
  bool max = true;
  std::vector<std::int64_t> kernel, strides, dilations;
  Padding padding;
  bool ceil_mode = false;
  bool count_include_pad = false;
};

class Pool final : public Op {
 public:
  Pool(PoolAttributes a, std::string node) : a_(std::move(a)), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext& ctx) override {
    const Tensor& x = *in[0];
    if (!a_.max) require_floating(x, node_, "input X");
    if (x.type() == ElementType::boolean) fail_unsupported(node_, "pooling of bool is not supported");
    const std::size_t k = a_.kernel.size();
    if (x.rank() != static_cast<int>(k) + 2)
      fail_shape(node_, "input X " + to_string(x.shape()) + " does not have " + std::to_string(k) +
                            " spatial dims (kernel_shape " + to_string(a_.kernel) + ")");
    auto it = cache_.find(x.shape());
    if (it == cache_.end()) it = cache_.emplace(x.shape(), compile(x.shape(), ctx)).first;
    const Compiled& c = it->second;
    const Tensor xf = to_f32(x);
    Tensor yf(ElementType::f32, c.dst_shape);
    auto& eng = ctx.engine();
    ctx.execute("pooling", c.prim, {{DNNL_ARG_SRC, dnnl::memory(c.src, eng, const_cast<void*>(xf.raw()))},
                                    {DNNL_ARG_DST, dnnl::memory(c.dst, eng, yf.raw())}});
    if (a_.max && any_non_finite(xf)) propagate_nan(xf, c.begin, yf);
    out[0] = x.type() == ElementType::f32 ? std::move(yf) : cast(yf, x.type());
  }

 private:
  struct Compiled {
    dnnl::primitive prim;
    dnnl::memory::desc src, dst;
    Shape dst_shape;
    std::vector<std::int64_t> begin;  // the begin pads
  };

  // oneDNN's max skips NaN (a window of NaN only gives -FLT_MAX); ONNX's
  // Max, numpy's and PyTorch's max pooling give NaN when any value of the
  // window is NaN. Run only when x holds a NaN or an infinity.
  void propagate_nan(const Tensor& xf, const std::vector<std::int64_t>& begin, Tensor& yf) const {
    // The spatial dims as three, missing leading ones of size 1.
    std::int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, ker[3] = {1, 1, 1}, st[3] = {1, 1, 1},
                 dil[3] = {1, 1, 1}, pad[3] = {0, 0, 0};
    const int k = xf.rank() - 2;
    for (int i = 0; i < k; ++i) {
      const auto j = static_cast<std::size_t>(3 - k + i), u = static_cast<std::size_t>(i);
      in[j] = xf.dim(i + 2);
      out[j] = yf.dim(i + 2);
      ker[j] = a_.kernel[u];
      st[j] = a_.strides[u];
      dil[j] = a_.dilations[u];
      pad[j] = begin[u];
    }
    const std::int64_t planes = xf.dim(0) * xf.dim(1), in_plane = in[0] * in[1] * in[2],
                       out_plane = out[0] * out[1] * out[2];
    const float* px = xf.data<float>();
    float* py = yf.data<float>();
#pragma omp parallel for schedule(static)
    for (std::int64_t e = 0; e < planes * out_plane; ++e) {
      const std::int64_t o[3] = {e % out_plane / (out[1] * out[2]), e % (out[1] * out[2]) / out[2],
                                 e % out[2]};
      const float* plane = px + e / out_plane * in_plane;
      bool nan = false;
      for (std::int64_t w = 0; w < ker[0] * ker[1] * ker[2] && !nan; ++w) {
        const std::int64_t kk[3] = {w / (ker[1] * ker[2]), w % (ker[1] * ker[2]) / ker[2], w % ker[2]};
        std::int64_t at = 0;
        bool inside = true;
        for (int d = 0; d < 3; ++d) {
          const std::int64_t i = o[d] * st[d] - pad[d] + kk[d] * dil[d];
          inside = inside && i >= 0 && i < in[d];
          at = at * in[d] + i;
        }
        nan = inside && std::isnan(plane[at]);
      }
      if (nan) py[e] = std::numeric_limits<float>::quiet_NaN();
    }
  }

  Compiled compile(const Shape& x, ExecContext& ctx) const {
    const std::size_t k = a_.kernel.size();
    std::vector<std::int64_t> in(x.begin() + 2, x.end()), begin, end;
    a_.padding.resolve(in, a_.kernel, a_.strides, a_.dilations, begin, end);
    Compiled c;
    c.dst_shape = {x[0], x[1]};
    std::vector<std::int64_t> dil(k), pad_r(k);
    for (std::size_t i = 0; i < k; ++i) {
      const std::int64_t o =
          window_output(in[i], a_.kernel[i], a_.strides[i], a_.dilations[i], begin[i], end[i], a_.ceil_mode);
      if (o < 1) fail_shape(node_, "the window does not fit input X " + to_string(x));
      c.dst_shape.push_back(o);
      dil[i] = a_.dilations[i] - 1;
      // oneDNN derives the output size with floor: ceil_mode's extra
      // window becomes extra end padding (excluded from averages).
      const std::int64_t span = (a_.kernel[i] - 1) * a_.dilations[i] + 1;
      pad_r[i] = std::max(end[i], (o - 1) * a_.strides[i] + span - in[i] - begin[i]);
    }
    c.begin = begin;
    c.src = plain_desc(x);
    c.dst = plain_desc(c.dst_shape);
    const auto alg = a_.max ? dnnl::algorithm::pooling_max
                            : (a_.count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                                    : dnnl::algorithm::pooling_avg_exclude_padding);
    auto dims = [](const std::vector<std::int64_t>& v) { return dnnl::memory::dims(v.begin(), v.end()); };
    try {
      const dnnl::pooling_v2_forward::desc d(dnnl::prop_kind::forward_inference, alg, c.src, c.dst, dims(a_.strides),
                                             dims(a_.kernel), dims(dil), dims(begin), dims(pad_r));
      c.prim = dnnl::pooling_v2_forward(dnnl::pooling_v2_forward::primitive_desc(d, ctx.engine()));
    } catch (const dnnl::error& e) {
      fail_unsupported(node_, std::string("oneDNN cannot run this pooling (") + e.what() + ")");
    }
    if (a_.count_include_pad && a_.ceil_mode) {
      // The ceil_mode window would count padding oneDNN added: not ONNX.
      for (std::size_t i = 0; i < k; ++i)
        if (pad_r[i] != end[i])
          fail_unsupported(
              node_,
              "ceil_mode = 1 with count_include_pad = 1 is not supported when the last window "
              "reaches past the end padding (oneDNN would count the padding it adds; ONNX does not)");
    }
    return c;
  }

  PoolAttributes a_;
  std::string node_;
  std::map<Shape, Compiled> cache_;
};

class GlobalAveragePool final : public Op {
 public:
  explicit GlobalAveragePool(std::string node) : node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& x = *in[0];
    require_floating(x, node_, "input X");
    if (x.rank() < 3) fail_shape(node_, "input X " + to_string(x.shape()) + " has no spatial dims");
    Shape shape = {x.dim(0), x.dim(1)};
    std::int64_t spatial = 1;
    for (int i = 2; i < x.rank(); ++i) {
      spatial *= x.dim(i);
      shape.push_back(1);
    }
    Tensor y(x.type(), shape);
    const std::int64_t planes = x.dim(0) * x.dim(1);
    dispatch(x.type(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_floating_point_v<T> || is_half_v<T>) {
        const T* px = x.data<T>();
        T* py = y.data<T>();
#pragma omp parallel for if (planes * spatial > (1 << 15)) schedule(static)
        for (std::int64_t p = 0; p < planes; ++p) {
          double sum = 0.0;
          for (std::int64_t i = 0; i < spatial; ++i) sum += static_cast<double>(widen(px[p * spatial + i]));
          py[p] = narrow<T>(sum / static_cast<double>(spatial));
        }
      }
    });
    out[0] = std::move(y);
  }

 private:
  std::string node_;
};

}  // namespace

std::unique_ptr<Op> make_pool(NodeInfo& info) {
  PoolAttributes a;
  a.max = info.node().op_type() == "MaxPool";
  a.kernel = info.ints("kernel_shape");
  if (a.kernel.empty()) info.invalid("kernel_shape is required");
  const std::size_t k = a.kernel.size();
  if (k < 1 || k > 3) info.unsupported("pooling over " + std::to_string(k) + " spatial dims (1 to 3 supported)");
  a.strides = info.ints("strides", std::vector<std::int64_t>(k, 1));
  a.dilations = info.ints("dilations", std::vector<std::int64_t>(k, 1));
  a.padding = read_padding(info, static_cast<int>(k));
  a.ceil_mode = info.i("ceil_mode", 0) != 0;
  if (a.strides.size() != k || a.dilations.size() != k)
    info.invalid("strides and dilations must have one value per kernel dim");
  if (a.max) {
    if (info.output_count() > 1 && !info.node().output(1).empty())
      info.unsupported("the Indices output of MaxPool is not supported");
    if (info.i("storage_order", 0) != 0) info.unsupported("storage_order 1 (column major)");
  } else {
    a.count_include_pad = info.i("count_include_pad", 0) != 0;
    if (info.opset() < 19 && info.has("dilations") &&
        a.dilations != std::vector<std::int64_t>(k, 1))
      info.invalid("AveragePool has dilations only from opset 19");
  }
  return std::make_unique<Pool>(std::move(a), info.describe());
}

std::unique_ptr<Op> make_global_average_pool(NodeInfo& info) {
  return std::make_unique<GlobalAveragePool>(info.describe());
}

}  // namespace bnorm::exec

#include <algorithm>
#include <cstring>

#include "bnorm/error.hpp"
#include "exec/dispatch.hpp"
#include "exec/ops/ops.hpp"

namespace bnorm::exec {

int normalize_axis(std::int64_t axis, int rank, const std::string& node, const char* what) {
  if (axis < -rank || axis >= rank)
    fail_shape(node, std::string(what) + " " + std::to_string(axis) + " is outside [" + std::to_string(-rank) + ", " +
                         std::to_string(rank) + ") for rank " + std::to_string(rank));
  return static_cast<int>(axis < 0 ? axis + rank : axis);
}

Tensor to_f32(const Tensor& x) { return x.type() == ElementType::f32 ? x : cast(x, ElementType::f32); }

bool any_non_finite(const Tensor& f32) {
  const float* p = f32.data<float>();
  const std::int64_t n = f32.elements();
  // All exponent bits set (an infinity or a NaN) carry into the sign bit
  // when the exponent's lowest bit is added: an AND, an ADD and an OR per
  // value, which vectorize on every x86-64 (a compare or a max per value
  // ran at a quarter of the speed).
  std::uint32_t acc = 0;
#pragma omp parallel for reduction(| : acc) if (n > (1 << 18)) schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, p + i, sizeof bits);
    acc |= (bits & 0x7f800000u) + 0x00800000u;
  }
  return (acc & 0x80000000u) != 0;
}

void require_floating(const Tensor& x, const std::string& node, const char* what) {
  if (!is_floating(x.type()))
    fail_unsupported(node, std::string(what) + " has element type " + std::string(to_string(x.type())) +
                               "; this op runs on float32, float64, float16 and bfloat16");
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const std::string& node) {
  const std::size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (std::size_t i = 0; i < rank; ++i) {
    const std::int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const std::int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1)
      fail_shape(node, "shapes " + to_string(a) + " and " + to_string(b) + " do not broadcast (dim " +
                           std::to_string(i) + ": " + std::to_string(da) + " vs " + std::to_string(db) + ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<std::int64_t> int_values(const Tensor& t, const std::string& node, const char* what) {
  if (t.type() != ElementType::i64 && t.type() != ElementType::i32)
    fail_shape(node, std::string(what) + " has element type " + std::string(to_string(t.type())) +
                         ", expected int64");
  if (t.rank() > 1) fail_shape(node, std::string(what) + " has rank " + std::to_string(t.rank()) + ", expected 1");
  std::vector<std::int64_t> v(static_cast<std::size_t>(t.elements()));
  for (std::int64_t i = 0; i < t.elements(); ++i)
    v[static_cast<std::size_t>(i)] =
        t.type() == ElementType::i64 ? t.data<std::int64_t>()[i] : t.data<std::int32_t>()[i];
  return v;
}

std::int64_t window_output(std::int64_t in, std::int64_t kernel, std::int64_t stride, std::int64_t dilation,
                           std::int64_t pad_begin, std::int64_t pad_end, bool ceil_mode) {
  const std::int64_t span = (kernel - 1) * dilation + 1;
  const std::int64_t room = in + pad_begin + pad_end - span;
  if (room < 0) return 0;
  std::int64_t out = room / stride + 1;
  if (ceil_mode && room % stride != 0) {
    ++out;
    // The last window must start inside the input or its begin padding.
    if ((out - 1) * stride >= in + pad_begin) --out;
  }
  return out;
}

void Padding::resolve(const std::vector<std::int64_t>& in, const std::vector<std::int64_t>& kernel,
                      const std::vector<std::int64_t>& strides, const std::vector<std::int64_t>& dilations,
                      std::vector<std::int64_t>& begin, std::vector<std::int64_t>& end) const {
  const std::size_t k = in.size();
  begin.assign(k, 0);
  end.assign(k, 0);
  if (auto_pad == "NOTSET") {
    if (!pads.empty())
      for (std::size_t i = 0; i < k; ++i) {
        begin[i] = pads[i];
        end[i] = pads[i + k];
      }
    return;
  }
  if (auto_pad == "VALID") return;
  for (std::size_t i = 0; i < k; ++i) {
    const std::int64_t out = (in[i] + strides[i] - 1) / strides[i];
    const std::int64_t total =
        std::max<std::int64_t>(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in[i]);
    begin[i] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    end[i] = total - begin[i];
  }
}

Padding read_padding(NodeInfo& info, int spatial) {
  Padding p;
  p.auto_pad = info.s("auto_pad", "NOTSET");
  if (p.auto_pad != "NOTSET" && p.auto_pad != "SAME_UPPER" && p.auto_pad != "SAME_LOWER" && p.auto_pad != "VALID")
    info.invalid("auto_pad '" + p.auto_pad + "' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID");
  p.pads = info.ints("pads");
  if (!p.pads.empty()) {
    if (p.auto_pad != "NOTSET") info.invalid("pads are given with auto_pad " + p.auto_pad);
    if (spatial >= 0 && p.pads.size() != 2 * static_cast<std::size_t>(spatial))
      info.invalid("pads has " + std::to_string(p.pads.size()) + " values, expected " +
                   std::to_string(2 * spatial));
    for (auto v : p.pads)
      if (v < 0) info.unsupported("negative pads are not supported");
  }
  return p;
}

dnnl::memory::desc plain_desc(const Shape& shape, dnnl::memory::data_type type) {
  dnnl::memory::dims dims(shape.begin(), shape.end()), strides(shape.size());
  std::int64_t s = 1;
  for (std::size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= std::max<std::int64_t>(shape[i], 1);
  }
  return dnnl::memory::desc(dims, type, strides);
}

}  // namespace bnorm::exec

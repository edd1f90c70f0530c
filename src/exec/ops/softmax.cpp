// Softmax: along one axis (opset 13+), or over the input coerced to 2-D at
// `axis` (opsets 1 to 12). The maximum is subtracted first, so large
// inputs do not overflow.

#include <cmath>

#include "bnorm/error.hpp"
#include "exec/dispatch.hpp"
#include "exec/ops/ops.hpp"

namespace bnorm::exec {
namespace {

class Softmax final : public Op {
 public:
  Softmax(std::int64_t axis, bool coerce_2d, std::string node)
      : axis_(axis), coerce_2d_(coerce_2d), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext&) override {
    const Tensor& x = *in[0];
    require_floating(x, node_, "input");
    const int axis = normalize_axis(axis_, x.rank(), node_);
    // outer x length x inner, softmax along `length` with stride `inner`.
    std::int64_t outer = 1, length = 1, inner = 1;
    for (int i = 0; i < x.rank(); ++i) {
      if (i < axis) {
        outer *= x.dim(i);
      } else if (i == axis || coerce_2d_) {
        length *= x.dim(i);
      } else {
        inner *= x.dim(i);
      }
    }
    Tensor y(x.type(), x.shape());
    dispatch(x.type(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_floating_point_v<T> || is_half_v<T>) {
        using C = std::conditional_t<std::is_same_v<T, double>, double, float>;
        const T* px = x.data<T>();
        T* py = y.data<T>();
        std::vector<C> buf(static_cast<std::size_t>(length));
        for (std::int64_t o = 0; o < outer; ++o)
          for (std::int64_t i = 0; i < inner; ++i) {
            const std::int64_t base = o * length * inner + i;
            C max = -std::numeric_limits<C>::infinity();
            for (std::int64_t j = 0; j < length; ++j) max = std::max<C>(max, widen(px[base + j * inner]));
            C sum = 0;
            for (std::int64_t j = 0; j < length; ++j) {
              buf[static_cast<std::size_t>(j)] = std::exp(static_cast<C>(widen(px[base + j * inner])) - max);
              sum += buf[static_cast<std::size_t>(j)];
            }
            for (std::int64_t j = 0; j < length; ++j)
              py[base + j * inner] = narrow<T>(buf[static_cast<std::size_t>(j)] / sum);
          }
      }
    });
    out[0] = std::move(y);
  }

 private:
  std::int64_t axis_;
  bool coerce_2d_;
  std::string node_;
};

}  // namespace

std::unique_ptr<Op> make_softmax(NodeInfo& info) {
  const bool coerce = info.opset() < 13;
  const std::int64_t axis = info.i("axis", coerce ? 1 : -1);
  return std::make_unique<Softmax>(axis, coerce, info.describe());
}

}  // namespace bnorm::exec

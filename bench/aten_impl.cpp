// ATen (libtorch 1.13) in the side-by-side benchmark: at::native_batch_norm
// and at::native_batch_norm_backward on tensors that wrap the same buffers
// (channels-last as ATen's channels_last strides), f32 parameters.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "peers.hpp"

namespace bnorm::bench {

void set_aten_threads(int threads) { at::set_num_threads(threads); }

namespace {

at::Tensor wrap(void* p, const TensorDesc& d) {
  std::vector<std::int64_t> physical(d.dims().begin(), d.dims().end());
  const auto type = d.dtype() == DType::f32 ? at::kFloat : at::kBFloat16;
  if (d.layout() == Layout::channels_first) return at::from_blob(p, physical, type);
  physical.erase(physical.begin() + 1);
  physical.push_back(d.channels());
  std::vector<std::int64_t> perm = {0, d.rank() - 1};
  for (int i = 1; i < d.rank() - 1; ++i) perm.push_back(i);
  return at::from_blob(p, physical, type).permute(perm);
}

at::Tensor wrap(std::vector<float>& v) {
  return at::from_blob(v.data(), {static_cast<std::int64_t>(v.size())}, at::kFloat);
}

class Aten final : public Impl {
 public:
  const char* name() const override { return "aten"; }
  bool setup(const Case& c, Buffers& b, std::string* why) override {
    if (c.desc.dtype() == DType::f16) {
      *why = "ATen 1.13 has no f16 batch_norm on CPU";
      return false;
    }
    c_ = c;
    x_ = wrap(b.src, c.desc);
    dy_ = wrap(b.diff_dst, c.desc);
    w_ = wrap(b.gamma);
    bias_ = wrap(b.beta);
    rm_ = wrap(b.running_mean);
    rv_ = wrap(b.running_var);
    save_mean_ = at::empty({c.desc.channels()}, at::kFloat);
    save_invstd_ = at::empty({c.desc.channels()}, at::kFloat);
    if (c.direction == Direction::backward) {
      auto r = at::native_batch_norm(x_, w_, bias_, rm_, rv_, true, 0.1, 1e-5);
      save_mean_ = std::get<1>(r);
      save_invstd_ = std::get<2>(r);
    }
    return true;
  }
  void run() override {
    // The functional forms, as PyTorch calls them (1.13 registers no CPU
    // kernel for native_batch_norm.out). Their results are allocated each
    // call; the bench keeps freed blocks in malloc's heap so that costs no
    // page faults.
    switch (c_.direction) {
      case Direction::forward_training:
      case Direction::forward_inference:
        result_ = at::native_batch_norm(x_, w_, bias_, rm_, rv_, c_.direction == Direction::forward_training,
                                        0.1, 1e-5);
        break;
      case Direction::backward:
        result_ = at::native_batch_norm_backward(dy_, x_, w_, rm_, rv_, save_mean_, save_invstd_, true, 1e-5,
                                                 {true, true, true});
        break;
    }
  }

 private:
  Case c_;
  at::Tensor x_, dy_, w_, bias_, rm_, rv_, save_mean_, save_invstd_;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> result_;
};

}  // namespace

std::unique_ptr<Impl> make_aten() { return std::make_unique<Aten>(); }

}  // namespace bnorm::bench

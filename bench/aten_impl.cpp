// ATen (libtorch 1.13) in the side-by-side benchmark, on tensors that wrap
// the same buffers (channels-last as ATen's channels_last strides):
// - batch norm: at::native_batch_norm / native_batch_norm_backward, f32
//   parameters (its mixed bf16 path); BN+ReLU and BN+Add+ReLU as PyTorch's
//   eager mode runs them: batch norm, then in-place add_ / relu_ (backward:
//   threshold_backward, then batch norm's);
// - layer norm: native_layer_norm / native_layer_norm_backward;
// - group norm: at::group_norm (as torch.nn.functional calls it; 1.13 copies
//   channels-last input to channels-first there), backward through
//   autograd (native_group_norm_backward on channels-last strides reads the
//   memory as channels-first: a wrong result);
// - instance norm: at::instance_norm (batch norm on a (1, N*C, S) view),
//   backward through autograd;
// - RMS norm: 1.13 has none; the composite torch 2.4 runs on CPU
//   (x * rsqrt(mean(x^2) + eps) * w), backward through autograd.
// Parameters (and instance norm's running statistics) are in the data's
// dtype except for batch norm, as ATen 1.13 wants them. Also "unfused": bnorm's batch norm followed by ATen's
// separate add_ / relu_ passes, the fused ops' other baseline.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "peers.hpp"

namespace bnorm::bench {

void set_aten_threads(int threads) { at::set_num_threads(threads); }

namespace {

at::ScalarType aten_type(DType dt) { return dt == DType::f32 ? at::kFloat : at::kBFloat16; }

at::Tensor wrap(void* p, const TensorDesc& d) {
  std::vector<std::int64_t> physical(d.dims().begin(), d.dims().end());
  if (d.layout() == Layout::channels_first) return at::from_blob(p, physical, aten_type(d.dtype()));
  physical.erase(physical.begin() + 1);
  physical.push_back(d.channels());
  std::vector<std::int64_t> perm = {0, d.rank() - 1};
  for (int i = 1; i < d.rank() - 1; ++i) perm.push_back(i);
  return at::from_blob(p, physical, aten_type(d.dtype())).permute(perm);
}

at::Tensor wrap(std::vector<float>& v, std::int64_t n) { return at::from_blob(v.data(), {n}, at::kFloat); }

class Aten final : public Impl {
 public:
  const char* name() const override { return "aten"; }
  bool setup(const Case& c, Buffers& b, std::string* why) override {
    if (c.desc.dtype() == DType::f16) {
      *why = "ATen 1.13 has no f16 normalization on CPU";
      return false;
    }
    if (c.direction == Direction::forward_inference && !c.batch_norm_family() && c.op != Op::instance_norm) {
      *why = "no inference form (same as forward_training)";
      return false;
    }
    c_ = c;
    x_ = wrap(b.src, c.desc);
    dy_ = wrap(b.diff_dst, c.desc);
    if (c.op == Op::bn_add_relu) res_ = wrap(b.residual, c.desc);
    const std::int64_t params = c.op == Op::layer_norm || c.op == Op::rms_norm ? c.row() : c.desc.channels();
    const auto ptype = c.batch_norm_family() ? at::kFloat : aten_type(c.desc.dtype());
    w_ = wrap(b.gamma, params).to(ptype);
    bias_ = wrap(b.beta, params).to(ptype);
    // instance_norm wants running statistics of the data's dtype too.
    rm_ = wrap(b.running_mean, c.desc.channels()).to(c.op == Op::instance_norm ? ptype : at::kFloat);
    rv_ = wrap(b.running_var, c.desc.channels()).to(c.op == Op::instance_norm ? ptype : at::kFloat);
    if (c.direction != Direction::backward) return true;
    switch (c.op) {
      case Op::batch_norm:
      case Op::bn_relu:
      case Op::bn_add_relu: {
        auto r = at::native_batch_norm(x_, w_, bias_, rm_, rv_, true, 0.1, 1e-5);
        y_ = std::get<0>(r);
        if (c.fused()) {
          if (c.op == Op::bn_add_relu) y_.add_(res_);
          y_.relu_();
        }
        save_mean_ = std::get<1>(r);
        save_invstd_ = std::get<2>(r);
        break;
      }
      case Op::layer_norm: {
        auto r = at::native_layer_norm(x_, {c.row()}, w_, bias_, 1e-5);
        save_mean_ = std::get<1>(r);
        save_invstd_ = std::get<2>(r);
        break;
      }
      case Op::group_norm:
      case Op::rms_norm:
      case Op::instance_norm: {
        // A graph to differentiate, kept between calls.
        xg_ = x_.detach().requires_grad_(true);
        wg_ = w_.detach().requires_grad_(true);
        if (c.op == Op::rms_norm) {
          yg_ = rms_norm(xg_, wg_);
          inputs_ = {xg_, wg_};
        } else {
          bg_ = bias_.detach().requires_grad_(true);
          yg_ = c.op == Op::group_norm ? at::group_norm(xg_, c.groups, wg_, bg_, 1e-5)
                                       : at::instance_norm(xg_, wg_, bg_, rm_, rv_, true, 0.1, 1e-5, false);
          inputs_ = {xg_, wg_, bg_};
        }
        break;
      }
    }
    return true;
  }
  void run() override {
    // The functional forms, as PyTorch calls them (1.13 registers no CPU
    // kernel for native_batch_norm.out). Their results are allocated each
    // call; the bench keeps freed blocks in malloc's heap so that costs no
    // page faults.
    const bool training = c_.direction == Direction::forward_training;
    if (c_.direction == Direction::backward) {
      backward();
      return;
    }
    switch (c_.op) {
      case Op::batch_norm:
      case Op::bn_relu:
      case Op::bn_add_relu: {
        result_ = at::native_batch_norm(x_, w_, bias_, rm_, rv_, training, 0.1, 1e-5);
        if (c_.fused()) {
          at::Tensor& y = std::get<0>(result_);
          if (c_.op == Op::bn_add_relu) y.add_(res_);
          y.relu_();
        }
        break;
      }
      case Op::layer_norm:
        result_ = at::native_layer_norm(x_, {c_.row()}, w_, bias_, 1e-5);
        break;
      case Op::group_norm:
        std::get<0>(result_) = at::group_norm(x_, c_.groups, w_, bias_, 1e-5);
        break;
      case Op::rms_norm:
        std::get<0>(result_) = rms_norm(x_, w_);
        break;
      case Op::instance_norm:
        std::get<0>(result_) = at::instance_norm(x_, w_, bias_, rm_, rv_, training, 0.1, 1e-5, false);
        break;
    }
  }

 private:
  static at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w) {
    return x * at::rsqrt(x.pow(2).mean({-1}, true) + 1e-5) * w;
  }
  void backward() {
    switch (c_.op) {
      case Op::batch_norm:
        result_ = at::native_batch_norm_backward(dy_, x_, w_, rm_, rv_, save_mean_, save_invstd_, true, 1e-5,
                                                 {true, true, true});
        break;
      case Op::bn_relu:
      case Op::bn_add_relu: {
        const at::Tensor g = at::threshold_backward(dy_, y_, 0);
        result_ = at::native_batch_norm_backward(g, x_, w_, rm_, rv_, save_mean_, save_invstd_, true, 1e-5,
                                                 {true, true, true});
        break;
      }
      case Op::layer_norm:
        result_ = at::native_layer_norm_backward(dy_, x_, {c_.row()}, save_mean_, save_invstd_, w_, bias_,
                                                 {true, true, true});
        break;
      case Op::group_norm:
      case Op::rms_norm:
      case Op::instance_norm:
        grads_ = torch::autograd::grad({yg_}, inputs_, {dy_}, /*retain_graph=*/true);
        break;
    }
  }

  Case c_;
  at::Tensor x_, dy_, res_, w_, bias_, rm_, rv_, save_mean_, save_invstd_, y_;
  at::Tensor xg_, wg_, bg_, yg_;
  std::vector<at::Tensor> inputs_, grads_;
  std::tuple<at::Tensor, at::Tensor, at::Tensor> result_;
};

// bnorm's batch norm, then ATen's separate passes.
class Unfused final : public Impl {
 public:
  const char* name() const override { return "unfused"; }
  bool setup(const Case& c, Buffers& b, std::string* why) override {
    if (!c.fused()) {
      *why = "only for the fused ops";
      return false;
    }
    if (c.desc.dtype() == DType::f16) {
      *why = "ATen 1.13 has no f16 add / relu on CPU";
      return false;
    }
    bn_ = make_plain();
    c_ = c;
    y_ = wrap(b.dst, c.desc);
    dy_ = wrap(b.diff_dst, c.desc);
    if (c.op == Op::bn_add_relu) res_ = wrap(b.residual, c.desc);
    if (c.direction != Direction::backward) return bn_->setup(c, b, why);
    // Backward: the ReLU's gradient in its own pass (into diff_residual for
    // BN+Add+ReLU, the residual's gradient), then BN's backward of it. The
    // plain BN's setup runs a training forward into dst; add and ReLU make
    // it the fused forward's output the gate is read from.
    gate_ = c.op == Op::bn_add_relu ? wrap(b.diff_residual, c.desc) : at::empty_like(dy_);
    gated_ = b;
    gated_.diff_dst = gate_.data_ptr();
    if (!bn_->setup(c, gated_, why)) return false;
    if (c.op == Op::bn_add_relu) y_.add_(res_);
    y_.relu_();
    return true;
  }
  void run() override {
    if (c_.direction == Direction::backward) {
      at::threshold_backward_out(gate_, dy_, y_, 0);
      bn_->run();
      return;
    }
    bn_->run();
    if (c_.op == Op::bn_add_relu) y_.add_(res_);
    y_.relu_();
  }

 private:
  Case c_;
  std::unique_ptr<Impl> bn_;
  Buffers gated_;
  at::Tensor y_, dy_, res_, gate_;
};

}  // namespace

std::unique_ptr<Impl> make_aten() { return std::make_unique<Aten>(); }
std::unique_ptr<Impl> make_unfused() { return std::make_unique<Unfused>(); }

}  // namespace bnorm::bench

// bnorm in the side-by-side benchmark: the public functions, as a user calls
// them (the fused ops as training does: the training forward keeps the
// ReLU's mask and the backward reads it). Also the fused ops' baseline,
// "plain": batch norm alone.

#include "peers.hpp"

namespace bnorm::bench {
namespace {

class Bnorm final : public Impl {
 public:
  explicit Bnorm(bool plain) : plain_(plain) {}
  const char* name() const override { return plain_ ? "plain" : "bnorm"; }
  bool setup(const Case& c, Buffers& b, std::string* why) override {
    c_ = c;
    b_ = &b;
    if (plain_) {
      if (!c.fused()) {
        *why = "only for the fused ops";
        return false;
      }
      c_.op = Op::batch_norm;
    }
    fusion_ = {c.op == Op::bn_add_relu ? b.residual : nullptr, true};
    if (c_.fused()) relu_mask_.assign(batch_norm_relu_mask_bytes(c.desc), 0);
    if (c.direction == Direction::forward_inference && !c.batch_norm_family() && c.op != Op::instance_norm) {
      *why = "no inference form (same as forward_training)";
      return false;
    }
    if (c_.direction == Direction::backward) {
      // The saved statistics (and for the fused ops the output) a training
      // forward leaves for backward. (Batch norm with one value per channel
      // is refused in training; backward then runs on the buffers'
      // placeholder statistics, which is just as much work.)
      if (!c_.batch_norm_family() || c.desc.batch() * c.desc.spatial() > 1) forward(Direction::forward_training);
    }
    return true;
  }
  void run() override {
    if (c_.direction == Direction::backward) {
      backward();
    } else {
      forward(c_.direction);
    }
  }

 private:
  void forward(Direction d) {
    Buffers& b = *b_;
    const TensorDesc& t = c_.desc;
    const bool training = d == Direction::forward_training;
    const RunningStats running{b.running_mean.data(), b.running_var.data(), nullptr};
    const BatchNormConfig config{1e-5, 0.1};
    switch (c_.op) {
      case Op::batch_norm:
        if (training) {
          batch_norm_forward_training(t, b.src, t, b.dst, b.gamma.data(), b.beta.data(), b.mean.data(),
                                      b.invstd.data(), running, config);
        } else {
          batch_norm_forward_inference(t, b.src, t, b.dst, b.gamma.data(), b.beta.data(), b.running_mean.data(),
                                       b.running_var.data(), 1e-5);
        }
        break;
      case Op::bn_relu:
      case Op::bn_add_relu:
        if (training) {
          BatchNormFusion keep = fusion_;
          keep.relu_mask = relu_mask_.data();
          batch_norm_forward_training_fused(t, b.src, t, b.dst, keep, b.gamma.data(), b.beta.data(),
                                            b.mean.data(), b.invstd.data(), running, config);
        } else {
          batch_norm_forward_inference_fused(t, b.src, t, b.dst, fusion_, b.gamma.data(), b.beta.data(),
                                             b.running_mean.data(), b.running_var.data(), 1e-5);
        }
        break;
      case Op::layer_norm:
        layer_norm_forward(t, b.src, t, b.dst, 1, b.gamma.data(), b.beta.data(), b.mean.data(), b.invstd.data());
        break;
      case Op::rms_norm:
        rms_norm_forward(t, b.src, t, b.dst, 1, b.gamma.data(), b.invstd.data(), 1e-5);
        break;
      case Op::group_norm:
        group_norm_forward(t, b.src, t, b.dst, c_.groups, b.gamma.data(), b.beta.data(), b.mean.data(),
                           b.invstd.data());
        break;
      case Op::instance_norm:
        if (training) {
          instance_norm_forward_training(t, b.src, t, b.dst, b.gamma.data(), b.beta.data(), b.mean.data(),
                                         b.invstd.data(), b.running_mean.data(), b.running_var.data());
        } else {
          instance_norm_forward_inference(t, b.src, t, b.dst, b.gamma.data(), b.beta.data(), b.running_mean.data(),
                                          b.running_var.data());
        }
        break;
    }
  }
  void backward() {
    Buffers& b = *b_;
    const TensorDesc& t = c_.desc;
    switch (c_.op) {
      case Op::batch_norm:
        batch_norm_backward(t, b.src, t, b.diff_dst, t, b.diff_src, b.gamma.data(), b.mean.data(), b.invstd.data(),
                            b.diff_gamma.data(), b.diff_beta.data());
        break;
      case Op::bn_relu:
      case Op::bn_add_relu:
        batch_norm_backward_fused(t, b.src, relu_mask_.data(), t, b.diff_dst, t, b.diff_src, b.gamma.data(),
                                  b.mean.data(), b.invstd.data(), b.diff_gamma.data(), b.diff_beta.data(),
                                  c_.op == Op::bn_add_relu ? b.diff_residual : nullptr);
        break;
      case Op::layer_norm:
        layer_norm_backward(t, b.src, t, b.diff_dst, t, b.diff_src, 1, b.gamma.data(), b.mean.data(),
                            b.invstd.data(), b.diff_gamma.data(), b.diff_beta.data());
        break;
      case Op::rms_norm:
        rms_norm_backward(t, b.src, t, b.diff_dst, t, b.diff_src, 1, b.gamma.data(), b.invstd.data(),
                          b.diff_gamma.data());
        break;
      case Op::group_norm:
        group_norm_backward(t, b.src, t, b.diff_dst, t, b.diff_src, c_.groups, b.gamma.data(), b.mean.data(),
                            b.invstd.data(), b.diff_gamma.data(), b.diff_beta.data());
        break;
      case Op::instance_norm:
        instance_norm_backward(t, b.src, t, b.diff_dst, t, b.diff_src, b.gamma.data(), b.mean.data(),
                               b.invstd.data(), b.diff_gamma.data(), b.diff_beta.data());
        break;
    }
  }

  bool plain_;
  Case c_;
  Buffers* b_ = nullptr;
  BatchNormFusion fusion_;
  std::vector<std::uint8_t> relu_mask_;
};

}  // namespace

std::unique_ptr<Impl> make_bnorm() { return std::make_unique<Bnorm>(false); }
std::unique_ptr<Impl> make_plain() { return std::make_unique<Bnorm>(true); }

}  // namespace bnorm::bench

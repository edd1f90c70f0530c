// bnorm in the side-by-side benchmark: the public functions, as a user calls them.

#include "peers.hpp"

namespace bnorm::bench {
namespace {

class Bnorm final : public Impl {
 public:
  const char* name() const override { return "bnorm"; }
  bool setup(const Case& c, Buffers& b, std::string*) override {
    c_ = c;
    b_ = &b;
    if (c.direction == Direction::backward && c.desc.batch() * c.desc.spatial() > 1) {
      // The saved statistics a training forward leaves for backward. (With
      // one value per channel training is refused; backward then runs on the
      // buffers' placeholder statistics, which is just as much work.)
      batch_norm_forward_training(c.desc, b.src, c.desc, b.dst, b.gamma.data(), b.beta.data(), b.mean.data(),
                                  b.invstd.data());
    }
    return true;
  }
  void run() override {
    Buffers& b = *b_;
    switch (c_.direction) {
      case Direction::forward_training:
        batch_norm_forward_training(
            c_.desc, b.src, c_.desc, b.dst, b.gamma.data(), b.beta.data(), b.mean.data(), b.invstd.data(),
            RunningStats{b.running_mean.data(), b.running_var.data(), nullptr}, BatchNormConfig{1e-5, 0.1});
        break;
      case Direction::forward_inference:
        batch_norm_forward_inference(c_.desc, b.src, c_.desc, b.dst, b.gamma.data(), b.beta.data(),
                                     b.running_mean.data(), b.running_var.data(), 1e-5);
        break;
      case Direction::backward:
        batch_norm_backward(c_.desc, b.src, c_.desc, b.diff_dst, c_.desc, b.diff_src, b.gamma.data(),
                            b.mean.data(), b.invstd.data(), b.diff_gamma.data(), b.diff_beta.data());
        break;
    }
  }

 private:
  Case c_;
  Buffers* b_ = nullptr;
};

}  // namespace

std::unique_ptr<Impl> make_bnorm() { return std::make_unique<Bnorm>(); }

}  // namespace bnorm::bench

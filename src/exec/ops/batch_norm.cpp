// BatchNormalization through bnorm's own kernels. Inference normalizes
// with the stored statistics; training_mode = 1 (and the calibration mode
// of the executor) with the batch's, as ONNX defines it: biased variance,
// and running = input * momentum + batch * (1 - momentum).

#include "bnorm/batch_norm.hpp"
#include "bnorm/error.hpp"
#include "exec/ops/ops.hpp"

namespace bnorm::exec {
namespace {

class BatchNormalization final : public Op {
 public:
  BatchNormalization(double epsilon, double momentum, bool training, int node_index, std::string node)
      : epsilon_(epsilon), momentum_(momentum), training_(training), index_(node_index), node_(std::move(node)) {}

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out, ExecContext& ctx) override {
    const Tensor& x = *in[0];
    require_floating(x, node_, "input X");
    if (x.rank() < 2 || x.rank() > kMaxRank)
      fail_shape(node_, "input X " + to_string(x.shape()) + " must have rank 2 to 5 (N, C, spatial...)");
    const std::int64_t c = x.dim(1);
    std::vector<float> p[4];
    const char* names[4] = {"scale", "B", "input_mean", "input_var"};
    for (int i = 0; i < 4; ++i) {
      if (!in[static_cast<std::size_t>(i + 1)]) fail_shape(node_, std::string(names[i]) + " is missing");
      const Tensor& t = *in[static_cast<std::size_t>(i + 1)];
      require_floating(t, node_, names[i]);
      if (t.elements() != c || t.rank() != 1)
        fail_shape(node_, std::string(names[i]) + " " + to_string(t.shape()) + " must hold one value per channel (" +
                              std::to_string(c) + ")");
      const Tensor f = to_f32(t);
      p[i].assign(f.data<float>(), f.data<float>() + c);
    }
    // bnorm runs f32, bf16 and f16 data; double is converted.
    const bool native = x.type() != ElementType::f64;
    const Tensor xs = native ? x : to_f32(x);
    const DType dtype = xs.type() == ElementType::f32 ? DType::f32 : xs.type() == ElementType::bf16 ? DType::bf16 : DType::f16;
    const TensorDesc desc(dtype, Layout::channels_first, std::span<const std::int64_t>(xs.shape()));
    Tensor y(xs.type(), xs.shape());
    const bool batch = training_ || ctx.batch_norm_statistics == BatchNormStatistics::batch;
    try {
      if (!batch) {
        batch_norm_forward_inference(desc, xs.raw(), desc, y.raw(), p[0].data(), p[1].data(), p[2].data(),
                                     p[3].data(), epsilon_);
      } else if (ctx.statistics_source) {
        std::vector<double> mean, var;
        ctx.statistics_source->statistics(index_, x, mean, var);
        if (static_cast<std::int64_t>(mean.size()) != c || static_cast<std::int64_t>(var.size()) != c)
          fail_shape(node_, "the statistics source gave " + std::to_string(mean.size()) + " values for " +
                                std::to_string(c) + " channels");
        std::vector<float> m(mean.begin(), mean.end()), v(var.begin(), var.end());
        batch_norm_forward_inference(desc, xs.raw(), desc, y.raw(), p[0].data(), p[1].data(), m.data(), v.data(),
                                     epsilon_);
        if (training_)
          for (int o = 1; o <= 2; ++o)
            for (std::int64_t ch = 0; ch < c; ++ch) {
              float& r = p[o + 1][static_cast<std::size_t>(ch)];
              r = static_cast<float>(r * momentum_ + (o == 1 ? m : v)[static_cast<std::size_t>(ch)] * (1.0 - momentum_));
            }
      } else {
        std::vector<float> save_mean(static_cast<std::size_t>(c)), save_invstd(static_cast<std::size_t>(c));
        BatchNormConfig config;
        config.eps = epsilon_;
        config.momentum = 1.0 - momentum_;  // ONNX's momentum weights the old value
        config.unbiased_running_var = false;
        RunningStats running{p[2].data(), p[3].data(), nullptr};
        batch_norm_forward_training(desc, xs.raw(), desc, y.raw(), p[0].data(), p[1].data(), save_mean.data(),
                                    save_invstd.data(), training_ ? running : RunningStats{}, config);
      }
      if (batch && training_) {
        // Outputs running_mean and running_var, in input_mean's type.
        for (int o = 1; o <= 2 && o < static_cast<int>(out.size()); ++o) {
          Tensor r(ElementType::f32, {c});
          std::copy(p[o + 1].begin(), p[o + 1].end(), r.data<float>());
          out[static_cast<std::size_t>(o)] = cast(r, in[static_cast<std::size_t>(o + 2)]->type());
        }
      }
    } catch (const Error& e) {
      throw Error(e.kind(), node_ + ": " + e.what());
    }
    out[0] = native ? std::move(y) : cast(y, x.type());
  }

 private:
  double epsilon_, momentum_;
  bool training_;
  int index_;
  std::string node_;
};

}  // namespace

std::unique_ptr<Op> make_batch_norm(NodeInfo& info) {
  if (info.input_count() != 5) info.invalid("expected 5 inputs (X, scale, B, input_mean, input_var)");
  const double epsilon = info.f("epsilon", 1e-5f);
  const double momentum = info.f("momentum", 0.9f);
  if (epsilon < 0) info.invalid("epsilon " + std::to_string(epsilon) + " must be >= 0");
  if (info.i("spatial", 1) != 1) info.unsupported("spatial = 0 (opset < 9 per-activation statistics)");
  if (info.has("consumed_inputs")) info.unsupported("consumed_inputs (opset < 6)");
  // is_test defaults to 0 (training) before opset 7, and does not exist after.
  if (info.i("is_test", info.opset() < 7 ? 0 : 1) != 1) info.unsupported("is_test = 0 (opset < 7 training)");
  bool training = info.i("training_mode", 0) != 0;
  // Outputs 3 and 4 (saved mean / variance, opsets 9 to 13) are not
  // computed; listed with empty names they are absent.
  const bool saved_outputs = info.has_output(3) || info.has_output(4);
  if (info.opset() < 14 && info.output_count() > 1) {
    // Opsets 9 to 13: the extra outputs exist only in training.
    training = true;
    if (saved_outputs) info.unsupported("the saved_mean / saved_var outputs (opset < 14) are not computed");
  }
  if (training && saved_outputs) info.unsupported("more than 3 outputs");
  // Opset 14 on: running_mean and running_var are outputs of training only;
  // left unfilled, their readers would get no value.
  for (int o = 1; !training && o < info.output_count(); ++o)
    if (info.has_output(o))
      info.invalid("output " + std::to_string(o) + " '" + info.node().output(o) +
                   "' with training_mode = 0: running_mean and running_var are outputs only with "
                   "training_mode = 1");
  return std::make_unique<BatchNormalization>(epsilon, momentum, training, info.index(), info.describe());
}

}  // namespace bnorm::exec

// oneDNN (libdnnl 2.6) in the side-by-side benchmark: batch_normalization
// primitives (with fuse_norm_relu for BN+ReLU; 2.6 has no BN+Add+ReLU)
// and layer_normalization on the same buffers, plain nchw / nhwc formats
// (ncdhw / ndhwc, nc), scale and shift, created once per case. oneDNN 2.6
// has no RMS, group or instance normalization.

#include <oneapi/dnnl/dnnl.hpp>

#include "peers.hpp"

namespace bnorm::bench {
namespace {

using tag = dnnl::memory::format_tag;

tag format_of(const TensorDesc& d) {
  const bool cl = d.layout() == Layout::channels_last;
  switch (d.rank()) {
    case 2:
      return tag::nc;
    case 3:
      return cl ? tag::nwc : tag::ncw;
    case 4:
      return cl ? tag::nhwc : tag::nchw;
    default:
      return cl ? tag::ndhwc : tag::ncdhw;
  }
}

class OneDnn final : public Impl {
 public:
  const char* name() const override { return "onednn"; }

  bool setup(const Case& c, Buffers& b, std::string* why) override {
    if (c.desc.dtype() == DType::f16) {
      *why = "oneDNN 2.6 has no f16 normalization on CPU";
      return false;
    }
    if (c.op == Op::rms_norm || c.op == Op::group_norm || c.op == Op::instance_norm) {
      *why = "oneDNN 2.6 has no such primitive";
      return false;
    }
    if (c.op == Op::bn_add_relu) {
      *why = "oneDNN 2.6 has no fuse_norm_add_relu";
      return false;
    }
    if (c.op == Op::layer_norm) return setup_layer_norm(c, b, why);
    c_ = c;
    const auto dt =
        c.desc.dtype() == DType::f32 ? dnnl::memory::data_type::f32 : dnnl::memory::data_type::bf16;
    const dnnl::memory::dims dims(c.desc.dims().begin(), c.desc.dims().end());
    const dnnl::memory::desc data(dims, dt, format_of(c.desc));
    const dnnl::memory::desc channel({c.desc.channels()}, dnnl::memory::data_type::f32, tag::x);
    auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    if (c.op == Op::bn_relu) flags = flags | dnnl::normalization_flags::fuse_norm_relu;
    try {
      auto mem = [&](const dnnl::memory::desc& md, void* p) { return dnnl::memory(md, engine_, p); };
      const dnnl::memory src = mem(data, b.src), dst = mem(data, b.dst);
      const dnnl::memory scale = mem(channel, b.gamma.data()), shift = mem(channel, b.beta.data());
      const dnnl::memory mean = mem(channel, b.mean.data()), var = mem(channel, b.var.data());
      const dnnl::batch_normalization_forward::primitive_desc train_pd(
          {dnnl::prop_kind::forward_training, data, 1e-5f, flags}, engine_);
      if (c.direction == Direction::forward_inference) {
        const dnnl::batch_normalization_forward::primitive_desc pd(
            {dnnl::prop_kind::forward_inference, data, 1e-5f,
             flags | dnnl::normalization_flags::use_global_stats},
            engine_);
        detail_ = pd.impl_info_str();
        prim_ = dnnl::batch_normalization_forward(pd);
        // The running statistics, as bnorm and ATen normalize with.
        const dnnl::memory running_mean = mem(channel, b.running_mean.data()),
                           running_var = mem(channel, b.running_var.data());
        args_ = {{DNNL_ARG_SRC, src},     {DNNL_ARG_DST, dst},           {DNNL_ARG_SCALE, scale},
                 {DNNL_ARG_SHIFT, shift}, {DNNL_ARG_MEAN, running_mean}, {DNNL_ARG_VARIANCE, running_var}};
        return true;
      }
      std::unordered_map<int, dnnl::memory> train_args = {
          {DNNL_ARG_SRC, src},     {DNNL_ARG_DST, dst},   {DNNL_ARG_SCALE, scale},
          {DNNL_ARG_SHIFT, shift}, {DNNL_ARG_MEAN, mean}, {DNNL_ARG_VARIANCE, var}};
      if (c.fused()) {
        // The ReLU mask oneDNN keeps for backward.
        workspace_ = dnnl::memory(train_pd.workspace_desc(), engine_);
        train_args.insert({DNNL_ARG_WORKSPACE, workspace_});
      }
      if (c.direction == Direction::forward_training) {
        detail_ = train_pd.impl_info_str();
        prim_ = dnnl::batch_normalization_forward(train_pd);
        args_ = train_args;
        return true;
      }
      // Backward: statistics from one training forward.
      dnnl::batch_normalization_forward(train_pd).execute(stream_, train_args);
      stream_.wait();
      const dnnl::batch_normalization_backward::primitive_desc pd(
          {dnnl::prop_kind::backward, data, data, 1e-5f, flags}, engine_, train_pd);
      detail_ = pd.impl_info_str();
      prim_ = dnnl::batch_normalization_backward(pd);
      args_ = {{DNNL_ARG_SRC, src},
               {DNNL_ARG_MEAN, mean},
               {DNNL_ARG_VARIANCE, var},
               {DNNL_ARG_DIFF_DST, mem(data, b.diff_dst)},
               {DNNL_ARG_SCALE, scale},
               {DNNL_ARG_SHIFT, shift},
               {DNNL_ARG_DIFF_SRC, mem(data, b.diff_src)},
               {DNNL_ARG_DIFF_SCALE, mem(channel, b.diff_gamma.data())},
               {DNNL_ARG_DIFF_SHIFT, mem(channel, b.diff_beta.data())}};
      if (c.fused()) args_.insert({DNNL_ARG_WORKSPACE, workspace_});
      return true;
    } catch (const dnnl::error& e) {
      *why = std::string("oneDNN declined: ") + e.what();
      return false;
    }
  }

  // layer_normalization over the last dim of a (rows, row) tensor.
  bool setup_layer_norm(const Case& c, Buffers& b, std::string* why) {
    if (c.direction == Direction::forward_inference) {
      *why = "no inference form (same as forward_training)";
      return false;
    }
    const auto dt =
        c.desc.dtype() == DType::f32 ? dnnl::memory::data_type::f32 : dnnl::memory::data_type::bf16;
    const dnnl::memory::dims dims(c.desc.dims().begin(), c.desc.dims().end());
    if (dims.size() != 2) {
      *why = "bench runs layer_normalization on rank 2 only";
      return false;
    }
    const dnnl::memory::desc data(dims, dt, tag::ab);
    const dnnl::memory::desc stat({dims[0]}, dnnl::memory::data_type::f32, tag::a);
    const dnnl::memory::desc param({dims[1]}, dnnl::memory::data_type::f32, tag::a);
    const auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    try {
      auto mem = [&](const dnnl::memory::desc& md, void* p) { return dnnl::memory(md, engine_, p); };
      const dnnl::layer_normalization_forward::primitive_desc fwd_pd(
          {dnnl::prop_kind::forward_training, data, stat, 1e-5f, flags}, engine_);
      const std::unordered_map<int, dnnl::memory> fwd_args = {
          {DNNL_ARG_SRC, mem(data, b.src)},          {DNNL_ARG_DST, mem(data, b.dst)},
          {DNNL_ARG_SCALE, mem(param, b.gamma.data())}, {DNNL_ARG_SHIFT, mem(param, b.beta.data())},
          {DNNL_ARG_MEAN, mem(stat, b.mean.data())},    {DNNL_ARG_VARIANCE, mem(stat, b.var.data())}};
      if (c.direction == Direction::forward_training) {
        detail_ = fwd_pd.impl_info_str();
        prim_ = dnnl::layer_normalization_forward(fwd_pd);
        args_ = fwd_args;
        return true;
      }
      dnnl::layer_normalization_forward(fwd_pd).execute(stream_, fwd_args);
      stream_.wait();
      const dnnl::layer_normalization_backward::primitive_desc pd(
          {dnnl::prop_kind::backward, data, data, stat, 1e-5f, flags}, engine_, fwd_pd);
      detail_ = pd.impl_info_str();
      prim_ = dnnl::layer_normalization_backward(pd);
      args_ = {{DNNL_ARG_SRC, mem(data, b.src)},
               {DNNL_ARG_MEAN, mem(stat, b.mean.data())},
               {DNNL_ARG_VARIANCE, mem(stat, b.var.data())},
               {DNNL_ARG_DIFF_DST, mem(data, b.diff_dst)},
               {DNNL_ARG_SCALE, mem(param, b.gamma.data())},
               {DNNL_ARG_SHIFT, mem(param, b.beta.data())},
               {DNNL_ARG_DIFF_SRC, mem(data, b.diff_src)},
               {DNNL_ARG_DIFF_SCALE, mem(param, b.diff_gamma.data())},
               {DNNL_ARG_DIFF_SHIFT, mem(param, b.diff_beta.data())}};
      return true;
    } catch (const dnnl::error& e) {
      *why = std::string("oneDNN declined: ") + e.what();
      return false;
    }
  }

  void run() override {
    prim_.execute(stream_, args_);
    stream_.wait();
  }
  std::string detail() const override { return detail_; }

 private:
  Case c_;
  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream_{engine_};
  dnnl::primitive prim_;
  dnnl::memory workspace_;
  std::unordered_map<int, dnnl::memory> args_;
  std::string detail_;
};

}  // namespace

std::unique_ptr<Impl> make_onednn() { return std::make_unique<OneDnn>(); }

}  // namespace bnorm::bench

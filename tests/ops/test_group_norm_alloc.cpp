// The hot path allocates nothing: after a first call has sized the
// per-thread scratch, repeated calls of every group-norm and instance-norm
// function and layer, in both layouts, make no heap allocation.

#include <gtest/gtest.h>

#include <vector>

#include "common/alloc_counter.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

TEST(GroupNormAllocations, NoneAfterTheFirstCall) {

  for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
    for (const auto& dims : {std::vector<std::int64_t>{2, 64, 7, 7}, std::vector<std::int64_t>{8, 256},
                             std::vector<std::int64_t>{16, 32, 32, 32}, std::vector<std::int64_t>{3, 64, 64, 8},
                             std::vector<std::int64_t>{1, 8, 64, 64}}) {
      const TensorDesc d(DType::bf16, layout, std::span<const std::int64_t>(dims));
      SCOPED_TRACE(d.str());
      const auto C = static_cast<std::size_t>(d.channels()), NC = C * static_cast<std::size_t>(d.batch());
      Buffer x(d), y(d), dy(d), dx(d);
      fill_normal(x, 1);
      fill_normal(dy, 2);
      std::vector<float> gamma(C, 1.0f), beta(C, 0.0f), mean(NC), invstd(NC), rm(C, 0.0f), rv(C, 1.0f), dg(C),
          db(C);
      const std::int64_t G = d.channels() / 8;
      GroupNorm gn(GroupNorm::Options{.num_groups = G, .num_channels = d.channels()});
      InstanceNorm in(InstanceNorm::Options{.num_features = d.channels(), .affine = true, .track_running_stats = true});
      const bool instance = d.rank() > 2;
      auto all = [&] {
        group_norm_forward(d, x.data(), d, y.data(), G, gamma.data(), beta.data(), mean.data(), invstd.data());
        group_norm_backward(d, x.data(), d, dy.data(), d, dx.data(), G, gamma.data(), mean.data(), invstd.data(),
                            dg.data(), db.data());
        group_norm_onnx(d, x.data(), gamma.data(), beta.data(), d, y.data(), OnnxGroupNormalization{.num_groups = G});
        gn.forward(d, x.data(), d, y.data());
        gn.backward(d, x.data(), d, dy.data(), d, dx.data());
        if (!instance) return;
        instance_norm_forward_training(d, x.data(), d, y.data(), gamma.data(), beta.data(), mean.data(),
                                       invstd.data(), rm.data(), rv.data());
        instance_norm_backward(d, x.data(), d, dy.data(), d, dx.data(), gamma.data(), mean.data(), invstd.data(),
                               dg.data(), db.data());
        instance_norm_forward_inference(d, x.data(), d, y.data(), gamma.data(), beta.data(), rm.data(), rv.data());
        instance_norm_onnx(d, x.data(), gamma.data(), beta.data(), d, y.data());
        in.train();
        in.forward(d, x.data(), d, y.data());
        in.backward(d, x.data(), d, dy.data(), d, dx.data());
        in.eval();
        in.forward(d, x.data(), d, y.data());
        in.backward(d, x.data(), d, dy.data(), d, dx.data());
      };
      all();  // sizes the scratch and the layers' saved statistics
      const long before = heap_allocations();
      for (int i = 0; i < 3; ++i) all();
      EXPECT_EQ(heap_allocations() - before, 0);
    }
  }
}

}  // namespace
}  // namespace bnorm::test

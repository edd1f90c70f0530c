// ONNX GroupNormalization-21 cases written from the operator's specification
// by make_spec_cases.py (python3-onnx 1.12 predates the op), run through
// group_norm_onnx in both layouts (the channels-last run gets the case's
// data transposed to N, spatial, C and its output transposed back).

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "bnorm/bnorm.hpp"
#include "onnx/onnx_case.hpp"

namespace bnorm::test {
namespace {

const std::filesystem::path kDataDir = BNORM_ONNX_NODE_DATA_DIR;

// Packed (N, C, S) <-> (N, S, C).
std::vector<float> to_channels_last(const std::vector<float>& v, std::int64_t n, std::int64_t c, std::int64_t s) {
  std::vector<float> out(v.size());
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < c; ++j)
      for (std::int64_t k = 0; k < s; ++k) out[(i * s + k) * c + j] = v[(i * c + j) * s + k];
  return out;
}
std::vector<float> from_channels_last(const std::vector<float>& v, std::int64_t n, std::int64_t c, std::int64_t s) {
  std::vector<float> out(v.size());
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < c; ++j)
      for (std::int64_t k = 0; k < s; ++k) out[(i * c + j) * s + k] = v[(i * s + k) * c + j];
  return out;
}

TEST(OnnxGroupNormalization, SpecCases) {
  std::size_t count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kDataDir / "node")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("test_group_normalization", 0) != 0) continue;
    ++count;
    const OnnxCase c = read_case(entry.path());
    ASSERT_EQ(c.node().op_type(), "GroupNormalization") << name;
    ASSERT_EQ(c.inputs.size(), 3u) << name;
    ASSERT_EQ(c.outputs.size(), 1u) << name;
    const OnnxTensor& x = c.inputs[0];
    const OnnxGroupNormalization attributes{.num_groups = c.attr_int("num_groups", 0),
                                            .epsilon = c.attr_float("epsilon", 1e-5f)};
    for (Layout layout : {Layout::channels_first, Layout::channels_last}) {
      SCOPED_TRACE(name + " " + std::string(to_string(layout)));
      const TensorDesc desc(DType::f32, layout, std::span<const std::int64_t>(x.dims));
      const std::int64_t n = desc.batch(), ch = desc.channels(), s = desc.spatial();
      const bool last = layout == Layout::channels_last;
      const std::vector<float> in = last ? to_channels_last(x.data, n, ch, s) : x.data;
      std::vector<float> y(in.size());
      group_norm_onnx(desc, in.data(), c.inputs[1].data.data(), c.inputs[2].data.data(), desc, y.data(), attributes);
      if (last) y = from_channels_last(y, n, ch, s);
      const OnnxTensor& want = c.outputs[0];
      ASSERT_EQ(y.size(), want.data.size());
      for (std::size_t i = 0; i < y.size(); ++i)
        EXPECT_NEAR(y[i], want.data[i], 1e-5 * (1 + std::fabs(want.data[i]))) << i;
    }
  }
  EXPECT_EQ(count, 8u);  // every case make_spec_cases.py writes
}

}  // namespace
}  // namespace bnorm::test

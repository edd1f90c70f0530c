// Calling bnorm from several threads of the caller's own (docs/OPS.md,
// "Threads and instruction sets"): concurrent calls on separate buffers,
// calls inside the caller's OpenMP region, and set_num_threads while calls
// run all give the bits of the same calls made one at a time.

#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <cstddef>
#include <functional>
#include <thread>
#include <vector>

#include "bnorm/batch_norm.hpp"
#include "bnorm/group_norm.hpp"
#include "bnorm/layer_norm.hpp"
#include "bnorm/runtime.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

// One caller's work: batch norm training forward and backward (channels
// last), layer norm forward and group norm forward (bf16), each large enough
// for two workers. The outputs are the bytes every call wrote.
struct Work {
  TensorDesc bn{DType::f32, Layout::channels_last, {8, 32, 20, 20}};
  TensorDesc ln{DType::f32, Layout::channels_first, {64, 1024}};
  TensorDesc gn{DType::bf16, Layout::channels_first, {4, 32, 30, 30}};
  Buffer x_bn{bn}, dy_bn{bn}, x_ln{ln}, x_gn{gn};

  Work() {
    fill_normal(x_bn, 1, 2.0, 3.0);
    fill_normal(dy_bn, 2);
    fill_normal(x_ln, 3, -1.0, 0.5);
    fill_normal(x_gn, 4, 5.0, 2.0);
  }

  std::vector<std::vector<std::byte>> run() const {
    Buffer y_bn(bn), dx_bn(bn), y_ln(ln), y_gn(gn);
    std::vector<float> m(32), s(32), rm(32, 0.0f), rv(32, 1.0f), dg(32), db(32), lm(64), ls(64), gm(4 * 8),
        gs(4 * 8);
    batch_norm_forward_training(bn, x_bn.data(), bn, y_bn.data(), nullptr, nullptr, m.data(), s.data(),
                                {rm.data(), rv.data(), nullptr});
    batch_norm_backward(bn, x_bn.data(), bn, dy_bn.data(), bn, dx_bn.data(), nullptr, m.data(), s.data(),
                        dg.data(), db.data());
    layer_norm_forward(ln, x_ln.data(), ln, y_ln.data(), 1, nullptr, nullptr, lm.data(), ls.data());
    group_norm_forward(gn, x_gn.data(), gn, y_gn.data(), 8, nullptr, nullptr, gm.data(), gs.data());
    auto bytes = [](const std::vector<float>& v) {
      return std::vector<std::byte>(reinterpret_cast<const std::byte*>(v.data()),
                                    reinterpret_cast<const std::byte*>(v.data() + v.size()));
    };
    return {y_bn.bytes, dx_bn.bytes, y_ln.bytes, y_gn.bytes, bytes(rm), bytes(rv), bytes(dg), bytes(db)};
  }
};

class Threads : public ::testing::Test {
 protected:
  void TearDown() override { set_num_threads(0); }
};

TEST_F(Threads, ConcurrentCallersGetTheBitsOfOneCaller) {
  set_num_threads(2);
  const Work work;
  const auto want = work.run();
  std::atomic<int> mismatches{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t)
    callers.emplace_back([&] {
      for (int i = 0; i < 4; ++i)
        if (work.run() != want) ++mismatches;
    });
  for (auto& c : callers) c.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(Threads, CallsInsideTheCallersOpenMPRegion) {
  set_num_threads(2);
  const Work work;
  const auto want = work.run();
  int mismatches = 0;
#pragma omp parallel num_threads(2) reduction(+ : mismatches)
  mismatches += work.run() != want;
  EXPECT_EQ(mismatches, 0);
}

// A call made while another thread changes the count runs with one of the
// counts: its bits are those of one of them.
TEST_F(Threads, SetNumThreadsWhileCallsRun) {
  const Work work;
  set_num_threads(1);
  const auto one = work.run();
  set_num_threads(2);
  const auto two = work.run();
  std::atomic<bool> done{false};
  std::thread toggler([&] {
    for (int n = 1; !done.load(); n = 3 - n) {
      set_num_threads(n);
      std::this_thread::yield();
    }
  });
  int other = 0;
  for (int i = 0; i < 6; ++i) {
    const auto got = work.run();
    other += got != one && got != two;
  }
  done = true;
  toggler.join();
  EXPECT_EQ(other, 0);
}

}  // namespace
}  // namespace bnorm::test

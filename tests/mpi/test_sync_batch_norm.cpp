// SyncBatchNorm under mpirun (CTest runs this binary with -np 1 to 4): every
// rank builds the same global batch, takes its shard of the samples (even,
// uneven, and with one rank empty), and checks the synchronized forward,
// backward and running statistics against single-process batch norm on the
// whole batch; then mismatched calls must fail on every rank, not hang.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "bnorm/bnorm.hpp"
#include "bnorm/comm_world.hpp"
#include "common/test_util.hpp"

namespace bnorm::test {
namespace {

comm::Communicator& world() { return comm::world(); }

// Sample ranges [first[r], first[r + 1]) of the global batch per rank.
enum class Split { even, uneven, one_empty };

std::vector<std::int64_t> split(std::int64_t n, int ranks, Split how) {
  std::vector<std::int64_t> first(static_cast<std::size_t>(ranks) + 1, 0);
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(ranks), 0);
  if (how == Split::even) {
    for (int r = 0; r < ranks; ++r) sizes[static_cast<std::size_t>(r)] = n / ranks + (r < n % ranks ? 1 : 0);
  } else {
    // Rank r gets weight r + 1 (one_empty: rank 1 gets nothing, when there is
    // more than one rank); the last rank takes the rest.
    std::int64_t total_w = 0;
    for (int r = 0; r < ranks; ++r) total_w += (how == Split::one_empty && r == 1) ? 0 : r + 1;
    std::int64_t given = 0;
    for (int r = 0; r + 1 < ranks; ++r) {
      const std::int64_t w = (how == Split::one_empty && r == 1) ? 0 : r + 1;
      sizes[static_cast<std::size_t>(r)] = n * w / total_w;
      given += sizes[static_cast<std::size_t>(r)];
    }
    sizes[static_cast<std::size_t>(ranks) - 1] = n - given;
  }
  for (int r = 0; r < ranks; ++r)
    first[static_cast<std::size_t>(r) + 1] = first[static_cast<std::size_t>(r)] + sizes[static_cast<std::size_t>(r)];
  return first;
}

TensorDesc with_batch(const TensorDesc& d, std::int64_t n) {
  std::vector<std::int64_t> dims(d.dims().begin(), d.dims().end());
  dims[0] = n;
  return TensorDesc(d.dtype(), d.layout(), std::span<const std::int64_t>(dims));
}

// Values of the shard [n0, n0 + shard.batch()) of `whole`, compared with
// `got` (this rank's buffer).
::testing::AssertionResult shard_close(const Buffer& got, const Buffer& whole, std::int64_t n0, double tol,
                                       const std::string& what) {
  const std::int64_t per_sample = whole.desc.elements() / std::max<std::int64_t>(whole.desc.batch(), 1);
  std::vector<double> want(static_cast<std::size_t>(got.size()));
  for (std::int64_t i = 0; i < got.size(); ++i) want[static_cast<std::size_t>(i)] = whole.get(n0 * per_sample + i);
  return all_close(
      got.size(), [&](std::int64_t i) { return static_cast<double>(got.get(i)); }, want.data(),
      [&](double w) { return element_tolerance(got.desc.dtype(), w, tol * std::max(1.0, std::fabs(w))); }, what);
}

::testing::AssertionResult values_close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                                        const std::string& what) {
  std::vector<double> w(want.begin(), want.end());
  return all_close(
      static_cast<std::int64_t>(got.size()), [&](std::int64_t i) { return static_cast<double>(got[static_cast<std::size_t>(i)]); },
      w.data(), [&](double v) { return tol * std::max(1.0, std::fabs(v)); }, what);
}

struct Shape {
  DType dtype;
  Layout layout;
  std::vector<std::int64_t> dims;
};

void check_matches_whole_batch(const Shape& shape, Split how, double data_mean) {
  comm::Communicator& comm = world();
  const TensorDesc whole_desc(shape.dtype, shape.layout, std::span<const std::int64_t>(shape.dims));
  SCOPED_TRACE(whole_desc.str() + " split " + std::to_string(static_cast<int>(how)) + " mean " +
               std::to_string(data_mean) + " rank " + std::to_string(comm.rank()) + " of " +
               std::to_string(comm.size()));
  const auto C = static_cast<std::size_t>(whole_desc.channels());
  Buffer x(whole_desc), y(whole_desc), dy(whole_desc), dx(whole_desc);
  fill_normal(x, 7, data_mean, 1.5);
  fill_normal(dy, 8);
  const std::vector<float> gamma = uniform(C, 1, 0.5f, 1.5f), beta = uniform(C, 2, -1.0f, 1.0f);
  std::vector<float> mean(C), invstd(C), rm(C, 0.25f), rv(C, 2.0f), dg(C), db(C);
  std::int64_t tracked = 0;
  batch_norm_forward_training(whole_desc, x.data(), whole_desc, y.data(), gamma.data(), beta.data(), mean.data(),
                              invstd.data(), RunningStats{rm.data(), rv.data(), &tracked});
  batch_norm_backward(whole_desc, x.data(), whole_desc, dy.data(), whole_desc, dx.data(), gamma.data(), mean.data(),
                      invstd.data(), dg.data(), db.data());

  const auto first = split(whole_desc.batch(), comm.size(), how);
  const std::int64_t n0 = first[static_cast<std::size_t>(comm.rank())],
                     n1 = first[static_cast<std::size_t>(comm.rank()) + 1];
  const TensorDesc d = with_batch(whole_desc, n1 - n0);
  Buffer xs(d), ys(d), dys(d), dxs(d);
  const std::int64_t per_sample = whole_desc.elements() / whole_desc.batch();
  const std::size_t bytes = size_of(shape.dtype);
  std::copy_n(x.bytes.begin() + n0 * per_sample * static_cast<std::int64_t>(bytes), xs.bytes.size(), xs.bytes.begin());
  std::copy_n(dy.bytes.begin() + n0 * per_sample * static_cast<std::int64_t>(bytes), dys.bytes.size(),
              dys.bytes.begin());
  std::vector<float> smean(C), sinvstd(C), srm(C, 0.25f), srv(C, 2.0f), sdg(C), sdb(C);
  std::int64_t stracked = 0;
  sync_batch_norm_forward_training(comm, d, xs.data(), d, ys.data(), gamma.data(), beta.data(), smean.data(),
                                   sinvstd.data(), RunningStats{srm.data(), srv.data(), &stracked});
  sync_batch_norm_backward(comm, d, xs.data(), d, dys.data(), d, dxs.data(), gamma.data(), smean.data(),
                           sinvstd.data(), sdg.data(), sdb.data());
  EXPECT_TRUE(shard_close(ys, y, n0, 1e-5, "dst"));
  EXPECT_TRUE(shard_close(dxs, dx, n0, 1e-5, "diff_src"));
  EXPECT_TRUE(values_close(smean, mean, 1e-6, "save_mean"));
  EXPECT_TRUE(values_close(sinvstd, invstd, 1e-6, "save_invstd"));
  EXPECT_TRUE(values_close(srm, rm, 1e-6, "running_mean"));
  EXPECT_TRUE(values_close(srv, rv, 1e-6, "running_var"));
  EXPECT_EQ(stracked, tracked);
  // Parameter gradients are sums over the whole batch: f32 summation error.
  EXPECT_TRUE(values_close(sdg, dg, 1e-5, "diff_gamma"));
  EXPECT_TRUE(values_close(sdb, db, 1e-5, "diff_beta"));

  // Every rank holds the same statistics, bit for bit.
  std::vector<float> all(C * static_cast<std::size_t>(comm.size()));
  comm.allgather(smean.data(), C * sizeof(float), all.data());
  for (int r = 0; r < comm.size(); ++r)
    EXPECT_TRUE(std::equal(smean.begin(), smean.end(), all.begin() + static_cast<std::ptrdiff_t>(r * C)));
}

TEST(SyncBatchNorm, MatchesBatchNormOnTheWholeBatch) {
  const std::vector<Shape> shapes = {
      {DType::f32, Layout::channels_first, {9, 5, 7, 3}},   {DType::f32, Layout::channels_last, {9, 5, 7, 3}},
      {DType::f32, Layout::channels_first, {17, 12}},       {DType::bf16, Layout::channels_first, {8, 6, 33}},
      {DType::bf16, Layout::channels_last, {8, 6, 4, 5, 2}}, {DType::f16, Layout::channels_last, {10, 16, 6, 6}},
      {DType::f32, Layout::channels_last, {64, 40, 16, 16}}, {DType::f32, Layout::channels_first, {32, 64, 28, 28}},
  };
  for (const Shape& s : shapes)
    for (Split how : {Split::even, Split::uneven, Split::one_empty})
      for (double data_mean : {0.0, 1e4}) check_matches_whole_batch(s, how, data_mean);
}

TEST(SyncBatchNorm, LayerMatchesBatchNorm) {
  comm::Communicator& comm = world();
  const TensorDesc whole(DType::f32, Layout::channels_last, {12, 4, 5, 5});
  const auto first = split(whole.batch(), comm.size(), Split::uneven);
  const std::int64_t n0 = first[static_cast<std::size_t>(comm.rank())],
                     n1 = first[static_cast<std::size_t>(comm.rank()) + 1];
  const TensorDesc d = with_batch(whole, n1 - n0);
  BatchNorm ref({.num_features = 4});
  SyncBatchNorm sync({.num_features = 4}, comm);
  for (std::size_t c = 0; c < 4; ++c) ref.weight()[c] = sync.weight()[c] = 1.0f + 0.25f * static_cast<float>(c);
  const std::int64_t per_sample = whole.elements() / whole.batch();
  for (int step = 0; step < 3; ++step) {
    Buffer x(whole), y(whole), dy(whole), dx(whole), xs(d), ys(d), dys(d), dxs(d);
    fill_normal(x, 20 + static_cast<std::uint64_t>(step), 0.5, 2.0);
    fill_normal(dy, 30 + static_cast<std::uint64_t>(step));
    std::copy_n(x.bytes.begin() + n0 * per_sample * 4, xs.bytes.size(), xs.bytes.begin());
    std::copy_n(dy.bytes.begin() + n0 * per_sample * 4, dys.bytes.size(), dys.bytes.begin());
    ref.forward(whole, x.data(), whole, y.data());
    ref.backward(whole, x.data(), whole, dy.data(), whole, dx.data());
    sync.forward(d, xs.data(), d, ys.data());
    sync.backward(d, xs.data(), d, dys.data(), d, dxs.data());
    EXPECT_TRUE(shard_close(ys, y, n0, 1e-5, "dst"));
    EXPECT_TRUE(shard_close(dxs, dx, n0, 1e-5, "diff_src"));
    const std::vector<float> wg(sync.weight_grad().begin(), sync.weight_grad().end()),
        rwg(ref.weight_grad().begin(), ref.weight_grad().end());
    EXPECT_TRUE(values_close(wg, rwg, 1e-5, "weight_grad"));
  }
  EXPECT_EQ(sync.num_batches_tracked(), 3);
  const std::vector<float> rv(sync.running_var().begin(), sync.running_var().end()),
      rrv(ref.running_var().begin(), ref.running_var().end());
  EXPECT_TRUE(values_close(rv, rrv, 1e-6, "running_var"));
  // Eval: the running statistics, no communication (ranks may differ in
  // how often they call it).
  sync.eval();
  ref.eval();
  Buffer x(whole), y(whole), xs(d), ys(d);
  fill_normal(x, 40);
  std::copy_n(x.bytes.begin() + n0 * per_sample * 4, xs.bytes.size(), xs.bytes.begin());
  ref.forward(whole, x.data(), whole, y.data());
  if (comm.rank() == 0) sync.forward(d, xs.data(), d, ys.data());  // a local call
  sync.forward(d, xs.data(), d, ys.data());
  EXPECT_TRUE(shard_close(ys, y, n0, 1e-6, "eval dst"));
}

// Eval without running statistics is local, as in PyTorch (need_sync =
// bn_training and self.training): each rank normalizes with its own batch
// statistics, and backward is local too. Only rank 0 calls them a second
// time: a collective would hang the test until its timeout.
TEST(SyncBatchNorm, EvalWithoutRunningStatsIsLocal) {
  comm::Communicator& comm = world();
  const TensorDesc d(DType::f32, Layout::channels_first, {2 + comm.rank(), 3, 4});
  BatchNorm ref({.num_features = 3, .track_running_stats = false});
  SyncBatchNorm sync({.num_features = 3, .track_running_stats = false}, comm);
  {
    // Before any forward, the error names this class (it named BatchNorm).
    Buffer x0(d), dx0(d);
    try {
      sync.backward(d, x0.data(), d, x0.data(), d, dx0.data());
      ADD_FAILURE() << "backward before any forward";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("SyncBatchNorm::backward called before any forward"),
                std::string::npos)
          << e.what();
    }
  }
  for (std::size_t c = 0; c < 3; ++c) ref.weight()[c] = sync.weight()[c] = 0.5f + static_cast<float>(c);
  ref.eval();
  sync.eval();
  Buffer x(d), dy(d), y(d), dx(d), ys(d), dxs(d);
  fill_normal(x, 50 + static_cast<std::uint64_t>(comm.rank()), 3.0, 2.0);
  fill_normal(dy, 60 + static_cast<std::uint64_t>(comm.rank()));
  ref.forward(d, x.data(), d, y.data());
  ref.backward(d, x.data(), d, dy.data(), d, dx.data());
  for (int call = 0; call < (comm.rank() == 0 ? 2 : 1); ++call) {
    sync.forward(d, x.data(), d, ys.data());
    sync.backward(d, x.data(), d, dy.data(), d, dxs.data());
  }
  EXPECT_EQ(ys.bytes, y.bytes) << "eval dst: this rank's batch statistics";
  EXPECT_EQ(dxs.bytes, dx.bytes) << "eval diff_src: local backward";
  EXPECT_TRUE(std::equal(sync.weight_grad().begin(), sync.weight_grad().end(), ref.weight_grad().begin()))
      << "eval weight_grad: this rank's own sums";
}

// A mismatch is an error on every rank (all ranks reach this line; a hang
// would time the test out).
void expect_everywhere(const std::function<void()>& call, const std::string& word) {
  try {
    call();
    ADD_FAILURE() << "no error on rank " << world().rank() << " (expected '" << word << "')";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument) << e.what();
    EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
  }
}

TEST(SyncBatchNorm, MismatchesFailOnEveryRank) {
  comm::Communicator& comm = world();
  const int rank = comm.rank();
  std::vector<float> g(8, 1.0f), b(8, 0.0f), m(8), s(8, 1.0f);
  {
    // Channels differ on the last rank.
    const std::int64_t C = comm.size() > 1 && rank == comm.size() - 1 ? 7 : 8;
    const TensorDesc d(DType::f32, Layout::channels_first, {2, C, 3});
    Buffer x(d), y(d);
    fill_normal(x, 1);
    if (comm.size() > 1)
      expect_everywhere([&] { sync_batch_norm_forward_training(comm, d, x.data(), d, y.data(), g.data(), b.data(), m.data(), s.data()); },
                        "every process must pass the same channels");
  }
  {
    // dtype differs on rank 0.
    const TensorDesc d(comm.size() > 1 && rank == 0 ? DType::bf16 : DType::f32, Layout::channels_first, {2, 8, 3});
    Buffer x(d), y(d);
    fill_normal(x, 2);
    if (comm.size() > 1)
      expect_everywhere([&] { sync_batch_norm_forward_training(comm, d, x.data(), d, y.data(), g.data(), b.data(), m.data(), s.data()); },
                        "every process must pass the same dtype");
  }
  {
    // Rank 0 in forward, the others in backward.
    const TensorDesc d(DType::f32, Layout::channels_last, {2, 8, 3});
    Buffer x(d), y(d), dy(d), dx(d);
    fill_normal(x, 3);
    if (comm.size() > 1)
      expect_everywhere(
          [&] {
            if (rank == 0)
              sync_batch_norm_forward_training(comm, d, x.data(), d, y.data(), g.data(), b.data(), m.data(), s.data());
            else
              sync_batch_norm_backward(comm, d, x.data(), d, dy.data(), d, dx.data(), g.data(), m.data(), s.data(),
                                       nullptr, nullptr);
          },
          "same collective calls in the same order");
  }
  {
    // One value per channel in the whole batch: refused on every rank,
    // outputs untouched.
    const TensorDesc d(DType::f32, Layout::channels_first, {rank == 0 ? 1 : 0, 8});
    Buffer x(d), y(d);
    fill_normal(x, 4);
    std::vector<float> rm(8, 0.5f), rv(8, 2.0f);
    expect_everywhere(
        [&] {
          sync_batch_norm_forward_training(comm, d, x.data(), d, y.data(), g.data(), b.data(), m.data(),
                                           s.data(), {rm.data(), rv.data(), nullptr});
        },
        "'src_desc' has dims " + d.dims_str() + "): expected more than 1");
    EXPECT_EQ(rm, std::vector<float>(8, 0.5f));
  }
  // Still in step afterwards: a normal call works on every rank.
  const TensorDesc d(DType::f32, Layout::channels_first, {3, 8, 2});
  Buffer x(d), y(d);
  fill_normal(x, 5);
  EXPECT_NO_THROW(sync_batch_norm_forward_training(comm, d, x.data(), d, y.data(), g.data(), b.data(), m.data(), s.data()));
}

// One process's own arguments refused (a null pointer to the function, a C
// other than num_features to the layer): that process throws its error,
// every other one invalid_argument naming it; none waits in a collective.
TEST(SyncBatchNorm, OneProcessRefusedFailsEveryRank) {
  comm::Communicator& comm = world();
  if (comm.size() < 2) GTEST_SKIP() << "needs 2 or more processes";
  const int rank = comm.rank();
  const bool odd_one = rank == comm.size() - 1;
  auto expect = [&](const std::function<void()>& call, ErrorKind own, const std::string& own_word) {
    try {
      call();
      ADD_FAILURE() << "no error on rank " << rank;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), odd_one ? own : ErrorKind::invalid_argument) << e.what();
      const std::string word =
          odd_one ? own_word : "rank " + std::to_string(comm.size() - 1) + " refused its arguments";
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  };
  std::vector<float> g(4, 1.0f), b(4, 0.0f), m(4), s(4, 1.0f);
  const TensorDesc d(DType::f32, Layout::channels_first, {2, 4, 3});
  Buffer x(d), y(d), dy(d), dx(d);
  fill_normal(x, 6);
  fill_normal(dy, 7);
  expect(
      [&] {
        sync_batch_norm_forward_training(comm, d, odd_one ? nullptr : x.data(), d, y.data(), g.data(),
                                         b.data(), m.data(), s.data());
      },
      ErrorKind::null_pointer, "'src'");
  expect(
      [&] {
        sync_batch_norm_backward(comm, d, x.data(), d, dy.data(), d, dx.data(), g.data(),
                                 odd_one ? nullptr : m.data(), s.data(), nullptr, nullptr);
      },
      ErrorKind::null_pointer, "'mean'");
  SyncBatchNorm layer({.num_features = 4}, comm);
  const TensorDesc d3(DType::f32, Layout::channels_first, {2, 3, 3});
  Buffer x3(d3), y3(d3);
  fill_normal(x3, 8);
  expect(
      [&] {
        odd_one ? layer.forward(d3, x3.data(), d3, y3.data()) : layer.forward(d, x.data(), d, y.data());
      },
      ErrorKind::shape_mismatch, "num_features = 4");
  // In step afterwards: a forward and backward on every rank work.
  EXPECT_NO_THROW(layer.forward(d, x.data(), d, y.data()));
  expect(
      [&] {
        odd_one ? layer.backward(d3, x3.data(), d3, x3.data(), d3, y3.data())
                : layer.backward(d, x.data(), d, dy.data(), d, dx.data());
      },
      ErrorKind::shape_mismatch, "the last forward had 2x4x3");
  EXPECT_NO_THROW(layer.backward(d, x.data(), d, dy.data(), d, dx.data()));
}

// Last (it leaves MPI's message stream in an unknown state): an MPI error
// comes back as a bnorm runtime error naming the rank. Two processes whose
// allgather sizes differ: rank 0's receive is truncated.
TEST(SyncBatchNormZLast, MpiErrorsNameTheRank) {
  comm::Communicator& comm = world();
  if (comm.size() != 2) GTEST_SKIP() << "needs exactly 2 processes";
  std::vector<char> send(16), recv(64);
  if (comm.rank() == 0) {
    try {
      comm.allgather(send.data(), 8, recv.data());
      ADD_FAILURE() << "no error on rank 0";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::runtime) << e.what();
      EXPECT_NE(std::string(e.what()).find("MPI rank 0 of 2"), std::string::npos) << e.what();
    }
  } else {
    EXPECT_NO_THROW(comm.allgather(send.data(), 16, recv.data()));  // more room than sent: no error here
  }
}

}  // namespace
}  // namespace bnorm::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  bnorm::comm::Communicator& comm = bnorm::comm::world();
  // Two cores: with several ranks, one thread each.
  if (comm.size() > 1) bnorm::set_num_threads(1);
  return RUN_ALL_TESTS();
}

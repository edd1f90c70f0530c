// bnorm-sync-bench: what SyncBatchNorm's collectives cost. Run under
// `mpirun -np 2` (one thread per process): per case, interleaved repetition
// by repetition, local batch norm and SyncBatchNorm on the same per-process
// shape, and the bare allgathers SyncBatchNorm makes (the call header, then
// the moments or the gradient sums). Rank 0 prints medians; every process
// times the same calls, each started in step with the others. At most 64
// processes.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <sstream>
#include <vector>

#include "bnorm/bnorm.hpp"
#include "bnorm/comm_world.hpp"

namespace {

using bnorm::DType;
using bnorm::Layout;
using bnorm::TensorDesc;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

template <class F>
double time_ms(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<std::int64_t> parse_dims(const std::string& s) {
  std::vector<std::int64_t> dims;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, 'x')) dims.push_back(std::stoll(part));
  return dims;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bnorm-sync-bench: SyncBatchNorm against local batch norm, under mpirun"};
  std::vector<std::string> shapes = {"32x64x56x56", "64x256x14x14", "128x512x7x7", "8x2048", "2x64x7x7"};
  std::vector<std::string> layouts = {"channels_first", "channels_last"};
  int reps = 21;
  app.add_option("--shapes", shapes, "Per-process shapes")->delimiter(',');
  app.add_option("--layouts", layouts, "channels_first, channels_last")->delimiter(',');
  app.add_option("--reps", reps, "Timed repetitions");
  CLI11_PARSE(app, argc, argv);

  bnorm::comm::Communicator& comm = bnorm::comm::world();
  bnorm::set_num_threads(1);
  const bool lead = comm.rank() == 0;
  if (lead) {
    std::printf("bnorm-sync-bench: %d processes x 1 thread, f32, medians of %d interleaved repetitions\n",
                comm.size(), reps);
    std::printf("%-17s %-14s %-15s %9s %9s %9s %9s %9s\n", "direction", "layout", "shape/rank", "local_ms",
                "sync_ms", "sync/loc", "coll_ms", "coll/sync");
  }
  for (const auto& shape : shapes) {
    for (const auto& layout : layouts) {
      const auto dims = parse_dims(shape);
      const TensorDesc d(DType::f32, layout == "channels_last" ? Layout::channels_last : Layout::channels_first,
                         std::span<const std::int64_t>(dims));
      const auto C = static_cast<std::size_t>(d.channels());
      std::vector<float> x(static_cast<std::size_t>(d.elements())), y(x.size()), dy(x.size()), dx(x.size());
      for (std::size_t i = 0; i < x.size(); ++i) {
        x[i] = static_cast<float>((i * 2654435761u) % 1000) * 1e-3f;
        dy[i] = static_cast<float>((i * 40503u) % 1000) * 1e-3f - 0.5f;
      }
      std::vector<float> gamma(C, 1.0f), beta(C, 0.0f), mean(C), invstd(C), rm(C, 0.0f), rv(C, 1.0f), dg(C), db(C);
      const bnorm::RunningStats running{rm.data(), rv.data(), nullptr};
      // The bare collectives of one call: a 32-byte header, then 1 + 2C
      // doubles (forward's moments; backward's sums and count).
      std::vector<char> header(32), headers(32 * static_cast<std::size_t>(comm.size()));
      std::vector<double> record(1 + 2 * C), records(record.size() * static_cast<std::size_t>(comm.size()));
      auto collectives = [&] {
        comm.allgather(header.data(), header.size(), headers.data());
        comm.allgather(record.data(), record.size() * sizeof(double), records.data());
      };
      auto local_fwd = [&] {
        bnorm::batch_norm_forward_training(d, x.data(), d, y.data(), gamma.data(), beta.data(), mean.data(),
                                           invstd.data(), running);
      };
      auto sync_fwd = [&] {
        bnorm::sync_batch_norm_forward_training(comm, d, x.data(), d, y.data(), gamma.data(), beta.data(),
                                                mean.data(), invstd.data(), running);
      };
      auto local_bwd = [&] {
        bnorm::batch_norm_backward(d, x.data(), d, dy.data(), d, dx.data(), gamma.data(), mean.data(),
                                   invstd.data(), dg.data(), db.data());
      };
      auto sync_bwd = [&] {
        bnorm::sync_batch_norm_backward(comm, d, x.data(), d, dy.data(), d, dx.data(), gamma.data(), mean.data(),
                                        invstd.data(), dg.data(), db.data());
      };
      // Every timed call starts with the processes in step (else a sync
      // call's time would include waiting for the other process to finish
      // its previous, independent call).
      char one = 0, ones[64] = {};
      auto timed = [&](const std::function<void()>& f) {
        comm.allgather(&one, 1, ones);
        return time_ms(f);
      };
      for (int dir = 0; dir < 2; ++dir) {
        std::vector<double> tl, ts, tc;
        for (int rep = -2; rep < reps; ++rep) {  // two warm-up rounds
          const double a = timed(dir == 0 ? std::function<void()>(local_fwd) : std::function<void()>(local_bwd));
          const double b = timed(dir == 0 ? std::function<void()>(sync_fwd) : std::function<void()>(sync_bwd));
          const double c = timed(collectives);
          if (rep < 0) continue;
          tl.push_back(a);
          ts.push_back(b);
          tc.push_back(c);
        }
        if (lead) {
          const double l = median(tl), s = median(ts), c = median(tc);
          std::printf("%-17s %-14s %-15s %9.3f %9.3f %9.2f %9.3f %9.2f\n", dir == 0 ? "forward_training" : "backward",
                      layout.c_str(), shape.c_str(), l, s, s / l, c, c / s);
          std::fflush(stdout);
        }
      }
    }
  }
  return 0;
}

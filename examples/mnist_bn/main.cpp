// bnorm-mnist-bn: Ioffe & Szegedy's first BatchNorm experiment (2015,
// section 4.1: a 784-100-100-100-10 sigmoid network, mini-batches of 60,
// with and without BN) on Fashion-MNIST, at several learning rates. See
// README.md next to this file.
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <exception>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bnorm/runtime.hpp"
#include "bnorm/comm_world.hpp"
#include "idx.hpp"
#include "mlp.hpp"
#include "report.hpp"
#include "sync_norm.hpp"
#include "train.hpp"

namespace {

using namespace mnist_bn;

std::string machine_description() {
  std::string model = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  return model + ", " + std::to_string(std::thread::hardware_concurrency()) + " logical CPUs";
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
  return buf;
}

std::string command_line(int argc, char** argv) {
  std::string s;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.find_first_of(" \t'\"") != std::string::npos) a = "'" + a + "'";
    s += (i ? " " : "") + a;
  }
  return s;
}

int run(int argc, char** argv, bnorm::comm::Communicator& comm) {
  CLI::App app{"Ioffe & Szegedy's MNIST BatchNorm experiment on Fashion-MNIST, with bnorm"};
  std::string data_dir = "/usr/share/datasets/fashion-mnist", out_dir = "mnist_bn_out", log_loss;
  // The four rates of the issue, and two larger ones to find where each
  // variant stops learning.
  std::vector<double> lrs{0.01, 0.1, 0.5, 2.0, 8.0, 32.0}, targets{0.80, 0.85};
  std::vector<std::string> variants{"bn", "plain"}, activations{"sigmoid"};
  RunSpec base;
  base.steps = 20000;
  base.eval_every = 100;
  base.eval_rows = 2000;
  int threads = 0;
  bool quiet = false;
  app.add_option("--data", data_dir, "directory with the Fashion-MNIST IDX .gz files")->capture_default_str();
  app.add_option("--out", out_dir, "directory for curves.csv, summary.csv, summary.md, training_curves.svg")
      ->capture_default_str();
  app.add_option("--steps", base.steps, "SGD steps per run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--lr", lrs, "learning rates (comma-separated)")->delimiter(',')->capture_default_str();
  app.add_option("--variants", variants, "bn and/or plain")
      ->delimiter(',')
      ->check(CLI::IsMember({"bn", "plain"}))
      ->capture_default_str();
  app.add_option("--activation", activations, "sigmoid and/or relu")
      ->delimiter(',')
      ->check(CLI::IsMember({"sigmoid", "relu"}))
      ->capture_default_str();
  app.add_option("--seed", base.seed, "seed of the weights and the data order")->capture_default_str();
  app.add_option("--batch", base.batch, "global mini-batch size")
      ->check(CLI::Range(2, 60000))
      ->capture_default_str();
  app.add_option("--eval-every", base.eval_every, "evaluate test accuracy every N steps")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--eval-rows", base.eval_rows, "test images in the periodic evaluations (0 = all 10000)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--targets", targets, "test accuracies for the steps-to-target columns")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--threads", threads,
                 "runs trained at once, one per thread (default: cores; 1 under mpirun)");
  app.add_option("--log-loss", log_loss, "also write every step's mini-batch loss to this CSV file");
  app.add_flag("--quiet", quiet, "no progress lines");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return comm.rank() == 0 ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 2);
  }
  for (double lr : lrs)
    if (!(lr > 0)) throw CLI::ValidationError("--lr", "learning rates must be positive");
  const bool lead = comm.rank() == 0;
  const bool parallel_runs = comm.size() == 1;
  if (threads <= 0) threads = parallel_runs ? static_cast<int>(std::thread::hardware_concurrency()) : 1;
  if (threads < 1) threads = 1;

  // The output directory first: an unwritable place fails before training.
  if (lead) {
    struct stat st {};
    if (::mkdir(out_dir.c_str(), 0777) != 0 && (::stat(out_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)))
      throw std::runtime_error(out_dir + ": cannot create the output directory");
  }

  const auto start = std::chrono::steady_clock::now();
  const Dataset train = load_dataset(data_dir, "train");
  const Dataset test = load_dataset(data_dir, "t10k");
  const TestSubset subset = make_test_subset(test, base.eval_rows);

  std::vector<RunSpec> specs;
  for (const auto& a : activations)
    for (const auto& v : variants)
      for (double lr : lrs) {
        RunSpec s = base;
        s.activation = a == "relu" ? Activation::relu : Activation::sigmoid;
        s.batch_norm = v == "bn";
        s.lr = lr;
        specs.push_back(s);
      }
  if (lead && !quiet)
    std::printf(
        "%zu runs x %lld steps, batch %lld, %d process(es), %d run(s) at a time; %lld train / %lld test "
        "images, evaluating on %lld every %lld steps\n",
        specs.size(), static_cast<long long>(base.steps), static_cast<long long>(base.batch), comm.size(),
        parallel_runs ? threads : 1, static_cast<long long>(train.count), static_cast<long long>(test.count),
        static_cast<long long>(subset.rows), static_cast<long long>(base.eval_every));
  std::fflush(stdout);

  NormFactory make_norm = make_batch_norm;
  if (comm.size() > 1) make_norm = [&comm](std::int64_t c) { return make_sync_batch_norm(c, comm); };

  std::vector<RunResult> results(specs.size());
  std::mutex print_mutex;
  auto progress = [&](const RunResult& r) {
    if (quiet || !lead) return;
    const EvalPoint& p = r.curve.back();
    std::lock_guard lock(print_mutex);
    std::printf("%-22s step %6lld  train loss %8.4f  test acc %6.2f%%\n", r.spec.name().c_str(),
                static_cast<long long>(p.step), p.train_loss, p.test_accuracy * 100);
    std::fflush(stdout);
  };
  if (parallel_runs && threads > 1) {
    // Whole runs in parallel, each on one thread: 60-row products are too
    // small to split, and the runs are independent. BN's own team is one
    // thread here, and its results never depend on the team size.
    bnorm::set_num_threads(1);
    std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (std::size_t i = 0; i < specs.size(); ++i) {
      try {
        results[i] = train_run(specs[i], train, test, subset, comm, make_norm, progress);
      } catch (...) {
#pragma omp critical
        failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
  } else {
    if (comm.size() > 1) bnorm::set_num_threads(threads);
    for (std::size_t i = 0; i < specs.size(); ++i)
      results[i] = train_run(specs[i], train, test, subset, comm, make_norm, progress);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!lead) return 0;

  if (!log_loss.empty()) write_file(log_loss, step_loss_csv(results));
  RunContext ctx;
  ctx.command = command_line(argc, argv);
  if (comm.size() > 1) ctx.command = "mpirun -np " + std::to_string(comm.size()) + " " + ctx.command;
  ctx.machine = machine_description();
  ctx.date = utc_now();
  ctx.seconds = seconds;
  ctx.threads = parallel_runs ? threads : 1;
  ctx.processes = comm.size();
  ctx.eval_rows = subset.rows;
  write_file(out_dir + "/curves.csv", curves_csv(results));
  write_file(out_dir + "/summary.csv", summary_csv(results, targets));
  const std::string md = summary_markdown(results, targets, ctx);
  write_file(out_dir + "/summary.md", md);
  write_file(out_dir + "/training_curves.svg", curves_svg(results, targets, subset.rows));
  if (!quiet)
    std::printf("\n%s\nwrote %s/{curves.csv,summary.csv,summary.md,training_curves.svg}\n", md.c_str(),
                out_dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bnorm::comm::Communicator* comm = nullptr;
  try {
    comm = &bnorm::comm::world();
    return run(argc, argv, *comm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bnorm-mnist-bn: error%s: %s\n",
                 comm && comm->size() > 1 ? (" on rank " + std::to_string(comm->rank())).c_str() : "",
                 e.what());
    // Other ranks may be waiting in a collective: stop them all.
    if (comm && comm->size() > 1) comm->abort(1);
    return 1;
  }
}

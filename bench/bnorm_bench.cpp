// bnorm-bench: the side-by-side benchmark. For each case it runs, in one
// process and interleaved repetition by repetition, the roofline (streaming
// y = a*x + b over the same bytes), bnorm, oneDNN and ATen (and for the fused
// BN ops bnorm's plain BN and BN + separate add / ReLU passes), and reports
// medians and the ratios bnorm/roofline and peer/bnorm. Nothing asserts a
// time; docs/PERFORMANCE.md records full runs.

#include <malloc.h>
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "peers.hpp"

namespace bnorm::bench {

void set_aten_threads(int threads);

// One line naming the machine, so that a run's figures say where they come
// from: the CPU's model name, the number of CPUs, and CPU 0's data and
// unified caches as the kernel lists them (sysconf's L3 can be wrong in a
// VM: 384 MiB for a 32 MiB one here).
std::string machine_line() {
  auto first_line = [](const std::string& path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
  };
  // The first processor's "model name", "cpu family" and "model" (a VM may
  // show only a vendor's name, e.g. "AMD EPYC"; family and model say more).
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, name = "unknown CPU", family, model;
  while (std::getline(cpuinfo, line) && !line.empty()) {
    const auto colon = line.find(':');
    if (colon == std::string::npos || colon + 2 > line.size()) continue;
    const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1),
                      value = line.substr(colon + 2);
    if (key == "model name") name = value;
    if (key == "cpu family") family = value;
    if (key == "model") model = value;
  }
  std::string out = name;
  if (!family.empty()) out += " (family " + family + ", model " + model + ")";
  out += ", " + std::to_string(std::thread::hardware_concurrency()) + " CPUs";
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    const std::string level = first_line(dir + "level"), type = first_line(dir + "type");
    if (level.empty()) break;
    if (type == "Instruction") continue;
    out += ", L" + level + (type == "Data" ? "d " : " ") + first_line(dir + "size") + " (CPUs " +
           first_line(dir + "shared_cpu_list") + ")";
  }
  return out;
}

const char* to_string(Direction d) {
  switch (d) {
    case Direction::forward_training:
      return "forward_training";
    case Direction::forward_inference:
      return "forward_inference";
    case Direction::backward:
      return "backward";
  }
  return "?";
}

const char* to_string(Op op) {
  switch (op) {
    case Op::batch_norm:
      return "batch_norm";
    case Op::bn_relu:
      return "bn_relu";
    case Op::bn_add_relu:
      return "bn_add_relu";
    case Op::layer_norm:
      return "layer_norm";
    case Op::rms_norm:
      return "rms_norm";
    case Op::group_norm:
      return "group_norm";
    case Op::instance_norm:
      return "instance_norm";
  }
  return "?";
}

void set_all_threads(int threads) {
  omp_set_num_threads(threads);
  bnorm::set_num_threads(threads);
  set_aten_threads(threads);
}

namespace {

struct Aligned {
  void* p = nullptr;
  explicit Aligned(std::size_t bytes) : p(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096)) {
    if (!p) throw std::bad_alloc();
  }
  ~Aligned() { std::free(p); }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
};

// Deterministic data, written in parallel (first touch by the threads that
// will use it). Values ~ N(0.5, 1)-ish: the sum of four uniforms.
void fill(void* p, const TensorDesc& d, std::uint64_t seed) {
  const std::int64_t n = d.elements();
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint64_t h = (static_cast<std::uint64_t>(i) + seed) * 0x9E3779B97F4A7C15ull;
    float sum = 0.0f;
    for (int k = 0; k < 4; ++k) {
      h ^= h >> 29;
      h *= 0xBF58476D1CE4E5B9ull;
      sum += static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
    }
    const float v = (sum - 2.0f) * 1.7320508f + 0.5f;
    if (d.dtype() == DType::f32) {
      static_cast<float*>(p)[i] = v;
    } else {
      static_cast<std::uint16_t*>(p)[i] = d.dtype() == DType::bf16 ? bf16_from_float(v) : f16_from_float(v);
    }
  }
}

std::vector<std::int64_t> parse_dims(const std::string& s) {
  std::vector<std::int64_t> dims;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, 'x')) dims.push_back(std::stoll(part));
  if (dims.size() < 2 || dims.size() > 5) throw CLI::ValidationError("--shapes", "bad shape '" + s + "'");
  return dims;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

struct Result {
  std::string impl, detail, skipped;
  double median_ms = 0.0, min_ms = 0.0;
};

constexpr Op kOps[] = {Op::batch_norm, Op::bn_relu,    Op::bn_add_relu,  Op::layer_norm,
                       Op::rms_norm,   Op::group_norm, Op::instance_norm};
constexpr const char* kImpls[] = {"roofline", "bnorm", "onednn", "aten", "plain", "unfused"};

struct Options {
  std::vector<std::string> ops, shapes, dtypes, layouts, directions, impls;
  std::int64_t groups = 32;
  std::vector<int> threads;
  int reps = 0;
  bool quick = false, json = false, bandwidth = false, patterns = false;
  std::string isa;
};

std::vector<Result> measure(const Case& c, const Options& o) {
  const std::size_t bytes = c.desc.bytes();
  const std::size_t residual_bytes = c.op == Op::bn_add_relu ? bytes : 0;
  Aligned src(bytes), dst(bytes), diff_dst(bytes), diff_src(bytes), residual(residual_bytes),
      diff_residual(residual_bytes);
  fill(src.p, c.desc, 1);
  fill(diff_dst.p, c.desc, 2);
  std::memset(dst.p, 0, bytes);
  std::memset(diff_src.p, 0, bytes);
  if (residual_bytes) {
    fill(residual.p, c.desc, 3);
    std::memset(diff_residual.p, 0, bytes);
  }
  Buffers b;
  b.src = src.p;
  b.dst = dst.p;
  b.diff_dst = diff_dst.p;
  b.diff_src = diff_src.p;
  b.residual = residual.p;
  b.diff_residual = diff_residual.p;
  // Per-channel or per-row-element parameters; statistics per channel, per
  // row, or per (sample, channel).
  const std::int64_t C = c.desc.channels(), N = c.desc.batch(), rows = c.desc.elements() / std::max<std::int64_t>(c.row(), 1);
  const auto P = static_cast<std::size_t>(std::max(C, c.row()));
  const auto S = static_cast<std::size_t>(std::max({C, rows, N * C}));
  fill_parameters(b, P, S, static_cast<std::size_t>(C));

  std::vector<std::unique_ptr<Impl>> impls;
  std::vector<Result> results;
  for (const std::string& name : o.impls) {
    std::unique_ptr<Impl> impl = name == "roofline" ? make_roofline()
                                 : name == "bnorm"  ? make_bnorm()
                                 : name == "onednn" ? make_onednn()
                                 : name == "aten"   ? make_aten()
                                 : name == "plain"  ? make_plain()
                                                    : make_unfused();
    Result r;
    r.impl = name;
    std::string why;
    bool ok = false;
    try {
      ok = impl->setup(c, b, &why);
      if (ok) impl->run();  // a first call proves the implementation runs this case
    } catch (const std::exception& e) {
      ok = false;
      why = std::string("failed: ") + e.what();
      why = why.substr(0, why.find('\n'));
    }
    if (ok) {
      r.detail = impl->detail();
      impls.push_back(std::move(impl));
    } else {
      r.skipped = why;
      impls.push_back(nullptr);
    }
    results.push_back(r);
  }
  // Warm up, then interleave: one call of each implementation per round, so
  // drifts in machine speed hit all of them alike.
  for (auto& impl : impls)
    if (impl)
      for (int i = 0; i < 2; ++i) impl->run();
  std::vector<std::vector<double>> times(impls.size());
  for (int rep = 0; rep < o.reps; ++rep) {
    for (std::size_t k = 0; k < impls.size(); ++k) {
      if (!impls[k]) continue;
      const auto t0 = std::chrono::steady_clock::now();
      impls[k]->run();
      const auto t1 = std::chrono::steady_clock::now();
      times[k].push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  }
  for (std::size_t k = 0; k < impls.size(); ++k) {
    if (!impls[k]) continue;
    results[k].median_ms = median(times[k]);
    results[k].min_ms = *std::min_element(times[k].begin(), times[k].end());
  }
  return results;
}

const Result* find(const std::vector<Result>& rs, const char* impl) {
  for (const auto& r : rs)
    if (r.impl == impl && r.skipped.empty()) return &r;
  return nullptr;
}

std::string ratio(const Result* num, const Result* den) {
  if (!num || !den || den->median_ms <= 0.0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", num->median_ms / den->median_ms);
  return buf;
}

std::string ms(const Result* r) {
  if (!r) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", r->median_ms);
  return buf;
}

void print_json(const Case& c, const std::vector<Result>& rs) {
  for (const auto& r : rs) {
    std::printf(
        "{\"op\":\"%s\",\"direction\":\"%s\",\"dtype\":\"%s\",\"layout\":\"%s\",\"shape\":\"%s\","
        "\"threads\":%d,\"impl\":\"%s\",",
        to_string(c.op), to_string(c.direction), std::string(bnorm::to_string(c.desc.dtype())).c_str(),
        std::string(bnorm::to_string(c.desc.layout())).c_str(), c.desc.dims_str().c_str(), c.threads,
        r.impl.c_str());
    if (r.skipped.empty()) {
      std::printf("\"median_ms\":%.6f,\"min_ms\":%.6f,\"isa\":\"%s\"", r.median_ms, r.min_ms,
                  bnorm::isa().c_str());
      if (!r.detail.empty()) std::printf(",\"detail\":\"%s\"", r.detail.c_str());
    } else {
      std::printf("\"median_ms\":null,\"skipped\":\"%s\"", r.skipped.c_str());
    }
    std::printf("}\n");
  }
  std::fflush(stdout);
}

// Batch norm keeps its table (docs/PERFORMANCE.md's generator reads it);
// the other ops get one with the op's name and the fused ops' baselines:
// bn/plain = fused / plain BN, unf/bn = BN + separate passes / fused.
void print_op_header() {
  std::printf("%-13s %-17s %-5s %-14s %-15s %3s %9s %9s %9s %9s %9s %9s %8s %8s %8s %8s %8s\n", "op",
              "direction", "dtype", "layout", "shape", "thr", "roof_ms", "bnorm_ms", "onednn_ms", "aten_ms",
              "plain_ms", "unfus_ms", "bn/roof", "dnnl/bn", "aten/bn", "bn/plain", "unf/bn");
}

void print_op_row(const Case& c, const std::vector<Result>& rs) {
  const Result *roof = find(rs, "roofline"), *bn = find(rs, "bnorm"), *dnnl = find(rs, "onednn"),
               *aten = find(rs, "aten"), *plain = find(rs, "plain"), *unf = find(rs, "unfused");
  std::printf("%-13s %-17s %-5s %-14s %-15s %3d %9s %9s %9s %9s %9s %9s %8s %8s %8s %8s %8s\n", to_string(c.op),
              to_string(c.direction), std::string(bnorm::to_string(c.desc.dtype())).c_str(),
              std::string(bnorm::to_string(c.desc.layout())).c_str(), c.desc.dims_str().c_str(), c.threads,
              ms(roof).c_str(), ms(bn).c_str(), ms(dnnl).c_str(), ms(aten).c_str(), ms(plain).c_str(),
              ms(unf).c_str(), ratio(bn, roof).c_str(), ratio(dnnl, bn).c_str(), ratio(aten, bn).c_str(),
              ratio(bn, plain).c_str(), ratio(unf, bn).c_str());
  std::fflush(stdout);
}

std::optional<Op> parse_op(const std::string& s) {
  for (Op op : kOps)
    if (s == to_string(op)) return op;
  return std::nullopt;
}

// Default shapes per op: the issues' benchmark shapes.
std::vector<std::string> default_shapes(Op op, bool quick) {
  switch (op) {
    case Op::batch_norm:
      return quick ? std::vector<std::string>{"32x64x56x56", "2x64x7x7"}
                   : std::vector<std::string>{"32x64x56x56", "64x256x56x56", "256x1024x14x14", "128x512x7x7",
                                              "1x64x1x1",    "2x64x7x7",     "8x2048"};
    case Op::layer_norm:
    case Op::rms_norm:
      return {quick ? "512x4096" : "8192x4096"};
    default:
      return {quick ? "8x64x28x28" : "64x256x56x56"};
  }
}

void print_header() {
  std::printf("%-17s %-5s %-14s %-15s %3s %9s %9s %9s %9s %8s %8s %8s\n", "direction", "dtype", "layout",
              "shape", "thr", "roof_ms", "bnorm_ms", "onednn_ms", "aten_ms", "bn/roof", "dnnl/bn", "aten/bn");
}

void print_row(const Case& c, const std::vector<Result>& rs) {
  const Result *roof = find(rs, "roofline"), *bn = find(rs, "bnorm"), *dnnl = find(rs, "onednn"),
               *aten = find(rs, "aten");
  std::printf("%-17s %-5s %-14s %-15s %3d %9s %9s %9s %9s %8s %8s %8s\n", to_string(c.direction),
              std::string(bnorm::to_string(c.desc.dtype())).c_str(),
              std::string(bnorm::to_string(c.desc.layout())).c_str(), c.desc.dims_str().c_str(), c.threads,
              ms(roof).c_str(), ms(bn).c_str(), ms(dnnl).c_str(), ms(aten).c_str(), ratio(bn, roof).c_str(),
              ratio(dnnl, bn).c_str(), ratio(aten, bn).c_str());
  std::fflush(stdout);
}

}  // namespace
}  // namespace bnorm::bench

int main(int argc, char** argv) {
  using namespace bnorm::bench;
  Options o;
  CLI::App app{"bnorm-bench: batch norm side by side with the roofline, oneDNN and ATen"};
  app.add_flag("--quick", o.quick, "A reduced set that runs in under a minute");
  app.add_flag("--json", o.json, "One JSON object per line per measured case and implementation");
  app.add_flag(
      "--bandwidth", o.bandwidth,
      "Also print read-only, write-only and read+write bandwidth over 205 MB (the large shapes' size)");
  app.add_flag(
      "--patterns", o.patterns,
      "Only time bare loops of batch norm's channels-first access patterns beside the roofline (f32; "
      "--shapes with S a multiple of 16, default 64x256x56x56)");
  app.add_option("--threads", o.threads, "Thread counts to run (default: the machine's)")->delimiter(',');
  app.add_option("--reps", o.reps, "Timed repetitions per implementation (default 11, quick 5)");
  app.add_option("--ops", o.ops,
                 "batch_norm (default), bn_relu, bn_add_relu, layer_norm, rms_norm, group_norm, instance_norm, "
                 "or all")
      ->delimiter(',');
  app.add_option("--groups", o.groups, "group_norm's number of groups (default 32)");
  app.add_option("--shapes", o.shapes,
                 "Shapes like 64x256x56x56 (logical N x C x spatial; default: per op, the issues' shapes)")
      ->delimiter(',');
  app.add_option("--dtypes", o.dtypes, "f32, bf16, f16")->delimiter(',');
  app.add_option("--layouts", o.layouts, "channels_first, channels_last")->delimiter(',');
  app.add_option("--directions", o.directions, "forward_training, forward_inference, backward")
      ->delimiter(',');
  app.add_option("--impls", o.impls, "roofline, bnorm, onednn, aten, plain, unfused")->delimiter(',');
  app.add_option("--isa", o.isa, "Restrict bnorm to one instruction set (see `bnorm info`)");
  CLI11_PARSE(app, argc, argv);

  if (o.ops.empty()) o.ops = {"batch_norm"};
  if (o.ops == std::vector<std::string>{"all"}) {
    o.ops.clear();
    for (Op op : kOps) o.ops.push_back(to_string(op));
  }
  if (o.dtypes.empty()) o.dtypes = {"f32", "bf16"};
  if (o.layouts.empty()) o.layouts = {"channels_first", "channels_last"};
  if (o.directions.empty()) o.directions = {"forward_inference", "forward_training", "backward"};
  if (o.impls.empty()) o.impls.assign(std::begin(kImpls), std::end(kImpls));
  if (o.threads.empty()) o.threads = {omp_get_max_threads()};
  if (o.reps <= 0) o.reps = o.quick ? 5 : 11;
  for (const auto& name : o.impls) {
    if (std::find_if(std::begin(kImpls), std::end(kImpls), [&](const char* k) { return name == k; }) ==
        std::end(kImpls)) {
      std::cerr << "bnorm-bench: --impls: unknown implementation '" << name << "'\n";
      return 2;
    }
  }
  std::vector<Op> ops;
  for (const auto& name : o.ops) {
    const auto op = parse_op(name);
    if (!op) {
      std::cerr << "bnorm-bench: --ops: unknown op '" << name << "' (batch_norm, bn_relu, bn_add_relu, layer_norm, "
                << "rms_norm, group_norm, instance_norm or all)\n";
      return 2;
    }
    ops.push_back(*op);
  }
  // ATen's results are freshly allocated each call; keep big blocks in the
  // heap instead of mmap/munmap so it is not charged a page fault per page.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  try {
    if (!o.isa.empty()) bnorm::set_isa(o.isa);
    if (!o.json) std::printf("machine: %s\n", machine_line().c_str());
    if (o.patterns) {
      print_patterns(o.shapes.empty() ? std::vector<std::string>{"64x256x56x56"} : o.shapes, o.threads,
                     o.reps);
      return 0;
    }
    if (o.bandwidth && !o.json) print_bandwidth(std::size_t{64} * 256 * 56 * 56 * 4, o.threads, o.reps);
    if (!o.json) {
      std::printf("bnorm-bench: bnorm %s, isa %s, medians of %d interleaved repetitions\n", bnorm::kVersion,
                  bnorm::isa().c_str(), o.reps);
    }
    // Batch norm's table first, then one for the other ops.
    std::stable_partition(ops.begin(), ops.end(), [](Op op) { return op == Op::batch_norm; });
    bool op_header = false;
    for (Op op : ops) {
      if (!o.json && op == Op::batch_norm) print_header();
      if (!o.json && op != Op::batch_norm && !op_header) {
        print_op_header();
        op_header = true;
      }
      for (int threads : o.threads) {
        set_all_threads(threads);
        for (const auto& shape : o.shapes.empty() ? default_shapes(op, o.quick) : o.shapes)
          for (const auto& dt : o.dtypes)
            for (const auto& layout : o.layouts)
              for (const auto& dir : o.directions) {
                Case c;
                c.op = op;
                c.groups = o.groups;
                const auto dims = parse_dims(shape);
                const bnorm::DType dtype = dt == "f32"    ? bnorm::DType::f32
                                           : dt == "bf16" ? bnorm::DType::bf16
                                                          : bnorm::DType::f16;
                const bnorm::Layout lay = layout == "channels_last" || layout == "nhwc"
                                              ? bnorm::Layout::channels_last
                                              : bnorm::Layout::channels_first;
                c.direction = dir == "forward_training" ? Direction::forward_training
                              : dir == "backward"       ? Direction::backward
                                                        : Direction::forward_inference;
                // Layer / RMS norm take rows in C order only and, as group
                // norm, have one forward (no running statistics).
                const bool rows = op == Op::layer_norm || op == Op::rms_norm;
                if (rows && lay == bnorm::Layout::channels_last) continue;
                if ((rows || op == Op::group_norm) && c.direction == Direction::forward_inference) continue;
                if (op == Op::instance_norm && dims.size() < 3) continue;
                c.desc = bnorm::TensorDesc(dtype, lay, std::span<const std::int64_t>(dims));
                c.threads = threads;
                const auto results = measure(c, o);
                if (o.json) {
                  print_json(c, results);
                } else if (op == Op::batch_norm) {
                  print_row(c, results);
                } else {
                  print_op_row(c, results);
                }
              }
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "bnorm-bench: error: " << e.what() << "\n";
    return 3;
  }
  return 0;
}

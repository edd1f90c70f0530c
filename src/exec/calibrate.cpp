#include "exec/calibrate.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "bnorm/error.hpp"
#include "exec/dispatch.hpp"
#include "model/batch_norm_node.hpp"
#include "model/fold_passes.hpp"
#include "model/tensor_data.hpp"

namespace bnorm::exec {

void Moments::add(const Tensor& x) {
  const std::int64_t n = x.dim(0), c = x.rank() > 1 ? x.dim(1) : 1;
  std::int64_t spatial = 1;
  for (int i = 2; i < x.rank(); ++i) spatial *= x.dim(i);
  Moments batch;
  batch.count = n * spatial;
  batch.mean.assign(static_cast<std::size_t>(c), 0.0);
  batch.m2.assign(static_cast<std::size_t>(c), 0.0);
  dispatch(x.type(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_floating_point_v<T> || is_half_v<T>) {
      const T* p = x.data<T>();
      // Two passes per channel in double: the mean, then squared deviations.
#pragma omp parallel for schedule(dynamic)
      for (std::int64_t ch = 0; ch < c; ++ch) {
        double sum = 0.0;
        for (std::int64_t s = 0; s < n; ++s)
          for (std::int64_t i = 0; i < spatial; ++i) sum += static_cast<double>(widen(p[(s * c + ch) * spatial + i]));
        const double mean = batch.count ? sum / static_cast<double>(batch.count) : 0.0;
        double m2 = 0.0;
        for (std::int64_t s = 0; s < n; ++s)
          for (std::int64_t i = 0; i < spatial; ++i) {
            const double d = static_cast<double>(widen(p[(s * c + ch) * spatial + i])) - mean;
            m2 += d * d;
          }
        batch.mean[static_cast<std::size_t>(ch)] = mean;
        batch.m2[static_cast<std::size_t>(ch)] = m2;
      }
    }
  });
  merge(batch);
}

void Moments::merge(const Moments& other) {
  if (other.count == 0) return;
  if (count == 0) {
    *this = other;
    return;
  }
  const double na = static_cast<double>(count), nb = static_cast<double>(other.count), n = na + nb;
  for (std::size_t c = 0; c < mean.size(); ++c) {
    const double delta = other.mean[c] - mean[c];
    mean[c] += delta * nb / n;
    m2[c] += other.m2[c] + delta * delta * na * nb / n;
  }
  count += other.count;
}

namespace {

// Serialized moments: count, then mean[c], then m2[c], as doubles (counts
// stay exact up to 2^53).
std::vector<double> pack(const Moments& m, std::size_t channels) {
  std::vector<double> v(1 + 2 * channels, 0.0);
  v[0] = static_cast<double>(m.count);
  if (m.count) {
    std::copy(m.mean.begin(), m.mean.end(), v.begin() + 1);
    std::copy(m.m2.begin(), m.m2.end(), v.begin() + 1 + static_cast<std::ptrdiff_t>(channels));
  }
  return v;
}

// The statistics every BN normalizes with during calibration: those of the
// whole (global) batch, its rows possibly spread over several processes;
// each is also added to the node's running total over the data set.
class Calibrator final : public BatchStatisticsSource {
 public:
  Calibrator(comm::Communicator& comm, std::map<int, std::size_t> channels)
      : comm_(comm), channels_(std::move(channels)) {}

  void statistics(int node, const Tensor& input, std::vector<double>& mean, std::vector<double>& var) override {
    Moments local;
    local.add(input);
    const Moments global = merge_global(node, local);
    mean = global.mean;
    var.resize(global.m2.size());
    for (std::size_t c = 0; c < var.size(); ++c) var[c] = global.m2[c] / static_cast<double>(global.count);
    total[node].merge(global);
  }

  /// Takes part in a step without rows: every BN's collective, in graph
  /// order, with its checks (a step too small fails on every process).
  void empty_step() {
    for (const auto& [node, c] : channels_) total[node].merge(merge_global(node, Moments{}));
  }

  std::map<int, Moments> total;

 private:
  // merge_ranks, refusing a global batch of fewer than 2 values per channel.
  Moments merge_global(int node, const Moments& local) {
    Moments global = merge_ranks(node, local);
    if (global.count < 2)
      throw Error(
          ErrorKind::invalid_argument,
          "a batch gives " + std::to_string(global.count) +
              " value(s) per channel: expected more than 1 value per channel when normalizing with batch "
              "statistics; use a larger --batch-size");
    return global;
  }

  // Merges one BN's moments of every process, in rank order (so every
  // process computes the same result).
  Moments merge_ranks(int node, const Moments& local) {
    if (comm_.size() == 1) return local;
    const std::size_t c = channels_.at(node);
    if (local.count && local.mean.size() != c)
      throw Error(ErrorKind::invalid_argument, "BatchNormalization #" + std::to_string(node) + " has " +
                                                   std::to_string(local.mean.size()) + " channels in its input, " +
                                                   std::to_string(c) + " statistics");
    const std::vector<double> send = pack(local, c);
    std::vector<double> recv(send.size() * static_cast<std::size_t>(comm_.size()));
    comm_.allgather(send.data(), send.size() * sizeof(double), recv.data());
    Moments global;
    for (int r = 0; r < comm_.size(); ++r) {
      const double* p = recv.data() + static_cast<std::size_t>(r) * send.size();
      Moments part;
      part.count = static_cast<std::int64_t>(p[0]);
      part.mean.assign(p + 1, p + 1 + c);
      part.m2.assign(p + 1 + c, p + 1 + 2 * c);
      global.merge(part);
    }
    return global;
  }

  comm::Communicator& comm_;
  std::map<int, std::size_t> channels_;  // BN node -> channels, in graph order
};

}  // namespace

std::vector<CalibratedNode> calibrate(model::OnnxModel& model, const std::filesystem::path& data_path,
                                      const CalibrationOptions& options) {
  // Every BN's statistics must be constants we can rewrite.
  const auto bn_nodes = model::batch_norm_nodes(model);
  for (int index : bn_nodes) {
    const auto bn = model::read_batch_norm(model, index);
    for (int i = 2; i < 4; ++i)
      if (!bn.value[i] || !model::is_floating(bn.value[i]->data_type()))
        throw Error(ErrorKind::invalid_argument, "BatchNormalization '" + bn.name + "': " +
                                                     model::kBatchNormParams[i] + " '" + bn.param[i] +
                                                     "' is not a floating-point constant, so it cannot be recalibrated");
  }
  std::unique_ptr<comm::Communicator> alone;
  comm::Communicator* comm = options.comm;
  if (!comm) {
    alone = comm::single_process();
    comm = alone.get();
  }
  std::map<int, std::size_t> channels;
  for (int index : bn_nodes) channels[index] = model::to_doubles(*model::read_batch_norm(model, index).value[2], "input_mean").size();
  Executor executor(model);
  Calibrator calibrator(*comm, channels);
  executor.context().batch_norm_statistics = BatchNormStatistics::batch;
  executor.context().statistics_source = &calibrator;
  const InputData data = InputData::open(data_path, executor.inputs());
  // Step j is the global batch of rows [j * B, (j + 1) * B), split as
  // evenly as possible over the processes: whatever the number of
  // processes, every BN normalizes with the same statistics as in one
  // process, and each process reads only its share of the rows.
  const std::int64_t rows = data.rows(), size = comm->size(), rank = comm->rank();
  check_batch_size(executor.inputs(), options.batch_size, rows, size);
  if (size > 1) {
    // Every process must walk the same steps: the same rows and batch.
    const std::int64_t mine_shape[2] = {rows, options.batch_size};
    std::vector<std::int64_t> all(2 * static_cast<std::size_t>(size));
    comm->allgather(mine_shape, sizeof mine_shape, all.data());
    for (std::int64_t r = 0; r < size; ++r)
      if (all[2 * static_cast<std::size_t>(r)] != rows ||
          all[2 * static_cast<std::size_t>(r) + 1] != options.batch_size)
        throw Error(ErrorKind::invalid_argument,
                    data_path.string() + " on rank " + std::to_string(rank) + " has " + std::to_string(rows) +
                        " rows in batches of " + std::to_string(options.batch_size) + ", rank " +
                        std::to_string(r) + " " + std::to_string(all[2 * static_cast<std::size_t>(r)]) +
                        " in batches of " + std::to_string(all[2 * static_cast<std::size_t>(r) + 1]) +
                        ": every process must read the same data with the same --batch-size");
  }
  std::int64_t done = 0, mine = 0;
  for (std::int64_t step = 0; step < rows; step += options.batch_size) {
    const std::int64_t batch = std::min(options.batch_size, rows - step);
    mine += batch * (rank + 1) / size - batch * rank / size;
  }
  for (std::int64_t step = 0; step < rows; step += options.batch_size) {
    const std::int64_t batch = std::min(options.batch_size, rows - step);
    const std::int64_t first = step + batch * rank / size, last = step + batch * (rank + 1) / size;
    if (last > first) {
      executor.run(data.batch(first, last - first));
    } else {
      calibrator.empty_step();
    }
    done += last - first;
    if (options.progress) options.progress(done, mine);
  }
  auto& totals = calibrator.total;
  std::vector<CalibratedNode> report;
  for (int index : bn_nodes) {
    const auto bn = model::read_batch_norm(model, index);
    CalibratedNode r;
    r.node = index;
    r.name = bn.name;
    const auto it = totals.find(index);
    if (it == totals.end() || it->second.count < 2)
      throw Error(ErrorKind::invalid_argument, "BatchNormalization '" + bn.name + "' saw " +
                                                   std::to_string(it == totals.end() ? 0 : it->second.count) +
                                                   " values per channel; calibration needs at least 2");
    const Moments& m = it->second;
    r.channels = static_cast<std::int64_t>(m.mean.size());
    r.count = m.count;
    r.old_mean = model::to_doubles(*bn.value[2], bn.param[2]);
    r.old_var = model::to_doubles(*bn.value[3], bn.param[3]);
    if (r.old_mean.size() != m.mean.size() || r.old_var.size() != m.mean.size())
      throw Error(ErrorKind::invalid_model, "BatchNormalization '" + bn.name + "': input_mean / input_var hold " +
                                                std::to_string(r.old_mean.size()) + " values for " +
                                                std::to_string(m.mean.size()) + " channels");
    r.new_mean = m.mean;
    r.new_var.resize(m.m2.size());
    for (std::size_t c = 0; c < m.m2.size(); ++c) {
      r.new_var[c] = m.m2[c] / static_cast<double>(m.count - 1);  // unbiased, as PyTorch stores it
      const double shift = std::fabs(r.new_mean[c] - r.old_mean[c]) / std::sqrt(std::max(r.old_var[c], 0.0) + bn.epsilon);
      // The first non-finite value (the old statistics' NaN) stays.
      if (std::isfinite(r.max_mean_shift) && (shift > r.max_mean_shift || !std::isfinite(shift))) {
        r.max_mean_shift = shift;
        r.max_mean_shift_channel = static_cast<std::int64_t>(c);
      }
      const double a = r.new_var[c] + bn.epsilon, b = std::max(r.old_var[c], 0.0) + bn.epsilon;
      const double ratio = std::max(a / b, b / a);
      if (std::isfinite(r.max_var_ratio) && (ratio > r.max_var_ratio || !std::isfinite(ratio))) {
        r.max_var_ratio = ratio;
        r.max_var_ratio_channel = static_cast<std::int64_t>(c);
      }
    }
    report.push_back(std::move(r));
  }
  // Write the new statistics into the model, rounded once to their type;
  // write_weight copies a tensor that other nodes also read. A NaN or an
  // infinity (from the data, or a value beyond the type's range) would make
  // the BN's every output NaN or 0: refused, and the caller writes nothing.
  for (const auto& r : report) {
    for (int slot = 3; slot < 5; ++slot) {
      model::write_weight(model, r.node, slot, slot == 3 ? r.new_mean : r.new_var);
      model.refresh();
      const auto bn = model::read_batch_norm(model, r.node);
      const std::vector<double> stored = model::to_doubles(*bn.value[slot - 1], bn.param[slot - 1]);
      const auto bad = std::find_if(stored.begin(), stored.end(), [](double v) { return !std::isfinite(v); });
      if (bad != stored.end())
        throw Error(ErrorKind::invalid_argument,
                    "BatchNormalization '" + r.name + "': the recalibrated " +
                        model::kBatchNormParams[slot - 1] + " of channel " +
                        std::to_string(bad - stored.begin()) + " is " +
                        (std::isnan(*bad) ? "NaN"
                         : *bad > 0       ? "inf"
                                          : "-inf") +
                        " (the data gave this BN NaN or infinite inputs, or a statistic beyond its type's "
                        "range); a model with it would give NaN, or the same value, for every input");
    }
  }
  return report;
}

}  // namespace bnorm::exec

#include "exec/calibrate.hpp"

#include <cmath>
#include <cstring>
#include <map>

#include "bnorm/error.hpp"
#include "exec/dispatch.hpp"
#include "model/batch_norm_node.hpp"
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

class Accumulator final : public BatchNormObserver {
 public:
  void observe(int node, const Tensor& input) override { moments[node].add(input); }
  std::map<int, Moments> moments;
};

// Merges every process's moments, in rank order (the same result on all).
void merge_across(std::map<int, Moments>& moments, comm::Communicator& comm) {
  if (comm.size() == 1) return;
  for (auto& [node, m] : moments) {
    const std::size_t c = m.mean.size();
    // count, then mean[c], then m2[c], as doubles (counts stay exact up to 2^53).
    std::vector<double> send(1 + 2 * c), recv(send.size() * static_cast<std::size_t>(comm.size()));
    send[0] = static_cast<double>(m.count);
    std::memcpy(send.data() + 1, m.mean.data(), c * sizeof(double));
    std::memcpy(send.data() + 1 + c, m.m2.data(), c * sizeof(double));
    comm.allgather(send.data(), send.size() * sizeof(double), recv.data());
    Moments total;
    for (int r = 0; r < comm.size(); ++r) {
      const double* p = recv.data() + static_cast<std::size_t>(r) * send.size();
      Moments part;
      part.count = static_cast<std::int64_t>(p[0]);
      part.mean.assign(p + 1, p + 1 + c);
      part.m2.assign(p + 1 + c, p + 1 + 2 * c);
      total.merge(part);
    }
    m = std::move(total);
  }
}

}  // namespace

std::vector<CalibratedNode> calibrate(model::OnnxModel& model, const std::filesystem::path& data_path,
                                      const CalibrationOptions& options) {
  if (options.batch_size < 1)
    throw Error(ErrorKind::invalid_argument,
                "--batch-size " + std::to_string(options.batch_size) + " must be at least 1");
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
  Executor executor(model);
  Accumulator acc;
  executor.context().batch_norm_statistics = BatchNormStatistics::batch;
  executor.context().observer = &acc;
  const InputData data = InputData::open(data_path, executor.inputs());
  std::unique_ptr<comm::Communicator> alone;
  comm::Communicator* comm = options.comm;
  if (!comm) {
    alone = comm::single_process();
    comm = alone.get();
  }
  // This process's shard: contiguous rows, as even as the count allows.
  const std::int64_t rows = data.rows(), size = comm->size(), rank = comm->rank();
  const std::int64_t first = rows * rank / size, last = rows * (rank + 1) / size;
  for (std::int64_t row = first; row < last; row += options.batch_size) {
    const std::int64_t count = std::min(options.batch_size, last - row);
    try {
      executor.run(data.batch(row, count));
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.find("more than 1 value per channel") != std::string::npos)
        throw Error(ErrorKind::invalid_argument,
                    what + " (rows " + std::to_string(row) + " to " + std::to_string(row + count - 1) +
                        " form a batch of " + std::to_string(count) + "; use a larger --batch-size)");
      throw;
    }
    if (options.progress) options.progress(row + count - first, last - first);
  }
  merge_across(acc.moments, *comm);
  std::vector<CalibratedNode> report;
  for (int index : bn_nodes) {
    const auto bn = model::read_batch_norm(model, index);
    CalibratedNode r;
    r.node = index;
    r.name = bn.name;
    const auto it = acc.moments.find(index);
    if (it == acc.moments.end() || it->second.count < 2)
      throw Error(ErrorKind::invalid_argument, "BatchNormalization '" + bn.name + "' saw " +
                                                   std::to_string(it == acc.moments.end() ? 0 : it->second.count) +
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
      if (shift > r.max_mean_shift || !std::isfinite(shift)) {
        r.max_mean_shift = shift;
        r.max_mean_shift_channel = static_cast<std::int64_t>(c);
      }
      const double a = r.new_var[c] + bn.epsilon, b = std::max(r.old_var[c], 0.0) + bn.epsilon;
      const double ratio = std::max(a / b, b / a);
      if (ratio > r.max_var_ratio) {
        r.max_var_ratio = ratio;
        r.max_var_ratio_channel = static_cast<std::int64_t>(c);
      }
    }
    report.push_back(std::move(r));
  }
  // Write the new statistics into the model (rounded once to their type).
  // A tensor shared by several BNs would get the last one's values: copy.
  std::map<std::string, int> uses;
  for (int index : bn_nodes) {
    const auto bn = model::read_batch_norm(model, index);
    uses[bn.param[2]]++;
    uses[bn.param[3]]++;
  }
  for (const auto& r : report) {
    const auto bn = model::read_batch_norm(model, r.node);
    for (int i = 2; i < 4; ++i) {
      const auto& values = i == 2 ? r.new_mean : r.new_var;
      if (uses[bn.param[i]] > 1) {
        onnx::TensorProto copy = *bn.value[i];
        const std::string name = model.unique_name(bn.param[i] + "_calibrated");
        copy.set_name(name);
        model::set_values(copy, values);
        *model.graph().add_initializer() = std::move(copy);
        model.graph().mutable_node(r.node)->set_input(i + 1, name);
        model.refresh();
      } else {
        model::set_values(*model.mutable_constant(bn.param[i]), values);
      }
    }
  }
  return report;
}

}  // namespace bnorm::exec

#include "exec/input_data.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "bnorm/error.hpp"

namespace bnorm::exec {

ElementType from_npy(NpyType type) noexcept {
  switch (type) {
    case NpyType::f32:
      return ElementType::f32;
    case NpyType::f64:
      return ElementType::f64;
    case NpyType::f16:
      return ElementType::f16;
    case NpyType::i64:
      return ElementType::i64;
    case NpyType::i32:
      return ElementType::i32;
    case NpyType::u8:
      return ElementType::u8;
    case NpyType::i8:
      return ElementType::i8;
    case NpyType::boolean:
      break;
  }
  return ElementType::boolean;
}

NpyType to_npy(ElementType type) {
  switch (type) {
    case ElementType::f32:
      return NpyType::f32;
    case ElementType::f64:
      return NpyType::f64;
    case ElementType::f16:
      return NpyType::f16;
    case ElementType::i64:
      return NpyType::i64;
    case ElementType::i32:
      return NpyType::i32;
    case ElementType::u8:
      return NpyType::u8;
    case ElementType::i8:
      return NpyType::i8;
    case ElementType::boolean:
      return NpyType::boolean;
    default:
      break;
  }
  throw Error(ErrorKind::unsupported,
              "element type " + std::string(to_string(type)) + " cannot be written to a .npy file here");
}

namespace {

void check_array(const NpyArray& a, const ValueInfo& in) {
  auto fail = [&](const std::string& why) {
    throw Error(ErrorKind::invalid_argument, a.source() + " for input '" + in.name + "': " + why);
  };
  const ElementType t = from_npy(a.type());
  if (t != in.type && !(is_floating(t) && is_floating(in.type)))
    fail("dtype " + std::string(to_string(a.type())) + " does not match the input's " +
         std::string(to_string(in.type)));
  if (a.shape().empty()) fail("a 0-d array has no batch axis");
  if (!in.known_rank) return;
  if (a.shape().size() != in.shape.size())
    fail("shape " + to_string(a.shape()) + " has rank " + std::to_string(a.shape().size()) +
         ", the model expects rank " + std::to_string(in.shape.size()) + " (" + to_string(in.shape) +
         ", -1 = any; axis 0 is the batch)");
  for (std::size_t d = 1; d < in.shape.size(); ++d)
    if (in.shape[d] >= 0 && in.shape[d] != a.shape()[d])
      fail("shape " + to_string(a.shape()) + " differs from the model's " + to_string(in.shape) + " in dim " +
           std::to_string(d) + " (-1 = any; axis 0 is the batch)");
}

}  // namespace

InputData InputData::open(const std::filesystem::path& path, const std::vector<ValueInfo>& inputs) {
  InputData d;
  d.inputs_ = inputs;
  d.source_ = path.string();
  const std::string ext = path.extension().string();
  if (ext == ".npz") {
    NpzArchive z = NpzArchive::open(path);
    const auto names = z.names();
    std::vector<std::string> used;
    for (const auto& in : inputs) {
      std::string member = in.name;
      if (!z.contains(member) && inputs.size() == 1) {
        std::vector<std::string> candidates;
        for (const auto& n : names)
          if (n != "labels") candidates.push_back(n);
        if (candidates.size() == 1) member = candidates[0];
      }
      if (!z.contains(member)) {
        std::string list;
        for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
        throw Error(ErrorKind::invalid_argument, path.string() + " has no array '" + in.name +
                                                     "' for the model's input of that name (it holds: " + list + ")");
      }
      d.arrays_.push_back(z.array(member));
      used.push_back(member);
    }
    for (const auto& n : names)
      if (std::find(used.begin(), used.end(), n) == used.end()) d.extras_.emplace_back(n, z.array(n));
  } else {
    if (inputs.size() != 1)
      throw Error(ErrorKind::invalid_argument, path.string() + ": the model has " + std::to_string(inputs.size()) +
                                                   " inputs; give a .npz with one array per input name");
    d.arrays_.push_back(NpyArray::open(path));
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    check_array(d.arrays_[i], inputs[i]);
    if (i == 0) d.rows_ = d.arrays_[i].rows();
    if (d.arrays_[i].rows() != d.rows_)
      throw Error(ErrorKind::invalid_argument, path.string() + ": arrays '" + d.arrays_[0].source() + "' and '" +
                                                   d.arrays_[i].source() + "' differ in their number of rows");
  }
  // Every command reads rows: verify and prepare passed on nothing compared.
  if (d.rows_ == 0)
    throw Error(ErrorKind::invalid_argument, path.string() + " holds no rows: there is nothing to run on");
  return d;
}

std::vector<Tensor> InputData::batch(std::int64_t first, std::int64_t count) const {
  std::vector<Tensor> out;
  for (std::size_t i = 0; i < arrays_.size(); ++i) {
    const NpyArray& a = arrays_[i];
    Shape shape = a.shape();
    shape[0] = count;
    Tensor t(from_npy(a.type()), shape);
    a.copy_rows(first, count, t.raw());
    out.push_back(t.type() == inputs_[i].type ? std::move(t) : cast(t, inputs_[i].type));
  }
  return out;
}

const NpyArray* InputData::extra(const std::string& name) const {
  for (const auto& [n, a] : extras_)
    if (n == name) return &a;
  return nullptr;
}

namespace {

const ValueInfo* fixed_batch_input(const std::vector<ValueInfo>& inputs) {
  for (const auto& in : inputs)
    if (in.known_rank && !in.shape.empty() && in.shape[0] >= 0) return &in;
  return nullptr;
}

}  // namespace

std::int64_t default_batch_size(const std::vector<ValueInfo>& inputs, std::int64_t processes) {
  const ValueInfo* in = fixed_batch_input(inputs);
  return in && in->shape[0] > 0 ? in->shape[0] * std::max<std::int64_t>(processes, 1) : 64;
}

void check_batch_size(const std::vector<ValueInfo>& inputs, std::int64_t batch_size, std::int64_t rows,
                      std::int64_t processes) {
  if (batch_size < 1)
    throw Error(ErrorKind::invalid_argument, "--batch-size " + std::to_string(batch_size) + " must be at least 1");
  const ValueInfo* in = fixed_batch_input(inputs);
  if (!in) return;
  const std::int64_t fixed = in->shape[0], want = fixed * processes;
  const std::string what = "input '" + in->name + "' has a fixed batch of " + std::to_string(fixed) +
                           " (declared shape " + to_string(in->shape) + ", -1 = any)";
  const std::string per = processes > 1 ? " over " + std::to_string(processes) + " processes" : "";
  if (fixed == 0) throw Error(ErrorKind::invalid_argument, what + ": no rows can run");
  if (batch_size != want)
    throw Error(ErrorKind::invalid_argument, what + ": --batch-size " + std::to_string(batch_size) + per +
                                                 " cannot run it; use --batch-size " + std::to_string(want) +
                                                 ", or export the model with a dynamic batch");
  if (rows % want != 0)
    throw Error(ErrorKind::invalid_argument, what + ": the data's " + std::to_string(rows) +
                                                 " rows are not a whole number of batches of " +
                                                 std::to_string(want) + per);
}

void check_rows_independent(Executor& executor, const InputData& data, std::int64_t batch_size,
                            std::int64_t first, std::int64_t last) {
  if (last - first <= batch_size || fixed_batch_input(executor.inputs())) return;
  const std::vector<Tensor> pair = executor.run(data.batch(first, 2));
  const std::vector<Tensor> alone[2] = {executor.run(data.batch(first, 1)),
                                        executor.run(data.batch(first + 1, 1))};
  const std::string all = std::to_string(last - first);
  const std::string advice =
      ": batches of " + std::to_string(batch_size) + " rows would give other values than one batch of all " +
      all +
      " (e.g. Softmax over axis 0, BatchNormalization in training mode, a Reshape across "
      "the batch, the batch size read by Shape); run it with --batch-size " +
      all;
  for (std::size_t o = 0; o < pair.size(); ++o) {
    const std::string what = "output '" + executor.outputs()[o].name + "'";
    const Tensor& both = pair[o];
    for (const std::vector<Tensor>& outputs : alone) {
      const Tensor& one = outputs[o];
      if (both.rank() == 0 || one.rank() == 0 || both.dim(0) != 2 || one.dim(0) != 1 ||
          both.elements() != 2 * one.elements())
        throw Error(ErrorKind::invalid_argument, "the model's " + what + " is " + both.str() +
                                                     " for 2 rows and " + one.str() +
                                                     " for 1: its rows are not the batch's" + advice);
    }
    const std::int64_t half = alone[0][o].elements();
    for (std::int64_t i = 0; i < 2 * half; ++i) {
      const double together = value_at(both, i), apart = value_at(alone[i / half][o], i % half);
      const bool agree = together == apart || (std::isnan(together) && std::isnan(apart)) ||
                         std::fabs(together - apart) <= 1e-4 + 1e-3 * std::fabs(apart);
      if (!agree)
        throw Error(ErrorKind::invalid_argument,
                    "the model's " + what + " for row " + std::to_string(first + i / half) +
                        " depends on the other rows of its batch (element " + std::to_string(i % half) +
                        ": " + std::to_string(apart) + " alone, " + std::to_string(together) +
                        " beside row " + std::to_string(first + 1 - i / half) + ")" + advice);
    }
  }
}

void run_batches(Executor& executor, const InputData& data, std::int64_t batch_size, std::int64_t first,
                 std::int64_t last, const std::function<void(std::int64_t, std::vector<Tensor>&)>& sink) {
  check_batch_size(executor.inputs(), batch_size, last - first);
  check_rows_independent(executor, data, batch_size, first, last);
  for (std::int64_t row = first; row < last; row += batch_size) {
    const std::int64_t count = std::min(batch_size, last - row);
    auto outputs = executor.run(data.batch(row, count));
    sink(row, outputs);
  }
}

}  // namespace bnorm::exec

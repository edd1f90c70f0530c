// A model's inputs read from .npy / .npz files, memory-mapped and handed
// out in batches of rows (axis 0), so a data set larger than memory is
// never loaded whole.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "exec/executor.hpp"
#include "exec/npy.hpp"

namespace bnorm::exec {

/// The executor's element type for a .npy dtype.
ElementType from_npy(NpyType type) noexcept;
/// The .npy dtype for an element type; throws Error(unsupported) for types
/// .npy files here do not hold (bfloat16, 16-bit and unsigned wide ints).
NpyType to_npy(ElementType type);

class InputData {
 public:
  /// Opens `path` for a model with `inputs`. A .npy feeds a model with one
  /// input. A .npz gives each input the member of its name; a model with
  /// one input also takes a .npz whose only member, or only member besides
  /// "labels", has another name. Every array must match its input's rank
  /// and fixed dims except the first (the batch), all arrays must have the
  /// same number of rows, and the dtype must be the input's or, for a float
  /// input, another float dtype (converted per batch); there must be at
  /// least one row. Throws Error(io) or
  /// Error(invalid_argument) naming the file, the array and the rule.
  static InputData open(const std::filesystem::path& path, const std::vector<ValueInfo>& inputs);

  /// Rows (samples) in the data.
  std::int64_t rows() const noexcept { return rows_; }
  /// Rows [first, first + count) of every input, in the model's input
  /// order and element types.
  std::vector<Tensor> batch(std::int64_t first, std::int64_t count) const;
  /// Another member of the .npz (e.g. "labels"), if present.
  const NpyArray* extra(const std::string& name) const;
  const std::string& source() const noexcept { return source_; }

 private:
  std::vector<ValueInfo> inputs_;
  std::vector<NpyArray> arrays_;  // one per input
  std::vector<std::pair<std::string, NpyArray>> extras_;
  std::int64_t rows_ = 0;
  std::string source_;
};

/// The batch size bnorm's commands use when none is given: the batch the
/// model fixes (dim 0 of its first input whose declared dim 0 is a number,
/// as torch.onnx.export writes without dynamic_axes) times the processes
/// that share each batch, else 64.
std::int64_t default_batch_size(const std::vector<ValueInfo>& inputs, std::int64_t processes = 1);

/// Throws Error(invalid_argument) unless batch_size >= 1 and, when the
/// model fixes a batch B (as for default_batch_size), every process gets
/// exactly B rows of every batch of `rows` rows: batch_size = B * processes
/// and rows a multiple of it. The message names the input, its declared
/// shape and the batch size to use. Checked before any batch runs, so a
/// mismatch leaves no partial output.
void check_batch_size(const std::vector<ValueInfo>& inputs, std::int64_t batch_size, std::int64_t rows,
                      std::int64_t processes = 1);

/// When rows [first, last) would run in several batches of a model that
/// takes any batch size: runs rows first and first + 1 together and each
/// alone, and throws Error(invalid_argument) naming the output and the
/// element when a row's outputs change with its batch (or an output's dim 0
/// is not the batch's rows). Such a model is only right in one batch of
/// all the rows (ONNX gives the whole tensor to each op). Tolerance 1e-4 +
/// 1e-3 |value|, for kernels that block batches of 1 and 2 differently.
void check_rows_independent(Executor& executor, const InputData& data, std::int64_t batch_size,
                            std::int64_t first, std::int64_t last);

/// Runs `executor` over rows [first, last) of `data` in batches of at most
/// `batch_size` rows and calls sink(first row of the batch, outputs) after
/// each. Throws Error(invalid_argument) as check_batch_size and
/// check_rows_independent do, before the first batch.
void run_batches(Executor& executor, const InputData& data, std::int64_t batch_size, std::int64_t first,
                 std::int64_t last, const std::function<void(std::int64_t, std::vector<Tensor>&)>& sink);

}  // namespace bnorm::exec

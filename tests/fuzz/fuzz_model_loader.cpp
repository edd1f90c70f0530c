// libFuzzer target for the model loader and everything that reads a loaded
// model: parse, validate, inspect, fold (with and without --scale-shift).
// bnorm::Error is the only exception allowed out of these; anything else,
// a crash, a sanitizer report or a leak is a finding.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "bnorm/error.hpp"
#include "model/fold.hpp"
#include "model/inspect.hpp"
#include "model/onnx_model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using bnorm::model::OnnxModel;
  try {
    // External data resolves in a directory that does not exist: locations
    // are still checked, and reading them fails cleanly.
    OnnxModel model =
        OnnxModel::from_bytes({reinterpret_cast<const char*>(data), size}, "/nonexistent/bnorm-fuzz");
    (void)bnorm::model::inspect(model);
    OnnxModel copy = model;
    (void)bnorm::model::fold_batch_norms(model, {.scale_shift = false});
    (void)bnorm::model::fold_batch_norms(copy, {.scale_shift = true});
  } catch (const bnorm::Error&) {
  }
  return 0;
}

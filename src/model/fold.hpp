// Folding BatchNormalization into the node that produces its input (Conv,
// ConvTranspose, Gemm, MatMul with a constant weight), and optionally turning
// the rest into Mul + Add.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "model/onnx_model.hpp"

namespace bnorm::model {

struct FoldOptions {
  /// Replace every BN that cannot be folded by Mul + Add with constant
  /// per-channel vectors (for runtimes without BatchNormalization).
  bool scale_shift = false;
};

/// What happened to one BatchNormalization node.
struct FoldOutcome {
  enum class Action { folded, scale_shift, left };
  std::string batch_norm;  // the BN node's name
  Action action = Action::left;
  std::string target;  // folded: the producer, e.g. "Conv 'conv1'"; scale_shift: the new nodes
  std::string reason;  // left (or scale_shift): why it could not be folded
};

struct FoldReport {
  std::vector<FoldOutcome> outcomes;
  int count(FoldOutcome::Action a) const;
};

/// Folds every BatchNormalization of the main graph that can be folded. The
/// producer takes over the BN's output name, so graph outputs keep their
/// names. A BN is left alone (and the report says why) when it runs in
/// training mode or its running-statistics outputs are read, when a
/// parameter or the producer's weights are not constants, when the
/// producer's output has other consumers or is a graph output, or when the
/// producer cannot absorb a per-channel scale. Weights are computed in
/// double and rounded once to their type.
FoldReport fold_batch_norms(OnnxModel& model, const FoldOptions& options = {});

struct BatchNormNode;
/// Why the BN could not be folded (the checks of fold_batch_norms, without
/// changing anything), or nullopt when it could.
std::optional<std::string> fold_refusal(const OnnxModel& model, const BatchNormNode& bn);

/// Text form of an outcome, one line: "folded BatchNormalization 'bn1' into
/// Conv 'conv1'" or "left BatchNormalization 'bn3': <reason>".
std::string to_string(const FoldOutcome& outcome);

}  // namespace bnorm::model

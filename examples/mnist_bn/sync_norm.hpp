// The data-parallel normalization layer: bnorm::SyncBatchNorm on a
// communicator (statistics and parameter gradients over every process).
#pragma once

#include <cstdint>
#include <memory>

#include "bnorm/communicator.hpp"
#include "mlp.hpp"

namespace mnist_bn {

/// SyncBatchNorm with BatchNorm1d's defaults on `comm` (which must outlive it).
std::unique_ptr<Norm> make_sync_batch_norm(std::int64_t channels, bnorm::comm::Communicator& comm);

}  // namespace mnist_bn

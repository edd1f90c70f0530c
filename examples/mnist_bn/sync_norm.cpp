#include "sync_norm.hpp"

#include "bnorm/sync_batch_norm.hpp"

namespace mnist_bn {

std::unique_ptr<Norm> make_sync_batch_norm(std::int64_t channels, bnorm::comm::Communicator& comm) {
  bnorm::SyncBatchNorm::Options o;
  o.num_features = channels;
  return std::make_unique<NormOf<bnorm::SyncBatchNorm>>(o, comm);
}

}  // namespace mnist_bn

#include <cstring>

#include "comm/communicator.hpp"

namespace bnorm::comm {
namespace {

class SingleProcess final : public Communicator {
 public:
  int rank() const noexcept override { return 0; }
  int size() const noexcept override { return 1; }
  void allgather(const void* send, std::size_t bytes, void* recv) override {
    if (bytes) std::memcpy(recv, send, bytes);
  }
  void abort(int) noexcept override {}
};

}  // namespace

std::unique_ptr<Communicator> single_process() { return std::make_unique<SingleProcess>(); }

}  // namespace bnorm::comm

// How cooperating processes exchange data, for SyncBatchNorm and for
// calibration's merge of statistics: an abstract communicator (rank, size,
// allgather), one process alone (single_process()), or MPI's world when the
// program runs under mpirun (comm::world() in bnorm/comm_world.hpp, library
// bnorm::comm). Implement the interface to bring another transport.
#pragma once

#include <cstddef>
#include <memory>

namespace bnorm::comm {

class Communicator {
 public:
  virtual ~Communicator() = default;
  /// This process's index, 0 <= rank() < size().
  virtual int rank() const noexcept = 0;
  /// Number of processes.
  virtual int size() const noexcept = 0;
  /// Gathers `bytes` bytes from every process into recv (size() * bytes,
  /// in rank order), on every process. A collective: every process must
  /// call it with the same `bytes`. Throws Error(runtime) on failure, with
  /// the rank in the message.
  virtual void allgather(const void* send, std::size_t bytes, void* recv) = 0;
  /// Stops every process at once with `code` (MPI_Abort); a single process
  /// just returns. For errors on one rank, which would leave the others
  /// waiting in a collective forever.
  virtual void abort(int code) noexcept = 0;

  /// data[i] = the sum over processes of data[i], for n values: an
  /// allgather, then sums in rank order, so every process gets the same
  /// bits. A collective (same n everywhere).
  void allreduce_sum(double* data, std::size_t n);
};

/// One process on its own: rank 0 of 1.
std::unique_ptr<Communicator> single_process();

}  // namespace bnorm::comm

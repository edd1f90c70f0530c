// How cooperating processes exchange data: one process alone, or MPI (Open
// MPI) when bnorm runs under mpirun. Calibration merges statistics through
// it; SyncBatchNorm will reduce through it.
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
  /// in rank order), on every process. Throws Error(runtime) on failure.
  virtual void allgather(const void* send, std::size_t bytes, void* recv) = 0;
  /// Stops every process at once with `code` (MPI_Abort); a single process
  /// just returns. For errors on one rank, which would leave the others
  /// waiting in a collective forever.
  virtual void abort(int code) noexcept = 0;
};

/// One process on its own: rank 0 of 1.
std::unique_ptr<Communicator> single_process();

/// MPI's world when this process was started by mpirun / mpiexec (Open MPI
/// sets OMPI_COMM_WORLD_SIZE, PMI-based launchers PMI_SIZE) and bnorm was
/// built with MPI; one process otherwise. MPI is initialized on the first
/// call and finalized at exit.
Communicator& world();

/// Whether this build links MPI.
bool built_with_mpi() noexcept;

}  // namespace bnorm::comm

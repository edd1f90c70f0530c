// The process's communicator: MPI's world under mpirun in a build with MPI,
// one process otherwise. In the library bnorm::comm (CMake target
// bnorm_comm), which links MPI; bnorm::core and bnorm.hpp do not.
#pragma once

#include "bnorm/communicator.hpp"

namespace bnorm::comm {

/// MPI's world when this process was started by mpirun / mpiexec (Open MPI
/// sets OMPI_COMM_WORLD_SIZE, PMI-based launchers PMI_SIZE) and bnorm was
/// built with MPI; one process otherwise. MPI is initialized on the first
/// call and finalized at exit. MPI errors are returned (not fatal) and
/// thrown as Error(runtime) naming the rank.
Communicator& world();

/// Whether this build links MPI.
bool built_with_mpi() noexcept;

}  // namespace bnorm::comm

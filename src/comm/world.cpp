// The process's communicator: MPI under mpirun when built with MPI.

#include <cstdlib>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/comm_world.hpp"

#ifdef BNORM_WITH_MPI
#include <mpi.h>
#endif

namespace bnorm::comm {
namespace {

#ifdef BNORM_WITH_MPI
class Mpi final : public Communicator {
 public:
  Mpi() {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      throw Error(ErrorKind::runtime, "MPI_Init_thread failed");
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    // Errors come back as codes (thrown below) instead of killing the job.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~Mpi() override { MPI_Finalize(); }
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  void allgather(const void* send, std::size_t bytes, void* recv) override {
    if (bytes > static_cast<std::size_t>(INT32_MAX))
      throw Error(ErrorKind::runtime, where() + ": allgather of " + std::to_string(bytes) +
                                          " bytes per process: MPI counts are limited to 2 GiB");
    const int rc = MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, recv, static_cast<int>(bytes), MPI_BYTE,
                                 MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
      char text[MPI_MAX_ERROR_STRING];
      int len = 0;
      MPI_Error_string(rc, text, &len);
      throw Error(ErrorKind::runtime, where() + ": MPI_Allgather failed: " + std::string(text, static_cast<std::size_t>(len)));
    }
  }
  void abort(int code) noexcept override { MPI_Abort(MPI_COMM_WORLD, code); }

 private:
  std::string where() const { return "MPI rank " + std::to_string(rank_) + " of " + std::to_string(size_); }

  int rank_ = 0, size_ = 1;
};

bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
         std::getenv("PMIX_RANK") != nullptr;
}
#endif

}  // namespace

bool built_with_mpi() noexcept {
#ifdef BNORM_WITH_MPI
  return true;
#else
  return false;
#endif
}

Communicator& world() {
#ifdef BNORM_WITH_MPI
  static std::unique_ptr<Communicator> w =
      launched_by_mpirun() ? std::unique_ptr<Communicator>(std::make_unique<Mpi>()) : single_process();
#else
  static std::unique_ptr<Communicator> w = single_process();
#endif
  return *w;
}

}  // namespace bnorm::comm

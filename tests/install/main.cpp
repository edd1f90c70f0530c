// Consumes an installed bnorm through find_package(bnorm), bnorm::core and,
// with WITH_COMM, bnorm::comm (SyncBatchNorm on the process's communicator:
// one process here). Without it the consumer is built where MPI is not found.
#include <bnorm/bnorm.hpp>
#ifdef WITH_COMM
#include <bnorm/comm_world.hpp>
#endif
#include <cmath>
#include <cstdio>
#include <vector>
int main() {
  bnorm::TensorDesc d(bnorm::DType::f32, bnorm::Layout::channels_last, {4, 3, 5, 5});
  std::vector<float> x(d.elements()), y(d.elements());
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7);
  bnorm::BatchNorm bn({.num_features = 3});
  bn.forward(d, x.data(), d, y.data());
#ifdef WITH_COMM
  bnorm::comm::Communicator& comm = bnorm::comm::world();
#else
  const auto one = bnorm::comm::single_process();
  bnorm::comm::Communicator& comm = *one;
#endif
  bnorm::SyncBatchNorm sync({.num_features = 3}, comm);
  std::vector<float> z(d.elements());
  sync.forward(d, x.data(), d, z.data());
  if (comm.size() != 1) return 1;
  for (size_t i = 0; i < z.size(); ++i)
    if (std::fabs(z[i] - y[i]) > 1e-5f) return 1;
  std::printf("bnorm %s ok, running_mean[0]=%g\n", bnorm::kVersion, bn.running_mean()[0]);
}

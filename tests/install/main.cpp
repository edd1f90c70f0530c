// Consumes an installed bnorm through find_package(bnorm) and bnorm::core.
#include <bnorm/bnorm.hpp>
#include <cstdio>
#include <vector>
int main() {
  bnorm::TensorDesc d(bnorm::DType::f32, bnorm::Layout::channels_last, {4, 3, 5, 5});
  std::vector<float> x(d.elements()), y(d.elements());
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7);
  bnorm::BatchNorm bn({.num_features = 3});
  bn.forward(d, x.data(), d, y.data());
  std::printf("bnorm %s ok, running_mean[0]=%g\n", bnorm::kVersion, bn.running_mean()[0]);
}

#include "gemm.hpp"

#include <algorithm>

namespace mnist_bn {
namespace {

// The inner loops are axpys over a row of C (C[m][:] += a * B[k][:]): they
// vectorize without reassociating any sum, so the AVX2 clone and the
// baseline give the same bits (there is no FMA in either: contraction would
// need the fma target as well).
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define MNIST_BN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MNIST_BN_CLONES
#endif

// Rows of B kept hot while every row of A passes over them: 64 rows of a
// 100-wide float B are 25 KB, well inside L1 with C's block.
constexpr std::int64_t kBlockK = 64;

// Inlined into each clone, which is what compiles the loops for its target.
template <class T>
[[gnu::always_inline]] inline void gemm_impl(std::int64_t M, std::int64_t N, std::int64_t K,
                                             const T* __restrict A, const T* __restrict B, T* __restrict C,
                                             bool accumulate) {
  if (!accumulate) std::fill(C, C + M * N, T(0));
  for (std::int64_t k0 = 0; k0 < K; k0 += kBlockK) {
    const std::int64_t k1 = std::min(K, k0 + kBlockK);
    for (std::int64_t m = 0; m < M; ++m) {
      T* __restrict c = C + m * N;
      for (std::int64_t k = k0; k < k1; ++k) {
        const T a = A[m * K + k];
        const T* __restrict b = B + k * N;
        for (std::int64_t n = 0; n < N; ++n) c[n] += a * b[n];
      }
    }
  }
}

// Blocked over k so that C's block (16 rows of doubles) stays in L1 while
// every m passes over it; the order of the sum over m is unchanged.
constexpr std::int64_t kBlockRows = 16;

template <class T>
[[gnu::always_inline]] inline void gemm_at_b_impl(std::int64_t M, std::int64_t N, std::int64_t K,
                                                  const T* __restrict A, const T* __restrict B,
                                                  double* __restrict C) {
  for (std::int64_t k0 = 0; k0 < K; k0 += kBlockRows) {
    const std::int64_t k1 = std::min(K, k0 + kBlockRows);
    for (std::int64_t m = 0; m < M; ++m) {
      const T* __restrict b = B + m * N;
      for (std::int64_t k = k0; k < k1; ++k) {
        const double a = static_cast<double>(A[m * K + k]);
        // Many input pixels are 0; skipping them leaves the sum unchanged
        // for finite gradients (a non-finite loss stops the run anyway).
        if (a == 0.0) continue;
        double* __restrict c = C + k * N;
        for (std::int64_t n = 0; n < N; ++n) c[n] += a * static_cast<double>(b[n]);
      }
    }
  }
}

}  // namespace

MNIST_BN_CLONES
void gemm(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, const float* B, float* C,
          bool accumulate) {
  gemm_impl(M, N, K, A, B, C, accumulate);
}

void gemm(std::int64_t M, std::int64_t N, std::int64_t K, const double* A, const double* B, double* C,
          bool accumulate) {
  gemm_impl(M, N, K, A, B, C, accumulate);
}

MNIST_BN_CLONES
void gemm_at_b_accumulate(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, const float* B,
                          double* C) {
  gemm_at_b_impl(M, N, K, A, B, C);
}

void gemm_at_b_accumulate(std::int64_t M, std::int64_t N, std::int64_t K, const double* A, const double* B,
                          double* C) {
  gemm_at_b_impl(M, N, K, A, B, C);
}

template <class T>
static void transpose_impl(std::int64_t M, std::int64_t N, const T* src, T* dst) {
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n) dst[n * M + m] = src[m * N + n];
}

void transpose(std::int64_t M, std::int64_t N, const float* src, float* dst) {
  transpose_impl(M, N, src, dst);
}
void transpose(std::int64_t M, std::int64_t N, const double* src, double* dst) {
  transpose_impl(M, N, src, dst);
}

}  // namespace mnist_bn

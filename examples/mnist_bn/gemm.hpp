// The two matrix products a fully connected layer needs, written out plainly.
//
// Every sum runs in a fixed order (ascending k for C = A * B, ascending row m
// for the weight gradient), whatever the blocking or the instruction set, so
// a run is bit-reproducible on a machine and the data-parallel run can be
// compared with the one-process run step by step.
#pragma once

#include <cstdint>

namespace mnist_bn {

/// C[M x N] = A[M x K] * B[K x N] (+ C when accumulate), row-major, packed.
/// Each C[m][n] is summed over k in ascending order.
void gemm(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, const float* B, float* C,
          bool accumulate);
/// The same in double (the finite-difference tests).
void gemm(std::int64_t M, std::int64_t N, std::int64_t K, const double* A, const double* B, double* C,
          bool accumulate);

/// C[K x N] += A[M x K]^T * B[M x N], accumulated in double one row m at a
/// time in ascending m. This is the weight gradient sum over a batch (A the
/// layer's input, B the gradient of its output): in double, the sum over 60
/// samples and the sum of two 30-sample halves differ far below float
/// resolution, so one process and a data-parallel job update alike.
void gemm_at_b_accumulate(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, const float* B,
                          double* C);
/// The same with double inputs.
void gemm_at_b_accumulate(std::int64_t M, std::int64_t N, std::int64_t K, const double* A, const double* B,
                          double* C);

/// dst[N x M] = src[M x N]^T.
void transpose(std::int64_t M, std::int64_t N, const float* src, float* dst);
void transpose(std::int64_t M, std::int64_t N, const double* src, double* dst);

}  // namespace mnist_bn

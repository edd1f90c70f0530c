// The optimized layer-norm building blocks on every instruction set, checked
// directly: the elementwise kernels bit for bit against the same f32 formula
// in scalar code (which pins down the SIMD rounding of bf16/f16 and the
// column partials), the reductions against double sums within the bound of
// f32 partials of at most kAddsPerFlush + 2 additions (1e-6 of the sum of
// magnitudes), over row lengths and alignments around the vector width.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/test_util.hpp"
#include "kernels/common/scalar.hpp"
#include "kernels/layer_norm/kernels.hpp"

namespace bnorm::test {
namespace {

namespace kl = kernels::layer_norm;
using kernels::element_ptr;
using kernels::load_float;
using kernels::store_float;

const DType kTypes[] = {DType::f32, DType::bf16, DType::f16};
const std::int64_t kLengths[] = {1, 3, 7, 15, 16, 17, 31, 33, 64, 65, 96, 127, 300, 1000};

// Raw storage with room for an offset, so kernels see every alignment.
struct Raw {
  DType dt;
  std::vector<std::byte> bytes;
  Raw(DType d, std::int64_t n) : dt(d), bytes(static_cast<std::size_t>(n + 64) * size_of(d)) {}
  void* at(std::int64_t i) { return element_ptr(bytes.data(), dt, i); }
  float get(std::int64_t i) const { return load_float(dt, bytes.data(), i); }
};

void fill(Raw& r, std::int64_t n, std::uint64_t seed, float mean, float stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(mean, stddev);
  for (std::int64_t i = 0; i < n; ++i) store_float(r.dt, r.bytes.data(), i, dist(rng));
}

// The element offset at which r's data starts on a cache line.
std::int64_t line_offset(const Raw& r) {
  return static_cast<std::int64_t>(bytes_to_line(r.bytes.data()) / size_of(r.dt));
}

// Element offsets the elementwise tests put their data at: two and six bytes
// past vector data (16-bit; f32 4 and 12), and where the output starts a
// cache line (-1), which is where 16-bit rows of whole vector pairs store a
// pair at once when streamed.
const std::int64_t kOffsets[] = {0, 1, 3, -1};

TEST(LayerNormKernels, NormalizeBitExact) {
  for_each_isa([](const std::string& isa) {
    const bool fused = isa_fuses_multiply_add(isa);
    for (DType dt : kTypes)
      for (std::int64_t len : kLengths)
        for (const std::int64_t where : kOffsets)
          for (int affine = 0; affine < 4; ++affine)
            for (bool stream : {false, true}) {
              const std::int64_t rows = 3, n = rows * len;
              // The block's rows plus as many after it, prefetched.
              Raw x(dt, 2 * n + 3), y(dt, n + 3), want(dt, n + 3);
              const std::int64_t offset = where < 0 ? line_offset(y) : where;
              fill(x, 2 * n + offset, static_cast<std::uint64_t>(len), 3.0f, 2.0f);
              const auto gamma = uniform(static_cast<std::size_t>(len), 1, 0.5f, 2.0f);
              const auto beta = uniform(static_cast<std::size_t>(len), 2, -1.0f, 1.0f);
              const float* g = affine & 1 ? gamma.data() : nullptr;
              const float* b = affine & 2 ? beta.data() : nullptr;
              const float center[3] = {2.75f, 3.125f, -1.0f}, scale[3] = {0.37f, 1.5f, 0.01f},
                          shift[3] = {-1.25e-3f, 2e-7f, 0.0f};
              for (std::int64_t r = 0; r < rows; ++r)
                for (std::int64_t j = 0; j < len; ++j) {
                  const std::int64_t i = r * len + j;
                  const auto k = static_cast<std::size_t>(j);
                  float v = multiply_add(fused, x.get(offset + i) - center[r], scale[r], shift[r]);
                  if (g && b) {
                    v = multiply_add(fused, v, g[k], b[k]);
                  } else if (g) {
                    v = v * g[k];
                  } else if (b) {
                    v = v + b[k];
                  }
                  store_float(dt, want.bytes.data(), offset + i, v);
                }
              kl::rows_normalize(dt, x.at(offset), y.at(offset), kl::RowBlock{rows, len}, center, scale, shift,
                                 g, b, stream, rows);
              kl::stream_fence();
              ASSERT_EQ(std::memcmp(y.at(offset), want.at(offset), static_cast<std::size_t>(n) * size_of(dt)),
                        0)
                  << to_string(dt) << " len " << len << " offset " << offset << " affine " << affine
                  << " stream " << stream;
            }
  });
}

TEST(LayerNormKernels, NormalizeInPlace) {
  for_each_isa([](const std::string&) {
    for (DType dt : kTypes) {
      Raw x(dt, 3 * 100), y(dt, 3 * 100);
      fill(x, 300, 4, 0.0f, 1.0f);
      const float c[3] = {0.1f, 0.2f, 0.3f}, s[3] = {2.0f, 3.0f, 4.0f}, t[3] = {0.0f, 0.5f, 1.0f};
      kl::rows_normalize(dt, x.at(0), y.at(0), kl::RowBlock{3, 100}, c, s, t, nullptr, nullptr, false);
      kl::rows_normalize(dt, x.at(0), x.at(0), kl::RowBlock{3, 100}, c, s, t, nullptr, nullptr, true);
      kl::stream_fence();
      EXPECT_EQ(std::memcmp(x.at(0), y.at(0), 300 * size_of(dt)), 0) << to_string(dt);
    }
  });
}

TEST(LayerNormKernels, BackwardApplyBitExact) {
  for_each_isa([](const std::string& isa) {
    const bool fused = isa_fuses_multiply_add(isa);
    for (DType dt : kTypes)
      for (std::int64_t len : kLengths)
        for (const std::int64_t where : kOffsets)
          for (int variant = 0; variant < 6; ++variant) {
            // variant: bit 0 gamma; then dx only, dx + gamma partials
            // (streamed when on a cache line), dx + both partials
            // (streamed), partials only (twice).
            const bool with_gamma = variant & 1, with_dx = variant < 4;
            const int acc = variant < 2 ? 0 : variant < 4 ? (variant == 2 ? 1 : 2) : (variant == 4 ? 1 : 2);
            const std::int64_t rows = 3, n = rows * len;
            Raw x(dt, 2 * n + 3), dy(dt, 2 * n + 3), dx(dt, n + 3), want(dt, n + 3);
            const std::int64_t offset = where < 0 ? line_offset(dx) : where;
            fill(x, 2 * n + offset, 1, 1.0f, 1.0f);
            fill(dy, 2 * n + offset, 2, 0.0f, 1.0f);
            const auto gamma = uniform(static_cast<std::size_t>(len), 3, 0.5f, 2.0f);
            const float center[3] = {0.9f, 1.1f, -0.5f}, k_g[3] = {1.7f, 0.5f, 2.0f},
                        k_xc[3] = {-0.3f, 0.1f, -1e-3f}, k_const[3] = {0.05f, -0.2f, 0.0f},
                        invstd[3] = {1.3f, 0.7f, 2.5f};
            std::vector<float> acc_g = uniform(static_cast<std::size_t>(len), 4, -1, 1), acc_b = acc_g;
            std::vector<float> want_g = acc_g, want_b = acc_b;
            for (std::int64_t r = 0; r < rows; ++r)
              for (std::int64_t j = 0; j < len; ++j) {
                const std::int64_t i = offset + r * len + j;
                const auto k = static_cast<std::size_t>(j);
                const float xc = x.get(i) - center[r], gv = dy.get(i);
                if (acc >= 1) want_g[k] = multiply_add(fused, gv, xc * invstd[r], want_g[k]);
                if (acc >= 2) want_b[k] = want_b[k] + gv;
                const float t = with_gamma ? gv * gamma[k] : gv;
                store_float(dt, want.bytes.data(), i,
                            multiply_add(fused, k_g[r], t, multiply_add(fused, k_xc[r], xc, k_const[r])));
              }
            kl::rows_backward_apply(dt, x.at(offset), dy.at(offset), with_dx ? dx.at(offset) : nullptr,
                                    kl::RowBlock{rows, len}, center, with_gamma ? gamma.data() : nullptr, k_g,
                                    k_xc, k_const, invstd, acc >= 1 ? acc_g.data() : nullptr,
                                    acc >= 2 ? acc_b.data() : nullptr,
                                    variant == 3 || (variant == 2 && where < 0), rows);
            kl::stream_fence();
            const std::string what = std::string(to_string(dt)) + " len " + std::to_string(len) + " offset " +
                                     std::to_string(offset) + " variant " + std::to_string(variant);
            if (with_dx) {
              ASSERT_EQ(std::memcmp(dx.at(offset), want.at(offset), static_cast<std::size_t>(n) * size_of(dt)),
                        0)
                  << what;
            }
            if (acc >= 1) {
              ASSERT_EQ(acc_g, want_g) << what;
            }
            if (acc >= 2) {
              ASSERT_EQ(acc_b, want_b) << what;
            }
          }
  });
}

TEST(LayerNormKernels, ReductionsMatchDoubleSums) {
  for_each_isa([](const std::string&) {
    for (DType dt : kTypes)
      for (std::int64_t len : {1, 2, 17, 63, 64, 65, 127, 1000, 5000, 20000})
        for (kl::Pivot mode : {kl::Pivot::sampled, kl::Pivot::zero}) {
          const std::int64_t rows = 3, n = rows * len;
          Raw x(dt, n), dy(dt, n);
          fill(x, n, static_cast<std::uint64_t>(len), 100.0f, 0.5f);
          fill(dy, n, 4, 0.0f, 1.0f);
          const auto gamma = uniform(static_cast<std::size_t>(len), 5, 0.5f, 1.5f);
          float pivot[3];
          double s1[3], s2[3], sg[3], sgx[3];
          kl::rows_shifted_sums(dt, x.at(0), kl::RowBlock{rows, len}, mode, pivot, s1, s2);
          const float center[3] = {99.875f, 100.0f, 100.125f};
          kl::rows_backward_reduce(dt, x.at(0), dy.at(0), kl::RowBlock{rows, len}, center, gamma.data(), sg, sgx);
          double rms_sg[3], rms_sgx[3];  // RMS norm: no center
          kl::rows_backward_reduce(dt, x.at(0), dy.at(0), kl::RowBlock{rows, len}, nullptr, gamma.data(),
                                   rms_sg, rms_sgx);
          for (std::int64_t r = 0; r < rows; ++r) {
            SCOPED_TRACE(std::string(to_string(dt)) + " len " + std::to_string(len) + " row " + std::to_string(r));
            double a = 0, abs_a = 0, q = 0, first = 0, g = 0, abs_g = 0, gx = 0, abs_gx = 0, gxu = 0,
                   abs_gxu = 0, cq = 0;
            const std::int64_t m = std::min<std::int64_t>(len, 64);
            for (std::int64_t j = 0; j < len; ++j) {
              const std::int64_t i = r * len + j;
              const double v = x.get(i), e = v - pivot[r], t = dy.get(i) * gamma[static_cast<std::size_t>(j)];
              a += e;
              abs_a += std::fabs(e);
              q += e * e;
              if (j < m) first += v;
              g += t;
              abs_g += std::fabs(t);
              gx += t * (v - center[r]);
              abs_gx += std::fabs(t * (v - center[r]));
              gxu += t * v;
              abs_gxu += std::fabs(t * v);
              cq += (v - center[r]) * (v - center[r]);
            }
            if (len > 16384) {  // 64 values spread over the row
              first = 0.0;
              for (std::int64_t k = 0; k < 64; ++k) first += x.get(r * len + k * (len / 64));
            }
            if (mode == kl::Pivot::zero) {
              EXPECT_EQ(pivot[r], 0.0f);
            } else {
              EXPECT_NEAR(pivot[r], first / static_cast<double>(m), 1e-4);
            }
            if (mode == kl::Pivot::zero) {
              EXPECT_EQ(s1[r], 0.0);  // RMS norm: the sum of squares alone
            } else {
              EXPECT_NEAR(s1[r], a, 1e-6 * abs_a + 1e-9);
            }
            EXPECT_NEAR(s2[r], q, 1e-6 * q + 1e-9);
            EXPECT_NEAR(sg[r], g, 1e-6 * abs_g + 1e-9);
            EXPECT_NEAR(sgx[r], gx, 1e-6 * abs_gx + 1e-9);
            EXPECT_EQ(rms_sg[r], 0.0);
            EXPECT_NEAR(rms_sgx[r], gxu, 1e-6 * abs_gxu + 1e-9);
            EXPECT_NEAR(kl::row_sum_sq_centered(dt, x.at(r * len), len, center[r]), cq, 1e-6 * cq + 1e-9);
          }
        }
  });
}

// rows_backward_apply_and_reduce gives the bits of rows_backward_apply on its
// pair and of rows_backward_reduce on the next pair (layer and RMS norm, with
// and without gamma and parameter gradients, streamed or not, dx on a cache
// line, off one, or in place over dy), or declines, having written nothing,
// exactly when streaming could not walk the positions in the row's order.
TEST(LayerNormKernels, ApplyAndReduceIsApplyBesideReduce) {
  for_each_isa([](const std::string&) {
    for (DType dt : kTypes)
      for (std::int64_t len : {1, 7, 16, 17, 64, 65, 300, 1000, 1024})
        for (int where = 0; where < 4; ++where)
          for (int variant = 0; variant < 12; ++variant)
            for (bool stream : {false, true}) {
              // variant: bit 0 gamma, bit 1 centered (layer norm), then
              // parameter gradients: none, gamma's, gamma's and beta's.
              const bool with_gamma = variant & 1, centered = variant & 2;
              const int acc = variant / 4;
              const std::int64_t n = 6 * len;  // the pair, the next, the one after (prefetched)
              Raw x(dt, n + 64), dy(dt, n + 64), dx(dt, n + 64), want(dt, n + 64);
              // x and dy from a cache line; dx there, one element on, dy or x.
              const std::int64_t off = line_offset(dy), dx_off = line_offset(dx) + (where == 1 ? 1 : 0);
              fill(x, n + 64, static_cast<std::uint64_t>(len), 1.0f, 1.0f);
              fill(dy, n + 64, 2, 0.0f, 1.0f);
              fill(dx, n + 64, 3, 5.0f, 1.0f);
              const Raw x_before = x, dy_before = dy, dx_before = dx;
              void* out = where == 2 ? dy.at(off) : where == 3 ? x.at(off) : dx.at(dx_off);
              const auto gamma = uniform(static_cast<std::size_t>(len), 3, 0.5f, 2.0f);
              const float* g = with_gamma ? gamma.data() : nullptr;
              const float center[2] = {0.9f, 1.1f}, next_center[2] = {1.2f, 0.8f}, k_g[2] = {1.7f, 0.5f},
                          k_xc[2] = {-0.3f, 0.1f}, k_const[2] = {0.05f, -0.2f}, invstd[2] = {1.3f, 0.7f};
              const std::vector<float> acc0 = uniform(static_cast<std::size_t>(len), 4, -1, 1);
              std::vector<float> acc_g = acc0, acc_b = acc0, want_g = acc0, want_b = acc0;
              double sg[2] = {-1, -1}, sgx[2] = {-1, -1}, want_sg[2], want_sgx[2];
              kl::rows_backward_apply(dt, x.at(off), dy.at(off), want.at(off), kl::RowBlock{2, len}, center,
                                      g, k_g, k_xc, k_const, invstd, acc >= 1 ? want_g.data() : nullptr,
                                      acc >= 2 ? want_b.data() : nullptr, false, 0);
              kl::rows_backward_reduce(dt, x.at(off + 2 * len), dy.at(off + 2 * len), kl::RowBlock{2, len},
                                       centered ? next_center : nullptr, g, want_sg, want_sgx);
              const bool done = kl::rows_backward_apply_and_reduce(
                  dt, x.at(off), dy.at(off), out, len, center, g, k_g, k_xc, k_const, invstd,
                  acc >= 1 ? acc_g.data() : nullptr, acc >= 2 ? acc_b.data() : nullptr, stream, 2,
                  centered ? next_center : nullptr, sg, sgx);
              kl::stream_fence();
              const std::string what = std::string(to_string(dt)) + " len " + std::to_string(len) +
                                       " where " + std::to_string(where) + " variant " +
                                       std::to_string(variant) + (stream ? " stream" : "");
              const bool lines = static_cast<std::size_t>(len) * size_of(dt) % 64 == 0 &&
                                 reinterpret_cast<std::uintptr_t>(out) % 64 == 0;
              ASSERT_EQ(done, !stream || lines) << what;
              const std::size_t bytes = static_cast<std::size_t>(2 * len) * size_of(dt);
              if (!done) {
                EXPECT_EQ(x.bytes, x_before.bytes) << what;
                EXPECT_EQ(dy.bytes, dy_before.bytes) << what;
                EXPECT_EQ(dx.bytes, dx_before.bytes) << what;
                EXPECT_EQ(acc_g, acc0) << what;
                EXPECT_EQ(acc_b, acc0) << what;
                EXPECT_EQ(sg[0], -1.0) << what;
                EXPECT_EQ(sgx[1], -1.0) << what;
                continue;
              }
              ASSERT_EQ(std::memcmp(out, want.at(off), bytes), 0) << what;
              EXPECT_EQ(acc_g, acc >= 1 ? want_g : acc0) << what;
              EXPECT_EQ(acc_b, acc >= 2 ? want_b : acc0) << what;
              for (int k = 0; k < 2; ++k) {
                EXPECT_EQ(sg[k], want_sg[k]) << what << " row " << k;
                EXPECT_EQ(sgx[k], want_sgx[k]) << what << " row " << k;
              }
              // Nothing after the pair's dx was touched.
              const Raw& other = where == 2 ? dy : where == 3 ? x : dx;
              const Raw& other_before = where == 2 ? dy_before : where == 3 ? x_before : dx_before;
              const std::size_t from =
                  static_cast<std::size_t>((where >= 2 ? off : dx_off) + 2 * len) * size_of(dt);
              EXPECT_TRUE(std::equal(other.bytes.begin() + static_cast<std::ptrdiff_t>(from),
                                     other.bytes.end(),
                                     other_before.bytes.begin() + static_cast<std::ptrdiff_t>(from)))
                  << what;
            }
  });
}

// fold_partials adds each f32 partial to its double total (exactly, as
// scalar code does) and clears it, at every length and offset.
TEST(LayerNormKernels, FoldPartialsAddsAndClears) {
  for_each_isa([](const std::string&) {
    for (std::int64_t len : kLengths)
      for (std::int64_t offset : {0, 1}) {
        const auto n = static_cast<std::size_t>(len + offset);
        std::vector<float> acc = uniform(n, 7, -3.0f, 3.0f);
        std::vector<double> total(n);
        for (std::size_t j = 0; j < n; ++j) total[j] = 1e8 + static_cast<double>(j) / 3.0;
        std::vector<double> want = total;
        for (std::size_t j = static_cast<std::size_t>(offset); j < n; ++j)
          want[j] += static_cast<double>(acc[j]);
        const float first = acc[0];
        kl::fold_partials(acc.data() + offset, total.data() + offset, len);
        ASSERT_EQ(std::memcmp(total.data(), want.data(), n * sizeof(double)), 0) << "len " << len;
        for (std::size_t j = static_cast<std::size_t>(offset); j < n; ++j) ASSERT_EQ(acc[j], 0.0f) << j;
        if (offset) {
          EXPECT_EQ(acc[0], first);  // nothing before the range
        }
      }
  });
}

// The 16-bit stores of whole vector pairs (AVX3_BF16: one vcvtne2ps2bf16 for
// both, which flushes subnormals and keeps NaN payloads, so a pair with such
// a lane takes the emulation) round exactly as the scalar routine: every
// bf16 pattern in two rows of 32 Ki, scaled so that results fall on ties,
// subnormals, overflow and NaN; forward (y = (x - 0) * 1 + 0, times gamma)
// and backward (dx = k_g * dy + (0 * 0 + 0), x = 0), streamed from a cache
// line or stored plainly.
TEST(LayerNormKernels, PairedBf16StoresRoundAsTheScalarRoutine) {
  const std::int64_t len = 32768, n = 2 * len;
  Raw x(DType::bf16, n), zeros(DType::bf16, n), out(DType::bf16, n);
  const std::int64_t off = line_offset(out);
  const float zero[2] = {0.0f, 0.0f}, one[2] = {1.0f, 1.0f};
  // Ascending, then descending: a run of special results then sits in the
  // first vector of a pair, then in the second.
  for (bool descending : {false, true}) {
    for (std::int64_t i = 0; i < n; ++i) {
      const auto bits = static_cast<std::uint16_t>(descending ? n - 1 - i : i);
      std::memcpy(x.at(off + i), &bits, sizeof bits);
    }
    for_each_isa([&](const std::string& isa) {
      const bool fused = isa_fuses_multiply_add(isa);
      for (const float g :
           {1.0f, 3.0f, 1.0f + std::ldexp(1.0f, -9), -1.5f, std::ldexp(1.0f, -100), std::ldexp(1.5f, 100)})
        for (bool backward : {false, true})
          for (bool stream : {false, true}) {
            const std::vector<float> gamma(static_cast<std::size_t>(len), g);
            const float k_g[2] = {g, g};
            std::vector<float> acc(static_cast<std::size_t>(len), 0.0f);
            if (backward) {
              kl::rows_backward_apply(DType::bf16, zeros.at(off), x.at(off), out.at(off),
                                      kl::RowBlock{2, len}, zero, nullptr, k_g, zero, zero, one, acc.data(),
                                      nullptr, stream);
            } else {
              kl::rows_normalize(DType::bf16, x.at(off), out.at(off), kl::RowBlock{2, len}, zero, one, zero,
                                 gamma.data(), nullptr, stream);
            }
            kl::stream_fence();
            for (std::int64_t i = 0; i < n; ++i) {
              const float v = x.get(off + i);
              const float want = backward ? multiply_add(fused, g, v, multiply_add(fused, 0.0f, 0.0f, 0.0f))
                                          : multiply_add(fused, v - 0.0f, 1.0f, 0.0f) * g;
              Raw expect(DType::bf16, 1);
              store_float(DType::bf16, expect.bytes.data(), 0, want);
              ASSERT_EQ(std::memcmp(out.at(off + i), expect.at(0), 2), 0)
                  << isa << " gamma " << g << (backward ? " backward" : " forward")
                  << (stream ? " streamed" : "") << ", x pattern 0x" << std::hex
                  << (descending ? n - 1 - i : i) << ", result " << want;
            }
          }
    });
  }
}

// Rows longer than 16 Ki elements sample their pivot over the whole row.
TEST(LayerNormKernels, LongRowsSpreadThePivotSample) {
  for_each_isa([](const std::string&) {
    const std::int64_t len = 20000;
    Raw x(DType::f32, len);
    for (std::int64_t j = 0; j < len; ++j) store_float(DType::f32, x.bytes.data(), j, j < 1000 ? 50.0f : 1.0f);
    float pivot;
    double s1, s2;
    kl::rows_shifted_sums(DType::f32, x.at(0), kl::RowBlock{1, len}, kl::Pivot::sampled, &pivot, &s1, &s2);
    // 64 values at j * 312: 4 of them (j < 1000) are 50, the rest 1.
    EXPECT_NEAR(pivot, (4 * 50.0 + 60 * 1.0) / 64.0, 1e-5);
  });
}

}  // namespace
}  // namespace bnorm::test

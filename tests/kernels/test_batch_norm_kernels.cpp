// The optimized batch-norm building blocks on every instruction set, checked
// directly: elementwise kernels bit for bit against the same f32 formula in
// scalar code (which pins down the SIMD rounding of bf16/f16), reductions
// against double sums, over lengths and alignments around the vector width.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "common/test_util.hpp"
#include "kernels/batch_norm/kernels.hpp"
#include "kernels/batch_norm/pipeline.hpp"
#include "kernels/common/scalar.hpp"

namespace bnorm::test {
namespace {

namespace kb = kernels::batch_norm;
using kernels::element_ptr;
using kernels::load_float;
using kernels::store_float;

const DType kTypes[] = {DType::f32, DType::bf16, DType::f16};

// Raw storage with room for an offset, so kernels see every alignment.
struct Raw {
  DType dt;
  std::vector<std::byte> bytes;
  Raw(DType d, std::int64_t n) : dt(d), bytes(static_cast<std::size_t>(n + 64) * size_of(d)) {}
  void* at(std::int64_t i) { return element_ptr(bytes.data(), dt, i); }
};

void fill(Raw& r, std::int64_t n, std::uint64_t seed, float mean, float stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(mean, stddev);
  for (std::int64_t i = 0; i < n; ++i) store_float(r.dt, r.bytes.data(), i, dist(rng));
}

bool same_bits(DType dt, const void* a, const void* b, std::int64_t n) {
  return std::memcmp(a, b, static_cast<std::size_t>(n) * size_of(dt)) == 0;
}

TEST(BatchNormKernels, NormalizeRunsBitExact) {
  for_each_isa([](const std::string& isa) {
    const bool fused = isa_fuses_multiply_add(isa);
    for (DType dt : kTypes) {
      for (std::int64_t len : {0, 1, 3, 7, 15, 16, 17, 31, 33, 64, 127, 300}) {
        for (std::int64_t offset : {0, 1, 3, 8}) {
          for (bool stream : {false, true}) {
            const kb::Runs runs{3, len, len + 5};
            const std::int64_t total = runs.stride * 3 + offset;
            Raw x(dt, total), y(dt, total), want(dt, total);
            fill(x, total, 11, 3.0f, 2.0f);
            const float center = 2.75f, scale = 0.37f, shift = -1.25f;
            y.bytes = want.bytes = x.bytes;  // elements between runs must survive
            for (std::int64_t r = 0; r < runs.count; ++r)
              for (std::int64_t i = 0; i < len; ++i) {
                const std::int64_t e = offset + r * runs.stride + i;
                const float v = load_float(dt, x.bytes.data(), e);
                store_float(dt, want.bytes.data(), e, multiply_add(fused, v - center, scale, shift));
              }
            kb::normalize(dt, x.at(offset), y.at(offset), runs, center, scale, shift, stream);
            kb::stream_fence();
            ASSERT_TRUE(same_bits(dt, y.bytes.data(), want.bytes.data(), total))
                << to_string(dt) << " len " << len << " offset " << offset << " stream " << stream;
          }
        }
      }
    }
  });
}

std::vector<float> cyclic(const std::vector<float>& per_channel) {
  const auto C = static_cast<std::int64_t>(per_channel.size());
  std::vector<float> out(static_cast<std::size_t>(kb::cyclic_length(C)));
  for (std::size_t j = 0; j < out.size(); ++j) out[j] = per_channel[j % per_channel.size()];
  return out;
}

TEST(BatchNormKernels, RowsElementwiseBitExact) {
  for_each_isa([](const std::string& isa) {
    const bool fused = isa_fuses_multiply_add(isa);
    for (DType dt : kTypes) {
      for (std::int64_t C : {1, 3, 16, 17, 64, 65, 130}) {
        for (std::int64_t rows : {1, 2, 9}) {
          for (std::int64_t offset : {0, 5}) {
            for (bool stream : {false, true}) {
              const std::int64_t n = rows * C;
              Raw x(dt, n + offset), dy(dt, n + offset), y(dt, n + offset), want(dt, n + offset);
              fill(x, n + offset, 5, -1.0f, 3.0f);
              fill(dy, n + offset, 6, 0.0f, 1.0f);
              const auto center = uniform(static_cast<std::size_t>(C), 1, -1, 1);
              const auto scale = uniform(static_cast<std::size_t>(C), 2, 0.1f, 2);
              const auto shift = uniform(static_cast<std::size_t>(C), 3, -1, 1);
              const auto k_const = uniform(static_cast<std::size_t>(C), 4, -1, 1);
              const auto cc = cyclic(center), cs = cyclic(scale), cb = cyclic(shift), ck = cyclic(k_const);
              // normalize
              for (std::int64_t i = 0; i < n; ++i) {
                const auto c = static_cast<std::size_t>(i % C);
                const float v = load_float(dt, x.at(offset), i);
                store_float(dt, want.at(offset), i, multiply_add(fused, v - center[c], scale[c], shift[c]));
              }
              kb::rows_normalize(dt, x.at(offset), y.at(offset), kb::Rows{n, C}, cc.data(), cs.data(),
                                 cb.data(), stream);
              kb::stream_fence();
              ASSERT_TRUE(same_bits(dt, y.at(offset), want.at(offset), n))
                  << "rows_normalize " << to_string(dt) << " C " << C << " rows " << rows;
              // backward apply: dx = k_dy*dy + k_xc*(x - center) + k_const
              for (std::int64_t i = 0; i < n; ++i) {
                const auto c = static_cast<std::size_t>(i % C);
                const float xc = load_float(dt, x.at(offset), i) - center[c];
                const float g = load_float(dt, dy.at(offset), i);
                store_float(dt, want.at(offset), i,
                            multiply_add(fused, scale[c], g, multiply_add(fused, shift[c], xc, k_const[c])));
              }
              kb::rows_backward_apply(dt, x.at(offset), dy.at(offset), y.at(offset), kb::Rows{n, C},
                                      cc.data(), cs.data(), cb.data(), ck.data(), stream);
              kb::stream_fence();
              ASSERT_TRUE(same_bits(dt, y.at(offset), want.at(offset), n))
                  << "rows_backward_apply " << to_string(dt) << " C " << C << " rows " << rows;
            }
          }
        }
      }
    }
  });
}

TEST(BatchNormKernels, BackwardApplyRunsBitExact) {
  for_each_isa([](const std::string& isa) {
    const bool fused = isa_fuses_multiply_add(isa);
    for (DType dt : kTypes) {
      for (std::int64_t len : {1, 5, 16, 17, 40, 129}) {
        const kb::Runs runs{2, len, len + 3};
        const std::int64_t total = runs.stride * 2;
        Raw x(dt, total), dy(dt, total), dx(dt, total), want(dt, total);
        fill(x, total, 1, 1.0f, 1.0f);
        fill(dy, total, 2, 0.0f, 1.0f);
        dx.bytes = want.bytes = x.bytes;
        const float center = 0.9f, a = 1.7f, b = -0.3f, k = 0.05f;
        for (std::int64_t r = 0; r < 2; ++r)
          for (std::int64_t i = 0; i < len; ++i) {
            const std::int64_t e = r * runs.stride + i;
            const float xc = load_float(dt, x.bytes.data(), e) - center;
            store_float(
                dt, want.bytes.data(), e,
                multiply_add(fused, a, load_float(dt, dy.bytes.data(), e), multiply_add(fused, b, xc, k)));
          }
        kb::backward_apply(dt, x.at(0), dy.at(0), dx.at(0), runs, center, a, b, k, false);
        ASSERT_TRUE(same_bits(dt, dx.bytes.data(), want.bytes.data(), total))
            << to_string(dt) << " len " << len;
      }
    }
  });
}

TEST(BatchNormKernels, ReductionsMatchDoubleSums) {
  for_each_isa([](const std::string&) {
    for (DType dt : kTypes) {
      for (std::int64_t len : {1, 2, 17, 64, 65, 1000, 20000}) {
        const kb::Runs runs{3, len, len + 1};
        const std::int64_t total = runs.stride * 3;
        Raw x(dt, total), dy(dt, total);
        fill(x, total, 3, 100.0f, 0.5f);
        fill(dy, total, 4, 0.0f, 1.0f);
        const float pivot = 100.25f, center = 99.875f;
        double s = 0, sq = 0, g = 0, gx = 0, abs_s = 0, abs_gx = 0;
        for (std::int64_t r = 0; r < 3; ++r)
          for (std::int64_t i = 0; i < len; ++i) {
            const std::int64_t e = r * runs.stride + i;
            const double v = load_float(dt, x.bytes.data(), e), d = load_float(dt, dy.bytes.data(), e);
            s += v - pivot;
            abs_s += std::fabs(v - pivot);
            sq += (v - center) * (v - center);
            g += d;
            gx += d * (v - center);
            abs_gx += std::fabs(d * (v - center));
          }
        double shifted[2];
        kb::shifted_sums(dt, x.at(0), runs, pivot, shifted);
        EXPECT_NEAR(shifted[0], s, 1e-6 * abs_s + 1e-9) << len;
        EXPECT_NEAR(kb::sum_sq_centered(dt, x.at(0), runs, center), sq, 1e-6 * sq + 1e-9) << len;
        double sums[2] = {0, 0};
        kb::backward_reduce(dt, x.at(0), dy.at(0), runs, center, sums);
        EXPECT_NEAR(sums[1], gx, 1e-6 * abs_gx + 1e-9) << len;
        EXPECT_NEAR(sums[0], g, 1e-6 * static_cast<double>(3 * len)) << len;
      }
    }
  });
}

// One-pass shifted sums against double sums, over run shapes that exercise
// the unrolled loop, the remainders and the folds into double.
TEST(BatchNormKernels, ShiftedSumsMatchDouble) {
  for_each_isa([](const std::string&) {
    for (DType dt : kTypes) {
      for (std::int64_t len : {1, 3, 16, 17, 49, 64, 65, 200, 3136, 70000}) {
        const kb::Runs runs{5, len, len + 7};
        const std::int64_t total = runs.stride * 5;
        Raw x(dt, total);
        fill(x, total, static_cast<std::uint64_t>(len), 1e3f, 0.5f);
        const float pivot = load_float(dt, x.bytes.data(), 0);
        double s = 0, q = 0;
        for (std::int64_t r = 0; r < 5; ++r)
          for (std::int64_t i = 0; i < len; ++i) {
            const double e = load_float(dt, x.bytes.data(), r * runs.stride + i) - pivot;
            s += std::fabs(e);
            q += e * e;
          }
        double sums_abs = s, want[2] = {0, q};
        for (std::int64_t r = 0; r < 5; ++r)
          for (std::int64_t i = 0; i < len; ++i)
            want[0] += load_float(dt, x.bytes.data(), r * runs.stride + i) - pivot;
        double out[2];
        kb::shifted_sums(dt, x.at(0), runs, pivot, out);
        ASSERT_NEAR(out[0], want[0], 1e-6 * sums_abs + 1e-9) << len;
        ASSERT_NEAR(out[1], want[1], 1e-6 * want[1] + 1e-9) << len;
      }
    }
  });
}

TEST(BatchNormKernels, RowsReductionsMatchDoubleSums) {
  for_each_isa([](const std::string&) {
    for (DType dt : kTypes) {
      for (std::int64_t C : {1, 3, 17, 64, 100}) {
        for (std::int64_t rows : {1, 5, 3000}) {
          const std::int64_t n = rows * C;
          Raw x(dt, n), dy(dt, n);
          fill(x, n, 8, -50.0f, 2.0f);
          fill(dy, n, 9, 0.0f, 1.0f);
          const auto pivot = uniform(static_cast<std::size_t>(C), 1, -51, -49);
          const auto pc = cyclic(pivot);
          std::vector<float> scratch(2 * static_cast<std::size_t>(kb::cyclic_length(C)));
          std::vector<double> got(static_cast<std::size_t>(C), 0.0), got_sq(got), got_sq2(got), got_g(got),
              got_gx(got);
          kb::rows_shifted_sums(dt, x.at(0), kb::Rows{n, C}, pc.data(), scratch.data(), got.data(),
                                got_sq2.data());
          kb::rows_sum_sq_centered(dt, x.at(0), kb::Rows{n, C}, pc.data(), scratch.data(), got_sq.data());
          kb::rows_backward_reduce(dt, x.at(0), dy.at(0), kb::Rows{n, C}, pc.data(), scratch.data(),
                                   got_g.data(), got_gx.data());
          for (std::int64_t c = 0; c < C; ++c) {
            double s = 0, abs_s = 0, sq = 0, g = 0, gx = 0, abs_gx = 0;
            for (std::int64_t r = 0; r < rows; ++r) {
              const double v = load_float(dt, x.at(0), r * C + c) - pivot[static_cast<std::size_t>(c)];
              const double d = load_float(dt, dy.at(0), r * C + c);
              s += v;
              abs_s += std::fabs(v);
              sq += v * v;
              g += d;
              gx += d * v;
              abs_gx += std::fabs(d * v);
            }
            const auto uc = static_cast<std::size_t>(c);
            ASSERT_NEAR(got[uc], s, 1e-6 * abs_s + 1e-9) << "C " << C << " rows " << rows;
            ASSERT_NEAR(got_sq[uc], sq, 1e-6 * sq + 1e-9);
            ASSERT_NEAR(got_sq2[uc], sq, 1e-6 * sq + 1e-9);
            ASSERT_NEAR(got_g[uc], g, 1e-6 * static_cast<double>(rows) + 1e-9);
            ASSERT_NEAR(got_gx[uc], gx, 1e-6 * abs_gx + 1e-9);
          }
        }
      }
    }
  });
}

// With `stream`, rows_backward_reduce streams the gated gradient (dz) where
// whole lines allow: dz must hold the same bits as with plain stores (the
// gated dy), and the sums must not change.
TEST(BatchNormKernels, RowsBackwardReduceStreamsTheGatedGradientUnchanged) {
  // Element offset that puts r's data on a 64-byte boundary.
  auto aligned = [](const Raw& r) {
    return static_cast<std::int64_t>(bytes_to_line(r.bytes.data()) / size_of(r.dt));
  };
  for_each_isa([&](const std::string& isa) {
    for (DType dt : kTypes)
      for (std::int64_t C : {17, 32, 64, 96, 512, 1024})
        for (std::int64_t rows : {3, 40}) {
          const std::int64_t n = rows * C;
          Raw x(dt, n), dy(dt, n), y(dt, n), dz_plain(dt, n), dz_stream(dt, n);
          fill(x, n + 32, 11, 2.0f, 1.0f);
          fill(dy, n + 32, 12, 0.0f, 1.0f);
          fill(y, n + 32, 13, 0.0f, 1.0f);  // about half the gate open
          const std::int64_t ox = aligned(x), og = aligned(dy), oy = aligned(y), op = aligned(dz_plain),
                             os = aligned(dz_stream);
          const auto center = cyclic(uniform(static_cast<std::size_t>(C), 3, 1.5f, 2.5f));
          std::vector<float> scratch(2 * static_cast<std::size_t>(kb::cyclic_length(C)));
          std::vector<double> g1(static_cast<std::size_t>(C), 0.0), gx1(g1), g2(g1), gx2(g1);
          kb::rows_backward_reduce(dt, x.at(ox), dy.at(og), kb::Rows{n, C}, center.data(), scratch.data(),
                                   g1.data(), gx1.data(), kb::Gate{y.at(oy), dz_plain.at(op)}, false);
          kb::rows_backward_reduce(dt, x.at(ox), dy.at(og), kb::Rows{n, C}, center.data(), scratch.data(),
                                   g2.data(), gx2.data(), kb::Gate{y.at(oy), dz_stream.at(os)}, true);
          kb::stream_fence();
          const std::string where =
              isa + " " + std::string(to_string(dt)) + " C " + std::to_string(C) + " rows " + std::to_string(rows);
          ASSERT_EQ(std::memcmp(dz_plain.at(op), dz_stream.at(os), static_cast<std::size_t>(n) * size_of(dt)),
                    0)
              << where;
          for (std::int64_t i = 0; i < n; ++i) {
            const float gated = load_float(dt, y.at(oy), i) > 0.0f ? load_float(dt, dy.at(og), i) : 0.0f;
            ASSERT_EQ(load_float(dt, dz_stream.at(os), i), gated) << where << " element " << i;
          }
          ASSERT_EQ(std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(double)), 0) << where;
          ASSERT_EQ(std::memcmp(gx1.data(), gx2.data(), gx1.size() * sizeof(double)), 0) << where;
        }
  });
}

// The pipelined rows kernel gives the bits of its two parts: y of
// rows_normalize and the sums of rows_shifted_sums over the next block, with
// and without streaming (y on a cache line, and off one); or declines and
// writes nothing.
TEST(BatchNormKernels, RowsNormalizeAndSumIsNormalizeBesideShiftedSums) {
  for_each_isa([&](const std::string& isa) {
    for (DType dt : kTypes)
      for (std::int64_t C : {8, 16, 17, 32, 48, 256, 512})
        for (std::int64_t y_offset : {0, 1}) {
          const std::int64_t rows = 70, n = rows * C;
          Raw x(dt, n), next(dt, n), y_plain(dt, n + 64), y_piped(dt, n + 64);
          fill(x, n, 21, 2.0f, 1.0f);
          fill(next, n, 22, -1.0f, 3.0f);
          const std::int64_t oy =
              static_cast<std::int64_t>(bytes_to_line(y_piped.bytes.data()) / size_of(dt)) + y_offset;
          const auto Cs = static_cast<std::size_t>(C);
          const auto center = cyclic(uniform(Cs, 3, 1.5f, 2.5f)), scale = cyclic(uniform(Cs, 4, 0.5f, 2.0f)),
                     shift = cyclic(uniform(Cs, 5, -1.0f, 1.0f)), pivot = cyclic(uniform(Cs, 6, -2.0f, 0.0f));
          std::vector<float> scratch(2 * static_cast<std::size_t>(kb::cyclic_length(C)));
          std::vector<double> s1(Cs, 0.0), s2(s1), p1(s1), p2(s1);
          const kb::Rows r{n, C};
          for (bool stream : {false, true}) {
            const std::string where = isa + " " + std::string(to_string(dt)) + " C " + std::to_string(C) +
                                      " offset " + std::to_string(y_offset) + (stream ? " stream" : "");
            std::fill(y_piped.bytes.begin(), y_piped.bytes.end(), std::byte{0x5a});
            std::fill(p1.begin(), p1.end(), 0.0);
            std::fill(p2.begin(), p2.end(), 0.0);
            const bool piped = kb::rows_normalize_and_sum(dt, x.at(0), y_piped.at(oy), r, center.data(),
                                                          scale.data(), shift.data(), stream, next.at(0),
                                                          pivot.data(), p1.data(), p2.data());
            kb::stream_fence();
            if (!piped) {
              for (const std::byte b : y_piped.bytes) ASSERT_EQ(b, std::byte{0x5a}) << where;
              ASSERT_EQ(p1, std::vector<double>(Cs, 0.0)) << where;
              ASSERT_EQ(p2, std::vector<double>(Cs, 0.0)) << where;
              continue;
            }
            kb::rows_normalize(dt, x.at(0), y_plain.at(0), r, center.data(), scale.data(), shift.data(),
                               false);
            std::fill(s1.begin(), s1.end(), 0.0);
            std::fill(s2.begin(), s2.end(), 0.0);
            kb::rows_shifted_sums(dt, next.at(0), r, pivot.data(), scratch.data(), s1.data(), s2.data());
            ASSERT_EQ(std::memcmp(y_plain.at(0), y_piped.at(oy), static_cast<std::size_t>(n) * size_of(dt)),
                      0)
                << where;
            ASSERT_EQ(std::memcmp(s1.data(), p1.data(), Cs * sizeof(double)), 0) << where;
            ASSERT_EQ(std::memcmp(s2.data(), p2.data(), Cs * sizeof(double)), 0) << where;
          }
        }
  });
}

// Backward's pipelined rows kernel: dx has the bits of rows_backward_apply
// (also in place, over dy or over x), with and without streaming, dx on a
// cache line and off one; the sums are the next block's, against double
// sums.
TEST(BatchNormKernels, RowsApplyAndReduceIsApplyBesideTheNextSums) {
  for_each_isa([&](const std::string& isa) {
    for (DType dt : kTypes)
      for (std::int64_t C : {8, 17, 32, 48, 256, 512})
        for (std::int64_t dx_offset : {0, 1}) {
          const std::int64_t rows = 70, n = rows * C;
          Raw x(dt, n), dy(dt, n), nx(dt, n), ndy(dt, n), dx_plain(dt, n), dx_piped(dt, n + 64);
          fill(x, n, 31, 2.0f, 1.0f);
          fill(dy, n, 32, 0.0f, 1.0f);
          fill(nx, n, 33, -1.0f, 3.0f);
          fill(ndy, n, 34, 0.5f, 1.0f);
          const std::int64_t od =
              static_cast<std::int64_t>(bytes_to_line(dx_piped.bytes.data()) / size_of(dt)) + dx_offset;
          const auto Cs = static_cast<std::size_t>(C);
          const auto center = cyclic(uniform(Cs, 3, 1.5f, 2.5f)), k_dy = cyclic(uniform(Cs, 4, 0.5f, 2.0f)),
                     k_xc = cyclic(uniform(Cs, 5, -1.0f, 1.0f)),
                     k_const = cyclic(uniform(Cs, 6, -0.5f, 0.5f)),
                     next_center = cyclic(uniform(Cs, 7, -2.0f, 0.0f));
          std::vector<float> scratch(2 * static_cast<std::size_t>(kb::cyclic_length(C)));
          const kb::Rows r{n, C};
          kb::rows_backward_apply(dt, x.at(0), dy.at(0), dx_plain.at(0), r, center.data(), k_dy.data(),
                                  k_xc.data(), k_const.data(), false);
          // The next block's sums in double, and the sums of the terms' magnitudes.
          std::vector<double> want_dy(Cs, 0.0), want_dy_xc(Cs, 0.0), mag_dy(Cs, 0.0), mag_dy_xc(Cs, 0.0);
          for (std::int64_t i = 0; i < n; ++i) {
            const auto c = static_cast<std::size_t>(i % C);
            const double g = load_float(dt, ndy.at(0), i);
            const double t = g * (static_cast<double>(load_float(dt, nx.at(0), i)) - next_center[c]);
            want_dy[c] += g;
            mag_dy[c] += std::fabs(g);
            want_dy_xc[c] += t;
            mag_dy_xc[c] += std::fabs(t);
          }
          for (bool stream : {false, true})
            for (const std::string over : {"", "dy", "x"}) {
              const std::string where = isa + " " + std::string(to_string(dt)) + " C " + std::to_string(C) +
                                        " offset " + std::to_string(dx_offset) + (stream ? " stream" : "") +
                                        (over.empty() ? "" : " in place over " + over);
              std::fill(dx_piped.bytes.begin(), dx_piped.bytes.end(), std::byte{0x5a});
              if (!over.empty())
                std::memcpy(dx_piped.at(od), (over == "dy" ? dy : x).at(0),
                            static_cast<std::size_t>(n) * size_of(dt));
              std::vector<double> s1(Cs, 0.25), s2(Cs, -0.25);  // the sums add to what is there
              kb::rows_apply_and_reduce(
                  dt, over == "x" ? dx_piped.at(od) : x.at(0), over == "dy" ? dx_piped.at(od) : dy.at(0),
                  dx_piped.at(od), r, center.data(), k_dy.data(), k_xc.data(), k_const.data(), stream,
                  nx.at(0), ndy.at(0), next_center.data(), scratch.data(), s1.data(), s2.data());
              kb::stream_fence();
              ASSERT_EQ(
                  std::memcmp(dx_plain.at(0), dx_piped.at(od), static_cast<std::size_t>(n) * size_of(dt)), 0)
                  << where;
              for (std::size_t c = 0; c < Cs; ++c) {
                ASSERT_NEAR(s1[c], 0.25 + want_dy[c], 1e-5 * mag_dy[c] + 1e-12) << where << " channel " << c;
                ASSERT_NEAR(s2[c], -0.25 + want_dy_xc[c], 1e-5 * mag_dy_xc[c] + 1e-12)
                    << where << " channel " << c;
              }
            }
        }
  });
}

// The pipelined kernels walk the next block beside the output: in one loop
// when the output starts a cache line, with a position of their own when it
// does not. The sums (and the outputs) must be the same bits either way,
// and the sums those of the next block.
TEST(BatchNormKernels, PipelinedSumsDoNotDependOnTheOutputAlignment) {
  for_each_isa([](const std::string&) {
    for (DType dt : kTypes)
      for (std::int64_t len : {1, 15, 16, 17, 31, 33, 49, 64, 100, 196, 333})
        for (bool stream : {false, true}) {
          const std::int64_t planes = 3, n = planes * len;
          const std::size_t es = size_of(dt), bytes = static_cast<std::size_t>(n) * es;
          Raw x(dt, 2 * n), dy(dt, 2 * n);
          fill(x, 2 * n, static_cast<std::uint64_t>(len), 2.0f, 1.5f);
          fill(dy, 2 * n, 7, 0.0f, 1.0f);
          // Outputs starting a cache line, and 1 or 3 elements past one.
          std::vector<std::byte> out(3 * (bytes + 128));
          auto line = [&](int k) {
            std::byte* at = out.data() + static_cast<std::size_t>(k) * (bytes + 128);
            return at + bytes_to_line(at);
          };
          std::byte* y[3] = {line(0), line(1) + es, line(2) + 3 * es};
          const float c[3] = {2.0f, 1.5f, 2.5f}, sc[3] = {0.5f, 1.0f, 2.0f}, sh[3] = {0.0f, 0.25f, -1.0f};
          const float pivots[3] = {2.0f, 2.25f, 1.75f};
          double f_sums[3][6], b_sums[3][6];
          std::vector<std::byte> f_out[3], b_out[3];
          for (int k = 0; k < 3; ++k) {
            kb::normalize_and_sum(dt, x.at(0), y[k], planes, len, c, sc, sh, stream, x.at(n), pivots,
                                  f_sums[k]);
            kb::stream_fence();
            f_out[k].assign(y[k], y[k] + bytes);
            kb::apply_and_reduce(dt, x.at(0), dy.at(0), y[k], planes, len, c, sc, sh, c, stream, x.at(n),
                                 dy.at(n), pivots, b_sums[k]);
            kb::stream_fence();
            b_out[k].assign(y[k], y[k] + bytes);
          }
          const std::string what = std::string(to_string(dt)) + " len " + std::to_string(len) + " stream " +
                                   std::to_string(stream);
          for (int k = 1; k < 3; ++k) {
            EXPECT_EQ(std::memcmp(f_sums[k], f_sums[0], sizeof f_sums[0]), 0) << what << " output +" << k;
            EXPECT_EQ(std::memcmp(b_sums[k], b_sums[0], sizeof b_sums[0]), 0) << what << " output +" << k;
            EXPECT_EQ(f_out[k], f_out[0]) << what << " output +" << k;
            EXPECT_EQ(b_out[k], b_out[0]) << what << " output +" << k;
          }
          for (std::int64_t q = 0; q < planes; ++q) {
            double a = 0, abs_a = 0, sq = 0, g = 0, abs_g = 0, gx = 0, abs_gx = 0;
            for (std::int64_t j = 0; j < len; ++j) {
              const std::int64_t i = n + q * len + j;
              const double e = load_float(dt, x.at(0), i) - pivots[q], t = load_float(dt, dy.at(0), i);
              a += e;
              abs_a += std::fabs(e);
              sq += e * e;
              g += t;
              abs_g += std::fabs(t);
              gx += t * e;
              abs_gx += std::fabs(t * e);
            }
            EXPECT_NEAR(f_sums[0][2 * q], a, 1e-6 * abs_a + 1e-9) << what;
            EXPECT_NEAR(f_sums[0][2 * q + 1], sq, 1e-6 * sq + 1e-9) << what;
            EXPECT_NEAR(b_sums[0][2 * q], g, 1e-6 * abs_g + 1e-9) << what;
            EXPECT_NEAR(b_sums[0][2 * q + 1], gx, 1e-6 * abs_gx + 1e-9) << what;
          }
        }
  });
}

// Each normalize kernel with a ReLU that keeps its mask writes bit
// mask_first + e for each output element e it writes (set where that
// output is > 0), and no other bit: the bytes at a run's ends hold other
// runs' bits. The mask starts at every bit offset within a byte; the
// outputs are the kernel's own without a mask.
TEST(BatchNormKernels, ReluMaskWritesOnlyItsOwnBits) {
  for_each_isa([](const std::string&) {
    for (DType dt : kTypes)
      for (std::int64_t len : {1, 3, 7, 15, 16, 17, 33, 49, 100})
        for (std::int64_t first : {0, 1, 3, 7, 8, 13})
          for (bool stream : {false, true}) {
            const std::int64_t planes = 3, n = planes * len;
            Raw x(dt, 2 * n + 8), y(dt, 2 * n + 8), y_plain(dt, 2 * n + 8);
            fill(x, 2 * n + 8, static_cast<std::uint64_t>(len), 0.0f, 1.0f);
            const float c[3] = {0.0f, 0.25f, -0.5f}, sc[3] = {1.0f, 0.5f, 2.0f}, sh[3] = {0.0f, 0.1f, -0.2f};
            const float pivots[3] = {0.0f, 0.0f, 0.0f};
            const auto cc = cyclic({c[0]}), cs = cyclic({sc[0]}), csh = cyclic({sh[0]});
            const std::string what = std::string(to_string(dt)) + " len " + std::to_string(len) + " first " +
                                     std::to_string(first) + " stream " + std::to_string(stream);
            // kernel(y, post) writes elements of y; `written` says which.
            auto check = [&](const char* name, auto kernel, auto written) {
              std::vector<std::uint8_t> mask(static_cast<std::size_t>((first + 2 * n + 8) / 8 + 16), 0xA5);
              const std::vector<std::uint8_t> before = mask;
              y.bytes = y_plain.bytes = x.bytes;
              kernel(y_plain.at(1), kb::Epilogue{nullptr, true});
              kernel(y.at(1), kb::Epilogue{nullptr, true, mask.data(), first});
              kb::stream_fence();
              ASSERT_EQ(y.bytes, y_plain.bytes) << name << " " << what;
              for (std::int64_t b = 0; b < static_cast<std::int64_t>(8 * mask.size()); ++b) {
                const std::int64_t e = b - first;
                const bool bit = (mask[static_cast<std::size_t>(b / 8)] >> (b % 8)) & 1;
                const bool want = e >= 0 && written(e)
                                      ? load_float(dt, y.at(1), e) > 0.0f
                                      : (before[static_cast<std::size_t>(b / 8)] >> (b % 8)) & 1;
                ASSERT_EQ(bit, want) << name << " " << what << ": bit " << b << " (element " << e << ")";
              }
            };
            const kb::Runs runs{2, len, len + 5};
            check(
                "normalize",
                [&](void* out, const kb::Epilogue& post) {
                  kb::normalize(dt, x.at(1), out, runs, c[0], sc[0], sh[0], stream, post);
                },
                [&](std::int64_t e) { return e < 2 * runs.stride && e % runs.stride < len; });
            check(
                "normalize_planes",
                [&](void* out, const kb::Epilogue& post) {
                  kb::normalize_planes(dt, x.at(1), out, planes, len, 0, 3, c, sc, sh, stream, post);
                },
                [&](std::int64_t e) { return e < n; });
            check(
                "rows_normalize",
                [&](void* out, const kb::Epilogue& post) {
                  kb::rows_normalize(dt, x.at(1), out, kb::Rows{n, 1}, cc.data(), cs.data(), csh.data(),
                                     stream, post);
                },
                [&](std::int64_t e) { return e < n; });
            double sums[6];
            check(
                "normalize_and_sum",
                [&](void* out, const kb::Epilogue& post) {
                  kb::normalize_and_sum(dt, x.at(1), out, planes, len, c, sc, sh, stream, x.at(1 + n), pivots,
                                        sums, post);
                },
                [&](std::int64_t e) { return e < n; });
          }
  });
}

TEST(BatchNormKernels, Bf16NanRoundsToQuietNan) {
  for_each_isa([](const std::string&) {
    std::vector<std::uint16_t> x(40, bf16_from_float(1.0f)), y(40);
    x[3] = 0x7F81;  // signalling-NaN pattern: must not turn into Inf on rounding
    x[20] = 0xFFFF;
    kb::normalize(DType::bf16, x.data(), y.data(), kb::Runs{1, 40, 40}, 0.0f, 1.0f, 0.0f, false);
    EXPECT_EQ(y[3], 0x7FC0);
    EXPECT_EQ(y[20], 0x7FC0);
    EXPECT_EQ(y[4], bf16_from_float(1.0f));
  });
}

}  // namespace
}  // namespace bnorm::test

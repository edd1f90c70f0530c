// bf16 / f16 scalar conversions: exact widening, round-to-nearest-even
// narrowing checked against the definition (the nearest representable value,
// ties to the even pattern), and NaN / Inf handling.

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "bnorm/batch_norm.hpp"
#include "bnorm/error.hpp"
#include "bnorm/runtime.hpp"
#include "bnorm/tensor.hpp"
#include "common/test_util.hpp"
#include "kernels/common/native_bf16.hpp"
#include "kernels/common/scalar.hpp"

namespace bnorm {
namespace {

bool is_nan16(std::uint16_t bits, int mantissa_bits) {
  const std::uint16_t exp_mask =
      static_cast<std::uint16_t>(((1u << (15 - mantissa_bits)) - 1) << mantissa_bits);
  return (bits & exp_mask) == exp_mask && (bits & ((1u << mantissa_bits) - 1)) != 0;
}

// Checks that `bits` is a correct round-to-nearest-even of x, by comparing
// with the neighbouring patterns (same sign, magnitude one step up or down).
template <class ToFloat>
::testing::AssertionResult rounds_to_nearest_even(float x, std::uint16_t bits, ToFloat to_float) {
  const double got = to_float(bits);
  const double err = std::fabs(got - x);
  for (int step : {-1, 1}) {
    const auto magnitude = static_cast<std::uint16_t>(bits & 0x7FFF);
    if ((step < 0 && magnitude == 0)) continue;
    const auto neighbour = static_cast<std::uint16_t>((bits & 0x8000) | (magnitude + step));
    const double alt = to_float(neighbour);
    if (std::isnan(alt)) continue;
    const double alt_err = std::fabs(alt - x);
    if (alt_err < err || (alt_err == err && (bits & 1) != 0)) {
      return ::testing::AssertionFailure() << "x = " << x << " rounded to " << got << " (0x" << std::hex
                                           << bits << "), but " << alt << " is nearer or the even tie";
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(Conversions, F16RoundTripsEveryPattern) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    const float f = f16_to_float(bits);
    if (is_nan16(bits, 10)) {
      EXPECT_TRUE(std::isnan(f)) << b;
      EXPECT_TRUE(is_nan16(f16_from_float(f), 10)) << b;
    } else {
      ASSERT_EQ(f16_from_float(f), bits) << "pattern 0x" << std::hex << b;
    }
  }
}

TEST(Conversions, Bf16RoundTripsEveryPattern) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    const float f = bf16_to_float(bits);
    ASSERT_EQ(std::bit_cast<std::uint32_t>(f), b << 16);
    if (is_nan16(bits, 7)) {
      EXPECT_EQ(bf16_from_float(f), 0x7FC0);
    } else {
      ASSERT_EQ(bf16_from_float(f), bits) << "pattern 0x" << std::hex << b;
    }
  }
}

TEST(Conversions, NarrowingRoundsToNearestEven) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> any_bits;
  for (int i = 0; i < 200000; ++i) {
    // Random magnitudes across the f16 range (and beyond, for overflow).
    const float x = std::ldexp(std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng),
                               std::uniform_int_distribution<int>(-26, 17)(rng));
    if (std::fabs(x) < 65504.0f) {
      ASSERT_TRUE(rounds_to_nearest_even(x, f16_from_float(x), f16_to_float));
    }
    const float y = std::bit_cast<float>(any_bits(rng));
    if (std::isfinite(y) && std::fabs(y) < 3.38e38f) {
      ASSERT_TRUE(rounds_to_nearest_even(y, bf16_from_float(y), bf16_to_float));
    }
  }
  // Exact ties go to the even pattern.
  EXPECT_EQ(bf16_from_float(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // 1 + 2^-8: tie, down to even
  EXPECT_EQ(bf16_from_float(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie, up to even
  EXPECT_EQ(f16_from_float(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(f16_from_float(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
}

TEST(Conversions, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(f16_from_float(inf), 0x7C00);
  EXPECT_EQ(f16_from_float(-inf), 0xFC00);
  EXPECT_EQ(f16_from_float(70000.0f), 0x7C00);               // overflow to inf
  EXPECT_EQ(f16_from_float(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(f16_from_float(std::ldexp(1.0f, -26)), 0x0000);  // below half of it
  EXPECT_EQ(bf16_from_float(inf), 0x7F80);
  EXPECT_EQ(bf16_from_float(std::numeric_limits<float>::quiet_NaN()), 0x7FC0);
  EXPECT_EQ(bf16_from_float(std::numeric_limits<float>::max()), 0x7F80);  // rounds up to inf
  EXPECT_TRUE(std::isnan(f16_to_float(f16_from_float(std::numeric_limits<float>::quiet_NaN()))));
}

// The portable f16 conversions (for compilers without _Float16) against the
// definition and, where the compiler has _Float16, bit for bit against it.
TEST(Conversions, PortableF16MatchesIeee) {
  using kernels::f16_bits_to_float_portable;
  using kernels::float_to_f16_bits_portable;
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    const float f = f16_bits_to_float_portable(bits);
    ASSERT_EQ(std::bit_cast<std::uint32_t>(f), std::bit_cast<std::uint32_t>(f16_to_float(bits)))
        << "pattern 0x" << std::hex << b;
    if (!std::isnan(f)) {
      ASSERT_EQ(float_to_f16_bits_portable(f), bits) << "pattern 0x" << std::hex << b;
    }
  }
  // Every f32 exponent and f16-kept mantissa, with the dropped bits at each
  // rounding boundary; then random patterns (covering the subnormal range,
  // where the rounding position moves).
  std::mt19937 rng(11);
  std::uniform_int_distribution<std::uint32_t> any_bits;
  auto check = [](std::uint32_t pattern) {
    const float x = std::bit_cast<float>(pattern);
    const std::uint16_t got = float_to_f16_bits_portable(x);
    if (std::isnan(x)) return is_nan16(got, 10) ? ::testing::AssertionSuccess() : ::testing::AssertionFailure();
    if (got != f16_from_float(x))
      return ::testing::AssertionFailure() << "x = " << x << " (0x" << std::hex << pattern << ") gives 0x" << got
                                           << ", IEEE 0x" << f16_from_float(x);
    return std::fabs(x) < 65504.0f ? rounds_to_nearest_even(x, got, f16_to_float) : ::testing::AssertionSuccess();
  };
  for (std::uint32_t sign : {0u, 0x80000000u})
    for (std::uint32_t exp = 0; exp < 256; ++exp)
      for (std::uint32_t kept = 0; kept < 1024; ++kept)
        for (std::uint32_t dropped : {0x0u, 0x1u, 0xFFFu, 0x1000u, 0x1001u, 0x1FFFu, any_bits(rng) & 0x1FFFu})
          ASSERT_TRUE(check(sign | (exp << 23) | (kept << 13) | dropped));
  for (int i = 0; i < 4000000; ++i) {
    const std::uint32_t p = any_bits(rng);
    ASSERT_TRUE(check(p));
    ASSERT_TRUE(check((p & 0x807FFFFFu) | ((102u + p % 12u) << 23)));  // |x| near 2^-14 and below
  }
}

// The kernels' vector bf16 stores (AVX3_BF16: AVX512-BF16's instruction,
// which flushes subnormals and keeps NaN payloads, so those lanes take the
// emulation) round exactly as the scalar routine: every bf16 input pattern,
// scaled by inference batch norm (mean 0, var 1, eps 0: y = x * gamma + 0,
// as the instruction set multiplies and adds) so that results fall on ties, subnormals, overflow to inf
// and NaN, in both layouts, on every instruction set.
TEST(Conversions, KernelStoresRoundAsTheScalarRoutine) {
  std::vector<std::uint16_t> x(65536), y(65536);
  for (std::uint32_t b = 0; b < 65536; ++b) x[b] = static_cast<std::uint16_t>(b);
  const float zero = 0.0f, one = 1.0f, beta = 0.0f;
  for (const float gamma :
       {1.0f, 3.0f, 1.0f + std::ldexp(1.0f, -9), -1.5f, std::ldexp(1.0f, -100), std::ldexp(1.5f, 100)}) {
    SCOPED_TRACE("gamma " + std::to_string(gamma));
    test::for_each_isa([&](const std::string& isa) {
      for (const Layout layout : {Layout::channels_first, Layout::channels_last}) {
        const TensorDesc d(DType::bf16, layout, {1, 1, 65536});
        std::fill(y.begin(), y.end(), std::uint16_t{0x1234});
        batch_norm_forward_inference(d, x.data(), d, y.data(), &gamma, &beta, &zero, &one, 0.0);
        for (std::uint32_t b = 0; b < 65536; ++b) {
          const float want =
              test::multiply_add(test::isa_fuses_multiply_add(isa), bf16_to_float(x[b]), gamma, 0.0f);
          ASSERT_EQ(y[b], bf16_from_float(want))
              << "x pattern 0x" << std::hex << b << ", x * gamma = " << want;
        }
      }
    });
  }
}

// The instruction-set names: each one set_isa() takes is what isa() then
// reports, AVX3_BF16 exactly when the CPU has AVX512-BF16 (listed before
// AVX3), "" restores the first, and an unknown name is refused with the list.
TEST(Conversions, IsaNames) {
  const std::vector<std::string> names = supported_isas();
  ASSERT_FALSE(names.empty());
  const auto avx3 = std::find(names.begin(), names.end(), "AVX3");
  const auto bf16 = std::find(names.begin(), names.end(), "AVX3_BF16");
  EXPECT_EQ(bf16 != names.end(), avx3 != names.end() && kernels::cpu_has_avx512_bf16());
  if (bf16 != names.end()) {
    EXPECT_EQ(bf16 + 1, avx3);
  }
  for (const std::string& name : names) {
    set_isa(name);
    EXPECT_EQ(isa(), name);
    EXPECT_EQ(kernels::native_bf16, name == "AVX3_BF16");
  }
  set_isa(names.back());
  try {
    set_isa("AVX9");
    FAIL() << "accepted an unknown isa";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    EXPECT_NE(std::string(e.what()).find(names.front()), std::string::npos) << e.what();
  }
  EXPECT_EQ(isa(), names.front());
}

}  // namespace
}  // namespace bnorm

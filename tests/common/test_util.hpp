// Helpers shared by bnorm's tests: typed buffers, seeded data, tolerances.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "bnorm/bnorm.hpp"

namespace bnorm::test {

/// A packed tensor of any dtype in host memory.
struct Buffer {
  TensorDesc desc;
  std::vector<std::byte> bytes;

  explicit Buffer(const TensorDesc& d) : desc(d), bytes(d.bytes()) {}
  void* data() { return bytes.data(); }
  const void* data() const { return bytes.data(); }
  std::int64_t size() const { return desc.elements(); }

  float get(std::int64_t i) const {
    if (desc.dtype() == DType::f32) {
      float v;
      std::memcpy(&v, bytes.data() + 4 * i, 4);
      return v;
    }
    std::uint16_t b;
    std::memcpy(&b, bytes.data() + 2 * i, 2);
    return desc.dtype() == DType::bf16 ? bf16_to_float(b) : f16_to_float(b);
  }
  void set(std::int64_t i, float v) {
    if (desc.dtype() == DType::f32) {
      std::memcpy(bytes.data() + 4 * i, &v, 4);
      return;
    }
    const std::uint16_t b = desc.dtype() == DType::bf16 ? bf16_from_float(v) : f16_from_float(v);
    std::memcpy(bytes.data() + 2 * i, &b, 2);
  }
};

/// Fills b with N(mean, stddev) values, rounded to its dtype.
inline void fill_normal(Buffer& b, std::uint64_t seed, double mean = 0.0, double stddev = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(mean, stddev);
  for (std::int64_t i = 0; i < b.size(); ++i) b.set(i, static_cast<float>(dist(rng)));
}

/// n floats from U(lo, hi).
inline std::vector<float> uniform(std::size_t n, std::uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

/// One unit in the last place of |v| in dtype (the rounding step there).
inline double ulp(DType dtype, double v) {
  const int mantissa_bits = dtype == DType::f32 ? 23 : dtype == DType::bf16 ? 7 : 10;
  const double a = std::fabs(v);
  if (a == 0.0 || !std::isfinite(a)) return 0.0;
  int e;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  return std::ldexp(1.0, e - 1 - mantissa_bits);
}

/// Tolerance for a computed element of dtype whose exact value is `exact`:
/// `abs` for the f32 arithmetic, plus one step of the output type (the f32
/// result may round to the neighbour of the correctly rounded value).
inline double element_tolerance(DType dtype, double exact, double abs) {
  return abs + (dtype == DType::f32 ? 0.0 : ulp(dtype, exact));
}

/// Runs f and expects a bnorm::Error of `kind` whose message contains every
/// fragment (an error names the argument, the value and the rule).
template <class F>
void expect_error(F&& f, ErrorKind kind, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const char* frag : fragments)
      EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) << "'" << frag << "' not in: " << e.what();
  }
}

/// The numerics bar's data: N(mean, stddev) far from zero relative to its
/// spread makes naive variance formulas cancel (DESIGN.md section 3).
struct Distribution {
  double mean, stddev;
};
inline constexpr Distribution kAdversarial[] = {{0.0, 1.0}, {1e4, 0.1}, {1e3, 1e-2}, {1e5, 1.0}};

/// Largest |got[i] - want[i]|.
inline double max_abs_error(const Buffer& got, const std::vector<double>& want) {
  double worst = 0.0;
  for (std::int64_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(got.get(i)) - want[static_cast<std::size_t>(i)]));
  return worst;
}

/// Central difference of f() in the direction of coordinate k of v (f reads
/// v), step 1e-5 relative; v is restored.
template <class F>
double central_difference(std::vector<double>& v, std::size_t k, F&& f) {
  const double h = 1e-5 * std::max(1.0, std::fabs(v[k]));
  const double keep = v[k];
  v[k] = keep + h;
  const double up = f();
  v[k] = keep - h;
  const double down = f();
  v[k] = keep;
  return (up - down) / (2 * h);
}

/// Counts elements where |got - want| > tol(want); reports the worst one.
template <class Got, class Tol>
::testing::AssertionResult all_close(std::int64_t n, Got got, const double* want, Tol tol,
                                     const std::string& what) {
  std::int64_t bad = 0, worst = -1;
  double worst_excess = 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double g = got(i), w = want[i];
    if (std::isnan(w) && std::isnan(g)) continue;
    const double err = std::fabs(g - w), t = tol(w);
    if (!(err <= t)) {
      ++bad;
      if (worst < 0 || !(err - t <= worst_excess)) {
        worst = i;
        worst_excess = err - t;
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << bad << " of " << n << " elements out of tolerance; worst at " << worst << ": got "
         << got(worst) << ", want " << want[worst] << ", tolerance " << tol(want[worst]);
}

/// Bytes from p to the next 64-byte boundary (0 when p is on one): where a
/// test puts data that streaming stores should see on a cache line.
inline std::size_t bytes_to_line(const void* p) {
  return (64 - reinterpret_cast<std::uintptr_t>(p) % 64) % 64;
}

/// Whether Highway's MulAdd is one fused operation on this instruction set
/// (AVX2 and AVX-512 have FMA; SSE4 and the portable target multiply, round,
/// then add).
inline bool isa_fuses_multiply_add(const std::string& isa) { return isa.rfind("AVX", 0) == 0; }

/// a * b + c as the instruction set computes it (needs -ffp-contract=off,
/// the default in ISO C++ mode, so the unfused form is not contracted).
inline float multiply_add(bool fused, float a, float b, float c) {
  return fused ? std::fma(a, b, c) : a * b + c;
}

/// Runs body once per instruction set this build and CPU support, then
/// restores automatic dispatch.
template <class F>
void for_each_isa(F&& body) {
  for (const std::string& name : supported_isas()) {
    SCOPED_TRACE("isa " + name);
    set_isa(name);
    body(name);
  }
  set_isa("");
}

}  // namespace bnorm::test

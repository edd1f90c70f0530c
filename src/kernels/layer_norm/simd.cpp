// Optimized layer-norm building blocks, compiled once per instruction set by
// Highway (foreach_target.h) and chosen at run time by HWY_DYNAMIC_DISPATCH.
// Declarations and contracts: kernels.hpp.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/layer_norm/simd.cpp"
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/common/simd_io-inl.h"
#include "kernels/layer_norm/kernels.hpp"

HWY_BEFORE_NAMESPACE();
namespace bnorm::kernels::HWY_NAMESPACE {
namespace {

using layer_norm::kAddsPerFlush;
using layer_norm::Pivot;
using layer_norm::RowBlock;

// The storage type of a dtype as a value, for generic lambdas.
template <DType kType>
struct TypeTag {
  static constexpr DType value = kType;
};

// Calls f(TypeTag<dtype>{}): one instantiation per element type.
template <class F>
HWY_INLINE void OnDType(DType dtype, F&& f) {
  if (dtype == DType::bf16) {
    f(TypeTag<DType::bf16>{});
  } else if (dtype == DType::f16) {
    f(TypeTag<DType::f16>{});
  } else {
    f(TypeTag<DType::f32>{});
  }
}

// Calls f(with_gamma, centered) with std::bool_constant values for whether
// gamma and the centers are given: one instantiation per combination.
template <class F>
HWY_INLINE void OnGammaAndCenter(const float* gamma, const float* center, F&& f) {
  using Y = std::true_type;
  using N = std::false_type;
  if (gamma && center) {
    f(Y{}, Y{});
  } else if (gamma) {
    f(Y{}, N{});
  } else if (center) {
    f(N{}, Y{});
  } else {
    f(N{}, N{});
  }
}

template <DType kType>
HWY_INLINE float ScalarAsF32(const Storage<kType>* p) {
  if constexpr (kType == DType::f32) {
    return *p;
  } else if constexpr (kType == DType::bf16) {
    return bf16_bits_to_float(*p);
  } else {
    return f16_bits_to_float(*p);
  }
}

// count (<= Lanes) f32 values, or all lanes when count == Lanes.
HWY_INLINE VF LoadSomeF32(DF d, const float* p, size_t count, float fill) {
  return LoadSomeAsF32<DType::f32>(d, p, count, fill);
}
HWY_INLINE void StoreSomeF32(DF d, VF v, float* p, size_t count) {
  if (count == hn::Lanes(d)) {
    hn::StoreU(v, d, p);
  } else {
    StorePartialFromF32<DType::f32>(d, v, p, count);
  }
}

// Calls step(i, count) for the vectors of [0, n): full ones, then a partial
// one (count < Lanes) when n is not a multiple of the vector length.
template <class Step>
HWY_INLINE void ForEachVector(DF d, size_t n, Step&& step) {
  const size_t lanes = hn::Lanes(d);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) step(i, lanes);
  if (i < n) step(i, n - i);
}

// Fetches the line holding p into L2 (not L1): the next block arrives while
// this one is worked on from L1, and L2's larger miss queue keeps more
// lines in flight than L1's.
template <class T>
HWY_INLINE void PrefetchToL2(const T* p) {
  __builtin_prefetch(p, 0, 2);
}

// ---------------------------------------------------------------- statistics

// Rows longer than this sample their pivot over the whole row (the first
// values may be anything); shorter rows are in cache for the second pass
// anyway, so the cheap sample of their first values is enough.
constexpr size_t kSpreadPivotLength = 16384;
constexpr size_t kPivotValues = 64;

template <DType kType>
HWY_INLINE float RowPivot(const Storage<kType>* HWY_RESTRICT p, size_t n) {
  const DF d;
  float pivot;
  if (n <= kSpreadPivotLength) {
    const size_t m = std::min(n, kPivotValues);
    VF sum = hn::Zero(d);
    ForEachVector(d, m, [&](size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
      sum = hn::Add(sum, LoadSomeAsF32<kType>(d, p + i, count, 0.0f));
    });
    pivot = static_cast<float>(SumLanesInDouble(d, sum) / static_cast<double>(m));
  } else {
    float sum = 0.0f;
    for (size_t k = 0; k < kPivotValues; ++k) sum += ScalarAsF32<kType>(p + k * (n / kPivotValues));
    pivot = sum / static_cast<float>(kPivotValues);
  }
  return pivot - pivot == 0.0f ? pivot : 0.0f;  // a useful pivot is finite
}

// Two f32 sums over one row: sum of term_a(v) and of term_b(v) over the
// values v of x (a partial last vector loads `fill`, for which both terms
// must be 0); with kWithA false only the second (term_a unused, out_a not
// written). Four accumulators each, folded into double after kAddsPerFlush
// rounds: with two, each round waited on the additions' latency (rows of
// 4096 in cache, one thread: layer norm's sums 0.87-0.90 the time with four,
// RMS norm's 0.70 in bf16, 0.88 in f32; they are a pass of their own beside
// the forward's DRAM traffic).
template <DType kType, bool kWithA, class TermA, class TermB>
HWY_INLINE void RowTwoSums(const Storage<kType>* HWY_RESTRICT x, size_t n, float fill, const TermA& term_a,
                           const TermB& term_b, double* out_a, double* out_b) {
  const DF d;
  const size_t lanes = hn::Lanes(d);
  VF a[4], b[4];
  for (size_t k = 0; k < 4; ++k) a[k] = b[k] = hn::Zero(d);
  double sum_a = 0.0, sum_b = 0.0;
  auto fold = [&]() HWY_ATTR BNORM_ALWAYS_INLINE {
    if constexpr (kWithA) sum_a += SumLanesInDouble(d, hn::Add(hn::Add(a[0], a[1]), hn::Add(a[2], a[3])));
    sum_b += SumLanesInDouble(d, hn::Add(hn::Add(b[0], b[1]), hn::Add(b[2], b[3])));
    for (size_t k = 0; k < 4; ++k) a[k] = b[k] = hn::Zero(d);
  };
  size_t i = 0;
  while (i + 4 * lanes <= n) {
    for (size_t round = 0; round < static_cast<size_t>(kAddsPerFlush) && i + 4 * lanes <= n;
         ++round, i += 4 * lanes) {
      VF v[4];
      LoadPairAsF32AnyOrder<kType>(d, x + i, v[0], v[1]);
      LoadPairAsF32AnyOrder<kType>(d, x + i + 2 * lanes, v[2], v[3]);
      for (size_t k = 0; k < 4; ++k) {
        if constexpr (kWithA) a[k] = hn::Add(a[k], term_a(v[k]));
        b[k] = hn::Add(b[k], term_b(v[k]));
      }
    }
    fold();
  }
  // At most three full and one partial vector remain.
  for (size_t k = 0; i + lanes <= n; ++k, i += lanes) {
    const VF v = LoadAsF32<kType>(d, x + i);
    if constexpr (kWithA) a[k] = term_a(v);
    b[k] = term_b(v);
  }
  if (i < n) {
    const VF v = LoadPartialAsF32<kType>(d, x + i, n - i, fill);
    if constexpr (kWithA) a[3] = term_a(v);
    b[3] = term_b(v);
  }
  fold();
  if constexpr (kWithA) *out_a = sum_a;
  *out_b = sum_b;
}

template <DType kType>
void RowsShiftedSumsT(const Storage<kType>* x, RowBlock block, Pivot mode, float* pivot, double* s1,
                      double* s2) {
  const DF d;
  const size_t n = static_cast<size_t>(block.len);
  for (std::int64_t r = 0; r < block.rows; ++r) {
    const Storage<kType>* p = x + static_cast<size_t>(r) * n;
    auto square = [](VF v) HWY_ATTR { return hn::Mul(v, v); };
    if (mode == Pivot::zero) {
      // RMS norm: the sum of squares alone.
      pivot[r] = 0.0f;
      s1[r] = 0.0;
      RowTwoSums<kType, false>(p, n, 0.0f, square, square, nullptr, &s2[r]);
      continue;
    }
    const float pv = n == 0 ? 0.0f : RowPivot<kType>(p, n);
    pivot[r] = pv;
    const VF vp = hn::Set(d, pv);
    RowTwoSums<kType, true>(
        p, n, pv, [vp](VF v) HWY_ATTR { return hn::Sub(v, vp); },
        [vp, square](VF v) HWY_ATTR { return square(hn::Sub(v, vp)); }, &s1[r], &s2[r]);
  }
}

template <DType kType>
double RowSumSqCenteredT(const Storage<kType>* x, size_t n, float center) {
  const DF d;
  const VF vc = hn::Set(d, center);
  double sq;
  auto square = [vc](VF v) HWY_ATTR {
    const VF e = hn::Sub(v, vc);
    return hn::Mul(e, e);
  };
  RowTwoSums<kType, false>(x, n, center, square, square, nullptr, &sq);
  return sq;
}

// ---------------------------------------------------------------- forward

// Whether rows of n elements from y store their outputs in vector pairs
// (StorePairFromF32): 16-bit data, rows a whole number of pairs and, when
// streamed, y on a cache line and every row whole lines (AVX2 and SSE4 pairs
// are under a line: a row ending mid-line would leave the next row's first
// store in that line plain, and a line written partly each way is slow).
template <DType kType>
HWY_INLINE bool PairedRows(DF d, const Storage<kType>* y, size_t n, bool stream) {
  if (kType == DType::f32 || n % (2 * hn::Lanes(d)) != 0) return false;
  return !stream || (reinterpret_cast<std::uintptr_t>(y) % 64 == 0 && (n * sizeof(Storage<kType>)) % 64 == 0);
}

// kRows consecutive rows from `row` in one walk over the columns, so that
// gamma and beta are loaded once per kRows rows (row by row, they were most
// of the loads, and slow when not 64-byte aligned). With `stream`, the rows'
// outputs must be a whole number of cache lines apart.
template <DType kType, bool kGamma, bool kBeta, size_t kRows>
HWY_INLINE void NormalizeRowGroup(const Storage<kType>* x, Storage<kType>* y, RowBlock block,
                                  std::int64_t row, const float* center, const float* scale,
                                  const float* shift, const float* gamma, const float* beta, bool stream,
                                  std::int64_t prefetch_rows) {
  const DF d;
  const size_t n = static_cast<size_t>(block.len), off = static_cast<size_t>(row) * n;
  const size_t ahead = static_cast<size_t>(block.rows) * n;  // to the same row of the next block
  VF vc[kRows], vs[kRows], vt[kRows];
  bool prefetch[kRows];
  for (size_t k = 0; k < kRows; ++k) {
    const size_t r = static_cast<size_t>(row) + k;
    vc[k] = hn::Set(d, center[r]);
    vs[k] = hn::Set(d, scale[r]);
    vt[k] = hn::Set(d, shift[r]);
    prefetch[k] = static_cast<std::int64_t>(r) < prefetch_rows;
  }
  // Row k's output at [i, i + count), gamma and beta there in g and b.
  auto out = [&](size_t k, size_t i, size_t count, VF g, VF b) HWY_ATTR BNORM_ALWAYS_INLINE {
    // (x - center) is exact for x near the mean; shift holds the mean's f32
    // rounding residue.
    const VF v = LoadSomeAsF32<kType>(d, x + off + k * n + i, count, 0.0f);
    const VF xhat = hn::MulAdd(hn::Sub(v, vc[k]), vs[k], vt[k]);
    if constexpr (kGamma && kBeta) return hn::MulAdd(xhat, g, b);
    if constexpr (kGamma) return hn::Mul(xhat, g);
    if constexpr (kBeta) return hn::Add(xhat, b);
    return xhat;
  };
  auto params = [&](size_t i, size_t count, VF& g, VF& b) HWY_ATTR BNORM_ALWAYS_INLINE {
    g = kGamma ? LoadSomeF32(d, gamma + i, count, 0.0f) : hn::Zero(d);
    b = kBeta ? LoadSomeF32(d, beta + i, count, 0.0f) : hn::Zero(d);
  };
  const size_t lanes = hn::Lanes(d);
  if (PairedRows<kType>(d, y + off, n, stream)) {
    // 16-bit rows of whole vector pairs from a line boundary: two vectors
    // per step, converted and stored at once (a whole line on AVX3: one
    // prefetch of x per pair). In one process, alternating, 8192x4096, 2
    // threads: bf16 layer norm 0.94 the time, RMS norm 0.90 (f32 in pairs:
    // 1.01-1.02, so it keeps the walk below).
    for (size_t i = 0; i < n; i += 2 * lanes) {
      VF g[2], b[2];
      params(i, lanes, g[0], b[0]);
      params(i + lanes, lanes, g[1], b[1]);
      for (size_t k = 0; k < kRows; ++k) {
        if (prefetch[k]) PrefetchToL2(x + off + k * n + ahead + i);
        const VF lo = out(k, i, lanes, g[0], b[0]);
        StorePairFromF32<kType>(d, lo, out(k, i + lanes, lanes, g[1], b[1]), y + off + k * n + i, stream);
      }
    }
    return;
  }
  ForEachOutputPosition<kType>(
      d, y + off, n, stream, [&](size_t i, size_t count, bool nt) HWY_ATTR BNORM_ALWAYS_INLINE {
        VF g, b;
        params(i, count, g, b);
        for (size_t k = 0; k < kRows; ++k) {
          if (prefetch[k]) PrefetchToL2(x + off + k * n + ahead + i);
          StoreOutput<kType>(d, out(k, i, count, g, b), y + off + k * n + i, count, nt);
        }
      });
}

template <DType kType, bool kGamma, bool kBeta>
void RowsNormalizeT(const Storage<kType>* x, Storage<kType>* y, RowBlock block, const float* center,
                    const float* scale, const float* shift, const float* gamma, const float* beta, bool stream,
                    std::int64_t prefetch_rows) {
  std::int64_t r = 0;
  if constexpr (kGamma || kBeta) {
    // Rows in pairs when their outputs are whole cache lines apart, or
    // nothing is streamed.
    if (!stream || (static_cast<size_t>(block.len) * sizeof(Storage<kType>)) % 64 == 0)
      for (; r + 2 <= block.rows; r += 2)
        NormalizeRowGroup<kType, kGamma, kBeta, 2>(x, y, block, r, center, scale, shift, gamma, beta, stream,
                                                   prefetch_rows);
  }
  for (; r < block.rows; ++r)
    NormalizeRowGroup<kType, kGamma, kBeta, 1>(x, y, block, r, center, scale, shift, gamma, beta, stream,
                                               prefetch_rows);
}

// ---------------------------------------------------------------- backward

// The backward sums of kRows consecutive rows (sum_g and sum_gxc of
// kernels.hpp) are taken one vector position at a time in the order of the
// row, one f32 accumulator per row and sum (the rows' chains of additions run
// side by side), folded into double every kAddsPerFlush additions:
// rows_backward_reduce walks them alone, rows_backward_apply_and_reduce beside
// the previous rows' elementwise pass, and both give the same bits. The
// helpers below work on the walking function's own accumulators. kCentered
// false: RMS norm, x is not centered and sum(g) is not needed (0).
template <size_t kRows>
HWY_INLINE void ClearBackwardSums(DF d, VF* g, VF* h, double* total_g, double* total_h) {
  for (size_t k = 0; k < kRows; ++k) {
    g[k] = h[k] = hn::Zero(d);
    total_g[k] = total_h[k] = 0.0;
  }
}

template <bool kCentered, size_t kRows>
HWY_INLINE void FoldBackwardSums(DF d, VF* g, VF* h, double* total_g, double* total_h) {
  for (size_t k = 0; k < kRows; ++k) {
    if constexpr (kCentered) total_g[k] += SumLanesInDouble(d, g[k]);
    total_h[k] += SumLanesInDouble(d, h[k]);
    g[k] = h[k] = hn::Zero(d);
  }
}

// Each row k's terms at positions [i, i + count), count <= Lanes, rows at
// x[k] / dy[k], centered on center[k] (the caller's local copies), with gamma
// there in gm (when kGamma); every kAddsPerFlush calls (counted in adds) the
// accumulators fold into the totals. A partial vector loads dy = 0 and x =
// center, adding 0.
template <DType kType, bool kGamma, bool kCentered, size_t kRows>
HWY_INLINE void AddBackwardTerms(DF d, const Storage<kType>* const* x, const Storage<kType>* const* dy,
                                 const float* center, size_t i, size_t count, VF gm, VF* g, VF* h,
                                 size_t& adds, double* total_g, double* total_h) {
  for (size_t k = 0; k < kRows; ++k) {
    VF a = LoadSomeAsF32<kType>(d, dy[k] + i, count, 0.0f);
    if constexpr (kGamma) a = hn::Mul(a, gm);
    VF v = LoadSomeAsF32<kType>(d, x[k] + i, count, center[k]);
    if constexpr (kCentered) {
      v = hn::Sub(v, hn::Set(d, center[k]));
      g[k] = hn::Add(g[k], a);
    }
    h[k] = hn::MulAdd(a, v, h[k]);
  }
  if (++adds == static_cast<size_t>(kAddsPerFlush)) {
    FoldBackwardSums<kCentered, kRows>(d, g, h, total_g, total_h);
    adds = 0;
  }
}

// The sums of kRows rows from `row` in one walk, gamma loaded once per kRows
// rows.
template <DType kType, bool kGamma, bool kCentered, size_t kRows>
HWY_INLINE void ReduceRowGroup(const Storage<kType>* x, const Storage<kType>* dy, size_t n, std::int64_t row,
                               const float* center, const float* gamma, double* sum_g, double* sum_gxc) {
  const DF d;
  const Storage<kType>* px[kRows];
  const Storage<kType>* pg[kRows];
  for (size_t k = 0; k < kRows; ++k) {
    px[k] = x + (static_cast<size_t>(row) + k) * n;
    pg[k] = dy + (static_cast<size_t>(row) + k) * n;
  }
  float c[kRows];
  for (size_t k = 0; k < kRows; ++k) c[k] = kCentered ? center[static_cast<size_t>(row) + k] : 0.0f;
  VF g[kRows], h[kRows];
  double total_g[kRows], total_h[kRows];
  ClearBackwardSums<kRows>(d, g, h, total_g, total_h);
  size_t adds = 0;
  ForEachVector(d, n, [&](size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
    const VF gm = kGamma ? LoadSomeF32(d, gamma + i, count, 0.0f) : hn::Zero(d);
    AddBackwardTerms<kType, kGamma, kCentered, kRows>(d, px, pg, c, i, count, gm, g, h, adds, total_g,
                                                      total_h);
  });
  FoldBackwardSums<kCentered, kRows>(d, g, h, total_g, total_h);
  for (size_t k = 0; k < kRows; ++k) {
    sum_g[static_cast<size_t>(row) + k] = kCentered ? total_g[k] : 0.0;
    sum_gxc[static_cast<size_t>(row) + k] = total_h[k];
  }
}

template <DType kType, bool kGamma, bool kCentered>
void RowsBackwardReduceT(const Storage<kType>* x, const Storage<kType>* dy, RowBlock block,
                         const float* center, const float* gamma, double* sum_g, double* sum_gxc) {
  const size_t n = static_cast<size_t>(block.len);
  std::int64_t r = 0;
  // Rows in pairs, as rows_backward_apply_and_reduce takes them (the sums of
  // a row do not depend on whether it was taken with another).
  for (; r + 2 <= block.rows; r += 2)
    ReduceRowGroup<kType, kGamma, kCentered, 2>(x, dy, n, r, center, gamma, sum_g, sum_gxc);
  for (; r < block.rows; ++r)
    ReduceRowGroup<kType, kGamma, kCentered, 1>(x, dy, n, r, center, gamma, sum_g, sum_gxc);
}

// Rows r and r + 1 of a block in one walk. With `stream`, the caller checked
// that the rows' dx are whole cache lines apart. ahead0 / ahead1: how far
// ahead (in elements) rows r / r + 1 prefetch x and dy, 0 for not at all.
// kNext: the two rows after the pair are summed in the same walk (centered
// on next_center when kNextCentered) into next_sum_g / next_sum_gxc
// (rows_backward_apply_and_reduce).
template <DType kType, bool kGamma, bool kDx, int kAcc, bool kNext = false, bool kNextCentered = false>
HWY_INLINE void ApplyRowPair(const Storage<kType>* x, const Storage<kType>* dy, Storage<kType>* dx,
                             RowBlock block, std::int64_t r, const float* center, const float* gamma,
                             const float* k_g, const float* k_xc, const float* k_const, const float* invstd,
                             float* acc_gamma, float* acc_beta, bool stream, size_t ahead0, size_t ahead1,
                             const float* next_center = nullptr, double* next_sum_g = nullptr,
                             double* next_sum_gxc = nullptr) {
  const DF d;
  const size_t n = static_cast<size_t>(block.len), off = static_cast<size_t>(r) * n;
  const Storage<kType>* px = x + off;
  const Storage<kType>* pg = dy + off;
  const VF vc0 = hn::Set(d, center[r]), vc1 = hn::Set(d, center[r + 1]);
  const VF vis0 = hn::Set(d, kAcc > 0 ? invstd[r] : 0.0f), vis1 = hn::Set(d, kAcc > 0 ? invstd[r + 1] : 0.0f);
  const VF a0 = hn::Set(d, kDx ? k_g[r] : 0.0f), b0 = hn::Set(d, kDx ? k_xc[r] : 0.0f),
           k0 = hn::Set(d, kDx ? k_const[r] : 0.0f);
  const VF a1 = hn::Set(d, kDx ? k_g[r + 1] : 0.0f), b1 = hn::Set(d, kDx ? k_xc[r + 1] : 0.0f),
           k1 = hn::Set(d, kDx ? k_const[r + 1] : 0.0f);
  const Storage<kType>* nx[2] = {px + 2 * n, px + 3 * n};
  const float nc[2] = {kNextCentered ? next_center[0] : 0.0f, kNextCentered ? next_center[1] : 0.0f};
  const Storage<kType>* ng[2] = {pg + 2 * n, pg + 3 * n};
  VF sum_g[2], sum_h[2];
  double total_g[2], total_h[2];
  ClearBackwardSums<2>(d, sum_g, sum_h, total_g, total_h);
  size_t adds = 0;
  auto prefetch = [&](size_t i) HWY_ATTR BNORM_ALWAYS_INLINE {
    if (ahead0) {
      PrefetchToL2(px + ahead0 + i);
      PrefetchToL2(pg + ahead0 + i);
    }
    if (ahead1) {
      PrefetchToL2(px + n + ahead1 + i);
      PrefetchToL2(pg + n + ahead1 + i);
    }
  };
  // Position [i, i + count) of both rows: the next rows' sums, the column
  // partials, and the rows' dx in out0 / out1.
  auto at = [&](size_t i, size_t count, VF& out0, VF& out1) HWY_ATTR BNORM_ALWAYS_INLINE {
    const VF g = kGamma && (kDx || kNext) ? LoadSomeF32(d, gamma + i, count, 0.0f) : hn::Zero(d);
    if constexpr (kNext) {
      AddBackwardTerms<kType, kGamma, kNextCentered, 2>(d, nx, ng, nc, i, count, g, sum_g, sum_h, adds,
                                                        total_g, total_h);
    }
    const VF gv0 = LoadSomeAsF32<kType>(d, pg + i, count, 0.0f);
    const VF gv1 = LoadSomeAsF32<kType>(d, pg + n + i, count, 0.0f);
    const VF xc0 = hn::Sub(LoadSomeAsF32<kType>(d, px + i, count, 0.0f), vc0);
    const VF xc1 = hn::Sub(LoadSomeAsF32<kType>(d, px + n + i, count, 0.0f), vc1);
    if constexpr (kAcc > 0) {
      const VF g_old = LoadSomeF32(d, acc_gamma + i, count, 0.0f);
      StoreSomeF32(d, hn::MulAdd(gv1, hn::Mul(xc1, vis1), hn::MulAdd(gv0, hn::Mul(xc0, vis0), g_old)),
                   acc_gamma + i, count);
    }
    if constexpr (kAcc > 1) {
      StoreSomeF32(d, hn::Add(hn::Add(LoadSomeF32(d, acc_beta + i, count, 0.0f), gv0), gv1), acc_beta + i,
                   count);
    }
    const VF dy0 = kGamma ? hn::Mul(gv0, g) : gv0, dy1 = kGamma ? hn::Mul(gv1, g) : gv1;
    out0 = hn::MulAdd(a0, dy0, hn::MulAdd(b0, xc0, k0));
    out1 = hn::MulAdd(a1, dy1, hn::MulAdd(b1, xc1, k1));
  };
  const size_t lanes = hn::Lanes(d);
  if (kDx && PairedRows<kType>(d, dx + off, n, stream)) {
    // 16-bit rows of whole vector pairs from a line boundary: two positions
    // per step (in order, so the sums are the same), each row's dx of both
    // converted and stored at once, as the forward's NormalizeRowGroup. In
    // one process, alternating, 2 threads, bf16: layer norm 8192x4096 0.95
    // the time, 65536x512 0.94; RMS norm 8192x4096 0.87-0.94.
    for (size_t i = 0; i < n; i += 2 * lanes) {
      prefetch(i);
      VF lo0, lo1, hi0, hi1;
      at(i, lanes, lo0, lo1);
      at(i + lanes, lanes, hi0, hi1);
      StorePairFromF32<kType>(d, lo0, hi0, dx + off + i, stream);
      StorePairFromF32<kType>(d, lo1, hi1, dx + off + n + i, stream);
    }
  } else {
    // Without dx, nothing is stored: the walk takes whole vectors from 0.
    ForEachOutputPosition<kType>(d, kDx ? dx + off : x + off, n, kDx && stream,
                                 [&](size_t i, size_t count, bool nt) HWY_ATTR BNORM_ALWAYS_INLINE {
                                   prefetch(i);
                                   VF out0, out1;
                                   at(i, count, out0, out1);
                                   if constexpr (kDx) {
                                     StoreOutput<kType>(d, out0, dx + off + i, count, nt);
                                     StoreOutput<kType>(d, out1, dx + off + n + i, count, nt);
                                   }
                                 });
  }
  if constexpr (kNext) {
    FoldBackwardSums<kNextCentered, 2>(d, sum_g, sum_h, total_g, total_h);
    for (size_t k = 0; k < 2; ++k) {
      next_sum_g[k] = kNextCentered ? total_g[k] : 0.0;
      next_sum_gxc[k] = total_h[k];
    }
  }
}

// kAcc: 0 no parameter gradients, 1 gamma's, 2 gamma's and beta's.
template <DType kType, bool kGamma, bool kDx, int kAcc>
void RowsBackwardApplyT(const Storage<kType>* x, const Storage<kType>* dy, Storage<kType>* dx, RowBlock block,
                        const float* center, const float* gamma, const float* k_g, const float* k_xc,
                        const float* k_const, const float* invstd, float* acc_gamma, float* acc_beta,
                        bool stream, std::int64_t prefetch_rows) {
  const DF d;
  const size_t n = static_cast<size_t>(block.len);
  std::int64_t r = 0;
  if constexpr (kAcc > 0) {
    // Rows in pairs: the column partials are loaded and stored once per two
    // rows (the same additions in the same order as row by row).
    // Streaming needs the rows' dx whole cache lines apart.
    const bool line_rows = (n * sizeof(Storage<kType>)) % 64 == 0;
    const size_t ahead = static_cast<size_t>(block.rows) * n;  // to the same row of the next block
    for (; r + 2 <= block.rows && (line_rows || !stream); r += 2)
      ApplyRowPair<kType, kGamma, kDx, kAcc>(x, dy, dx, block, r, center, gamma, k_g, k_xc, k_const, invstd,
                                             acc_gamma, acc_beta, stream, r < prefetch_rows ? ahead : 0,
                                             r + 1 < prefetch_rows ? ahead : 0);
  }
  for (; r < block.rows; ++r) {
    const size_t off = static_cast<size_t>(r) * n;
    const Storage<kType>* px = x + off;
    const Storage<kType>* pg = dy + off;
    const size_t ahead = r < prefetch_rows ? static_cast<size_t>(block.rows) * n : 0;
    const VF vc = hn::Set(d, center[r]);
    const VF vis = hn::Set(d, kAcc > 0 ? invstd[r] : 0.0f);
    const VF a = hn::Set(d, kDx ? k_g[r] : 0.0f), b = hn::Set(d, kDx ? k_xc[r] : 0.0f),
             k = hn::Set(d, kDx ? k_const[r] : 0.0f);
    auto compute = [&](size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
      if (ahead) {
        PrefetchToL2(px + ahead + i);
        PrefetchToL2(pg + ahead + i);
      }
      const VF gv = LoadSomeAsF32<kType>(d, pg + i, count, 0.0f);
      const VF xc = hn::Sub(LoadSomeAsF32<kType>(d, px + i, count, 0.0f), vc);
      if constexpr (kAcc > 0) {
        StoreSomeF32(d, hn::MulAdd(gv, hn::Mul(xc, vis), LoadSomeF32(d, acc_gamma + i, count, 0.0f)),
                     acc_gamma + i, count);
      }
      if constexpr (kAcc > 1) {
        StoreSomeF32(d, hn::Add(LoadSomeF32(d, acc_beta + i, count, 0.0f), gv), acc_beta + i, count);
      }
      if constexpr (kGamma) {
        return hn::MulAdd(a, hn::Mul(gv, LoadSomeF32(d, gamma + i, count, 0.0f)), hn::MulAdd(b, xc, k));
      } else {
        return hn::MulAdd(a, gv, hn::MulAdd(b, xc, k));
      }
    };
    if constexpr (kDx) {
      ForEachOutputVector<kType>(d, dx + off, n, stream, compute);
    } else {
      ForEachVector(d, n, [&](size_t i, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE { (void)compute(i, count); });
    }
  }
}

// The pair of rows at x / dy / dx applied, and the two rows after it summed
// in the same walk (kernels.hpp: rows_backward_apply_and_reduce).
template <DType kType, bool kGamma, bool kCentered, int kAcc>
bool PairApplyAndReduceT(const Storage<kType>* x, const Storage<kType>* dy, Storage<kType>* dx, size_t n,
                         const float* center, const float* gamma, const float* k_g, const float* k_xc,
                         const float* k_const, const float* invstd, float* acc_gamma, float* acc_beta,
                         bool stream, std::int64_t prefetch_rows, const float* next_center,
                         double* next_sum_g, double* next_sum_gxc) {
  // The sums take the positions in the walk's order, which is the row's
  // (whole vectors from 0) unless streaming starts on a partial vector (dx
  // off a cache line); streaming the pair also needs the second row's dx on
  // a line.
  if (stream && ((n * sizeof(Storage<kType>)) % 64 != 0 || reinterpret_cast<std::uintptr_t>(dx) % 64 != 0))
    return false;
  const size_t ahead = 4 * n;  // rows 4 and 5: the pair after the next
  ApplyRowPair<kType, kGamma, true, kAcc, true, kCentered>(
      x, dy, dx, RowBlock{2, static_cast<std::int64_t>(n)}, 0, center, gamma, k_g, k_xc, k_const, invstd,
      acc_gamma, acc_beta, stream, prefetch_rows > 0 ? ahead : 0, prefetch_rows > 1 ? ahead : 0, next_center,
      next_sum_g, next_sum_gxc);
  return true;
}

void FoldPartialsT(float* HWY_RESTRICT acc, double* HWY_RESTRICT total, size_t n) {
  const DF d;
  size_t j = 0;
  for (; j + hn::Lanes(d) <= n; j += hn::Lanes(d)) {
    AddToDoubles(d, hn::LoadU(d, acc + j), total + j);
    hn::StoreU(hn::Zero(d), d, acc + j);
  }
  for (; j < n; ++j) {
    total[j] += static_cast<double>(acc[j]);
    acc[j] = 0.0f;
  }
}

}  // namespace

// ---------------------------------------------------------------- per-target entry points

void LnRowsShiftedSums(DType dt, const void* x, RowBlock block, Pivot mode, float* pivot, double* s1,
                       double* s2) {
  OnDType(dt, [&](auto t) {
    constexpr DType kType = decltype(t)::value;
    RowsShiftedSumsT<kType>(static_cast<const Storage<kType>*>(x), block, mode, pivot, s1, s2);
  });
}

double LnRowSumSqCentered(DType dt, const void* x, std::int64_t len, float center) {
  double out = 0.0;
  OnDType(dt, [&](auto t) {
    constexpr DType kType = decltype(t)::value;
    out = RowSumSqCenteredT<kType>(static_cast<const Storage<kType>*>(x), static_cast<size_t>(len), center);
  });
  return out;
}

void LnRowsNormalize(DType dt, const void* x, void* y, RowBlock block, const float* center, const float* scale,
                     const float* shift, const float* gamma, const float* beta, bool stream,
                     std::int64_t prefetch_rows) {
  OnDType(dt, [&](auto t) {
    constexpr DType kType = decltype(t)::value;
    using T = Storage<kType>;
    const T* px = static_cast<const T*>(x);
    T* py = static_cast<T*>(y);
    if (gamma && beta) {
      RowsNormalizeT<kType, true, true>(px, py, block, center, scale, shift, gamma, beta, stream, prefetch_rows);
    } else if (gamma) {
      RowsNormalizeT<kType, true, false>(px, py, block, center, scale, shift, gamma, beta, stream, prefetch_rows);
    } else if (beta) {
      RowsNormalizeT<kType, false, true>(px, py, block, center, scale, shift, gamma, beta, stream, prefetch_rows);
    } else {
      RowsNormalizeT<kType, false, false>(px, py, block, center, scale, shift, gamma, beta, stream, prefetch_rows);
    }
  });
}

void LnRowsBackwardReduce(DType dt, const void* x, const void* dy, RowBlock block, const float* center,
                          const float* gamma, double* sum_g, double* sum_gxc) {
  OnDType(dt, [&](auto t) {
    constexpr DType kType = decltype(t)::value;
    using T = Storage<kType>;
    OnGammaAndCenter(gamma, center, [&](auto with_gamma, auto centered) {
      RowsBackwardReduceT<kType, decltype(with_gamma)::value, decltype(centered)::value>(
          static_cast<const T*>(x), static_cast<const T*>(dy), block, center, gamma, sum_g, sum_gxc);
    });
  });
}

template <DType kType, bool kGamma, bool kDx>
HWY_INLINE void ApplyWithAcc(const void* x, const void* dy, void* dx, RowBlock block, const float* center,
                             const float* gamma, const float* k_g, const float* k_xc, const float* k_const,
                             const float* invstd, float* acc_gamma, float* acc_beta, bool stream,
                             std::int64_t prefetch_rows) {
  using T = Storage<kType>;
  const T* px = static_cast<const T*>(x);
  const T* pg = static_cast<const T*>(dy);
  T* pd = static_cast<T*>(dx);
  if (acc_gamma && acc_beta) {
    RowsBackwardApplyT<kType, kGamma, kDx, 2>(px, pg, pd, block, center, gamma, k_g, k_xc, k_const, invstd,
                                              acc_gamma, acc_beta, stream, prefetch_rows);
  } else if (acc_gamma) {
    RowsBackwardApplyT<kType, kGamma, kDx, 1>(px, pg, pd, block, center, gamma, k_g, k_xc, k_const, invstd,
                                              acc_gamma, acc_beta, stream, prefetch_rows);
  } else if constexpr (kDx) {
    RowsBackwardApplyT<kType, kGamma, kDx, 0>(px, pg, pd, block, center, gamma, k_g, k_xc, k_const, invstd,
                                              acc_gamma, acc_beta, stream, prefetch_rows);
  }
}

void LnRowsBackwardApply(DType dt, const void* x, const void* dy, void* dx, RowBlock block, const float* center,
                         const float* gamma, const float* k_g, const float* k_xc, const float* k_const,
                         const float* invstd, float* acc_gamma, float* acc_beta, bool stream,
                         std::int64_t prefetch_rows) {
  OnDType(dt, [&](auto t) {
    constexpr DType kType = decltype(t)::value;
    if (gamma && dx) {
      ApplyWithAcc<kType, true, true>(x, dy, dx, block, center, gamma, k_g, k_xc, k_const, invstd, acc_gamma,
                                      acc_beta, stream, prefetch_rows);
    } else if (dx) {
      ApplyWithAcc<kType, false, true>(x, dy, dx, block, center, gamma, k_g, k_xc, k_const, invstd, acc_gamma,
                                       acc_beta, stream, prefetch_rows);
    } else {
      // Without dx, gamma plays no part (the parameter gradients use dy).
      ApplyWithAcc<kType, false, false>(x, dy, dx, block, center, gamma, k_g, k_xc, k_const, invstd,
                                        acc_gamma, acc_beta, stream, prefetch_rows);
    }
  });
}

bool LnRowsBackwardApplyAndReduce(DType dt, const void* x, const void* dy, void* dx, std::int64_t len,
                                  const float* center, const float* gamma, const float* k_g,
                                  const float* k_xc, const float* k_const, const float* invstd,
                                  float* acc_gamma, float* acc_beta, bool stream, std::int64_t prefetch_rows,
                                  const float* next_center, double* next_sum_g, double* next_sum_gxc) {
  bool done = false;
  OnDType(dt, [&](auto t) {
    constexpr DType kType = decltype(t)::value;
    using T = Storage<kType>;
    auto run = [&](auto with_gamma, auto centered, auto acc) {
      done = PairApplyAndReduceT<kType, decltype(with_gamma)::value, decltype(centered)::value,
                                 decltype(acc)::value>(
          static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dx), static_cast<size_t>(len),
          center, gamma, k_g, k_xc, k_const, invstd, acc_gamma, acc_beta, stream, prefetch_rows, next_center,
          next_sum_g, next_sum_gxc);
    };
    auto with_acc = [&](auto with_gamma, auto centered) {
      if (acc_gamma && acc_beta) {
        run(with_gamma, centered, std::integral_constant<int, 2>{});
      } else if (acc_gamma) {
        run(with_gamma, centered, std::integral_constant<int, 1>{});
      } else {
        run(with_gamma, centered, std::integral_constant<int, 0>{});
      }
    };
    OnGammaAndCenter(gamma, next_center, with_acc);
  });
  return done;
}

void LnFoldPartials(float* acc, double* total, std::int64_t len) {
  FoldPartialsT(acc, total, static_cast<size_t>(len));
}

}  // namespace bnorm::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnorm::kernels::layer_norm {

HWY_EXPORT(LnRowsShiftedSums);
HWY_EXPORT(LnRowSumSqCentered);
HWY_EXPORT(LnRowsNormalize);
HWY_EXPORT(LnRowsBackwardReduce);
HWY_EXPORT(LnRowsBackwardApply);
HWY_EXPORT(LnRowsBackwardApplyAndReduce);
HWY_EXPORT(LnFoldPartials);

void rows_shifted_sums(DType dtype, const void* x, RowBlock block, Pivot mode, float* pivot, double* s1,
                       double* s2) {
  HWY_DYNAMIC_DISPATCH(LnRowsShiftedSums)(dtype, x, block, mode, pivot, s1, s2);
}
double row_sum_sq_centered(DType dtype, const void* x, std::int64_t len, float center) {
  return HWY_DYNAMIC_DISPATCH(LnRowSumSqCentered)(dtype, x, len, center);
}
void rows_normalize(DType dtype, const void* x, void* y, RowBlock block, const float* center,
                    const float* scale, const float* shift, const float* gamma, const float* beta, bool stream,
                    std::int64_t prefetch_rows) {
  HWY_DYNAMIC_DISPATCH(LnRowsNormalize)
  (dtype, x, y, block, center, scale, shift, gamma, beta, stream, prefetch_rows);
}
void rows_backward_reduce(DType dtype, const void* x, const void* dy, RowBlock block, const float* center,
                          const float* gamma, double* sum_g, double* sum_gxc) {
  HWY_DYNAMIC_DISPATCH(LnRowsBackwardReduce)(dtype, x, dy, block, center, gamma, sum_g, sum_gxc);
}
void rows_backward_apply(DType dtype, const void* x, const void* dy, void* dx, RowBlock block,
                         const float* center, const float* gamma, const float* k_g, const float* k_xc,
                         const float* k_const, const float* invstd, float* acc_gamma, float* acc_beta,
                         bool stream, std::int64_t prefetch_rows) {
  HWY_DYNAMIC_DISPATCH(LnRowsBackwardApply)
  (dtype, x, dy, dx, block, center, gamma, k_g, k_xc, k_const, invstd, acc_gamma, acc_beta, stream, prefetch_rows);
}
bool rows_backward_apply_and_reduce(DType dtype, const void* x, const void* dy, void* dx, std::int64_t len,
                                    const float* center, const float* gamma, const float* k_g,
                                    const float* k_xc, const float* k_const, const float* invstd,
                                    float* acc_gamma, float* acc_beta, bool stream,
                                    std::int64_t prefetch_rows, const float* next_center, double* next_sum_g,
                                    double* next_sum_gxc) {
  return HWY_DYNAMIC_DISPATCH(LnRowsBackwardApplyAndReduce)(
      dtype, x, dy, dx, len, center, gamma, k_g, k_xc, k_const, invstd, acc_gamma, acc_beta, stream,
      prefetch_rows, next_center, next_sum_g, next_sum_gxc);
}
void fold_partials(float* acc, double* total, std::int64_t len) {
  HWY_DYNAMIC_DISPATCH(LnFoldPartials)(acc, total, len);
}
void stream_fence() { hwy::FlushStream(); }

}  // namespace bnorm::kernels::layer_norm
#endif  // HWY_ONCE

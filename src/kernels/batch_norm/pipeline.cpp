// The pipelined channels-first kernels, compiled once per instruction set by
// Highway (foreach_target.h) and chosen at run time by HWY_DYNAMIC_DISPATCH,
// as simd.cpp. Declarations and contracts: pipeline.hpp.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/batch_norm/pipeline.cpp"
#include "kernels/batch_norm/pipeline.hpp"

#include <algorithm>
#include <type_traits>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/batch_norm/simd-inl.h"
#include "kernels/common/simd_io-inl.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm::kernels::HWY_NAMESPACE {
namespace {

// Two f32 vector sums of bounded length, folded into double.
struct GroupTwoSums {
  VF a, b;
  size_t rounds = 0;
  DoubleLanes total_a, total_b;
  explicit GroupTwoSums(DF d) : a(hn::Zero(d)), b(hn::Zero(d)), total_a(d), total_b(d) {}
  HWY_INLINE void Flush(DF d) {
    total_a.Fold(d, a);
    total_b.Fold(d, b);
    a = b = hn::Zero(d);
    rounds = 0;
  }
  HWY_INLINE void Count(DF d) {
    if (HWY_UNLIKELY(++rounds == kAddsPerFlush)) Flush(d);
  }
};

// Walks the next block's plane in whole vectors from its start, one per
// step of the output walk and the rest after it. The output walk's chunks
// follow the output's alignment (streaming stores); the sums must not, or
// they would depend on where the output lies.
struct NextWalk {
  size_t pos = 0, len = 0;
  template <class Term>
  HWY_INLINE void Step(DF d, const Term& term) {
    if (pos < len) {
      term(pos, std::min(hn::Lanes(d), len - pos));
      pos += hn::Lanes(d);
    }
  }
  template <class Term>
  HWY_INLINE void Rest(DF d, const Term& term) {
    while (pos < len) Step(d, term);
  }
};

// Runs the output walk over the n elements of y (ForEachOutputPosition's
// step, which stores its outputs) with the walk over the next block's plane
// beside it (term). When the output walk steps through whole vectors from
// the start, one index serves both; otherwise the next walk keeps its own
// position (NextWalk) and finishes after the output. Either way term sees
// the same vectors in the same order, so the sums do not depend on where
// the output lies.
template <DType kType, bool kNext, class Term, class Step>
HWY_INLINE void WalkBeside(DF d, Storage<kType>* HWY_RESTRICT y, size_t n, bool stream, const Term& term,
                           const Step& step) {
  if constexpr (kNext) {
    if (OutputWalkInWholeVectors<kType>(y, stream)) {
      ForEachOutputPosition<kType>(d, y, n, stream,
                                   [&](size_t i, size_t count, bool nt) HWY_ATTR BNORM_ALWAYS_INLINE {
                                     term(i, count);
                                     step(i, count, nt);
                                   });
      return;
    }
    NextWalk walk{0, n};
    ForEachOutputPosition<kType>(d, y, n, stream,
                                 [&](size_t i, size_t count, bool nt) HWY_ATTR BNORM_ALWAYS_INLINE {
                                   walk.Step(d, term);
                                   step(i, count, nt);
                                 });
    walk.Rest(d, term);
  } else {
    ForEachOutputPosition<kType>(d, y, n, stream, step);
  }
}

template <DType kType, bool kNext, bool kAdd, bool kRelu, bool kMask>
void NormalizeAndSumT(const Storage<kType>* x, Storage<kType>* y, std::int64_t planes, std::int64_t plane_len,
                      const float* center, const float* scale, const float* shift, bool stream,
                      const Storage<kType>* next, const float* pivots, double* out, const Storage<kType>* z,
                      const batch_norm::Epilogue& post, size_t read_on) {
  const DF d;
  const size_t S = static_cast<size_t>(plane_len);
  auto bits = BitsFor<kMask>(post, 0);
  for (std::int64_t q = 0; q < planes; ++q) {
    const size_t off = static_cast<size_t>(q) * S;
    const Storage<kType>* HWY_RESTRICT xp = x + off;
    const Storage<kType>* HWY_RESTRICT np = kNext ? next + off : nullptr;
    const float pivot = kNext ? pivots[q] : 0.0f;
    const VF vp = hn::Set(d, pivot);
    const VF vc = hn::Set(d, center[q]), vs = hn::Set(d, scale[q]), vb = hn::Set(d, shift[q]);
    GroupTwoSums sums(d);
    auto term = [&](size_t j, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
      PrefetchAhead(next, off + j, read_on);
      // Padded lanes load as the pivot: they add nothing.
      const VF w = hn::Sub(LoadSomeAsF32<kType>(d, np + j, count, pivot), vp);
      sums.a = hn::Add(sums.a, w);
      sums.b = hn::MulAdd(w, w, sums.b);
      sums.Count(d);
    };
    WalkBeside<kType, kNext>(
        d, y + off, S, stream, term, [&](size_t i, size_t count, bool nt) HWY_ATTR BNORM_ALWAYS_INLINE {
          const VF v = Post<kType, kAdd, kRelu>(
              d, hn::MulAdd(hn::Sub(LoadSomeAsF32<kType>(d, xp + i, count, 0.0f), vc), vs, vb), z, off + i,
              count, bits);
          StoreOutput<kType>(d, v, y + off + i, count, nt);
        });
    if constexpr (kNext) {
      sums.Flush(d);
      out[2 * q] = sums.total_a.Total(d);
      out[2 * q + 1] = sums.total_b.Total(d);
    }
  }
  bits.Finish();
}

template <DType kType, bool kNext, bool kGate, bool kDz, class Y>
void ApplyAndReduceT(const Storage<kType>* x, const Storage<kType>* dy, Storage<kType>* dx,
                     std::int64_t planes, std::int64_t plane_len, const float* center, const float* k_dy,
                     const float* k_xc, const float* k_const, bool stream, const Storage<kType>* next_x,
                     const Storage<kType>* next_dy, const float* next_centers, double* out, Y y,
                     Storage<kType>* dz, Y next_y, size_t read_on) {
  const DF d;
  const size_t S = static_cast<size_t>(plane_len);
  const bool dz_like_dx = kDz && SameLineOffset(dz, dx);
  for (std::int64_t q = 0; q < planes; ++q) {
    const size_t off = static_cast<size_t>(q) * S;
    const float next_center = kNext ? next_centers[q] : 0.0f;
    const VF vnc = hn::Set(d, next_center);
    const VF vc = hn::Set(d, center[q]), a = hn::Set(d, k_dy[q]), b = hn::Set(d, k_xc[q]),
             k = hn::Set(d, k_const[q]);
    GroupTwoSums sums(d);
    auto term = [&](size_t j, size_t count) HWY_ATTR BNORM_ALWAYS_INLINE {
      const size_t e = off + j;
      PrefetchAhead(next_x, e, read_on);
      PrefetchAhead(next_dy, e, read_on);
      if constexpr (kGate) PrefetchAhead(next_y, e, read_on);
      // The next dy is padded with 0 and x with its center: padded lanes
      // add nothing.
      const VF ng =
          Gated<kType, kGate>(d, LoadSomeAsF32<kType>(d, next_dy + e, count, 0.0f), next_y, e, count);
      const VF nx = LoadSomeAsF32<kType>(d, next_x + e, count, next_center);
      sums.a = hn::Add(sums.a, ng);
      sums.b = hn::MulAdd(ng, hn::Sub(nx, vnc), sums.b);
      sums.Count(d);
    };
    WalkBeside<kType, kNext>(
        d, dx + off, S, stream, term, [&](size_t i, size_t count, bool nt) HWY_ATTR BNORM_ALWAYS_INLINE {
          const size_t e = off + i;
          const VF xv = LoadSomeAsF32<kType>(d, x + e, count, 0.0f);
          const VF gv = Gated<kType, kGate>(d, LoadSomeAsF32<kType>(d, dy + e, count, 0.0f), y, e, count);
          // dz streams where dx does when the two share their alignment.
          if constexpr (kDz) StoreOutput<kType>(d, gv, dz + e, count, nt && dz_like_dx);
          StoreOutput<kType>(d, hn::MulAdd(a, gv, hn::MulAdd(b, hn::Sub(xv, vc), k)), dx + e, count, nt);
        });
    if constexpr (kNext) {
      sums.Flush(d);
      out[2 * q] = sums.total_a.Total(d);
      out[2 * q + 1] = sums.total_b.Total(d);
    }
  }
}

// How far past the next block's start its walk may prefetch.
size_t ReadOn(std::int64_t planes, std::int64_t plane_len, std::int64_t next_extent) {
  return static_cast<size_t>(std::max(next_extent, planes * plane_len));
}

}  // namespace

void PipelineNormalizeAndSum(DType dt, const void* x, void* y, std::int64_t planes, std::int64_t plane_len,
                             const float* center, const float* scale, const float* shift, bool stream,
                             const void* next, const float* pivots, double* sums,
                             const batch_norm::Epilogue& post, std::int64_t next_extent) {
  const size_t read_on = ReadOn(planes, plane_len, next_extent);
  WithDType(dt, [&](auto t) {
    using S = Storage<t()>;
    const bool has_next = next != nullptr;
    WithPost(post, [&](auto add, auto rel, auto mask) {
      auto run = [&](auto with_next) {
        NormalizeAndSumT<t(), decltype(with_next)::value, add(), rel(), mask()>(
            static_cast<const S*>(x), static_cast<S*>(y), planes, plane_len, center, scale, shift, stream,
            static_cast<const S*>(next), pivots, sums, static_cast<const S*>(post.residual), post, read_on);
      };
      if (has_next) {
        run(std::true_type{});
      } else {
        run(std::false_type{});
      }
    });
  });
}

void PipelineApplyAndReduce(DType dt, const void* x, const void* dy, void* dx, std::int64_t planes,
                            std::int64_t plane_len, const float* center, const float* k_dy, const float* k_xc,
                            const float* k_const, bool stream, const void* next_x, const void* next_dy,
                            const float* next_centers, double* sums, const batch_norm::Gate& gate,
                            const batch_norm::Gate& next_gate, std::int64_t next_extent) {
  const size_t read_on = ReadOn(planes, plane_len, next_extent);
  WithDType(dt, [&](auto t) {
    using S = Storage<t()>;
    const bool has_next = next_x != nullptr;
    WithGate<t()>(gate, [&](auto gated, auto with_dz, auto gy) {
      // The next block's gate is of the same kind.
      decltype(gy) next_gy{};
      if constexpr (std::is_same_v<decltype(gy), BitsIn>) {
        next_gy = BitsIn{next_gate.mask, next_gate.mask_first};
      } else {
        next_gy = static_cast<const S*>(next_gate.y);
      }
      auto run = [&](auto with_next) {
        ApplyAndReduceT<t(), decltype(with_next)::value, gated(), with_dz()>(
            static_cast<const S*>(x), static_cast<const S*>(dy), static_cast<S*>(dx), planes, plane_len,
            center, k_dy, k_xc, k_const, stream, static_cast<const S*>(next_x),
            static_cast<const S*>(next_dy), next_centers, sums, gy, static_cast<S*>(gate.dz), next_gy,
            read_on);
      };
      if (has_next) {
        run(std::true_type{});
      } else {
        run(std::false_type{});
      }
    });
  });
}

}  // namespace bnorm::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnorm::kernels::batch_norm {

HWY_EXPORT(PipelineNormalizeAndSum);
HWY_EXPORT(PipelineApplyAndReduce);

void normalize_and_sum(DType dtype, const void* x, void* y, std::int64_t planes, std::int64_t plane_len,
                       const float* center, const float* scale, const float* shift, bool stream,
                       const void* next, const float* pivots, double* sums, const Epilogue& post,
                       std::int64_t next_extent) {
  HWY_DYNAMIC_DISPATCH(PipelineNormalizeAndSum)
  (dtype, x, y, planes, plane_len, center, scale, shift, stream, next, pivots, sums, post, next_extent);
}

void apply_and_reduce(DType dtype, const void* x, const void* dy, void* dx, std::int64_t planes,
                      std::int64_t plane_len, const float* center, const float* k_dy, const float* k_xc,
                      const float* k_const, bool stream, const void* next_x, const void* next_dy,
                      const float* next_centers, double* sums, const Gate& gate, const Gate& next_gate,
                      std::int64_t next_extent) {
  HWY_DYNAMIC_DISPATCH(PipelineApplyAndReduce)
  (dtype, x, dy, dx, planes, plane_len, center, k_dy, k_xc, k_const, stream, next_x, next_dy, next_centers,
   sums, gate, next_gate, next_extent);
}

}  // namespace bnorm::kernels::batch_norm
#endif  // HWY_ONCE

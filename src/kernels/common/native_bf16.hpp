// Whether the AVX3 kernels round f32 to bf16 with AVX512-BF16's
// vcvtneps2bf16 (Cooper Lake, Sapphire Rapids, Zen 4 and later) instead of
// the integer emulation: one instruction for the emulation's ten, which
// matters where a pass is compute-bound (bf16 moves half the bytes of f32
// for the same arithmetic). Set at startup from the CPU; set_isa() turns it
// off for "AVX3" and on for "AVX3_BF16" (ops/runtime.cpp).
#pragma once

namespace bnorm::kernels {

/// True when this CPU has AVX512-BF16.
bool cpu_has_avx512_bf16() noexcept;

/// Read by the AVX3 kernels' bf16 stores; writes only through set_isa().
extern bool native_bf16;

}  // namespace bnorm::kernels

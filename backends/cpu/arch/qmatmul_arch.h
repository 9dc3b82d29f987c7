// Private to the quantized matmul (qmatmul.cpp): per-ISA entry points and the small helpers the
// arch files share. Built on matmul_arch.h (thread split, scratch memory, problem accessors), with
// the same rule: helpers have internal linkage, and the arch files use no STL, because files built
// with different -m flags must not share out-of-line code (see matmul_arch.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "backends/cpu/arch/matmul_arch.h"
#include "quant/kquant.h"  // block structs only (no functions: those have external linkage)
#include "quant/q8_0.h"

namespace v4::cpu::qmm_arch {

using namespace v4::cpu::mm_arch;

// Entry points; each computes the whole problem with at most n_threads OpenMP threads. The
// caller (qmatmul.cpp) has checked the host, the weight type and the scale fields.
#if defined(__x86_64__)
bool qmm_avx512bf16_available();                                // AVX512-BF16 + VBMI (cpuid)
void qmm_avx512bf16_run(const mm_problem& p, int n_threads);    // all six types; x -> bf16
void qmm_avx2_run(const mm_problem& p, int n_threads);          // all six types, exact x
bool qmm_vnni_available();                                      // AVX-512 + AVX512-VNNI (cpuid)
bool qmm_vnni_supports(dtype t);                                // q8_0, q4_k, q3_k, q2_k
void qmm_vnni_run(const mm_problem& p, int n_threads);          // x -> int8 per block of 32
#endif
#if defined(__aarch64__)
void qmm_neon_run(const mm_problem& p, int n_threads);          // all six types, exact x
#endif

namespace {

// e8m0 code -> f32 (2^(e-127); code 0 = 2^-127 as an f32 subnormal; 0xFF = NaN).
inline float e8m0_value(uint8_t e) {
  const uint32_t bits = e == 0xFF ? 0x7fc00000u : e == 0 ? 0x00400000u : uint32_t(e) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

constexpr float kE2m1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                             -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// e4m3 code -> f32, exact (quant/fp8.h: 0x7f and 0xff are NaN).
inline float e4m3_value(uint8_t c) {
  const uint32_t e = (c >> 3) & 15, m = c & 7;
  float v;
  if (e == 15 && m == 7) {
    const uint32_t nan = 0x7fc00000u;
    std::memcpy(&v, &nan, 4);
  } else if (e == 0) {
    v = float(m) * (1.0f / 512.0f);
  } else {
    const uint32_t bits = ((e + 120) << 23) | (m << 20);
    std::memcpy(&v, &bits, 4);
  }
  return (c & 0x80) ? -v : v;
}

// f16 bits -> f32, exact (normals, subnormals, inf, NaN), without F16C.
inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  uint32_t bits;
  if (em >= 0x7c00u) {
    bits = sign | 0x7f800000u | (uint32_t(em & 0x3ffu) << 13);  // inf / NaN
  } else if (em >= 0x0400u) {
    bits = sign | ((em + ((127 - 15) << 10)) << 13);  // normal
  } else {
    const float v = float(em) * (1.0f / 16777216.0f);  // subnormal: em * 2^-24, exact
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Row m's e8m0 scale codes (scaled types).
inline const uint8_t* scale_row(const mm_problem& p, int64_t m) {
  return p.scales + size_t(m / p.sb_m) * p.s_stride;
}

// 6-bit fields of q4_k / q3_k (quant/kquant.h layout): v[i] for i in 0..15.
inline void unpack6(const uint8_t in[12], uint8_t v[16]) {
  for (int i = 0; i < 16; ++i) {
    const uint8_t lo = i < 8 ? (in[i] & 15) : (in[i - 8] >> 4);
    v[i] = uint8_t(lo | (((in[8 + i / 4] >> (2 * (i % 4))) & 3) << 4));
  }
}

}  // namespace

}  // namespace v4::cpu::qmm_arch

// Device-side FP8 / FP4 round trips (tensor/ops.h fp8_roundtrip, fp4_roundtrip), bit-exact to
// quant/fp8.cpp and quant/mxfp4.cpp: the same integer scale arithmetic, and the e4m3 / e2m1
// rounding done the same way (an add and subtract of a power of two, round-to-nearest-even in f32;
// the __f*_rn intrinsics keep nvcc from contracting or reordering them). Shared by the round-trip
// kernels (ops_quant.cu) and the fused ops that round their own output (ops_fused.cu,
// ops_norm_rope.cu).
#pragma once

#include <cstdint>

#include "backends/cuda/common.cuh"

namespace v4::cuda::qround {

constexpr float kFltMax = 3.402823466e38f;
constexpr float kE4m3Max = 448.0f, kE2m1Max = 6.0f;
constexpr float kFp4Floor = 6.0f * 0x1p-126f;  // quant/mxfp4.h kFp4AmaxFloor
constexpr float kFp8Floor = 1e-4f;             // quant/fp8.h kFp8AmaxFloor

__device__ inline int ceil_log2(float x) {  // quant/e8m0.h ceil_log2_f32
  const uint32_t b = __float_as_uint(x);
  return int((b >> 23) & 0xff) - 127 + ((b & 0x7fffffu) != 0 ? 1 : 0);
}
__device__ inline float pow2(int k) { return __uint_as_float(uint32_t(k + 127) << 23); }

// quant/minifloat.h round_minifloat<mbits, emin>: a >= 0 finite, below the format's overflow.
template <int MBITS, int EMIN>
__device__ inline float round_minifloat(float a) {
  constexpr uint32_t kMinNormalBits = uint32_t(EMIN + 127) << 23;
  uint32_t e = __float_as_uint(a) & 0x7f800000u;
  e = e > kMinNormalBits ? e : kMinNormalBits;
  const float m = __uint_as_float(e + (uint32_t(23 - MBITS) << 23));
  return __fsub_rn(__fadd_rn(a, m), m);
}

__device__ inline bool finite(float x) { return fabsf(x) <= kFltMax; }
// |v| for finite v, else 0 (non-finite elements do not enter a block's amax; NaN never wins fmaxf).
__device__ inline float finite_abs(float v) {
  const float a = fabsf(v);
  return a <= kFltMax ? a : 0.0f;
}

// The scale exponents (quant/fp8.cpp fp8_scale_exp, quant/mxfp4.cpp fp4_scale_exp).
__device__ inline int fp8_exp(float amax, float floor) {
  const float a = amax > floor ? amax : floor;
  return ceil_log2(__fmul_rn(a, 1.0f / kE4m3Max));
}
__device__ inline int fp4_exp(float amax, float floor) {
  const float lo = floor > kFp4Floor ? floor : kFp4Floor;
  const float a = amax > lo ? amax : lo;
  return ceil_log2(__fmul_rn(a, 1.0f / kE2m1Max));
}

// Round trips of one element given the block's scale s = 2^e and inv = 2^-e (quant/*.cpp
// *_roundtrip_row); NaN and +-inf pass through.
__device__ inline float fp8_rt(float v, float inv, float s) {
  const float q = fminf(fmaxf(__fmul_rn(v, inv), -kE4m3Max), kE4m3Max);
  const float r = __fmul_rn(copysignf(round_minifloat<3, -6>(fabsf(q)), q), s);
  return finite(v) ? r : v;
}
__device__ inline float fp4_rt(float v, float inv, float s) {
  const float q = fminf(fmaxf(__fmul_rn(v, inv), -kE2m1Max), kE2m1Max);
  const float r = __fmul_rn(copysignf(round_minifloat<1, 0>(fabsf(q)), q), s);
  return finite(v) ? r : v;
}

// The FP8 round trip (amax floor 1e-4) of one run of elements held by a warp, value(k) giving
// element k of the run [k0, k1) and store(k, y) taking its result: every lane of the warp calls
// it (lanes stride the run; the amax is a warp reduction). A run of up to 128 elements (the
// activation quantization's) is computed once, each lane keeping its values in registers; a
// longer one calls value twice per element (amax, then rounding), so value must be deterministic.
template <typename Value, typename Store>
__device__ inline void fp8_run(int64_t k0, int64_t k1, int lane, Value value, Store store) {
  constexpr int kHeld = 4;  // values per lane kept in registers
  if (k1 - k0 <= 32 * kHeld) {
    float v[kHeld];
    float m = 0.0f;
#pragma unroll
    for (int j = 0; j < kHeld; ++j) {
      const int64_t k = k0 + lane + 32 * j;
      v[j] = k < k1 ? value(k) : 0.0f;  // 0 leaves the amax unchanged
      m = fmaxf(m, finite_abs(v[j]));
    }
    const int e = fp8_exp(warp_max(m), kFp8Floor);
    const float s = pow2(e), inv = pow2(-e);
#pragma unroll
    for (int j = 0; j < kHeld; ++j)
      if (k0 + lane + 32 * j < k1) store(k0 + lane + 32 * j, fp8_rt(v[j], inv, s));
    return;
  }
  float m = 0.0f;
  for (int64_t k = k0 + lane; k < k1; k += 32) m = fmaxf(m, finite_abs(value(k)));
  const int e = fp8_exp(warp_max(m), kFp8Floor);
  const float s = pow2(e), inv = pow2(-e);
  for (int64_t k = k0 + lane; k < k1; k += 32) store(k, fp8_rt(value(k), inv, s));
}

}  // namespace v4::cuda::qround

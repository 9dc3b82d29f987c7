// MXFP4: FP4 E2M1 elements, two per byte, with one UE8M0 scale per 32 elements of a row.
//
// Element code (4 bits) S.EE.M, exponent bias 1, no NaN, no infinity:
//   code:   0  1    2  3    4  5  6  7  |  8   9    10  11    12  13  14  15
//   value:  0  0.5  1  1.5  2  3  4  6  | -0  -0.5 -1  -1.5  -2  -3  -4  -6
//   (E = 0: M * 0.5 (subnormal); E > 0: 2^(E-1) * (1 + M/2))
//
// Layout (DeepSeek-V4 routed experts, stored as I8 [out, in/2] + F8_E8M0 [out, in/32]):
//   byte j of a row holds element 2j in its LOW nibble and element 2j+1 in its HIGH nibble
//   (packed along K); scale s of a row covers elements [32s, 32s+32):
//   w[m][k] = e2m1(nibble k of row m) * e8m0(scales[m * ceil(K/32) + k/32]),
// i.e. tensor::scales with scale_block = {32, 1}. dtype::mxfp4 has block_size 2 (elements per
// byte), block_bytes 1; its traits convert unscaled element values.
//
// Conversion from f32 (e2m1_from_f32): round to nearest, ties to the even code (IEEE RNE on the
// e2m1 grid, as the official kernel's cast to float4_e2m1fn (PTX cvt.rn.satfinite.e2m1x2) and
// torchao/ml_dtypes): 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4.
// Saturating: |x| > 6 and +-inf -> +-6. There is no NaN code: NaN -> +0 (documented choice).
// The sign of zero is kept (-0.1 -> code 8).
#pragma once

#include <cstdint>

#include "quant/e8m0.h"

namespace v4::quant {

constexpr int kMxfp4Block = 32;  // elements per e8m0 scale
constexpr float kE2m1Max = 6.0f;
constexpr float kE2m1Values[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                   -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
// Twice the values, as int8: an exact integer lookup table for SIMD dot products
// (e2m1(c) = kE2m1Doubled[c] / 2; fold the 1/2 into the scale).
constexpr int8_t kE2m1Doubled[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
// amax floor of the official fp4 round trip (DeepSeek-V4 inference/kernel.py, fp4_quant_kernel:
// amax = max(amax, 6 * 2**-126), so that the scale 2^ceil(log2(amax/6)) is a normal f32).
constexpr float kFp4AmaxFloor = 6.0f * 0x1p-126f;

inline float e2m1_to_f32(uint8_t code) { return kE2m1Values[code & 15]; }
uint8_t e2m1_from_f32(float x);  // RNE ties-to-even-code, saturating, NaN -> 0 (see above)
// x rounded to the e2m1 grid (saturating at +-6; NaN stays NaN here).
float e2m1_round(float x);

// k of the official scale 2^k: k = ceil(log2(f32(max(amax, 6*2^-126) * f32(1/6)))) (fast_round_scale).
// A floor below 6*2^-126 is raised to it (the scale must stay a normal f32).
int fp4_scale_exp(float amax, float amax_floor = kFp4AmaxFloor);

// One row of k elements (k even; a last partial group of 32 has its own scale):
//   q: k/2 bytes, e8m0_scales: ceil(k/32) codes.
// quantize: per group, s = 2^fp4_scale_exp(amax over finite |x|), code = e2m1(clamp(x/s, -6, 6));
// NaN -> +0, +-inf -> +-6 (and left out of amax).
void quantize_row_mxfp4(const float* x, uint8_t* q, uint8_t* e8m0_scales, int64_t k);
void dequantize_row_mxfp4(const uint8_t* q, const uint8_t* e8m0_scales, float* y, int64_t k);
// Unscaled element values of n elements (n even) from n/2 packed bytes, and back.
void e2m1_to_f32_row(const uint8_t* q, float* y, int64_t n);
void e2m1_from_f32_row(const float* x, uint8_t* q, int64_t n);

// ---- QAT round-trip (the official fp4_act_quant(x, block, inplace=True)) -------------------------
// Each run of `block` consecutive elements (the last may be shorter):
//   s = 2^fp4_scale_exp(amax),  y_i = e2m1(clamp(x_i / s, -6, 6)) * s        (exact in f32)
// NaN and +-inf pass through unchanged and are left out of amax. x and y may alias.
void fp4_roundtrip_row(const float* x, float* y, int64_t n, int block = kMxfp4Block,
                       float amax_floor = kFp4AmaxFloor);

}  // namespace v4::quant

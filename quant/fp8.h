// FP8 E4M3 ("e4m3fn", OCP FP8 E4M3, torch.float8_e4m3fn) with UE8M0 block scales.
//
// Element code (one byte), bits S.EEEE.MMM, exponent bias 7, no infinities:
//   E = 1..15:  (-1)^S * 2^(E-7) * (1 + M/8)       (S.1111.111 = 0x7F / 0xFF is NaN, so the
//                                                     largest finite value is 1.75 * 2^8 = 448)
//   E = 0:      (-1)^S * 2^-6 * (M/8)              subnormals, steps of 2^-9; 0x00 = +0, 0x80 = -0
//
// A DeepSeek-V4 FP8 weight [out = M rows, in = K] stores one e8m0 scale per block of block_k
// consecutive inputs by block_rows rows (V4: 128 x 128, V4.1: 32 x 32):
//   w[m][k] = e4m3(q[m][k]) * e8m0(scales[(m / block_rows) * scale_cols + k / block_k]),
//   scale_cols = ceil(K / block_k), scale_rows = ceil(M / block_rows)   (row-major, K blocks inner)
// which is tensor::scales with scale_block = {block_k, block_rows} (tensor.h).
//
// Conversion from f32 (e4m3_from_f32, the type's from_f32): round to nearest, ties to even,
// with subnormals; SATURATING: finite values beyond +-448 and +-inf become +-448 (the OCP
// "saturated" mode, the PTX cvt.rn.satfinite.e4m3x2 the official kernels compile to, and what the
// official quantizers get by clamping to [-448, 448] first). NaN -> 0x7F (sign kept: 0xFF).
// torch's own float8_e4m3fn cast differs beyond 448: it gives NaN for |x| > 464 and for inf.
#pragma once

#include <cstdint>

#include "quant/e8m0.h"

namespace v4::quant {

constexpr float kE4m3Max = 448.0f;
// amax floor of the official act_quant kernel (DeepSeek-V4 inference/kernel.py, act_quant_kernel:
// amax = max(amax, 1e-4)); used for activations, KV round-trips, and (here) weights too.
constexpr float kFp8AmaxFloor = 1e-4f;

float e4m3_to_f32(uint8_t code);   // exact (table lookup)
uint8_t e4m3_from_f32(float x);    // RNE, saturating, see above
const float* e4m3_table();         // the 256 decoded values, index = code
void e4m3_to_f32_row(const uint8_t* q, float* y, int64_t n);
void e4m3_from_f32_row(const float* x, uint8_t* q, int64_t n);
// x rounded to the nearest e4m3 value, as f32 (saturating; NaN stays NaN): e4m3_to_f32(e4m3_from_f32(x)).
float e4m3_round(float x);

// Exponent k of the official power-of-two scale s = 2^k of a block with absolute maximum amax:
//   k = ceil(log2(f32(max(amax, floor) * f32(1/448))))          (fast_round_scale in kernel.py:
// the product is rounded to f32 first, then its exponent field is read, +1 when any mantissa bit is
// set). amax is the maximum over the block's finite |x|. amax_floor must be >= 448 * 2^-126 (so
// the scale is a normal f32); the official floor is 1e-4.
int fp8_scale_exp(float amax, float amax_floor = kFp8AmaxFloor);

// ---- 2-D block-scaled matrices (weights) --------------------------------------------------------
inline int64_t fp8_scale_cols(int64_t k, int block_k) { return (k + block_k - 1) / block_k; }
inline int64_t fp8_scale_rows(int64_t rows, int block_rows) { return (rows + block_rows - 1) / block_rows; }

// x: rows x k floats, row-major (row stride k). q: rows x k codes. scales: scale_rows x scale_cols
// e8m0 codes as above. Each block's scale is 2^fp8_scale_exp(amax of the block); elements become
// e4m3(clamp(x / s, -448, 448)). Non-finite inputs are left out of amax; NaN -> NaN code, +-inf -> +-448.
// Partial blocks at the right and bottom edges use the elements they have.
void quantize_fp8_blocks(const float* x, int64_t rows, int64_t k, int block_k, int block_rows, uint8_t* q,
                         uint8_t* scales, float amax_floor = kFp8AmaxFloor);
void dequantize_fp8_blocks(const uint8_t* q, const uint8_t* scales, int64_t rows, int64_t k, int block_k,
                           int block_rows, float* y);
// One row of k codes, given the scale row that covers it (scales + (m / block_rows) * scale_cols):
//   y[i] = e4m3(q[i]) * e8m0(row_scales[i / block_k]).
void dequantize_row_fp8(const uint8_t* q, const uint8_t* row_scales, int block_k, float* y, int64_t k);

// ---- QAT round-trip (the official act_quant(x, block, "ue8m0", inplace=True)) ----------------------
// y = x with each run of `block` consecutive elements (the last run may be shorter) replaced by
//   s = 2^fp8_scale_exp(amax),  y_i = e4m3(clamp(x_i / s, -448, 448)) * s       (exact in f32)
// NaN and +-inf elements pass through unchanged and are left out of amax (the official CUDA kernel,
// whose fmaxf/fminf drop NaN, would instead give 448 * s; inputs there are finite).
// x and y may alias.
void fp8_roundtrip_row(const float* x, float* y, int64_t n, int block, float amax_floor = kFp8AmaxFloor);

}  // namespace v4::quant

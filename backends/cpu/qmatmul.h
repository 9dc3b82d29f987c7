// Matrix multiply with block-quantized weights on the CPU: y = x @ w^T (tensor.h convention),
// through the same mm_problem / mm_variant interface as matmul.h.
//
// Weight types (layouts in quant/*.h):
//   fp8_e4m3  one e4m3 byte per element; e8m0 scales per sb_k x sb_m tile (mm_problem::scales:
//             DeepSeek-V4 {128, 128}, V4.1 {32, 32}; any sb_k that is a multiple of 32, any sb_m >= 1)
//   mxfp4     e2m1, two per byte, low nibble first; e8m0 scales per 32 of a row (sb_k 32, sb_m 1)
//   q8_0, q4_k, q3_k, q2_k   in-row blocks (mm_problem::scales unused)
// K must be a whole number of the type's blocks: even for mxfp4, a multiple of 32 for q8_0, of 256
// for the K-quants, any K for fp8. The last scale block along K may be partial (K = 100 with
// sb_k = 32 has 4 scale columns), as in quant/.
//
// Scales: e8m0 code e means 2^(e-127), code 0 is 2^-127 (an f32 subnormal, kept exact), and the
// NaN code 0xFF makes every output whose dot product uses it NaN (IEEE propagation, as the
// reference dequantizer's NaN weights would). e4m3 NaN codes (0x7F, 0xFF) in the weights likewise
// give NaN outputs.
//
// Variants (x: the relative precision x is rounded to first, mm_variant::x_rounding, or int8 per
// block; derivations in qmatmul.cpp):
//   scalar       all six types   0       weight row dequantized by quant/, f32 dot in k order
//   avx512_bf16  all six types   2^-8    x rounded to bf16 once per call; weights decoded to bf16
//                                        exactly (every e4m3, e2m1, int8 and K-quant code is a bf16
//                                        value), scales applied to f32 partial sums. Exact for
//                                        DeepSeek's own numerics: x that act_quant put on the e4m3
//                                        grid (per 128) is representable in bf16. Needs AVX512-BF16
//                                        and VBMI.
//   amx_bf16     all six types   2^-8    prefill (picked for fp8 / mxfp4 from N >= 32 where AMX-BF16
//                                        is present; q8_0 and K-quants keep avx512_vnni): the
//                                        avx512_bf16 numerics on AMX tiles (tdpbf16ps); fp8/mxfp4
//                                        scales folded into the exact bf16 weights when every scaled
//                                        code stays a normal bf16 (else avx512_bf16 runs the call),
//                                        q8_0/K-quant scales on f32 partial sums per block.
//   avx512_vnni  q8_0, q4_k,     int8    x quantized once per call to int8 per block of 32 along K
//                q3_k, q2_k      per 32  (d = amax/127, q = rint(x/d): |x - dq| <= amax/254 per element,
//                                        relative to the block's largest |x|; mm_variant::x_int8_block);
//                                        weight codes dotted as int8 by vpdpbusd, exact int32 sums per
//                                        block, f32 block scales. Picked for these types at every N on
//                                        hosts with AVX512-VNNI (faster than AMX-BF16 on a Xeon but at
//                                        N = 64..128, by 2-7%: qmatmul.cpp). A NaN or inf in x makes the
//                                        outputs of its x row NaN. Needs AVX512-VNNI.
//   avx2         all six types   0       weights dequantized to f32 bit for bit as quant/ does, FMA;
//                                        decode (N <= 8) of fp8, mxfp4, q8_0: decoded in registers,
//                                        the block scale applied to each block's f32 partial sum
//   neon         all six types   0       the same on AArch64
#pragma once

#include <cstddef>
#include <cstdint>

#include "backends/cpu/matmul.h"

namespace v4::cpu {

// The weight types this file handles (whatever the host; the scalar variant runs them all).
bool qmatmul_supports(dtype wtype);
// All variants built into this binary (scalar first).
const mm_variant* qmm_variants(int* count);
// The variant qmatmul() uses for this problem, given the host and isa_limit().
const mm_variant& qmm_pick(dtype wtype, int64_t M, int64_t N, int64_t K);
// Computes p with the picked variant. p.wtype must satisfy qmatmul_supports(); scaled types need
// p.scales, s_stride, sb_k (a multiple of 32; 32 for mxfp4) and sb_m (>= 1).
void qmatmul(const mm_problem& p, int n_threads);

// ---- benchmark and tool support ---------------------------------------------------------------
// Byte layout of a weight matrix of M rows x K as the kernels read it: rows of row_bytes, then (for
// fp8 / mxfp4) scale_rows rows of s_stride e8m0 codes. Scale blocks: the DeepSeek ones
// (fp8 {128, 128}, mxfp4 {32, 1}) unless sb_k / sb_m are given (> 0).
struct qmm_layout {
  size_t row_bytes = 0;    // bytes of one weight row
  int64_t sb_k = 0, sb_m = 0;
  size_t s_stride = 0;     // bytes per scale row (0 for unscaled types)
  int64_t scale_rows = 0;  // ceil(M / sb_m)
};
qmm_layout qmm_layout_of(dtype wtype, int64_t M, int64_t K, int64_t sb_k = 0, int64_t sb_m = 0);
// Bytes one call reads from the weights: M rows plus their scales (for GB/s figures).
size_t qmm_weight_bytes(dtype wtype, int64_t M, int64_t K, int64_t sb_k = 0, int64_t sb_m = 0);
// Fills M rows of w (row stride w_stride) and, for scaled types, the scales (lo.scale_rows rows of
// lo.s_stride bytes) with random valid codes: no NaN codes, scales 2^-4 .. 2^4, f16 super-scales
// of moderate size, so the outputs of x in [-1, 1] stay finite. Fast (random bytes, no search);
// the values are noise, for timing only.
void qmm_fill_random(dtype wtype, const qmm_layout& lo, void* w, size_t w_stride, uint8_t* scales, int64_t M,
                     int64_t K, uint64_t seed);

}  // namespace v4::cpu

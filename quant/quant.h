// Number formats as data: block layouts, reference quantize/dequantize (plain C++), type traits.
//
//   type      header      layout                                                   bits/weight
//   e8m0      e8m0.h      one byte, 2^(e-127), 0xFF NaN (scales)                   8
//   fp8_e4m3  fp8.h       one byte per element + e8m0 scales per 2-D block          8 + 8/(bk*br)
//   mxfp4     mxfp4.h     e2m1, two per byte + e8m0 scale per 32 of a row           4.25
//   q8_0      q8_0.h      32 x int8 + f16 scale                                     8.5
//   q4_k      kquant.h    super-blocks of 256, 8 x (6-bit scale, 6-bit min)         4.5
//   q3_k      kquant.h    super-blocks of 256, 16 x 6-bit signed scale              3.4375
//   q2_k      kquant.h    super-blocks of 256, 16 x (4-bit scale, 4-bit min)        2.625
//
// The SIMD kernels that read these live in backends/cpu/arch/ and test against the row
// dequantizers declared in these headers.
#pragma once

#include "quant/e8m0.h"
#include "quant/fp8.h"
#include "quant/kquant.h"
#include "quant/mxfp4.h"
#include "quant/q8_0.h"

namespace v4::quant {

// Registers every block type this library defines with tensor/ (idempotent, thread-safe).
// Traits rows (to_f32/from_f32 convert whole blocks; n a multiple of block_size):
//   e8m0      block 1,   1 byte    values 2^(e-127) / e8m0_from_f32
//   fp8_e4m3  block 1,   1 byte    UNSCALED element values (scales travel in tensor::scales)
//   mxfp4     block 2,   1 byte    UNSCALED element values, low nibble first
//   q8_0      block 32,  34 bytes
//   q4_k      block 256, 144 bytes
//   q3_k      block 256, 110 bytes
//   q2_k      block 256, 84 bytes
void register_types();

}  // namespace v4::quant

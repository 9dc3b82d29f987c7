// K-quant-class formats for small-RAM machines: super-blocks of 256 weights, in-row, with sub-block
// scales (and mins) quantized against one or two f16 super-scales. Same spirit and sizes as
// llama.cpp's Q4_K / Q3_K / Q2_K; the bit layouts below are this project's own.
//
//   type   bytes/256  bits/weight  sub-blocks        element value
//   q4_k   144        4.5          8 x 32, asym.     d*sc[j]*q - dmin*m[j],   q in [0,15], sc,m 6-bit
//   q3_k   110        3.4375       16 x 16, sym.     d*(sc[j]-32)*(q-4),      q in [0, 7], sc   6-bit
//   q2_k   84         2.625        16 x 16, asym.    d*sc[j]*q - dmin*m[j],   q in [0, 3], sc,m 4-bit
//
// Sub-block j of a super-block holds elements [n_sub*j, n_sub*(j+1)).
//
// Code layouts (chosen so one 32-byte load serves 32 consecutive x values per bit plane):
//   4-bit (q4_k.qs[128]): element 64c + l (c in 0..3, l in 0..31) is the LOW nibble of qs[32c + l];
//                         element 64c + 32 + l is the HIGH nibble of the same byte.
//   2-bit planes (q3_k.qs[64], q2_k.qs[64]): element 128c + 32t + l (c in 0..1, t in 0..3) is bits
//                         2t..2t+1 of qs[32c + l].
//   q3_k high bits (hmask[32]): bit 2 of element 32t + l (t in 0..7) is bit t of hmask[l].
//   6-bit fields (scales[12], 16 values v[0..15]; q4_k: v[0..7] = sc, v[8..15] = m):
//                         low 4 bits of v[i] in scales[i % 8], low nibble for i < 8, high for i >= 8;
//                         high 2 bits of v[i] in scales[8 + i/4], bits 2*(i%4)..2*(i%4)+1.
//   q2_k.scales[16]:      low nibble sc[j], high nibble m[j].
//
// Quantizers minimise the weighted squared error sum_i w_i (x_i - y_i)^2 per sub-block by a search
// over scale candidates with least-squares refits (see kquant.cpp), then quantize the sub-block
// scales against the super-scales and re-fit the codes to the rounded scales. w_i = importance[i]
// when given (e.g. mean squared activations of input column i), else 1 (plain MSE). Non-finite
// inputs are treated as 0 (checkpoints are validated before quantization).
#pragma once

#include <cstdint>

namespace v4::quant {

constexpr int kQK = 256;  // weights per super-block

struct block_q4_k {
  uint16_t d;           // f16 super-scale of the sub-block scales
  uint16_t dmin;        // f16 super-scale of the sub-block mins
  uint8_t scales[12];   // 8 scales + 8 mins, 6 bits each (layout above)
  uint8_t qs[128];      // 4-bit codes
};
static_assert(sizeof(block_q4_k) == 144, "q4_k: 4.5 bits per weight");

struct block_q3_k {
  uint16_t d;           // f16 super-scale
  uint8_t scales[12];   // 16 signed 6-bit scales, stored + 32
  uint8_t hmask[32];    // bit 2 of each code
  uint8_t qs[64];       // bits 0..1 of each code
};
static_assert(sizeof(block_q3_k) == 110, "q3_k: 3.4375 bits per weight");

struct block_q2_k {
  uint16_t d;           // f16 super-scale of the scales
  uint16_t dmin;        // f16 super-scale of the mins
  uint8_t scales[16];   // per sub-block of 16: low nibble scale, high nibble min
  uint8_t qs[64];       // 2-bit codes
};
static_assert(sizeof(block_q2_k) == 84, "q2_k: 2.625 bits per weight");

// 16 six-bit values <-> 12 bytes (layout above).
void pack_6bit_16(const uint8_t v[16], uint8_t out[12]);
void unpack_6bit_16(const uint8_t in[12], uint8_t v[16]);

// k a multiple of 256; blocks = k/256 structs. importance: k non-negative weights or nullptr.
void quantize_row_q4_k(const float* x, void* blocks, int64_t k);
void quantize_row_q4_k_w(const float* x, void* blocks, int64_t k, const float* importance);
void dequantize_row_q4_k(const void* blocks, float* y, int64_t k);

void quantize_row_q3_k(const float* x, void* blocks, int64_t k);
void quantize_row_q3_k_w(const float* x, void* blocks, int64_t k, const float* importance);
void dequantize_row_q3_k(const void* blocks, float* y, int64_t k);

void quantize_row_q2_k(const float* x, void* blocks, int64_t k);
void quantize_row_q2_k_w(const float* x, void* blocks, int64_t k, const float* importance);
void dequantize_row_q2_k(const void* blocks, float* y, int64_t k);

}  // namespace v4::quant

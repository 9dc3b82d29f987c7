// Q8_0: blocks of 32 int8 with one f16 scale, in-row (ggml-compatible in spirit: same size and
// meaning, 8.5 bits per weight).
//   y[i] = f16(d) * qs[i],  qs in [-127, 127]
#pragma once

#include <cstdint>

namespace v4::quant {

constexpr int kQ8_0Block = 32;

struct block_q8_0 {
  uint16_t d;              // f16 scale
  int8_t qs[kQ8_0Block];   // codes
};
static_assert(sizeof(block_q8_0) == 34, "q8_0 block: 2 + 32 bytes");

// k a multiple of 32; blocks = k/32 block_q8_0.
// d = the smallest f16 >= amax/127 (never below, so no code is clipped), qs = round-to-nearest-even
// of x/d. Error bound per element: |x - y| <= d/2. Non-finite inputs: NaN -> 0, +-inf -> +-127
// (left out of amax). Blocks with amax/127 beyond the f16 range (> 65504) saturate d at 65504.
void quantize_row_q8_0(const float* x, void* blocks, int64_t k);
void dequantize_row_q8_0(const void* blocks, float* y, int64_t k);

}  // namespace v4::quant

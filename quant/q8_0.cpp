#include "quant/q8_0.h"

#include <cmath>

#include "tensor/tensor.h"

namespace v4::quant {

void quantize_row_q8_0(const float* x, void* blocks, int64_t k) {
  block_q8_0* b = static_cast<block_q8_0*>(blocks);
  for (int64_t i = 0; i < k / kQ8_0Block; ++i, x += kQ8_0Block) {
    float amax = 0.0f;
    for (int j = 0; j < kQ8_0Block; ++j) {
      const float a = std::fabs(x[j]);
      amax = a <= 3.402823466e38f && a > amax ? a : amax;
    }
    // The smallest f16 >= amax/127, so that |x/d| <= 127 and no code clips (65504 at most).
    const float want = amax / 127.0f;
    uint16_t h = f32_to_f16(want);
    if (f16_to_f32(h) < want) ++h;                         // positive f16 codes are ordered
    if ((h & 0x7fff) >= 0x7c00) h = 0x7bff;                // beyond 65504: saturate
    b[i].d = h;
    const float d = f16_to_f32(h);
    for (int j = 0; j < kQ8_0Block; ++j) {
      float v = d > 0.0f ? x[j] / d : 0.0f;
      if (std::isnan(v)) v = 0.0f;
      v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
      b[i].qs[j] = int8_t(std::nearbyint(v));
    }
  }
}

void dequantize_row_q8_0(const void* blocks, float* y, int64_t k) {
  const block_q8_0* b = static_cast<const block_q8_0*>(blocks);
  for (int64_t i = 0; i < k / kQ8_0Block; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < kQ8_0Block; ++j) y[i * kQ8_0Block + j] = d * float(b[i].qs[j]);
  }
}

}  // namespace v4::quant

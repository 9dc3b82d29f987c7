// UE8M0: an unsigned power-of-two scale in one byte (OCP MX "E8M0", torch.float8_e8m0fnu).
//
//   code e in [0, 254]:  value 2^(e - 127)   (code 0 = 2^-127, an f32 subnormal: exact)
//   code 0xFF:           NaN
//   no sign, no zero, no infinity.
//
// DeepSeek-V4 stores one such byte per 128x128 tile of an FP8 weight (V4.1: per 32x32) and per
// 32 inputs of an MXFP4 expert row; the runtime's QAT round-trips compute the same scales.
#pragma once

#include <cstdint>
#include <cstring>

namespace v4::quant {

constexpr int kE8m0Bias = 127;
constexpr uint8_t kE8m0NaN = 0xFF;

// Exact decode (bit manipulation, no table needed).
inline float e8m0_to_f32(uint8_t e) {
  uint32_t bits;
  if (e == kE8m0NaN) bits = 0x7fc00000u;     // quiet NaN
  else if (e == 0) bits = 0x00400000u;       // 2^-127 (f32 subnormal)
  else bits = uint32_t(e) << 23;             // 2^(e-127), f32 exponent field = e
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// The code of 2^k (k in [-127, 127]); outside that range: 0xFF (no e8m0 value).
inline uint8_t e8m0_from_exp(int k) {
  return (k < -kE8m0Bias || k > kE8m0Bias) ? kE8m0NaN : uint8_t(k + kE8m0Bias);
}

// General conversion (the type's from_f32), torch's float8_e8m0fnu cast rule
// (c10 fp8e8m0fnu_from_fp32_value): the sign is ignored; NaN and +-inf -> 0xFF; otherwise |x| is
// rounded to a power of two on its f32 exponent, rounding UP when the mantissa is >= 0.5 (so
// 1.5 * 2^k -> 2^(k+1): the tie goes up, the implied bit being odd); 0 and tiny values -> code 0
// (2^-127); values >= 1.5 * 2^127 -> 0xFF.
uint8_t e8m0_from_f32(float x);

// ceil(log2(x)) for a positive normal f32, exactly as the official kernels' fast_log2_ceil:
// the exponent field, plus one when any mantissa bit is set (DeepSeek-V4 inference/kernel.py).
inline int ceil_log2_f32(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return int((b >> 23) & 0xff) - 127 + ((b & 0x7fffffu) != 0 ? 1 : 0);
}

// 2^k as f32 for k in [-126, 127] (fast_pow2 of the official kernels).
inline float pow2_f32(int k) {
  const uint32_t b = uint32_t(k + 127) << 23;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

}  // namespace v4::quant

// Rounding to small binary floating-point formats (private to quant/).
#pragma once

#include <cstdint>
#include <cstring>

namespace v4::quant::detail {

inline uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
inline float float_of(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// a (finite, >= 0, below the format's overflow threshold) rounded to nearest, ties to even, on the
// grid of a binary format with `mbits` mantissa bits whose smallest normal is 2^emin (subnormals
// share its spacing). The spacing at a is q = 2^(max(floor(log2 a), emin) - mbits); adding
// M = q * 2^23 puts a into a binade whose f32 ulp is q, so the hardware's round-to-nearest-even
// does the rounding and subtracting M is exact. Branch-free, so loops over it vectorise.
template <int mbits, int emin>
inline float round_minifloat(float a) {
  constexpr uint32_t kMinNormalBits = uint32_t(emin + 127) << 23;
  uint32_t e = bits_of(a) & 0x7f800000u;  // 2^floor(log2 a) (0 for f32 subnormals)
  e = e > kMinNormalBits ? e : kMinNormalBits;
  const float m = float_of(e + (uint32_t(23 - mbits) << 23));  // q * 2^23
  return (a + m) - m;  // IEEE semantics (no -ffast-math): not folded to a
}

}  // namespace v4::quant::detail

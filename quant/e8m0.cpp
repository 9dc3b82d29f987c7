#include "quant/e8m0.h"

namespace v4::quant {

// torch's float8_e8m0fnu cast (c10 fp8e8m0fnu_from_fp32_value), restated: the biased f32 exponent
// field is the e8m0 code; it goes up by one when the mantissa's top bit (the guard bit) is set and
// the value is not exactly 2^-127 * 1.0 (for subnormals the implied bit is 0, so the tie at
// mantissa 0x400000 with nothing below stays down).
uint8_t e8m0_from_f32(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  const uint32_t exp = (b >> 23) & 0xff;
  if (exp == 0xff) return kE8m0NaN;  // NaN, +-inf
  const uint32_t mant = b & 0x7fffffu;
  const bool guard = (mant & 0x400000u) != 0;
  const bool rest = (mant & 0x3fffffu) != 0;
  const bool lsb = exp > 0;  // implied bit
  uint32_t e = exp;
  if (guard && (rest || lsb)) ++e;
  return e >= 0xff ? kE8m0NaN : uint8_t(e);
}

}  // namespace v4::quant

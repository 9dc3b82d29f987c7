// MXFP4 (E2M1 + UE8M0 per 32) rows and the fp4_act_quant round trip.
#include "quant/mxfp4.h"

#include <algorithm>
#include <cmath>

#include "quant/minifloat.h"

namespace v4::quant {

namespace {

// |x| <= 6, finite: nearest e2m1 value, ties to even code, sign kept. (E2M1 = 1 mantissa bit,
// smallest normal 2^0: the grid spacing is 0.5 below 2, 1 in [2, 4), 2 in [4, 6].)
inline float round_e2m1_unsat(float x) { return std::copysign(detail::round_minifloat<1, 0>(std::fabs(x)), x); }

inline float finite_amax(const float* x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    m = a <= 3.402823466e38f && a > m ? a : m;
  }
  return m;
}

// Code of a non-negative grid value r (0, .5, 1, 1.5, 2, 3, 4, 6): 2r = 0,1,2,3,4,6,8,12.
inline uint8_t e2m1_code_of(float r) {
  const int t = int(r * 2.0f);
  return uint8_t(t <= 4 ? t : t == 6 ? 5 : t == 8 ? 6 : 7);
}

}  // namespace

uint8_t e2m1_from_f32(float x) {
  if (std::isnan(x)) return 0;
  const uint8_t sign = std::signbit(x) ? 8 : 0;
  const float a = std::min(std::fabs(x), kE2m1Max);
  return sign | e2m1_code_of(detail::round_minifloat<1, 0>(a));
}

float e2m1_round(float x) {
  if (std::isnan(x)) return x;
  return round_e2m1_unsat(std::clamp(x, -kE2m1Max, kE2m1Max));
}

int fp4_scale_exp(float amax, float amax_floor) {
  // kernel.py fp4_quant_kernel: amax = T.max(amax, 6 * (2**-126));
  // s = fast_pow2(fast_log2_ceil(amax * fp4_max_inv)), fp4_max_inv = 1 / 6 as an f32 constant.
  constexpr float kInv = 1.0f / kE2m1Max;
  const float lo = amax_floor > kFp4AmaxFloor ? amax_floor : kFp4AmaxFloor;
  const float a = amax > lo ? amax : lo;
  return ceil_log2_f32(a * kInv);
}

void e2m1_to_f32_row(const uint8_t* q, float* y, int64_t n) {
  for (int64_t j = 0; j < n / 2; ++j) {
    y[2 * j] = kE2m1Values[q[j] & 15];
    y[2 * j + 1] = kE2m1Values[q[j] >> 4];
  }
}

void e2m1_from_f32_row(const float* x, uint8_t* q, int64_t n) {
  for (int64_t j = 0; j < n / 2; ++j) q[j] = uint8_t(e2m1_from_f32(x[2 * j]) | (e2m1_from_f32(x[2 * j + 1]) << 4));
}

void quantize_row_mxfp4(const float* x, uint8_t* q, uint8_t* e8m0_scales, int64_t k) {
  for (int64_t g = 0; g * kMxfp4Block < k; ++g) {
    const int64_t c0 = g * kMxfp4Block, c1 = std::min<int64_t>(k, c0 + kMxfp4Block);
    const int e = fp4_scale_exp(finite_amax(x + c0, c1 - c0));
    e8m0_scales[g] = e8m0_from_exp(e);
    const float inv = pow2_f32(-e);
    for (int64_t c = c0; c < c1; c += 2)
      q[c / 2] = uint8_t(e2m1_from_f32(x[c] * inv) | (e2m1_from_f32(x[c + 1] * inv) << 4));
  }
}

void dequantize_row_mxfp4(const uint8_t* q, const uint8_t* e8m0_scales, float* y, int64_t k) {
  for (int64_t g = 0; g * kMxfp4Block < k; ++g) {
    const float s = e8m0_to_f32(e8m0_scales[g]);
    const int64_t c0 = g * kMxfp4Block, c1 = std::min<int64_t>(k, c0 + kMxfp4Block);
    for (int64_t c = c0; c < c1; c += 2) {
      y[c] = kE2m1Values[q[c / 2] & 15] * s;
      y[c + 1] = kE2m1Values[q[c / 2] >> 4] * s;
    }
  }
}

void fp4_roundtrip_row(const float* x, float* y, int64_t n, int block, float amax_floor) {
  for (int64_t c0 = 0; c0 < n; c0 += block) {
    const int64_t len = std::min<int64_t>(block, n - c0);
    const int e = fp4_scale_exp(finite_amax(x + c0, len), amax_floor);  // e >= -126
    const float s = pow2_f32(e), inv = pow2_f32(-e);
    for (int64_t i = c0; i < c0 + len; ++i) {
      const float v = x[i];
      const float r = round_e2m1_unsat(std::clamp(v * inv, -kE2m1Max, kE2m1Max)) * s;
      y[i] = std::fabs(v) <= 3.402823466e38f ? r : v;
    }
  }
}

}  // namespace v4::quant

// FP8 E4M3 codes, 2-D block-scaled matrices, and the act_quant round trip.
#include "quant/fp8.h"

#include <algorithm>
#include <cmath>

#include "quant/minifloat.h"

namespace v4::quant {

using detail::bits_of;
using detail::float_of;

namespace {

struct e4m3_lut {
  float v[256];
  e4m3_lut() {
    for (int c = 0; c < 256; ++c) {
      const int e = (c >> 3) & 15, m = c & 7;
      float a;
      if (e == 15 && m == 7) a = NAN;
      else if (e == 0) a = std::ldexp(float(m), -9);
      else a = std::ldexp(float(8 + m), e - 10);
      v[c] = (c & 0x80) ? -a : a;
    }
  }
};
const e4m3_lut& lut() {
  static const e4m3_lut t;
  return t;
}

// |x| <= 448, finite: the e4m3 grid value nearest to x (RNE), sign kept.
inline float round_e4m3_unsat(float x) {
  const float r = detail::round_minifloat<3, -6>(std::fabs(x));
  return std::copysign(r, x);
}

inline bool finite(float x) { return std::fabs(x) <= 3.402823466e38f; }  // false for NaN and inf

// Largest finite |x| of x[0..n) (0 if none).
inline float finite_amax(const float* x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    m = a <= 3.402823466e38f && a > m ? a : m;
  }
  return m;
}

}  // namespace

const float* e4m3_table() { return lut().v; }
float e4m3_to_f32(uint8_t code) { return lut().v[code]; }

uint8_t e4m3_from_f32(float x) {
  const uint8_t sign = (bits_of(x) >> 24) & 0x80;
  if (std::isnan(x)) return sign | 0x7f;
  const float a = std::fabs(x);
  if (a >= kE4m3Max) return sign | 0x7e;  // saturate (inf included)
  const float r = detail::round_minifloat<3, -6>(a);
  if (r < 0x1p-6f) return sign | uint8_t(r * 512.0f);  // subnormal: m * 2^-9 (r = 2^-6 gives code 8, also right)
  const uint32_t b = bits_of(r);
  const int e = int((b >> 23) & 0xff) - 127 + 7;  // 1..15
  return sign | uint8_t(e << 3) | uint8_t((b >> 20) & 7);
}

float e4m3_round(float x) {
  if (std::isnan(x)) return x;
  return round_e4m3_unsat(std::clamp(x, -kE4m3Max, kE4m3Max));
}

void e4m3_to_f32_row(const uint8_t* q, float* y, int64_t n) {
  const float* t = lut().v;
  for (int64_t i = 0; i < n; ++i) y[i] = t[q[i]];
}

void e4m3_from_f32_row(const float* x, uint8_t* q, int64_t n) {
  for (int64_t i = 0; i < n; ++i) q[i] = e4m3_from_f32(x[i]);
}

int fp8_scale_exp(float amax, float amax_floor) {
  // kernel.py: amax = T.max(amax, 1e-4); s = fast_pow2(fast_log2_ceil(amax * fp8_max_inv)),
  // fp8_max_inv = 1 / 448 as an f32 constant.
  constexpr float kInv = 1.0f / kE4m3Max;
  const float a = amax > amax_floor ? amax : amax_floor;
  return ceil_log2_f32(a * kInv);
}

void quantize_fp8_blocks(const float* x, int64_t rows, int64_t k, int block_k, int block_rows, uint8_t* q,
                         uint8_t* scales, float amax_floor) {
  const int64_t sc = fp8_scale_cols(k, block_k), sr = fp8_scale_rows(rows, block_rows);
  for (int64_t bi = 0; bi < sr; ++bi)
    for (int64_t bj = 0; bj < sc; ++bj) {
      const int64_t r0 = bi * block_rows, r1 = std::min(rows, r0 + block_rows);
      const int64_t c0 = bj * block_k, c1 = std::min(k, c0 + block_k);
      float amax = 0.0f;
      for (int64_t r = r0; r < r1; ++r) amax = std::max(amax, finite_amax(x + r * k + c0, c1 - c0));
      const int e = fp8_scale_exp(amax, amax_floor);
      scales[bi * sc + bj] = e8m0_from_exp(e);
      const float inv = pow2_f32(-e);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) q[r * k + c] = e4m3_from_f32(x[r * k + c] * inv);  // saturates
    }
}

void dequantize_row_fp8(const uint8_t* q, const uint8_t* row_scales, int block_k, float* y, int64_t k) {
  const float* t = lut().v;
  for (int64_t c0 = 0; c0 < k; c0 += block_k) {
    const float s = e8m0_to_f32(row_scales[c0 / block_k]);
    const int64_t c1 = std::min(k, c0 + block_k);
    for (int64_t c = c0; c < c1; ++c) y[c] = t[q[c]] * s;
  }
}

void dequantize_fp8_blocks(const uint8_t* q, const uint8_t* scales, int64_t rows, int64_t k, int block_k,
                           int block_rows, float* y) {
  const int64_t sc = fp8_scale_cols(k, block_k);
  for (int64_t r = 0; r < rows; ++r) dequantize_row_fp8(q + r * k, scales + (r / block_rows) * sc, block_k, y + r * k, k);
}

void fp8_roundtrip_row(const float* x, float* y, int64_t n, int block, float amax_floor) {
  for (int64_t c0 = 0; c0 < n; c0 += block) {
    const int64_t len = std::min<int64_t>(block, n - c0);
    const int e = fp8_scale_exp(finite_amax(x + c0, len), amax_floor);
    const float s = pow2_f32(e), inv = pow2_f32(-e);  // x * inv == x / s exactly (powers of two)
    for (int64_t i = c0; i < c0 + len; ++i) {
      const float v = x[i];
      const float r = round_e4m3_unsat(std::clamp(v * inv, -kE4m3Max, kE4m3Max)) * s;
      y[i] = finite(v) ? r : v;
    }
  }
}

}  // namespace v4::quant

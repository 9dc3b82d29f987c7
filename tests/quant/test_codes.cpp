// Element codes: every code of e8m0, e4m3 and e2m1 decoded and compared with definitions written
// here from the bit fields (and with published values); conversions from f32 checked at every
// midpoint between neighbouring codes (ties to even), beyond the range, and on NaN / inf / -0.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "quant/quant.h"

namespace v4::quant {
namespace {

const float kNaNf = std::numeric_limits<float>::quiet_NaN();
const float kInff = std::numeric_limits<float>::infinity();

uint32_t bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// ---- definitions from the bit fields ----------------------------------------------------------------
// e4m3 (OCP E4M3 / e4m3fn): S.EEEE.MMM, bias 7; S.1111.111 NaN; E = 0 subnormal.
double e4m3_def(int c) {
  const int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? m / 8.0 * std::ldexp(1.0, -6) : (1 + m / 8.0) * std::ldexp(1.0, e - 7);
  return s ? -mag : mag;
}
// e2m1: S.EE.M, bias 1; E = 0 subnormal (M * 0.5).
double e2m1_def(int c) {
  const int s = c >> 3, e = (c >> 1) & 3, m = c & 1;
  const double mag = e == 0 ? m * 0.5 : (1 + m / 2.0) * std::ldexp(1.0, e - 1);
  return s ? -mag : mag;
}

// ---- e8m0 ----------------------------------------------------------------------------------------------
TEST(E8m0, decodes_every_code) {
  for (int e = 0; e < 255; ++e) EXPECT_EQ(double(e8m0_to_f32(uint8_t(e))), std::ldexp(1.0, e - 127)) << "code " << e;
  EXPECT_TRUE(std::isnan(e8m0_to_f32(0xff)));
  EXPECT_EQ(bits(e8m0_to_f32(0)), 0x00400000u) << "2^-127 is an f32 subnormal";
  EXPECT_EQ(e8m0_to_f32(127), 1.0f);
}

TEST(E8m0, from_f32_rounds_as_torch) {
  for (int e = 0; e < 255; ++e) EXPECT_EQ(e8m0_from_f32(e8m0_to_f32(uint8_t(e))), e) << "code " << e;
  EXPECT_EQ(e8m0_from_f32(1.0f), 127);
  EXPECT_EQ(e8m0_from_f32(1.49f), 127);
  EXPECT_EQ(e8m0_from_f32(1.5f), 128) << "mantissa 0.5 rounds up (the implied bit is odd)";
  EXPECT_EQ(e8m0_from_f32(0.75f), 127);
  EXPECT_EQ(e8m0_from_f32(-2.0f), 128) << "the sign is ignored";
  EXPECT_EQ(e8m0_from_f32(0.0f), 0);
  EXPECT_EQ(e8m0_from_f32(0x1p-127f), 0) << "subnormal tie stays down (implied bit 0)";
  EXPECT_EQ(e8m0_from_f32(0x1.8p-127f), 1);
  EXPECT_EQ(e8m0_from_f32(0x1p127f), 254);
  EXPECT_EQ(e8m0_from_f32(std::numeric_limits<float>::max()), 255) << "rounds past 2^127";
  EXPECT_EQ(e8m0_from_f32(kInff), 255);
  EXPECT_EQ(e8m0_from_f32(-kInff), 255);
  EXPECT_EQ(e8m0_from_f32(kNaNf), 255);
  EXPECT_EQ(e8m0_from_exp(0), 127);
  EXPECT_EQ(e8m0_from_exp(-127), 0);
  EXPECT_EQ(e8m0_from_exp(127), 254);
  EXPECT_EQ(e8m0_from_exp(128), 255);
  EXPECT_EQ(e8m0_from_exp(-128), 255);
}

TEST(E8m0, ceil_log2_and_pow2) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> lg(-120, 120);
  for (int i = 0; i < 20000; ++i) {
    const float x = float(std::exp2(lg(rng)));
    int e;
    const double m = std::frexp(double(x), &e);
    EXPECT_EQ(ceil_log2_f32(x), m == 0.5 ? e - 1 : e) << x;
  }
  for (int k = -126; k <= 127; ++k) {
    EXPECT_EQ(ceil_log2_f32(std::ldexp(1.0f, k)), k);
    EXPECT_EQ(double(pow2_f32(k)), std::ldexp(1.0, k));
  }
}

// ---- e4m3 ----------------------------------------------------------------------------------------------
TEST(E4m3, decodes_every_code) {
  int nans = 0;
  for (int c = 0; c < 256; ++c) {
    const double want = e4m3_def(c);
    const float got = e4m3_to_f32(uint8_t(c));
    EXPECT_EQ(bits(got), bits(e4m3_table()[c]));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << "code " << c;
      ++nans;
      continue;
    }
    EXPECT_EQ(double(got), want) << "code " << c;
    EXPECT_EQ(std::signbit(got), c >= 128) << "code " << c;
  }
  EXPECT_EQ(nans, 2) << "only 0x7F and 0xFF are NaN (no infinities)";
  // Published values (OCP FP8 spec, torch.finfo(torch.float8_e4m3fn)).
  EXPECT_EQ(e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(e4m3_to_f32(0xfe), -448.0f);
  EXPECT_EQ(e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(e4m3_to_f32(0x08), 0x1p-6f) << "smallest normal";
  EXPECT_EQ(e4m3_to_f32(0x01), 0x1p-9f) << "smallest subnormal";
  EXPECT_EQ(e4m3_to_f32(0x07), 0x1.cp-7f) << "largest subnormal 0.875 * 2^-6";
  EXPECT_EQ(e4m3_to_f32(0x3f), 1.875f);
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(e4m3_to_f32(0xff)));
  EXPECT_TRUE(e4m3_to_f32(0x80) == 0.0f && std::signbit(e4m3_to_f32(0x80)));
}

// Brute-force nearest code (ties to the even code), saturating at 448.
int nearest_e4m3(double x) {
  if (std::isnan(x)) return std::signbit(x) ? 0xff : 0x7f;
  const int sign = std::signbit(x) ? 0x80 : 0;
  const double a = std::min(std::fabs(x), 448.0);
  int best = 0;
  for (int c = 1; c <= 0x7e; ++c) {
    const double d = std::fabs(e4m3_def(c) - a), db = std::fabs(e4m3_def(best) - a);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return sign | best;
}

TEST(E4m3, encodes_every_code_and_every_midpoint) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    EXPECT_EQ(e4m3_from_f32(e4m3_to_f32(uint8_t(c))), c) << "code " << c;
  }
  for (int c = 0; c < 0x7e; ++c)
    for (int sign : {0, 0x80}) {
      const float lo = e4m3_to_f32(uint8_t(sign | c)), hi = e4m3_to_f32(uint8_t(sign | (c + 1)));
      const float mid = (lo + hi) / 2;  // exact: 5 significant bits at most
      ASSERT_EQ(double(mid), (double(lo) + double(hi)) / 2);
      const int even = (c % 2 == 0) ? c : c + 1;
      EXPECT_EQ(e4m3_from_f32(mid), sign | even) << "tie at " << mid;
      EXPECT_EQ(e4m3_from_f32(std::nextafter(mid, lo)), sign | c) << mid;
      EXPECT_EQ(e4m3_from_f32(std::nextafter(mid, hi)), sign | (c + 1)) << mid;
      EXPECT_EQ(e4m3_round(mid), e4m3_to_f32(uint8_t(sign | even)));
    }
}

TEST(E4m3, saturates_and_keeps_nan) {
  for (float x : {448.0f, 449.0f, 464.0f, 465.0f, 480.0f, 1e6f, 3e38f, kInff}) {
    EXPECT_EQ(e4m3_from_f32(x), 0x7e) << x;
    EXPECT_EQ(e4m3_from_f32(-x), 0xfe) << -x;
    EXPECT_EQ(e4m3_round(x), 448.0f) << x;
  }
  EXPECT_EQ(e4m3_from_f32(kNaNf), 0x7f);
  EXPECT_EQ(e4m3_from_f32(-kNaNf), 0xff);
  EXPECT_TRUE(std::isnan(e4m3_round(kNaNf)));
  EXPECT_EQ(e4m3_from_f32(0x1p-10f), 0x00) << "half the smallest subnormal: tie to 0";
  EXPECT_EQ(e4m3_from_f32(std::nextafter(0x1p-10f, 1.0f)), 0x01);
  EXPECT_EQ(e4m3_from_f32(1e-45f), 0x00);
  EXPECT_EQ(e4m3_from_f32(-1e-45f), 0x80) << "the sign of an underflow is kept";
  EXPECT_EQ(e4m3_from_f32(-0.0f), 0x80);
}

TEST(E4m3, random_values_match_brute_force) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> lg(-14, 10), u(0, 1);
  for (int i = 0; i < 50000; ++i) {
    const float x = float((u(rng) < 0.5 ? -1 : 1) * std::exp2(lg(rng)));
    ASSERT_EQ(e4m3_from_f32(x), nearest_e4m3(x)) << x;
  }
}

// ---- e2m1 ----------------------------------------------------------------------------------------------
TEST(E2m1, decodes_every_code) {
  // The published MXFP4 (OCP MX spec) element table.
  const double published[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6};
  for (int c = 0; c < 16; ++c) {
    EXPECT_EQ(double(e2m1_to_f32(uint8_t(c))), published[c]) << "code " << c;
    EXPECT_EQ(double(e2m1_to_f32(uint8_t(c))), e2m1_def(c)) << "code " << c;
    EXPECT_EQ(std::signbit(e2m1_to_f32(uint8_t(c))), c >= 8) << "code " << c;
    EXPECT_EQ(double(kE2m1Doubled[c]), 2 * published[c]) << "code " << c;
    EXPECT_EQ(e2m1_from_f32(e2m1_to_f32(uint8_t(c))), c) << "code " << c;
  }
}

TEST(E2m1, encodes_ties_to_even_and_saturates) {
  struct tc {
    float x;
    int code;
  };
  for (tc t : {tc{0.25f, 0}, tc{0.75f, 2}, tc{1.25f, 2}, tc{1.75f, 4}, tc{2.5f, 4}, tc{3.5f, 6}, tc{5.0f, 6},
               tc{0.26f, 1}, tc{0.74f, 1}, tc{5.01f, 7}, tc{4.99f, 6}, tc{6.0f, 7}, tc{7.0f, 7}, tc{1e30f, 7},
               tc{kInff, 7}, tc{-kInff, 15}, tc{-0.25f, 8}, tc{-0.1f, 8}, tc{-5.0f, 14}, tc{kNaNf, 0}, tc{1e-40f, 0}})
    EXPECT_EQ(e2m1_from_f32(t.x), t.code) << t.x;
  // every midpoint of neighbouring codes
  for (int c = 0; c < 7; ++c) {
    const float mid = (e2m1_to_f32(uint8_t(c)) + e2m1_to_f32(uint8_t(c + 1))) / 2;
    EXPECT_EQ(e2m1_from_f32(mid), c % 2 == 0 ? c : c + 1) << mid;
    EXPECT_EQ(e2m1_from_f32(-mid), 8 | (c % 2 == 0 ? c : c + 1)) << -mid;
    EXPECT_EQ(e2m1_round(mid), e2m1_to_f32(uint8_t(c % 2 == 0 ? c : c + 1)));
  }
  EXPECT_TRUE(std::isnan(e2m1_round(kNaNf)));
}

TEST(E2m1, random_values_match_brute_force) {
  std::mt19937_64 rng(12);
  std::uniform_real_distribution<double> d(-8, 8);
  for (int i = 0; i < 20000; ++i) {
    const float x = float(d(rng));
    int best = 0;
    const double a = std::min(std::fabs(double(x)), 6.0);
    for (int c = 1; c < 8; ++c) {
      const double dc = std::fabs(e2m1_def(c) - a), db = std::fabs(e2m1_def(best) - a);
      if (dc < db || (dc == db && c % 2 == 0)) best = c;
    }
    ASSERT_EQ(e2m1_from_f32(x), (std::signbit(x) ? 8 : 0) | best) << x;
  }
}

// ---- power-of-two block scales (the official fast_round_scale) --------------------------------------------
int scale_exp_def(double amax, double floor, double max) {
  const double inv = double(float(1.0 / max));
  const double r = double(float(std::max(amax, floor) * inv));  // exact product of two f32, one rounding
  int e;
  const double m = std::frexp(r, &e);
  return m == 0.5 ? e - 1 : e;
}

TEST(Scales, fp8_and_fp4_exponents) {
  std::mt19937_64 rng(13);
  std::uniform_real_distribution<double> lg(-140, 120);
  for (int i = 0; i < 20000; ++i) {
    const float a = float(std::exp2(lg(rng)));
    ASSERT_EQ(fp8_scale_exp(a), scale_exp_def(a, double(1e-4f), 448)) << a;
    ASSERT_EQ(fp4_scale_exp(a), scale_exp_def(a, 6 * std::ldexp(1.0, -126), 6)) << a;
  }
  EXPECT_EQ(fp8_scale_exp(0.0f), -22) << "amax floored at 1e-4: 2^ceil(log2(1e-4/448))";
  EXPECT_EQ(fp8_scale_exp(448.0f), 0);
  EXPECT_EQ(fp8_scale_exp(std::nextafter(448.0f, 1e9f)), 1);
  EXPECT_EQ(fp8_scale_exp(224.0f), -1);
  EXPECT_EQ(fp4_scale_exp(0.0f), -126) << "amax floored at 6 * 2^-126";
  EXPECT_EQ(fp4_scale_exp(6.0f), 0);
  EXPECT_EQ(fp4_scale_exp(std::nextafter(6.0f, 1e9f)), 1);
  EXPECT_EQ(fp4_scale_exp(3.0f), -1);
  // 1/448 and 1/6 round UP to f32, so a block's amax never exceeds max * s: the clamp is a no-op.
  EXPECT_GT(double(1.0f / 448.0f), 1.0 / 448);
  EXPECT_GT(double(1.0f / 6.0f), 1.0 / 6);
}

}  // namespace
}  // namespace v4::quant

// Block formats: registration and sizes, documented layouts (blocks built by hand from the layout
// comments), quantize -> dequantize error bounds on random and adversarial data, error statistics
// (RMSE / RMS and bits per weight) for Gaussian and heavy-tailed data, and the QAT row round-trips
// against the quantize/dequantize paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "quant/quant.h"
#include "tensor/tensor.h"

namespace v4::quant {
namespace {

const float kNaNf = std::numeric_limits<float>::quiet_NaN();
const float kInff = std::numeric_limits<float>::infinity();

std::vector<float> gaussian(size_t n, double sigma, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = float(g(rng));
  return v;
}
// Student-t with 3 degrees of freedom: heavy tails (kurtosis unbounded), like LLM weight outliers.
std::vector<float> student_t3(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::student_t_distribution<double> t(3);
  std::vector<float> v(n);
  for (float& x : v) x = float(t(rng));
  return v;
}

double rel_rmse(const std::vector<float>& x, const std::vector<float>& y) {
  double se = 0, ss = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    se += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    ss += double(x[i]) * x[i];
  }
  return std::sqrt(se / ss);
}

// ---- registration ---------------------------------------------------------------------------------------
TEST(Types, registered_by_name_with_sizes) {
  register_types();
  register_types();  // idempotent
  struct row {
    const char* name;
    dtype t;
    int64_t block;
    size_t bytes;
    size_t row4096;
  };
  for (const row& r : {row{"e8m0", dtype::e8m0, 1, 1, 4096}, row{"fp8_e4m3", dtype::fp8_e4m3, 1, 1, 4096},
                       row{"mxfp4", dtype::mxfp4, 2, 1, 2048}, row{"q8_0", dtype::q8_0, 32, 34, 4352},
                       row{"q4_k", dtype::q4_k, 256, 144, 2304}, row{"q3_k", dtype::q3_k, 256, 110, 1760},
                       row{"q2_k", dtype::q2_k, 256, 84, 1344}}) {
    dtype t = dtype::f32;
    ASSERT_TRUE(type_from_name(r.name, &t)) << r.name;
    EXPECT_EQ(t, r.t) << r.name;
    EXPECT_TRUE(type_registered(r.t)) << r.name;
    EXPECT_STREQ(type_name(r.t), r.name);
    EXPECT_EQ(traits(r.t).block_size, r.block) << r.name;
    EXPECT_EQ(traits(r.t).block_bytes, r.bytes) << r.name;
    EXPECT_FALSE(traits(r.t).is_float || traits(r.t).is_int) << r.name;
    EXPECT_NE(traits(r.t).to_f32, nullptr) << r.name;
    EXPECT_NE(traits(r.t).from_f32, nullptr) << r.name;
    EXPECT_EQ(row_size(r.t, 4096), r.row4096) << r.name;
    context ctx;
    tensor* w = ctx.new_tensor(r.t, {512, 3});
    ASSERT_NE(w, nullptr) << ctx.error();
    EXPECT_EQ(w->nb[1], row_size(r.t, 512)) << r.name;
  }
  dtype t;
  EXPECT_FALSE(type_from_name("q5_k", &t));
  EXPECT_FALSE(type_from_name("fp8", &t));
}

TEST(Types, traits_convert_through_the_reference_functions) {
  register_types();
  const std::vector<float> x = gaussian(512, 1.0, 1);
  std::vector<float> y(512), z(512);
  std::vector<uint8_t> buf(row_size(dtype::q2_k, 512) + row_size(dtype::q4_k, 512));
  for (dtype t : {dtype::q8_0, dtype::q4_k, dtype::q3_k, dtype::q2_k, dtype::fp8_e4m3, dtype::mxfp4, dtype::e8m0}) {
    buf.assign(row_size(t, 512), 0);
    traits(t).from_f32(x.data(), buf.data(), 512);
    traits(t).to_f32(buf.data(), y.data(), 512);
    switch (t) {
      case dtype::q8_0: dequantize_row_q8_0(buf.data(), z.data(), 512); break;
      case dtype::q4_k: dequantize_row_q4_k(buf.data(), z.data(), 512); break;
      case dtype::q3_k: dequantize_row_q3_k(buf.data(), z.data(), 512); break;
      case dtype::q2_k: dequantize_row_q2_k(buf.data(), z.data(), 512); break;
      case dtype::fp8_e4m3: for (int i = 0; i < 512; ++i) z[i] = e4m3_round(x[i]); break;
      case dtype::mxfp4: for (int i = 0; i < 512; ++i) z[i] = e2m1_round(x[i]); break;
      default: for (int i = 0; i < 512; ++i) z[i] = e8m0_to_f32(e8m0_from_f32(x[i])); break;
    }
    for (int i = 0; i < 512; ++i) ASSERT_EQ(y[i], z[i]) << type_name(t) << " element " << i;
  }
}

// ---- FP8 block-scaled matrices -------------------------------------------------------------------------
// Per element: half an e4m3 ulp (2^-4 relative for normals; 2^-10 * s absolute in the subnormals).
void check_fp8_matrix(const std::vector<float>& x, int64_t rows, int64_t k, int bk, int br) {
  const int64_t sc = fp8_scale_cols(k, bk), sr = fp8_scale_rows(rows, br);
  std::vector<uint8_t> q(static_cast<size_t>(rows * k)), s(static_cast<size_t>(sc * sr));
  std::vector<float> y(static_cast<size_t>(rows * k)), yr(static_cast<size_t>(k));
  quantize_fp8_blocks(x.data(), rows, k, bk, br, q.data(), s.data());
  dequantize_fp8_blocks(q.data(), s.data(), rows, k, bk, br, y.data());
  for (int64_t bi = 0; bi < sr; ++bi)
    for (int64_t bj = 0; bj < sc; ++bj) {
      double amax = 0;
      for (int64_t r = bi * br; r < std::min(rows, (bi + 1) * br); ++r)
        for (int64_t c = bj * bk; c < std::min(k, (bj + 1) * bk); ++c)
          if (std::isfinite(x[r * k + c])) amax = std::max(amax, std::fabs(double(x[r * k + c])));
      // independent: 2^ceil(log2(f32(max(amax, 1e-4) * f32(1/448))))
      const double ratio = double(float(std::max(amax, double(1e-4f)) * double(1.0f / 448.0f)));
      EXPECT_EQ(double(e8m0_to_f32(s[bi * sc + bj])), std::exp2(std::ceil(std::log2(ratio)))) << bi << "," << bj;
    }
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row_fp8(q.data() + r * k, s.data() + (r / br) * sc, bk, yr.data(), k);
    for (int64_t c = 0; c < k; ++c) {
      const float xv = x[r * k + c], yv = y[r * k + c];
      ASSERT_TRUE(yr[c] == yv || (std::isnan(yr[c]) && std::isnan(yv))) << "row dequantizer agrees";
      const double scale = e8m0_to_f32(s[(r / br) * sc + c / bk]);
      if (std::isnan(xv)) {
        EXPECT_TRUE(std::isnan(yv));
      } else if (std::isinf(xv)) {
        EXPECT_EQ(yv, std::copysign(448.0f, xv) * float(scale));
      } else {
        EXPECT_LE(std::fabs(double(xv) - yv), 0x1p-4 * std::fabs(xv) + 0x1p-10 * scale) << r << "," << c << " x=" << xv;
        EXPECT_EQ(e4m3_round(float(yv / scale)), float(yv / scale)) << "dequantized values are e4m3 * scale";
      }
    }
  }
}

TEST(Fp8Blocks, random_matrices_with_partial_blocks) {
  check_fp8_matrix(gaussian(300 * 520, 0.02, 2), 300, 520, 128, 128);  // V4: 128 x 128, edges partial
  check_fp8_matrix(gaussian(70 * 100, 3.0, 3), 70, 100, 32, 32);       // V4.1: 32 x 32
  check_fp8_matrix(student_t3(64 * 256, 4), 64, 256, 128, 1);          // activations: per row
}

TEST(Fp8Blocks, adversarial_data) {
  const int64_t rows = 4, k = 256;
  std::vector<float> x(rows * k, 0.0f);
  check_fp8_matrix(x, rows, k, 128, 2);  // zeros: floor scale 2^-22, all codes 0
  for (int64_t i = 0; i < rows * k; ++i) x[i] = 3.0f;
  check_fp8_matrix(x, rows, k, 128, 2);  // constant, representable: exact
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(-1, 1);
  for (float& v : x) v = float(u(rng) * 1e-41);  // f32 subnormals
  check_fp8_matrix(x, rows, k, 128, 2);
  for (float& v : x) v = float(u(rng));
  x[5] = 1e30f;          // huge outlier: its block's scale grows, the others do not
  x[300] = kNaNf;        // NaN -> NaN code
  x[301] = kInff;        // inf -> 448 * s, left out of amax
  x[700] = -kInff;
  x[900] = -3e38f;
  check_fp8_matrix(x, rows, k, 128, 2);
  std::vector<uint8_t> q(rows * k), s(4);
  quantize_fp8_blocks(x.data(), rows, k, 128, 2, q.data(), s.data());
  EXPECT_EQ(q[300] & 0x7f, 0x7f);
  EXPECT_EQ(q[301], 0x7e);
  EXPECT_EQ(s[0], e8m0_from_exp(fp8_scale_exp(1e30f))) << "block with the outlier";
  EXPECT_EQ(s[3], e8m0_from_exp(fp8_scale_exp(3e38f))) << "block with -3e38 (and -inf, left out)";
  EXPECT_EQ(s[2], e8m0_from_exp(fp8_scale_exp(1.0f))) << "a block of values in [-1, 1]";
}

// ---- MXFP4 -----------------------------------------------------------------------------------------------
TEST(Mxfp4, layout_low_nibble_first) {
  // Bytes written from the layout comment: byte j = element 2j (low) | element 2j+1 (high).
  const int k = 64;
  std::vector<uint8_t> q(k / 2), s = {127 + 1, 127 - 3};  // scales 2 and 1/8
  for (int j = 0; j < k / 2; ++j) q[j] = uint8_t((j % 16) | ((15 - j % 16) << 4));
  std::vector<float> y(k);
  dequantize_row_mxfp4(q.data(), s.data(), y.data(), k);
  const double table[16] = {0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6};
  for (int i = 0; i < k; ++i) {
    const int code = i % 2 == 0 ? (i / 2) % 16 : 15 - (i / 2) % 16;
    EXPECT_EQ(double(y[i]), table[code] * (i < 32 ? 2.0 : 0.125)) << "element " << i;
  }
}

void check_mxfp4_row(const std::vector<float>& x) {
  const int64_t k = int64_t(x.size());
  std::vector<uint8_t> q(static_cast<size_t>(k / 2)), s(static_cast<size_t>((k + 31) / 32));
  std::vector<float> y(static_cast<size_t>(k)), rt(static_cast<size_t>(k));
  quantize_row_mxfp4(x.data(), q.data(), s.data(), k);
  dequantize_row_mxfp4(q.data(), s.data(), y.data(), k);
  fp4_roundtrip_row(x.data(), rt.data(), k, 32);
  for (int64_t g = 0; g < (k + 31) / 32; ++g) {
    double amax = 0;
    for (int64_t i = 32 * g; i < std::min(k, 32 * g + 32); ++i)
      if (std::isfinite(x[i])) amax = std::max(amax, std::fabs(double(x[i])));
    const double ratio = double(float(std::max(amax, 6 * std::ldexp(1.0, -126)) * double(1.0f / 6.0f)));
    const double scale = std::exp2(std::ceil(std::log2(ratio)));
    ASSERT_EQ(double(e8m0_to_f32(s[g])), scale) << "group " << g;
    for (int64_t i = 32 * g; i < std::min(k, 32 * g + 32); ++i) {
      if (std::isnan(x[i])) {
        EXPECT_EQ(y[i], 0.0f) << "NaN -> +0 (no NaN code)";
        EXPECT_TRUE(std::isnan(rt[i])) << "the round trip passes NaN through";
        continue;
      }
      if (std::isinf(x[i])) {
        EXPECT_EQ(y[i], std::copysign(6.0f, x[i]) * float(scale));
        EXPECT_EQ(rt[i], x[i]);
        continue;
      }
      const double v = std::fabs(x[i]) / scale;  // <= 6
      const double half_step = v < 2 ? 0.25 : v < 4 ? 0.5 : 1.0;
      EXPECT_LE(std::fabs(double(x[i]) - y[i]), half_step * scale) << "element " << i << " x=" << x[i];
      EXPECT_EQ(rt[i], y[i]) << "fp4_roundtrip_row agrees with quantize + dequantize, element " << i;
    }
  }
}

TEST(Mxfp4, round_trips_within_half_a_step) {
  check_mxfp4_row(gaussian(4096, 0.05, 6));
  check_mxfp4_row(student_t3(1000, 7));  // 1000: a last group of 8
  std::vector<float> x(96, 0.0f);
  check_mxfp4_row(x);  // zeros
  for (float& v : x) v = -2.75f;
  check_mxfp4_row(x);  // constant: -2.75/s = -5.5 -> -6 (tie, even code) -> exact bound
  x = gaussian(96, 1e-39, 8);  // f32 subnormals: floor scale 2^-126
  check_mxfp4_row(x);
  x = gaussian(96, 1.0, 9);
  x[3] = 1e35f;
  x[40] = kNaNf;
  x[41] = -kInff;
  x[70] = kInff;
  check_mxfp4_row(x);
}

// ---- Q8_0 ------------------------------------------------------------------------------------------------
TEST(Q8_0, layout_and_error_bound) {
  block_q8_0 b{};
  b.d = f32_to_f16(0.5f);
  for (int i = 0; i < 32; ++i) b.qs[i] = int8_t(i * 8 - 127);
  float y[32];
  dequantize_row_q8_0(&b, y, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.5f * float(i * 8 - 127));

  for (const std::vector<float>& x : {gaussian(4096, 1.0, 10), student_t3(4096, 11), gaussian(4096, 1e-6, 12),
                                      gaussian(4096, 1e4, 13), std::vector<float>(64, 0.0f), std::vector<float>(64, -7.25f)}) {
    const int64_t k = int64_t(x.size());
    std::vector<block_q8_0> q(static_cast<size_t>(k / 32));
    std::vector<float> yy(static_cast<size_t>(k));
    quantize_row_q8_0(x.data(), q.data(), k);
    dequantize_row_q8_0(q.data(), yy.data(), k);
    for (int64_t i = 0; i < k; ++i) {
      const double d = f16_to_f32(q[size_t(i / 32)].d);
      EXPECT_LE(std::abs(int(q[size_t(i / 32)].qs[i % 32])), 127);
      EXPECT_LE(std::fabs(double(x[i]) - yy[i]), d / 2 * (1 + 0x1p-20)) << "element " << i;
    }
  }
  std::vector<float> x = gaussian(64, 1.0, 14);
  x[1] = kNaNf;
  x[2] = kInff;
  x[3] = -kInff;
  std::vector<block_q8_0> q(2);
  quantize_row_q8_0(x.data(), q.data(), 64);
  EXPECT_EQ(q[0].qs[1], 0);
  EXPECT_EQ(q[0].qs[2], 127);
  EXPECT_EQ(q[0].qs[3], -127);
}

// ---- K-quants: layouts built by hand from kquant.h ---------------------------------------------------------
TEST(KQuants, six_bit_packing) {
  std::mt19937_64 rng(15);
  for (int t = 0; t < 1000; ++t) {
    uint8_t v[16], p[12], w[16];
    for (uint8_t& e : v) e = uint8_t(rng() % 64);
    pack_6bit_16(v, p);
    unpack_6bit_16(p, w);
    for (int i = 0; i < 16; ++i) ASSERT_EQ(v[i], w[i]);
  }
  uint8_t v[16] = {}, p[12];
  v[9] = 0x2a;  // 0b10'1010: low nibble 0xa in the high nibble of byte 1, bits 0b10 at byte 8 + 2, bits 2..3
  pack_6bit_16(v, p);
  for (int b = 0; b < 12; ++b) EXPECT_EQ(p[b], b == 1 ? 0xa0 : b == 10 ? 0x08 : 0x00) << "byte " << b;
}

TEST(KQuants, q4_k_layout) {
  block_q4_k b{};
  b.d = f32_to_f16(0.25f);
  b.dmin = f32_to_f16(0.5f);
  uint8_t sm[16];
  for (int j = 0; j < 8; ++j) {
    sm[j] = uint8_t(1 + 7 * j);  // scales
    sm[8 + j] = uint8_t(60 - j);  // mins
  }
  pack_6bit_16(sm, b.scales);
  auto code = [](int i) { return (i * 7 + i / 16) % 16; };
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) b.qs[32 * c + l] = uint8_t(code(64 * c + l) | (code(64 * c + 32 + l) << 4));
  float y[256];
  dequantize_row_q4_k(&b, y, 256);
  for (int i = 0; i < 256; ++i) {
    const int j = i / 32;
    EXPECT_EQ(y[i], 0.25f * float(sm[j]) * float(code(i)) - 0.5f * float(sm[8 + j])) << "element " << i;
  }
}

TEST(KQuants, q3_k_layout) {
  block_q3_k b{};
  b.d = f32_to_f16(-0.125f);
  uint8_t v[16];
  for (int j = 0; j < 16; ++j) v[j] = uint8_t((j * 5 + 3) % 64);  // stored scale + 32
  pack_6bit_16(v, b.scales);
  auto code = [](int i) { return (i * 3 + i / 32) % 8; };
  for (int i = 0; i < 256; ++i) {
    const int c = i / 128, t = (i / 32) % 4, l = i % 32;
    b.qs[32 * c + l] |= uint8_t((code(i) & 3) << (2 * t));
    b.hmask[l] |= uint8_t(((code(i) >> 2) & 1) << (i / 32));
  }
  float y[256];
  dequantize_row_q3_k(&b, y, 256);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(y[i], -0.125f * float(int(v[i / 16]) - 32) * float(code(i) - 4)) << "element " << i;
}

TEST(KQuants, q2_k_layout) {
  block_q2_k b{};
  b.d = f32_to_f16(0.75f);
  b.dmin = f32_to_f16(0.0625f);
  for (int j = 0; j < 16; ++j) b.scales[j] = uint8_t((j % 16) | (((j * 7) % 16) << 4));
  auto code = [](int i) { return (i * 5 + i / 64) % 4; };
  for (int i = 0; i < 256; ++i) b.qs[32 * (i / 128) + i % 32] |= uint8_t(code(i) << (2 * ((i / 32) % 4)));
  float y[256];
  dequantize_row_q2_k(&b, y, 256);
  for (int i = 0; i < 256; ++i) {
    const int j = i / 16;
    EXPECT_EQ(y[i], 0.75f * float(j % 16) * float(code(i)) - 0.0625f * float((j * 7) % 16)) << "element " << i;
  }
}

// ---- K-quants: quality ------------------------------------------------------------------------------------
struct kq {
  const char* name;
  size_t bytes;  // per 256
  void (*quant)(const float*, void*, int64_t);
  void (*quant_w)(const float*, void*, int64_t, const float*);
  void (*dequant)(const void*, float*, int64_t);
  double max_gauss, max_t3;  // RMSE / RMS bounds (measured values are about 3% lower)
  int nmax;
};
const kq kKQuants[] = {
    {"q4_k", sizeof(block_q4_k), quantize_row_q4_k, quantize_row_q4_k_w, dequantize_row_q4_k, 0.072, 0.093, 15},
    {"q3_k", sizeof(block_q3_k), quantize_row_q3_k, quantize_row_q3_k_w, dequantize_row_q3_k, 0.148, 0.188, 7},
    {"q2_k", sizeof(block_q2_k), quantize_row_q2_k, quantize_row_q2_k_w, dequantize_row_q2_k, 0.268, 0.297, 3},
};

std::vector<float> roundtrip(const kq& t, const std::vector<float>& x, const float* imp = nullptr,
                             std::vector<uint8_t>* bytes = nullptr) {
  const int64_t k = int64_t(x.size());
  std::vector<uint8_t> buf(static_cast<size_t>(k / 256) * t.bytes);
  if (imp) t.quant_w(x.data(), buf.data(), k, imp);
  else t.quant(x.data(), buf.data(), k);
  std::vector<float> y(static_cast<size_t>(k));
  t.dequant(buf.data(), y.data(), k);
  if (bytes) *bytes = buf;
  return y;
}

// Plain rounding with unquantized per-sub-block scales, what the search must beat: min/max for the
// asymmetric formats (nmax 15, 3), largest magnitude -> -4 for the symmetric q3_k (nmax 7).
double naive_rel_rmse(const std::vector<float>& x, int len, int nmax) {
  std::vector<float> y(x.size());
  for (size_t b = 0; b < x.size(); b += static_cast<size_t>(len)) {
    float lo = 0, hi = 0, xm = 0;
    for (int i = 0; i < len; ++i) {
      lo = std::min(lo, x[b + i]);
      hi = std::max(hi, x[b + i]);
      if (std::fabs(x[b + i]) > std::fabs(xm)) xm = x[b + i];
    }
    for (int i = 0; i < len; ++i) {
      if (nmax == 7) {
        const double s = xm / -4.0;
        y[b + i] = float(s * std::clamp(std::nearbyint(x[b + i] / s), -4.0, 3.0));
      } else {
        const double s = (hi - lo) / nmax;
        y[b + i] = float(lo + s * std::nearbyint((x[b + i] - lo) / s));
      }
    }
  }
  return rel_rmse(x, y);
}

TEST(KQuants, error_statistics) {
  const std::vector<float> g = gaussian(1 << 18, 1.0, 20), t = student_t3(1 << 18, 21);
  for (const kq& q : kKQuants) {
    const double eg = rel_rmse(g, roundtrip(q, g)), et = rel_rmse(t, roundtrip(q, t));
    const int sub = q.nmax == 15 ? 32 : 16;
    std::cout << "[   INFO   ] " << q.name << ": " << q.bytes * 8 / 256.0 << " bits/weight, RMSE/RMS gaussian " << eg
              << ", student-t3 " << et << " (plain min/max rounding with float scales: " << naive_rel_rmse(g, sub, q.nmax)
              << ")\n";
    EXPECT_LE(eg, q.max_gauss) << q.name;
    EXPECT_LE(et, q.max_t3) << q.name;
    EXPECT_LT(eg, 0.95 * naive_rel_rmse(g, sub, q.nmax)) << q.name << ": the search beats min/max rounding";
  }
  // The other formats, for the same table.
  std::vector<float> y(g.size());
  std::vector<block_q8_0> q8(g.size() / 32);
  quantize_row_q8_0(g.data(), q8.data(), int64_t(g.size()));
  dequantize_row_q8_0(q8.data(), y.data(), int64_t(g.size()));
  const double e8 = rel_rmse(g, y);
  std::vector<uint8_t> q4(g.size() / 2), s4(g.size() / 32);
  quantize_row_mxfp4(g.data(), q4.data(), s4.data(), int64_t(g.size()));
  dequantize_row_mxfp4(q4.data(), s4.data(), y.data(), int64_t(g.size()));
  const double e4 = rel_rmse(g, y);
  fp8_roundtrip_row(g.data(), y.data(), int64_t(g.size()), 128);
  const double ef = rel_rmse(g, y);
  std::cout << "[   INFO   ] gaussian RMSE/RMS: q8_0 (8.5 bits) " << e8 << ", mxfp4 (4.25 bits) " << e4
            << ", fp8_e4m3 per-128 pow2 scale (8.06 bits) " << ef << "\n";
  EXPECT_LE(e8, 0.006);
  EXPECT_LE(e4, 0.12);
  EXPECT_LE(ef, 0.03);
}

TEST(KQuants, importance_weights_lower_the_weighted_error) {
  const std::vector<float> x = gaussian(1 << 14, 1.0, 22);
  std::mt19937_64 rng(23);
  std::exponential_distribution<double> e(1.0);
  std::vector<float> w(x.size());
  for (float& v : w) v = float(e(rng) * e(rng) * 4);  // skewed column importances
  for (const kq& q : kKQuants) {
    const std::vector<float> yu = roundtrip(q, x), yw = roundtrip(q, x, w.data());
    double eu = 0, ew = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      eu += w[i] * (double(x[i]) - yu[i]) * (double(x[i]) - yu[i]);
      ew += w[i] * (double(x[i]) - yw[i]) * (double(x[i]) - yw[i]);
    }
    std::cout << "[   INFO   ] " << q.name << ": weighted error with importances / without: " << ew / eu << "\n";
    EXPECT_LT(ew, 0.9 * eu) << q.name;
  }
}

TEST(KQuants, scale_invariance_across_magnitudes) {
  for (const kq& q : kKQuants) {
    const double ref = rel_rmse(gaussian(1 << 14, 1.0, 24), roundtrip(q, gaussian(1 << 14, 1.0, 24)));
    for (double sigma : {1e-5, 1e-3, 1e-2, 1e3, 1e5}) {
      const std::vector<float> x = gaussian(1 << 14, sigma, 24);
      const double e = rel_rmse(x, roundtrip(q, x));
      EXPECT_LE(e, ref * 1.05) << q.name << " at sigma " << sigma;
    }
  }
}

TEST(KQuants, adversarial_data) {
  for (const kq& q : kKQuants) {
    // zeros: exact
    std::vector<float> x(512, 0.0f);
    for (float v : roundtrip(q, x)) EXPECT_EQ(v, 0.0f) << q.name;
    // constant rows, both signs: nearly exact (the super-scales are f16; at 1e-3 they are f16
    // subnormals, which leaves about 0.1% for the integer scales to make up)
    for (float c : {3.0f, -0.7f, 1e-3f, -250.0f}) {
      x.assign(512, c);
      const std::vector<float> y = roundtrip(q, x);
      for (float v : y) EXPECT_LE(std::fabs(v - c), 2e-3 * std::fabs(c)) << q.name << " constant " << c;
    }
    // f32 subnormals: no NaN, no blow-up
    x = gaussian(512, 1e-40, 25);
    for (float v : roundtrip(q, x)) {
      EXPECT_TRUE(std::isfinite(v));
      EXPECT_LE(std::fabs(v), 1e-38) << q.name;
    }
    // a huge outlier stays in its super-block and is itself kept within 5%
    const std::vector<float> base = gaussian(1024, 1.0, 26);
    x = base;
    x[300] = 1e4f;
    std::vector<uint8_t> b0, b1;
    roundtrip(q, base, nullptr, &b0);
    const std::vector<float> y = roundtrip(q, x, nullptr, &b1);
    EXPECT_LE(std::fabs(y[300] - 1e4f), 500.0f) << q.name;
    for (size_t i = 0; i < b0.size(); ++i)
      if (i / q.bytes != 1) {
        ASSERT_EQ(b0[i], b1[i]) << q.name << ": other super-blocks unchanged";
      }
    // NaN and inf are quantized as 0 (documented)
    x = base;
    std::vector<float> z = base;
    x[5] = kNaNf;
    x[600] = kInff;
    x[601] = -kInff;
    z[5] = z[600] = z[601] = 0.0f;
    roundtrip(q, x, nullptr, &b0);
    roundtrip(q, z, nullptr, &b1);
    EXPECT_EQ(b0, b1) << q.name;
  }
}

// ---- QAT row round-trips ----------------------------------------------------------------------------------
TEST(RoundTrips, fp8_row_agrees_with_block_quantization) {
  for (const std::vector<float>& x : {gaussian(4096, 0.3, 30), student_t3(1000, 31), gaussian(448, 1e-7, 32)}) {
    const int64_t k = int64_t(x.size());
    for (int block : {64, 128}) {
      std::vector<float> y(static_cast<size_t>(k)), z(static_cast<size_t>(k)), inplace = x;
      fp8_roundtrip_row(x.data(), y.data(), k, block);
      std::vector<uint8_t> q(static_cast<size_t>(k)), s(static_cast<size_t>(fp8_scale_cols(k, block)));
      quantize_fp8_blocks(x.data(), 1, k, block, 1, q.data(), s.data());
      dequantize_fp8_blocks(q.data(), s.data(), 1, k, block, 1, z.data());
      fp8_roundtrip_row(inplace.data(), inplace.data(), k, block);
      for (int64_t i = 0; i < k; ++i) {
        ASSERT_EQ(y[i], z[i]) << "block " << block << " element " << i;
        ASSERT_EQ(inplace[i], y[i]) << "in place";
      }
    }
  }
  std::vector<float> x = {1.0f, kNaNf, kInff, -kInff, 2.0f, 0.0f, -3.0f, 100.0f}, y(8);
  fp8_roundtrip_row(x.data(), y.data(), 8, 8);
  EXPECT_TRUE(std::isnan(y[1]));
  EXPECT_EQ(y[2], kInff);
  EXPECT_EQ(y[3], -kInff);
  EXPECT_EQ(y[7], 96.0f) << "amax over the finite values only: 100 -> s = 2^-2; 400 ties 384 / 416 -> 384";
  EXPECT_EQ(y[0], 1.0f);
}

}  // namespace
}  // namespace v4::quant

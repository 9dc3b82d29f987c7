// Quantized-weight matmul (backends/cpu/qmatmul.h): every variant the host runs, every weight type
// it supports, against a float64 reference.
//
// Reference: the weights are dequantized by quant/'s reference row dequantizers (the same codes
// the kernel reads), x is rounded the way the variant declares (x_rounding 2^-8: bf16, with
// v4::f32_to_bf16), and the dot products are summed in double. Tolerance per output:
//
//   |y - ref(x')| <= c * K * 2^-24 * mag,       c = 2,   mag = sum_k |w_k x'_k|
//
// Why: every variant forms each product exactly in f32 (bf16 x bf16 is exact; the f32 paths round
// each FMA once) and adds at most K of them (plus one scaled partial sum per block, and a few f32
// multiplies of block scales, each exact or one rounding) in f32 in some order. Any
// order errs by at most (K - 1) u sum|terms| to first order (Higham, eq. 3.4), u = 2^-24; c = 2
// covers the second-order term and the few per-block roundings (K >= 32 for the block types).
// For the asymmetric K-quants (q4_k, q2_k) the kernels sum d*sc*q*x and dmin*m*x separately, so
// |w_k| in mag is |d sc q_k| + |dmin m| there (it is |w_k| for the other types).
// Rounding variants are also checked against the unrounded x, with the declared contract added:
//   + x_rounding * mag(x)        (|x' - x| <= 2^-8 |x| for bf16)
// The data keep every product and output a normal f32 (vdpbf16ps flushes subnormals).
//
// Every run also checks that all outputs were written (y poisoned with NaN) and nothing else was
// (guard bytes before, between and after the rows of y). NaN references (NaN scale or e4m3 NaN
// code) must give NaN outputs. QmatmulChecker shows the checker rejects wrong values, unwritten
// outputs and stray writes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu.h"
#include "backends/cpu/qmatmul.h"
#include "quant/quant.h"
#include "tensor/tensor.h"

namespace v4::cpu {
namespace {

constexpr double kEpsAcc = 1.0 / 16777216.0;  // 2^-24
constexpr double kC = 2.0;
constexpr uint8_t kGuard = 0xA5;

const dtype kTypes[] = {dtype::fp8_e4m3, dtype::mxfp4, dtype::q8_0, dtype::q4_k, dtype::q3_k, dtype::q2_k};

bool is_scaled(dtype t) { return t == dtype::fp8_e4m3 || t == dtype::mxfp4; }
int64_t k_unit(dtype t) {
  switch (t) {
    case dtype::mxfp4: return 2;
    case dtype::q8_0: return 32;
    case dtype::q4_k:
    case dtype::q3_k:
    case dtype::q2_k: return 256;
    default: return 1;
  }
}

// Memory layout of one case: padding beyond the packed strides, byte offsets of row 0 from a
// 64-aligned base.
struct layout {
  size_t w_pad = 0, x_pad = 0, y_pad = 0, s_pad = 0;  // extra bytes (w, s) / floats (x, y) per row
  size_t w_off = 0, x_off = 0, y_off = 0, s_off = 0;
};
const layout kPacked{};
// Odd strides, x and y 4 bytes past a 64-byte boundary; weight rows 1 byte off for the byte types,
// 2 for the in-row block types (their structs hold f16 fields: 2-byte alignment is part of the
// format, as for quant/'s reference dequantizers).
layout strided(dtype t) {
  const bool bytes = t == dtype::fp8_e4m3 || t == dtype::mxfp4;
  return {bytes ? 5u : 6u, 3, 7, 3, bytes ? 1u : 2u, 4, 4, 3};
}

// What the weights, scales and x look like.
enum class data_kind {
  random,      // random codes; scales 2^-7 .. 2^7; x magnitudes 2^-6 .. 2^2
  act_quant,   // random; x already on the e4m3 grid per 128 (DeepSeek's act_quant)
  scale_low,   // scale codes 0 .. 3 (2^-127 .. 2^-124), x magnitudes ~2^95
  scale_high,  // scale codes 251 .. 254, small weight codes (|w / scale| < 2), x ~2^-100
  nan_scale,   // random, plus one NaN scale code (0xFF)
  nan_weight,  // random, plus one e4m3 NaN weight code (fp8 only; mxfp4 has none)
  one_hot,     // random weights; x row n is the unit vector e_(n mod K): y[n][m] = w[m][n mod K]
  x_zeros,     // random weights; x rows all zero except row 0 (random)
  x_constant,  // random weights; x row n constant (n + 1) / 3 (every 32-block: q = 127 or 0)
  x_outliers,  // random; one element per 32-block of x is 2^20 times larger: it sets amax
  x_nonfinite, // random; x row 0 has a NaN, row 1 (when N > 1) an infinity, the others finite
  special_d,   // random; K-quant super-scales (d, dmin) cycle through +-0, f16 subnormals, the
               // smallest and the largest normal f16 (kernels that convert f16 by integer ops)
};

struct scale_block {
  int64_t k = 0, m = 0;
};

class test_case {
 public:
  test_case(dtype wt, int64_t M, int64_t N, int64_t K, scale_block sb, const layout& lo, data_kind kind, uint32_t seed)
      : wt_(wt), M_(M), N_(N), K_(K), sb_(sb), lo_(lo) {
    if (!is_scaled(wt)) sb_ = {};
    qlo_ = qmm_layout_of(wt, M, K, sb_.k, sb_.m);
    w_stride_ = qlo_.row_bytes + lo.w_pad;
    s_stride_ = qlo_.s_stride + lo.s_pad;
    x_stride_ = size_t(K) * 4 + lo.x_pad * 4;
    y_stride_ = size_t(M) * 4 + lo.y_pad * 4;
    wbuf_.assign(64 + lo.w_off + size_t(M) * w_stride_ + 64, 0);
    sbuf_.assign(64 + lo.s_off + size_t(qlo_.scale_rows) * s_stride_ + 64, 0);
    xbuf_.assign(64 + lo.x_off + size_t(N) * x_stride_ + 64, 0);
    y_begin_ = 64 + lo.y_off;
    ybuf_.assign(64 + y_begin_ + size_t(N) * y_stride_ + 64, 0);
    fill(kind, seed);
  }

  mm_problem problem() {
    mm_problem p;
    p.wtype = wt_;
    p.w = wptr(0);
    p.w_stride = w_stride_;
    p.x = reinterpret_cast<const float*>(aligned(xbuf_) + lo_.x_off);
    p.x_stride = x_stride_;
    p.y = reinterpret_cast<float*>(aligned(ybuf_) + y_begin_);
    p.y_stride = y_stride_;
    p.M = M_;
    p.N = N_;
    p.K = K_;
    if (is_scaled(wt_)) {
      p.scales = sptr(0);
      p.s_stride = s_stride_;
      p.sb_k = sb_.k;
      p.sb_m = sb_.m;
    }
    return p;
  }

  void poison() {
    std::memset(ybuf_.data(), kGuard, ybuf_.size());
    for (int64_t n = 0; n < N_; ++n)
      for (int64_t m = 0; m < M_; ++m) *out(n, m) = std::nanf("");
  }
  float* out(int64_t n, int64_t m) { return problem().y + (size_t(n) * y_stride_) / 4 + size_t(m); }
  float y(int64_t n, int64_t m) { return *out(n, m); }

  // ref = sum_k w x', mag = sum_k |w|' |x'| with x' = x, or x rounded to bf16.
  void reference(bool bf16, std::vector<double>* ref, std::vector<double>* mag) const {
    ref->assign(size_t(N_ * M_), 0.0);
    mag->assign(size_t(N_ * M_), 0.0);
    std::vector<double> xr(static_cast<size_t>(K_));
    for (int64_t n = 0; n < N_; ++n) {
      const float* x = xf_.data() + size_t(n * K_);  // not &v[i]: the vector may be empty (K = 0)
      for (int64_t k = 0; k < K_; ++k) xr[size_t(k)] = bf16 ? bf16_to_f32(f32_to_bf16(x[k])) : x[k];
      for (int64_t m = 0; m < M_; ++m) {
        double s = 0, a = 0;
        const double* w = wd_.data() + size_t(m * K_);  // not &v[i]: the vector may be empty (K = 0)
        const double* wa = wabs_.data() + size_t(m * K_);  // not &v[i]: the vector may be empty (K = 0)
        for (int64_t k = 0; k < K_; ++k) {
          s += w[k] * xr[size_t(k)];
          a += wa[k] * std::fabs(xr[size_t(k)]);
        }
        (*ref)[size_t(n * M_ + m)] = s;
        (*mag)[size_t(n * M_ + m)] = a;
      }
    }
  }

  // The int8 x of mm_variant::x_int8_block, emulated bit for bit (qmatmul.cpp): per block of B,
  // d = f32(amax / 127), q = rint(f32(x / d)) clamped to +-127, x' = d q; NaN for a block holding
  // NaN or inf. e: the documented bound on |x - x'| per element, (amax / 254)(1 + 2^-20) + 2^-140.
  void int8_x(int64_t B, std::vector<double>* xq, std::vector<double>* e) const {
    xq->assign(size_t(N_ * K_), 0.0);
    e->assign(size_t(N_ * K_), 0.0);
    for (int64_t n = 0; n < N_; ++n)
      for (int64_t k0 = 0; k0 < K_; k0 += B) {
        const float* x = xf_.data() + size_t(n * K_ + k0);
        float amax = 0.0f;
        bool finite = true;
        for (int64_t i = 0; i < B; ++i) {
          finite = finite && std::isfinite(x[i]);
          amax = std::max(amax, std::fabs(x[i]));
        }
        const float d = amax / 127.0f;
        for (int64_t i = 0; i < B; ++i) {
          const size_t j = size_t(n * K_ + k0 + i);
          double q = 0.0;
          if (!finite) {
            q = std::nan("");
          } else if (amax > 0.0f) {
            q = double(std::max(-127.0f, std::min(127.0f, std::nearbyint(x[i] / d))));
          }
          (*xq)[j] = double(d) * q;
          (*e)[j] = double(amax) / 254.0 * (1.0 + 0x1p-20) + 0x1p-140;
        }
      }
  }
  // ref = sum_k w x'_k, mag = sum_k |w| |x'_k|, and the contract's extra term against the exact x:
  // extra = sum_k |w_k| e_k (1 + c K u) (test reference for int8 x).
  void reference_int8(int64_t B, std::vector<double>* ref, std::vector<double>* mag, std::vector<double>* extra) const {
    std::vector<double> xq, e;
    int8_x(B, &xq, &e);
    ref->assign(size_t(N_ * M_), 0.0);
    mag->assign(size_t(N_ * M_), 0.0);
    extra->assign(size_t(N_ * M_), 0.0);
    for (int64_t n = 0; n < N_; ++n)
      for (int64_t m = 0; m < M_; ++m) {
        double s = 0, a = 0, ex = 0;
        const double* w = wd_.data() + size_t(m * K_);
        const double* wa = wabs_.data() + size_t(m * K_);
        const double* xr = xq.data() + size_t(n * K_);
        const double* er = e.data() + size_t(n * K_);
        for (int64_t k = 0; k < K_; ++k) {
          s += w[k] * xr[k];
          a += wa[k] * std::fabs(xr[k]);
          ex += wa[k] * er[k];
        }
        (*ref)[size_t(n * M_ + m)] = s;
        (*mag)[size_t(n * M_ + m)] = a;
        (*extra)[size_t(n * M_ + m)] = ex * (1.0 + kC * double(K_) * kEpsAcc);
      }
  }
  // sum over k in [k0, k1) of w[m][k] x'[n][k] with the emulated int8 x (for the checker test).
  double partial_int8(int64_t B, int64_t n, int64_t m, int64_t k0, int64_t k1) const {
    std::vector<double> xq, e;
    int8_x(B, &xq, &e);
    double s = 0;
    for (int64_t k = k0; k < k1; ++k) s += wd_[size_t(m * K_ + k)] * xq[size_t(n * K_ + k)];
    return s;
  }
  // Whether x row n holds a NaN or an infinity.
  bool x_row_nonfinite(int64_t n) const {
    for (int64_t k = 0; k < K_; ++k)
      if (!std::isfinite(xf_[size_t(n * K_ + k)])) return true;
    return false;
  }

  bool guards_intact(std::string* where) {
    const uint8_t* b = aligned(ybuf_);
    const size_t total = ybuf_.size() - 64;
    for (size_t i = 0; i < total; ++i) {
      bool inside = false;
      if (i >= y_begin_) {
        const size_t rel = i - y_begin_;
        inside = int64_t(rel / y_stride_) < N_ && rel % y_stride_ < size_t(M_) * 4;
      }
      if (!inside && b[i] != kGuard) {
        *where = "byte " + std::to_string(int64_t(i) - int64_t(y_begin_)) + " relative to y[0][0]";
        return false;
      }
    }
    return true;
  }

  // Every scale code set to c (the reference is not updated: for runs that are not checked).
  void set_all_scales(uint8_t c) {
    for (int64_t r = 0; r < qlo_.scale_rows; ++r) std::memset(sptr(r), c, qlo_.s_stride);
  }

  dtype wtype() const { return wt_; }
  int64_t M() const { return M_; }
  int64_t N() const { return N_; }
  int64_t K() const { return K_; }
  scale_block sb() const { return sb_; }

 private:
  static uint8_t* aligned(std::vector<uint8_t>& v) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(v.data());
    return v.data() + ((64 - a % 64) % 64);
  }
  uint8_t* wptr(int64_t m) { return aligned(wbuf_) + lo_.w_off + size_t(m) * w_stride_; }
  uint8_t* sptr(int64_t r) { return aligned(sbuf_) + lo_.s_off + size_t(r) * s_stride_; }

  void fill(data_kind kind, uint32_t seed) {
    std::mt19937 rng(seed);
    auto rnd = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    auto half = [&](int elo, int ehi) {  // positive f16 2^e * [1, 2)
      return f32_to_f16(std::ldexp(1.0f + float(rnd(0, 1023)) / 1024.0f, rnd(elo, ehi)));
    };
    const bool high = kind == data_kind::scale_high;
    // Scales.
    for (int64_t r = 0; r < qlo_.scale_rows; ++r)
      for (size_t c = 0; c < qlo_.s_stride; ++c)
        sptr(r)[c] = uint8_t(kind == data_kind::scale_low ? rnd(0, 3) : high ? rnd(251, 254) : rnd(120, 134));
    // Weights: random codes of every kind.
    for (int64_t m = 0; m < M_; ++m) {
      uint8_t* row = wptr(m);
      for (size_t i = 0; i < qlo_.row_bytes; ++i) row[i] = uint8_t(rng());
      switch (wt_) {
        case dtype::fp8_e4m3:
          for (size_t i = 0; i < qlo_.row_bytes; ++i) {
            if ((row[i] & 0x7f) == 0x7f) row[i] ^= 1;   // NaN codes only where asked for
            if (high) row[i] &= 0xbf;                    // |value| < 2: 2 * 2^127 would overflow f32
          }
          break;
        case dtype::mxfp4:
          if (high)
            for (size_t i = 0; i < qlo_.row_bytes; ++i) row[i] &= 0xbb;  // |value| <= 1.5
          break;
        case dtype::q8_0:
          for (int64_t b = 0; b < K_ / 32; ++b) {
            auto* blk = reinterpret_cast<quant::block_q8_0*>(row + b * sizeof(quant::block_q8_0));
            blk->d = uint16_t(half(-12, -4) | (rnd(0, 3) == 0 ? 0x8000 : 0));  // some negative
          }
          break;
        case dtype::q4_k:
          for (int64_t b = 0; b < K_ / 256; ++b) {
            auto* blk = reinterpret_cast<quant::block_q4_k*>(row + b * sizeof(quant::block_q4_k));
            blk->d = half(-14, -8);
            blk->dmin = half(-14, -8);
          }
          break;
        case dtype::q3_k:
          for (int64_t b = 0; b < K_ / 256; ++b)
            reinterpret_cast<quant::block_q3_k*>(row + b * sizeof(quant::block_q3_k))->d = half(-14, -8);
          break;
        case dtype::q2_k:
          for (int64_t b = 0; b < K_ / 256; ++b) {
            auto* blk = reinterpret_cast<quant::block_q2_k*>(row + b * sizeof(quant::block_q2_k));
            blk->d = half(-12, -6);
            blk->dmin = half(-12, -6);
          }
          break;
        default: break;
      }
      if (kind == data_kind::special_d) {
        // (0, subnormals: 2^-24, the largest, one in between; 2^-14; 65504 and 2^10: products and
        // outputs stay normal f32 with the x magnitudes below. Negative only for q3_k: the |w|
        // terms of the asymmetric types assume d, dmin >= 0.)
        static const uint16_t special[] = {0x0000, 0x0001, 0x03FF, 0x0155, 0x0400, 0x7BFF, 0x6400, 0x0200};
        const size_t bs = wt_ == dtype::q4_k ? sizeof(quant::block_q4_k)
                          : wt_ == dtype::q3_k ? sizeof(quant::block_q3_k)
                          : wt_ == dtype::q2_k ? sizeof(quant::block_q2_k)
                                               : 0;
        for (int64_t b = 0; bs && b < K_ / 256; ++b) {
          uint16_t h[2];  // d, then dmin (q4_k, q2_k): both at the start of the block
          std::memcpy(h, row + b * bs, 4);
          if ((m + b) % 3 != 2) h[0] = special[size_t(m + 3 * b) % 8];  // some blocks keep a random d
          if (wt_ == dtype::q3_k && (m + b) % 4 == 1) h[0] ^= 0x8000;
          if (wt_ != dtype::q3_k && (m + b) % 2 == 0) h[1] = special[size_t(5 * m + b) % 8];
          std::memcpy(row + b * bs, h, wt_ == dtype::q3_k ? 2 : 4);
        }
      }
    }
    if (kind == data_kind::nan_scale && is_scaled(wt_)) sptr(qlo_.scale_rows / 2)[qlo_.s_stride / 2] = 0xff;
    if (kind == data_kind::nan_weight && wt_ == dtype::fp8_e4m3) {
      wptr(M_ - 1)[K_ / 3] = 0xff;
      wptr(M_ / 2)[K_ / 2] = 0x7f;
    }
    // Dequantized weights and |w| terms.
    wd_.resize(size_t(M_ * K_));
    wabs_.resize(size_t(M_ * K_));
    std::vector<float> row(static_cast<size_t>(K_)), row_abs(static_cast<size_t>(K_));
    std::vector<uint8_t> copy(qlo_.row_bytes);
    for (int64_t m = 0; m < M_; ++m) {
      dequant(wptr(m), m, row.data());
      // |d sc q| + |dmin m| for the asymmetric K-quants: the same row with dmin negated (d, sc,
      // q, m >= 0 there), made positive.
      if (qlo_.row_bytes) std::memcpy(copy.data(), wptr(m), qlo_.row_bytes);
      if (wt_ == dtype::q4_k || wt_ == dtype::q2_k) {
        const size_t bs = wt_ == dtype::q4_k ? sizeof(quant::block_q4_k) : sizeof(quant::block_q2_k);
        for (int64_t b = 0; b < K_ / 256; ++b) copy[b * bs + 3] ^= 0x80;  // dmin's sign bit
        dequant(copy.data(), m, row_abs.data());
      } else {
        row_abs = row;
      }
      for (int64_t k = 0; k < K_; ++k) {
        wd_[size_t(m * K_ + k)] = row[size_t(k)];
        wabs_[size_t(m * K_ + k)] = std::fabs(double(row_abs[size_t(k)]));
      }
    }
    // x.
    std::uniform_real_distribution<float> uni(0.5f, 1.0f);
    const int elo = kind == data_kind::scale_low ? 93 : high ? -102 : -6;
    const int ehi = kind == data_kind::scale_low ? 97 : high ? -98 : 2;
    xf_.resize(size_t(N_ * K_));
    for (int64_t n = 0; n < N_; ++n) {
      float* x = xf_.data() + size_t(n * K_);  // not &v[i]: the vector may be empty (K = 0)
      for (int64_t k = 0; k < K_; ++k) {
        const float v = rng() % 16 == 0 ? 0.0f : std::ldexp(uni(rng), rnd(elo, ehi));
        x[k] = kind == data_kind::one_hot ? (k == n % K_ ? 1.0f : 0.0f) : (rng() & 1) ? -v : v;
        if (kind == data_kind::x_zeros && n > 0) x[k] = 0.0f;
        if (kind == data_kind::x_constant) x[k] = float(n + 1) / 3.0f;
        if (kind == data_kind::x_outliers && k % 32 == (n * 7 + k / 32) % 32) x[k] *= 1048576.0f;
      }
      if (kind == data_kind::x_nonfinite && K_ > 0 && n < 2) x[(K_ / 2 + 5 * n) % K_] = n == 0 ? std::nanf("") : -INFINITY;
      if (kind == data_kind::act_quant) quant::fp8_roundtrip_row(x, x, K_, 128);
      if (K_ > 0) std::memcpy(aligned(xbuf_) + lo_.x_off + size_t(n) * x_stride_, x, size_t(K_) * 4);
    }
  }

  void dequant(const uint8_t* w, int64_t m, float* dst) const {
    const uint8_t* sc = const_cast<test_case*>(this)->sptr(is_scaled(wt_) ? m / sb_.m : 0);
    switch (wt_) {
      case dtype::fp8_e4m3: quant::dequantize_row_fp8(w, sc, int(sb_.k), dst, K_); break;
      case dtype::mxfp4: quant::dequantize_row_mxfp4(w, sc, dst, K_); break;
      case dtype::q8_0: quant::dequantize_row_q8_0(w, dst, K_); break;
      case dtype::q4_k: quant::dequantize_row_q4_k(w, dst, K_); break;
      case dtype::q3_k: quant::dequantize_row_q3_k(w, dst, K_); break;
      case dtype::q2_k: quant::dequantize_row_q2_k(w, dst, K_); break;
      default: break;
    }
  }

  dtype wt_;
  int64_t M_, N_, K_;
  scale_block sb_;
  layout lo_;
  qmm_layout qlo_;
  size_t w_stride_ = 0, s_stride_ = 0, x_stride_ = 0, y_stride_ = 0, y_begin_ = 0;
  std::vector<uint8_t> wbuf_, sbuf_, xbuf_, ybuf_;
  std::vector<double> wd_, wabs_;
  std::vector<float> xf_;
};

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

struct check_result {
  int bad = 0;
  std::string first;
  bool ok() const { return bad == 0; }
};

// Every output within kC K u mag + extra (per output), NaN exactly where ref is NaN; guards intact.
check_result check_output(test_case& tc, const std::vector<double>& ref, const std::vector<double>& mag,
                          const std::vector<double>& extra) {
  check_result r;
  for (int64_t n = 0; n < tc.N(); ++n)
    for (int64_t m = 0; m < tc.M(); ++m) {
      const size_t i = size_t(n * tc.M() + m);
      const double y = tc.y(n, m);
      const double tol = kC * double(tc.K()) * kEpsAcc * mag[i] + extra[i];
      const double err = std::fabs(y - ref[i]);
      const bool good = std::isnan(ref[i]) ? std::isnan(y) : err <= tol;  // err <= tol is false for NaN y
      if (!good && r.bad++ == 0)
        r.first = "y[" + std::to_string(n) + "][" + std::to_string(m) + "] = " + num(y) + ", ref " + num(ref[i]) +
                  ", |err| " + num(err) + " > tol " + num(tol);
    }
  std::string where;
  if (!tc.guards_intact(&where) && r.bad++ == 0) r.first = "wrote outside y: " + where;
  return r;
}

// int8 x (mm_variant::x_int8_block): first against the emulated x' (accumulation bound alone: a
// skipped block or a wrong scale shows there), then against the exact x with the contract's term.
check_result check_int8(const mm_variant& v, test_case& tc) {
  std::vector<double> ref, mag, extra;
  tc.reference_int8(v.x_int8_block, &ref, &mag, &extra);
  check_result r = check_output(tc, ref, mag, std::vector<double>(ref.size(), 0.0));
  if (!r.ok()) {
    r.first = "(against the emulated int8 x) " + r.first;
    return r;
  }
  std::vector<double> ref_x, mag_x;
  tc.reference(false, &ref_x, &mag_x);
  // A NaN or inf in x makes its row's outputs NaN (documented; the exact result may be +-inf).
  for (int64_t n = 0; n < tc.N(); ++n)
    if (tc.x_row_nonfinite(n))
      for (int64_t m = 0; m < tc.M(); ++m) ref_x[size_t(n * tc.M() + m)] = std::nan("");
  r = check_output(tc, ref_x, mag_x, extra);
  if (!r.ok()) r.first = "(against exact x, int8 contract) " + r.first;
  return r;
}

check_result run_and_check(const mm_variant& v, test_case& tc, int n_threads) {
  tc.poison();
  v.run(tc.problem(), n_threads);
  if (v.x_int8_block) return check_int8(v, tc);
  const bool rounded = v.x_rounding > 0;
  std::vector<double> ref, mag;
  tc.reference(rounded, &ref, &mag);
  check_result r = check_output(tc, ref, mag, std::vector<double>(ref.size(), 0.0));
  if (r.ok() && rounded) {
    tc.reference(false, &ref, &mag);
    std::vector<double> extra(ref.size());
    for (size_t i = 0; i < extra.size(); ++i) extra[i] = v.x_rounding * mag[i];
    r = check_output(tc, ref, mag, extra);
    if (!r.ok()) r.first = "(against unrounded x) " + r.first;
  }
  return r;
}

struct shape {
  int64_t M, N, K;
};

// Shapes per type: K a multiple of the type's block and (where the type allows) not of 128 or 64;
// M not a multiple of the row blocks; N in 1..16 (decode) and 17, 64..130 (prefill).
std::vector<shape> shapes_for(dtype t) {
  std::vector<shape> s;
  const int64_t u = k_unit(t);
  std::vector<int64_t> ks;
  if (u == 1) ks = {1, 7, 32, 50, 64, 100, 128, 200, 257, 1030};
  else if (u == 2) ks = {2, 30, 32, 62, 64, 100, 130, 256, 514, 1030};
  else if (u == 32) ks = {32, 96, 160, 544};
  else ks = {256, 512, 1280};
  const int64_t ms[] = {1, 3, 7, 16, 17, 33, 100, 129, 257};
  const int64_t ns[] = {1, 2, 3, 4, 5, 8, 9, 13, 16, 17, 64, 65, 96, 130};
  size_t i = 0;
  for (int64_t k : ks)
    for (int64_t n : ns) {
      const int64_t m = ms[(i++ * 5) % 9];
      if (m * n * k > 3000000) continue;  // keeps the double reference quick
      s.push_back({m, n, k});
    }
  return s;
}

std::vector<scale_block> blocks_for(dtype t) {
  if (t == dtype::fp8_e4m3) return {{128, 128}, {32, 32}, {64, 1}, {96, 3}, {256, 7}};
  if (t == dtype::mxfp4) return {{32, 1}, {32, 2}};
  return {{0, 0}};
}

std::string describe(const mm_variant& v, const test_case& tc, const char* what) {
  std::string s = std::string(v.name) + " " + type_name(tc.wtype()) + " M=" + std::to_string(tc.M()) +
                  " N=" + std::to_string(tc.N()) + " K=" + std::to_string(tc.K());
  if (tc.sb().k) s += " sb={" + std::to_string(tc.sb().k) + "," + std::to_string(tc.sb().m) + "}";
  return s + " " + what;
}

// ---- per-variant tests -----------------------------------------------------------------------
class QmatmulVariant : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    quant::register_types();
    int count = 0;
    v_ = &qmm_variants(&count)[GetParam()];
    if (!isa_available(v_->level) || !v_->available())
      GTEST_SKIP() << v_->name << ": this host cannot run it (" << features_string() << ")";
  }
  // q4_k, q3_k and q2_k at each shape, with special and random super-scales, seeds from `seed`.
  void check_kquant_shapes(std::initializer_list<shape> shapes, uint32_t seed) {
    for (dtype t : {dtype::q4_k, dtype::q3_k, dtype::q2_k}) {
      if (!v_->supports(t, 1, 1, 1)) continue;
      for (const shape& s : shapes)
        for (data_kind kind : {data_kind::special_d, data_kind::random}) {
          test_case tc(t, s.M, s.N, s.K, {}, (seed & 1) ? strided(t) : kPacked, kind, seed);
          ++seed;
          const check_result r = run_and_check(*v_, tc, 2);
          ASSERT_TRUE(r.ok()) << describe(*v_, tc, kind == data_kind::special_d ? "special d" : "random") << ": "
                              << r.bad << " bad, first " << r.first;
        }
    }
  }
  const mm_variant* v_ = nullptr;
};

std::string variant_name(const ::testing::TestParamInfo<int>& info) {
  int count = 0;
  return qmm_variants(&count)[info.param].name;
}

TEST_P(QmatmulVariant, RandomDataAllShapes) {
  uint32_t seed = 1;
  for (dtype t : kTypes) {
    if (!v_->supports(t, 1, 1, 1)) continue;
    const std::vector<scale_block> sbs = blocks_for(t);
    size_t i = 0;
    for (const shape& s : shapes_for(t)) {
      const scale_block sb = sbs[i++ % sbs.size()];
      for (const layout& lo : {kPacked, strided(t)}) {
        test_case tc(t, s.M, s.N, s.K, sb, lo, data_kind::random, seed++);
        const check_result r = run_and_check(*v_, tc, 2);
        ASSERT_TRUE(r.ok()) << describe(*v_, tc, lo.w_off ? "strided" : "packed") << ": " << r.bad << " bad, first "
                            << r.first;
      }
    }
  }
}

// Extreme scale exponents (codes 0..3 and 251..254) and NaN codes: partial sums and panels must
// neither flush nor overflow where the f32 reference does not.
TEST_P(QmatmulVariant, ExtremeScalesAndNaN) {
  const shape shapes[] = {{33, 1, 512}, {17, 4, 256}, {20, 16, 320}, {50, 70, 512}, {7, 130, 256}};
  uint32_t seed = 500;
  for (dtype t : {dtype::fp8_e4m3, dtype::mxfp4}) {
    if (!v_->supports(t, 1, 1, 1)) continue;
    for (data_kind kind : {data_kind::scale_low, data_kind::scale_high, data_kind::nan_scale, data_kind::nan_weight})
      for (const scale_block& sb : blocks_for(t))
        for (const shape& s : shapes) {
          test_case tc(t, s.M, s.N, s.K, sb, strided(t), kind, seed++);
          const check_result r = run_and_check(*v_, tc, 2);
          const char* what = kind == data_kind::scale_low    ? "scales 2^-127.."
                             : kind == data_kind::scale_high ? "scales ..2^127"
                             : kind == data_kind::nan_scale  ? "NaN scale"
                                                             : "NaN weight";
          ASSERT_TRUE(r.ok()) << describe(*v_, tc, what) << ": " << r.bad << " bad, first " << r.first;
        }
  }
}

// The exact variants dequantize the weights to the reference's f32 values bit for bit (qmatmul.h):
// with x = unit vectors every output is one weight times 1 plus exact zeros, so y must equal the
// reference weight exactly. (Whether a compiler contracts the K-quants' (d * sc) * q - dmin * m
// into one FMA does not matter: (d * sc) * q has at most 11 + 6 + 4 significant bits, exact in f32.)
TEST_P(QmatmulVariant, ExactVariantsReproduceTheReferenceWeights) {
  if (v_->x_rounding != 0 || v_->x_int8_block) GTEST_SKIP() << "x rounded: covered by the bounds above";
  uint32_t seed = 5000;
  for (dtype t : kTypes) {
    if (!v_->supports(t, 1, 1, 1)) continue;
    const int64_t K = k_unit(t) == 256 ? 512 : k_unit(t) == 32 ? 160 : t == dtype::mxfp4 ? 130 : 300;
    for (const scale_block& sb : blocks_for(t)) {
      test_case tc(t, 37, K, K, sb, strided(t), data_kind::one_hot, seed++);
      tc.poison();
      v_->run(tc.problem(), 2);
      std::vector<double> ref, mag;
      tc.reference(false, &ref, &mag);  // = w[m][n] exactly (one product by 1, in double)
      for (int64_t n = 0; n < K; ++n)
        for (int64_t m = 0; m < 37; ++m)
          ASSERT_EQ(double(tc.y(n, m)), ref[size_t(n * 37 + m)]) << describe(*v_, tc, "one-hot x") << " w[" << m << "][" << n << "]";
    }
  }
}

// NaN codes of the in-row types cannot occur (f16 super-scales could be NaN, but quantizers never
// write one); their scaled counterparts are covered above.

// x on the e4m3 grid per 128 (DeepSeek's act_quant) is exact in bf16: the rounding variants must
// then meet the accumulation bound alone, against the unrounded x.
TEST_P(QmatmulVariant, ActQuantInputIsExact) {
  if (v_->x_rounding == 0) GTEST_SKIP() << "exact variant, or int8 x (whose error act_quant does not remove)";
  uint32_t seed = 900;
  for (dtype t : {dtype::fp8_e4m3, dtype::mxfp4})
    for (const shape& s : {shape{64, 1, 1024}, shape{33, 7, 512}, shape{40, 96, 384}}) {
      if (!v_->supports(t, 1, 1, 1)) continue;
      test_case tc(t, s.M, s.N, s.K, blocks_for(t)[0], kPacked, data_kind::act_quant, seed++);
      tc.poison();
      v_->run(tc.problem(), 2);
      std::vector<double> ref, mag;
      tc.reference(false, &ref, &mag);
      const check_result r = check_output(tc, ref, mag, std::vector<double>(ref.size(), 0.0));
      ASSERT_TRUE(r.ok()) << describe(*v_, tc, "act_quant x") << ": " << r.first;
    }
}

// Scratch memory is reused across calls: scale buffers padded past the last column must not carry
// values (here NaN) of an earlier, wider problem into a later one. One thread: the same scratch.
TEST_P(QmatmulVariant, ReusedScratchCarriesNothingOver) {
  uint32_t seed = 3000;
  for (dtype t : {dtype::fp8_e4m3, dtype::mxfp4})
    for (const shape& s : {shape{5, 1, 512}, shape{5, 3, 500}, shape{5, 6, 480}, shape{70, 40, 512}}) {
      if (!v_->supports(t, 1, 1, 1)) continue;
      test_case wide(t, 5, s.N, 2 * s.K + 64, {32, 1}, kPacked, data_kind::random, seed++);
      wide.set_all_scales(0xff);
      v_->run(wide.problem(), 1);
      test_case tc(t, s.M, s.N, s.K, {32, 1}, kPacked, data_kind::random, seed++);
      const check_result r = run_and_check(*v_, tc, 1);
      ASSERT_TRUE(r.ok()) << describe(*v_, tc, "after a NaN-scaled wider call") << ": " << r.first;
    }
}

// No variant splits K across threads: one and two threads give the same bits.
TEST_P(QmatmulVariant, OneAndTwoThreadsAgree) {
  const shape shapes[] = {{257, 1, 1024}, {100, 7, 512}, {129, 96, 256}, {64, 130, 512}};
  uint32_t seed = 2000;
  for (dtype t : kTypes) {
    if (!v_->supports(t, 1, 1, 1)) continue;
    for (const shape& s : shapes) {
      test_case tc(t, s.M, s.N, s.K, blocks_for(t)[0], strided(t), data_kind::random, seed++);
      const check_result r1 = run_and_check(*v_, tc, 1);
      ASSERT_TRUE(r1.ok()) << describe(*v_, tc, "1 thread") << ": " << r1.first;
      std::vector<float> y1;
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t m = 0; m < s.M; ++m) y1.push_back(tc.y(n, m));
      const check_result r2 = run_and_check(*v_, tc, 2);
      ASSERT_TRUE(r2.ok()) << describe(*v_, tc, "2 threads") << ": " << r2.first;
      size_t i = 0;
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t m = 0; m < s.M; ++m, ++i)
          ASSERT_EQ(std::memcmp(&y1[i], tc.out(n, m), 4), 0) << describe(*v_, tc, "") << " y[" << n << "][" << m << "]";
    }
  }
}

TEST_P(QmatmulVariant, EmptySumIsZero) {
  for (dtype t : kTypes) {
    if (!v_->supports(t, 1, 1, 1)) continue;
    for (const shape& s : {shape{5, 3, 0}, shape{40, 70, 0}}) {
      test_case tc(t, s.M, s.N, s.K, blocks_for(t)[0], strided(t), data_kind::random, 7);
      const check_result r = run_and_check(*v_, tc, 2);
      ASSERT_TRUE(r.ok()) << describe(*v_, tc, "K=0") << ": " << r.first;
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t m = 0; m < s.M; ++m) ASSERT_EQ(tc.y(n, m), 0.0f);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, QmatmulVariant, ::testing::Range(0, [] {
                           int count = 0;
                           qmm_variants(&count);
                           return count;
                         }()),
                         variant_name);

// int8 x (mm_variant::x_int8_block): the decode (N <= 16) and panel (N >= 17) paths of every type
// at the shapes of the brief, with x that is all zero, constant, dominated by one outlier per
// block, or non-finite (NaN / inf: the outputs of that x row are NaN; qmatmul.cpp).
TEST_P(QmatmulVariant, Int8XShapesAndSpecialInputs) {
  if (!v_->x_int8_block) GTEST_SKIP() << "x not quantized to int8";
  uint32_t seed = 7000;
  const int64_t ns[] = {1, 2, 5, 16, 17, 64};
  for (dtype t : {dtype::q8_0, dtype::q4_k, dtype::q3_k, dtype::q2_k}) {
    if (!v_->supports(t, 1, 1, 1)) continue;
    for (int64_t K : {256, 512, 4096})
      for (int64_t N : ns)
        for (data_kind kind : {data_kind::random, data_kind::x_zeros, data_kind::x_constant, data_kind::x_outliers,
                               data_kind::x_nonfinite}) {
          const int64_t M = K == 4096 ? 17 : N >= 17 ? 33 : 35;  // odd; not a multiple of 16
          test_case tc(t, M, N, K, {}, (seed & 1) ? strided(t) : kPacked, kind, seed);
          ++seed;
          const check_result r = run_and_check(*v_, tc, 2);
          const char* what = kind == data_kind::random       ? "random"
                             : kind == data_kind::x_zeros    ? "zero x"
                             : kind == data_kind::x_constant ? "constant x"
                             : kind == data_kind::x_outliers ? "outliers in x"
                                                             : "NaN / inf in x";
          ASSERT_TRUE(r.ok()) << describe(*v_, tc, what) << ": " << r.bad << " bad, first " << r.first;
          if (kind == data_kind::x_nonfinite) {  // and really NaN (check_int8 requires it; belt and braces)
            for (int64_t m = 0; m < M; ++m) ASSERT_TRUE(std::isnan(tc.y(0, m))) << describe(*v_, tc, what);
          }
        }
  }
}

// K-quant super-scales outside the usual range (zero, subnormal, extreme normal f16: the int8
// decode converts them by integer ops, with a fallback for zeros and subnormals), through the
// one-x-row decode (two weight rows per pass and an odd one: M = 37; K = 16384: several K
// segments, whose prefetch follows the read order), a few x rows, and the panels.
TEST_P(QmatmulVariant, KQuantSpecialSuperScales) {
  check_kquant_shapes({{37, 1, 512}, {37, 1, 16384}, {33, 3, 768}, {40, 20, 512}}, 9000);
}

// One x row over long K segments (K = 8448: 33 super-blocks, K = 9984: 39, each one segment):
// the int8 q2_k decode converts the super-scales a few super-blocks at a time ahead of the loop
// (8), so these end in a partial batch. Special and random super-scales.
TEST_P(QmatmulVariant, KQuantOneRowLongSegments) { check_kquant_shapes({{37, 1, 8448}, {18, 1, 9984}}, 9500); }

// ---- the checker itself can fail ------------------------------------------------------------
// The int8 contract is tight enough to see a real bug: one 32-block left out of one output, or one
// block's scale doubled, fails (here at K = 4096, the longest sum, so the weakest check).
TEST(QmatmulChecker, Int8BoundCatchesASkippedBlockAndAWrongScale) {
  quant::register_types();
  int count = 0;
  const mm_variant* all = qmm_variants(&count);
  const mm_variant& scalar = all[0];
  for (dtype t : {dtype::q8_0, dtype::q4_k, dtype::q3_k, dtype::q2_k}) {
    test_case tc(t, 9, 3, 4096, {}, kPacked, data_kind::random, 4242);
    mm_variant fake = scalar;  // a stand-in kernel: the emulated int8 result, then broken
    fake.x_int8_block = 32;
    std::vector<double> ref, mag, extra;
    tc.reference_int8(32, &ref, &mag, &extra);
    tc.poison();
    for (int64_t n = 0; n < 3; ++n)
      for (int64_t m = 0; m < 9; ++m) *tc.out(n, m) = float(ref[size_t(n * 9 + m)]);
    ASSERT_TRUE(check_int8(fake, tc).ok()) << type_name(t);
    // Which block matters little; take the one with the largest term for output (1, 4).
    int64_t kb = 0;
    double best = -1;
    for (int64_t k0 = 0; k0 < 4096; k0 += 32) {
      const double p = std::fabs(tc.partial_int8(32, 1, 4, k0, k0 + 32));
      if (p > best) best = p, kb = k0;
    }
    const float saved = tc.y(1, 4);
    const double part = tc.partial_int8(32, 1, 4, kb, kb + 32);
    *tc.out(1, 4) = float(ref[size_t(9 + 4)] - part);  // block skipped
    EXPECT_FALSE(check_int8(fake, tc).ok()) << type_name(t) << ": skipped block";
    *tc.out(1, 4) = float(ref[size_t(9 + 4)] + part);  // its scale doubled
    EXPECT_FALSE(check_int8(fake, tc).ok()) << type_name(t) << ": doubled scale";
    *tc.out(1, 4) = saved;
    ASSERT_TRUE(check_int8(fake, tc).ok());
  }
}

TEST(QmatmulChecker, CatchesWrongValuesUnwrittenOutputsStrayWritesAndLostNaN) {
  quant::register_types();
  int count = 0;
  const mm_variant& scalar = qmm_variants(&count)[0];
  ASSERT_STREQ(scalar.name, "scalar");
  test_case tc(dtype::fp8_e4m3, 9, 5, 100, {32, 4}, strided(dtype::fp8_e4m3), data_kind::random, 42);
  std::vector<double> ref, mag;
  tc.reference(false, &ref, &mag);
  const std::vector<double> none(ref.size(), 0.0);
  tc.poison();
  scalar.run(tc.problem(), 1);
  ASSERT_TRUE(check_output(tc, ref, mag, none).ok());

  // 64 K u mag on one output: 32 times the tolerance.
  const size_t i = size_t(2 * tc.M() + 3);
  const float saved = tc.y(2, 3);
  *tc.out(2, 3) = float(ref[i] + 64.0 * double(tc.K()) * kEpsAcc * mag[i]);
  EXPECT_FALSE(check_output(tc, ref, mag, none).ok());
  *tc.out(2, 3) = std::nanf("");  // never written
  EXPECT_FALSE(check_output(tc, ref, mag, none).ok());
  *tc.out(2, 3) = saved;
  ASSERT_TRUE(check_output(tc, ref, mag, none).ok());
  // A rounding of x the variant does not declare is caught: x rounded to bf16 against exact x.
  {
    test_case t2(dtype::mxfp4, 16, 3, 512, {32, 1}, kPacked, data_kind::random, 43);
    std::vector<double> rb, mb, re, me;
    t2.reference(true, &rb, &mb);
    t2.reference(false, &re, &me);
    t2.poison();
    for (int64_t n = 0; n < 3; ++n)
      for (int64_t m = 0; m < 16; ++m) *t2.out(n, m) = float(rb[size_t(n * 16 + m)]);
    EXPECT_FALSE(check_output(t2, re, me, std::vector<double>(re.size(), 0.0)).ok());
  }
  // One byte past the last output of row 1 (inside the row gap).
  reinterpret_cast<uint8_t*>(tc.out(1, tc.M() - 1))[4] ^= 0xFF;
  EXPECT_FALSE(check_output(tc, ref, mag, none).ok());
  reinterpret_cast<uint8_t*>(tc.out(1, tc.M() - 1))[4] ^= 0xFF;
  // A NaN reference needs a NaN output.
  std::vector<double> nan_ref = ref;
  nan_ref[0] = std::nan("");
  EXPECT_FALSE(check_output(tc, nan_ref, mag, none).ok());
}

// ---- dispatch --------------------------------------------------------------------------------
struct isa_limit_guard {
  isa saved = isa_limit();
  ~isa_limit_guard() { set_isa_limit(saved); }
};

TEST(Qmatmul, SupportsTheQuantizedTypes) {
  for (dtype t : kTypes) EXPECT_TRUE(qmatmul_supports(t));
  EXPECT_FALSE(qmatmul_supports(dtype::f32));
  EXPECT_FALSE(qmatmul_supports(dtype::bf16));
  EXPECT_FALSE(qmatmul_supports(dtype::e8m0));
}

TEST(Qmatmul, PickIsUsableAndFollowsTheRules) {
  isa_limit_guard guard;
  const shape shapes[] = {{4096, 1, 4096}, {4096, 16, 4096}, {4096, 512, 4096}, {7, 33, 256}};
  for (dtype t : kTypes)
    for (const shape& s : shapes) {
      const mm_variant& v = qmm_pick(t, s.M, s.N, s.K);
      EXPECT_TRUE(isa_allowed(v.level) && v.available() && v.supports(t, s.M, s.N, s.K)) << v.name;
    }
  int count = 0;
  const mm_variant* all = qmm_variants(&count);
  auto runs = [&](const char* name) {
    for (int i = 0; i < count; ++i)
      if (std::string(all[i].name) == name) return isa_allowed(all[i].level) && all[i].available();
    return false;
  };
  if (runs("avx512_bf16") || runs("avx512_vnni")) {
    // The int8 variant takes q8_0 and the K-quants at every shape; fp8 / mxfp4 go to AMX from
    // N = 32 where the host has it (measured: qmatmul.cpp), decode never does.
    for (dtype t : kTypes) {
      const bool int8 = runs("avx512_vnni") && !is_scaled(t);
      const char* decode = int8 ? "avx512_vnni" : runs("avx512_bf16") ? "avx512_bf16" : "avx2";
      const char* prefill = !int8 && runs("amx_bf16") ? "amx_bf16" : decode;
      EXPECT_STREQ(qmm_pick(t, 4096, 1, 4096).name, decode) << type_name(t);
      EXPECT_STREQ(qmm_pick(t, 4096, 16, 4096).name, decode) << type_name(t);
      EXPECT_STREQ(qmm_pick(t, 4096, 31, 4096).name, decode) << type_name(t);
      EXPECT_STREQ(qmm_pick(t, 4096, 32, 4096).name, prefill) << type_name(t);
      EXPECT_STREQ(qmm_pick(t, 4096, 512, 4096).name, prefill) << type_name(t);
    }
  }
#if defined(__aarch64__)  // before any cap: isa::neon ranks above the x86 levels
  for (dtype t : kTypes) {
    EXPECT_STREQ(qmm_pick(t, 4096, 1, 4096).name, "neon");
    EXPECT_STREQ(qmm_pick(t, 4096, 512, 4096).name, "neon");
  }
#endif
  set_isa_limit(isa::avx2);
  if (runs("avx2")) {
    for (dtype t : kTypes) EXPECT_STREQ(qmm_pick(t, 4096, 1, 4096).name, "avx2");
  }
  set_isa_limit(isa::scalar);
  for (dtype t : kTypes) EXPECT_STREQ(qmm_pick(t, 64, 64, 256).name, "scalar");
}

// qmatmul() at every ISA level the host has: the variant picked there, checked like the others.
TEST(Qmatmul, EveryIsaLevelThroughQmatmul) {
  quant::register_types();
  isa_limit_guard guard;
  uint32_t seed = 4000;
  for (isa level : {isa::scalar, isa::avx2, isa::avx512, isa::neon}) {
    if (!isa_available(level)) continue;
    set_isa_limit(level);
    for (dtype t : kTypes)
      for (const shape& s : {shape{37, 3, 512}, shape{50, 70, 256}}) {
        const mm_variant& v = qmm_pick(t, s.M, s.N, s.K);
        EXPECT_LE(int(v.level), int(level)) << v.name;
        test_case tc(t, s.M, s.N, s.K, blocks_for(t)[0], strided(t), data_kind::random, seed++);
        tc.poison();
        qmatmul(tc.problem(), 2);
        const bool rounded = v.x_rounding > 0;
        std::vector<double> ref, mag;
        tc.reference(rounded, &ref, &mag);
        const check_result r = v.x_int8_block ? check_int8(v, tc) : check_output(tc, ref, mag, std::vector<double>(ref.size(), 0.0));
        ASSERT_TRUE(r.ok()) << "isa limit " << isa_name(level) << ": " << describe(v, tc, "") << r.first;
      }
  }
}

TEST(Qmatmul, DispatchRunsThePickedVariant) {
  quant::register_types();
  for (dtype t : kTypes)
    for (const shape& s : {shape{100, 3, 512}, shape{70, 40, 256}}) {
      test_case a(t, s.M, s.N, s.K, blocks_for(t)[0], kPacked, data_kind::random, 77);
      test_case b(t, s.M, s.N, s.K, blocks_for(t)[0], kPacked, data_kind::random, 77);
      a.poison();
      b.poison();
      qmatmul(a.problem(), 2);
      qmm_pick(t, s.M, s.N, s.K).run(b.problem(), 2);
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t m = 0; m < s.M; ++m) ASSERT_EQ(std::memcmp(a.out(n, m), b.out(n, m), 4), 0) << type_name(t);
    }
}

}  // namespace
}  // namespace v4::cpu

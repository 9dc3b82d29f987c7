// K-quant-class formats (q4_k, q3_k, q2_k): layouts in kquant.h.
//
// Quantization, per super-block of 256:
//  1. Each sub-block gets a float scale (and min) minimising the weighted squared error
//     E = sum_i w_i (x_i - y_i)^2: a sweep over 11 (q3_k: 14) candidate scales around
//     range / levels, each followed by a least-squares refit of (scale, min) to its codes and a
//     re-assignment of the codes; the best is polished by up to two more refit/assign rounds.
//  2. The sub-block scales (mins) are quantized to integers against one f16 super-scale each
//     (max / integer range), then each sub-block tries its integer scale (and min) +-1 with codes
//     re-assigned, keeping the lowest E.
//  3. The super-scales are refit by least squares to the integer scales and codes, rounded to f16,
//     the codes re-assigned; kept only when E drops.
#include "quant/kquant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "tensor/tensor.h"

namespace v4::quant {

namespace {

inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
// v rounded to the nearest integer (ties to even) and clamped to [lo, hi]; NaN -> lo. Clamping first
// keeps |v| small, so the add-and-subtract of 1.5 * 2^23 rounds exactly (and inlines, unlike
// nearbyint on baseline x86-64).
inline float round_clamp_f(float v, float lo, float hi) {
  v = std::min(std::max(v, lo), hi);
  return (v + 12582912.0f) - 12582912.0f;
}
inline int round_clamp(float v, int lo, int hi) { return int(round_clamp_f(v, float(lo), float(hi))); }

// x and weights of one super-block, NaN/inf -> 0.
void load(const float* x, const float* imp, float* xs, float* w) {
  for (int i = 0; i < kQK; ++i) {
    xs[i] = std::isfinite(x[i]) ? x[i] : 0.0f;
    w[i] = imp ? (std::isfinite(imp[i]) && imp[i] > 0.0f ? imp[i] : 0.0f) : 1.0f;
  }
}

// Super-scales saturate at +-65504 (inputs beyond ~65504 * 63 * 15 lose accuracy, not validity).
uint16_t to_f16(float v) {
  const uint16_t h = f32_to_f16(v);
  return (h & 0x7fff) >= 0x7c00 ? uint16_t((h & 0x8000) | 0x7bff) : h;
}
float from_f16(uint16_t h) { return f16_to_f32(h); }

// ---- asymmetric: y = s*q + m, q in [0, nmax], s >= 0, m <= 0 ------------------------------------------
// Sum of e[0..n), n a multiple of 8, in a fixed order (8 interleaved partial sums).
inline float sum8(const float* e, int n) {
  float acc[8] = {};
  for (int i0 = 0; i0 < n; i0 += 8)
    for (int l = 0; l < 8; ++l) acc[l] += e[i0 + l];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Codes for (s, m) and their weighted error. (Errors go to an array first: a loop without a
// reduction vectorises under strict IEEE.)
float assign_asym(const float* x, const float* w, int n, int nmax, float s, float m, uint8_t* __restrict q) {
  const float inv = s > 1e-30f ? 1.0f / s : 0.0f;
  float e[32];
  for (int i = 0; i < n; ++i) {
    const float c = round_clamp_f((x[i] - m) * inv, 0.0f, float(nmax));
    q[i] = uint8_t(int(c));
    const float d = s * c + m - x[i];
    e[i] = w[i] * d * d;
  }
  return sum8(e, n);
}

// Least-squares (s, m) for fixed codes, under s >= 0, m <= 0.
void refit_asym(const float* x, const float* w, int n, const uint8_t* q, float* s, float* m) {
  double sw = 0, sq = 0, sqq = 0, sx = 0, sqx = 0;
  for (int i = 0; i < n; ++i) {
    const double wi = w[i], qi = q[i];
    sw += wi;
    sq += wi * qi;
    sqq += wi * qi * qi;
    sx += wi * x[i];
    sqx += wi * qi * x[i];
  }
  const double det = sw * sqq - sq * sq;
  double ss = 0, mm = 0;
  if (det > 0) {
    ss = (sw * sqx - sq * sx) / det;
    mm = (sqq * sx - sq * sqx) / det;
  }
  if (!(det > 0) || mm > 0 || ss < 0) {  // constrained optimum on an edge
    mm = 0;
    ss = sqq > 0 ? sqx / sqq : 0;
    if (ss < 0) {
      ss = 0;
      mm = sw > 0 ? std::min(0.0, sx / sw) : 0;
    }
  }
  *s = float(ss);
  *m = float(mm);
}

float fit_asym(const float* x, const float* w, int n, int nmax, float* s_out, float* m_out) {
  float lo = 0.0f, hi = -INFINITY;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  uint8_t q[32];
  if (!(hi > lo)) {  // constant (non-positive) sub-block: y = m exactly
    *s_out = 0.0f;
    *m_out = lo;
    return assign_asym(x, w, n, nmax, 0.0f, lo, q);
  }
  float best = INFINITY, bs = (hi - lo) / float(nmax), bm = lo;
  for (int c = -5; c <= 5; ++c) {  // levels spread over the range: nmax - 1 ... nmax + 1
    const float iscale = (float(nmax) + 0.2f * float(c)) / (hi - lo);
    float s = 1.0f / iscale, m = lo;
    assign_asym(x, w, n, nmax, s, m, q);
    refit_asym(x, w, n, q, &s, &m);
    const float e = assign_asym(x, w, n, nmax, s, m, q);
    if (e < best) {
      best = e;
      bs = s;
      bm = m;
    }
  }
  for (int it = 0; it < 2; ++it) {
    float s = bs, m = bm;
    assign_asym(x, w, n, nmax, s, m, q);
    refit_asym(x, w, n, q, &s, &m);
    const float e = assign_asym(x, w, n, nmax, s, m, q);
    if (!(e < best)) break;
    best = e;
    bs = s;
    bm = m;
  }
  *s_out = bs;
  *m_out = bm;
  return best;
}

// One super-block of an asymmetric format: NSUB sub-blocks of LEN, codes [0, NMAX], integer
// scales and mins in [0, LMAX]. Outputs f16 d/dmin, integer scales/mins, codes.
template <int NSUB, int LEN, int NMAX, int LMAX>
void superblock_asym(const float* x, const float* w, uint16_t* hd, uint16_t* hdmin, uint8_t* ls, uint8_t* lm, uint8_t* q) {
  float s[NSUB], m[NSUB];
  float smax = 0.0f, mmax = 0.0f;
  for (int j = 0; j < NSUB; ++j) {
    fit_asym(x + j * LEN, w + j * LEN, LEN, NMAX, &s[j], &m[j]);
    smax = std::max(smax, s[j]);
    mmax = std::max(mmax, -m[j]);
  }
  auto quantize_scales = [&](uint16_t h, uint16_t hm, uint8_t* out_ls, uint8_t* out_lm, uint8_t* out_q) {
    const float d = from_f16(h), dm = from_f16(hm);
    float total = 0.0f;
    for (int j = 0; j < NSUB; ++j) {
      const int l0 = d > 0 ? round_clamp(s[j] / d, 0, LMAX) : 0;
      const int m0 = dm > 0 ? round_clamp(-m[j] / dm, 0, LMAX) : 0;
      float best = INFINITY;
      uint8_t tq[LEN];
      for (int a = std::max(0, l0 - 1); a <= std::min(LMAX, l0 + 1); ++a)
        for (int b = std::max(0, m0 - 1); b <= std::min(LMAX, m0 + 1); ++b) {
          const float e = assign_asym(x + j * LEN, w + j * LEN, LEN, NMAX, d * float(a), -dm * float(b), tq);
          if (e < best) {
            best = e;
            out_ls[j] = uint8_t(a);
            out_lm[j] = uint8_t(b);
            std::memcpy(out_q + j * LEN, tq, LEN);
          }
        }
      total += best;
    }
    return total;
  };
  *hd = to_f16(smax / float(LMAX));
  *hdmin = to_f16(mmax / float(LMAX));
  float err = quantize_scales(*hd, *hdmin, ls, lm, q);

  // Refit d and dmin to the integer scales and codes: y_i = d * (ls q_i) - dmin * lm.
  double a11 = 0, a12 = 0, a22 = 0, b1 = 0, b2 = 0;
  for (int j = 0; j < NSUB; ++j)
    for (int i = 0; i < LEN; ++i) {
      const int k = j * LEN + i;
      const double f1 = double(ls[j]) * q[k], f2 = -double(lm[j]), wi = w[k];
      a11 += wi * f1 * f1;
      a12 += wi * f1 * f2;
      a22 += wi * f2 * f2;
      b1 += wi * f1 * x[k];
      b2 += wi * f2 * x[k];
    }
  const double det = a11 * a22 - a12 * a12;
  if (det > 0) {
    const double d = (a22 * b1 - a12 * b2) / det, dm = (a11 * b2 - a12 * b1) / det;
    if (d >= 0 && dm >= 0) {
      uint8_t ls2[NSUB], lm2[NSUB], q2[NSUB * LEN];
      const uint16_t h = to_f16(float(d)), hm = to_f16(float(dm));
      const float err2 = quantize_scales(h, hm, ls2, lm2, q2);
      if (err2 < err) {
        *hd = h;
        *hdmin = hm;
        std::memcpy(ls, ls2, NSUB);
        std::memcpy(lm, lm2, NSUB);
        std::memcpy(q, q2, NSUB * LEN);
      }
    }
  }
}

// ---- symmetric: y = s*q, q in [qmin, qmax] ---------------------------------------------------------------
float assign_sym(const float* x, const float* w, int n, int qmin, int qmax, float s, int8_t* __restrict q) {
  const float inv = std::fabs(s) > 1e-30f ? 1.0f / s : 0.0f;
  float e[32];
  for (int i = 0; i < n; ++i) {
    const float c = round_clamp_f(x[i] * inv, float(qmin), float(qmax));
    q[i] = int8_t(int(c));
    const float d = s * c - x[i];
    e[i] = w[i] * d * d;
  }
  return sum8(e, n);
}

float refit_sym(const float* x, const float* w, int n, const int8_t* q) {
  double num = 0, den = 0;
  for (int i = 0; i < n; ++i) {
    num += double(w[i]) * q[i] * x[i];
    den += double(w[i]) * q[i] * q[i];
  }
  return den > 0 ? float(num / den) : 0.0f;
}

float fit_sym(const float* x, const float* w, int n, int qmin, int qmax, float* s_out) {
  float xm = 0.0f;  // the element of largest magnitude
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > std::fabs(xm)) xm = x[i];
  int8_t q[32];
  if (xm == 0.0f) {
    *s_out = 0.0f;
    return 0.0f;
  }
  float best = INFINITY, bs = xm / float(qmin);
  // Map xm to around qmin (the longer side) or qmax, then refit.
  for (int side = 0; side < 2; ++side)
    for (int c = -3; c <= 3; ++c) {
      const float t = (side == 0 ? float(qmin) : float(qmax)) + 0.2f * float(c) * (side == 0 ? -1.0f : 1.0f);
      if (t == 0.0f) continue;
      float s = xm / t;
      assign_sym(x, w, n, qmin, qmax, s, q);
      const float r = refit_sym(x, w, n, q);
      if (r != 0.0f) s = r;
      const float e = assign_sym(x, w, n, qmin, qmax, s, q);
      if (e < best) {
        best = e;
        bs = s;
      }
    }
  for (int it = 0; it < 2; ++it) {
    assign_sym(x, w, n, qmin, qmax, bs, q);
    const float s = refit_sym(x, w, n, q);
    if (s == 0.0f) break;
    const float e = assign_sym(x, w, n, qmin, qmax, s, q);
    if (!(e < best)) break;
    best = e;
    bs = s;
  }
  *s_out = bs;
  return best;
}

// One super-block of a symmetric format: NSUB sub-blocks of LEN, codes [QMIN, QMAX], signed integer
// scales in [LMIN, LMAX] (the sub-block of largest |scale| maps to LMIN).
template <int NSUB, int LEN, int QMIN, int QMAX, int LMIN, int LMAX>
void superblock_sym(const float* x, const float* w, uint16_t* hd, int8_t* ls, int8_t* q) {
  float s[NSUB], smax = 0.0f;
  for (int j = 0; j < NSUB; ++j) {
    fit_sym(x + j * LEN, w + j * LEN, LEN, QMIN, QMAX, &s[j]);
    if (std::fabs(s[j]) > std::fabs(smax)) smax = s[j];
  }
  auto quantize_scales = [&](uint16_t h, int8_t* out_ls, int8_t* out_q) {
    const float d = from_f16(h);
    float total = 0.0f;
    for (int j = 0; j < NSUB; ++j) {
      const int l0 = d != 0.0f ? round_clamp(s[j] / d, LMIN, LMAX) : 0;
      float best = INFINITY;
      int8_t tq[LEN];
      for (int a = std::max(LMIN, l0 - 1); a <= std::min(LMAX, l0 + 1); ++a) {
        const float e = assign_sym(x + j * LEN, w + j * LEN, LEN, QMIN, QMAX, d * float(a), tq);
        if (e < best) {
          best = e;
          out_ls[j] = int8_t(a);
          std::memcpy(out_q + j * LEN, tq, LEN);
        }
      }
      total += best;
    }
    return total;
  };
  *hd = to_f16(smax / float(LMIN));
  const float err = quantize_scales(*hd, ls, q);
  // Refit d: y_i = d * (ls q_i).
  double num = 0, den = 0;
  for (int j = 0; j < NSUB; ++j)
    for (int i = 0; i < LEN; ++i) {
      const int k = j * LEN + i;
      const double f = double(ls[j]) * q[k];
      num += double(w[k]) * f * x[k];
      den += double(w[k]) * f * f;
    }
  if (den > 0) {
    const uint16_t h = to_f16(float(num / den));
    int8_t ls2[NSUB], q2[NSUB * LEN];
    if (quantize_scales(h, ls2, q2) < err) {
      *hd = h;
      std::memcpy(ls, ls2, NSUB);
      std::memcpy(q, q2, NSUB * LEN);
    }
  }
}

// 2-bit planes: element 128c + 32t + l at bits 2t of p[32c + l].
void put_2bit(const uint8_t* codes, uint8_t* p) {
  std::memset(p, 0, 64);
  for (int i = 0; i < kQK; ++i) p[32 * (i / 128) + i % 32] |= uint8_t((codes[i] & 3) << (2 * ((i / 32) % 4)));
}
uint8_t get_2bit(const uint8_t* p, int i) { return (p[32 * (i / 128) + i % 32] >> (2 * ((i / 32) % 4))) & 3; }

}  // namespace

void pack_6bit_16(const uint8_t v[16], uint8_t out[12]) {
  for (int i = 0; i < 8; ++i) out[i] = uint8_t((v[i] & 15) | ((v[i + 8] & 15) << 4));
  for (int t = 0; t < 4; ++t) out[8 + t] = 0;
  for (int i = 0; i < 16; ++i) out[8 + i / 4] |= uint8_t(((v[i] >> 4) & 3) << (2 * (i % 4)));
}

void unpack_6bit_16(const uint8_t in[12], uint8_t v[16]) {
  for (int i = 0; i < 16; ++i) {
    const uint8_t lo = i < 8 ? (in[i] & 15) : (in[i - 8] >> 4);
    v[i] = uint8_t(lo | (((in[8 + i / 4] >> (2 * (i % 4))) & 3) << 4));
  }
}

// ---- q4_k ------------------------------------------------------------------------------------------------
void quantize_row_q4_k_w(const float* x, void* blocks, int64_t k, const float* importance) {
  block_q4_k* b = static_cast<block_q4_k*>(blocks);
  float xs[kQK], w[kQK];
  for (int64_t s = 0; s < k / kQK; ++s) {
    load(x + s * kQK, importance ? importance + s * kQK : nullptr, xs, w);
    uint8_t sm[16], q[kQK];
    superblock_asym<8, 32, 15, 63>(xs, w, &b[s].d, &b[s].dmin, sm, sm + 8, q);
    pack_6bit_16(sm, b[s].scales);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) b[s].qs[32 * c + l] = uint8_t(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}
void quantize_row_q4_k(const float* x, void* blocks, int64_t k) { quantize_row_q4_k_w(x, blocks, k, nullptr); }

void dequantize_row_q4_k(const void* blocks, float* y, int64_t k) {
  const block_q4_k* b = static_cast<const block_q4_k*>(blocks);
  for (int64_t s = 0; s < k / kQK; ++s, y += kQK) {
    const float d = f16_to_f32(b[s].d), dmin = f16_to_f32(b[s].dmin);
    uint8_t sm[16];
    unpack_6bit_16(b[s].scales, sm);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const uint8_t byte = b[s].qs[32 * c + l];
        const int j0 = 2 * c, j1 = 2 * c + 1;  // sub-blocks of the low and high nibbles
        y[64 * c + l] = d * float(sm[j0]) * float(byte & 15) - dmin * float(sm[8 + j0]);
        y[64 * c + 32 + l] = d * float(sm[j1]) * float(byte >> 4) - dmin * float(sm[8 + j1]);
      }
  }
}

// ---- q3_k ------------------------------------------------------------------------------------------------
void quantize_row_q3_k_w(const float* x, void* blocks, int64_t k, const float* importance) {
  block_q3_k* b = static_cast<block_q3_k*>(blocks);
  float xs[kQK], w[kQK];
  for (int64_t s = 0; s < k / kQK; ++s) {
    load(x + s * kQK, importance ? importance + s * kQK : nullptr, xs, w);
    int8_t ls[16], q[kQK];
    superblock_sym<16, 16, -4, 3, -32, 31>(xs, w, &b[s].d, ls, q);
    uint8_t v[16];
    for (int j = 0; j < 16; ++j) v[j] = uint8_t(ls[j] + 32);
    pack_6bit_16(v, b[s].scales);
    uint8_t codes[kQK];
    for (int i = 0; i < kQK; ++i) codes[i] = uint8_t(q[i] + 4);
    put_2bit(codes, b[s].qs);
    std::memset(b[s].hmask, 0, 32);
    for (int i = 0; i < kQK; ++i) b[s].hmask[i % 32] |= uint8_t(((codes[i] >> 2) & 1) << (i / 32));
  }
}
void quantize_row_q3_k(const float* x, void* blocks, int64_t k) { quantize_row_q3_k_w(x, blocks, k, nullptr); }

void dequantize_row_q3_k(const void* blocks, float* y, int64_t k) {
  const block_q3_k* b = static_cast<const block_q3_k*>(blocks);
  for (int64_t s = 0; s < k / kQK; ++s, y += kQK) {
    const float d = f16_to_f32(b[s].d);
    uint8_t v[16];
    unpack_6bit_16(b[s].scales, v);
    for (int i = 0; i < kQK; ++i) {
      const int code = get_2bit(b[s].qs, i) | (((b[s].hmask[i % 32] >> (i / 32)) & 1) << 2);
      y[i] = d * float(int(v[i / 16]) - 32) * float(code - 4);
    }
  }
}

// ---- q2_k ------------------------------------------------------------------------------------------------
void quantize_row_q2_k_w(const float* x, void* blocks, int64_t k, const float* importance) {
  block_q2_k* b = static_cast<block_q2_k*>(blocks);
  float xs[kQK], w[kQK];
  for (int64_t s = 0; s < k / kQK; ++s) {
    load(x + s * kQK, importance ? importance + s * kQK : nullptr, xs, w);
    uint8_t ls[16], lm[16], q[kQK];
    superblock_asym<16, 16, 3, 15>(xs, w, &b[s].d, &b[s].dmin, ls, lm, q);
    for (int j = 0; j < 16; ++j) b[s].scales[j] = uint8_t(ls[j] | (lm[j] << 4));
    put_2bit(q, b[s].qs);
  }
}
void quantize_row_q2_k(const float* x, void* blocks, int64_t k) { quantize_row_q2_k_w(x, blocks, k, nullptr); }

void dequantize_row_q2_k(const void* blocks, float* y, int64_t k) {
  const block_q2_k* b = static_cast<const block_q2_k*>(blocks);
  for (int64_t s = 0; s < k / kQK; ++s, y += kQK) {
    const float d = f16_to_f32(b[s].d), dmin = f16_to_f32(b[s].dmin);
    for (int i = 0; i < kQK; ++i) {
      const uint8_t sc = b[s].scales[i / 16];
      y[i] = d * float(sc & 15) * float(get_2bit(b[s].qs, i)) - dmin * float(sc >> 4);
    }
  }
}

}  // namespace v4::quant

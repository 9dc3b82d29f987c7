// AVX2 + FMA kernels for quantized weights: all six types, exact x (x_rounding 0).
//
// Tiles of kRows weight rows x kKC elements of K are dequantized to f32 into a buffer, with
// exactly the f32 operations of quant/'s reference dequantizers (same operands, same order, no
// FMA contraction), so the weights are bit for bit the reference's; then every x row takes its
// dot products with the tile's rows (4 rows x 16 k per step, FMA), and the partial sums of the K
// blocks are added in y. e8m0 scales multiply the element values in f32 like the reference: exact
// (code 0 gives f32 subnormals, kept: AVX2 does not flush them), and a NaN scale or e4m3 NaN code
// gives NaN weights.
// Threads split M in tiles; K is never split, so the results do not depend on the thread count.
//
// Decode shapes (N <= kDotMaxN) of fp8_e4m3, mxfp4 and q8_0 take a dot-product path instead:
// each 32-element block is decoded in registers (mxfp4: vpshufb of the doubled e2m1 values and
// vpmovsxbd; fp8: the magnitude bits shifted into an f32 exponent; q8_0: vpmovsxbd) and multiplied
// by up to 4 x rows with FMA; the block's scale (e8m0 power of two, or q8_0's f16 d) multiplies
// the f32 partial sum of the block, one more rounding per block (none for the powers of two while
// the sums stay normal): the accumulation bound of tests/cpu/test_qmatmul.cpp, x exact as before.
// No buffer is written and read back, which is what the tile path spends most of its time on at
// N = 1.
#include <immintrin.h>

#include "backends/cpu/arch/qmatmul_arch.h"

namespace v4::cpu::qmm_arch {
namespace {

constexpr int64_t kRows = 16;   // weight rows per tile
constexpr int64_t kKC = 256;    // K block: a tile is 16 KiB of f32 (half of L1: 32 KiB was store-bound)

inline __m256 bits_ps(__m256i v) { return _mm256_castsi256_ps(v); }

// ---- dequantizers: elements [k0, k1) of row m into out[0 .. k1 - k0) --------------------------
// k0 is a multiple of 32 (256 for the K-quants); k1 - k0 is what the block holds.

void dequant_mxfp4(const mm_problem& p, int64_t m, int64_t k0, int64_t k1, float* out) {
  const uint8_t* q = reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, m));
  const uint8_t* sc = scale_row(p, m);
  // Twice the e2m1 values as int8 (quant/mxfp4.h kE2m1Doubled) by vpshufb; value * s is computed
  // as doubled * (s / 2): the same real product (s / 2 is exact, 2^-128 included), so the same f32.
  const __m128i doubled = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
  const __m128i low4 = _mm_set1_epi8(15);
  int64_t k = k0;
  for (; k + 32 <= k1; k += 32) {  // one scale per 32
    const __m256 half_s = _mm256_set1_ps(0.5f * e8m0_value(sc[k / 32]));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + k / 2));
    const __m128i lo = _mm_and_si128(b, low4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low4);
    const __m128i v0 = _mm_shuffle_epi8(doubled, _mm_unpacklo_epi8(lo, hi));  // elements 0..15
    const __m128i v1 = _mm_shuffle_epi8(doubled, _mm_unpackhi_epi8(lo, hi));  // elements 16..31
    const __m128i parts[4] = {v0, _mm_srli_si128(v0, 8), v1, _mm_srli_si128(v1, 8)};
    for (int i = 0; i < 4; ++i)
      _mm256_storeu_ps(out + k - k0 + 8 * i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[i])), half_s));
  }
  for (; k < k1; k += 2) {  // K is even
    const float s = e8m0_value(sc[k / 32]);
    out[k - k0] = kE2m1[q[k / 2] & 15] * s;
    out[k + 1 - k0] = kE2m1[q[k / 2] >> 4] * s;
  }
}

void dequant_fp8(const mm_problem& p, int64_t m, int64_t k0, int64_t k1, float* out) {
  const uint8_t* q = reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, m));
  const uint8_t* sc = scale_row(p, m);
  // (code & 0x7f) << 20 read as f32 is the e4m3 magnitude times 2^-120, subnormals included.
  const __m256 two120 = _mm256_set1_ps(0x1p120f);
  int64_t k = k0, j = k0 / p.sb_k, next = (j + 1) * p.sb_k;  // scale column j covers [next - sb_k, next)
  for (; k + 32 <= k1; k += 32) {  // one scale per 32 (sb_k is a multiple of 32)
    if (k >= next) {
      ++j;
      next += p.sb_k;
    }
    const __m256 s = _mm256_set1_ps(e8m0_value(sc[j]));
    for (int i = 0; i < 32; i += 8) {
      const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + k + i)));
      const __m256i m7 = _mm256_and_si256(c, _mm256_set1_epi32(0x7f));
      __m256 v = _mm256_mul_ps(bits_ps(_mm256_slli_epi32(m7, 20)), two120);
      v = _mm256_blendv_ps(v, _mm256_set1_ps(__builtin_nanf("")), bits_ps(_mm256_cmpeq_epi32(m7, _mm256_set1_epi32(0x7f))));
      v = _mm256_or_ps(v, bits_ps(_mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(0x80)), 24)));
      _mm256_storeu_ps(out + k + i - k0, _mm256_mul_ps(v, s));
    }
  }
  for (; k < k1; ++k) out[k - k0] = e4m3_value(q[k]) * e8m0_value(sc[k / p.sb_k]);
}

void dequant_q8_0(const mm_problem& p, int64_t m, int64_t k0, int64_t k1, float* out) {
  const auto* b = reinterpret_cast<const quant::block_q8_0*>(row_ptr(p.w, p.w_stride, m)) + k0 / 32;
  for (int64_t k = k0; k < k1; k += 32, ++b) {
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(b->d));
    for (int i = 0; i < 32; i += 8) {
      const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b->qs + i)));
      _mm256_storeu_ps(out + k - k0 + i, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
    }
  }
}

// 8 codes of 4 bits (lo or hi nibbles of 8 bytes) / 2 bits as f32.
inline __m256 nib8(const uint8_t* q, int shift, int mask) {
  const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q)));
  return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(b, shift), _mm256_set1_epi32(mask)));
}

void dequant_q4_k(const mm_problem& p, int64_t m, int64_t k0, int64_t k1, float* out) {
  const auto* b = reinterpret_cast<const quant::block_q4_k*>(row_ptr(p.w, p.w_stride, m)) + k0 / 256;
  for (int64_t k = k0; k < k1; k += 256, ++b, out += 256) {
    uint8_t sm[16];
    unpack6(b->scales, sm);
    const float d = _cvtsh_ss(b->d), dmin = _cvtsh_ss(b->dmin);
    for (int c = 0; c < 4; ++c)
      for (int h = 0; h < 2; ++h) {  // sub-block 2c + h: nibble h of qs[32c .. 32c + 32)
        const int j = 2 * c + h;
        const __m256 ds = _mm256_set1_ps(d * float(sm[j])), dm = _mm256_set1_ps(dmin * float(sm[8 + j]));
        for (int l = 0; l < 32; l += 8)
          _mm256_storeu_ps(out + 64 * c + 32 * h + l, _mm256_sub_ps(_mm256_mul_ps(ds, nib8(b->qs + 32 * c + l, 4 * h, 15)), dm));
      }
  }
}

void dequant_q3_k(const mm_problem& p, int64_t m, int64_t k0, int64_t k1, float* out) {
  const auto* b = reinterpret_cast<const quant::block_q3_k*>(row_ptr(p.w, p.w_stride, m)) + k0 / 256;
  for (int64_t k = k0; k < k1; k += 256, ++b, out += 256) {
    uint8_t v[16];
    unpack6(b->scales, v);
    const float d = _cvtsh_ss(b->d);
    for (int i = 0; i < 256; i += 8) {  // element i = 128c + 32t + l
      const int c = i / 128, t = i / 32 % 4, l = i % 32;
      const __m256i lo = _mm256_and_si256(
          _mm256_srli_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b->qs + 32 * c + l))), 2 * t),
          _mm256_set1_epi32(3));
      const __m256i hi = _mm256_and_si256(
          _mm256_srli_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b->hmask + l))), i / 32),
          _mm256_set1_epi32(1));
      const __m256 code = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 2)), _mm256_set1_epi32(4)));
      _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_set1_ps(d * float(int(v[i / 16]) - 32)), code));
    }
  }
}

void dequant_q2_k(const mm_problem& p, int64_t m, int64_t k0, int64_t k1, float* out) {
  const auto* b = reinterpret_cast<const quant::block_q2_k*>(row_ptr(p.w, p.w_stride, m)) + k0 / 256;
  for (int64_t k = k0; k < k1; k += 256, ++b, out += 256) {
    const float d = _cvtsh_ss(b->d), dmin = _cvtsh_ss(b->dmin);
    for (int i = 0; i < 256; i += 8) {
      const int c = i / 128, t = i / 32 % 4, l = i % 32;
      const uint8_t s = b->scales[i / 16];
      const __m256 ds = _mm256_set1_ps(d * float(s & 15)), dm = _mm256_set1_ps(dmin * float(s >> 4));
      _mm256_storeu_ps(out + i, _mm256_sub_ps(_mm256_mul_ps(ds, nib8(b->qs + 32 * c + l, 2 * t, 3)), dm));
    }
  }
}

using dequant_fn = void (*)(const mm_problem&, int64_t, int64_t, int64_t, float*);

dequant_fn dequantizer(dtype t) {
  switch (t) {
    case dtype::mxfp4: return dequant_mxfp4;
    case dtype::fp8_e4m3: return dequant_fp8;
    case dtype::q8_0: return dequant_q8_0;
    case dtype::q4_k: return dequant_q4_k;
    case dtype::q3_k: return dequant_q3_k;
    default: return dequant_q2_k;
  }
}

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// y[n][m0 + r] (+)= wt[r] . x[n][k0 .. k0 + kc) for r < rows, all n. wt rows have stride kKC.
void tile_dots(const mm_problem& p, const float* wt, int64_t rows, int64_t m0, int64_t k0, int64_t kc) {
  const int64_t k16 = kc / 16 * 16;
  for (int64_t n = 0; n < p.N; ++n) {
    const float* x = xrow(p, n) + k0;
    float* y = yrow(p, n) + m0;
    for (int64_t r = 0; r < rows; r += 4) {
      const int R = int(min64(4, rows - r));
      __m256 a[4][2];
      for (int i = 0; i < 4; ++i) a[i][0] = a[i][1] = _mm256_setzero_ps();
      for (int64_t k = 0; k < k16; k += 16) {
        const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
        for (int i = 0; i < 4; ++i) {
          if (i >= R) break;
          a[i][0] = _mm256_fmadd_ps(_mm256_loadu_ps(wt + (r + i) * kKC + k), x0, a[i][0]);
          a[i][1] = _mm256_fmadd_ps(_mm256_loadu_ps(wt + (r + i) * kKC + k + 8), x1, a[i][1]);
        }
      }
      for (int i = 0; i < R; ++i) {
        float s = hsum(_mm256_add_ps(a[i][0], a[i][1]));
        for (int64_t k = k16; k < kc; ++k) s += wt[(r + i) * kKC + k] * x[k];
        y[r + i] = k0 == 0 ? s : y[r + i] + s;
      }
    }
  }
}

// ---- dot-product path (decode) ----------------------------------------------------------------
constexpr int64_t kDotMaxN = 8;   // x rows up to which the dot path runs (4 per pass over a row)
constexpr int64_t kPrefetch = 4096;  // bytes ahead in the weight stream (prefetcht2: see qmatmul_avx512.cpp)

// The 32 codes of block b (elements [32b, 32b + 32)) as 4 x 8 f32, unscaled: mxfp4 doubled
// e2m1 values (the scale is halved instead), fp8 magnitudes with sign and NaN, q8_0 int8.
struct mxfp4_codes {
  __m128i doubled = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
  inline void decode(const uint8_t* row, int64_t b, __m256 v[4]) const {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * b));
    const __m128i low4 = _mm_set1_epi8(15);
    const __m128i lo = _mm_and_si128(q, low4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
    const __m128i v0 = _mm_shuffle_epi8(doubled, _mm_unpacklo_epi8(lo, hi));  // elements 0..15
    const __m128i v1 = _mm_shuffle_epi8(doubled, _mm_unpackhi_epi8(lo, hi));  // elements 16..31
    v[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v0));
    v[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v0, 8)));
    v[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v1));
    v[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v1, 8)));
  }
  static const uint8_t* pf_base(const uint8_t* row, int64_t b) { return row + 16 * b; }
  static float scale(const mm_problem&, const uint8_t* sc, const uint8_t*, int64_t b) { return 0.5f * e8m0_value(sc[b]); }
};
struct fp8_codes {
  inline void decode(const uint8_t* row, int64_t b, __m256 v[4]) const {
    const __m256 two120 = _mm256_set1_ps(0x1p120f);
    for (int i = 0; i < 4; ++i) {
      const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + 32 * b + 8 * i)));
      const __m256i m7 = _mm256_and_si256(c, _mm256_set1_epi32(0x7f));
      __m256 x = _mm256_mul_ps(bits_ps(_mm256_slli_epi32(m7, 20)), two120);
      x = _mm256_blendv_ps(x, _mm256_set1_ps(__builtin_nanf("")), bits_ps(_mm256_cmpeq_epi32(m7, _mm256_set1_epi32(0x7f))));
      v[i] = _mm256_or_ps(x, bits_ps(_mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(0x80)), 24)));
    }
  }
  static const uint8_t* pf_base(const uint8_t* row, int64_t b) { return row + 32 * b; }
  static float scale(const mm_problem& p, const uint8_t* sc, const uint8_t*, int64_t b) {
    return e8m0_value(sc[32 * b / p.sb_k]);
  }
};
struct q8_0_codes {
  inline void decode(const uint8_t* row, int64_t b, __m256 v[4]) const {
    const auto* blk = reinterpret_cast<const quant::block_q8_0*>(row) + b;
    for (int i = 0; i < 4; ++i)
      v[i] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk->qs + 8 * i))));
  }
  static const uint8_t* pf_base(const uint8_t* row, int64_t b) {
    return row + size_t(b) * sizeof(quant::block_q8_0);
  }
  static float scale(const mm_problem&, const uint8_t*, const uint8_t* row, int64_t b) {
    return _cvtsh_ss(reinterpret_cast<const quant::block_q8_0*>(row)[b].d);
  }
};

// y[n0 + c][m] for c < C: whole 32-blocks by the decoder, the tail (fp8's K % 32, mxfp4's
// K % 32) with the scalar decoders of qmatmul_arch.h.
template <class D, int C>
void dot_row(const mm_problem& p, const D& dec, int64_t m, int64_t n0) {
  const uint8_t* row = reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, m));
  const uint8_t* sc = p.wtype == dtype::q8_0 ? nullptr : scale_row(p, m);  // (q8_0: scales unused, maybe unset)
  const float* x[C];
  for (int c = 0; c < C; ++c) x[c] = xrow(p, n0 + c);
  __m256 acc[C];
  for (int c = 0; c < C; ++c) acc[c] = _mm256_setzero_ps();
  const int64_t blocks = p.K / 32;
  for (int64_t b = 0; b < blocks; ++b) {
    _mm_prefetch(reinterpret_cast<const char*>(D::pf_base(row, b)) + kPrefetch, _MM_HINT_T2);
    __m256 v[4];
    dec.decode(row, b, v);
    const __m256 s = _mm256_set1_ps(D::scale(p, sc, row, b));
    for (int c = 0; c < C; ++c) {
      const float* xb = x[c] + 32 * b;
      __m256 t0 = _mm256_mul_ps(v[0], _mm256_loadu_ps(xb));
      __m256 t1 = _mm256_mul_ps(v[1], _mm256_loadu_ps(xb + 8));
      t0 = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(xb + 16), t0);
      t1 = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(xb + 24), t1);
      acc[c] = _mm256_fmadd_ps(_mm256_add_ps(t0, t1), s, acc[c]);
    }
  }
  for (int c = 0; c < C; ++c) {
    float y = hsum(acc[c]);
    for (int64_t k = blocks * 32; k < p.K; ++k) {  // the tail: fp8 and mxfp4 only
      float w;
      if (p.wtype == dtype::mxfp4)
        w = kE2m1[(row[k / 2] >> (4 * (k & 1))) & 15] * e8m0_value(sc[k / 32]);
      else
        w = e4m3_value(row[k]) * e8m0_value(sc[k / p.sb_k]);
      y += w * x[c][k];
    }
    yrow(p, n0 + c)[m] = y;
  }
}

template <class D>
void dot_rows(const mm_problem& p, int64_t m0, int64_t m1) {
  const D dec;
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t n = 0; n < p.N; n += 4) {
      switch (min64(4, p.N - n)) {
        case 1: dot_row<D, 1>(p, dec, m, n); break;
        case 2: dot_row<D, 2>(p, dec, m, n); break;
        case 3: dot_row<D, 3>(p, dec, m, n); break;
        default: dot_row<D, 4>(p, dec, m, n); break;
      }
    }
}

bool dot_path(const mm_problem& p) {
  return p.N <= kDotMaxN && (p.wtype == dtype::mxfp4 || p.wtype == dtype::fp8_e4m3 || p.wtype == dtype::q8_0);
}

}  // namespace

void qmm_avx2_run(const mm_problem& p, int n_threads) {
  if (handle_empty(p)) return;
  if (dot_path(p)) {
    parallel(useful_threads(p, n_threads), [&](int tid, int nth) {
      int64_t m0, m1;
      split(p.M, kRows, tid, nth, &m0, &m1);
      switch (p.wtype) {
        case dtype::mxfp4: dot_rows<mxfp4_codes>(p, m0, m1); break;
        case dtype::fp8_e4m3: dot_rows<fp8_codes>(p, m0, m1); break;
        default: dot_rows<q8_0_codes>(p, m0, m1); break;
      }
    });
    return;
  }
  const dequant_fn dq = dequantizer(p.wtype);
  const int64_t kb = p.wtype == dtype::q4_k || p.wtype == dtype::q3_k || p.wtype == dtype::q2_k ? 256 : 32;
  const int64_t kc_max = round_up(kKC, kb);  // kKC is a multiple of both
  parallel(useful_threads(p, n_threads), [&](int tid, int nth) {
    int64_t m0, m1;
    split(p.M, kRows, tid, nth, &m0, &m1);
    alignas(32) float wt[kRows * kKC];
    for (int64_t mt = m0; mt < m1; mt += kRows) {
      const int64_t rows = min64(kRows, m1 - mt);
      for (int64_t k0 = 0; k0 < p.K; k0 += kc_max) {
        const int64_t kc = min64(kc_max, p.K - k0);
        for (int64_t r = 0; r < rows; ++r) dq(p, mt + r, k0, k0 + kc, wt + r * kKC);
        tile_dots(p, wt, rows, mt, k0, kc);
      }
    }
  });
}

}  // namespace v4::cpu::qmm_arch

// AVX-512 kernels for quantized weights. This file is built with AVX-512 F/BW/VL/DQ (the _avx512
// suffix); the extensions each part needs are switched on with #pragma GCC target around it, and
// the variant's available() checks them with cpuid first.
//
// Part 1, avx512_bf16 (AVX512-BF16 + VBMI): fp8_e4m3 and mxfp4 weights, x rounded to bf16.
//   Weights are decoded to bf16 by table lookups, exactly (every e4m3 and e2m1 value is a bf16
//   value): mxfp4 by vpermw on nibbles (a 32-entry word table holding the 16 e2m1 values twice, so
//   the fifth index bit does not matter), fp8 by two vpermi2b on the 7 magnitude bits (low and
//   high byte of the bf16 from 128-entry byte tables) plus the sign bit. Products of two bf16 are
//   exact in f32, vdpbf16ps sums pairs in f32 (RNE, subnormals flushed).
//   The lanes come out of the decoders in a fixed permutation of k within each chunk of 64
//   elements; x is converted to bf16 once per call in the same permutation, so no shuffles are
//   needed on the hot path. Either way each f32 lane's 4 elements lie in one 32-block of K, lanes
//   0-7 in the chunk's first half, 8-15 in its second.
//   * decode (N <= 16): per weight row and chunk, t = dp(dp(0, w_a, x_a), w_b, x_b) per x row,
//     then acc += t * scale: the e8m0 scales (powers of two) multiply partial sums, so any scale
//     code is exact, 2^-127 and the NaN code included. With sb_k a multiple of 64 (V4's 128) t
//     runs over the whole scale block before the one multiply. R weight rows x C x rows per
//     step; each weight row is read from memory once per call.
//   * prefill (N > 16): panels of 48 weight rows are decoded to bf16 WITH their scales (exponent
//     added to the bf16 words; exact when the scaled values stay normal, checked up front: else
//     the decode path runs instead) into the layout [k/2][48][2], x into [k/2][8][2], and an
//     8 x 48 tile of y is kept in 24 zmm: one x pair broadcast, 24 vdpbf16ps per k pair.
//
// Part 2, avx512_vnni (AVX512-VNNI): q8_0 and the K-quants; see the comment there.
//
// Threads: decode splits M, prefill the (M, N) tile grid; K is never split, so the results do not
// depend on the thread count.
#include "backends/cpu/arch/qmatmul_arch.h"  // also <immintrin.h>
#include <cstdlib>

namespace v4::cpu::qmm_arch {

// ============================================================================================
// Part 1: avx512_bf16
// ============================================================================================
#pragma GCC push_options
#pragma GCC target("avx512bf16,avx512vbmi")

namespace {

// ---- tables ---------------------------------------------------------------------------------
// bf16 bits of e2m1 code i & 15 (values 0 .5 1 1.5 2 3 4 6, then negated), twice.
constexpr uint16_t e2m1_bf16(int c) {
  constexpr uint16_t mag[8] = {0x0000, 0x3f00, 0x3f80, 0x3fc0, 0x4000, 0x4040, 0x4080, 0x40c0};
  return uint16_t(mag[c & 7] | ((c & 8) ? 0x8000 : 0));
}
// bf16 bits of the e4m3 magnitude code t (0..127): normals (e >= 1) are 2^(e-7) (1 + m/8), so the
// bf16 exponent is e + 120 and the mantissa m << 4; subnormals m * 2^-9 are normalized; 0x7f is
// NaN.
constexpr uint16_t e4m3_bf16(int t) {
  const int e = (t >> 3) & 15, m = t & 7;
  if (e == 15 && m == 7) return 0x7fc0;
  if (e > 0) return uint16_t(((e + 120) << 7) | (m << 4));
  if (m == 0) return 0;
  const int hb = m >= 4 ? 2 : m >= 2 ? 1 : 0;  // m * 2^-9 = 2^(hb - 9) * (m / 2^hb)
  return uint16_t(((hb - 9 + 127) << 7) | ((m - (1 << hb)) << (7 - hb)));
}

struct tables {
  alignas(64) uint16_t e2m1[32];
  alignas(64) uint8_t e4m3_lo[128];
  alignas(64) uint8_t e4m3_hi[128];
};
constexpr tables make_tables() {
  tables t{};
  for (int i = 0; i < 32; ++i) t.e2m1[i] = e2m1_bf16(i);
  for (int i = 0; i < 128; ++i) {
    t.e4m3_lo[i] = uint8_t(e4m3_bf16(i) & 0xff);
    t.e4m3_hi[i] = uint8_t(e4m3_bf16(i) >> 8);
  }
  return t;
}
constexpr tables kTables = make_tables();

inline __mmask64 mask64(int64_t n) { return n >= 64 ? ~__mmask64(0) : (__mmask64(1) << n) - 1; }

inline __m512 dp(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(a), reinterpret_cast<__m512bh>(b));
}

// x[k .. k+32) rounded to bf16 (RNE; f32 subnormals flush to 0), zeros at and past K.
inline __m512i load_x_bf16(const float* x, int64_t k, int64_t K) {
  const int64_t n = K - k;
  const __m512 lo = _mm512_maskz_loadu_ps(first_lanes(max64(0, min64(16, n))), x + k);
  const __m512 hi = _mm512_maskz_loadu_ps(first_lanes(max64(0, min64(16, n - 16))), x + k + 16);
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
}

// e8m0 codes -> f32 values, 16 at a time (code 0: 2^-127 as a subnormal, 0xFF: NaN).
inline __m512 e8m0_to_ps(__m128i codes) {
  const __m512i c = _mm512_cvtepu8_epi32(codes);
  __m512i v = _mm512_slli_epi32(c, 23);
  v = _mm512_mask_mov_epi32(v, _mm512_cmpeq_epi32_mask(c, _mm512_setzero_si512()), _mm512_set1_epi32(0x00400000));
  v = _mm512_mask_mov_epi32(v, _mm512_cmpeq_epi32_mask(c, _mm512_set1_epi32(0xff)), _mm512_set1_epi32(0x7fc00000));
  return _mm512_castsi512_ps(v);
}

// ---- decoders: one chunk of kChunk elements [k, k + kChunk) of a row into kVecs vectors of 32
// bf16; word i of vector v holds element elem(v, i) of the chunk. Both decoders put the 4
// elements of each f32 lane (a dp pair, in every vector) into one 32-block of K: lane j covers
// block j / (16 / blocks per chunk). `valid` = elements of the chunk inside K; codes past it are
// loaded as 0 (value 0).
struct mxfp4_dec {
  static constexpr bool kFp8 = false;
  static constexpr int kChunk = 128, kVecs = 4;
  static constexpr int elem(int v, int i) { return 4 * i + v; }
  static int64_t bytes(int64_t k) { return k / 2; }
  __m512i t = _mm512_load_si512(kTables.e2m1);
  // The 64 bytes as 32 words; word i holds elements 4i .. 4i+3 in its four nibbles, and vpermw
  // reads only the low 5 bits of each word (the table repeats, so bit 4 does not matter).
  inline void decode(const uint8_t* row, int64_t k, int64_t valid, __m512i* v) const {
    const uint8_t* src = row + k / 2;
    const __m512i w = valid >= kChunk ? _mm512_loadu_si512(src) : _mm512_maskz_loadu_epi8(mask64((valid + 1) / 2), src);
    v[0] = _mm512_permutexvar_epi16(w, t);
    v[1] = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 4), t);
    v[2] = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 8), t);
    v[3] = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 12), t);
  }
};
struct fp8_dec {
  static constexpr bool kFp8 = true;
  static constexpr int kChunk = 64, kVecs = 2;
  static constexpr int elem(int v, int i) { return 16 * (i / 8) + 8 * v + i % 8; }
  static int64_t bytes(int64_t k) { return k; }
  __m512i lo0 = _mm512_load_si512(kTables.e4m3_lo), lo1 = _mm512_load_si512(kTables.e4m3_lo + 64);
  __m512i hi0 = _mm512_load_si512(kTables.e4m3_hi), hi1 = _mm512_load_si512(kTables.e4m3_hi + 64);
  __m512i sign = _mm512_set1_epi8(char(0x80));
  // Low and high bytes of the bf16 from 128-entry tables on the 7 magnitude bits, the sign
  // or-ed in, then interleaved within 128-bit lanes.
  inline void decode(const uint8_t* row, int64_t k, int64_t valid, __m512i* v) const {
    const uint8_t* src = row + k;
    const __m512i c = valid >= kChunk ? _mm512_loadu_si512(src) : _mm512_maskz_loadu_epi8(mask64(valid), src);
    const __m512i lo = _mm512_permutex2var_epi8(lo0, c, lo1);
    __m512i hi = _mm512_permutex2var_epi8(hi0, c, hi1);
    hi = _mm512_ternarylogic_epi32(hi, c, sign, 0xF8);  // hi | (c & 0x80)
    v[0] = _mm512_unpacklo_epi8(lo, hi);  // 128-bit lane l: elements 16l + 0..7
    v[1] = _mm512_unpackhi_epi8(lo, hi);  //                 elements 16l + 8..15
  }
};

// x rows rounded to bf16 in the decoders' order: per chunk, kVecs vectors of 32 words. Zero
// past K. (kChunk 128: word i < 16 of every vector comes from the chunk's first 64 elements.)
template <class D>
void prepare_x(const mm_problem& p, uint16_t* xb, int64_t xs) {
  alignas(64) uint16_t idx[D::kVecs][32];
  for (int v = 0; v < D::kVecs; ++v)
    for (int i = 0; i < 32; ++i) idx[v][i] = uint16_t(D::elem(v, i) & 63);
  for (int64_t n = 0; n < p.N; ++n) {
    const float* x = xrow(p, n);
    uint16_t* dst = xb + n * xs;
    for (int64_t k = 0; k < p.K; k += D::kChunk) {
      const __m512i x0 = load_x_bf16(x, k, p.K), x1 = load_x_bf16(x, k + 32, p.K);
      const __m512i x2 = D::kChunk == 128 ? load_x_bf16(x, k + 64, p.K) : x0;
      const __m512i x3 = D::kChunk == 128 ? load_x_bf16(x, k + 96, p.K) : x1;
      for (int v = 0; v < D::kVecs; ++v) {
        const __m512i iv = _mm512_load_si512(idx[v]);
        __m512i r = _mm512_permutex2var_epi16(x0, iv, x1);
        if (D::kChunk == 128) r = _mm512_mask_blend_epi16(0xFFFF0000u, r, _mm512_permutex2var_epi16(x2, iv, x3));
        _mm512_store_si512(dst + k + 32 * v, r);
      }
    }
  }
}

// ---- decode path ----------------------------------------------------------------------------
constexpr int64_t kDecodeMaxN = 16;
constexpr int64_t kMaxC = 8;  // x rows per pass over the weights
constexpr int64_t kScalePrefetch = 16;  // rows

// f32 scales of one weight row: sf[j] = e8m0(codes[j]) for j < cols (padded to 16).
inline void row_scales(const uint8_t* codes, int64_t cols, float* sf) {
  for (int64_t j = 0; j < cols; j += 16) {
    const __m128i c = _mm_maskz_loadu_epi8(first_lanes(min64(16, cols - j)), codes + j);
    _mm512_store_ps(sf + j, e8m0_to_ps(c));
  }
}

// acc[c*R + r] (+)= row m+r . x row c over k in [k0, k1) (k0, k1 multiples of the chunk or
// k1 = K, and of the scale group). Per output 16 lanes of partial sums, summed by the caller.
//   GROUP > 0 (fp8, sb_k = 64 * GROUP): t runs over the whole scale block, then one multiply.
//   GROUP = 0 (sb_k = 32: mxfp4, V4.1 fp8): one multiply per chunk by the chunk's 32-block scales
//     spread over the lanes (lane j of the chunk belongs to block j / kLanesPerBlock).
//   GROUP = -1 (fp8, other sb_k: 96, 160, ...): the same with each 32-half's own scale.
template <class D, int R, int C, int GROUP>
inline void dot_part(const D& dec, const uint8_t* const* w, int64_t pf, const float* const* sf, int64_t sb_k,
                     const uint16_t* xb, int64_t xs, int64_t k0, int64_t k1, int64_t K, __m512* accm, bool first) {
  constexpr int CH = D::kChunk, V = D::kVecs;
  constexpr int kLanesPerBlock = 16 / (CH / 32);
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = first ? _mm512_setzero_ps() : accm[c * R + r];
  alignas(64) int32_t lane_block[16];
  for (int j = 0; j < 16; ++j) lane_block[j] = j / kLanesPerBlock;
  const __m512i spread = _mm512_load_si512(lane_block);
  const int64_t last = div_up(K, sb_k) - 1;  // last scale column (GROUP = -1)
  for (int64_t k = k0; k < k1;) {
    const int64_t ke = GROUP > 0 ? min64(k1, k + CH * GROUP) : k + CH;
    __m512 t[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) t[r][c] = _mm512_setzero_ps();
    for (int64_t kk = k; kk < ke; kk += CH) {
      __m512i wv[R][V];
      for (int r = 0; r < R; ++r) {
        if (pf) _mm_prefetch(reinterpret_cast<const char*>(w[r]) + D::bytes(kk) + pf, _MM_HINT_T0);
        dec.decode(w[r], kk, K - kk, wv[r]);
      }
      for (int c = 0; c < C; ++c) {
        __m512i xv[V];
        for (int v = 0; v < V; ++v) xv[v] = _mm512_load_si512(xb + c * xs + kk + 32 * v);
        for (int r = 0; r < R; ++r)
          for (int v = 0; v < V; ++v) t[r][c] = dp(t[r][c], wv[r][v], xv[v]);
      }
    }
    for (int r = 0; r < R; ++r) {
      __m512 s;
      if constexpr (GROUP > 0) {
        s = _mm512_set1_ps(sf[r][k / (CH * GROUP)]);
      } else if constexpr (GROUP == 0) {  // the chunk's CH/32 scales, from the padded row buffer
        s = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_loadu_ps(sf[r] + k / 32)));
      } else {
        const int64_t j0 = k / sb_k, j1 = min64((k + 32) / sb_k, last);
        s = _mm512_insertf32x8(_mm512_set1_ps(sf[r][j0]), _mm256_set1_ps(sf[r][j1]), 1);
      }
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(t[r][c], s, acc[r][c]);
    }
    k = ke;
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) accm[c * R + r] = acc[r][c];
}

template <class D, int R, int GROUP>
void dot_block(const mm_problem& p, const D& dec, const uint16_t* xb, int64_t xs, int64_t m, int64_t nrows, float* sfbuf,
               int64_t sfs) {
  const uint8_t* w[R];
  const float* sf[R];
  const int64_t ncols = div_up(p.K, p.sb_k);
  for (int r = 0; r < R; ++r) {
    const int64_t mr = m + min64(r, nrows - 1);  // rows past nrows repeat the last (not stored)
    w[r] = reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, mr));
    row_scales(scale_row(p, mr), ncols, sfbuf + r * sfs);
    sf[r] = sfbuf + r * sfs;
  }
  // The scales are a separate, sparse stream (1/16 of the bytes for mxfp4) that the hardware
  // prefetchers do not follow: fetch those of the rows kScalePrefetch ahead now.
  if (m + kScalePrefetch < p.M) {
    const char* s = reinterpret_cast<const char*>(scale_row(p, m + kScalePrefetch));
    for (int64_t b = 0; b < ncols * (R < p.sb_m ? 1 : R / p.sb_m + 1); b += 64) _mm_prefetch(s + b, _MM_HINT_T0);
  }
  // K in blocks when the x rows take several passes, so the R weight rows stay in L1.
  const int64_t step = GROUP > 0 ? D::kChunk * GROUP : D::kChunk;
  const int64_t kb = p.N <= kMaxC ? round_up(p.K, step) : round_up(2048, step);
  alignas(64) __m512 acc[R * kDecodeMaxN];
  static const int64_t pfsel = getenv("QPF") ? atoll(getenv("QPF")) : 0;
  const int64_t pf = pfsel < 0 ? 0 : pfsel == 0 ? R * int64_t(p.w_stride) : pfsel;
  for (int64_t k0 = 0; k0 < p.K; k0 += kb) {
    const int64_t k1 = min64(p.K, k0 + kb);
    for (int64_t n = 0; n < p.N; n += kMaxC) {
      const uint16_t* x = xb + n * xs;
      __m512* a = acc + n * R;
      const bool first = k0 == 0;
      switch (min64(kMaxC, p.N - n)) {
        case 1: dot_part<D, R, 1, GROUP>(dec, w, pf, sf, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        case 2: dot_part<D, R, 2, GROUP>(dec, w, pf, sf, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        case 3: dot_part<D, R, 3, GROUP>(dec, w, pf, sf, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        case 4: dot_part<D, R, 4, GROUP>(dec, w, pf, sf, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        case 5: dot_part<D, R, 5, GROUP>(dec, w, pf, sf, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        case 6: dot_part<D, R, 6, GROUP>(dec, w, pf, sf, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        case 7: dot_part<D, R, 7, GROUP>(dec, w, pf, sf, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        default: dot_part<D, R, 8, GROUP>(dec, w, pf, sf, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
      }
    }
  }
  for (int64_t n = 0; n < p.N; ++n)
    for (int r = 0; r < R && r < nrows; ++r) yrow(p, n)[m + r] = _mm512_reduce_add_ps(acc[n * R + r]);
}

template <class D, int GROUP>
void decode_rows(const mm_problem& p, const uint16_t* xb, int64_t xs, int64_t m0, int64_t m1, float* sfbuf, int64_t sfs) {
  const D dec;
  // R weight rows per step: 4 while one pass of up to 2 x rows, 2 up to 4 x rows, else 1.
  static const int rsel = getenv("QR") ? atoi(getenv("QR")) : 0;
  if (rsel == 1) { for (int64_t m = m0; m < m1; ++m) dot_block<D, 1, GROUP>(p, dec, xb, xs, m, 1, sfbuf, sfs); return; }
  if (rsel == 2) { for (int64_t m = m0; m < m1; m += 2) dot_block<D, 2, GROUP>(p, dec, xb, xs, m, min64(2, m1 - m), sfbuf, sfs); return; }
  if (p.N <= 2) {
    for (int64_t m = m0; m < m1; m += 4) dot_block<D, 4, GROUP>(p, dec, xb, xs, m, min64(4, m1 - m), sfbuf, sfs);
  } else if (p.N <= 4) {
    for (int64_t m = m0; m < m1; m += 2) dot_block<D, 2, GROUP>(p, dec, xb, xs, m, min64(2, m1 - m), sfbuf, sfs);
  } else {
    for (int64_t m = m0; m < m1; ++m) dot_block<D, 1, GROUP>(p, dec, xb, xs, m, 1, sfbuf, sfs);
  }
}

template <class D>
bool decode(const mm_problem& p, int n_threads) {
  // x rows a cache line more than a multiple of 4 KiB apart (no L1 set aliasing between them).
  const int64_t xs = round_up(round_up(p.K, 128), 2048) + 32;
  uint16_t* xb = static_cast<uint16_t*>(mm_scratch(kShared, size_t(p.N * xs) * 2));
  if (!xb) return false;
  prepare_x<D>(p, xb, xs);
  const int64_t sfs = round_up(div_up(p.K, p.sb_k), 16) + 16;  // padded: chunks read 4 past the end
  bool ok = true;
  parallel(useful_threads(p, n_threads), [&](int tid, int nth) {
    int64_t m0, m1;
    split(p.M, 16, tid, nth, &m0, &m1);
    if (m0 >= m1) return;
    float* sfbuf = static_cast<float*>(mm_scratch(kPrivate, size_t(4 * sfs) * 4));
    if (!sfbuf) {
#pragma omp atomic write
      ok = false;
      return;
    }
    if constexpr (!D::kFp8) {
      decode_rows<D, 0>(p, xb, xs, m0, m1, sfbuf, sfs);  // sb_k = 32
      return;
    }
    switch (p.sb_k) {
      case 32: decode_rows<D, 0>(p, xb, xs, m0, m1, sfbuf, sfs); break;
      case 64: decode_rows<D, 1>(p, xb, xs, m0, m1, sfbuf, sfs); break;
      case 128: decode_rows<D, 2>(p, xb, xs, m0, m1, sfbuf, sfs); break;
      case 256: decode_rows<D, 4>(p, xb, xs, m0, m1, sfbuf, sfs); break;
      default: decode_rows<D, -1>(p, xb, xs, m0, m1, sfbuf, sfs); break;
    }
  });
  return ok;
}

}  // namespace

// VBMI is not in features (cpu.h): asked here. __builtin_cpu_supports reads cpuid; the OS support
// for the AVX-512 state comes from host_features().
bool qmm_avx512bf16_available() {
  static const bool ok = host_features().has_avx512() && host_features().avx512_bf16 &&
                         __builtin_cpu_supports("avx512vbmi");
  return ok;
}

void qmm_avx512bf16_run(const mm_problem& p, int n_threads) {
  if (handle_empty(p)) return;
  bool ok = true;
  for (int64_t n0 = 0; n0 < p.N && ok; n0 += kDecodeMaxN) {
    const mm_problem s = sub_problem(p, 0, p.M, n0, min64(p.N, n0 + kDecodeMaxN));
    ok = p.wtype == dtype::mxfp4 ? decode<mxfp4_dec>(s, n_threads) : decode<fp8_dec>(s, n_threads);
  }
  if (!ok) qmm_avx2_run(p, n_threads);  // out of scratch memory (a few KiB): the exact AVX2 path needs none
}

#pragma GCC pop_options

}  // namespace v4::cpu::qmm_arch

// avx512_bf16: AVX-512 kernels for all six quantized weight types, x rounded to bf16 once per
// call (x_rounding 2^-8). Needs AVX512-BF16 (vdpbf16ps) and VBMI (vpermi2b); this file is built
// with AVX-512 F/BW/VL/DQ (the _avx512 suffix), the two extensions are switched on with
// #pragma GCC target below, and qmm_avx512bf16_available() checks them (cpuid) first.
//
// Weights are decoded to bf16 exactly: every e4m3, e2m1, q8_0 int8 and K-quant code value is a
// bf16 value. mxfp4 by vpermw on nibbles in place (a 32-entry word table holding the 16 values
// twice, so index bit 4 does not matter: 4 vpermw + 3 shifts per 128 elements), fp8 by vpermi2b
// on the 7 magnitude bits (128-entry tables of the low and the high byte of the bf16) plus the sign
// bit, q8_0 through f32, the K-quants by vpermw on their 4/3/2-bit codes. Each decoder emits its
// elements in a fixed permutation of k; x is put in the same order once per call (prepare_x), so
// the hot loop has no shuffles for x. Products of two bf16 are exact in f32; vdpbf16ps sums pairs
// in f32 (RNE, subnormals flushed).
//
// Scales multiply f32 partial sums: for mxfp4 each f32 lane's 8 elements lie in one 32-block, so
// one multiply per 128 elements applies the 4 block scales (spread over the lanes); fp8 with
// sb_k = 128 (V4) takes one multiply per 128-block, sb_k = 32 (V4.1) one per 64 elements. The
// e8m0 scales are powers of two, so this is exact for every code, 2^-127 and NaN (0xFF) included.
// K-quant mins: - sum_j dmin m_j * (sum of the rounded x over sub-block j), x sums once per call.
//
//  * dot-product path (decode, any N; N < 16 for mxfp4, N <= 16 for fp8, all N for the others):
//    one weight row (two from N >= 4, sharing the x loads) against up to 8 x rows per pass; rows
//    are read one after the other with a software prefetch (prefetcht2) >= 16 KiB ahead in whole
//    rows, e8m0 scale rows 16 rows ahead; outputs of 16 rows are summed together. When a single
//    pass's bf16 x rows exceed 16 KiB (K = 16384 at N = 1: 32 KiB, all of L1), K goes in
//    segments swept over the 16-row tile, so the weight stream does not evict x from L1.
//  * panel path (prefill, mxfp4 N >= 16, fp8 N > 16): panels of 48 weight rows decoded to bf16
//    WITH their scales (exponent added to each nonzero bf16 word: exact while the results are
//    normal bf16, which scales_safe() checks up front; otherwise the dot-product path runs) in the
//    layout [k/2][48][2], x in [k/2][8][2]; an 8 x 48 tile of y in 24 zmm, one x pair broadcast
//    and 24 vdpbf16ps per k pair (the design of matmul_avx512bf16.cpp).
//
// Threads: the dot-product path hands out chunks of 16-row tiles dynamically, the panel path
// splits the (M, N) tile grid; K is never split, so results do not depend on the thread count.
//
// Measured on the development host (AMD Zen 4, 2 threads, shared and noisy; weights rotated through
// 2 GiB; "DRAM" = a plain sum loop over the same buffer, alternated with the kernel, median of 9
// rounds, runs in the ~32 GB/s regime of the host): N = 1 mxfp4 [4096 x 4096] 25.5 GB/s (78-80%),
// [2048 x 4096] 24-26 GB/s (75-79%); fp8 (128 x 128) [8192 x 4096] 29-33 GB/s (85-90%), [4096 x
// 4096] 28.6 GB/s (85%); from cache 2 threads reach ~47 GB/s (mxfp4): mxfp4 decode is close to
// compute-bound. Prefill M = K = 4096: mxfp4 N = 512 362-390 GFLOP/s, fp8 366-370 GFLOP/s, against
// a measured vdpbf16ps peak of 460 GFLOP/s. The K segments and prefetcht2 (2026-11-28) took mxfp4
// N = 1, K = 16384 from 29-32% to 68-89% of the sum loop in interleaved runs (docs/KERNELS.md).
#include "backends/cpu/arch/kquant_avx512.h"
#include "backends/cpu/arch/qmatmul_arch.h"  // also <immintrin.h>

namespace v4::cpu::qmm_arch {

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
// bf16 bits of a small integer v, |v| <= 15.
constexpr uint16_t int_bf16(int v) {
  if (v == 0) return 0;
  const int a = v < 0 ? -v : v;
  const int hb = a >= 8 ? 3 : a >= 4 ? 2 : a >= 2 ? 1 : 0;
  return uint16_t((v < 0 ? 0x8000 : 0) | ((127 + hb) << 7) | ((a - (1 << hb)) << (7 - hb)));
}

struct tables {
  alignas(64) uint16_t e2m1[32];   // e2m1 code (index bits 0-3)
  alignas(64) uint16_t u4[32];     // 0 .. 15          (q4_k codes, index bits 0-3)
  alignas(64) uint16_t u2[32];     // 0 .. 3           (q2_k codes, index bits 0-1)
  alignas(64) uint16_t s3[32];     // (i & 7) - 4      (q3_k codes, index bits 0-2)
  alignas(64) uint8_t e4m3_lo[128];
  alignas(64) uint8_t e4m3_hi[128];
};
constexpr tables make_tables() {
  tables t{};
  for (int i = 0; i < 32; ++i) {
    t.e2m1[i] = e2m1_bf16(i);
    t.u4[i] = int_bf16(i & 15);
    t.u2[i] = int_bf16(i & 3);
    t.s3[i] = int_bf16((i & 7) - 4);
  }
  for (int i = 0; i < 128; ++i) {
    t.e4m3_lo[i] = uint8_t(e4m3_bf16(i) & 0xff);
    t.e4m3_hi[i] = uint8_t(e4m3_bf16(i) >> 8);
  }
  return t;
}
constexpr tables kTables = make_tables();

// The weight stream's software prefetch: prefetcht2, i.e. towards L2 rather than L1 (Zen 4,
// 1 thread, N = 1, mxfp4 K = 16384 from DRAM, thread CPU time: T0 9.4 GB/s, T1 16.6, T2 17.1-18.5,
// NTA 11.7; the L1 miss buffers, not DRAM, were the limit with T0).
inline void prefetch_w(const char* a) { _mm_prefetch(a, _MM_HINT_T2); }
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

// The even and the odd bf16 words of v as 16 f32 (for the sums of x per sub-block).
inline __m512 bf16_even(__m512i v) { return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)); }
inline __m512 bf16_odd(__m512i v) { return _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u)))); }

// unpack6_epi32: arch/kquant_avx512.h.

// ---- decoders -------------------------------------------------------------------------------
// A decoder turns one chunk of kChunk elements [k, k + kChunk) of a weight row into kVecs
// vectors of 32 bf16 (exact: every code value is a bf16 value); word i of vector v holds element
// elem(v, i) of the chunk, and x is arranged the same way once per call (prepare_x). The scales
// of the row are f32 per sub-block of kSub elements (row_scales: sf; for the asymmetric K-quants
// also the mins, mf: w = sf * code - mf). Vectors come in kGroups groups of kVecs / kGroups; lane
// j of every vector of group g covers elements of sub-block spread(g, j) of the chunk, so one
// multiply per group and chunk applies the scales to the partial sums.
// `valid` = elements of the chunk inside K; codes past it read as 0.

// mxfp4: 128 elements = 64 bytes as 32 words, word i holding elements 4i .. 4i+3 in its four
// nibbles; vpermw reads the low 5 bits of each word (the table repeats, so bit 4 does not matter).
struct mxfp4_dec {
  static constexpr bool kFp8 = false, kScaled = true, kHasMin = false;
  static constexpr int kChunk = 128, kVecs = 4, kGroups = 1, kSub = 32;
  static constexpr int elem(int v, int i) { return 4 * i + v; }
  static constexpr int spread(int, int j) { return j / 4; }
  static int64_t bytes(int64_t k) { return int64_t(uint64_t(k) >> 1); }
  __m512i t = _mm512_load_si512(kTables.e2m1);
  inline void decode(const uint8_t* row, int64_t k, int64_t valid, __m512i* v) const {
    const uint8_t* src = row + bytes(k);
    const __m512i w = valid >= kChunk ? _mm512_loadu_si512(src) : _mm512_maskz_loadu_epi8(mask64((valid + 1) / 2), src);
    v[0] = _mm512_permutexvar_epi16(w, t);
    v[1] = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 4), t);
    v[2] = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 8), t);
    v[3] = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 12), t);
  }
};

// fp8: low and high bytes of the bf16 from 128-entry tables on the 7 magnitude bits, the sign
// or-ed in, then interleaved within 128-bit lanes.
struct fp8_dec {
  static constexpr bool kFp8 = true, kScaled = true, kHasMin = false;
  static constexpr int kChunk = 64, kVecs = 2, kGroups = 1, kSub = 32;
  static constexpr int elem(int v, int i) { return 16 * (i / 8) + 8 * v + i % 8; }
  static constexpr int spread(int, int j) { return j / 8; }
  static int64_t bytes(int64_t k) { return k; }
  __m512i lo0 = _mm512_load_si512(kTables.e4m3_lo), lo1 = _mm512_load_si512(kTables.e4m3_lo + 64);
  __m512i hi0 = _mm512_load_si512(kTables.e4m3_hi), hi1 = _mm512_load_si512(kTables.e4m3_hi + 64);
  __m512i sign = _mm512_set1_epi8(char(0x80));
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

// q8_0: two blocks of 32 int8 (f32 via vpmovsxbd + vcvtdq2ps, exact), packed so that words 0-15
// of each vector come from the first block and 16-31 from the second.
struct q8_0_dec {
  static constexpr bool kFp8 = false, kScaled = false, kHasMin = false;
  static constexpr int kChunk = 64, kVecs = 2, kGroups = 1, kSub = 32;
  static constexpr int elem(int v, int i) { return (i < 16 ? 0 : 32) + 16 * v + i % 16; }
  static constexpr int spread(int, int j) { return j / 8; }
  static constexpr size_t kBlock = sizeof(quant::block_q8_0);
  static constexpr int64_t kBlockElems = 32;
  static int64_t bytes(int64_t k) { return int64_t(uint64_t(k) / 32 * kBlock); }
  static __m512 f32x16(const int8_t* q) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))));
  }
  inline void decode(const uint8_t* row, int64_t k, int64_t valid, __m512i* v) const {
    const auto* b = reinterpret_cast<const quant::block_q8_0*>(row) + uint64_t(k) / 32;
    const __m512 a0 = f32x16(b[0].qs), a1 = f32x16(b[0].qs + 16);
    const __m512 b0 = valid > 32 ? f32x16(b[1].qs) : _mm512_setzero_ps();
    const __m512 b1 = valid > 32 ? f32x16(b[1].qs + 16) : _mm512_setzero_ps();
    v[0] = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(b0, a0));
    v[1] = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(b1, a1));
  }
  static void row_scales(const uint8_t* row, int64_t K, float* sf, float*) {
    const __m512i offs = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(int(kBlock)));
    int64_t j = 0;
    for (; j + 16 <= K / 32; j += 16) {  // the 16 f16 d fields of 16 blocks
      const __m512i d = _mm512_i32gather_epi32(offs, row + j * int64_t(kBlock), 1);
      _mm512_storeu_ps(sf + j, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(d)));
    }
    const auto* b = reinterpret_cast<const quant::block_q8_0*>(row);
    for (; j < K / 32; ++j) sf[j] = _cvtsh_ss(b[j].d);
  }
};

// q4_k: 64 elements = 32 code bytes: low nibbles are elements 0-31, high nibbles 32-63 (natural
// order, one 32-sub-block per vector).
struct q4_k_dec {
  static constexpr bool kFp8 = false, kScaled = false, kHasMin = true;
  static constexpr int kChunk = 64, kVecs = 2, kGroups = 2, kSub = 32;
  static constexpr int elem(int v, int i) { return 32 * v + i; }
  static constexpr int spread(int g, int) { return g; }
  static constexpr uint64_t kBlock = sizeof(quant::block_q4_k);
  static constexpr int64_t kBlockElems = 256;
  static int64_t bytes(int64_t k) { return int64_t(uint64_t(k) / 256 * kBlock + 16 + uint64_t(k) % 256 / 2); }
  __m512i t = _mm512_load_si512(kTables.u4);
  inline void decode(const uint8_t* row, int64_t k, int64_t, __m512i* v) const {
    const auto* b = reinterpret_cast<const quant::block_q4_k*>(row) + uint64_t(k) / 256;
    const __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qs + uint64_t(k) % 256 / 2)));
    v[0] = _mm512_permutexvar_epi16(w, t);
    v[1] = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 4), t);
  }
  static void row_scales(const uint8_t* row, int64_t K, float* sf, float* mf) {
    const auto* b = reinterpret_cast<const quant::block_q4_k*>(row);
    for (int64_t s = 0; s < K / 256; ++s) {  // lanes 0-7 scales * d, 8-15 mins * dmin (exact: 11 x 6 bits)
      const __m512 dd = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(b[s].d)), _mm256_set1_ps(_cvtsh_ss(b[s].dmin)), 1);
      const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(unpack6_epi32(b[s].scales)), dd);
      _mm256_storeu_ps(sf + 8 * s, _mm512_castps512_ps256(v));
      _mm256_storeu_ps(mf + 8 * s, _mm512_extractf32x8_ps(v, 1));
    }
  }
};

// q2_k, q3_k: 128 elements = 32 bytes of 2-bit planes (vector t = bits 2t..2t+1: elements
// 32t .. 32t+31), q3_k with its high bit from hmask; 16-element sub-blocks (lanes 0-7, 8-15).
struct q2_k_dec {
  static constexpr bool kFp8 = false, kScaled = false, kHasMin = true;
  static constexpr int kChunk = 128, kVecs = 4, kGroups = 4, kSub = 16;
  static constexpr int elem(int v, int i) { return 32 * v + i; }
  static constexpr int spread(int g, int j) { return 2 * g + j / 8; }
  static constexpr uint64_t kBlock = sizeof(quant::block_q2_k);
  static constexpr int64_t kBlockElems = 256;
  static int64_t bytes(int64_t k) { return int64_t(uint64_t(k) / 256 * kBlock + 20 + uint64_t(k) % 256 / 128 * 32); }
  __m512i t = _mm512_load_si512(kTables.u2);
  inline void decode(const uint8_t* row, int64_t k, int64_t, __m512i* v) const {
    const auto* b = reinterpret_cast<const quant::block_q2_k*>(row) + uint64_t(k) / 256;
    const __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qs + uint64_t(k) % 256 / 128 * 32)));
    v[0] = _mm512_permutexvar_epi16(w, t);
    v[1] = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 2), t);
    v[2] = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 4), t);
    v[3] = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 6), t);
  }
  static void row_scales(const uint8_t* row, int64_t K, float* sf, float* mf) {
    const auto* b = reinterpret_cast<const quant::block_q2_k*>(row);
    for (int64_t s = 0; s < K / 256; ++s) {
      const __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[s].scales)));
      const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(sc, _mm512_set1_epi32(15)));
      const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(sc, 4));
      _mm512_storeu_ps(sf + 16 * s, _mm512_mul_ps(lo, _mm512_set1_ps(_cvtsh_ss(b[s].d))));
      _mm512_storeu_ps(mf + 16 * s, _mm512_mul_ps(hi, _mm512_set1_ps(_cvtsh_ss(b[s].dmin))));
    }
  }
};
struct q3_k_dec {
  static constexpr bool kFp8 = false, kScaled = false, kHasMin = false;
  static constexpr int kChunk = 128, kVecs = 4, kGroups = 4, kSub = 16;
  static constexpr int elem(int v, int i) { return 32 * v + i; }
  static constexpr int spread(int g, int j) { return 2 * g + j / 8; }
  static constexpr uint64_t kBlock = sizeof(quant::block_q3_k);
  static constexpr int64_t kBlockElems = 256;
  static int64_t bytes(int64_t k) { return int64_t(uint64_t(k) / 256 * kBlock + 46 + uint64_t(k) % 256 / 128 * 32); }
  __m512i t = _mm512_load_si512(kTables.s3);
  __m512i low2 = _mm512_set1_epi16(3);
  // Code bits 0-1 from the plane, bit 2 = bit (4c + v) of hmask; the table maps (i & 7) to i - 4,
  // so bits 3 and 4 of the index do not matter.
  inline void decode(const uint8_t* row, int64_t k, int64_t, __m512i* v) const {
    const auto* b = reinterpret_cast<const quant::block_q3_k*>(row) + uint64_t(k) / 256;
    const int c = int(uint64_t(k) % 256 / 128);
    const __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qs + 32 * c)));
    const __m512i h = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->hmask)));
    // bit (4c + t) of h to bit 2: shift h left by 2 then right by 4c + t
    const __m512i h2 = _mm512_slli_epi16(h, 2);
    for (int t2 = 0; t2 < 4; ++t2) {
      const __m512i lo = _mm512_srli_epi16(w, 2 * t2);
      const __m512i hi = _mm512_srl_epi16(h2, _mm_cvtsi32_si128(4 * c + t2));
      v[t2] = _mm512_permutexvar_epi16(_mm512_ternarylogic_epi32(lo, hi, low2, 0xE4), t);  // low2 ? lo : hi
    }
  }
  static void row_scales(const uint8_t* row, int64_t K, float* sf, float*) {
    const auto* b = reinterpret_cast<const quant::block_q3_k*>(row);
    for (int64_t s = 0; s < K / 256; ++s) {
      const __m512i v = _mm512_sub_epi32(unpack6_epi32(b[s].scales), _mm512_set1_epi32(32));
      _mm512_storeu_ps(sf + 16 * s, _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(_cvtsh_ss(b[s].d))));
    }
  }
};

// The scale row of a scaled type (e8m0 codes) as f32: sf[j] for j < cols, then finite padding
// (2^-127 or 0) to round_up(cols, 16) + 16: chunks read a few scales past the last column, and
// multiply them by partial sums that are 0 there. Codes 1..254 are shifted into the f32 exponent;
// 0 and 0xFF (rare) are patched.
inline void e8m0_row(const uint8_t* codes, int64_t cols, float* sf) {
  int64_t j = 0;
  for (; j < cols; j += 16) {
    const __m128i c = cols - j >= 16 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + j))
                                     : _mm_maskz_loadu_epi8(first_lanes(cols - j), codes + j);
    const __mmask16 special = _mm_cmpeq_epi8_mask(c, _mm_setzero_si128()) | _mm_cmpeq_epi8_mask(c, _mm_set1_epi8(-1));
    _mm512_store_ps(sf + j, special ? e8m0_to_ps(c) : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu8_epi32(c), 23)));
  }
  _mm512_store_ps(sf + j, _mm512_setzero_ps());
}

// Scales (and mins) of row m of an in-row block type: sub-block columns, zero from cols to at
// least cols + 16 (buffers of round_up(cols, 16) + 32 floats).
// Over the K segment [ks0, ks1) only (ks0 a multiple of 512: the segment's columns start at a
// multiple of 16); the padding is written with the last segment.
template <class D>
inline void row_scales(const mm_problem& p, int64_t m, int64_t cols, float* sf, float* mf, int64_t ks0, int64_t ks1) {
  const uint8_t* row = reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, m));
  const int64_t j0 = ks0 / D::kSub;
  D::row_scales(row + size_t(ks0 / D::kBlockElems) * D::kBlock, ks1 - ks0, sf + j0, mf + j0);
  if (ks1 < p.K) return;
  const __mmask16 tail = __mmask16(~first_lanes(cols % 16));  // zero from cols to the padded end
  _mm512_mask_storeu_ps(sf + cols / 16 * 16, tail, _mm512_setzero_ps());
  _mm512_storeu_ps(sf + cols / 16 * 16 + 16, _mm512_setzero_ps());
  if (D::kHasMin) {
    _mm512_mask_storeu_ps(mf + cols / 16 * 16, tail, _mm512_setzero_ps());
    _mm512_storeu_ps(mf + cols / 16 * 16 + 16, _mm512_setzero_ps());
  }
}

// Scale columns of a row: sub-blocks (block types), or e8m0 columns (sb_k).
template <class D>
inline int64_t scale_cols(const mm_problem& p) {
  return D::kScaled ? div_up(p.K, p.sb_k) : p.K / D::kSub;
}

// x rows rounded to bf16 in the decoders' order: per chunk, kVecs vectors of 32 words (zero past
// K), at xb + n * xs. For decoders with mins also the f32 sums of the rounded x per sub-block,
// xsum[n * ss + j] (zero-padded like the mins).
template <class D>
void prepare_x(const mm_problem& p, uint16_t* xb, int64_t xs, float* xsum, int64_t ss) {
  alignas(64) uint16_t idx[D::kVecs][32];
  __mmask32 upper[D::kVecs];  // words taken from the chunk's second 64 elements
  for (int v = 0; v < D::kVecs; ++v) {
    upper[v] = 0;
    for (int i = 0; i < 32; ++i) {
      idx[v][i] = uint16_t(D::elem(v, i) & 63);
      if (D::elem(v, i) >= 64) upper[v] |= __mmask32(1) << i;
    }
  }
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
        if (D::kChunk == 128) r = _mm512_mask_blend_epi16(upper[v], r, _mm512_permutex2var_epi16(x2, iv, x3));
        _mm512_store_si512(dst + k + 32 * v, r);
      }
      if constexpr (D::kHasMin) {  // natural order: sums of 16 or 32 consecutive rounded x
        const __m512i xq[4] = {x0, x1, x2, x3};
        for (int q = 0; q < D::kChunk / 32; ++q) {
          const __m512 pr = _mm512_add_ps(bf16_even(xq[q]), bf16_odd(xq[q]));  // lane l: elements 2l, 2l+1
          const int64_t j = (k + 32 * q) / D::kSub;
          if (D::kSub == 32) {
            xsum[n * ss + j] = _mm512_reduce_add_ps(pr);
          } else {
            xsum[n * ss + j] = _mm512_mask_reduce_add_ps(0x00ff, pr);
            xsum[n * ss + j + 1] = _mm512_mask_reduce_add_ps(0xff00, pr);
          }
        }
      }
    }
    if constexpr (D::kHasMin)
      for (int64_t j = p.K / D::kSub; j < ss; ++j) xsum[n * ss + j] = 0.0f;
  }
}

// ---- decode path ----------------------------------------------------------------------------
constexpr int64_t kMaxC = 8;            // x rows per pass over a weight row
constexpr int kTile = 16;               // weight rows whose outputs are summed and stored together
constexpr int64_t kNBlock = 16;         // x rows per pass over a tile (outputs kept in registers/L1)
constexpr int64_t kScalePrefetch = 16;  // rows
constexpr int64_t kXL1Bytes = 16384;    // bf16 x bytes a single pass keeps in L1 (half of Zen 4's)
constexpr int64_t kChunkBytes = 262144;  // weight bytes per chunk of rows a thread takes at a time
// Weight prefetch (prefetch_w) distance in bytes, rounded up to whole rows: whole rows, because
// K segments (decode_tile) read the same segment of the next row next. Earlier measurements (2
// threads, wall clock): without prefetch mxfp4 N = 1 read DRAM at 42-62% of the sum-loop rate on
// Zen 4, with T0 2 KiB ahead 68-87%. Then (1 thread, thread CPU time, T2, K = 16384 segmented):
// 1 row (8 KiB) 17.1 GB/s, 2 rows 18.5, 4 rows 16.5; K = 4096: 2 to 32 KiB all 16-18 GB/s.
constexpr int64_t kPrefetchBytes = 16384;
// Two weight rows per pass from this many x rows on (Zen 4, M = K = 4096, 2 threads: mxfp4 N = 4
// 202 vs 166 GFLOP/s, N = 8 175 vs 146; fp8 N = 4 153 vs 114, N = 8 193 vs 147; N = 2, 3 within
// the noise; N = 1: 5% faster from cache but 7-8 points less of the DRAM rate).
constexpr int64_t kTwoRowsMinN = 4;

// Lane i of the result = the sum of the 16 lanes of a[i] (45 shuffles and adds for 16 sums).
inline __m512 reduce16(const __m512* a) {
  __m512 b[8], c[4];
  for (int i = 0; i < 8; ++i)  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] of the pair
    b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // per 128-bit lane: one partial sum of rows 4i .. 4i+3
    c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0x44), _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0xEE));
  const __m512 e0 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xDD));
  const __m512 e1 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], 0x88), _mm512_shuffle_f32x4(c[2], c[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(e0, e1, 0x88), _mm512_shuffle_f32x4(e0, e1, 0xDD));
}

// Whether every group's lanes 0-7 share one sub-block and 8-15 another (all decoders but mxfp4).
template <class D>
constexpr bool two_halves() {
  for (int g = 0; g < D::kGroups; ++g)
    for (int j = 0; j < 16; ++j)
      if (D::spread(g, j) != D::spread(g, j < 8 ? 0 : 8)) return false;
  return true;
}

// acc[c * kTile] (+)= w . x row c over k in [k0, k1) (k0 a multiple of the scale group, k1 one
// too or K): 16 lanes of partial sums per output. w is read once; the line pf bytes ahead of
// each chunk is prefetched (a later row: DRAM streams best as one sequential stream).
//   GROUP = 0: every chunk's groups are multiplied by their sub-blocks' scales (spread over the
//     lanes, from the row's f32 scales).
//   GROUP > 0 (fp8, sb_k = 64 * GROUP): t runs over the whole scale block, then one multiply.
//   GROUP = -1 (fp8, other sb_k: 96, 160, ...): each 32-half chunk with its own scale.
template <class D, int R, int C, int GROUP>
inline void dot_part(const D& dec, const uint8_t* const* w, int64_t pf, const float* const* sf, int64_t sb_k,
                     const uint16_t* xb, int64_t xs, int64_t k0, int64_t k1, int64_t K, __m512* accm, bool first) {
  constexpr int CH = D::kChunk, V = D::kVecs, G = D::kGroups, VG = V / G;
  constexpr int64_t kStep = GROUP > 0 ? CH * GROUP : CH;
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = first ? _mm512_setzero_ps() : accm[c * kTile + r];
  __m512i spread[G];
  for (int g = 0; g < G; ++g) {
    alignas(64) int32_t lane[16];
    for (int j = 0; j < 16; ++j) lane[j] = D::spread(g, j);
    spread[g] = _mm512_load_si512(lane);
  }
  if constexpr (GROUP <= 0) {
    const int64_t last = GROUP < 0 ? div_up(K, sb_k) - 1 : 0;  // last scale column (GROUP = -1)
#pragma GCC unroll 2
    for (int64_t k = k0; k < k1; k += CH) {
      __m512i wv[R][V];
      __m512 s[R][G];
      for (int r = 0; r < R; ++r) {
        prefetch_w(reinterpret_cast<const char*>(w[r]) + D::bytes(k) + pf);
        dec.decode(w[r], k, K - k, wv[r]);
        if constexpr (GROUP == 0) {
          const float* sk = sf[r] + uint64_t(k) / D::kSub;
          if constexpr (two_halves<D>()) {  // broadcasts (loads) and a blend instead of a shuffle
            for (int g = 0; g < G; ++g)
              s[r][g] = D::spread(g, 0) == D::spread(g, 8)
                            ? _mm512_set1_ps(sk[D::spread(g, 0)])
                            : _mm512_insertf32x8(_mm512_set1_ps(sk[D::spread(g, 0)]), _mm256_set1_ps(sk[D::spread(g, 8)]), 1);
          } else {
            const __m512 sc = _mm512_castps128_ps512(_mm_loadu_ps(sk));
            for (int g = 0; g < G; ++g) s[r][g] = _mm512_permutexvar_ps(spread[g], sc);
          }
        } else {
          const int64_t j0 = k / sb_k, j1 = min64((k + 32) / sb_k, last);
          s[r][0] = _mm512_insertf32x8(_mm512_set1_ps(sf[r][j0]), _mm256_set1_ps(sf[r][j1]), 1);
        }
      }
      // Per x row: t_g = the group's dot products, then acc += sum_g t_g * s_g. (With several groups
      // the products are summed first, so the loop-carried chain is one add per chunk.)
      for (int c = 0; c < C; ++c) {
        __m512i xv[V];
        for (int v = 0; v < V; ++v) xv[v] = _mm512_load_si512(xb + c * xs + k + 32 * v);
        for (int r = 0; r < R; ++r) {
          __m512 u = _mm512_setzero_ps();
          for (int g = 0; g < G; ++g) {
            __m512 t = _mm512_setzero_ps();
            for (int v = g * VG; v < (g + 1) * VG; ++v) t = dp(t, wv[r][v], xv[v]);
            if (G == 1) acc[r][c] = _mm512_fmadd_ps(t, s[r][g], acc[r][c]);
            else u = g == 0 ? _mm512_mul_ps(t, s[r][g]) : _mm512_fmadd_ps(t, s[r][g], u);
          }
          if (G > 1) acc[r][c] = _mm512_add_ps(acc[r][c], u);
        }
      }
    }
  } else {
    for (int64_t k = k0; k < k1; k += kStep) {
      const int64_t ke = min64(k1, k + kStep);
      __m512 t[R][C];
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) t[r][c] = _mm512_setzero_ps();
      for (int64_t kk = k; kk < ke; kk += CH) {
        __m512i wv[R][V];
        for (int r = 0; r < R; ++r) {
          prefetch_w(reinterpret_cast<const char*>(w[r]) + D::bytes(kk) + pf);
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
        const __m512 s = _mm512_set1_ps(sf[r][uint64_t(k) / kStep]);
        for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(t[r][c], s, acc[r][c]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) accm[c * kTile + r] = acc[r][c];
}

// Per-call constants of the dot-product path (divisions kept out of the per-row code).
struct plan {
  int64_t cols = 0;   // scale columns of a row
  int64_t ss = 0;     // stride of the per-row scale buffers and of the x sums
  int64_t kb = 0;     // K block when the x rows take several passes
  int64_t kx_unit = 0;  // single passes go over K in segments of a multiple of this (see decode_tile)
  int64_t pf1 = 0, pf2 = 0;  // weight prefetch distance in bytes (whole rows; one- and two-row passes)
};

// The e8m0 codes of row m (scaled types): no division when sb_m = 1 (mxfp4).
inline const uint8_t* codes_of(const mm_problem& p, int64_t m) {
  return p.scales + size_t(p.sb_m == 1 ? m : m / p.sb_m) * p.s_stride;
}

// Rows [m, m + R) of a tile (the tile starts at row m - r0), x rows [n0, n0 + nn): acc[n * kTile + r0 + r],
// over the K segment [ks0, ks1) (ks0 a multiple of pl.kx_unit; the sums start at ks0 = 0; the mins
// of the segment's sub-blocks are subtracted with it).
template <class D, int R, int GROUP>
void dot_rows(const mm_problem& p, const plan& pl, const D& dec, const uint16_t* xb, int64_t xs, const float* xsum,
              int64_t m, int64_t r0, int64_t n0, int64_t nn, float* sf, float* mf, __m512* acc, int64_t ks0,
              int64_t ks1) {
  const int64_t cols = pl.cols, ss = pl.ss, pf = R == 1 ? pl.pf1 : pl.pf2;
  const int64_t kb = nn <= kMaxC ? p.K : pl.kb;
  const uint8_t* w[R];
  const float* sfr[R];
  for (int r = 0; r < R; ++r) {
    if constexpr (D::kScaled) {
      // Only the segment's scale columns (j0 a multiple of 16: pl.kx is a multiple of 16 sb_k).
      const int64_t j0 = ks0 / p.sb_k, j1 = ks1 == p.K ? cols : ks1 / p.sb_k;
      e8m0_row(codes_of(p, m + r) + j0, j1 - j0, sf + r * ss + j0);
      // e8m0 scales are a separate, sparse stream (1/16 of the bytes for mxfp4) that the hardware
      // prefetchers do not follow: fetch those of the row kScalePrefetch ahead.
      if (m + r + kScalePrefetch < p.M) {  // (this segment's columns)
        const char* sc = reinterpret_cast<const char*>(codes_of(p, m + r + kScalePrefetch));
        for (int64_t b = j0; b < j1; b += 64) _mm_prefetch(sc + b, _MM_HINT_T0);
      }
    } else {
      row_scales<D>(p, m + r, cols, sf + r * ss, mf + r * ss, ks0, ks1);
    }
    w[r] = reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, m + r));
    sfr[r] = sf + r * ss;
  }
  for (int64_t k0 = ks0; k0 < ks1; k0 += kb) {
    const int64_t k1 = min64(ks1, k0 + kb);
    for (int64_t n = 0; n < nn; n += kMaxC) {
      const uint16_t* x = xb + (n0 + n) * xs;
      __m512* a = acc + n * kTile + r0;
      const bool first = k0 == 0;
      switch (min64(kMaxC, nn - n)) {
        case 1: dot_part<D, R, 1, GROUP>(dec, w, pf, sfr, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        case 2: dot_part<D, R, 2, GROUP>(dec, w, pf, sfr, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        case 3: dot_part<D, R, 3, GROUP>(dec, w, pf, sfr, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        case 4: dot_part<D, R, 4, GROUP>(dec, w, pf, sfr, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        case 5: dot_part<D, R, 5, GROUP>(dec, w, pf, sfr, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        case 6: dot_part<D, R, 6, GROUP>(dec, w, pf, sfr, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        case 7: dot_part<D, R, 7, GROUP>(dec, w, pf, sfr, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
        default: dot_part<D, R, 8, GROUP>(dec, w, pf, sfr, p.sb_k, x, xs, k0, k1, p.K, a, first); break;
      }
    }
  }
  if constexpr (D::kHasMin) {  // - sum_j mins_j * (sum of x over sub-block j)
    // (the segment's sub-blocks: [j0, j1), j0 a multiple of 16; zero padding past cols)
    const int64_t j0 = ks0 / D::kSub, j1 = ks1 == p.K ? cols : ks1 / D::kSub;
    for (int r = 0; r < R; ++r)
      for (int64_t n = 0; n < nn; ++n) {
        __m512 a = acc[n * kTile + r0 + r];  // ss is the x sums' stride too
        const float* xsn = xsum + (n0 + n) * ss;
        const float* mfr = mf + r * ss;
        for (int64_t j = j0; j < j1; j += 16) a = _mm512_fnmadd_ps(_mm512_load_ps(mfr + j), _mm512_load_ps(xsn + j), a);
        acc[n * kTile + r0 + r] = a;
      }
  }
}

// Rows [m0, m0 + rows), rows <= kTile, against x rows [n0, n1), n1 - n0 <= kNBlock: each weight
// row is read once per call of this (K in blocks when the x rows take several passes, so the row
// stays in L1 between them); then the outputs are summed 16 rows at a time and stored.
template <class D, int GROUP>
void decode_tile(const mm_problem& p, const plan& pl, const D& dec, const uint16_t* xb, int64_t xs, const float* xsum,
                 int64_t m0, int64_t rows, int64_t n0, int64_t n1, float* sf, float* mf) {
  const int64_t nn = n1 - n0;
  alignas(64) __m512 acc[kNBlock * kTile];
  // A single pass over the x rows whose bf16 copy does not fit L1 (K = 16384 at N = 1 is 32 KiB):
  // K in segments, each swept over all the tile's rows, so the weights streaming through L1 do
  // not evict x (from L2 the x loads, 4x the weight bytes for mxfp4, were the limit).
  const int64_t kseg = nn <= kMaxC ? max64(pl.kx_unit, kXL1Bytes / 2 / nn / pl.kx_unit * pl.kx_unit) : p.K;
  for (int64_t ks0 = 0; ks0 < p.K; ks0 += kseg) {
    const int64_t ks1 = min64(p.K, ks0 + kseg);
    int64_t r = 0;
    // Two weight rows per pass share the x loads once there are several x rows; one row at a time
    // otherwise (one sequential stream: DRAM-bound shapes read best that way).
    if (nn >= kTwoRowsMinN)
      for (; r + 2 <= rows; r += 2) dot_rows<D, 2, GROUP>(p, pl, dec, xb, xs, xsum, m0 + r, r, n0, nn, sf, mf, acc, ks0, ks1);
    for (; r < rows; ++r) dot_rows<D, 1, GROUP>(p, pl, dec, xb, xs, xsum, m0 + r, r, n0, nn, sf, mf, acc, ks0, ks1);
  }
  const __mmask16 mk = first_lanes(rows);
  for (int64_t n = 0; n < nn; ++n) {
    for (int64_t i = rows; i < kTile; ++i) acc[n * kTile + i] = _mm512_setzero_ps();
    _mm512_mask_storeu_ps(yrow(p, n0 + n) + m0, mk, reduce16(acc + n * kTile));
  }
}

template <class D, int GROUP>
void decode_rows(const mm_problem& p, const plan& pl, const uint16_t* xb, int64_t xs, const float* xsum, int64_t m0,
                 int64_t m1, float* sf, float* mf) {
  const D dec;
  for (int64_t m = m0; m < m1; m += kTile)
    for (int64_t n = 0; n < p.N; n += kNBlock)
      decode_tile<D, GROUP>(p, pl, dec, xb, xs, xsum, m, min64(kTile, m1 - m), n, min64(p.N, n + kNBlock), sf, mf);
}

// Any N: x rounded once, threads split M in tiles, every tile passes over the x rows 16 at a time
// (the tile's weights come from L2 after the first pass).
template <class D>
bool decode(const mm_problem& p, int n_threads) {
  // x rows a cache line more than a multiple of 4 KiB apart (no L1 set aliasing between them).
  const int64_t xs = round_up(round_up(p.K, 128), 2048) + 32;
  plan pl;
  pl.cols = scale_cols<D>(p);
  pl.ss = round_up(pl.cols, 16) + 32;  // padded: see row_scales
  const int64_t step = D::kFp8 && p.sb_k % 64 == 0 ? p.sb_k : D::kChunk;  // the scale group (GROUP > 0)
  pl.kb = round_up(2048, step);
  // Single-pass K segments are multiples of 16 sb_k for the scaled types (whole 16-column scale
  // stores; a multiple of every chunk and scale group), 512 for the others (super-blocks, chunks, and
// 16 sub-blocks of 32).
  pl.kx_unit = D::kScaled ? 16 * p.sb_k : 512;
  // Prefetch at least kPrefetchBytes ahead, at the same offset of a later row (rows are usually
  // contiguous, so this is one sequential stream); two-row passes a whole pair ahead.
  const int64_t pf_rows = max64(1, div_up(kPrefetchBytes, max64(1, int64_t(p.w_stride))));
  pl.pf1 = int64_t(p.w_stride) * pf_rows;
  pl.pf2 = int64_t(p.w_stride) * round_up(pf_rows, 2);
  const int64_t ss = pl.ss;
  const size_t xbytes = size_t(p.N * xs) * 2;
  char* shared = static_cast<char*>(mm_scratch(kShared, xbytes + (D::kHasMin ? size_t(p.N * ss) * 4 : 0)));
  if (!shared) return false;
  uint16_t* xb = reinterpret_cast<uint16_t*>(shared);
  float* xsum = D::kHasMin ? reinterpret_cast<float*>(shared + xbytes) : nullptr;
  prepare_x<D>(p, xb, xs, xsum, ss);
  bool ok = true;
  const int nth_use = useful_threads(p, n_threads);
  row_chunks chunks(p.M, p.w_stride, nth_use, kTile, kChunkBytes);
  parallel(nth_use, [&](int, int) {
    float* sf = static_cast<float*>(mm_scratch(kPrivate, size_t(4 * ss) * 4));
    if (!sf) {
#pragma omp atomic write
      ok = false;
      return;
    }
    float* mf = sf + 2 * ss;  // two rows of scales, then two of mins
    for (int64_t m0, m1; chunks.take(&m0, &m1);) {
      if constexpr (!D::kFp8) {
        decode_rows<D, 0>(p, pl, xb, xs, xsum, m0, m1, sf, mf);  // per sub-block scales
      } else {
        switch (p.sb_k) {
          case 32: decode_rows<D, 0>(p, pl, xb, xs, xsum, m0, m1, sf, mf); break;
          case 64: decode_rows<D, 1>(p, pl, xb, xs, xsum, m0, m1, sf, mf); break;
          case 128: decode_rows<D, 2>(p, pl, xb, xs, xsum, m0, m1, sf, mf); break;
          case 256: decode_rows<D, 4>(p, pl, xb, xs, xsum, m0, m1, sf, mf); break;
          default: decode_rows<D, -1>(p, pl, xb, xs, xsum, m0, m1, sf, mf); break;
        }
      }
    }
  });
  return ok;
}

// ---- prefill path ---------------------------------------------------------------------------
// Weight panels decoded to bf16 with their scales applied: the scale's exponent is added to every
// nonzero bf16 word (exact while the result stays a normal bf16, which scales_safe() checks), so
// the micro-kernel is a plain bf16 GEMM.
// Panels from this many x rows on (measured crossover on Zen 4, M = K = 4096, 2 threads: mxfp4
// N = 16 panels 227 vs dot products 188 GFLOP/s; fp8 N = 16: 148 vs 173, N = 32: 226 vs 158).
constexpr int64_t kPanelMinN_mxfp4 = 16, kPanelMinN_fp8 = 17;
constexpr int kMR = 48;         // weight rows per panel
constexpr int kNR = 8;          // x rows per panel
constexpr int64_t kKC = 1024;   // K block (at most): one weight panel = 96 KiB, in L2
constexpr int64_t kNC = 240;    // x rows packed per block: 480 KiB, in L2

// Scale codes whose scaled weights are all normal bf16 (or 0): mxfp4 0.5 .. 6 times 2^(e-127)
// needs e in [2, 252]; e4m3 2^-9 .. 448 needs e in [10, 246]. (The NaN code 0xFF is outside.)
template <class D>
bool scales_safe(const mm_problem& p) {
  const uint8_t lo = D::kFp8 ? 10 : 2, hi = D::kFp8 ? 246 : 252;
  const int64_t rows = div_up(p.M, p.sb_m), cols = div_up(p.K, p.sb_k);
  __mmask64 bad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* c = p.scales + size_t(r) * p.s_stride;
    for (int64_t j = 0; j < cols; j += 64) {
      const __m512i v = _mm512_maskz_loadu_epi8(mask64(cols - j), c + j);
      bad |= _mm512_mask_cmplt_epu8_mask(mask64(cols - j), v, _mm512_set1_epi8(char(lo))) |
             _mm512_cmpgt_epu8_mask(v, _mm512_set1_epi8(char(hi)));
    }
  }
  return bad == 0;
}

// 32 consecutive elements [k, k + 32) of a row (k a multiple of 32) in natural order as 16 bf16
// pairs, times 2^(e - 127): e is added to the exponent of every nonzero (and, for e4m3, non-NaN)
// word. Elements at or past K are 0.
struct mxfp4_panel {
  __m512i t = _mm512_load_si512(kTables.e2m1);
  inline __m512i decode32(const uint8_t* row, int64_t k, int64_t K, uint8_t e) const {
    const int64_t n = min64(32, K - k);
    const __m128i b = _mm_maskz_loadu_epi8(first_lanes((n + 1) / 2), row + k / 2);
    const __m512i d = _mm512_cvtepu8_epi32(b);                       // dword j = byte j
    const __m512i w = _mm512_or_si512(d, _mm512_slli_epi32(d, 12));  // words: low nibble | high nibble
    const __m512i v = _mm512_permutexvar_epi16(w, t);
    const __mmask32 nz = _mm512_test_epi16_mask(v, _mm512_set1_epi16(0x7fff));
    return _mm512_mask_add_epi16(v, nz, v, _mm512_set1_epi16(int16_t((int(e) - 127) << 7)));
  }
};
struct fp8_panel {
  __m512i lo0 = _mm512_load_si512(kTables.e4m3_lo), lo1 = _mm512_load_si512(kTables.e4m3_lo + 64);
  __m512i hi0 = _mm512_load_si512(kTables.e4m3_hi), hi1 = _mm512_load_si512(kTables.e4m3_hi + 64);
  __m512i inter;  // byte 2i <- lo[i], byte 2i+1 <- hi[i]
  fp8_panel() {
    alignas(64) uint8_t ix[64];
    for (int i = 0; i < 32; ++i) {
      ix[2 * i] = uint8_t(i);
      ix[2 * i + 1] = uint8_t(64 + i);
    }
    inter = _mm512_load_si512(ix);
  }
  inline __m512i decode32(const uint8_t* row, int64_t k, int64_t K, uint8_t e) const {
    const __m512i c = _mm512_castsi256_si512(_mm256_maskz_loadu_epi8(first_lanes32(K - k), row + k));
    const __m512i lo = _mm512_permutex2var_epi8(lo0, c, lo1);
    __m512i hi = _mm512_permutex2var_epi8(hi0, c, hi1);
    hi = _mm512_ternarylogic_epi32(hi, c, _mm512_set1_epi8(char(0x80)), 0xF8);  // hi | (c & 0x80)
    const __m512i v = _mm512_permutex2var_epi8(lo, inter, hi);
    const __m512i mag = _mm512_and_si512(v, _mm512_set1_epi16(0x7fff));  // finite nonzero: 1 .. 0x7f7f
    const __mmask32 fin = _mm512_cmplt_epu16_mask(_mm512_sub_epi16(mag, _mm512_set1_epi16(1)), _mm512_set1_epi16(0x7f7f));
    return _mm512_mask_add_epi16(v, fin, v, _mm512_set1_epi16(int16_t((int(e) - 127) << 7)));
  }
};

// wp[k/2][kMR][2] = scaled bf16 of rows [m0, m0 + mv) over [k0, k0 + kc) (0 past mv and past K).
template <class PD>
void pack_w(const mm_problem& p, const PD& dec, int64_t m0, int64_t mv, int64_t k0, int64_t kc, uint32_t* wp) {
  for (int h = 0; h < kMR / 16; ++h) {
    const uint8_t* rows[16];
    const uint8_t* sc[16];
    for (int i = 0; i < 16; ++i) {
      const int64_t m = m0 + min64(h * 16 + i, mv - 1);
      rows[i] = reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, m));
      sc[i] = scale_row(p, m);
    }
    for (int64_t kk = 0; kk < kc; kk += 32) {
      const int64_t k = k0 + kk, j = k / p.sb_k;
      __m512 r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = h * 16 + i < mv && k < p.K ? _mm512_castsi512_ps(dec.decode32(rows[i], k, p.K, sc[i][j])) : _mm512_setzero_ps();
      transpose16(r);
      for (int t = 0; t < 16; ++t) _mm512_store_ps(wp + (kk / 2 + t) * kMR + h * 16, r[t]);
    }
  }
}

// xp[k/2][kNR][2] = bf16(x[n0 + j][k0 + k]) for j < nv (0 past nv and past K); kc a multiple of 32.
void pack_x(const mm_problem& p, int64_t n0, int64_t nv, int64_t k0, int64_t kc, uint32_t* xp) {
  for (int64_t kk = 0; kk < kc; kk += 32) {
    __m512 r[16];
    for (int j = 0; j < 16; ++j)
      r[j] = j < nv ? _mm512_castsi512_ps(load_x_bf16(xrow(p, n0 + j), k0 + kk, p.K)) : _mm512_setzero_ps();
    transpose16(r);
    for (int t = 0; t < 16; ++t) _mm512_mask_storeu_ps(xp + (kk / 2 + t) * kNR, first_lanes(kNR), r[t]);
  }
}

// The kNR x kMR tile of y (+)= sum over kp k pairs; only j < nv, m < mv are written.
void micro(const uint32_t* wp, const uint32_t* xp, int64_t kp, float* y, size_t ys, int64_t mv, int64_t nv, bool add) {
  constexpr int H = kMR / 16;
  __m512 acc[kNR][H];
  for (int j = 0; j < kNR; ++j)
    for (int h = 0; h < H; ++h) acc[j][h] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kp; ++k) {
    __m512i wv[H];
    for (int h = 0; h < H; ++h) wv[h] = _mm512_load_si512(wp + k * kMR + 16 * h);
    for (int j = 0; j < kNR; ++j) {
      const __m512i b = _mm512_set1_epi32(int(xp[k * kNR + j]));
      for (int h = 0; h < H; ++h) acc[j][h] = dp(acc[j][h], wv[h], b);
    }
  }
  __mmask16 mk[H];
  for (int h = 0; h < H; ++h) mk[h] = first_lanes(max64(0, min64(16, mv - 16 * h)));
  for (int j = 0; j < kNR; ++j) {
    if (j >= nv) break;
    float* yr = reinterpret_cast<float*>(reinterpret_cast<char*>(y) + j * ys);
    for (int h = 0; h < H; ++h) {
      __m512 a = acc[j][h];
      if (add) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(mk[h], yr + 16 * h));
      _mm512_mask_storeu_ps(yr + 16 * h, mk[h], a);
    }
  }
}

// K blocks of at most kKC, all about the same size, multiples of 32 (and of sb_k when it is
// larger, so that panel columns never straddle... any multiple of 32 works: scales go per 32).
inline int64_t k_block(int64_t K) { return round_up(div_up(K, div_up(K, kKC)), 32); }

template <class PD>
bool prefill_part(const mm_problem& p, const PD& dec, int64_t mb, int64_t me, int64_t nb, int64_t ne) {
  const int64_t K = p.K, kcb = k_block(K);
  const int64_t kc_max = min64(kcb, round_up(K, 32));
  uint32_t* wp = static_cast<uint32_t*>(mm_scratch(kPrivate, size_t(kMR + round_up(kNC, kNR)) * size_t(kc_max / 2) * 4));
  if (!wp) return false;
  uint32_t* xp = wp + kMR * kc_max / 2;
  for (int64_t n0 = nb; n0 < ne; n0 += kNC) {
    const int64_t nn = min64(kNC, ne - n0);
    for (int64_t k0 = 0; k0 < K; k0 += kcb) {
      const int64_t kc = min64(kcb, round_up(K - k0, 32)), kp = kc / 2;
      for (int64_t j = 0; j < nn; j += kNR) pack_x(p, n0 + j, min64(kNR, nn - j), k0, kc, xp + j * kp);
      for (int64_t m0 = mb; m0 < me; m0 += kMR) {
        const int64_t mv = min64(kMR, me - m0);
        pack_w(p, dec, m0, mv, k0, kc, wp);
        for (int64_t j = 0; j < nn; j += kNR)
          micro(wp, xp + j * kp, kp, yrow(p, n0 + j) + m0, p.y_stride, mv, min64(kNR, nn - j), k0 > 0);
      }
    }
  }
  return true;
}

template <class PD>
bool prefill(const mm_problem& p, int n_threads) {
  bool ok = true;
  parallel(useful_threads(p, n_threads), [&](int tid, int nth) {
    const PD dec;
    int tm = 1, tn = 1;
    grid(div_up(p.M, kMR), div_up(p.N, kNR), nth, &tm, &tn);
    int64_t mb, me, nb, ne;
    split(p.M, kMR, tid % tm, tm, &mb, &me);
    split(p.N, kNR, tid / tm, tn, &nb, &ne);
    if (mb < me && nb < ne && !prefill_part(p, dec, mb, me, nb, ne)) {
#pragma omp atomic write
      ok = false;
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
  bool ok = false;
  switch (p.wtype) {
    case dtype::mxfp4:
      ok = (p.N >= kPanelMinN_mxfp4 && scales_safe<mxfp4_dec>(p) && prefill<mxfp4_panel>(p, n_threads)) ||
           decode<mxfp4_dec>(p, n_threads);
      break;
    case dtype::fp8_e4m3:
      ok = (p.N >= kPanelMinN_fp8 && scales_safe<fp8_dec>(p) && prefill<fp8_panel>(p, n_threads)) ||
           decode<fp8_dec>(p, n_threads);
      break;
    case dtype::q8_0: ok = decode<q8_0_dec>(p, n_threads); break;
    case dtype::q4_k: ok = decode<q4_k_dec>(p, n_threads); break;
    case dtype::q3_k: ok = decode<q3_k_dec>(p, n_threads); break;
    case dtype::q2_k: ok = decode<q2_k_dec>(p, n_threads); break;
    default: break;
  }
  if (!ok) qmm_avx2_run(p, n_threads);  // out of scratch memory: the exact AVX2 path needs none
}

#pragma GCC pop_options

}  // namespace v4::cpu::qmm_arch

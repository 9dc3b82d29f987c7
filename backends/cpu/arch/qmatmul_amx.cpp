// amx_bf16: AMX-BF16 prefill kernel for all six quantized weight types (x_rounding 2^-8, like
// avx512_bf16). x is rounded to bf16 once per call and packed in VNNI panels (the layout of
// matmul_amx.cpp); weight tiles are decoded to bf16 exactly and multiplied by tdpbf16ps (products
// exact, f32 sums: RNE, subnormals flushed). Needs AMX-BF16 plus what avx512_bf16 needs
// (AVX512-BF16, VBMI: the fp8 decoder uses vpermi2b).
//
// Tiles (one configuration per thread, reloaded only when the row count of an m block changes):
//   tmm4, tmm5  A: 16 weight rows (m) x 32 bf16 of k, decoded into a per-thread buffer (pack_a)
//   tmm6, tmm7  B: 16 k-pairs x 16 columns of x (n), VNNI order
//   tmm0..tmm3  C: f32 16 m x 16 n (y transposed): C[2a+b] = A_a * B_b
//
// Scales, per type (every code value is a bf16 value; the scales are not always):
//   fp8_e4m3, mxfp4   "folded": the e8m0 exponent is added to every nonzero bf16 word while
//                     decoding. Exact while all scaled codes stay normal bf16, which scales_safe()
//                     checks up front (otherwise the avx512_bf16 kernel runs the call). C sums
//                     all of K in the tiles.
//   q3_k, q2_k        the 4/6-bit sub-block scale times the code is an integer of magnitude
//                     <= 128 (q3_k: 32 * 4) or <= 45 (q2_k): exact in bf16 (8 significant bits),
//                     so it is decoded into the tile; the f16 super-scale d multiplies the f32
//                     partial sum of each 256-element super-block ("group").
//   q8_0, q4_k        d (q8_0) and d * sc (q4_k, 6-bit sc times a 4-bit code needs up to 10
//                     bits) multiply the f32 partial sum of every 32-element block: one tdpbf16ps
//                     per block into zeroed C tiles, stored, and accumulated in f32 with AVX-512.
//   mins (q4_k, q2_k) - sum_j dmin m_j * X_j, with X_j the f32 sum of the rounded x over sub-block
//                     j (computed once per call), added per output at the end.
// The products and sums are the ones of avx512_bf16 (same rounding contract), in another order.
//
// Tile configuration: GCC 12's _tile_loadconfig declares an 8-byte read, so the stores that fill
// the 64-byte configuration can be dropped (llama.cpp's AMX kernels fault when built with it),
// and _tile_loadd has no memory operand, so stores into a buffer only a tile load reads can be
// dropped or moved past it. Hence, as in matmul_amx.cpp, asm with the whole struct as the memory
// operand of ldtilecfg and a memory clobber on tile loads and stores.
// tests/cpu/test_qmatmul_amx.cpp runs several configurations in a row, in a child process.
#include "backends/cpu/arch/amx_tiles.h"
#include "backends/cpu/arch/qmatmul_arch.h"  // also <immintrin.h>

namespace v4::cpu::qmm_arch {
#if defined(V4_QMM_AMX_EMULATE)
inline namespace amx_emulated {  // symbols distinct from the library's
#endif

#pragma GCC push_options
#if defined(V4_QMM_AMX_EMULATE)  // a generic test file: a pragma target replaces the one around it
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vbmi")
#else
#pragma GCC target("avx512vbmi")
#endif

// Entry points (declared here and in qmatmul.cpp: qmatmul_arch.h lists the older variants).
bool qmm_amx_available();                             // AMX-BF16 + what avx512_bf16 needs
void qmm_amx_run(const mm_problem& p, int n_threads);  // all six types; x -> bf16

namespace {

// ---- tiles ----------------------------------------------------------------------------------
using amx::tile_config;  // arch/amx_tiles.h

#if !defined(V4_QMM_AMX_EMULATE)
#define V4Q_TILE_CONFIG(cfg) __asm__ volatile("ldtilecfg %0" ::"m"(cfg))
#define V4Q_TILE_LOAD(tmm, base, stride) \
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #tmm ::"r"(base), "r"(long(stride)) : "memory")
#define V4Q_TILE_STORE(tmm, base, stride) \
  __asm__ volatile("tilestored %%tmm" #tmm ", (%0,%1,1)" ::"r"(base), "r"(long(stride)) : "memory")
#define V4Q_TILE_ZERO(tmm) __asm__ volatile("tilezero %%tmm" #tmm ::)
#define V4Q_TILE_DP(c, a, b) __asm__ volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)
#define V4Q_TILE_RELEASE() _tile_release()
#else
// Test build (tests/cpu/test_qmatmul_amx.cpp includes this file with V4_QMM_AMX_EMULATE, so that
// the decoders, blocking, scales and partial tiles are checked on hosts without AMX): the eight
// tiles in C++, with the faults of the hardware (a bad configuration, a tile used unconfigured
// or with mismatched shapes) turned into aborts.
namespace emu {
struct tile_state {
  uint8_t rows[8] = {};
  uint16_t colsb[8] = {};
  alignas(64) uint8_t data[8][16][64] = {};
};
inline tile_state& tiles() {
  static thread_local tile_state s;
  return s;
}
inline void check(bool ok) {
  if (!ok) __builtin_trap();
}
template <class C>
inline void config(const C& cfg) {
  check(cfg.palette == 1 && cfg.start_row == 0);
  for (uint8_t r : cfg.reserved) check(r == 0);
  for (int t = 0; t < 16; ++t) {
    check(cfg.colsb[t] <= 64 && cfg.rows[t] <= 16 && (cfg.rows[t] == 0) == (cfg.colsb[t] == 0));
    check(t < 8 || cfg.rows[t] == 0);
    if (t < 8) {
      tiles().rows[t] = cfg.rows[t];
      tiles().colsb[t] = cfg.colsb[t];
    }
  }
}
inline void load(int t, const void* base, long stride) {
  tile_state& s = tiles();
  check(s.rows[t] > 0);
  for (int r = 0; r < 16; ++r)
    for (int b = 0; b < 64; ++b)
      s.data[t][r][b] = r < s.rows[t] && b < s.colsb[t] ? static_cast<const uint8_t*>(base)[r * stride + b] : 0;
}
inline void store(int t, void* base, long stride) {
  tile_state& s = tiles();
  check(s.rows[t] > 0);
  for (int r = 0; r < s.rows[t]; ++r)
    for (int b = 0; b < s.colsb[t]; ++b) static_cast<uint8_t*>(base)[r * stride + b] = s.data[t][r][b];
}
inline void zero(int t) {
  check(tiles().rows[t] > 0);
  for (auto& r : tiles().data[t])
    for (uint8_t& b : r) b = 0;
}
inline float bf16_at(const uint8_t* p) {
  uint32_t bits = uint32_t(p[0] | (p[1] << 8)) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// C[m][n] += sum_p A[m][2p] B[p][2n] + A[m][2p+1] B[p][2n+1] (f32; exact bf16 products).
inline void dp(int c, int a, int b) {
  tile_state& s = tiles();
  check(s.rows[c] == s.rows[a] && s.colsb[c] == s.colsb[b] && s.colsb[a] == 4 * s.rows[b] && s.rows[c] > 0);
  for (int m = 0; m < s.rows[c]; ++m)
    for (int n = 0; n < s.colsb[c] / 4; ++n) {
      float acc;
      std::memcpy(&acc, &s.data[c][m][4 * n], 4);
      for (int q = 0; q < s.colsb[a] / 4; ++q) {
        acc += bf16_at(&s.data[a][m][4 * q]) * bf16_at(&s.data[b][q][4 * n]);
        acc += bf16_at(&s.data[a][m][4 * q + 2]) * bf16_at(&s.data[b][q][4 * n + 2]);
      }
      std::memcpy(&s.data[c][m][4 * n], &acc, 4);
    }
}
}  // namespace emu
#define V4Q_TILE_CONFIG(cfg) emu::config(cfg)
#define V4Q_TILE_LOAD(tmm, base, stride) emu::load(tmm, base, long(stride))
#define V4Q_TILE_STORE(tmm, base, stride) emu::store(tmm, base, long(stride))
#define V4Q_TILE_ZERO(tmm) emu::zero(tmm)
#define V4Q_TILE_DP(c, a, b) emu::dp(c, a, b)
#define V4Q_TILE_RELEASE() ((void)0)
#endif

// rows0: rows of the first 16-row half of the m block (1..16); rows1: of the second (0..16).
void load_config(int rows0, int rows1) {
  const tile_config cfg = amx::block_config(rows0, rows1);
  V4Q_TILE_CONFIG(cfg);
}

// ---- tables ---------------------------------------------------------------------------------
constexpr uint16_t e2m1_bf16(int c) {
  constexpr uint16_t mag[8] = {0x0000, 0x3f00, 0x3f80, 0x3fc0, 0x4000, 0x4040, 0x4080, 0x40c0};
  return uint16_t(mag[c & 7] | ((c & 8) ? 0x8000 : 0));
}
// e4m3 magnitude code t (0..127) as bf16 bits (normals 2^(e-7) (1 + m/8); subnormals m 2^-9
// normalized; 0x7f NaN).
constexpr uint16_t e4m3_bf16(int t) {
  const int e = (t >> 3) & 15, m = t & 7;
  if (e == 15 && m == 7) return 0x7fc0;
  if (e > 0) return uint16_t(((e + 120) << 7) | (m << 4));
  if (m == 0) return 0;
  const int hb = m >= 4 ? 2 : m >= 2 ? 1 : 0;
  return uint16_t(((hb - 9 + 127) << 7) | ((m - (1 << hb)) << (7 - hb)));
}
constexpr uint16_t uint_bf16(int v) {  // 0 <= v <= 15
  if (v == 0) return 0;
  const int hb = v >= 8 ? 3 : v >= 4 ? 2 : v >= 2 ? 1 : 0;
  return uint16_t(((127 + hb) << 7) | ((v - (1 << hb)) << (7 - hb)));
}
struct tables {
  alignas(64) uint16_t e2m1[32];  // index bits 0-3 (the 16 values twice)
  alignas(64) uint16_t u4[32];    // 0 .. 15, twice
  alignas(64) uint8_t e4m3_lo[128];
  alignas(64) uint8_t e4m3_hi[128];
  alignas(64) uint8_t inter[64];  // byte 2i <- lo[i], 2i+1 <- hi[i] (vpermt2b across two vectors)
};
constexpr tables make_tables() {
  tables t{};
  for (int i = 0; i < 32; ++i) {
    t.e2m1[i] = e2m1_bf16(i);
    t.u4[i] = uint_bf16(i & 15);
    t.inter[2 * i] = uint8_t(i);
    t.inter[2 * i + 1] = uint8_t(64 + i);
  }
  for (int i = 0; i < 128; ++i) {
    t.e4m3_lo[i] = uint8_t(e4m3_bf16(i) & 0xff);
    t.e4m3_hi[i] = uint8_t(e4m3_bf16(i) >> 8);
  }
  return t;
}
constexpr tables kTab = make_tables();

// 32 int16 lanes (each |v| <= 256) as 32 bf16, exact.
inline __m512i i16_to_bf16(__m512i v) {
  const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(v)));
  const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(v, 1)));
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
}

// Adds e - 127 to the exponent of the words selected by `ok` (nonzero finite values).
inline __m512i scale_words(__m512i v, __mmask32 ok, uint8_t e) {
  return _mm512_mask_add_epi16(v, ok, v, _mm512_set1_epi16(int16_t((int(e) - 127) << 7)));
}

// ---- decoders -------------------------------------------------------------------------------
// decode32(p, row, m, k): elements [k, k + 32) of weight row m (k a multiple of 32, k < K) as 32
// bf16 in natural order, zeros past K. kGroup: 0 when the scales are folded into the words, else
// the elements per f32 scale group; group_scales() writes the scale of every group in [k0, k1).
// kMinSub: 0, or the elements per min sub-block; mins() writes dmin * m_j for every j of the row.

struct mxfp4_dec {
  static constexpr int kGroup = 0, kMinSub = 0;
  static constexpr bool kFolded = true, kFp8 = false;
  __m512i t;
  mxfp4_dec() : t(_mm512_load_si512(kTab.e2m1)) {}  // user-provided: built with this file's target
  inline __m512i decode32(const mm_problem& p, const uint8_t* row, int64_t m, int64_t k) const {
    const int64_t n = min64(32, p.K - k);
    const __m128i b = _mm_maskz_loadu_epi8(first_lanes((n + 1) / 2), row + k / 2);
    const __m512i d = _mm512_cvtepu8_epi32(b);                       // dword j = byte j
    const __m512i w = _mm512_or_si512(d, _mm512_slli_epi32(d, 12));  // word 2j: low nibble, 2j+1: high
    const __m512i v = _mm512_permutexvar_epi16(w, t);
    const __mmask32 nz = _mm512_test_epi16_mask(v, _mm512_set1_epi16(0x7fff));
    return scale_words(v, nz, scale_row(p, m)[k / 32]);
  }
  static void group_scales(const uint8_t*, int64_t, int64_t, float*) {}
  static void mins(const uint8_t*, int64_t, float*) {}
};

struct fp8_dec {
  static constexpr int kGroup = 0, kMinSub = 0;
  static constexpr bool kFolded = true, kFp8 = true;
  __m512i lo0, lo1, hi0, hi1, inter;
  fp8_dec()
      : lo0(_mm512_load_si512(kTab.e4m3_lo)),
        lo1(_mm512_load_si512(kTab.e4m3_lo + 64)),
        hi0(_mm512_load_si512(kTab.e4m3_hi)),
        hi1(_mm512_load_si512(kTab.e4m3_hi + 64)),
        inter(_mm512_load_si512(kTab.inter)) {}
  inline __m512i decode32(const mm_problem& p, const uint8_t* row, int64_t m, int64_t k) const {
    const __m512i c = _mm512_castsi256_si512(_mm256_maskz_loadu_epi8(first_lanes32(p.K - k), row + k));
    const __m512i lo = _mm512_permutex2var_epi8(lo0, c, lo1);
    __m512i hi = _mm512_permutex2var_epi8(hi0, c, hi1);
    hi = _mm512_ternarylogic_epi32(hi, c, _mm512_set1_epi8(char(0x80)), 0xF8);  // hi | (c & 0x80)
    const __m512i v = _mm512_permutex2var_epi8(lo, inter, hi);
    const __m512i mag = _mm512_and_si512(v, _mm512_set1_epi16(0x7fff));  // finite nonzero: 1 .. 0x7f7f
    const __mmask32 fin = _mm512_cmplt_epu16_mask(_mm512_sub_epi16(mag, _mm512_set1_epi16(1)), _mm512_set1_epi16(0x7f7f));
    return scale_words(v, fin, scale_row(p, m)[k / p.sb_k]);
  }
  static void group_scales(const uint8_t*, int64_t, int64_t, float*) {}
  static void mins(const uint8_t*, int64_t, float*) {}
};

struct q8_0_dec {
  static constexpr int kGroup = 32, kMinSub = 0;
  static constexpr bool kFolded = false, kFp8 = false;
  inline __m512i decode32(const mm_problem&, const uint8_t* row, int64_t, int64_t k) const {
    const auto* b = reinterpret_cast<const quant::block_q8_0*>(row) + k / 32;
    const __m512i q = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qs)));
    return i16_to_bf16(q);
  }
  static void group_scales(const uint8_t* row, int64_t k0, int64_t k1, float* gs) {
    const auto* b = reinterpret_cast<const quant::block_q8_0*>(row);
    for (int64_t k = k0; k < k1; k += 32) gs[(k - k0) / 32] = _cvtsh_ss(b[k / 32].d);
  }
  static void mins(const uint8_t*, int64_t, float*) {}
};

struct q4_k_dec {
  static constexpr int kGroup = 32, kMinSub = 32;
  static constexpr bool kFolded = false, kFp8 = false;
  __m512i t;
  q4_k_dec() : t(_mm512_load_si512(kTab.u4)) {}
  inline __m512i decode32(const mm_problem&, const uint8_t* row, int64_t, int64_t k) const {
    const auto* b = reinterpret_cast<const quant::block_q4_k*>(row) + k / 256;
    const int j = int(k % 256 / 32);
    __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qs + 32 * (j / 2))));
    if (j & 1) w = _mm512_srli_epi16(w, 4);
    return _mm512_permutexvar_epi16(w, t);  // the table repeats: index bit 4 does not matter
  }
  static void group_scales(const uint8_t* row, int64_t k0, int64_t k1, float* gs) {
    const auto* b = reinterpret_cast<const quant::block_q4_k*>(row);
    for (int64_t s = k0 / 256; s * 256 < k1; ++s) {
      uint8_t v[16];
      unpack6(b[s].scales, v);
      const float d = _cvtsh_ss(b[s].d);
      for (int j = 0; j < 8; ++j) {
        const int64_t k = s * 256 + 32 * j;
        if (k >= k0 && k < k1) gs[(k - k0) / 32] = d * float(v[j]);  // exact: 11 x 6 bits
      }
    }
  }
  static void mins(const uint8_t* row, int64_t K, float* mf) {
    const auto* b = reinterpret_cast<const quant::block_q4_k*>(row);
    for (int64_t s = 0; s < K / 256; ++s) {
      uint8_t v[16];
      unpack6(b[s].scales, v);
      const float dmin = _cvtsh_ss(b[s].dmin);
      for (int j = 0; j < 8; ++j) mf[s * 8 + j] = dmin * float(v[8 + j]);
    }
  }
};

// q3_k / q2_k: element 128c + 32t + l is bits 2t..2t+1 of qs[32c + l] (quant/kquant.h); 32
// elements from k are sub-blocks j0 = k % 256 / 16 and j0 + 1 (words 0-15 and 16-31).
inline __m512i plane2(const uint8_t* qs, int64_t k, int* c, int* t) {
  *c = int(k % 256 / 128);
  *t = int(k % 128 / 32);
  const __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * *c)));
  return _mm512_and_si512(_mm512_srl_epi16(w, _mm_cvtsi32_si128(2 * *t)), _mm512_set1_epi16(3));
}
inline __m512i two_scales(int s0, int s1) {
  return _mm512_mask_blend_epi16(__mmask32(0xFFFF0000u), _mm512_set1_epi16(int16_t(s0)), _mm512_set1_epi16(int16_t(s1)));
}

struct q3_k_dec {
  static constexpr int kGroup = 256, kMinSub = 0;
  static constexpr bool kFolded = false, kFp8 = false;
  inline __m512i decode32(const mm_problem&, const uint8_t* row, int64_t, int64_t k) const {
    const auto* b = reinterpret_cast<const quant::block_q3_k*>(row) + k / 256;
    int c, t;
    const __m512i lo = plane2(b->qs, k, &c, &t);
    // bit 2 of element 32 (4c + t) + l is bit 4c + t of hmask[l]
    const __m512i h = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->hmask)));
    const __m512i hb = _mm512_and_si512(_mm512_srl_epi16(h, _mm_cvtsi32_si128(4 * c + t)), _mm512_set1_epi16(1));
    const __m512i q = _mm512_sub_epi16(_mm512_or_si512(lo, _mm512_slli_epi16(hb, 2)), _mm512_set1_epi16(4));
    uint8_t v[16];
    unpack6(b->scales, v);
    const int j0 = int(k % 256 / 16);
    return i16_to_bf16(_mm512_mullo_epi16(q, two_scales(v[j0] - 32, v[j0 + 1] - 32)));  // |.| <= 128
  }
  static void group_scales(const uint8_t* row, int64_t k0, int64_t k1, float* gs) {
    const auto* b = reinterpret_cast<const quant::block_q3_k*>(row);
    for (int64_t k = k0; k < k1; k += 256) gs[(k - k0) / 256] = _cvtsh_ss(b[k / 256].d);
  }
  static void mins(const uint8_t*, int64_t, float*) {}
};

struct q2_k_dec {
  static constexpr int kGroup = 256, kMinSub = 16;
  static constexpr bool kFolded = false, kFp8 = false;
  inline __m512i decode32(const mm_problem&, const uint8_t* row, int64_t, int64_t k) const {
    const auto* b = reinterpret_cast<const quant::block_q2_k*>(row) + k / 256;
    int c, t;
    const __m512i q = plane2(b->qs, k, &c, &t);
    const int j0 = int(k % 256 / 16);
    return i16_to_bf16(_mm512_mullo_epi16(q, two_scales(b->scales[j0] & 15, b->scales[j0 + 1] & 15)));  // <= 45
  }
  static void group_scales(const uint8_t* row, int64_t k0, int64_t k1, float* gs) {
    const auto* b = reinterpret_cast<const quant::block_q2_k*>(row);
    for (int64_t k = k0; k < k1; k += 256) gs[(k - k0) / 256] = _cvtsh_ss(b[k / 256].d);
  }
  static void mins(const uint8_t* row, int64_t K, float* mf) {
    const auto* b = reinterpret_cast<const quant::block_q2_k*>(row);
    for (int64_t s = 0; s < K / 256; ++s) {
      const float dmin = _cvtsh_ss(b[s].dmin);
      for (int j = 0; j < 16; ++j) mf[s * 16 + j] = dmin * float(b[s].scales[j] >> 4);
    }
  }
};

// Scale codes whose scaled weights are all normal bf16 (or 0): mxfp4 0.5 .. 6 times 2^(e-127)
// needs e in [2, 252]; e4m3 2^-9 .. 448 needs e in [10, 246]. (The NaN code 0xFF is outside.)
template <class D>
bool scales_safe(const mm_problem& p) {
  const uint8_t lo = D::kFp8 ? 10 : 2, hi = D::kFp8 ? 246 : 252;
  const int64_t rows = div_up(p.M, p.sb_m), cols = div_up(p.K, p.sb_k);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* c = p.scales + size_t(r) * p.s_stride;
    for (int64_t j = 0; j < cols; ++j)
      if (c[j] < lo || c[j] > hi) return false;
  }
  return true;
}

// ---- x --------------------------------------------------------------------------------------
// xp: panels of 16 columns of x, each [K32/2][16][2] bf16 (0 past N and K): a B tile is 1 KiB
// of contiguous memory. Rows [nb, ne) of the padded x, 16 at a time.
void pack_x_vnni(const mm_problem& p, uint32_t* xp, int64_t k32, int64_t nb, int64_t ne) {
  for (int64_t n0 = nb; n0 < ne; n0 += 16) {
    uint32_t* panel = xp + (n0 / 16) * (k32 / 2) * 16;
    for (int64_t k = 0; k < k32; k += 32) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = n0 + i < p.N ? load_x_bf16x32(xrow(p, n0 + i), k, p.K) : _mm512_setzero_ps();
      transpose16(r);
      for (int t = 0; t < 16; ++t) _mm512_store_ps(panel + (k / 2 + t) * 16, r[t]);
    }
  }
}

// xs[j * np + n] = f32 sum of the rounded x[n] over min sub-block j (sub = 16 or 32), rows [nb, ne)
// of the padded x (0 past N).
void x_sums(const mm_problem& p, int sub, float* xs, int64_t np, int64_t nb, int64_t ne) {
  const int64_t cols = p.K / sub;
  for (int64_t n = nb; n < ne; ++n) {
    if (n >= p.N) {
      for (int64_t j = 0; j < cols; ++j) xs[j * np + n] = 0.0f;
      continue;
    }
    for (int64_t k = 0; k < p.K; k += 32) {
      const __m512i v = _mm512_castps_si512(load_x_bf16x32(xrow(p, n), k, p.K));
      const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u))));
      const __m512 pr = _mm512_add_ps(even, odd);  // lane l: elements 2l, 2l + 1
      if (sub == 32) {
        xs[(k / 32) * np + n] = _mm512_reduce_add_ps(pr);
      } else {
        xs[(k / 16) * np + n] = _mm512_mask_reduce_add_ps(0x00ff, pr);
        xs[(k / 16 + 1) * np + n] = _mm512_mask_reduce_add_ps(0xff00, pr);
      }
    }
  }
}

// ---- the kernel -----------------------------------------------------------------------------
constexpr int64_t kKC = 256;  // k per block: the decoded A block (32 x 256 bf16, 16 KiB) stays in L1

struct job {
  const mm_problem* p;
  const uint32_t* xp;  // packed x
  const float* xs;     // x sums per min sub-block ([cols][np]), or null
  int64_t k32, panel, np;
};

struct thread_bufs {
  uint16_t* ap;  // decoded A block: per 32 k, A0 (16 rows x 32 bf16) then A1
  float* gs;     // group scales of the A block, [32 rows][kKC / 32]
  float* cbuf;   // per 32 columns: 4 C tiles (parked raw sums, or f32 accumulators)
  float* tmp;    // 4 C tiles of one group (rescaled types)
  float* mf;     // mins of the 32 rows, [32][K / kMinSub]
};

// Decodes rows [m0, m0 + mv) of w over [k0, k1) into bf.ap (and their group scales into bf.gs).
template <class D>
void pack_a(const job& jb, const D& dec, int64_t m0, int64_t mv, int64_t k0, int64_t k1, const thread_bufs& bf) {
  const mm_problem& p = *jb.p;
  for (int64_t i = 0; i < mv; ++i) {
    const uint8_t* row = reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, m0 + i));
    for (int64_t k = k0; k < k1; k += 32)
      _mm512_store_si512(bf.ap + (k - k0) / 32 * 1024 + i * 32, dec.decode32(p, row, m0 + i, k));
    if constexpr (D::kGroup > 0) D::group_scales(row, k0, k1, bf.gs + i * (kKC / 32));
  }
}

// Writes C tile `src` (rows m of y^T, 16 columns n) into y: rows [n0, n0 + nv), columns [m0, m0 + mv).
inline void store_transposed(const float* src, const mm_problem& p, int64_t n0, int64_t nv, int64_t m0, int64_t mv) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = i < mv ? _mm512_load_ps(src + 16 * i) : _mm512_setzero_ps();
  transpose16(r);
  const __mmask16 mask = first_lanes(mv);
  for (int64_t j = 0; j < nv; ++j) _mm512_mask_storeu_ps(yrow(p, n0 + j) + m0, mask, r[j]);
}

// One block of 32 weight rows (rows0 + rows1) against columns [n_begin, n_end) of the padded x,
// all of K.
template <class D, bool kTwoHalves>
void block(const job& jb, const D& dec, int64_t m0, int rows0, int rows1, int64_t n_begin, int64_t n_end,
           const thread_bufs& bf) {
  const mm_problem& p = *jb.p;
  const int ntiles = kTwoHalves ? 4 : 2;
  for (int64_t kc0 = 0; kc0 < jb.k32; kc0 += kKC) {
    const int64_t kc1 = min64(jb.k32, kc0 + kKC);
    pack_a(jb, dec, m0, rows0 + rows1, kc0, kc1, bf);
    for (int64_t n0 = n_begin; n0 < n_end; n0 += 32) {
      float* c = bf.cbuf + (n0 - n_begin) / 32 * 1024;
      const uint32_t* b0 = jb.xp + (n0 / 16) * jb.panel;
      // The tdpbf16ps steps over [ka, kb): 4 (or 2) tiles of this 32 x 32 block.
      auto steps = [&](int64_t ka, int64_t kb) {
        for (int64_t k = ka; k < kb; k += 32) {
          const uint16_t* a = bf.ap + (k - kc0) / 32 * 1024;
          const uint32_t* b = b0 + (k / 2) * 16;
          V4Q_TILE_LOAD(4, a, 64);
          V4Q_TILE_LOAD(6, b, 64);
          V4Q_TILE_LOAD(7, b + jb.panel, 64);
          V4Q_TILE_DP(0, 4, 6);
          V4Q_TILE_DP(1, 4, 7);
          if (kTwoHalves) {
            V4Q_TILE_LOAD(5, a + 512, 64);
            V4Q_TILE_DP(2, 5, 6);
            V4Q_TILE_DP(3, 5, 7);
          }
        }
      };
      if constexpr (D::kGroup == 0) {  // scales folded: sums of all K in the tiles, parked in c
        if (kc0 == 0) {
          V4Q_TILE_ZERO(0);
          V4Q_TILE_ZERO(1);
          if (kTwoHalves) {
            V4Q_TILE_ZERO(2);
            V4Q_TILE_ZERO(3);
          }
        } else {
          V4Q_TILE_LOAD(0, c, 64);
          V4Q_TILE_LOAD(1, c + 256, 64);
          if (kTwoHalves) {
            V4Q_TILE_LOAD(2, c + 512, 64);
            V4Q_TILE_LOAD(3, c + 768, 64);
          }
        }
        steps(kc0, kc1);
        V4Q_TILE_STORE(0, c, 64);
        V4Q_TILE_STORE(1, c + 256, 64);
        if (kTwoHalves) {
          V4Q_TILE_STORE(2, c + 512, 64);
          V4Q_TILE_STORE(3, c + 768, 64);
        }
      } else {  // per group: partial sums in zeroed tiles, times the row's group scale, into c
        for (int64_t g0 = kc0; g0 < kc1; g0 += D::kGroup) {
          V4Q_TILE_ZERO(0);
          V4Q_TILE_ZERO(1);
          if (kTwoHalves) {
            V4Q_TILE_ZERO(2);
            V4Q_TILE_ZERO(3);
          }
          steps(g0, g0 + D::kGroup);
          V4Q_TILE_STORE(0, bf.tmp, 64);
          V4Q_TILE_STORE(1, bf.tmp + 256, 64);
          if (kTwoHalves) {
            V4Q_TILE_STORE(2, bf.tmp + 512, 64);
            V4Q_TILE_STORE(3, bf.tmp + 768, 64);
          }
          const bool first = g0 == 0;
          const float* gcol = bf.gs + (g0 - kc0) / D::kGroup;
          for (int t = 0; t < ntiles; ++t) {
            const int rows = t < 2 ? rows0 : rows1, r0 = (t >> 1) * 16;
            for (int i = 0; i < rows; ++i) {
              const __m512 s = _mm512_set1_ps(gcol[(r0 + i) * (kKC / 32)]);
              const __m512 part = _mm512_load_ps(bf.tmp + t * 256 + i * 16);
              float* ci = c + t * 256 + i * 16;
              _mm512_store_ps(ci, first ? _mm512_mul_ps(part, s) : _mm512_fmadd_ps(part, s, _mm512_load_ps(ci)));
            }
          }
        }
      }
    }
  }
  for (int64_t n0 = n_begin; n0 < n_end; n0 += 32) {
    float* c = bf.cbuf + (n0 - n_begin) / 32 * 1024;
    for (int t = 0; t < ntiles; ++t) {
      const int rows = t < 2 ? rows0 : rows1, r0 = (t >> 1) * 16;
      const int64_t nn0 = n0 + (t & 1) * 16;
      if constexpr (D::kMinSub > 0) {  // - sum_j dmin m_j X_j
        const int64_t cols = p.K / D::kMinSub;
        for (int i = 0; i < rows; ++i) {
          const float* mr = bf.mf + (r0 + i) * cols;
          __m512 a = _mm512_load_ps(c + t * 256 + i * 16);
          for (int64_t j = 0; j < cols; ++j)
            a = _mm512_fnmadd_ps(_mm512_set1_ps(mr[j]), _mm512_loadu_ps(jb.xs + j * jb.np + nn0), a);
          _mm512_store_ps(c + t * 256 + i * 16, a);
        }
      }
      const int64_t nv = min64(16, p.N - nn0);
      if (nv > 0) store_transposed(c + t * 256, p, nn0, nv, m0 + r0, rows);
    }
  }
}

template <class D>
bool run_type(const mm_problem& p, int n_threads) {
  if constexpr (D::kFolded) {
    if (!scales_safe<D>(p)) return false;
  }
  const int64_t k32 = round_up(p.K, 32), np = round_up(p.N, 32);
  // Columns of x per pass over the weights: their packed part (nblk x K32 bf16) stays within
  // ~1.5 MiB of L2 while every 32-row block of w is swept across it.
  const int64_t nblk = max64(32, min64(np, (int64_t(3) << 19) / (k32 * 2) / 32 * 32));
  const int64_t min_cols = D::kMinSub > 0 ? p.K / D::kMinSub : 0;
  const int nth_max = useful_threads(p, n_threads);
  // One allocation by the calling thread: packed x, x sums, then per thread its buffers.
  const size_t xp_bytes = size_t(round_up(k32 / 2 * np * 4, 64));
  const size_t xs_bytes = size_t(round_up(min_cols * np * 4, 64));
  const size_t ap_bytes = size_t(kKC / 32) * 2048, gs_bytes = 32 * (kKC / 32) * 4, tmp_bytes = 4096;
  const size_t cb_bytes = size_t(nblk / 32) * 4096, mf_bytes = size_t(round_up(32 * min_cols * 4, 64));
  const size_t per_thread = ap_bytes + gs_bytes + tmp_bytes + cb_bytes + mf_bytes;
  char* scratch = static_cast<char*>(mm_scratch(kShared, xp_bytes + xs_bytes + size_t(nth_max) * per_thread));
  if (!scratch) return false;
  job jb;
  jb.p = &p;
  jb.xp = reinterpret_cast<const uint32_t*>(scratch);
  jb.xs = D::kMinSub > 0 ? reinterpret_cast<const float*>(scratch + xp_bytes) : nullptr;
  jb.k32 = k32;
  jb.panel = k32 / 2 * 16;
  jb.np = np;
  parallel(nth_max, [&](int tid, int nth) {
    {
      int64_t b, e;
      split(np, 16, tid, nth, &b, &e);
      pack_x_vnni(p, reinterpret_cast<uint32_t*>(scratch), k32, b, e);
      if (D::kMinSub > 0) x_sums(p, D::kMinSub, reinterpret_cast<float*>(scratch + xp_bytes), np, b, e);
    }
#pragma omp barrier
    int tm = 1, tn = 1;
    grid(div_up(p.M, 32), np / 32, nth, &tm, &tn);
    int64_t mb, me, nb, ne;
    split(p.M, 32, tid % tm, tm, &mb, &me);
    split(np, 32, tid / tm, tn, &nb, &ne);
    if (mb >= me || nb >= ne) return;

    char* mine = scratch + xp_bytes + xs_bytes + size_t(tid) * per_thread;
    thread_bufs bf;
    bf.ap = reinterpret_cast<uint16_t*>(mine);
    bf.gs = reinterpret_cast<float*>(mine + ap_bytes);
    bf.tmp = reinterpret_cast<float*>(mine + ap_bytes + gs_bytes);
    bf.cbuf = reinterpret_cast<float*>(mine + ap_bytes + gs_bytes + tmp_bytes);
    bf.mf = reinterpret_cast<float*>(mine + ap_bytes + gs_bytes + tmp_bytes + cb_bytes);
    const D dec;
    int cfg0 = -1, cfg1 = -1;
    for (int64_t nb0 = nb; nb0 < ne; nb0 += nblk) {
      const int64_t nb1 = min64(ne, nb0 + nblk);
      for (int64_t m0 = mb; m0 < me; m0 += 32) {
        const int64_t mv = min64(32, me - m0);
        const int rows0 = int(min64(16, mv)), rows1 = int(mv - rows0);
        if (rows0 != cfg0 || rows1 != cfg1) {
          load_config(rows0, rows1);
          cfg0 = rows0;
          cfg1 = rows1;
        }
        if constexpr (D::kMinSub > 0)
          for (int64_t i = 0; i < mv; ++i)
            D::mins(reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, m0 + i)), p.K, bf.mf + i * min_cols);
        if (rows1 > 0)
          block<D, true>(jb, dec, m0, rows0, rows1, nb0, nb1, bf);
        else
          block<D, false>(jb, dec, m0, rows0, rows1, nb0, nb1, bf);
      }
    }
    V4Q_TILE_RELEASE();
  });
  return true;
}

}  // namespace

bool qmm_amx_available() {
#if defined(V4_QMM_AMX_EMULATE)
  static const bool ok = qmm_avx512bf16_available();  // the tiles are emulated
#else
  static const bool ok = host_features().amx_bf16 && qmm_avx512bf16_available();
#endif
  return ok;
}

void qmm_amx_run(const mm_problem& p, int n_threads) {
  if (handle_empty(p)) return;
  bool ok = false;
  switch (p.wtype) {
    case dtype::mxfp4: ok = run_type<mxfp4_dec>(p, n_threads); break;
    case dtype::fp8_e4m3: ok = run_type<fp8_dec>(p, n_threads); break;
    case dtype::q8_0: ok = run_type<q8_0_dec>(p, n_threads); break;
    case dtype::q4_k: ok = run_type<q4_k_dec>(p, n_threads); break;
    case dtype::q3_k: ok = run_type<q3_k_dec>(p, n_threads); break;
    case dtype::q2_k: ok = run_type<q2_k_dec>(p, n_threads); break;
    default: break;
  }
  // Scales outside the folding range, or no scratch memory: the avx512_bf16 kernel computes the
  // same function (same x rounding, same exact products).
  if (!ok) qmm_avx512bf16_run(p, n_threads);
}

#pragma GCC pop_options

#if defined(V4_QMM_AMX_EMULATE)
}  // namespace amx_emulated
#endif
}  // namespace v4::cpu::qmm_arch

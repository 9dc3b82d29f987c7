// avx512_vnni: int8 dot-product kernels (vpdpbusd) for q8_0, q4_k, q3_k and q2_k weights.
// Built with AVX-512 F/BW/VL/DQ (the _avx512 suffix, so x86 only); VNNI is switched on with
// #pragma GCC target below and qmm_vnni_available() checks it (cpuid) first.
//
// x: every row is quantized once per call to int8 per block of 32 along K (q8-style):
//   d = amax / 127 (f32 division), q = rint(x / d) (f32 division, round to nearest even), clamped
//   to [-127, 127]; amax = 0 gives d = 0 and q = 0. A block holding a NaN or an infinity gets d =
//   NaN: every output of that x row is NaN (the weights of every row meet that block).
// The kernel then computes sum_k w_k * (d_b q_k) with exact int32 dot products per block (or
// 16-element sub-block) and f32 block scales; the rounding contract (|x - d q| <= d/2 per element,
// relative to the block's largest |x|, not to |x_k|) is derived in qmatmul.cpp.
//
//  * dot-product path (decode: N < 9 for q8_0, N < 14 for the K-quants): each weight row's codes
//    are expanded to unsigned bytes in registers (q8_0 codes + 128, q3_k codes 0..7 before the
//    -4) and dotted with the int8 x by vpdpbusd; the code offset is taken out by starting the
//    int32 sum at -offset * (sum of the 4 x bytes of the lane), precomputed per call. Each int32
//    lane holds 4 elements of one 32-block of x and one sub-block of the weights: one convert and
//    one FMA by (weight sub-block scale * x block scale), spread over the lanes by one vpermps,
//    per 64 elements; with one x row the x scales are folded into the super-block's 16 weight
//    scales before the spread (one multiply per super-block instead of one per vector). Mins
//    (q4_k, q2_k): - dmin m_j * (x scale * sum of the x codes of sub-block j), one FMA per
//    super-block on vectors of 16 sub-blocks. q2_k/q3_k with one x row (the decode that is
//    compute-bound on one core; dot_reduce): the 4 vectors' int32 sums are first reduced to one
//    exact int32 per 16-element sub-block (a 4x4 transpose-add), kept in a "sigma" lane order,
//    then one convert and one FMA per super-block by (d sc_j dx_j); q3_k: two weight rows per
//    pass sharing the x loads, the code offset taken out as one add of -4 (sum of the x codes)
//    per sub-block, the 3-bit codes by two bit-blends and five GF2P8AFFINEQB for the 4 vectors
//    (GFNI; shift, vptestmb and masked add without it), the 6-bit scales unpacked and the f16
//    super-scale converted in general-purpose registers (pdep; the broadcast by a load); q2_k:
//    one row per pass, 2-bit plane 0 by a mask and planes 1-3 by one GF2P8AFFINEQB each (shift +
//    mask without GFNI, and with several x rows), the f16 (d, dmin) converted to f32 a few
//    super-blocks ahead (8 at a time) and broadcast from memory by the multiplies. On Zen 4
//    vpdpbusd, GF2P8AFFINEQB, vptestmb, vpmaddwd and the f32 multiplies share one pipe (one zmm
//    instruction of them per cycle), and every zmm instruction takes two of the four vector
//    pipes: that pipe and the zmm instruction count bound the loop (docs/KERNELS.md).
//    Structure of qmatmul_avx512.cpp's decode path: 16-row tiles handed out dynamically, x
//    kept in L1 by K segments, prefetcht2 of the weight stream a few row segments ahead in the
//    order they are read, the 16 rows' sums reduced together.
//  * panel path (prefill, the other N): 16 weight rows decoded into a panel [k/4][16][4] of int8
//    values w' (q8_0 codes, q4_k codes, q2_k sc*q, q3_k -(sc-32)(q-4): the 16-element sub-block
//    scales of q2_k/q3_k folded in, exact and inside int8), with per 32-block and row: -128 * sum
//    w' (int32), the f32 scale (d, d*sc, d, -d) and the mins. x rows as bytes q + 128 (unsigned)
//    broadcast 4 at a time: 16 rows x 8 x rows of int32 sums per block in 8 zmm, then per block
//    and x row one convert, one multiply (row scales * x scale) and one FMA.
//
// Threads never split K: results do not depend on the thread count.
#include "backends/cpu/arch/kquant_avx512.h"
#include "backends/cpu/arch/qmatmul_arch.h"  // also <immintrin.h>

#include <initializer_list>
#include <utility>

namespace v4::cpu::qmm_arch {

#pragma GCC push_options
#pragma GCC target("avx512vnni,gfni,bmi2")

namespace {

// ---- x quantization -------------------------------------------------------------------------
// One x row (K a multiple of 32) -> xq[K] int8 in natural order, dx[K / 32] block scales.
void quantize_x_row(const float* x, int64_t K, int8_t* xq, float* dx) {
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  for (int64_t k = 0; k < K; k += 32) {
    const __m512 a = _mm512_loadu_ps(x + k), b = _mm512_loadu_ps(x + k + 16);
    const __m512 aa = _mm512_abs_ps(a), ab = _mm512_abs_ps(b);
    // NaN or infinity: not (|x| < inf)
    const __mmask16 bad = _mm512_cmp_ps_mask(aa, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(ab, inf, _CMP_NLT_UQ);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(aa, ab));
    __m512i q0 = _mm512_setzero_si512(), q1 = _mm512_setzero_si512();
    float d = 0.0f;
    if (bad) {
      d = __builtin_nanf("");
    } else if (amax > 0.0f) {
      d = amax / 127.0f;
      const __m512 dv = _mm512_set1_ps(d);
      const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
      q0 = _mm512_min_epi32(hi, _mm512_max_epi32(lo, _mm512_cvtps_epi32(_mm512_div_ps(a, dv))));
      q1 = _mm512_min_epi32(hi, _mm512_max_epi32(lo, _mm512_cvtps_epi32(_mm512_div_ps(b, dv))));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + k), _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + k + 16), _mm512_cvtsepi32_epi8(q1));
    dx[k / 32] = d;
  }
}

// The weight stream's software prefetch (as qmatmul_avx512.cpp: towards L2).
inline void prefetch_w(const char* a) { _mm_prefetch(a, _MM_HINT_T2); }

// Lane i of the result = the sum of the 16 lanes of a[i].
inline __m512 hsum16(const __m512* a) {
  __m512 b[8], c[4];
  for (int i = 0; i < 8; ++i)
    b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    c[i] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0x44), _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], 0xEE));
  const __m512 e0 = _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xDD));
  const __m512 e1 = _mm512_add_ps(_mm512_shuffle_f32x4(c[2], c[3], 0x88), _mm512_shuffle_f32x4(c[2], c[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(e0, e1, 0x88), _mm512_shuffle_f32x4(e0, e1, 0xDD));
}

// The 16 six-bit fields of a K-quant scales[12] as f32 lanes (arch/kquant_avx512.h). (Doing the
// byte work in xmm/ymm and widening once measured the same.)
inline __m512 unpack6_ps(const uint8_t* in) { return _mm512_cvtepi32_ps(unpack6_epi32(in)); }

// Bits 2t, 2t + 1 of every byte of w moved to bits 0, 1 (others 0): a shift and a mask, or with
// GFNI one GF(2) affine map (q2_k decode, one x row, 15.0 -> 15.9 GB/s from cache). The affine
// map runs on the Zen 4 pipe of vpdpbusd and the FMAs, the busy one with several x rows (q2_k
// N = 8: slower than shift + mask).
template <bool kGfni>
inline __m512i plane2(__m512i w, int t) {
  if constexpr (kGfni) {
    // row of output bit i = byte 7 - i of the matrix
    const uint64_t mat = (uint64_t(1u << (2 * t)) << 56) | (uint64_t(2u << (2 * t)) << 48);
    return _mm512_gf2p8affine_epi64_epi8(w, _mm512_set1_epi64(int64_t(mat)), 0);
  } else {
    return _mm512_and_si512(_mm512_srli_epi16(w, 2 * t), _mm512_set1_epi8(3));
  }
}
// A GF(2) affine matrix (the qword of _mm512_gf2p8affine_epi64_epi8) that moves input bit in[i]
// of every byte to output bit out[i] (the other output bits 0): output bit o is the parity of the
// input bits selected by byte 7 - o of the matrix.
constexpr uint64_t bit_moves(std::initializer_list<std::pair<int, int>> out_in) {
  uint64_t m = 0;
  for (const auto& [o, i] : out_in) m |= uint64_t(1u << i) << (8 * (7 - o));
  return m;
}
// GFNI (Ice Lake, Zen 4 and later; not Cascade Lake, which has VNNI)
bool has_gfni() {
  static const bool ok = __builtin_cpu_supports("gfni");
  return ok;
}

// An f16 (d, dmin) pair read as one 32-bit word, as f32 broadcasts (fewer vector instructions
// than set1(_cvtsh_ss), which inserts the half into a zeroed register).
inline __m128 f16_pair(const void* p) {
  uint32_t u;
  __builtin_memcpy(&u, p, 4);
  return _mm_cvtph_ps(_mm_cvtsi32_si128(int(u)));
}
inline __m512 f16_bcast(const uint16_t* p) {
  return _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(*p)));
}
// The same from the general-purpose registers: the f32 bits of a normal f16 built by integer
// ops, stored and broadcast by a load (the broadcast from memory runs on a load port; the vector
// pipes bound the one-row decode: q3_k 18.6 -> 19.0 GB/s from cache, 1 thread). Zero,
// subnormal, infinite and NaN halves (rare: a branch the predictor learns) take the F16C
// conversion, out of line (inline, the compiler computed it before the branch every time).
[[gnu::noinline, gnu::cold]] __m512 f16_bcast_rare(const uint16_t* p) { return f16_bcast(p); }
inline __m512 f16_bcast_gpr(const uint16_t* p) {
  const uint32_t h = *p;
  if (((h & 0x7C00u) - 0x0400u) >= 0x7800u) [[unlikely]]  // exponent 0 or 31
    return f16_bcast_rare(p);
  const uint32_t bits = ((h & 0x8000u) << 16) | (((h & 0x7FFFu) << 13) + (112u << 23));
  __m512 r;
  asm("vbroadcastss %1, %0" : "=v"(r) : "m"(bits));  // (a memory operand: see above)
  return r;
}

// The 16 six-bit fields of a K-quant scales[12] minus 32, as int8 in natural order, built in
// general-purpose registers (their ALUs are idle in these kernels; the vector ports are the
// bottleneck; q3_k decode 14.0 -> 17.6 GB/s from cache): low nibbles are bytes 0-7
// (fields 0-7) and their high nibbles (8-15), and the high 2 bits of field i are bits 2i, 2i + 1
// of bytes 8-11 read as one 32-bit word.
inline __m128i scales6_minus32(const uint8_t* in) {
  uint64_t lo;
  uint32_t hi;
  __builtin_memcpy(&lo, in, 8);
  __builtin_memcpy(&hi, in + 8, 4);
  const uint64_t m4 = 0x0F0F0F0F0F0F0F0Full, m2 = 0x3030303030303030ull;
  const uint64_t a = (lo & m4) | _pdep_u64(hi & 0xFFFF, m2);
  const uint64_t c = ((lo >> 4) & m4) | _pdep_u64(hi >> 16, m2);
  return _mm_sub_epi8(_mm_set_epi64x(int64_t(c), int64_t(a)), _mm_set1_epi8(32));
}

// q2_k / q3_k (16-element sub-blocks) keep their per-sub-block values (weight scales, mins, x
// scales, x sums) in "sigma" lane order: lane L holds sub-block sub_of_lane(L), which is the order
// the 4 vectors' int32 dot products come out in after the 4x4 transpose-add of dot_part (int32
// lane group g = L / 4 of vector t = L % 4 covers sub-block 2t + (g & 1) + 8 (g / 2)).
constexpr int sub_of_lane(int L) { return 2 * (L % 4) + (L / 4) % 2 + 8 * (L / 8); }
constexpr int lane_of_sub(int j) { return 4 * (j % 2 + 2 * (j / 8)) + (j % 8) / 2; }
// 16 bytes in natural sub-block order -> sigma order.
inline __m128i to_sigma(__m128i natural) {
  return _mm_shuffle_epi8(natural, _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15));
}
static_assert(sub_of_lane(1) == 2 && sub_of_lane(4) == 1 && sub_of_lane(9) == 10 && lane_of_sub(sub_of_lane(13)) == 13,
              "sigma lane order");

// ---- weight decoders (dot-product path) -----------------------------------------------------
// A decoder turns a chunk of kChunk elements [k, k + kChunk) of a row into kVecs vectors of 64
// unsigned codes (value = code - kOff). Byte i of vector v is element run(v, i / 32) + i % 32 of
// the chunk: two runs of 32 consecutive elements, each inside one 32-block of x, so int32 lane l
// of vector v (bytes 4l .. 4l+3) lies in one x block and one weight sub-block of kSub elements.
// scales() gives the chunk's weight scales, one f32 per sub-block in lanes 0 .. (kChunk / kSub) - 1
// ("natural" lanes; q4_k: the mins * dmin in lanes 8-15), times x's scale per sub-block when FOLD
// (one x row: saves a multiply per vector), and the mins * dmin per sub-block (mn, natural lanes;
// q4_k: in sv's lanes 8-15, which the x sums record pairs with 0 in lanes 0-7).
struct q8_0_dec {
  static constexpr int kChunk = 64, kVecs = 1, kSub = 32, kOff = 128;
  static constexpr bool kHasMin = false;
  static constexpr size_t kBlock = sizeof(quant::block_q8_0);
  static constexpr int64_t kWBytes = 2 * kBlock;  // weight bytes per chunk
  static constexpr int run(int, int h) { return 32 * h; }
  static int64_t bytes(int64_t k) { return int64_t(uint64_t(k) / 32 * kBlock); }
  inline void decode(const uint8_t* blk, int64_t k, int64_t K, __m512i* v) const {
    const auto* b = reinterpret_cast<const quant::block_q8_0*>(blk);
    // q8_0 with K an odd number of blocks: the last chunk's second block is absent (its x is 0)
    const __m256i hi = K - k > 32 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[1].qs)) : _mm256_setzero_si256();
    const __m512i c = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs))), hi, 1);
    v[0] = _mm512_xor_si512(c, _mm512_set1_epi8(char(0x80)));  // + 128 (mod 256): unsigned
  }
  // Lanes 0-7 d of block 0, 8-15 d of block 1 (already the spread of the one vector).
  inline __m512 scales(const uint8_t* blk, int64_t k, int64_t K, __m512* mn) const {
    const auto* b = reinterpret_cast<const quant::block_q8_0*>(blk);
    const __m128i d0 = _mm_set1_epi16(short(b[0].d)), d1 = K - k > 32 ? _mm_set1_epi16(short(b[1].d)) : _mm_setzero_si128();
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(d0), d1, 1));
  }
};

// q4_k: a super-block per chunk; 64 code bytes per half: low nibbles are elements 0-31 and 64-95
// of the half, high nibbles 32-63 and 96-127 (quant/kquant.h layout).
struct q4_k_dec {
  static constexpr int kChunk = 256, kVecs = 4, kSub = 32, kOff = 0;
  static constexpr bool kHasMin = true;
  static constexpr size_t kBlock = sizeof(quant::block_q4_k);
  static constexpr int64_t kWBytes = kBlock;
  static constexpr int run(int v, int h) { return 128 * (v / 2) + 64 * h + 32 * (v % 2); }
  static int64_t bytes(int64_t k) { return int64_t(uint64_t(k) / 256 * kBlock + 16); }
  inline void decode(const uint8_t* blk, int64_t k, int64_t, __m512i* v) const {
    const auto* b = reinterpret_cast<const quant::block_q4_k*>(blk);
    const __m512i w0 = _mm512_loadu_si512(b->qs), w1 = _mm512_loadu_si512(b->qs + 64);
    const __m512i m = _mm512_set1_epi8(15);
    v[0] = _mm512_and_si512(w0, m);
    v[1] = _mm512_and_si512(_mm512_srli_epi16(w0, 4), m);
    v[2] = _mm512_and_si512(w1, m);
    v[3] = _mm512_and_si512(_mm512_srli_epi16(w1, 4), m);
  }
  inline __m512 scales(const uint8_t* blk, int64_t k, int64_t, __m512*) const {  // lanes 0-7 d sc, 8-15 dmin m
    const auto* b = reinterpret_cast<const quant::block_q4_k*>(blk);
    const __m512 dd = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(b->d)), _mm256_set1_ps(_cvtsh_ss(b->dmin)), 1);
    return _mm512_mul_ps(unpack6_ps(b->scales), dd);
  }
};

// q2_k, q3_k: a super-block per chunk: 64 bytes of 2-bit planes, vector t = bits 2t..2t+1
// = elements 32t + l (bytes 0-31) and 128 + 32t + l (bytes 32-63); q3_k's bit 2 of element 32T + l
// is bit T of hmask[l]. 16-element sub-blocks.
template <bool kGfni>
struct q2_k_dec {
  static constexpr int kChunk = 256, kVecs = 4, kSub = 16, kOff = 0;
  static constexpr bool kHasMin = true;
  static constexpr bool kPairs = false;  // dot_reduce one row at a time (see decode_tile)
  static constexpr bool kSuperPre = true;  // dot_reduce converts (d, dmin) ahead (super_scales)
  static constexpr size_t kBlock = sizeof(quant::block_q2_k);
  static constexpr int64_t kWBytes = kBlock;
  static constexpr int run(int v, int h) { return 128 * h + 32 * v; }
  static int64_t bytes(int64_t k) { return int64_t(uint64_t(k) / 256 * kBlock + 20); }
  // Several x rows: shift + mask (the multiply pipe is the busy one there: M = K = 4096, N = 8,
  // 1 thread from cache 537 -> 526 us, the 19:52 state 513-534).
  inline void decode(const uint8_t* blk, int64_t k, int64_t, __m512i* v) const {
    const __m512i w = _mm512_loadu_si512(reinterpret_cast<const quant::block_q2_k*>(blk)->qs);
    for (int t = 0; t < 4; ++t) v[t] = plane2<false>(w, t);
  }
  // One x row (dot_reduce): GF2P8AFFINEQB where there is GFNI, but plane 0 by a mask alone (off
  // the multiply pipe; within the noise in a stand-alone copy of the loop: docs/KERNELS.md).
  inline void decode_one(const uint8_t* blk, __m512i* v) const {
    const __m512i w = _mm512_loadu_si512(reinterpret_cast<const quant::block_q2_k*>(blk)->qs);
    v[0] = _mm512_and_si512(w, _mm512_set1_epi8(3));
    for (int t = 1; t < 4; ++t) v[t] = plane2<kGfni>(w, t);
  }
  inline __m512 scales(const uint8_t* blk, int64_t k, int64_t, __m512* mn) const {
    const auto* b = reinterpret_cast<const quant::block_q2_k*>(blk);
    const __m512i sc = _mm512_cvtepu8_epi32(to_sigma(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b->scales))));
    const __m512 dd = _mm512_castps128_ps512(f16_pair(&b->d));  // lanes 0, 1: d, dmin
    *mn = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(sc, 4)), _mm512_permutexvar_ps(_mm512_set1_epi32(1), dd));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(sc, _mm512_set1_epi32(15))), _mm512_broadcastss_ps(_mm512_castps512_ps128(dd)));
  }
  // One x row (dot_reduce): the same values, with (d, dmin) already converted to f32 (dd[0],
  // dd[1], by super_scales ahead of the loop) and broadcast from memory by the multiplies: no
  // vector shuffles for them in the loop (from cache, 1 thread: ~+10%, see dot_reduce).
  static void super_scales(const uint8_t* blk, float* dd) {
    _mm_storel_pi(reinterpret_cast<__m64*>(dd), f16_pair(&reinterpret_cast<const quant::block_q2_k*>(blk)->d));
  }
  inline __m512 scales_one(const uint8_t* blk, const float* dd, __m512* mn) const {
    const auto* b = reinterpret_cast<const quant::block_q2_k*>(blk);
    const __m512i sc = _mm512_cvtepu8_epi32(to_sigma(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b->scales))));
    *mn = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(sc, 4)), _mm512_set1_ps(dd[1]));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(sc, _mm512_set1_epi32(15))), _mm512_set1_ps(dd[0]));
  }
};
template <bool kGfni>
struct q3_k_dec {
  static constexpr int kChunk = 256, kVecs = 4, kSub = 16, kOff = 4;
  static constexpr bool kHasMin = false;
  static constexpr bool kPairs = true;  // dot_reduce two rows at a time (see decode_tile)
  static constexpr bool kSuperPre = false;
  static constexpr size_t kBlock = sizeof(quant::block_q3_k);
  static constexpr int64_t kWBytes = kBlock;
  static constexpr int run(int v, int h) { return 128 * h + 32 * v; }
  static int64_t bytes(int64_t k) { return int64_t(uint64_t(k) / 256 * kBlock + 14); }
  inline void decode(const uint8_t* blk, int64_t k, int64_t, __m512i* v) const {
    const auto* b = reinterpret_cast<const quant::block_q3_k*>(blk);
    const __m512i w = _mm512_loadu_si512(b->qs);
    const __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->hmask)));
    if constexpr (kGfni) {
      // 7 instructions instead of 12 (affine, vptestmb, masked add per vector): one affine map
      // (its matrix differs per 256-bit half) moves the hmask bits of vectors 0, 1 (bits t, or
      // 4 + t in the upper half) to bits 4, 5 and those of vectors 2, 3 to bits 0, 1; two
      // bit-blends make c = [planes 0, 1 | their hmask bits] and d = [hmask bits of 2, 3 | planes
      // 2, 3]; then one affine per vector gathers its 3 bits (in bits 6, 7 of c and 2, 3 of d:
      // the other pair's bits, which the matrix ignores).
      constexpr uint64_t h_lo = bit_moves({{4, 0}, {5, 1}, {0, 2}, {1, 3}}), h_hi = bit_moves({{4, 4}, {5, 5}, {0, 6}, {1, 7}});
      constexpr uint64_t g0 = bit_moves({{0, 0}, {1, 1}, {2, 4}}), g1 = bit_moves({{0, 2}, {1, 3}, {2, 5}});
      constexpr uint64_t g2 = bit_moves({{0, 4}, {1, 5}, {2, 0}}), g3 = bit_moves({{0, 6}, {1, 7}, {2, 1}});
      const __m512i hsel = _mm512_inserti64x4(_mm512_set1_epi64(int64_t(h_lo)), _mm256_set1_epi64x(int64_t(h_hi)), 1);
      const __m512i hh = _mm512_gf2p8affine_epi64_epi8(h, hsel, 0);
      const __m512i lo4 = _mm512_set1_epi8(0x0F);
      const __m512i c = _mm512_ternarylogic_epi32(w, hh, lo4, 0xE4);  // (w & lo4) | (hh & ~lo4)
      const __m512i d = _mm512_ternarylogic_epi32(w, hh, lo4, 0xD8);  // (hh & lo4) | (w & ~lo4)
      v[0] = _mm512_gf2p8affine_epi64_epi8(c, _mm512_set1_epi64(int64_t(g0)), 0);
      v[1] = _mm512_gf2p8affine_epi64_epi8(c, _mm512_set1_epi64(int64_t(g1)), 0);
      v[2] = _mm512_gf2p8affine_epi64_epi8(d, _mm512_set1_epi64(int64_t(g2)), 0);
      v[3] = _mm512_gf2p8affine_epi64_epi8(d, _mm512_set1_epi64(int64_t(g3)), 0);
      return;
    }
    const __m512i four = _mm512_set1_epi8(4);
    for (int t = 0; t < 4; ++t) {
      // bit t of hmask for bytes 0-31, bit 4 + t for bytes 32-63
      const __m512i bit = _mm512_inserti64x4(_mm512_set1_epi8(char(1 << t)), _mm256_set1_epi8(char(16 << t)), 1);
      const __m512i lo = plane2<kGfni>(w, t);
      v[t] = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(h, bit), lo, four);
    }
  }
  inline void decode_one(const uint8_t* blk, __m512i* v) const { decode(blk, 0, 0, v); }
  static void super_scales(const uint8_t*, float*) {}  // (its d goes through f16_bcast_gpr)
  inline __m512 scales_one(const uint8_t* blk, const float*, __m512* mn) const { return scales(blk, 0, 0, mn); }
  inline __m512 scales(const uint8_t* blk, int64_t k, int64_t, __m512*) const {
    const auto* b = reinterpret_cast<const quant::block_q3_k*>(blk);
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(to_sigma(scales6_minus32(b->scales)))), f16_bcast_gpr(&b->d));
  }
};

// ---- dot-product path -----------------------------------------------------------------------
// x layout per row and chunk, one record: per vector v 64 bytes of x codes (the decoder's order),
// 16 f32 x block scales spread like the int32 lanes (lanes 0-7: run 0's block, 8-15: run 1's)
// and, for decoders with an offset, 16 int32 -kOff * (sum of the lane's 4 x codes); then for the
// K-quants the x scale per sub-block in natural lanes (q4_k: 1 in lanes 8-15, for the mins) and,
// with mins, dx * (sum of the codes) per sub-block (q4_k: in lanes 8-15, 0 in 0-7).
template <class D>
constexpr int64_t vec_bytes() {
  return D::kOff ? 192 : 128;
}
template <class D>
constexpr bool has_sub() {
  return D::kChunk == 256;
}
// q2_k / q3_k: one x row goes through dot_reduce (int32 sums reduced per sub-block).
template <class D>
constexpr bool reduces() {
  return has_sub<D>() && D::kSub == 16 && D::kVecs == 4;
}
// q3_k: dot_reduce takes the code offset out once per sub-block, after the reduction: the record
// holds -kOff * (sum of the sub-block's x codes) as int32 in sigma order (in the slot of the x
// sums of the decoders with mins).
template <class D>
constexpr bool has_corr() {
  return reduces<D>() && D::kOff != 0;
}
template <class D>
constexpr int64_t chunk_bytes() {
  return D::kVecs * vec_bytes<D>() + (has_sub<D>() ? 64 : 0) + (D::kHasMin || has_corr<D>() ? 64 : 0);
}
// x bytes per chunk a pass over nn x rows reads (one x row with folded scales skips the spread
// x scales; dot_reduce also the per-lane offsets).
template <class D>
int64_t x_bytes_per_chunk(int64_t nn) {
  const int64_t folded = D::kVecs * (D::kOff && !reduces<D>() ? 128 : 64) + 64 + (D::kHasMin || has_corr<D>() ? 64 : 0);
  return nn == 1 && has_sub<D>() ? folded : chunk_bytes<D>();
}

constexpr int kTile = 16;               // weight rows summed and stored together
constexpr int64_t kMaxC = 8;            // x rows per pass over a weight row
constexpr int64_t kNBlock = 16;         // x rows per pass over a tile
constexpr int64_t kXL1Bytes = 16384;    // x bytes a single pass keeps in L1
constexpr int64_t kChunkBytes = 262144;  // weight bytes per chunk of rows a thread takes at a time
constexpr int64_t kPrefetchBytes = 16384;  // weight prefetch distance, whole rows (N > 1)
// ... with one x row, in the order read (2 threads, q3_k N = 1, K = 16384: 4-8 KiB 23-24 GB/s,
// 16 KiB 22-23, 32 KiB 19).
constexpr int64_t kPrefetchBytes1 = 8192;

struct plan {
  int64_t xs = 0;  // bytes between x rows
  int64_t pf = 0;  // weight prefetch distance with more than one x row (whole rows)
};

// Quantizes the x rows and lays them out for decoder D.
template <class D>
void prepare_x(const mm_problem& p, const plan& pl, char* xr, int8_t* tmp, float* dxt) {
  for (int64_t n = 0; n < p.N; ++n) {
    quantize_x_row(xrow(p, n), p.K, tmp, dxt);
    for (int64_t k = p.K; k < round_up(p.K, 64); ++k) tmp[k] = 0;  // q8_0: an absent last block
    dxt[p.K / 32] = 0.0f;
    char* dst = xr + n * pl.xs;
    for (int64_t k = 0; k < p.K; k += D::kChunk) {
      char* rec = dst + k / D::kChunk * chunk_bytes<D>();
      for (int v = 0; v < D::kVecs; ++v) {
        char* r = rec + v * vec_bytes<D>();
        const int64_t e0 = k + D::run(v, 0), e1 = k + D::run(v, 1);
        const __m512i xv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tmp + e0))),
                                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tmp + e1)), 1);
        _mm512_store_si512(r, xv);
        _mm512_store_ps(r + 64, _mm512_insertf32x8(_mm512_set1_ps(dxt[e0 / 32]), _mm256_set1_ps(dxt[e1 / 32]), 1));
        if (D::kOff)
          _mm512_store_si512(r + 128, _mm512_sub_epi32(_mm512_setzero_si512(),
                                                       _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(char(D::kOff)), xv)));
      }
      if constexpr (has_sub<D>()) {
        alignas(64) float dsub[16], xsum[16];
        alignas(64) int32_t corr[16];
        for (int L = 0; L < 16; ++L) {
          const int j = D::kSub == 16 ? sub_of_lane(L) : L;  // lane L holds sub-block j
          const bool sub = j < D::kChunk / D::kSub;  // q4_k: lanes 8-15 pair with the mins
          dsub[L] = sub ? dxt[(k + j * D::kSub) / 32] : 1.0f;
          int s = 0;
          if (sub)
            for (int i = 0; i < D::kSub; ++i) s += tmp[k + j * D::kSub + i];
          else
            for (int i = 0; i < D::kSub; ++i) s += tmp[k + (j - 8) * D::kSub + i];
          const float xs = dxt[(k + (sub ? j : j - 8) * D::kSub) / 32] * float(s);
          xsum[L] = D::kSub == 32 ? (sub ? 0.0f : xs) : xs;
          corr[L] = -D::kOff * s;
        }
        char* e = rec + D::kVecs * vec_bytes<D>();
        _mm512_store_ps(e, _mm512_load_ps(dsub));
        if (D::kHasMin) _mm512_store_ps(e + 64, _mm512_load_ps(xsum));
        if (has_corr<D>()) _mm512_store_si512(e + 64, _mm512_load_si512(corr));
      }
    }
  }
}

// Spread index of vector v: lane l -> the chunk's sub-block of its 4 elements.
template <class D>
inline __m512i spread_index(int v) {
  alignas(64) int32_t idx[16];
  for (int l = 0; l < 16; ++l) {
    const int j = (D::run(v, l / 8) + (l % 8) * 4) / D::kSub;
    idx[l] = D::kSub == 16 ? lane_of_sub(j) : j;
  }
  return _mm512_load_si512(idx);
}

// One x row, q2_k / q3_k: acc[r] (+)= row r . x over [k0, k1) for R weight rows read together
// (they share the x loads; from cache, 1 thread, K = 4096: q3_k 17.6 -> 18.6 GB/s with the
// cheaper 3-bit decode; 4 rows measured slower, 17.9; q2_k: the same from cache, and from DRAM
// below one row at a time in 3 of 4 interleaved runs, so it stays at one). The 4 vectors' int32 sums are added per
// 16-element sub-block (exact) before the convert: 1 convert + 1 FMA by (d sc_j dx_j) per
// super-block instead of 4 + 4 and 4 spreads of the scales (from cache q3_k 17.3 -> 17.6, q2_k
// 16.2 -> 16.6 GB/s), the per-sub-block values kept in that "sigma" lane order. q2_k's (d, dmin)
// come from a small f32 buffer filled ahead (kSuperPre; no vpermps / vbroadcastss per super-block
// in the loop; `v4 bench --hot`, 1 thread: 16.3 -> 17.9 GB/s; batches of 32 measured 17.0 and
// slower than before from DRAM; the same f32 values and operations, so the same results).
template <class D, int R>
inline void dot_reduce(const D& dec, const uint8_t* const* w, const int64_t* pf, const char* xr, int64_t k0, int64_t k1,
                       int64_t K, __m512* accm) {
  static_assert(reduces<D>(), "16-element sub-blocks, 4 vectors per chunk");
  constexpr int64_t kE = 4 * vec_bytes<D>();  // the chunk record's sub-block values
  __m512 acc[R], accmin[R];
  const uint8_t* blk[R];
  for (int r = 0; r < R; ++r) {
    acc[r] = accm[r];
    accmin[r] = _mm512_setzero_ps();
    blk[r] = w[r] + k0 / D::kChunk * D::kWBytes;
  }
  const char* rec = xr + k0 / D::kChunk * chunk_bytes<D>();
  // kSuperPre: the super-blocks' f16 (d, dmin) as f32 pairs, converted kPre super-blocks at a
  // time ahead of the loop over them (which broadcasts them from memory).
  constexpr int64_t kPre = 8;
  alignas(64) float dd[R][D::kSuperPre ? 2 * kPre : 1];
  int64_t i = kPre;  // the super-block's pair in dd
  for (int64_t k = k0; k < k1; k += D::kChunk, rec += chunk_bytes<D>(), ++i) {
    if constexpr (D::kSuperPre) {
      if (i == kPre) {
        const int64_t n = min64(kPre, (k1 - k) / D::kChunk);
        for (int r = 0; r < R; ++r)
          for (int64_t j = 0; j < n; ++j) D::super_scales(blk[r] + j * D::kWBytes, dd[r] + 2 * j);
        i = 0;
      }
    }
    __m512i x[4];
    for (int v = 0; v < 4; ++v) x[v] = _mm512_load_si512(rec + v * vec_bytes<D>());
    const __m512 dx = _mm512_load_ps(reinterpret_cast<const float*>(rec + kE));
    for (int r = 0; r < R; ++r) {
      const char* wb = reinterpret_cast<const char*>(blk[r]) + D::bytes(0) + pf[r];
      for (int64_t b = 0; b < D::kWBytes; b += 64) prefetch_w(wb + b);  // a few row segments ahead
      __m512i cv[4];
      dec.decode_one(blk[r], cv);
      __m512 mn = _mm512_setzero_ps();
      const __m512 sv = _mm512_mul_ps(dec.scales_one(blk[r], D::kSuperPre ? dd[r] + 2 * i : nullptr, &mn), dx);
      __m512i pr[4];
      for (int v = 0; v < 4; ++v) pr[v] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), cv[v], x[v]);
      // per 128-bit lane: [p0 0+2, p1 0+2, p0 1+3, p1 1+3], the same for p2, p3
      const __m512i a01 = _mm512_add_epi32(_mm512_unpacklo_epi32(pr[0], pr[1]), _mm512_unpackhi_epi32(pr[0], pr[1]));
      const __m512i a23 = _mm512_add_epi32(_mm512_unpacklo_epi32(pr[2], pr[3]), _mm512_unpackhi_epi32(pr[2], pr[3]));
      __m512i sum = _mm512_add_epi32(_mm512_unpacklo_epi64(a01, a23), _mm512_unpackhi_epi64(a01, a23));
      if constexpr (has_corr<D>()) sum = _mm512_add_epi32(sum, _mm512_load_si512(rec + kE + 64));  // - kOff sum x
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), sv, acc[r]);
      if constexpr (D::kHasMin) {  // - sum_j dmin m_j (dx sum of the codes of sub-block j)
        accmin[r] = _mm512_fnmadd_ps(mn, _mm512_load_ps(reinterpret_cast<const float*>(rec + kE + 64)), accmin[r]);
      }
      blk[r] += D::kWBytes;
    }
  }
  for (int r = 0; r < R; ++r) accm[r] = _mm512_add_ps(acc[r], accmin[r]);
}

// acc[c * kTile] (+)= row . x row c over [k0, k1) (multiples of the chunk).
template <class D, int C>
inline void dot_part(const D& dec, const uint8_t* w, int64_t pf, const char* xr, int64_t xs, int64_t k0, int64_t k1,
                     int64_t K, __m512* accm) {
  if constexpr (C == 1 && reduces<D>()) {
    dot_reduce<D, 1>(dec, &w, &pf, xr, k0, k1, K, accm);
    return;
  }
  constexpr int V = D::kVecs;
  constexpr bool kFold = C == 1 && has_sub<D>();  // x's scales folded into the weight scales
  // A accumulators per x row (vector v into acc[c][v % A]): with few x rows one chain of V
  // dependent FMAs per chunk would bound the speed by the FMA latency.
  constexpr int A = C == 1 ? V : C == 2 && V >= 2 ? 2 : 1;
  __m512 acc[C][A];
  for (int c = 0; c < C; ++c) {
    acc[c][0] = accm[c * kTile];
    for (int a = 1; a < A; ++a) acc[c][a] = _mm512_setzero_ps();
  }
  __m512i sidx[V];
  for (int v = 0; v < V; ++v) sidx[v] = spread_index<D>(v);
  // (pointers stepped per chunk: the index arithmetic measured as a visible share of the
  // instructions of the short K-quant loops)
  const uint8_t* blk = w + k0 / D::kChunk * D::kWBytes;
  const char* rec = xr + k0 / D::kChunk * chunk_bytes<D>();
  for (int64_t k = k0; k < k1; k += D::kChunk, blk += D::kWBytes, rec += chunk_bytes<D>()) {
    const char* wb = reinterpret_cast<const char*>(blk) + D::bytes(0) + pf;
    for (int64_t b = 0; b < D::kWBytes; b += 64) prefetch_w(wb + b);  // the chunk's weight bytes, a few rows ahead
    __m512i cv[V];
    dec.decode(blk, k, K, cv);
    __m512 mn = _mm512_setzero_ps();
    __m512 sv = dec.scales(blk, k, K, &mn);
    const __m512 sv_raw = sv;
    if (kFold) sv = _mm512_mul_ps(sv, _mm512_load_ps(reinterpret_cast<const float*>(rec + V * vec_bytes<D>())));
    __m512 s[V];
    for (int v = 0; v < V; ++v) s[v] = has_sub<D>() ? _mm512_permutexvar_ps(sidx[v], sv) : sv;
    for (int c = 0; c < C; ++c) {
      const char* rc = rec + c * xs;
      for (int v = 0; v < V; ++v) {
        const char* r = rc + v * vec_bytes<D>();
        const __m512i init = D::kOff ? _mm512_load_si512(r + 128) : _mm512_setzero_si512();
        const __m512 f = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, cv[v], _mm512_load_si512(r)));
        const __m512 sc = kFold ? s[v] : _mm512_mul_ps(s[v], _mm512_load_ps(reinterpret_cast<const float*>(r + 64)));
        acc[c][v % A] = _mm512_fmadd_ps(f, sc, acc[c][v % A]);
      }
      if constexpr (D::kHasMin) {  // - sum_j dmin m_j (dx sum of the codes of sub-block j)
        const __m512 xsum = _mm512_load_ps(reinterpret_cast<const float*>(rc + V * vec_bytes<D>() + 64));
        acc[c][0] = _mm512_fnmadd_ps(D::kSub == 32 ? sv_raw : mn, xsum, acc[c][0]);
      }
    }
  }
  for (int c = 0; c < C; ++c) {
    for (int a = 1; a < A; ++a) acc[c][0] = _mm512_add_ps(acc[c][0], acc[c][a]);
    accm[c * kTile] = acc[c][0];
  }
}

// Rows [m0, m0 + rows) (rows <= kTile) against x rows [n0, n1) (<= kNBlock): K in segments
// (x of a single pass kept in L1; with two passes, the row segment stays in L1 between them);
// the outputs summed 16 rows at a time.
template <class D>
void decode_tile(const mm_problem& p, const plan& pl, const D& dec, const char* xr, int64_t m0, int64_t rows, int64_t n0,
                 int64_t n1) {
  const int64_t nn = n1 - n0;
  alignas(64) __m512 acc[kNBlock * kTile];
  for (int64_t i = 0; i < nn * kTile; ++i) acc[i] = _mm512_setzero_ps();
  const int64_t unit = 256;  // whole chunks of every decoder
  // (segments of about equal length: a short last one measured slower)
  const int64_t kseg_max = nn <= kMaxC ? max64(unit, kXL1Bytes * D::kChunk / x_bytes_per_chunk<D>(nn) / nn / unit * unit) : 2048;
  const int64_t kseg = round_up(div_up(p.K, div_up(p.K, kseg_max)), unit);
  // The weights are read row segment by row segment (segment-major within the tile). One x
  // row: the prefetch runs dv row segments (>= kPrefetchBytes1) ahead in that order, into the
  // next segments and the next tile (assumed kTile rows further: this thread's next tile, or
  // another's, whose lines are then ready for it). More x rows: whole rows (>= kPrefetchBytes)
  // ahead, the same segment (measured faster there for q2_k and q4_k: N = 8 ~215 against
  // ~190 and ~205 against ~170 GFLOP/s; q3_k the other way, 150 against 168).
  const int64_t stride = int64_t(p.w_stride), nseg = div_up(p.K, kseg);
  const int64_t seg_bytes = max64(1, D::bytes(min64(kseg, p.K)) - D::bytes(0));
  const int64_t dv = max64(1, div_up(kPrefetchBytes1, seg_bytes));
  read_ahead ahead(rows, nseg, dv);
  const auto seg_start = [&](int64_t j) { return D::bytes(j * kseg); };
  for (int64_t ks0 = 0, s = 0; ks0 < p.K; ks0 += kseg, ++s) {
    const int64_t ks1 = min64(p.K, ks0 + kseg);
    const auto prefetch_offset = [&](int64_t r) {  // (called once per row, in order)
      const int64_t pf = nn > 1 ? pl.pf : ahead.offset(r, s, kTile, stride, seg_start);
      ahead.next();
      return pf;
    };
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* w = reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, m0 + r));
      if constexpr (reduces<D>()) {
        if (D::kPairs && nn == 1 && r + 1 < rows) {  // two rows per pass
          const uint8_t* w2[2] = {w, reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, m0 + r + 1))};
          int64_t pf2[2];
          pf2[0] = prefetch_offset(r);
          pf2[1] = prefetch_offset(r + 1);
          dot_reduce<D, 2>(dec, w2, pf2, xr + n0 * pl.xs, ks0, ks1, p.K, acc + r);
          ++r;
          continue;
        }
      }
      const int64_t pf = prefetch_offset(r);
      for (int64_t n = 0; n < nn; n += kMaxC) {
        const char* x = xr + (n0 + n) * pl.xs;
        __m512* a = acc + n * kTile + r;
        switch (min64(kMaxC, nn - n)) {
          case 1: dot_part<D, 1>(dec, w, pf, x, pl.xs, ks0, ks1, p.K, a); break;
          case 2: dot_part<D, 2>(dec, w, pf, x, pl.xs, ks0, ks1, p.K, a); break;
          case 3: dot_part<D, 3>(dec, w, pf, x, pl.xs, ks0, ks1, p.K, a); break;
          case 4: dot_part<D, 4>(dec, w, pf, x, pl.xs, ks0, ks1, p.K, a); break;
          case 5: dot_part<D, 5>(dec, w, pf, x, pl.xs, ks0, ks1, p.K, a); break;
          case 6: dot_part<D, 6>(dec, w, pf, x, pl.xs, ks0, ks1, p.K, a); break;
          case 7: dot_part<D, 7>(dec, w, pf, x, pl.xs, ks0, ks1, p.K, a); break;
          default: dot_part<D, 8>(dec, w, pf, x, pl.xs, ks0, ks1, p.K, a); break;
        }
      }
    }
  }
  const __mmask16 mk = first_lanes(rows);
  for (int64_t n = 0; n < nn; ++n) _mm512_mask_storeu_ps(yrow(p, n0 + n) + m0, mk, hsum16(acc + n * kTile));
}

template <class D>
bool decode(const mm_problem& p, int n_threads) {
  plan pl;
  // not a multiple of 4 KiB apart (no L1 set aliasing between x rows)
  pl.xs = div_up(p.K, D::kChunk) * chunk_bytes<D>() + 64;
  pl.pf = int64_t(p.w_stride) * max64(1, div_up(kPrefetchBytes, max64(1, int64_t(p.w_stride))));
  const size_t xbytes = size_t(p.N * pl.xs);
  const size_t tmpbytes = size_t(round_up(p.K, 64)) + size_t(p.K / 32 + 16) * 4;
  char* shared = static_cast<char*>(mm_scratch(kShared, xbytes + tmpbytes));
  if (!shared) return false;
  char* xr = shared;
  int8_t* tmp = reinterpret_cast<int8_t*>(shared + xbytes);
  float* dxt = reinterpret_cast<float*>(shared + xbytes + size_t(round_up(p.K, 64)));
  prepare_x<D>(p, pl, xr, tmp, dxt);
  const int nth_use = useful_threads(p, n_threads);
  row_chunks chunks(p.M, p.w_stride, nth_use, kTile, kChunkBytes);
  parallel(nth_use, [&](int, int) {
    const D dec;
    for (int64_t m0, m1; chunks.take(&m0, &m1);) {
      for (int64_t m = m0; m < m1; m += kTile)
        for (int64_t n = 0; n < p.N; n += kNBlock)
          decode_tile<D>(p, pl, dec, xr, m, min64(kTile, m1 - m), n, min64(p.N, n + kNBlock));
    }
  });
  return true;
}

// ---- panel path (prefill) -------------------------------------------------------------------
// Panels from this many x rows on. Measured (Zen 4, M = K = 4096, 2 threads, interleaved, GFLOP/s
// dot-product path vs panels): q8_0 N = 8 167-175 vs 153-155, N = 10 124-127 vs 157-161, N = 12
// 119-122 vs 185-190; q4_k N = 12 158 vs 144-146, N = 16 158-162 vs 193-195; q2_k N = 12 168 vs
// 141-143; q3_k N = 16 130 vs 159-162. (Dot products beyond 8 x rows take a second pass per row.)
constexpr int64_t kPanelMinN_q8_0 = 9, kPanelMinN_kquant = 14;
constexpr int kPR = 16;          // weight rows per panel (zmm lanes)
constexpr int kPN = 8;           // x rows per micro tile
constexpr int64_t kPK = 1024;    // K block
constexpr int64_t kPNC = 384;    // x rows packed per block
// Panel record per 32-block: 8 vectors [16 rows][4 bytes] of w', then 16 int32 -128 * sum w',
// 16 f32 scales, kMins x 16 f32 mins.
template <int kMins>
constexpr int64_t prec_bytes() {
  return 512 + 64 + 64 + 64 * kMins;
}
// x tile record per 32-block: 8 groups [kPN rows][4 bytes] of codes + 128, kPN f32 block scales,
// kMins x kPN f32 sub-block sums (dx * sum of codes).
template <int kMins>
constexpr int64_t xrec_bytes() {
  return 256 + 32 + 32 * kMins;
}

// Per-row decoding of [k0, k0 + kc) to natural-order int8 w', per 32-block scale, mins.
struct q8_0_panel {
  static constexpr int kMins = 0, kSub = 32;
  static void row(const uint8_t* row, int64_t k0, int64_t kc, int8_t* w, float* sc, float*) {
    const auto* b = reinterpret_cast<const quant::block_q8_0*>(row) + k0 / 32;
    for (int64_t j = 0; j < kc / 32; ++j) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(w + 32 * j), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[j].qs)));
      sc[j] = _cvtsh_ss(b[j].d);
    }
  }
};
struct q4_k_panel {
  static constexpr int kMins = 1, kSub = 32;
  static void row(const uint8_t* row, int64_t k0, int64_t kc, int8_t* w, float* sc, float* mn) {
    const auto* b = reinterpret_cast<const quant::block_q4_k*>(row) + k0 / 256;
    const __m256i m = _mm256_set1_epi8(15);
    for (int64_t s = 0; s < kc / 256; ++s) {
      uint8_t v[16];
      unpack6(b[s].scales, v);
      const float d = _cvtsh_ss(b[s].d), dmin = _cvtsh_ss(b[s].dmin);
      for (int j = 0; j < 8; ++j) {
        sc[8 * s + j] = d * float(v[j]);
        mn[8 * s + j] = dmin * float(v[8 + j]);
      }
      for (int c = 0; c < 4; ++c) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[s].qs + 32 * c));
        _mm256_store_si256(reinterpret_cast<__m256i*>(w + 256 * s + 64 * c), _mm256_and_si256(q, m));
        _mm256_store_si256(reinterpret_cast<__m256i*>(w + 256 * s + 64 * c + 32), _mm256_and_si256(_mm256_srli_epi16(q, 4), m));
      }
    }
  }
};
// q2_k: w' = sc * q (<= 45), scale d, two mins per 32-block; q3_k: w' = -(sc - 32)(q - 4) (in
// [-128, 124]), scale -d. Both by vpshufb on a per-sub-block table (one 16-byte lane per
// 16-element sub-block).
struct q2_k_panel {
  static constexpr int kMins = 2, kSub = 16;
  static void row(const uint8_t* row, int64_t k0, int64_t kc, int8_t* w, float* sc, float* mn) {
    const auto* b = reinterpret_cast<const quant::block_q2_k*>(row) + k0 / 256;
    for (int64_t s = 0; s < kc / 256; ++s) {
      const float d = _cvtsh_ss(b[s].d), dmin = _cvtsh_ss(b[s].dmin);
      alignas(32) int8_t tb[16][16] = {};
      for (int j = 0; j < 16; ++j) {
        const int scj = b[s].scales[j] & 15;
        for (int q = 0; q < 4; ++q) tb[j][q] = int8_t(scj * q);
        mn[16 * s + j] = dmin * float(b[s].scales[j] >> 4);
      }
      for (int j = 0; j < 8; ++j) sc[8 * s + j] = d;
      for (int c = 0; c < 2; ++c) {
        const __m256i qs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[s].qs + 32 * c));
        for (int t = 0; t < 4; ++t) {
          const int j = 8 * c + 2 * t;  // sub-blocks j, j + 1
          const __m256i tbl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tb[j]));
          const __m256i q = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * t), _mm256_set1_epi8(3));
          _mm256_store_si256(reinterpret_cast<__m256i*>(w + 256 * s + 128 * c + 32 * t), _mm256_shuffle_epi8(tbl, q));
        }
      }
    }
  }
};
struct q3_k_panel {
  static constexpr int kMins = 0, kSub = 16;
  static void row(const uint8_t* row, int64_t k0, int64_t kc, int8_t* w, float* sc, float*) {
    const auto* b = reinterpret_cast<const quant::block_q3_k*>(row) + k0 / 256;
    for (int64_t s = 0; s < kc / 256; ++s) {
      uint8_t v[16];
      unpack6(b[s].scales, v);
      alignas(32) int8_t tb[16][16] = {};
      for (int j = 0; j < 16; ++j)
        for (int q = 0; q < 8; ++q) tb[j][q] = int8_t(-(int(v[j]) - 32) * (q - 4));
      const float d = _cvtsh_ss(b[s].d);
      for (int j = 0; j < 8; ++j) sc[8 * s + j] = -d;
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[s].hmask));
      for (int c = 0; c < 2; ++c) {
        const __m256i qs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[s].qs + 32 * c));
        for (int t = 0; t < 4; ++t) {
          const int T = 4 * c + t, j = 2 * T;  // elements 32T + l: sub-blocks j, j + 1
          const __m256i tbl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tb[j]));
          const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * t), _mm256_set1_epi8(3));
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(h, T), _mm256_set1_epi8(1));
          const __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 2));
          _mm256_store_si256(reinterpret_cast<__m256i*>(w + 256 * s + 32 * T), _mm256_shuffle_epi8(tbl, q));
        }
      }
    }
  }
};

// The panel of rows [m0, m0 + mv) over [k0, k0 + kc) (rows past mv: zeros). tmp: kPR * kc bytes,
// sct / mnt: kPR * (kc / 16) floats each.
template <class PD>
void pack_w(const mm_problem& p, int64_t m0, int64_t mv, int64_t k0, int64_t kc, char* wp, int8_t* tmp, float* sct,
            float* mnt) {
  constexpr int NM = PD::kMins;
  const int64_t nb = kc / 32, mstride = kc / 16;
  for (int r = 0; r < kPR; ++r) {
    int8_t* w = tmp + r * kc;
    if (r < mv) {
      PD::row(reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, m0 + r)), k0, kc, w, sct + r * nb, mnt + r * mstride);
    } else {
      for (int64_t i = 0; i < kc; i += 32) _mm256_store_si256(reinterpret_cast<__m256i*>(w + i), _mm256_setzero_si256());
      for (int64_t j = 0; j < nb; ++j) sct[r * nb + j] = 0.0f;
      for (int64_t j = 0; j < mstride; ++j) mnt[r * mstride + j] = 0.0f;
    }
  }
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t b = 0; b < nb; b += 2) {  // two 32-blocks: 16 rows x 16 dwords, transposed
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(reinterpret_cast<const float*>(tmp + i * kc + 32 * b));
    transpose16(r);
    for (int h = 0; h < 2 && b + h < nb; ++h) {
      char* rec = wp + (b + h) * prec_bytes<NM>();
      __m512i sum = _mm512_setzero_si512();
      for (int g = 0; g < 8; ++g) {
        const __m512i v = _mm512_castps_si512(r[8 * h + g]);
        _mm512_store_si512(rec + 64 * g, v);
        sum = _mm512_dpbusd_epi32(sum, ones, v);
      }
      _mm512_store_si512(rec + 512, _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, 7)));
      alignas(64) float s[16];
      for (int i = 0; i < 16; ++i) s[i] = sct[i * nb + b + h];
      _mm512_store_ps(reinterpret_cast<float*>(rec + 576), _mm512_load_ps(s));
      for (int t = 0; t < NM; ++t) {
        const int64_t j = (b + h) * NM + t;  // sub-block (of kSub = 32 / NM elements)
        for (int i = 0; i < 16; ++i) s[i] = mnt[i * mstride + j];
        _mm512_store_ps(reinterpret_cast<float*>(rec + 640 + 64 * t), _mm512_load_ps(s));
      }
    }
  }
}

// The x tile of rows [n0, n0 + nv) (nv <= kPN; rows past nv: codes 0, scales 0) over [k0, k0 + kc),
// from the quantized rows (xq: K bytes per row at stride xqs, dx: K / 32 per row).
template <int NM>
void pack_x(int64_t n0, int64_t nv, int64_t k0, int64_t kc, const int8_t* xq, int64_t xqs, const float* dx,
            int64_t K, char* xp) {
  for (int64_t b = 0; b < kc / 32; ++b) {
    char* rec = xp + b * xrec_bytes<NM>();
    uint32_t* codes = reinterpret_cast<uint32_t*>(rec);
    float* dxr = reinterpret_cast<float*>(rec + 256);
    float* xs = reinterpret_cast<float*>(rec + 288);
    const int64_t k = k0 + 32 * b;
    for (int j = 0; j < kPN; ++j) {
      if (j >= nv) {
        for (int g = 0; g < 8; ++g) codes[g * kPN + j] = 0x80808080u;  // code 0
        dxr[j] = 0.0f;
        for (int t = 0; t < NM; ++t) xs[t * kPN + j] = 0.0f;
        continue;
      }
      const int8_t* q = xq + (n0 + j) * xqs + k;
      const float d = dx[(n0 + j) * (K / 32) + k / 32];
      for (int g = 0; g < 8; ++g) {
        uint32_t u;
        __builtin_memcpy(&u, q + 4 * g, 4);
        codes[g * kPN + j] = u ^ 0x80808080u;  // + 128 per byte
      }
      dxr[j] = d;
      for (int t = 0; t < NM; ++t) {
        int s = 0;
        for (int i = 0; i < 32 / NM; ++i) s += q[t * (32 / NM) + i];
        xs[t * kPN + j] = d * float(s);
      }
    }
  }
}

// y tile [kPN x rows][kPR weight rows] (+)= panel . x tile over nb 32-blocks.
template <int NM>
void micro(const char* wp, const char* xp, int64_t nb, float* y, size_t ys, int64_t mv, int64_t nv, bool add) {
  __m512 af[kPN];
  for (int j = 0; j < kPN; ++j) af[j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const char* W = wp + b * prec_bytes<NM>();
    const char* X = xp + b * xrec_bytes<NM>();
    const __m512i ci = _mm512_load_si512(W + 512);
    __m512i ai[kPN];
    for (int j = 0; j < kPN; ++j) ai[j] = ci;
    const int32_t* xc = reinterpret_cast<const int32_t*>(X);
    for (int g = 0; g < 8; ++g) {
      const __m512i w = _mm512_load_si512(W + 64 * g);
      for (int j = 0; j < kPN; ++j) ai[j] = _mm512_dpbusd_epi32(ai[j], _mm512_set1_epi32(xc[g * kPN + j]), w);
    }
    const __m512 sc = _mm512_load_ps(reinterpret_cast<const float*>(W + 576));
    const float* dx = reinterpret_cast<const float*>(X + 256);
    for (int j = 0; j < kPN; ++j)
      af[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ai[j]), _mm512_mul_ps(sc, _mm512_set1_ps(dx[j])), af[j]);
    for (int t = 0; t < NM; ++t) {
      const __m512 mn = _mm512_load_ps(reinterpret_cast<const float*>(W + 640 + 64 * t));
      const float* xs = reinterpret_cast<const float*>(X + 288 + 32 * t);
      for (int j = 0; j < kPN; ++j) af[j] = _mm512_fnmadd_ps(mn, _mm512_set1_ps(xs[j]), af[j]);
    }
  }
  const __mmask16 mk = first_lanes(mv);
  for (int j = 0; j < nv; ++j) {
    float* yr = reinterpret_cast<float*>(reinterpret_cast<char*>(y) + j * ys);
    __m512 a = af[j];
    if (add) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(mk, yr));
    _mm512_mask_storeu_ps(yr, mk, a);
  }
}

template <class PD>
bool prefill(const mm_problem& p, int n_threads) {
  constexpr int NM = PD::kMins;
  const int64_t K = p.K;
  // x quantized once (rows split over the threads, then a barrier).
  const int64_t xqs = round_up(K, 64) + 64;
  const size_t xq_bytes = size_t(p.N * xqs), dx_bytes = size_t(p.N * (K / 32)) * 4;
  char* shared = static_cast<char*>(mm_scratch(kShared, xq_bytes + dx_bytes));
  if (!shared) return false;
  int8_t* xq = reinterpret_cast<int8_t*>(shared);
  float* dx = reinterpret_cast<float*>(shared + xq_bytes);
  const int64_t kcb = min64(K, kPK);  // a multiple of 256 for the K-quants, of 32 for q8_0
  bool ok = true;
  const int nth_use = useful_threads(p, n_threads);
  parallel(nth_use, [&](int tid, int nth) {
    int64_t nq0, nq1;
    split(p.N, 1, tid, nth, &nq0, &nq1);
    for (int64_t n = nq0; n < nq1; ++n) quantize_x_row(xrow(p, n), K, xq + n * xqs, dx + n * (K / 32));
#pragma omp barrier
    int tm = 1, tn = 1;
    grid(div_up(p.M, kPR), div_up(p.N, kPN), nth, &tm, &tn);
    int64_t mb, me, nb_, ne;
    split(p.M, kPR, tid % tm, tm, &mb, &me);
    split(p.N, kPN, tid / tm, tn, &nb_, &ne);
    if (mb >= me || nb_ >= ne) return;
    const size_t wp_bytes = size_t(kcb / 32 * prec_bytes<NM>());
    const size_t xp_bytes = size_t(round_up(div_up(kPNC, kPN) * (kcb / 32) * xrec_bytes<NM>(), 64));
    // (+ 64: with an odd number of 32-blocks the last row's transpose load reads 32 bytes past)
    const size_t tmp_bytes = size_t(kPR * kcb + 64), st_bytes = size_t(kPR * (kcb / 16)) * 4;
    char* mem = static_cast<char*>(mm_scratch(kPrivate, wp_bytes + xp_bytes + tmp_bytes + 2 * st_bytes));
    if (!mem) {
#pragma omp atomic write
      ok = false;
      return;
    }
    char* wp = mem;
    char* xp = mem + wp_bytes;
    int8_t* tmp = reinterpret_cast<int8_t*>(mem + wp_bytes + xp_bytes);
    float* sct = reinterpret_cast<float*>(mem + wp_bytes + xp_bytes + tmp_bytes);
    float* mnt = reinterpret_cast<float*>(mem + wp_bytes + xp_bytes + tmp_bytes + st_bytes);
    for (int64_t n0 = nb_; n0 < ne; n0 += kPNC) {
      const int64_t nn = min64(kPNC, ne - n0);
      for (int64_t k0 = 0; k0 < K; k0 += kcb) {
        const int64_t kc = min64(kcb, K - k0), nblk = kc / 32;
        const int64_t xtile = nblk * xrec_bytes<NM>();
        for (int64_t j = 0; j < nn; j += kPN)
          pack_x<NM>(n0 + j, min64(kPN, nn - j), k0, kc, xq, xqs, dx, K, xp + (j / kPN) * xtile);
        for (int64_t m0 = mb; m0 < me; m0 += kPR) {
          const int64_t mv = min64(kPR, me - m0);
          pack_w<PD>(p, m0, mv, k0, kc, wp, tmp, sct, mnt);
          for (int64_t j = 0; j < nn; j += kPN)
            micro<NM>(wp, xp + (j / kPN) * xtile, nblk, yrow(p, n0 + j) + m0, p.y_stride, mv, min64(kPN, nn - j), k0 > 0);
        }
      }
    }
  });
  return ok;
}

}  // namespace

bool qmm_vnni_available() {
  // (BMI2's pdep for the q3_k scales: every AVX-512 CPU has it; checked all the same)
  static const bool ok = host_features().has_avx512() && host_features().avx512_vnni && __builtin_cpu_supports("bmi2");
  return ok;
}

bool qmm_vnni_supports(dtype t) {
  return t == dtype::q8_0 || t == dtype::q4_k || t == dtype::q3_k || t == dtype::q2_k;
}

void qmm_vnni_run(const mm_problem& p, int n_threads) {
  if (handle_empty(p)) return;
  const bool panel = p.N >= (p.wtype == dtype::q8_0 ? kPanelMinN_q8_0 : kPanelMinN_kquant);
  bool ok = false;
  switch (p.wtype) {
    case dtype::q8_0: ok = panel ? prefill<q8_0_panel>(p, n_threads) : decode<q8_0_dec>(p, n_threads); break;
    case dtype::q4_k: ok = panel ? prefill<q4_k_panel>(p, n_threads) : decode<q4_k_dec>(p, n_threads); break;
    case dtype::q3_k: ok = panel ? prefill<q3_k_panel>(p, n_threads) : has_gfni() ? decode<q3_k_dec<true>>(p, n_threads) : decode<q3_k_dec<false>>(p, n_threads); break;
    case dtype::q2_k: ok = panel ? prefill<q2_k_panel>(p, n_threads) : has_gfni() ? decode<q2_k_dec<true>>(p, n_threads) : decode<q2_k_dec<false>>(p, n_threads); break;
    default: break;
  }
  if (!ok) qmm_avx2_run(p, n_threads);  // out of scratch memory: the exact AVX2 path needs none
}

#pragma GCC pop_options

}  // namespace v4::cpu::qmm_arch

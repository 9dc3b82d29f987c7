// Vector primitives, AVX-512 (F/BW/VL/DQ) + F16C: 16 lanes; every tail through lane masks.
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c -mavx2.
// GCC 12 reports its own _mm512_undefined_* idiom (`__m512i __Y = __Y;`) in avx512fintrin.h as
// uninitialized once inlined (GCC bug 105593); the warning is located in the header, so it is
// silenced for the whole file.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "backends/cpu/arch/vec_arch.h"

namespace v4::cpu::vec {
namespace {

struct avx512 {
  static constexpr int W = 16;
  using F = __m512;
  using I = __m512i;
  using M = __mmask16;

  static M lanes_below(int k) { return static_cast<M>((1u << k) - 1); }  // k in [0, 16)

  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F load_part(const float* p, int k, float fill) { return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), lanes_below(k), p); }
  static void store_part(float* p, F v, int k) { _mm512_mask_storeu_ps(p, lanes_below(k), v); }
  static F keep(F v, int k) { return _mm512_maskz_mov_ps(lanes_below(k), v); }

  static F set1(float x) { return _mm512_set1_ps(x); }
  static I set1i(int32_t x) { return _mm512_set1_epi32(x); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fnma(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static F abs(F a) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff))); }
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static M gt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M ge(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
  static M lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static F select(M m, F a, F b) { return _mm512_mask_blend_ps(m, b, a); }
  static bool any(M m) { return m != 0; }

  static I cvt_i(F a) { return _mm512_cvttps_epi32(a); }
  static F cast_f(I a) { return _mm512_castsi512_ps(a); }
  static I add_i(I a, I b) { return _mm512_add_epi32(a, b); }
  static I sub_i(I a, I b) { return _mm512_sub_epi32(a, b); }
  template <int k> static I shl(I a) { return _mm512_slli_epi32(a, k); }
  template <int k> static I sra(I a) { return _mm512_srai_epi32(a, k); }

  static float hsum(F v) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float hmax(F v) {
    const __m256 h = _mm256_max_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  // The conversion quiets signalling NaNs; the scalar v4::f16_to_f32 keeps them (see vec_avx2).
  static F cvt_f16(__m256i h) {
    const F f = _mm512_cvtph_ps(h);
    const __m256i t = _mm256_and_si256(h, _mm256_set1_epi16(0x7fff));
    const M snan = _mm256_cmpgt_epi16_mask(t, _mm256_set1_epi16(0x7c00)) & _mm256_cmpgt_epi16_mask(_mm256_set1_epi16(0x7e00), t);
    if (!snan) return f;
    const I bits = _mm512_castps_si512(f);
    return _mm512_castsi512_ps(_mm512_mask_andnot_epi32(bits, snan, _mm512_set1_epi32(0x00400000), bits));
  }
  static F load_f16(const uint16_t* p) { return cvt_f16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static F load_f16_part(const uint16_t* p, int k) { return cvt_f16(_mm256_maskz_loadu_epi16(lanes_below(k), p)); }
  static __m256i to_f16(F v) { return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static void store_f16(uint16_t* p, F v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_f16(v)); }
  static void store_f16_part(uint16_t* p, F v, int k) { _mm256_mask_storeu_epi16(p, lanes_below(k), to_f16(v)); }

  static F from_bf16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static F load_bf16(const uint16_t* p) { return from_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static F load_bf16_part(const uint16_t* p, int k) { return from_bf16(_mm256_maskz_loadu_epi16(lanes_below(k), p)); }
  // Round to nearest even on the bits: (x + 0x7fff + lsb) >> 16; NaN -> (x >> 16) | 0x40.
  static __m256i to_bf16(F v) {
    const I x = _mm512_castps_si512(v);
    const I hi = _mm512_srli_epi32(x, 16);
    const I bias = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(hi, _mm512_set1_epi32(1)));
    const I rounded = _mm512_srli_epi32(_mm512_add_epi32(x, bias), 16);
    const M nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    const I r = _mm512_mask_or_epi32(rounded, nan, hi, _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);  // all lanes in [0, 0xffff]
  }
  static void store_bf16(uint16_t* p, F v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_bf16(v)); }
  static void store_bf16_part(uint16_t* p, F v, int k) { _mm256_mask_storeu_epi16(p, lanes_below(k), to_bf16(v)); }
};

}  // namespace

const table* table_avx512() {
  static const table t = kernels::make_table<avx512>("avx512");
  return &t;
}

}  // namespace v4::cpu::vec

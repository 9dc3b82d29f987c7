// Vector primitives, AVX2 + FMA + F16C: 8 lanes; tails through maskload/maskstore (f32) or a
// stack buffer (16-bit). Compiled with -mavx2 -mfma -mf16c (see v4_isa_sources).
#include <immintrin.h>

#include "backends/cpu/arch/vec_arch.h"

namespace v4::cpu::vec {
namespace {

struct avx2 : kernels::part_via_buffer<avx2> {
  static constexpr int W = 8;
  using F = __m256;
  using I = __m256i;
  using M = __m256;

  static I lanes_below(int k) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }

  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F load_part(const float* p, int k, float fill) {
    const I m = lanes_below(k);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
  }
  static void store_part(float* p, F v, int k) { _mm256_maskstore_ps(p, lanes_below(k), v); }
  static F keep(F v, int k) { return _mm256_and_ps(v, _mm256_castsi256_ps(lanes_below(k))); }

  static F set1(float x) { return _mm256_set1_ps(x); }
  static I set1i(int32_t x) { return _mm256_set1_epi32(x); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fnma(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static F abs(F a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static M gt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static M ge(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
  static M lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static F select(M m, F a, F b) { return _mm256_blendv_ps(b, a, m); }
  static bool any(M m) { return _mm256_movemask_ps(m) != 0; }

  static I cvt_i(F a) { return _mm256_cvttps_epi32(a); }
  static F cast_f(I a) { return _mm256_castsi256_ps(a); }
  static I add_i(I a, I b) { return _mm256_add_epi32(a, b); }
  static I sub_i(I a, I b) { return _mm256_sub_epi32(a, b); }
  template <int k> static I shl(I a) { return _mm256_slli_epi32(a, k); }
  template <int k> static I sra(I a) { return _mm256_srai_epi32(a, k); }

  static float hsum(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float hmax(F v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  // F16C turns signalling NaNs quiet; the scalar v4::f16_to_f32 keeps them, so clear the
  // quiet bit again on lanes whose half was a signalling NaN (exponent 31, bit 9 clear, mantissa
  // not 0). Rare: tested for once per 8 halfs.
  static F load_f16(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const F f = _mm256_cvtph_ps(h);
    const __m128i t = _mm_and_si128(h, _mm_set1_epi16(0x7fff));
    const __m128i snan = _mm_and_si128(_mm_cmpgt_epi16(t, _mm_set1_epi16(0x7c00)), _mm_cmpgt_epi16(_mm_set1_epi16(0x7e00), t));
    if (_mm_testz_si128(snan, snan)) return f;
    const F quiet = _mm256_and_ps(_mm256_castsi256_ps(_mm256_cvtepi16_epi32(snan)), _mm256_castsi256_ps(_mm256_set1_epi32(0x00400000)));
    return _mm256_andnot_ps(quiet, f);
  }
  static void store_f16(uint16_t* p, F v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  static F load_bf16(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  // Round to nearest even on the bits: (x + 0x7fff + lsb) >> 16; NaN -> (x >> 16) | 0x40.
  static void store_bf16(uint16_t* p, F v) {
    const I x = _mm256_castps_si256(v);
    const I hi = _mm256_srli_epi32(x, 16);
    const I bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff), _mm256_and_si256(hi, _mm256_set1_epi32(1)));
    const I rounded = _mm256_srli_epi32(_mm256_add_epi32(x, bias), 16);
    const I nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
    const I quiet = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
    const I r = _mm256_blendv_epi8(rounded, quiet, nan);  // all lanes in [0, 0xffff]
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
  }
};

}  // namespace

const table* table_avx2() {
  static const table t = kernels::make_table<avx2>("avx2");
  return &t;
}

}  // namespace v4::cpu::vec

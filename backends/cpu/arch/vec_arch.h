// Private to backends/cpu: what vec.cpp and the per-ISA files vec_<isa>.cpp share.
//
//  * the per-ISA table getters (each defined in the file compiled with that ISA's flags);
//  * the ISA-generic kernel bodies (vec::kernels::impl<S>), written once against a small lane
//    interface S that each arch file defines. All SIMD tables therefore run the same algorithm
//    and differ only in width and tail handling.
//
// ODR: impl<S> is instantiated only with an S that has internal linkage (an anonymous-namespace
// struct in its arch file), so no instantiation compiled with AVX-512 flags can be merged by the
// linker into code that runs on a lesser CPU. Keep std:: templates out of this header.
//
// Rounding: every step whose rounding matters is an explicit fused fma or a lone operation.
// GCC may still fuse a separate mul and add (-ffp-contract=fast is its C++ default, and
// intrinsics are plain vector arithmetic to it); that only removes a rounding, so the measured
// error can differ by a fraction of an ulp between ISAs but stays within the contract.
#pragma once

#include <cstdint>

#include "backends/cpu/vec.h"

namespace v4::cpu::vec {

#if defined(__x86_64__)
const table* table_avx2();
const table* table_avx512();
#endif
#if defined(__aarch64__)
const table* table_neon();
#endif

namespace kernels {

// The lane interface S (W lanes of f32):
//   W; F (floats), I (int32), M (lane mask)
//   load(p), store(p, v); load_part(p, k, fill): lanes >= k read as `fill` (no access past p[k-1]);
//   store_part(p, v, k): writes p[0..k-1] only; keep(v, k): lanes >= k set to +0
//   set1(float), set1i(int32)
//   add sub mul div; fma(a, b, c) = a*b + c and fnma(a, b, c) = c - a*b, both fused; abs
//   max(a, b) = a > b ? a : b, min(a, b) = a < b ? a : b (x86 maxps/minps semantics: the second
//     operand when either is NaN or they are equal)
//   gt ge lt (ordered: false on NaN) -> M; select(m, a, b) = m ? a : b; any(m)
//   cvt_i (float -> int32, truncating; only used on integral values), cast_f (int bits -> float),
//   add_i, sub_i, shl<k>, sra<k>
//   hsum, hmax (lanes never NaN)
//   load_f16/store_f16/load_bf16/store_bf16 and their _part(p[, v], k) variants: bit-identical to
//     v4::f16_to_f32 / f32_to_f16 / bf16_to_f32 / f32_to_bf16
template <class S>
struct impl {
  using F = typename S::F;
  using I = typename S::I;
  using M = typename S::M;
  static constexpr int W = S::W;

  // ---- elementwise loops: full vectors, then one partial vector --------------------------------
  template <class Op>
  static inline void map1(const float* a, float* y, int64_t n, Op op) {
    int64_t i = 0;
    for (; i + W <= n; i += W) S::store(y + i, op(S::load(a + i)));
    if (i < n) {
      const int k = int(n - i);
      S::store_part(y + i, op(S::load_part(a + i, k, 0.0f)), k);
    }
  }
  template <class Op>
  static inline void map2(const float* a, const float* b, float* y, int64_t n, Op op) {
    int64_t i = 0;
    for (; i + W <= n; i += W) S::store(y + i, op(S::load(a + i), S::load(b + i)));
    if (i < n) {
      const int k = int(n - i);
      // padding lanes compute 0 op 1: no inf or NaN, even for div
      S::store_part(y + i, op(S::load_part(a + i, k, 0.0f), S::load_part(b + i, k, 1.0f)), k);
    }
  }

  static void add(const float* a, const float* b, float* y, int64_t n) { map2(a, b, y, n, [](F u, F v) { return S::add(u, v); }); }
  static void sub(const float* a, const float* b, float* y, int64_t n) { map2(a, b, y, n, [](F u, F v) { return S::sub(u, v); }); }
  static void mul(const float* a, const float* b, float* y, int64_t n) { map2(a, b, y, n, [](F u, F v) { return S::mul(u, v); }); }
  static void div(const float* a, const float* b, float* y, int64_t n) { map2(a, b, y, n, [](F u, F v) { return S::div(u, v); }); }
  static void scale(const float* a, float s, float b, float* y, int64_t n) {
    const F vs = S::set1(s), vb = S::set1(b);
    map1(a, y, n, [=](F u) { return S::fma(u, vs, vb); });
  }

  // ---- exp -------------------------------------------------------------------------------------
  // exp(x) = 2^n * e^r, n = round(x / ln2), r = x - n*ln2 in [-ln2/2, ln2/2] (Cody-Waite, two
  // constants), e^r = 1 + r + r^2 * P(r) with the Cephes expf polynomial. x is first clamped
  // to [-110, 89] (NaN kept): exp(-110) rounds to 0 and exp(89) to +inf, and n stays in
  // [-159, 129] so the scaling below never wraps.
  static inline F exp_reduce(F x, F* nf) {
    x = S::min(S::set1(89.0f), S::max(S::set1(-110.0f), x));
    const F magic = S::set1(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
    const F n = S::sub(S::fma(x, S::set1(1.44269504088896341f), magic), magic);
    F r = S::fnma(n, S::set1(0.693359375f), x);  // ln2 hi: n * hi is exact
    r = S::fnma(n, S::set1(-2.12194440e-4f), r);  // ln2 lo
    F p = S::set1(1.9875691500e-4f);
    p = S::fma(p, r, S::set1(1.3981999507e-3f));
    p = S::fma(p, r, S::set1(8.3334519073e-3f));
    p = S::fma(p, r, S::set1(4.1665795894e-2f));
    p = S::fma(p, r, S::set1(1.6666665459e-1f));
    p = S::fma(p, r, S::set1(5.0000001201e-1f));
    p = S::fma(p, S::mul(r, r), r);
    *nf = n;
    return S::add(p, S::set1(1.0f));  // in [0.70, 1.42]
  }
  // 2^n as a float, n an int32 in [-126, 127] (after adding any offset).
  static inline F pow2i(I n) { return S::cast_f(S::template shl<23>(S::add_i(n, S::set1i(127)))); }
  // p * 2^n with a single rounding for n in [-159, 129]: 2^n split into two normal factors, the
  // first product exact, the second rounding once (to a subnormal, to +inf, or normally).
  static inline F scale_wide(F p, F nf) {
    const I n = S::cvt_i(nf);
    const I n1 = S::template sra<1>(n);
    return S::mul(S::mul(p, pow2i(n1)), pow2i(S::sub_i(n, n1)));
  }
  // Whether any lane needs scale_wide (result subnormal, near overflow, or clamped).
  static inline bool needs_wide(F nf) { return S::any(S::gt(S::abs(nf), S::set1(126.0f))); }
  static inline F exp(F x) {
    F nf;
    const F p = exp_reduce(x, &nf);
    if (needs_wide(nf)) return scale_wide(p, nf);
    return S::mul(p, pow2i(S::cvt_i(nf)));
  }

  // ---- functions built on exp ------------------------------------------------------------------
  // All use u = exp(-|x|) in [0, 1], which neither overflows nor loses the subnormal range:
  //   sigmoid(x) = x >= 0 ? 1/(1+u) : u/(1+u)
  static inline F sigmoid(F x) {
    const F u = exp(S::sub(S::set1(0.0f), S::abs(x)));
    return S::div(S::select(S::ge(x, S::set1(0.0f)), S::set1(1.0f), u), S::add(S::set1(1.0f), u));
  }
  // silu(x) = x >= 0 ? x/(1+u) : x*u/(1+u). When u is subnormal (x < -87.3), x*u would lose
  // u's missing bits; then x*u is formed with u scaled by 2^64 and scaled back after the division
  // (one rounding into the subnormal range).
  static inline F silu(F x) {
    F nf;
    const F p = exp_reduce(S::sub(S::set1(0.0f), S::abs(x)), &nf);
    const M pos = S::ge(x, S::set1(0.0f));
    if (!needs_wide(nf)) {
      const F u = S::mul(p, pow2i(S::cvt_i(nf)));
      return S::div(S::select(pos, x, S::mul(x, u)), S::add(S::set1(1.0f), u));
    }
    const F u = scale_wide(p, nf);
    const F u64 = S::mul(p, pow2i(S::add_i(S::cvt_i(nf), S::set1i(64))));  // nf >= -159: normal
    // x clamped like exp's argument: silu(x < -110) underflows to -0, and silu(-inf) = -0.
    const F xc = S::max(S::set1(-110.0f), x);
    const F q = S::div(S::select(pos, x, S::mul(xc, u64)), S::add(S::set1(1.0f), u));
    return S::select(pos, q, S::mul(q, S::set1(5.42101086242752217e-20f)));  // * 2^-64
  }
  // log1p(u) for u in [0, 1]: log1p(u) = k*ln2 + log(1+f), k = (u > sqrt2 - 1),
  // f = k ? (u-1)/2 : u, f in [-0.293, 0.415]; log(1+f) = f - f^2/2 + f^3 * P(f) (Cephes logf).
  // (u-1)/2 is one fused op, rounded once; for u >= 0.5 it is exact.
  static inline F log1p_unit(F u) {
    const M big = S::gt(u, S::set1(0.414213562f));
    const F f = S::select(big, S::fma(u, S::set1(0.5f), S::set1(-0.5f)), u);
    const F k = S::select(big, S::set1(1.0f), S::set1(0.0f));
    const F z = S::mul(f, f);
    F p = S::set1(7.0376836292e-2f);
    p = S::fma(p, f, S::set1(-1.1514610310e-1f));
    p = S::fma(p, f, S::set1(1.1676998740e-1f));
    p = S::fma(p, f, S::set1(-1.2420140846e-1f));
    p = S::fma(p, f, S::set1(1.4249322787e-1f));
    p = S::fma(p, f, S::set1(-1.6668057665e-1f));
    p = S::fma(p, f, S::set1(2.0000714765e-1f));
    p = S::fma(p, f, S::set1(-2.4999993993e-1f));
    p = S::fma(p, f, S::set1(3.3333331174e-1f));
    F y = S::mul(S::mul(f, z), p);
    y = S::fma(k, S::set1(-2.12194440e-4f), y);  // ln2 lo
    y = S::fnma(z, S::set1(0.5f), y);
    return S::fma(k, S::set1(0.693359375f), S::add(f, y));  // ln2 hi
  }
  // softplus(x) = x > 20 ? x : max(x, 0) + log1p(exp(-|x|))  (= log1p(exp(x)) rearranged so
  // that exp never overflows and the large part x is added exactly once).
  static inline F softplus(F x) {
    const F zero = S::set1(0.0f);
    const F l = log1p_unit(exp(S::sub(zero, S::abs(x))));
    const F y = S::add(S::select(S::gt(x, zero), x, zero), l);
    return S::select(S::gt(x, S::set1(20.0f)), x, y);
  }

  static void exp_row(const float* a, float* y, int64_t n) { map1(a, y, n, [](F u) { return exp(u); }); }
  static void silu_row(const float* a, float* y, int64_t n) { map1(a, y, n, [](F u) { return silu(u); }); }
  static void sigmoid_row(const float* a, float* y, int64_t n) { map1(a, y, n, [](F u) { return sigmoid(u); }); }
  static void softplus_row(const float* a, float* y, int64_t n) { map1(a, y, n, [](F u) { return softplus(u); }); }

  // ---- reductions: four accumulators, then one partial vector ------------------------------------
  static float sum(const float* a, int64_t n) {
    F s0 = S::set1(0.0f), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      s0 = S::add(s0, S::load(a + i));
      s1 = S::add(s1, S::load(a + i + W));
      s2 = S::add(s2, S::load(a + i + 2 * W));
      s3 = S::add(s3, S::load(a + i + 3 * W));
    }
    for (; i + W <= n; i += W) s0 = S::add(s0, S::load(a + i));
    if (i < n) s1 = S::add(s1, S::load_part(a + i, int(n - i), 0.0f));
    return S::hsum(S::add(S::add(s0, s1), S::add(s2, s3)));
  }
  static float sum_sq(const float* a, int64_t n) {
    F s0 = S::set1(0.0f), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      const F x0 = S::load(a + i), x1 = S::load(a + i + W), x2 = S::load(a + i + 2 * W), x3 = S::load(a + i + 3 * W);
      s0 = S::fma(x0, x0, s0);
      s1 = S::fma(x1, x1, s1);
      s2 = S::fma(x2, x2, s2);
      s3 = S::fma(x3, x3, s3);
    }
    for (; i + W <= n; i += W) {
      const F x = S::load(a + i);
      s0 = S::fma(x, x, s0);
    }
    if (i < n) {
      const F x = S::load_part(a + i, int(n - i), 0.0f);
      s1 = S::fma(x, x, s1);
    }
    return S::hsum(S::add(S::add(s0, s1), S::add(s2, s3)));
  }
  static float dot(const float* a, const float* b, int64_t n) {
    F s0 = S::set1(0.0f), s1 = s0, s2 = s0, s3 = s0;
    int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      s0 = S::fma(S::load(a + i), S::load(b + i), s0);
      s1 = S::fma(S::load(a + i + W), S::load(b + i + W), s1);
      s2 = S::fma(S::load(a + i + 2 * W), S::load(b + i + 2 * W), s2);
      s3 = S::fma(S::load(a + i + 3 * W), S::load(b + i + 3 * W), s3);
    }
    for (; i + W <= n; i += W) s0 = S::fma(S::load(a + i), S::load(b + i), s0);
    if (i < n) {
      const int k = int(n - i);
      s1 = S::fma(S::load_part(a + i, k, 0.0f), S::load_part(b + i, k, 0.0f), s1);
    }
    return S::hsum(S::add(S::add(s0, s1), S::add(s2, s3)));
  }
  // NaN elements are skipped: max(x, acc) keeps acc when x is NaN.
  static float max(const float* a, int64_t n) {
    const float ninf = -__builtin_inff();
    F m0 = S::set1(ninf), m1 = m0, m2 = m0, m3 = m0;
    int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      m0 = S::max(S::load(a + i), m0);
      m1 = S::max(S::load(a + i + W), m1);
      m2 = S::max(S::load(a + i + 2 * W), m2);
      m3 = S::max(S::load(a + i + 3 * W), m3);
    }
    for (; i + W <= n; i += W) m0 = S::max(S::load(a + i), m0);
    if (i < n) m1 = S::max(S::load_part(a + i, int(n - i), ninf), m1);
    return S::hmax(S::max(S::max(m0, m1), S::max(m2, m3)));
  }
  static float exp_sum(const float* a, float m, float* y, int64_t n) {
    const F vm = S::set1(m);
    F s0 = S::set1(0.0f), s1 = s0;
    int64_t i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
      const F e0 = exp(S::sub(S::load(a + i), vm)), e1 = exp(S::sub(S::load(a + i + W), vm));
      S::store(y + i, e0);
      S::store(y + i + W, e1);
      s0 = S::add(s0, e0);
      s1 = S::add(s1, e1);
    }
    for (; i + W <= n; i += W) {
      const F e = exp(S::sub(S::load(a + i), vm));
      S::store(y + i, e);
      s0 = S::add(s0, e);
    }
    if (i < n) {
      const int k = int(n - i);
      const F e = exp(S::sub(S::load_part(a + i, k, 0.0f), vm));
      S::store_part(y + i, e, k);
      s1 = S::add(s1, S::keep(e, k));  // the padding lanes hold exp(-m), not part of the sum
    }
    return S::hsum(S::add(s0, s1));
  }

  // ---- conversions -----------------------------------------------------------------------------
  static void f16_to_f32(const uint16_t* a, float* y, int64_t n) {
    int64_t i = 0;
    for (; i + W <= n; i += W) S::store(y + i, S::load_f16(a + i));
    if (i < n) S::store_part(y + i, S::load_f16_part(a + i, int(n - i)), int(n - i));
  }
  static void f32_to_f16(const float* a, uint16_t* y, int64_t n) {
    int64_t i = 0;
    for (; i + W <= n; i += W) S::store_f16(y + i, S::load(a + i));
    if (i < n) S::store_f16_part(y + i, S::load_part(a + i, int(n - i), 0.0f), int(n - i));
  }
  static void bf16_to_f32(const uint16_t* a, float* y, int64_t n) {
    int64_t i = 0;
    for (; i + W <= n; i += W) S::store(y + i, S::load_bf16(a + i));
    if (i < n) S::store_part(y + i, S::load_bf16_part(a + i, int(n - i)), int(n - i));
  }
  static void f32_to_bf16(const float* a, uint16_t* y, int64_t n) {
    int64_t i = 0;
    for (; i + W <= n; i += W) S::store_bf16(y + i, S::load(a + i));
    if (i < n) S::store_bf16_part(y + i, S::load_part(a + i, int(n - i), 0.0f), int(n - i));
  }
};

template <class S>
table make_table(const char* name) {
  using K = impl<S>;
  return table{name,          K::add,        K::sub,          K::mul,         K::div,
               K::scale,      K::exp_row,    K::silu_row,     K::sigmoid_row, K::softplus_row,
               K::sum,        K::max,        K::sum_sq,       K::dot,         K::exp_sum,
               K::f16_to_f32, K::f32_to_f16, K::bf16_to_f32,  K::f32_to_bf16};
}

// Partial vectors through a stack buffer, for lane types without masked 16-bit loads/stores.
// Used as a CRTP base (struct neon : part_via_buffer<neon>), hence the deduced return types.
template <class S>
struct part_via_buffer {
  static auto load_f16_part(const uint16_t* p, int k) {
    uint16_t t[S::W] = {};
    for (int i = 0; i < k; ++i) t[i] = p[i];
    return S::load_f16(t);
  }
  static auto load_bf16_part(const uint16_t* p, int k) {
    uint16_t t[S::W] = {};
    for (int i = 0; i < k; ++i) t[i] = p[i];
    return S::load_bf16(t);
  }
  template <class V>
  static void store_f16_part(uint16_t* p, V v, int k) {
    uint16_t t[S::W];
    S::store_f16(t, v);
    for (int i = 0; i < k; ++i) p[i] = t[i];
  }
  template <class V>
  static void store_bf16_part(uint16_t* p, V v, int k) {
    uint16_t t[S::W];
    S::store_bf16(t, v);
    for (int i = 0; i < k; ++i) p[i] = t[i];
  }
};

}  // namespace kernels
}  // namespace v4::cpu::vec

// Vector primitives, AArch64 NEON (baseline there; compiled with default flags): 4 lanes, tails
// through a stack buffer. FCVTL/FCVTN (f16 <-> f32) are part of the base ISA.
#include <arm_neon.h>

#include "backends/cpu/arch/vec_arch.h"

namespace v4::cpu::vec {
namespace {

struct neon : kernels::part_via_buffer<neon> {
  static constexpr int W = 4;
  using F = float32x4_t;
  using I = int32x4_t;
  using M = uint32x4_t;

  static M lanes_below(int k) {
    static const uint32_t iota[4] = {0, 1, 2, 3};
    return vcltq_u32(vld1q_u32(iota), vdupq_n_u32(uint32_t(k)));
  }

  static F load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, F v) { vst1q_f32(p, v); }
  static F load_part(const float* p, int k, float fill) {
    float t[4] = {fill, fill, fill, fill};
    for (int i = 0; i < k; ++i) t[i] = p[i];
    return vld1q_f32(t);
  }
  static void store_part(float* p, F v, int k) {
    float t[4];
    vst1q_f32(t, v);
    for (int i = 0; i < k; ++i) p[i] = t[i];
  }
  static F keep(F v, int k) { return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(v), lanes_below(k))); }

  static F set1(float x) { return vdupq_n_f32(x); }
  static I set1i(int32_t x) { return vdupq_n_s32(x); }
  static F add(F a, F b) { return vaddq_f32(a, b); }
  static F sub(F a, F b) { return vsubq_f32(a, b); }
  static F mul(F a, F b) { return vmulq_f32(a, b); }
  static F div(F a, F b) { return vdivq_f32(a, b); }
  static F fma(F a, F b, F c) { return vfmaq_f32(c, a, b); }
  static F fnma(F a, F b, F c) { return vfmsq_f32(c, a, b); }
  static F abs(F a) { return vabsq_f32(a); }
  // x86 maxps/minps semantics (the second operand on NaN or equality), not FMAX/FMAXNM.
  static F max(F a, F b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
  static F min(F a, F b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
  static M gt(F a, F b) { return vcgtq_f32(a, b); }
  static M ge(F a, F b) { return vcgeq_f32(a, b); }
  static M lt(F a, F b) { return vcltq_f32(a, b); }
  static F select(M m, F a, F b) { return vbslq_f32(m, a, b); }
  static bool any(M m) { return vmaxvq_u32(m) != 0; }

  static I cvt_i(F a) { return vcvtq_s32_f32(a); }
  static F cast_f(I a) { return vreinterpretq_f32_s32(a); }
  static I add_i(I a, I b) { return vaddq_s32(a, b); }
  static I sub_i(I a, I b) { return vsubq_s32(a, b); }
  template <int k> static I shl(I a) { return vshlq_n_s32(a, k); }
  template <int k> static I sra(I a) { return vshrq_n_s32(a, k); }

  static float hsum(F v) { return vaddvq_f32(v); }
  static float hmax(F v) {
    const float32x2_t h = vget_low_f32(max(v, vextq_f32(v, v, 2)));
    return vget_lane_f32(vbsl_f32(vcgt_f32(h, vrev64_f32(h)), h, vrev64_f32(h)), 0);
  }

  // Hardware may quiet signalling NaNs; the scalar v4::f16_to_f32 keeps them: clear the quiet bit
  // on lanes whose half was a signalling NaN (clearing, not toggling, is right either way).
  static F load_f16(const uint16_t* p) {
    const uint16x4_t h = vld1_u16(p);
    const F f = vcvt_f32_f16(vreinterpret_f16_u16(h));
    const uint16x4_t t = vand_u16(h, vdup_n_u16(0x7fff));
    const uint16x4_t snan = vand_u16(vcgt_u16(t, vdup_n_u16(0x7c00)), vclt_u16(t, vdup_n_u16(0x7e00)));
    if (vget_lane_u64(vreinterpret_u64_u16(snan), 0) == 0) return f;
    const uint32x4_t quiet = vandq_u32(vreinterpretq_u32_s32(vmovl_s16(vreinterpret_s16_u16(snan))), vdupq_n_u32(0x00400000));
    return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(f), quiet));
  }
  static void store_f16(uint16_t* p, F v) { vst1_u16(p, vreinterpret_u16_f16(vcvt_f16_f32(v))); }
  static F load_bf16(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
  // Round to nearest even on the bits: (x + 0x7fff + lsb) >> 16; NaN -> (x >> 16) | 0x40.
  static void store_bf16(uint16_t* p, F v) {
    const uint32x4_t x = vreinterpretq_u32_f32(v);
    const uint32x4_t hi = vshrq_n_u32(x, 16);
    const uint32x4_t bias = vaddq_u32(vdupq_n_u32(0x7fff), vandq_u32(hi, vdupq_n_u32(1)));
    const uint32x4_t rounded = vshrq_n_u32(vaddq_u32(x, bias), 16);
    const uint32x4_t nan = vcgtq_u32(vandq_u32(x, vdupq_n_u32(0x7fffffff)), vdupq_n_u32(0x7f800000));
    const uint32x4_t r = vbslq_u32(nan, vorrq_u32(hi, vdupq_n_u32(0x40)), rounded);
    vst1_u16(p, vmovn_u32(r));
  }
};

}  // namespace

const table* table_neon() {
  static const table t = kernels::make_table<neon>("neon");
  return &t;
}

}  // namespace v4::cpu::vec

// NEON (AArch64) kernels for all six quantized weight types (fp8_e4m3, mxfp4, q8_0, q4_k, q3_k,
// q2_k), exact x (x_rounding 0).
//
// As the AVX2 file: tiles of kRows weight rows x kKC elements are dequantized to f32 with the
// reference dequantizers' f32 operations (same operands, same order; subnormals kept, FPCR.FZ is
// off on Linux), then every x row takes its dot products with the tile's rows (4 rows x 8 k per
// step, FMLA), and the partial sums of the K blocks are added in y. Threads split M in tiles; K is
// never split, so the results do not depend on the thread count.
// (GCC contracts the K-quants' (d * sc) * q - dmin * m into one FMA, here and in quant/'s reference
// alike: harmless, since (d * sc) * q has at most 11 + 6 + 4 significant bits and is exact in f32.
// QmatmulVariant.ExactVariantsReproduceTheReferenceWeights checks the bits.)
//
// Why not dotprod (SDOT) on int8 x, as llama.cpp does: it would round x to int8 per block, a
// coarser contract than this exact one (see qmatmul.cpp's note on VNNI); the dequantize-to-f32
// tile is amortised over the N rows of x, so prefill is FMLA-bound either way, and decode is
// memory-bound.
#include <arm_neon.h>

#include "backends/cpu/arch/qmatmul_arch.h"

namespace v4::cpu::qmm_arch {
namespace {

constexpr int64_t kRows = 16;  // weight rows per tile
constexpr int64_t kKC = 512;   // K block: a tile is 32 KiB of f32

// e2m1 code -> twice its value (an exact int8 table, quant/mxfp4.h kE2m1Doubled).
constexpr int8_t kDoubled[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

inline void store_i8x16(int8x16_t v, float32x4_t scale, float* out) {  // 16 int8 * scale
  const int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_s8(vget_high_s8(v));
  vst1q_f32(out, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), scale));
  vst1q_f32(out + 4, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))), scale));
  vst1q_f32(out + 8, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), scale));
  vst1q_f32(out + 12, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi))), scale));
}

// Elements [k0, k1) of row m into out[0 .. k1 - k0); k0 a multiple of 32.
void dequant_mxfp4(const mm_problem& p, int64_t m, int64_t k0, int64_t k1, float* out) {
  const uint8_t* q = reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, m));
  const uint8_t* sc = scale_row(p, m);
  const int8x16_t table = vld1q_s8(kDoubled);
  int64_t k = k0;
  for (; k + 32 <= k1; k += 32) {
    // (value / 2) * s == value * s: both round the same real number (0.5 * s is exact, even for
    // the subnormal 2^-127).
    const float32x4_t half_s = vdupq_n_f32(0.5f * e8m0_value(sc[k / 32]));
    const uint8x16_t b = vld1q_u8(q + k / 2);
    const uint8x16_t lo = vandq_u8(b, vdupq_n_u8(15)), hi = vshrq_n_u8(b, 4);
    const int8x16_t c0 = vqtbl1q_s8(table, vzip1q_u8(lo, hi)), c1 = vqtbl1q_s8(table, vzip2q_u8(lo, hi));
    store_i8x16(c0, half_s, out + k - k0);
    store_i8x16(c1, half_s, out + k - k0 + 16);
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
  const float32x4_t two120 = vdupq_n_f32(0x1p120f), nan = vdupq_n_f32(__builtin_nanf(""));
  int64_t k = k0, j = k0 / p.sb_k, next = (j + 1) * p.sb_k;  // scale column j covers [next - sb_k, next)
  for (; k + 32 <= k1; k += 32) {  // one scale per 32 (sb_k is a multiple of 32)
    if (k >= next) {
      ++j;
      next += p.sb_k;
    }
    const float32x4_t s = vdupq_n_f32(e8m0_value(sc[j]));
    for (int i = 0; i < 32; i += 8) {
      const uint16x8_t c16 = vmovl_u8(vld1_u8(q + k + i));
      for (int h = 0; h < 2; ++h) {
        const uint32x4_t c = vmovl_u16(h ? vget_high_u16(c16) : vget_low_u16(c16));
        const uint32x4_t m7 = vandq_u32(c, vdupq_n_u32(0x7f));
        float32x4_t v = vmulq_f32(vreinterpretq_f32_u32(vshlq_n_u32(m7, 20)), two120);
        v = vbslq_f32(vceqq_u32(m7, vdupq_n_u32(0x7f)), nan, v);
        v = vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(v), vshlq_n_u32(vandq_u32(c, vdupq_n_u32(0x80)), 24)));
        vst1q_f32(out + k + i + 4 * h - k0, vmulq_f32(v, s));
      }
    }
  }
  for (; k < k1; ++k) out[k - k0] = e4m3_value(q[k]) * e8m0_value(sc[k / p.sb_k]);
}

void dequant_q8_0(const mm_problem& p, int64_t m, int64_t k0, int64_t k1, float* out) {
  const auto* b = reinterpret_cast<const quant::block_q8_0*>(row_ptr(p.w, p.w_stride, m)) + k0 / 32;
  for (int64_t k = k0; k < k1; k += 32, ++b) {
    const float32x4_t d = vdupq_n_f32(half_to_float(b->d));
    store_i8x16(vld1q_s8(b->qs), d, out + k - k0);
    store_i8x16(vld1q_s8(b->qs + 16), d, out + k - k0 + 16);
  }
}

// ---- K-quants (quant/kquant.h layouts): k0 and k1 are multiples of 256 --------------------------
// 16 unsigned codes (u8) as f32, in four vectors.
inline void u8x16_to_f32(uint8x16_t v, float32x4_t out[4]) {
  const uint16x8_t lo = vmovl_u8(vget_low_u8(v)), hi = vmovl_u8(vget_high_u8(v));
  out[0] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo)));
  out[1] = vcvtq_f32_u32(vmovl_u16(vget_high_u16(lo)));
  out[2] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi)));
  out[3] = vcvtq_f32_u32(vmovl_u16(vget_high_u16(hi)));
}
inline void s8x16_to_f32(int8x16_t v, float32x4_t out[4]) {
  const int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_s8(vget_high_s8(v));
  out[0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
  out[1] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo)));
  out[2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
  out[3] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi)));
}
// out[0..16) = ds * q - dm (the asymmetric element value: two roundings, as the reference).
inline void store_asym16(uint8x16_t q, float32x4_t ds, float32x4_t dm, float* out) {
  float32x4_t f[4];
  u8x16_to_f32(q, f);
  for (int i = 0; i < 4; ++i) vst1q_f32(out + 4 * i, vsubq_f32(vmulq_f32(ds, f[i]), dm));
}
// Bits 2t..2t+1 of 16 bytes (the 2-bit planes of q3_k and q2_k).
inline uint8x16_t plane2(const uint8_t* q, int t) {
  return vandq_u8(vshlq_u8(vld1q_u8(q), vdupq_n_s8(int8_t(-2 * t))), vdupq_n_u8(3));
}

// q4_k: element 64c + 32h + l is nibble h of qs[32c + l]; sub-block 2c + h.
//   y = d * sc * q - dmin * m   (reference order: (d * sc) * q, then minus dmin * m)
void dequant_q4_k(const mm_problem& p, int64_t m, int64_t k0, int64_t k1, float* out) {
  const auto* b = reinterpret_cast<const quant::block_q4_k*>(row_ptr(p.w, p.w_stride, m)) + k0 / 256;
  for (int64_t k = k0; k < k1; k += 256, ++b, out += 256) {
    uint8_t sm[16];
    unpack6(b->scales, sm);
    const float d = half_to_float(b->d), dmin = half_to_float(b->dmin);
    for (int c = 0; c < 4; ++c) {
      const uint8x16_t b0 = vld1q_u8(b->qs + 32 * c), b1 = vld1q_u8(b->qs + 32 * c + 16);
      for (int h = 0; h < 2; ++h) {
        const int j = 2 * c + h;
        const float32x4_t ds = vdupq_n_f32(d * float(sm[j])), dm = vdupq_n_f32(dmin * float(sm[8 + j]));
        const uint8x16_t n0 = h ? vshrq_n_u8(b0, 4) : vandq_u8(b0, vdupq_n_u8(15));
        const uint8x16_t n1 = h ? vshrq_n_u8(b1, 4) : vandq_u8(b1, vdupq_n_u8(15));
        store_asym16(n0, ds, dm, out + 64 * c + 32 * h);
        store_asym16(n1, ds, dm, out + 64 * c + 32 * h + 16);
      }
    }
  }
}

// q3_k: element i = 128c + 32t + l has bits 0..1 in plane t of qs[32c + l] and bit 2 in bit i / 32
// of hmask[l]; sub-block i / 16 (16 elements: one plane, one half of the 32 bytes).
//   y = d * (sc - 32) * (code - 4)
void dequant_q3_k(const mm_problem& p, int64_t m, int64_t k0, int64_t k1, float* out) {
  const auto* b = reinterpret_cast<const quant::block_q3_k*>(row_ptr(p.w, p.w_stride, m)) + k0 / 256;
  for (int64_t k = k0; k < k1; k += 256, ++b, out += 256) {
    uint8_t v[16];
    unpack6(b->scales, v);
    const float d = half_to_float(b->d);
    for (int j = 0; j < 16; ++j) {
      const int i0 = 16 * j, c = i0 / 128, t = i0 / 32 % 4, l0 = i0 % 32;
      const uint8x16_t lo = plane2(b->qs + 32 * c + l0, t);
      const uint8x16_t hi = vandq_u8(vshlq_u8(vld1q_u8(b->hmask + l0), vdupq_n_s8(int8_t(-(i0 / 32)))), vdupq_n_u8(1));
      const int8x16_t code = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, vshlq_n_u8(hi, 2))), vdupq_n_s8(4));
      const float32x4_t ds = vdupq_n_f32(d * float(int(v[j]) - 32));
      float32x4_t f[4];
      s8x16_to_f32(code, f);
      for (int i = 0; i < 4; ++i) vst1q_f32(out + i0 + 4 * i, vmulq_f32(ds, f[i]));
    }
  }
}

// q2_k: element i = 128c + 32t + l in plane t of qs[32c + l]; sub-block i / 16, scales[j] holds
// sc (low nibble) and m (high nibble).   y = d * sc * q - dmin * m
void dequant_q2_k(const mm_problem& p, int64_t m, int64_t k0, int64_t k1, float* out) {
  const auto* b = reinterpret_cast<const quant::block_q2_k*>(row_ptr(p.w, p.w_stride, m)) + k0 / 256;
  for (int64_t k = k0; k < k1; k += 256, ++b, out += 256) {
    const float d = half_to_float(b->d), dmin = half_to_float(b->dmin);
    for (int j = 0; j < 16; ++j) {
      const int i0 = 16 * j, c = i0 / 128, t = i0 / 32 % 4, l0 = i0 % 32;
      const uint8_t s = b->scales[j];
      const float32x4_t ds = vdupq_n_f32(d * float(s & 15)), dm = vdupq_n_f32(dmin * float(s >> 4));
      store_asym16(plane2(b->qs + 32 * c + l0, t), ds, dm, out + i0);
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

// y[n][m0 + r] (+)= wt[r] . x[n][k0 .. k0 + kc) for r < rows, all n. wt rows have stride kKC.
void tile_dots(const mm_problem& p, const float* wt, int64_t rows, int64_t m0, int64_t k0, int64_t kc) {
  const int64_t k8 = kc / 8 * 8;
  for (int64_t n = 0; n < p.N; ++n) {
    const float* x = xrow(p, n) + k0;
    float* y = yrow(p, n) + m0;
    for (int64_t r = 0; r < rows; r += 4) {
      const int R = int(min64(4, rows - r));
      float32x4_t a[4][2];
      for (int i = 0; i < 4; ++i) a[i][0] = a[i][1] = vdupq_n_f32(0.0f);
      for (int64_t k = 0; k < k8; k += 8) {
        const float32x4_t x0 = vld1q_f32(x + k), x1 = vld1q_f32(x + k + 4);
        for (int i = 0; i < 4; ++i) {
          if (i >= R) break;
          a[i][0] = vfmaq_f32(a[i][0], vld1q_f32(wt + (r + i) * kKC + k), x0);
          a[i][1] = vfmaq_f32(a[i][1], vld1q_f32(wt + (r + i) * kKC + k + 4), x1);
        }
      }
      for (int i = 0; i < R; ++i) {
        float s = vaddvq_f32(vaddq_f32(a[i][0], a[i][1]));
        for (int64_t k = k8; k < kc; ++k) s += wt[(r + i) * kKC + k] * x[k];
        y[r + i] = k0 == 0 ? s : y[r + i] + s;
      }
    }
  }
}

}  // namespace

void qmm_neon_run(const mm_problem& p, int n_threads) {
  if (handle_empty(p)) return;
  const dequant_fn dq = dequantizer(p.wtype);  // kKC is a multiple of every type's block (256 at most)
  parallel(useful_threads(p, n_threads), [&](int tid, int nth) {
    int64_t m0, m1;
    split(p.M, kRows, tid, nth, &m0, &m1);
    alignas(16) float wt[kRows * kKC];
    for (int64_t mt = m0; mt < m1; mt += kRows) {
      const int64_t rows = min64(kRows, m1 - mt);
      for (int64_t k0 = 0; k0 < p.K; k0 += kKC) {
        const int64_t kc = min64(kKC, p.K - k0);
        for (int64_t r = 0; r < rows; ++r) dq(p, mt + r, k0, k0 + kc, wt + r * kKC);
        tile_dots(p, wt, rows, mt, k0, kc);
      }
    }
  });
}

}  // namespace v4::cpu::qmm_arch

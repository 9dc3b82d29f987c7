// NEON (AArch64) kernels for fp8_e4m3, mxfp4 and q8_0 weights, exact x (x_rounding 0).
//
// As the AVX2 file: tiles of kRows weight rows x kKC elements are dequantized to f32 with the
// reference dequantizers' f32 operations (bit for bit their weights; subnormals kept, FPCR.FZ is
// off on Linux), then every x row takes its dot products with the tile's rows (4 rows x 8 k per
// step, FMLA), and the partial sums of the K blocks are added in y. Threads split M in tiles; K is
// never split, so the results do not depend on the thread count.
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

using dequant_fn = void (*)(const mm_problem&, int64_t, int64_t, int64_t, float*);

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
  const dequant_fn dq = p.wtype == dtype::mxfp4 ? dequant_mxfp4 : p.wtype == dtype::fp8_e4m3 ? dequant_fp8 : dequant_q8_0;
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

// NEON (AArch64) matmul for f32, f16 and bf16 weights. Exact: weights widened to f32 exactly
// (f16 with FCVTL, which is base AArch64 AdvSIMD, so no FP16-arithmetic extension is needed and
// there is no matmul_neon_fp16.cpp; bf16 with a 16-bit shift), f32 FMA, x used as given.
//
// One path for all N: dot products, a tile of 4 weight rows x up to 4 x rows (16 accumulators of
// 4 lanes, 4 k per step), one horizontal sum per output at the end. Weight rows
// are read once from memory per tile row block and re-read from cache for the later x groups.
// Threads split M.
#include <arm_neon.h>

#include "backends/cpu/arch/matmul_arch.h"

namespace v4::cpu::mm_arch {
namespace {

struct wf32 {
  static constexpr int kBytes = 4;
  static float32x4_t load(const char* p) { return vld1q_f32(reinterpret_cast<const float*>(p)); }
  static float one(const char* p) { return *reinterpret_cast<const float*>(p); }
};
struct wf16 {
  static constexpr int kBytes = 2;
  static float32x4_t load(const char* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p)))); }
  static float one(const char* p) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vld1_dup_u16(reinterpret_cast<const uint16_t*>(p)))), 0);
  }
};
struct wbf16 {
  static constexpr int kBytes = 2;
  static float32x4_t load(const char* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p)), 16)); }
  static float one(const char* p) {
    const uint32_t bits = uint32_t(*reinterpret_cast<const uint16_t*>(p)) << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
  }
};

// y[c][r] = sum_k w[r][k] * x[c][k] for r < R, c < C.
template <class W, int R, int C>
inline void dot_tile(const char* w, size_t ws, const char* x, size_t xs, int64_t K, char* y, size_t ys) {
  float32x4_t acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = vdupq_n_f32(0.0f);
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    float32x4_t xv[C];
    for (int c = 0; c < C; ++c) xv[c] = vld1q_f32(reinterpret_cast<const float*>(x + c * xs) + k);
    for (int r = 0; r < R; ++r) {
      const float32x4_t wv = W::load(w + r * ws + k * W::kBytes);
      for (int c = 0; c < C; ++c) acc[r][c] = vfmaq_f32(acc[r][c], wv, xv[c]);
    }
  }
  float sum[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) sum[r][c] = vaddvq_f32(acc[r][c]);
  for (; k < K; ++k) {
    for (int r = 0; r < R; ++r) {
      const float wv = W::one(w + r * ws + k * W::kBytes);
      for (int c = 0; c < C; ++c) sum[r][c] = __builtin_fmaf(wv, reinterpret_cast<const float*>(x + c * xs)[k], sum[r][c]);
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < R; ++r) reinterpret_cast<float*>(y + c * ys)[r] = sum[r][c];
}

template <class W, int R>
inline void dot_block(const mm_problem& p, int64_t m) {
  const char* w = row_ptr(p.w, p.w_stride, m);
  for (int64_t n = 0; n < p.N; n += 4) {
    const char* x = row_ptr(p.x, p.x_stride, n);
    char* y = reinterpret_cast<char*>(yrow(p, n) + m);
    switch (min64(4, p.N - n)) {
      case 1: dot_tile<W, R, 1>(w, p.w_stride, x, p.x_stride, p.K, y, p.y_stride); break;
      case 2: dot_tile<W, R, 2>(w, p.w_stride, x, p.x_stride, p.K, y, p.y_stride); break;
      case 3: dot_tile<W, R, 3>(w, p.w_stride, x, p.x_stride, p.K, y, p.y_stride); break;
      default: dot_tile<W, R, 4>(w, p.w_stride, x, p.x_stride, p.K, y, p.y_stride); break;
    }
  }
}

template <class W>
void run_typed(const mm_problem& p, int n_threads) {
  parallel(useful_threads(p, n_threads), [&](int tid, int nth) {
    int64_t m0, m1;
    split(p.M, 16, tid, nth, &m0, &m1);
    int64_t m = m0;
    for (; m + 4 <= m1; m += 4) dot_block<W, 4>(p, m);
    for (; m < m1; ++m) dot_block<W, 1>(p, m);
  });
}

}  // namespace

void neon_run(const mm_problem& p, int n_threads) {
  if (handle_empty(p)) return;
  switch (p.wtype) {
    case dtype::f32: run_typed<wf32>(p, n_threads); break;
    case dtype::f16: run_typed<wf16>(p, n_threads); break;
    case dtype::bf16: run_typed<wbf16>(p, n_threads); break;
    default: break;
  }
}

}  // namespace v4::cpu::mm_arch

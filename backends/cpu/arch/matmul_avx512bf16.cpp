// AVX512-BF16 matmul for bf16 weights: x is rounded to bf16 (round to nearest even; f32
// subnormals flush to zero), products of two bf16 are exact in f32, sums are f32 (vdpbf16ps:
// two products per f32 lane per instruction, RNE, subnormal results flushed). x_rounding = 2^-8.
//
//  * decode (N <= 16): x is rounded once per call into bf16 rows padded to a multiple of 32;
//    dot products over 32 k per step (R weight rows x up to 4 x rows, K in blocks when there
//    are several groups of x rows), one horizontal sum per output at the end. Each weight row
//    is read once from memory.
//  * prefill: packed outer products like matmul_avx512.cpp, but on k pairs: weight panels of
//    48 rows as [k/2][48][2] bf16 (16 x 16 transposes of 32-bit pairs), x panels of 8 rows as
//    [k/2][8][2]; the micro-kernel broadcasts one x pair and does 24 vdpbf16ps per k pair into
//    an 8 x 48 tile of y held in 24 zmm registers.
#include "backends/cpu/arch/matmul_arch.h"  // also <immintrin.h>

namespace v4::cpu::mm_arch {
namespace {

inline __m512 dp(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(a), reinterpret_cast<__m512bh>(b));
}

// ---- decode ---------------------------------------------------------------------------------
constexpr int64_t kDecodeMaxN = 16;

constexpr int64_t kDecodeBlock = 2048;  // bytes of each weight row per K block (N > 4)

// acc[c][r] (+)= w[r][k] * xb[c][k] over k in [k0, k1), 16 lanes of pair sums per output (summed
// by the caller). xb rows are bf16, zero-padded past K to a multiple of 32; xs is their stride
// in elements.
template <int R, int C>
inline void dot_part(const char* w, size_t ws, const uint16_t* xb, int64_t xs, int64_t k0, int64_t k1, int64_t K,
                     __m512* accm, bool first) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = first ? _mm512_setzero_ps() : accm[c * R + r];
  int64_t k = k0;
  for (; k + 32 <= k1; k += 32) {
    __m512i xv[C];
    for (int c = 0; c < C; ++c) xv[c] = _mm512_load_si512(xb + c * xs + k);
    for (int r = 0; r < R; ++r) {
      const __m512i wv = _mm512_loadu_si512(w + r * ws + k * 2);
      for (int c = 0; c < C; ++c) acc[r][c] = dp(acc[r][c], wv, xv[c]);
    }
  }
  if (k < k1) {  // only at K: weights past K are masked to 0, xb is already 0 there
    const __mmask32 mk = first_lanes32(K - k);
    __m512i xv[C];
    for (int c = 0; c < C; ++c) xv[c] = _mm512_load_si512(xb + c * xs + k);
    for (int r = 0; r < R; ++r) {
      const __m512i wv = _mm512_maskz_loadu_epi16(mk, w + r * ws + k * 2);
      for (int c = 0; c < C; ++c) acc[r][c] = dp(acc[r][c], wv, xv[c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) accm[c * R + r] = acc[r][c];
}

// Rows [m, m + R) against all N rows of x in groups of up to 4; K in blocks (when there are
// several groups) so the R weight rows stay in L1 while the groups pass over them.
template <int R>
inline void dot_block(const mm_problem& p, const uint16_t* xb, int64_t xs, int64_t m) {
  const char* w = row_ptr(p.w, p.w_stride, m);
  const int64_t kb = p.N <= 4 ? round_up(p.K, 32) : kDecodeBlock / 2;
  alignas(64) __m512 acc[R * kDecodeMaxN];
  for (int64_t k0 = 0; k0 < p.K; k0 += kb) {
    const int64_t k1 = min64(p.K, k0 + kb);
    for (int64_t n = 0; n < p.N; n += 4) {
      const uint16_t* x = xb + n * xs;
      __m512* a = acc + n * R;
      switch (min64(4, p.N - n)) {
        case 1: dot_part<R, 1>(w, p.w_stride, x, xs, k0, k1, p.K, a, k0 == 0); break;
        case 2: dot_part<R, 2>(w, p.w_stride, x, xs, k0, k1, p.K, a, k0 == 0); break;
        case 3: dot_part<R, 3>(w, p.w_stride, x, xs, k0, k1, p.K, a, k0 == 0); break;
        default: dot_part<R, 4>(w, p.w_stride, x, xs, k0, k1, p.K, a, k0 == 0); break;
      }
    }
  }
  for (int64_t n = 0; n < p.N; ++n)
    for (int r = 0; r < R; ++r) yrow(p, n)[m + r] = _mm512_reduce_add_ps(acc[n * R + r]);
}

template <int R>
void decode_rows(const mm_problem& p, const uint16_t* xb, int64_t xs, int64_t m0, int64_t m1) {
  int64_t m = m0;
  for (; m + R <= m1; m += R) dot_block<R>(p, xb, xs, m);
  for (; m < m1; ++m) dot_block<1>(p, xb, xs, m);
}

// x rounded to bf16 once per call: rows of K rounded up to 32 (zeros past K), one cache line
// more than a multiple of 4 KiB apart so that the rows read in step do not share L1 sets.
bool decode(const mm_problem& p, int n_threads) {
  const int64_t k32 = round_up(p.K, 32), xs = round_up(k32, 2048) + 32;
  uint16_t* xb = static_cast<uint16_t*>(mm_scratch(kShared, size_t(p.N * xs) * 2));
  if (!xb) return false;
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t k = 0; k < k32; k += 32) _mm512_store_ps(xb + n * xs + k, load_x_bf16x32(xrow(p, n), k, p.K));
  parallel(useful_threads(p, n_threads), [&](int tid, int nth) {
    int64_t m0, m1;
    split(p.M, 16, tid, nth, &m0, &m1);
    if (p.N <= 2)
      decode_rows<8>(p, xb, xs, m0, m1);
    else
      decode_rows<4>(p, xb, xs, m0, m1);
  });
  return true;
}

// ---- prefill --------------------------------------------------------------------------------
constexpr int kMR = 48;         // weight rows per panel
constexpr int kNR = 8;          // x rows per panel
constexpr int64_t kKC = 1024;   // K block (at most, even): one weight panel = 96 KiB, in L2
constexpr int64_t kNC = 240;    // x rows packed per block: 480 KiB, in L2

// K blocks of at most kKC, all of about the same size (a multiple of 32).
inline int64_t k_block(int64_t K) { return round_up(div_up(K, div_up(K, kKC)), 32); }

// wp[k/2][kMR][2] = w[m][k0 + k] for m < mv (0 past mv and past kc).
void pack_w(const char* w, size_t ws, int64_t mv, int64_t k0, int64_t kc, uint32_t* wp) {
  for (int h = 0; h < kMR / 16; ++h) {
    for (int64_t kk = 0; kk < kc; kk += 32) {
      const int64_t kn = min64(32, kc - kk);
      const __mmask32 mk = first_lanes32(kn);
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        const int64_t m = h * 16 + i;
        r[i] = m < mv ? _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(mk, w + m * ws + (k0 + kk) * 2)) : _mm512_setzero_ps();
      }
      transpose16(r);
      const int64_t pairs = div_up(kn, 2);
      for (int64_t t = 0; t < pairs; ++t) _mm512_store_ps(wp + (kk / 2 + t) * kMR + h * 16, r[t]);
    }
  }
}

// xp[k/2][kNR][2] = bf16(x[n0 + j][k0 + k]) for j < nv (0 past nv and past kc).
void pack_x(const mm_problem& p, int64_t n0, int64_t nv, int64_t k0, int64_t kc, uint32_t* xp) {
  for (int64_t kk = 0; kk < kc; kk += 32) {
    __m512 r[16];
    for (int j = 0; j < 16; ++j) r[j] = j < nv ? load_x_bf16x32(xrow(p, n0 + j) + k0, kk, kc) : _mm512_setzero_ps();
    transpose16(r);
    const int64_t pairs = div_up(min64(32, kc - kk), 2);
    for (int64_t t = 0; t < pairs; ++t) _mm512_mask_storeu_ps(xp + (kk / 2 + t) * kNR, first_lanes(kNR), r[t]);
  }
}

// The kNR x kMR tile of y (+)= sum over k pairs; only j < nv, m < mv are written. The rows of
// y it adds to are prefetched first.
void micro(const uint32_t* wp, const uint32_t* xp, int64_t kp, float* y, size_t ys, int64_t mv, int64_t nv, bool add) {
  constexpr int H = kMR / 16;
  __m512 acc[kNR][H];
  for (int j = 0; j < kNR; ++j)
    for (int h = 0; h < H; ++h) acc[j][h] = _mm512_setzero_ps();
  if (add) {
    for (int j = 0; j < kNR; ++j)
      for (int h = 0; h < H; ++h) _mm_prefetch(reinterpret_cast<const char*>(y) + j * ys + 64 * h, _MM_HINT_T0);
  }
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
  if (nv == kNR) {
    for (int j = 0; j < kNR; ++j) {
      float* yr = reinterpret_cast<float*>(reinterpret_cast<char*>(y) + j * ys);
      for (int h = 0; h < H; ++h) {
        __m512 a = acc[j][h];
        if (add) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(mk[h], yr + 16 * h));
        _mm512_mask_storeu_ps(yr + 16 * h, mk[h], a);
      }
    }
    return;
  }
  alignas(64) float tile[kNR][kMR];
  for (int j = 0; j < kNR; ++j)
    for (int h = 0; h < H; ++h) _mm512_store_ps(tile[j] + 16 * h, acc[j][h]);
  for (int64_t j = 0; j < nv; ++j) {
    float* yr = reinterpret_cast<float*>(reinterpret_cast<char*>(y) + j * ys);
    for (int h = 0; h < H; ++h) {
      __m512 a = _mm512_load_ps(tile[j] + 16 * h);
      if (add) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(mk[h], yr + 16 * h));
      _mm512_mask_storeu_ps(yr + 16 * h, mk[h], a);
    }
  }
}

// Rows [mb, me) x columns [nb, ne) of p with the packed kernel; false when out of scratch.
bool prefill_part(const mm_problem& p, int64_t mb, int64_t me, int64_t nb, int64_t ne) {
  const int64_t K = p.K, kcb = k_block(K);
  const int64_t kc_max = min64(kcb, round_up(K, 2));
  uint32_t* wp = static_cast<uint32_t*>(mm_scratch(kPrivate, size_t(kMR + round_up(kNC, kNR)) * size_t(kc_max / 2) * 4));
  if (!wp) return false;
  uint32_t* xp = wp + kMR * kc_max / 2;
  for (int64_t n0 = nb; n0 < ne; n0 += kNC) {
    const int64_t nn = min64(kNC, ne - n0);
    for (int64_t k0 = 0; k0 < K; k0 += kcb) {
      const int64_t kc = min64(kcb, K - k0), kp = div_up(kc, 2);
      for (int64_t j = 0; j < nn; j += kNR) pack_x(p, n0 + j, min64(kNR, nn - j), k0, kc, xp + j * kp);
      for (int64_t m0 = mb; m0 < me; m0 += kMR) {
        const int64_t mv = min64(kMR, me - m0);
        pack_w(row_ptr(p.w, p.w_stride, m0), p.w_stride, mv, k0, kc, wp);
        for (int64_t j = 0; j < nn; j += kNR)
          micro(wp, xp + j * kp, kp, yrow(p, n0 + j) + m0, p.y_stride, mv, min64(kNR, nn - j), k0 > 0);
      }
    }
  }
  return true;
}

bool prefill(const mm_problem& p, int n_threads) {
  bool ok = true;
  parallel(useful_threads(p, n_threads), [&](int tid, int nth) {
    int tm = 1, tn = 1;
    grid(div_up(p.M, kMR), div_up(p.N, kNR), nth, &tm, &tn);
    int64_t mb, me, nb, ne;
    split(p.M, kMR, tid % tm, tm, &mb, &me);
    split(p.N, kNR, tid / tm, tn, &nb, &ne);
    if (mb < me && nb < ne && !prefill_part(p, mb, me, nb, ne)) {
#pragma omp atomic write
      ok = false;
    }
  });
  return ok;
}

}  // namespace

void avx512bf16_run(const mm_problem& p, int n_threads) {
  if (handle_empty(p)) return;
  if (p.wtype != dtype::bf16) return;
  const bool ok = p.N <= kDecodeMaxN ? decode(p, n_threads) : prefill(p, n_threads);
  // Out of scratch memory (a few hundred KiB): the exact AVX-512 kernel needs none for decode
  // and computes the same function up to x's rounding, which only makes it more precise.
  if (!ok) avx512_run(p, n_threads);
}

}  // namespace v4::cpu::mm_arch

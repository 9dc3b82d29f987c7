// AVX2 + FMA + F16C matmul for f32, f16 and bf16 weights. Exact: weights converted to f32
// exactly (F16C for f16, a 16-bit shift for bf16), f32 products and sums, x used as given.
//
// Same two paths as matmul_avx512.cpp, 8 lanes wide:
//  * decode (N <= 16): dot products, R weight rows x up to 4 x rows per step, one horizontal sum
//    per output at the end; the K tail (< 8) goes through a zero-padded copy. Each weight row
//    block is read from memory once; later groups of x rows re-read it from cache.
//  * prefill: packed outer products, panels of kMR = 16 weight rows ([k][16], two ymm) and
//    kNR = 6 x rows; a 6 x 16 tile of y in 12 ymm accumulators.
#include <immintrin.h>

#include "backends/cpu/arch/matmul_arch.h"

namespace v4::cpu::mm_arch {
namespace {

// ---- weight loaders: 8 consecutive weights as f32 ---------------------------------------------
// part(p, n) reads only the first n (< 8) elements and zeroes the other lanes.
struct wf32 {
  static constexpr int kBytes = 4;
  static __m256 load(const char* p) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p)); }
  static __m256 part(const char* p, int64_t n) {
    alignas(32) float t[8] = {};
    for (int64_t i = 0; i < n; ++i) t[i] = reinterpret_cast<const float*>(p)[i];
    return _mm256_load_ps(t);
  }
};
struct wf16 {
  static constexpr int kBytes = 2;
  static __m256 load(const char* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static __m256 part(const char* p, int64_t n) {
    alignas(16) uint16_t t[8] = {};
    for (int64_t i = 0; i < n; ++i) t[i] = reinterpret_cast<const uint16_t*>(p)[i];
    return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
  }
};
struct wbf16 {
  static constexpr int kBytes = 2;
  static __m256 widen(__m128i h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }
  static __m256 load(const char* p) { return widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static __m256 part(const char* p, int64_t n) {
    alignas(16) uint16_t t[8] = {};
    for (int64_t i = 0; i < n; ++i) t[i] = reinterpret_cast<const uint16_t*>(p)[i];
    return widen(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
  }
};

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ---- decode ---------------------------------------------------------------------------------
constexpr int64_t kDecodeMaxN = 16;

// y[c][r] = sum_k w[r][k] * x[c][k] for r < R, c < C (row-0 pointers, strides in bytes).
template <class W, int R, int C>
inline void dot_tile(const char* w, size_t ws, const char* x, size_t xs, int64_t K, char* y, size_t ys) {
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 xv[C];
    for (int c = 0; c < C; ++c) xv[c] = _mm256_loadu_ps(reinterpret_cast<const float*>(x + c * xs) + k);
    for (int r = 0; r < R; ++r) {
      const __m256 wv = W::load(w + r * ws + k * W::kBytes);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
    }
  }
  if (k < K) {
    __m256 xv[C];
    for (int c = 0; c < C; ++c) xv[c] = wf32::part(x + c * xs + k * 4, K - k);
    for (int r = 0; r < R; ++r) {
      const __m256 wv = W::part(w + r * ws + k * W::kBytes, K - k);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
    }
  }
  for (int c = 0; c < C; ++c)
    for (int r = 0; r < R; ++r) reinterpret_cast<float*>(y + c * ys)[r] = hsum(acc[r][c]);
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

template <class W, int R>
void decode_rows(const mm_problem& p, int64_t m0, int64_t m1) {
  int64_t m = m0;
  for (; m + R <= m1; m += R) dot_block<W, R>(p, m);
  for (; m < m1; ++m) dot_block<W, 1>(p, m);
}

template <class W>
void decode(const mm_problem& p_in, int n_threads) {
  // x rows copied one cache line more than a multiple of 4 KiB apart: at the usual power-of-two
  // stride the rows read in step map to the same L1 sets and evict each other.
  mm_problem p = p_in;
  if (p.N > 1) {
    const size_t xs = size_t(round_up(p.K * 4, 4096) + 64);
    char* xc = static_cast<char*>(mm_scratch(kShared, xs * size_t(p.N)));
    if (xc) {  // (without scratch memory: the same, a little slower)
      for (int64_t n = 0; n < p.N; ++n) __builtin_memcpy(xc + n * xs, xrow(p, n), size_t(p.K) * 4);
      p.x = reinterpret_cast<const float*>(xc);
      p.x_stride = xs;
    }
  }
  parallel(useful_threads(p, n_threads), [&](int tid, int nth) {
    int64_t m0, m1;
    split(p.M, 16, tid, nth, &m0, &m1);
    if (p.N <= 2)
      decode_rows<W, 4>(p, m0, m1);
    else
      decode_rows<W, 2>(p, m0, m1);  // 2 rows x 4 x rows: 8 accumulators of 16 ymm
  });
}

// ---- prefill --------------------------------------------------------------------------------
constexpr int kMR = 16;
constexpr int kNR = 6;
constexpr int64_t kKC = 256;   // one weight panel = 16 KiB of f32
constexpr int64_t kNC = 240;

// In-register transpose of 8 x 8 32-bit elements.
inline void transpose8(__m256 r[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    s[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
  }
}

// wp[k][16] = w[m][k0 + k] as f32 for m < mv, 0 past mv.
template <class W>
void pack_w(const char* w, size_t ws, int64_t mv, int64_t k0, int64_t kc, float* wp) {
  for (int h = 0; h < kMR / 8; ++h) {
    for (int64_t kk = 0; kk < kc; kk += 8) {
      const int64_t kn = min64(8, kc - kk);
      __m256 r[8];
      for (int i = 0; i < 8; ++i) {
        const int64_t m = h * 8 + i;
        const char* src = w + m * ws + (k0 + kk) * W::kBytes;
        r[i] = m >= mv ? _mm256_setzero_ps() : kn == 8 ? W::load(src) : W::part(src, kn);
      }
      transpose8(r);
      for (int64_t t = 0; t < kn; ++t) _mm256_store_ps(wp + (kk + t) * kMR + h * 8, r[t]);
    }
  }
}

void pack_x(const mm_problem& p, int64_t n0, int64_t nv, int64_t k0, int64_t kc, float* xp) {
  for (int j = 0; j < kNR; ++j) {
    if (j < nv) {
      const float* x = xrow(p, n0 + j) + k0;
      for (int64_t k = 0; k < kc; ++k) xp[k * kNR + j] = x[k];
    } else {
      for (int64_t k = 0; k < kc; ++k) xp[k * kNR + j] = 0.0f;
    }
  }
}

// Stores the first n (<= 8) lanes of v at y, adding what is there when add is set.
inline void store_part(float* y, __m256 v, int64_t n, bool add) {
  if (n >= 8) {
    if (add) v = _mm256_add_ps(v, _mm256_loadu_ps(y));
    _mm256_storeu_ps(y, v);
    return;
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  for (int64_t i = 0; i < n; ++i) y[i] = add ? y[i] + t[i] : t[i];
}

void micro(const float* wp, const float* xp, int64_t kc, float* y, size_t ys, int64_t mv, int64_t nv, bool add) {
  __m256 acc[kNR][2];
  for (int j = 0; j < kNR; ++j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 w0 = _mm256_load_ps(wp + k * kMR), w1 = _mm256_load_ps(wp + k * kMR + 8);
    for (int j = 0; j < kNR; ++j) {
      const __m256 b = _mm256_broadcast_ss(xp + k * kNR + j);
      acc[j][0] = _mm256_fmadd_ps(w0, b, acc[j][0]);
      acc[j][1] = _mm256_fmadd_ps(w1, b, acc[j][1]);
    }
  }
  if (nv == kNR && mv == kMR) {
    for (int j = 0; j < kNR; ++j) {
      float* yr = reinterpret_cast<float*>(reinterpret_cast<char*>(y) + j * ys);
      store_part(yr, acc[j][0], 8, add);
      store_part(yr + 8, acc[j][1], 8, add);
    }
    return;
  }
  alignas(32) float tile[kNR][kMR];
  for (int j = 0; j < kNR; ++j) {
    _mm256_store_ps(tile[j], acc[j][0]);
    _mm256_store_ps(tile[j] + 8, acc[j][1]);
  }
  for (int64_t j = 0; j < nv; ++j) {
    float* yr = reinterpret_cast<float*>(reinterpret_cast<char*>(y) + j * ys);
    for (int64_t m = 0; m < mv; ++m) yr[m] = add ? yr[m] + tile[j][m] : tile[j][m];
  }
}

template <class W>
void prefill(const mm_problem& p, int n_threads) {
  const int64_t K = p.K;
  parallel(useful_threads(p, n_threads), [&](int tid, int nth) {
    int tm = 1, tn = 1;
    grid(div_up(p.M, kMR), div_up(p.N, kNR), nth, &tm, &tn);
    int64_t mb, me, nb, ne;
    split(p.M, kMR, tid % tm, tm, &mb, &me);
    split(p.N, kNR, tid / tm, tn, &nb, &ne);
    if (mb >= me || nb >= ne) return;
    const int64_t kc_max = min64(kKC, K);
    float* wp = static_cast<float*>(mm_scratch(kPrivate, size_t(kMR + round_up(kNC, kNR)) * size_t(kc_max) * 4));
    if (!wp) {  // no scratch: the dot-product path needs none
      const mm_problem s = sub_problem(p, mb, me, nb, ne);
      decode_rows<W, 2>(s, 0, s.M);
      return;
    }
    float* xp = wp + kMR * kc_max;
    for (int64_t n0 = nb; n0 < ne; n0 += kNC) {
      const int64_t nn = min64(kNC, ne - n0);
      for (int64_t k0 = 0; k0 < K; k0 += kKC) {
        const int64_t kc = min64(kKC, K - k0);
        for (int64_t j = 0; j < nn; j += kNR) pack_x(p, n0 + j, min64(kNR, nn - j), k0, kc, xp + j * kc);
        for (int64_t m0 = mb; m0 < me; m0 += kMR) {
          const int64_t mv = min64(kMR, me - m0);
          pack_w<W>(row_ptr(p.w, p.w_stride, m0), p.w_stride, mv, k0, kc, wp);
          for (int64_t j = 0; j < nn; j += kNR)
            micro(wp, xp + j * kc, kc, yrow(p, n0 + j) + m0, p.y_stride, mv, min64(kNR, nn - j), k0 > 0);
        }
      }
    }
  });
}

template <class W>
void run_typed(const mm_problem& p, int n_threads) {
  if (p.N <= kDecodeMaxN)
    decode<W>(p, n_threads);
  else
    prefill<W>(p, n_threads);
}

}  // namespace

void avx2_run(const mm_problem& p, int n_threads) {
  if (handle_empty(p)) return;
  switch (p.wtype) {
    case dtype::f32: run_typed<wf32>(p, n_threads); break;
    case dtype::f16: run_typed<wf16>(p, n_threads); break;
    case dtype::bf16: run_typed<wbf16>(p, n_threads); break;
    default: break;
  }
}

}  // namespace v4::cpu::mm_arch

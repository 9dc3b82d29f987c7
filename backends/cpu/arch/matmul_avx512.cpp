// AVX-512 (F/BW/VL/DQ) matmul for f32, f16 and bf16 weights. Exact: the weights are converted
// to f32 exactly, products and sums are f32 (FMA), x is used as given.
//
// Two paths:
//  * decode (N <= 16): dot products. A block of R weight rows is read once from memory and
//    serves all N rows of x (in groups of up to 4; with several groups K goes in blocks so the R
//    rows stay in L1 between groups). 16 k per step in 16 lanes, one horizontal sum per output
//    at the end. x is first copied to rows that do not alias in L1 (padded_stride).
//  * prefill: packed outer products. Per K block, weights are packed (and converted) into panels
//    of kMR = 48 rows stored k-major ([k][48], three zmm per k) and x into panels of kNR = 8
//    rows ([k][8]); the micro-kernel keeps an 8 x 48 tile of y in 24 zmm registers and does 24
//    FMAs per k with 3 loads and 8 broadcasts. No horizontal sums: every output is one lane,
//    summed in k order within a K block, then added to y block by block.
//    (48 x 8 measured ahead of 32 x 12 and 64 x 6 on Zen 4; kKC and kNC from a sweep, see
//    tools/bench_matmul.cpp.)
// Threads: decode splits M; prefill splits the (M, N) tile grid (grid() in matmul_arch.h).
// No path splits K, so results do not depend on the thread count.
#include "backends/cpu/arch/matmul_arch.h"  // also <immintrin.h>

namespace v4::cpu::mm_arch {
namespace {

// ---- weight loaders: 16 consecutive weights as f32 (masked: lanes past the mask are 0) ------
struct wf32 {
  static constexpr int kBytes = 4;
  static __m512 load(const char* p) { return _mm512_loadu_ps(p); }
  static __m512 load(const char* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
};
struct wf16 {
  static constexpr int kBytes = 2;
  static __m512 load(const char* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static __m512 load(const char* p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
};
struct wbf16 {
  static constexpr int kBytes = 2;
  static __m512 widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static __m512 load(const char* p) { return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static __m512 load(const char* p, __mmask16 m) { return widen(_mm256_maskz_loadu_epi16(m, p)); }
};

// ---- decode ---------------------------------------------------------------------------------
constexpr int64_t kDecodeMaxN = 16;  // dot_block handles at most this many rows of x
constexpr int64_t kDecodeBlockBytes = 2048;  // of each weight row per K block (N > 4)

// acc[c][r] (+)= w[r][k] * x[c][k] over k in [k0, k1), lane by lane (16 partial sums per
// output, summed at the end by the caller). Pointers are to row 0; strides in bytes.
template <class W, int R, int C>
inline void dot_part(const char* w, size_t ws, const char* x, size_t xs, int64_t k0, int64_t k1, __m512* accm, bool first) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = first ? _mm512_setzero_ps() : accm[c * R + r];
  int64_t k = k0;
  for (; k + 16 <= k1; k += 16) {
    __m512 xv[C];
    for (int c = 0; c < C; ++c) xv[c] = _mm512_loadu_ps(reinterpret_cast<const float*>(x + c * xs) + k);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = W::load(w + r * ws + k * W::kBytes);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);
    }
  }
  if (k < k1) {
    const __mmask16 mk = first_lanes(k1 - k);
    __m512 xv[C];
    for (int c = 0; c < C; ++c) xv[c] = _mm512_maskz_loadu_ps(mk, reinterpret_cast<const float*>(x + c * xs) + k);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = W::load(w + r * ws + k * W::kBytes, mk);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) accm[c * R + r] = acc[r][c];
}

// Rows [m, m + R) against all N rows of x, in groups of up to 4. With more than one group, K
// goes in blocks of kDecodeBlockBytes of each weight row, so the R rows stay in L1 while every
// group passes over them (they are read from memory once either way).
template <class W, int R>
inline void dot_block(const mm_problem& p, int64_t m) {
  const char* w = row_ptr(p.w, p.w_stride, m);
  const int64_t kb = p.N <= 4 ? p.K : kDecodeBlockBytes / W::kBytes;
  alignas(64) __m512 acc[R * kDecodeMaxN];
  for (int64_t k0 = 0; k0 < p.K; k0 += kb) {
    const int64_t k1 = min64(p.K, k0 + kb);
    for (int64_t n = 0; n < p.N; n += 4) {
      const char* x = row_ptr(p.x, p.x_stride, n);
      __m512* a = acc + n * R;
      switch (min64(4, p.N - n)) {
        case 1: dot_part<W, R, 1>(w, p.w_stride, x, p.x_stride, k0, k1, a, k0 == 0); break;
        case 2: dot_part<W, R, 2>(w, p.w_stride, x, p.x_stride, k0, k1, a, k0 == 0); break;
        case 3: dot_part<W, R, 3>(w, p.w_stride, x, p.x_stride, k0, k1, a, k0 == 0); break;
        default: dot_part<W, R, 4>(w, p.w_stride, x, p.x_stride, k0, k1, a, k0 == 0); break;
      }
    }
  }
  for (int64_t n = 0; n < p.N; ++n)
    for (int r = 0; r < R; ++r) yrow(p, n)[m + r] = _mm512_reduce_add_ps(acc[n * R + r]);
}

template <class W, int R>
void decode_rows(const mm_problem& p, int64_t m0, int64_t m1) {
  int64_t m = m0;
  for (; m + R <= m1; m += R) dot_block<W, R>(p, m);
  for (; m < m1; ++m) dot_block<W, 1>(p, m);
}

// Rows of x one cache line apart from a multiple of 4 KiB: x rows at a power-of-two stride
// (the usual K * 4) all map to the same L1 sets and evict each other when up to 16 of them are
// read in step.
inline size_t padded_stride(int64_t K, size_t elem) { return size_t(round_up(K * int64_t(elem), 4096) + 64); }

template <class W>
void decode(const mm_problem& p_in, int n_threads) {
  mm_problem p = p_in;
  if (p.N > 1) {
    const size_t xs = padded_stride(p.K, 4);
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
    // One group of x rows: 8 weight rows in flight (8 or 16 accumulators). Several groups:
    // 4 rows (up to 16 accumulators), re-read from L1/L2 by the later groups.
    if (p.N <= 2)
      decode_rows<W, 8>(p, m0, m1);
    else
      decode_rows<W, 4>(p, m0, m1);
  });
}

// ---- prefill --------------------------------------------------------------------------------
constexpr int kMR = 48;        // weight rows per panel (3 zmm of outputs per x row)
constexpr int kNR = 8;         // x rows per panel (broadcast)
constexpr int64_t kKC = 768;   // K block (at most): one weight panel = 144 KiB of f32, in L2
constexpr int64_t kNC = 240;   // x rows packed per block: 720 KiB of f32, in L2

// K blocks of at most kKC, all of about the same size (a multiple of 16).
inline int64_t k_block(int64_t K) { return round_up(div_up(K, div_up(K, kKC)), 16); }

// wp[k][kMR] = w[m][k0 + k] as f32 for m < mv, 0 for the rows past mv.

template <class W>
void pack_w(const char* w, size_t ws, int64_t mv, int64_t k0, int64_t kc, float* wp) {
  for (int h = 0; h < kMR / 16; ++h) {
    for (int64_t kk = 0; kk < kc; kk += 16) {
      const int64_t kn = min64(16, kc - kk);
      const __mmask16 mk = first_lanes(kn);
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        const int64_t m = h * 16 + i;
        r[i] = m < mv ? W::load(w + m * ws + (k0 + kk) * W::kBytes, mk) : _mm512_setzero_ps();
      }
      transpose16(r);
      for (int64_t t = 0; t < kn; ++t) _mm512_store_ps(wp + (kk + t) * kMR + h * 16, r[t]);
    }
  }
}

// xp[k][kNR] = x[n0 + j][k0 + k] for j < nv, 0 past nv.
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

// The kNR x kMR tile: y[j][m] (+)= sum_k xp[k][j] * wp[k][m]; only j < nv, m < mv are
// written. The rows of y it adds to are prefetched first: they were last touched a whole K
// block ago.
void micro(const float* wp, const float* xp, int64_t kc, float* y, size_t ys, int64_t mv, int64_t nv, bool add) {
  constexpr int H = kMR / 16;
  __m512 acc[kNR][H];
  for (int j = 0; j < kNR; ++j)
    for (int h = 0; h < H; ++h) acc[j][h] = _mm512_setzero_ps();
  if (add) {
    for (int j = 0; j < kNR; ++j)
      for (int h = 0; h < H; ++h) _mm_prefetch(reinterpret_cast<const char*>(y) + j * ys + 64 * h, _MM_HINT_T0);
  }
  for (int64_t k = 0; k < kc; ++k) {
    __m512 wv[H];
    for (int h = 0; h < H; ++h) wv[h] = _mm512_load_ps(wp + k * kMR + 16 * h);
    for (int j = 0; j < kNR; ++j) {
      const __m512 b = _mm512_set1_ps(xp[k * kNR + j]);
      for (int h = 0; h < H; ++h) acc[j][h] = _mm512_fmadd_ps(wv[h], b, acc[j][h]);
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

template <class W>
void prefill(const mm_problem& p, int n_threads) {
  const int64_t K = p.K, kcb = k_block(K);
  parallel(useful_threads(p, n_threads), [&](int tid, int nth) {
    int tm = 1, tn = 1;
    grid(div_up(p.M, kMR), div_up(p.N, kNR), nth, &tm, &tn);
    int64_t mb, me, nb, ne;
    split(p.M, kMR, tid % tm, tm, &mb, &me);
    split(p.N, kNR, tid / tm, tn, &nb, &ne);
    if (mb >= me || nb >= ne) return;
    const int64_t kc_max = min64(kcb, K);
    float* wp = static_cast<float*>(mm_scratch(kPrivate, size_t(kMR + round_up(kNC, kNR)) * size_t(kc_max) * 4));
    if (!wp) {  // out of memory for ~1 MiB of scratch: the dot-product path needs none
      for (int64_t n0 = nb; n0 < ne; n0 += kDecodeMaxN) {
        const mm_problem s = sub_problem(p, mb, me, n0, min64(ne, n0 + kDecodeMaxN));
        decode_rows<W, 4>(s, 0, s.M);
      }
      return;
    }
    float* xp = wp + kMR * kc_max;
    for (int64_t n0 = nb; n0 < ne; n0 += kNC) {
      const int64_t nn = min64(kNC, ne - n0);
      for (int64_t k0 = 0; k0 < K; k0 += kcb) {
        const int64_t kc = min64(kcb, K - k0);
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

void avx512_run(const mm_problem& p, int n_threads) {
  if (handle_empty(p)) return;
  switch (p.wtype) {
    case dtype::f32: run_typed<wf32>(p, n_threads); break;
    case dtype::f16: run_typed<wf16>(p, n_threads); break;
    case dtype::bf16: run_typed<wbf16>(p, n_threads); break;
    default: break;  // matmul.cpp only routes the types supports() accepts
  }
}

}  // namespace v4::cpu::mm_arch

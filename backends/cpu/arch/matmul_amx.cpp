// AMX-BF16 matmul for bf16 weights (prefill): x rounded to bf16 like matmul_avx512bf16.cpp,
// products exact, f32 accumulation in the tiles (tdpbf16ps: RNE, subnormals flushed).
// x_rounding = 2^-8.
//
// Tiles (one configuration per thread, reloaded only when the row count of a block changes):
//   tmm4, tmm5  A: 16 rows of w (m) x 32 bf16 of k, from a packed copy of the block (pack_a)
//   tmm6, tmm7  B: 16 k-pairs x 16 columns of x (n) in VNNI order, from xp (pack_x_vnni)
//   tmm0..tmm3  C: f32 16 m x 16 n, i.e. y transposed: C[2a+b] = A_a * B_b
// so one step (32 k) does 4 tdpbf16ps on a 32 m x 32 n block of y. x is rounded and packed
// once per call by all threads, in panels of 16 columns so that every B tile is 1 KiB of
// contiguous memory (N rounded up to 32, K up to 32, zero padded). Loops: columns of x in
// blocks whose packed part fits L2; per 32-row block of w, K in blocks of 256 whose A part is
// packed (zeros past K) and then read from L1 for every 32 columns; the C tiles are parked in a
// per-thread buffer between K blocks and written to y, transposed, at the end. m blocks of
// fewer than 32 rows use tiles with fewer rows (a second configuration), so every shape runs
// on AMX alone. (Measured on 2 threads of a Xeon with AMX, M = K = 4096, N = 512: 1249 GFLOP/s
// against a measured tile peak of 2330; with A tiles loaded straight from the weight rows,
// a power of two apart as a rule, which thrashes a few L1 sets, it was 406.)
//
// GCC 12's _tile_loadconfig declares that it reads 8 bytes, not 64, so the stores that fill the
// configuration can be dropped (this is why llama.cpp's AMX kernels fault when built with it),
// and its _tile_loadd has no memory operand at all, so stores into a buffer that only a tile
// load reads can be dropped or moved past it. Hence the asm below: ldtilecfg takes the whole
// 64-byte struct as its memory operand, and tile loads clobber memory.
#include "backends/cpu/arch/amx_tiles.h"
#include "backends/cpu/arch/matmul_arch.h"  // also <immintrin.h>

namespace v4::cpu::mm_arch {
namespace {

using amx::tile_config;  // arch/amx_tiles.h

#define V4_TILE_LOAD(tmm, base, stride) \
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #tmm ::"r"(base), "r"(long(stride)) : "memory")
#define V4_TILE_STORE(tmm, base, stride) \
  __asm__ volatile("tilestored %%tmm" #tmm ", (%0,%1,1)" ::"r"(base), "r"(long(stride)) : "memory")
#define V4_TILE_ZERO(tmm) __asm__ volatile("tilezero %%tmm" #tmm ::)
#define V4_TILE_DP(c, a, b) __asm__ volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::)

// rows0: rows of the first 16-row half of the m block (1..16); rows1: of the second (0..16).
void load_config(int rows0, int rows1) {
  const tile_config cfg = amx::block_config(rows0, rows1);
  __asm__ volatile("ldtilecfg %0" ::"m"(cfg));
}

// xp: panels of 16 columns of x, each [K32/2][16][2] bf16 = bf16(x[n][k]) (0 past N and K), so
// a B tile (16 k-pairs x 16 columns) is 1 KiB of contiguous memory. Rows [nb, ne) of x, 16 at
// a time.
void pack_x_vnni(const mm_problem& p, uint32_t* xp, int64_t k32, int64_t nb, int64_t ne) {
  for (int64_t n0 = nb; n0 < ne; n0 += 16) {
    uint32_t* panel = xp + (n0 / 16) * (k32 / 2) * 16;
    for (int64_t k = 0; k < k32; k += 32) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = n0 + i < p.N ? load_x_bf16x32(xrow(p, n0 + i), k, p.K) : _mm512_setzero_ps();
      transpose16(r);  // r[t] = pair t of the 16 rows
      for (int t = 0; t < 16; ++t) _mm512_store_ps(panel + (k / 2 + t) * 16, r[t]);
    }
  }
}

// ap: rows [m0, m0 + mv) of w, k in [k0, k1) (k1 - k0 a multiple of 32), as one 32 x 32 block
// of bf16 per 32 k (2 KiB: the A0 tile, then the A1 tile), zeros past K. Weight rows are often
// a power of two apart, so tiles loaded from them directly would thrash a few L1 sets.
void pack_a(const mm_problem& p, int64_t m0, int64_t mv, int64_t k0, int64_t k1, uint16_t* ap) {
  for (int64_t i = 0; i < mv; ++i) {
    const uint16_t* src = reinterpret_cast<const uint16_t*>(row_ptr(p.w, p.w_stride, m0 + i));
    for (int64_t k = k0; k < k1; k += 32)
      _mm512_store_si512(ap + (k - k0) / 32 * 1024 + i * 32, _mm512_maskz_loadu_epi16(first_lanes32(max64(0, p.K - k)), src + k));
  }
}

// Writes C tile `src` (rows m of y^T, 16 columns n) into y: rows [n0, n0 + nv), columns
// [m0, m0 + mv).
inline void store_transposed(const float* src, const mm_problem& p, int64_t n0, int64_t nv, int64_t m0, int64_t mv) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = i < mv ? _mm512_load_ps(src + 16 * i) : _mm512_setzero_ps();
  transpose16(r);
  const __mmask16 mask = first_lanes(mv);
  for (int64_t j = 0; j < nv; ++j) _mm512_mask_storeu_ps(yrow(p, n0 + j) + m0, mask, r[j]);
}

constexpr int64_t kKC = 256;  // k per block: the packed A block (32 x 256 bf16, 16 KiB) stays in L1

// One block of 32 weight rows (rows0 + rows1) against columns [n_begin, n_end) of x, all of K.
// K goes in blocks of kKC: the block of A is packed once (ap) and read from L1 for every 32
// columns; the C tiles are parked in cbuf (4 x 16 x 16 f32 per 32 columns) between K blocks and
// written to y, transposed, at the end.
template <bool kTwoHalves>
void block(const mm_problem& p, const uint32_t* xp, int64_t m0, int64_t rows0, int64_t rows1, int64_t n_begin,
           int64_t n_end, uint16_t* ap, float* cbuf) {
  const int64_t k32 = round_up(p.K, 32), k_full = p.K / 32 * 32, panel = k32 / 2 * 16;
  // With a single step of 32 columns every A tile is used once: packing it would only add a
  // copy, so the full 32-k steps load it straight from the weight rows (only the partial last
  // step is packed, with its zeros past K)
  // (and K needs no blocks: the C tiles stay in their registers from the first k to the last).
  const bool direct = n_end - n_begin <= 32;
  const int64_t kc_step = direct ? k32 : kKC;
  const char* w = row_ptr(p.w, p.w_stride, m0);
  for (int64_t kc0 = 0; kc0 < k32; kc0 += kc_step) {
    const int64_t kc1 = min64(k32, kc0 + kc_step);
    if (!direct)
      pack_a(p, m0, rows0 + rows1, kc0, kc1, ap);
    else if (kc1 > k_full)
      pack_a(p, m0, rows0 + rows1, k_full, k_full + 32, ap);
    for (int64_t n0 = n_begin; n0 < n_end; n0 += 32) {
      float* c = cbuf + (n0 - n_begin) / 32 * 1024;
      if (kc0 == 0) {
        V4_TILE_ZERO(0);
        V4_TILE_ZERO(1);
        if (kTwoHalves) {
          V4_TILE_ZERO(2);
          V4_TILE_ZERO(3);
        }
      } else {
        V4_TILE_LOAD(0, c, 64);
        V4_TILE_LOAD(1, c + 256, 64);
        if (kTwoHalves) {
          V4_TILE_LOAD(2, c + 512, 64);
          V4_TILE_LOAD(3, c + 768, 64);
        }
      }
      const uint32_t* b0 = xp + (n0 / 16) * panel;
      for (int64_t k = kc0; k < kc1; k += 32) {
        const char* a;
        long s;
        if (!direct) {
          a = reinterpret_cast<const char*>(ap + (k - kc0) / 32 * 1024);
          s = 64;
        } else if (k < k_full) {
          a = w + k * 2;
          s = long(p.w_stride);
        } else {
          a = reinterpret_cast<const char*>(ap);
          s = 64;
        }
        const uint32_t* b = b0 + (k / 2) * 16;
        V4_TILE_LOAD(4, a, s);
        V4_TILE_LOAD(6, b, 64);
        V4_TILE_LOAD(7, b + panel, 64);
        V4_TILE_DP(0, 4, 6);
        V4_TILE_DP(1, 4, 7);
        if (kTwoHalves) {
          V4_TILE_LOAD(5, a + 16 * s, s);
          V4_TILE_DP(2, 5, 6);
          V4_TILE_DP(3, 5, 7);
        }
      }
      V4_TILE_STORE(0, c, 64);
      V4_TILE_STORE(1, c + 256, 64);
      if (kTwoHalves) {
        V4_TILE_STORE(2, c + 512, 64);
        V4_TILE_STORE(3, c + 768, 64);
      }
    }
  }
  for (int64_t n0 = n_begin; n0 < n_end; n0 += 32) {
    const float* c = cbuf + (n0 - n_begin) / 32 * 1024;
    for (int t = 0; t < (kTwoHalves ? 4 : 2); ++t) {
      const int64_t nn0 = n0 + (t & 1) * 16;
      const int64_t nv = min64(16, p.N - nn0);
      if (nv <= 0) continue;
      store_transposed(c + t * 256, p, nn0, nv, m0 + (t >> 1) * 16, t < 2 ? rows0 : rows1);
    }
  }
}

}  // namespace

void amx_run(const mm_problem& p, int n_threads) {
  if (handle_empty(p)) return;
  if (p.wtype != dtype::bf16) return;
  const int64_t k32 = round_up(p.K, 32), np = round_up(p.N, 32);
  // Columns of x per pass over the weights: the packed block (nblk x K32 bf16) stays within
  // ~1.5 MiB of L2 while every 32-row block of w is swept across it.
  const int64_t nblk = max64(32, min64(np, (int64_t(3) << 19) / (k32 * 2) / 32 * 32));
  // One allocation by this thread: the packed x, then per thread the parked C tiles and the
  // packed A block.
  const int nth_max = useful_threads(p, n_threads);
  const size_t xp_bytes = size_t(round_up(k32 / 2 * np * 4, 64)), cb_bytes = size_t(nblk / 32) * 4096 + kKC / 32 * 2048;
  char* scratch = static_cast<char*>(mm_scratch(kShared, xp_bytes + size_t(nth_max) * cb_bytes));
  if (!scratch) {  // out of memory for the packed x: the AVX512-BF16 kernel computes the same function
    avx512bf16_run(p, n_threads);
    return;
  }
  uint32_t* xp = reinterpret_cast<uint32_t*>(scratch);
  parallel(nth_max, [&](int tid, int nth) {
    {
      int64_t b, e;
      split(np, 16, tid, nth, &b, &e);
      pack_x_vnni(p, xp, k32, b, e);
    }
#pragma omp barrier
    int tm = 1, tn = 1;
    grid(div_up(p.M, 32), np / 32, nth, &tm, &tn);
    int64_t mb, me, nb, ne;
    split(p.M, 32, tid % tm, tm, &mb, &me);
    split(np, 32, tid / tm, tn, &nb, &ne);
    if (mb >= me || nb >= ne) return;

    float* cbuf = reinterpret_cast<float*>(scratch + xp_bytes + size_t(tid) * cb_bytes);
    uint16_t* ap = reinterpret_cast<uint16_t*>(cbuf + nblk / 32 * 1024);
    int cfg0 = -1, cfg1 = -1;
    for (int64_t nb0 = nb; nb0 < ne; nb0 += nblk) {
      const int64_t nb1 = min64(ne, nb0 + nblk);
      for (int64_t m0 = mb; m0 < me; m0 += 32) {
        const int64_t mv = min64(32, me - m0);
        const int rows0 = int(min64(16, mv)), rows1 = int(mv - rows0);
        if (rows0 != cfg0 || rows1 != cfg1) {
          load_config(rows0, rows1);
          cfg0 = rows0;
          cfg1 = rows1;
        }
        if (rows1 > 0)
          block<true>(p, xp, m0, rows0, rows1, nb0, nb1, ap, cbuf);
        else
          block<false>(p, xp, m0, rows0, rows1, nb0, nb1, ap, cbuf);
      }
    }
    _tile_release();
  });
}

}  // namespace v4::cpu::mm_arch

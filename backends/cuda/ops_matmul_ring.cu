// gemv_ring: MATMUL / MATMUL_ID decode (one x row per weight matrix) of fp8_e4m3, mxfp4 and bf16
// weights at the HBM rate (issue 8; docs/CUDA.md "Third session: streaming decode GEMVs").
//
// Why: the register kernels (gemv_x1, gemv1, ops_matmul.cu) alternate between waiting for their
// loads and decoding them, and their grids run in waves of short-lived blocks, so an SM has well
// under the ~32 KiB in flight that 4.2 TB/s x ~1 us of latency needs over 132 SMs. Here:
//   - one persistent block of kRingWarps warps per SM (per job: the SMs are shared out among the
//     jobs), x staged once per block (swizzled, as the other decode kernels);
//   - each warp streams its tiles (kRingR rows x kRingTC 16-byte chunks, and for mxfp4 the tile's
//     scale codes) through its own ring of S shared-memory stages, filled by the bulk copy engine
//     (cp.async.bulk, one instruction per row piece, completing on the stage's mbarrier): S - 1
//     tiles stay in flight while it decodes one, at no register cost;
//   - for MATMUL the first S tiles are requested before the PDL wait (weights are never written by
//     a kernel): the stream starts while the previous kernel still runs;
//   - a row group's tiles may be shared by a team of WG warps (WG = 1, 2, 4 or 8) whose partial sums
//     are added in warp order after a named barrier: short calls get every warp busy.
// Numerics are gemv_x1's: weights decoded exactly (chunk_dot), products and sums in f32, each
// chunk's partial sum times its own scale, a team's partials added in a fixed order (no atomics):
// x_rounding 0 (matmul_x_rounding).
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "backends/cuda/kernels.h"
#include "backends/cuda/matmul.cuh"

namespace v4::cuda {
namespace {

constexpr int kRingWarps = 16;            // one block of 512 threads per SM
constexpr int kRingR = 4;                 // weight rows per tile (each x value read once for them)
constexpr int kRingP = 2;                 // chunks per lane per row and tile
constexpr int kRingTC = 32 * kRingP;      // chunks per row and tile (fp8: 1 KiB)
constexpr int kRingMaxStages = 4;         // mbarriers per warp
constexpr int kRingScratchSlot = 22;      // ops_scratch.cu slot of the work-stealing counters (per stream)
constexpr int kRingDefaultStages = 2;     // 16 warps x 2 x 4 KiB = 128 KiB of ring (3 measured slower)
// Header: mbarriers [warps][stages], team sums [2][warps][R], each stage's group [warps][stages]
// (int64) and tile [warps][stages] (gemv_steal_kernel).
constexpr int kRingHeader = kRingWarps * kRingMaxStages * 8 + 2 * kRingWarps * kRingR * 4 +
                            kRingWarps * kRingMaxStages * 12;

// How a call is cut up (ring_plan_for).
struct ring_plan {
  int tpr;            // tiles per row: ceil(nchunks / kRingTC)
  int wg;             // warps per team (1, 2, 4, 8)
  int stages;         // S: stages of each warp's ring
  int stage_bytes;    // weights (+ codes, mxfp4) of one stage
  int x_pieces;       // 16-byte pieces of x staged (K / 4 padded to the swizzle's groups of 8)
  int64_t gpt;        // row groups (kRingR rows) per team
  int variant;        // kRing* flags (set_matmul_ring_variant, a test hook; 0 in normal use)
};
constexpr int kRingStreamOnly = 1;  // (timing only) wait for the tiles, skip the arithmetic
constexpr int kRingMerge = 2;       // one bulk copy per tile when its rows are contiguous whole rows
constexpr int kRingLocal = 4;       // the teams of a block take adjacent row ranges
constexpr int kRingIntDecode = 8;   // fp8 / mxfp4 decoded by integer bit placement (chunk_dot_int), not chunk_dot
constexpr int kRingStatic = 16;     // gemv_ring_kernel (static row ranges, teams) instead of gemv_steal_kernel

// ---- decode without conversion instructions ----------------------------------------------------------
// The other decode kernels turn e4m3 / e2m1 into f32 through cvt instructions (e4m3x2 -> f16x2,
// f16 -> f32), which sm_90 issues at a quarter of the FMA rate or less: at one x row that, not the
// memory, bounded fp8 near 10 and mxfp4 near 8 bytes per clock per SM (docs/CUDA.md, third
// session). Here the code bits are placed into an f32 with integer operations so that the f32 is
// the code's value times 2^-120 (e4m3: exponent field E, mantissa M; E = 0 gives the f32 subnormal
// 0.M x 2^-126, e4m3's subnormal 0.M x 2^-6 scaled alike) or 2^-126 (e2m1), and one exact multiply
// by the power of two restores it (no flush to zero in this build: subnormal operands are exact).
// The products, their order and the partial sums are chunk_dot's.

// Four e4m3 codes (one word, byte b = element b) -> f[b], exact. A NaN code (magnitude 0x7F) is
// not decoded to NaN here: nan_bits collects (magnitude + 1) of every code, whose bit 7 is set only
// by a NaN code (see chunk_dot_int).
__device__ __forceinline__ void e4m3x4_f(uint32_t a, float (&f)[4], uint32_t& nan_bits) {
  const uint32_t even = a & 0x00FF00FFu, odd = (a >> 8) & 0x00FF00FFu;  // bytes 0, 2 and 1, 3
  // sign bit 7 -> 11 (and 23 -> 27): the magnitude's 7 bits and the sign then sit 20 bits below
  // their f32 places (sign 31, exponent 23..26, mantissa 20..22).
  const uint32_t ev = even + (even & 0x00800080u) * 15u, od = odd + (odd & 0x00800080u) * 15u;
  f[0] = __uint_as_float(ev << 20) * 0x1p120f;
  f[2] = __uint_as_float((ev << 4) & 0xFFF00000u) * 0x1p120f;
  f[1] = __uint_as_float(od << 20) * 0x1p120f;
  f[3] = __uint_as_float((od << 4) & 0xFFF00000u) * 0x1p120f;
  nan_bits |= (a & 0x7F7F7F7Fu) + 0x01010101u;
}

// e2m1 codes i and i + 4 of a word (nibbles 4i and 4i + 16) -> lo, hi, exact.
template <int I>
__device__ __forceinline__ void e2m1_pair_f(uint32_t a, float& lo, float& hi) {
  const uint32_t q = (a >> (4 * I)) & 0x000F000Fu;
  const uint32_t w = q + (q & 0x00080008u) * 63u;  // sign bit 3 -> 9 (19 -> 25): 22 below bit 31
  lo = __uint_as_float(w << 22) * 0x1p126f;
  hi = __uint_as_float((w << 6) & 0xFFC00000u) * 0x1p126f;
}

// chunk_dot (matmul.cuh) for fp8 and mxfp4 with the decode above: the same products in the same
// order into the same two chains; mxfp4 sums are the true values (not times 2^-14).
template <int WT, int R>
__device__ __forceinline__ void chunk_dot_int(const uint4 (&w)[R], const float4* xs, int c, float (&part)[R][2]) {
  if constexpr (WT == kFP8) {
    uint32_t nan_bits[R];
#pragma unroll
    for (int r = 0; r < R; ++r) nan_bits[r] = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float4 xv = xs[x_swizzle(c * 4 + j)];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float f[4];
        e4m3x4_f(word(w[r], j), f, nan_bits[r]);
        part[r][0] = fmaf(f[0], xv.x, part[r][0]);
        part[r][1] = fmaf(f[1], xv.y, part[r][1]);
        part[r][0] = fmaf(f[2], xv.z, part[r][0]);
        part[r][1] = fmaf(f[3], xv.w, part[r][1]);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (nan_bits[r] & 0x80808080u) part[r][0] = __uint_as_float(0x7fc00000u);  // an e4m3 NaN code
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float4 xa = xs[x_swizzle(c * 8 + 2 * j)], xb = xs[x_swizzle(c * 8 + 2 * j + 1)];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint32_t a = word(w[r], j);
        float f0, f4, f1, f5, f2, f6, f3, f7;
        e2m1_pair_f<0>(a, f0, f4);
        e2m1_pair_f<1>(a, f1, f5);
        e2m1_pair_f<2>(a, f2, f6);
        e2m1_pair_f<3>(a, f3, f7);
        part[r][0] = fmaf(f0, xa.x, part[r][0]);
        part[r][1] = fmaf(f4, xb.x, part[r][1]);
        part[r][0] = fmaf(f1, xa.y, part[r][0]);
        part[r][1] = fmaf(f5, xb.y, part[r][1]);
        part[r][0] = fmaf(f2, xa.z, part[r][0]);
        part[r][1] = fmaf(f6, xb.z, part[r][1]);
        part[r][0] = fmaf(f3, xa.w, part[r][0]);
        part[r][1] = fmaf(f7, xb.w, part[r][1]);
      }
    }
  }
}

// ---- sm_90 bulk copies and mbarriers -----------------------------------------------------------------
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
// Makes the initialised barriers visible to the bulk copy engine (the async proxy).
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
// The thread's arrival (count 1) plus `bytes` that the stage's copies will complete.
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
// `bytes` (a multiple of 16, both addresses 16-byte aligned) from global memory into this block's
// shared memory; completes `bytes` on the mbarrier.
__device__ __forceinline__ void bulk_g2s(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}
// Barrier `id` (1..15) over `threads` threads (a team of warps).
__device__ __forceinline__ void team_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
#endif

// Lane 0: the copies of tile (group g, chunks [c0, c0 + kRingTC)) into stage st, completing on
// `bar`: R row pieces (rows past M reread the last row; nothing is stored for them) and their
// codes (mxfp4). merge: the R rows are one run of contiguous whole rows (one copy).
template <int WT>
__device__ __forceinline__ void ring_issue(const mm_weights& W, const mm_job& jb, unsigned char* st, uint32_t bar,
                                           int64_t g, int c0, bool merge) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int E = chunk<WT>::kElems, R = kRingR, TC = kRingTC;
  constexpr bool kCodesInStage = WT == kMXFP4;  // mxfp4: a code per chunk, copied with the tile
  const int nchunks = int(W.K / E);
  const int nc = nchunks - c0 < TC ? nchunks - c0 : TC;
  mbar_expect_tx(bar, uint32_t(R * nc * (16 + (kCodesInStage ? 1 : 0))));
  if (merge && g * R + R <= W.M) {  // rows g R .. g R + R - 1 are R * nc * 16 contiguous bytes
    bulk_g2s(smem_u32(st), jb.w + g * R * W.nb1, uint32_t(R * nc * 16), bar);
    if constexpr (kCodesInStage) bulk_g2s(smem_u32(st + R * TC * 16), jb.s + g * R * W.s_nb1, uint32_t(R * nc), bar);
    return;
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t m = g * R + r < W.M ? g * R + r : W.M - 1;
    bulk_g2s(smem_u32(st + r * TC * 16), jb.w + m * W.nb1 + int64_t(c0) * 16, uint32_t(nc * 16), bar);
    if constexpr (kCodesInStage)
      bulk_g2s(smem_u32(st + R * TC * 16 + r * TC), jb.s + m * W.s_nb1 + c0, uint32_t(nc), bar);
  }
#endif
}

// Tile (group g, chunks [c0, c0 + kRingTC)) from stage st into acc (the R rows' sums of this
// lane), once the stage's mbarrier phase `parity` completes. fp8 reads its codes (__ldg; L1-resident:
// sb_m rows share a scale row) before the wait; mxfp4's came with the tile.
template <int WT>
__device__ __forceinline__ void ring_tile(const mm_weights& W, const mm_job& jb, const ring_plan& pl, const float4* xs,
                                          const unsigned char* st, uint32_t bar, uint32_t parity, int64_t g, int c0,
                                          int lane, float (&acc)[kRingR]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int E = chunk<WT>::kElems, R = kRingR, P = kRingP, TC = kRingTC;
  const int nchunks = int(W.K / E);
  const uint8_t* srow[R];  // fp8: the scale row of each of the group's rows
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t m = g * R + r < W.M ? g * R + r : W.M - 1;
    srow[r] = WT == kFP8 ? jb.s + (m / W.sb_m) * W.s_nb1 : nullptr;
  }
  uint8_t code[P][R];
  if constexpr (WT == kFP8) {  // (L1-resident: sb_m rows share a scale row) before the wait
#pragma unroll
    for (int p = 0; p < P; ++p)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int c = c0 + lane + 32 * p;
        code[p][r] = c < nchunks ? __ldg(srow[r] + scale_col(W, int64_t(c) * E)) : uint8_t(0);
      }
  }
  mbar_wait(bar, parity);
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const int c = c0 + lane + 32 * p;
    if (c >= nchunks || (pl.variant & kRingStreamOnly)) break;
    uint4 w[R];
#pragma unroll
    for (int r = 0; r < R; ++r) w[r] = reinterpret_cast<const uint4*>(st + r * TC * 16)[lane + 32 * p];
    float part[R][2];
#pragma unroll
    for (int r = 0; r < R; ++r) part[r][0] = part[r][1] = 0.0f;
    // mxfp4's converting decode (chunk_dot) gives values times 2^-14; the integer one exact values.
    float unscale = 1.0f;
    if constexpr (WT == kBF16) {
      chunk_dot<WT, R>(w, xs, c, part);  // (bf16 widens by shifts: no conversions)
    } else if (pl.variant & kRingIntDecode) {
      chunk_dot_int<WT, R>(w, xs, c, part);
    } else {
      chunk_dot<WT, R>(w, xs, c, part);
      unscale = WT == kMXFP4 ? kE2m1HalfUnscale : 1.0f;
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float sum = part[r][0] + part[r][1];
      if constexpr (WT == kFP8) {
        acc[r] = fmaf(sum, e8m0_f(code[p][r]), acc[r]);
      } else if constexpr (WT == kMXFP4) {
        const uint8_t cd = st[R * TC * 16 + r * TC + lane + 32 * p];
        acc[r] = fmaf(sum * unscale, e8m0_f(cd), acc[r]);
      } else {
        acc[r] += sum;
      }
    }
  }
#endif
}

// Grid (blocks per job, jobs), kRingWarps warps; dynamic shared memory: header (mbarriers, team
// sums), x, then each warp's S stages. Warp w of block b is warp kw = w % wg of team
// w / wg; team q = (w / wg) * gridDim.x + b of the job (teams spread over the SMs first) takes row
// groups [q * gpt, (q + 1) * gpt), and its warp kw the tiles kw, kw + wg, ... of each group.
template <int WT>
__global__ void __launch_bounds__(kRingWarps * 32, 1) gemv_ring_kernel(mm_weights W, mm_rows rd, ring_plan pl) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int E = chunk<WT>::kElems, R = kRingR, TC = kRingTC;
  constexpr bool kCodesInStage = WT == kMXFP4;  // mxfp4: a code per chunk, copied with the tile
  extern __shared__ __align__(16) unsigned char ring_smem[];
  uint64_t* bars_all = reinterpret_cast<uint64_t*>(ring_smem);
  float* team_sums = reinterpret_cast<float*>(ring_smem + kRingWarps * kRingMaxStages * 8);  // [2][warps][R]
  float4* xs = reinterpret_cast<float4*>(ring_smem + kRingHeader);
  unsigned char* stages_all = ring_smem + kRingHeader + size_t(pl.x_pieces) * 16;

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool early = rd.mode == 0;  // MATMUL: weights known from the parameters (matmul_id: from ids)
  if (!early) pdl_wait();
  const mm_job jb = job_of(W, rd, blockIdx.y);
  if (jb.count == 0) return;  // the whole block

  const int wg = pl.wg, S = pl.stages, tpr = pl.tpr;
  const int team = warp / wg, kw = warp % wg;
  const int nchunks = int(W.K / E);
  const int64_t ng = (W.M + R - 1) / R;
  const int64_t q = (pl.variant & kRingLocal) ? int64_t(blockIdx.x) * (kRingWarps / wg) + team
                                               : int64_t(team) * gridDim.x + blockIdx.x;
  const bool merge = (pl.variant & kRingMerge) && nchunks == TC && W.nb1 == int64_t(nchunks) * 16 &&
                     (!kCodesInStage || W.s_nb1 == nchunks);
  const int64_t g_begin = q * pl.gpt < ng ? q * pl.gpt : ng;
  const int64_t g_end = g_begin + pl.gpt < ng ? g_begin + pl.gpt : ng;
  const int n_groups = int(g_end - g_begin);
  const int tiles_per_group = kw < tpr ? (tpr - kw + wg - 1) / wg : 0;
  const int n_tiles = n_groups * tiles_per_group;  // < 2^31 (ring_plan_for)

  uint64_t* bars = bars_all + warp * kRingMaxStages;
  unsigned char* stages = stages_all + size_t(warp) * S * pl.stage_bytes;

  // Tile i of this warp into stage i % S (lane 0): R row pieces of nc chunks (rows past M reread
  // the last row; nothing is stored for them), and their codes (mxfp4).
  auto issue = [&](int i) {
    ring_issue<WT>(W, jb, stages + (i % S) * pl.stage_bytes, smem_u32(bars + i % S),
                   g_begin + i / tiles_per_group, (kw + wg * (i % tiles_per_group)) * TC, merge);
  };
  if (lane == 0) {
    for (int s = 0; s < S; ++s) mbar_init(smem_u32(bars + s), 1);
    mbar_init_fence();
    for (int i = 0; i < S && i < n_tiles; ++i) issue(i);
  }
  __syncwarp();
  if (early) pdl_wait();

  const float* xp;
  float* yp;
  row_ptrs(rd, jb, 0, &xp, &yp);
  {
    const float4* xg = reinterpret_cast<const float4*>(xp);
    const int kpieces = int(W.K / 4);
    for (int p = threadIdx.x; p < kpieces; p += blockDim.x) xs[x_swizzle(p)] = __ldg(xg + p);
  }
  __syncthreads();

  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  int i = 0;
  for (int gi = 0; gi < n_groups; ++gi) {
    const int64_t g = g_begin + gi;
    for (int j = 0; j < tiles_per_group; ++j, ++i) {
      const int slot = i % S;
      ring_tile<WT>(W, jb, pl, xs, stages + slot * pl.stage_bytes, smem_u32(bars + slot), uint32_t((i / S) & 1), g,
                    (kw + wg * j) * TC, lane, acc);
      __syncwarp();  // every lane has read the stage before it is refilled
      if (lane == 0 && i + S < n_tiles) issue(i + S);
    }
    // Group g done: the warp's sums of its R rows, then (teams) the team's sums in warp order.
    float mine = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float v = warp_sum(acc[r]);
      acc[r] = 0.0f;
      if (lane == r) mine = v;
    }
    const int64_t m = g * R + lane;
    if (wg == 1) {
      if (lane < R && m < W.M) yp[m] = mine;
    } else {
      float* sums = team_sums + (gi & 1) * kRingWarps * R;  // two buffers: see below
      if (lane < R) sums[warp * R + lane] = mine;
      // A warp writes the other buffer for group gi + 1 and this one again only for gi + 2, after
      // the barrier of gi + 1, which warp kw = 0 reaches after it has read this one.
      team_sync(1 + team, wg * 32);
      if (kw == 0 && lane < R) {
        float total = sums[(team * wg) * R + lane];
        for (int k = 1; k < wg; ++k) total += sums[(team * wg + k) * R + lane];
        if (m < W.M) yp[m] = total;
      }
    }
  }
#else
  __trap();  // sm_90 only (ring_plan_for never picks this kernel below)
#endif
}

// Work stealing (the default): with a static cut, the SMs that the memory system serves last set
// the end of the call. Here every warp (no teams) takes row groups one at a time: first group
// (warp w of block b) w * gridDim.x + b, then groups handed out by an atomic counter per job
// (ctr[job], offset by the warps of the job), fetched one group ahead so that the atomic's round
// trip is off the critical path. Each group is still computed by one warp in the fixed order, so
// the results do not depend on which warp took it. The last block to finish resets the counters
// (ctr[jobs] counts finished blocks) for the next launch; the counters are read and written only
// after pdl_wait, so a next launch (PDL) sees them reset. Before the wait only the tiles of the
// warp's first group are requested.
template <int WT>
__global__ void __launch_bounds__(kRingWarps * 32, 1) gemv_steal_kernel(mm_weights W, mm_rows rd, ring_plan pl,
                                                                        int* ctr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int R = kRingR, TC = kRingTC;
  extern __shared__ __align__(16) unsigned char ring_smem[];
  uint64_t* bars_all = reinterpret_cast<uint64_t*>(ring_smem);
  unsigned char* header2 = ring_smem + kRingWarps * kRingMaxStages * 8 + 2 * kRingWarps * kRingR * 4;
  int64_t* stage_group_all = reinterpret_cast<int64_t*>(header2);                      // [warps][stages]
  int* stage_tile_all = reinterpret_cast<int*>(header2 + kRingWarps * kRingMaxStages * 8);  // [warps][stages]
  float4* xs = reinterpret_cast<float4*>(ring_smem + kRingHeader);
  unsigned char* stages_all = ring_smem + kRingHeader + size_t(pl.x_pieces) * 16;

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool early = rd.mode == 0;  // MATMUL: weights known from the parameters (matmul_id: from ids)
  if (!early) pdl_wait();
  const mm_job jb = job_of(W, rd, blockIdx.y);
  const int jobs = int(gridDim.y);
  int* next = ctr + blockIdx.y;
  int* finished = ctr + jobs;
  auto finish_block = [&]() {  // (every thread, after pdl_wait)
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      if (atomicAdd(finished, 1) == int(gridDim.x * gridDim.y) - 1) {
        for (int j = 0; j < jobs; ++j) atomicExch(ctr + j, 0);
        atomicExch(finished, 0);
        __threadfence();
      }
    }
  };
  if (jb.count == 0) {  // (an out-of-range expert id: a caller error)
    if (early) pdl_wait();
    finish_block();
    return;
  }

  const int S = pl.stages, tpr = pl.tpr;
  const int64_t ng = (W.M + R - 1) / R;
  const int64_t warps_of_job = int64_t(gridDim.x) * kRingWarps;
  uint64_t* bars = bars_all + warp * kRingMaxStages;
  int64_t* stage_group = stage_group_all + warp * kRingMaxStages;
  int* stage_tile = stage_tile_all + warp * kRingMaxStages;
  unsigned char* stages = stages_all + size_t(warp) * S * pl.stage_bytes;

  // Producer state (lane 0): the next tile to request is (p_g, p_t); p_next the group after p_g
  // (-1: none; fetched from the counter one group ahead).
  const int64_t first = int64_t(warp) * gridDim.x + blockIdx.x;
  int64_t p_g = first < ng ? first : -1, p_next = -1;
  int p_t = 0, issued = 0;
  auto steal = [&]() -> int64_t {
    const int64_t g = warps_of_job + atomicAdd(next, 1);
    return g < ng ? g : -1;
  };
  auto request = [&]() {  // tile (p_g, p_t) into stage issued % S
    const int slot = issued % S;
    stage_group[slot] = p_g;
    stage_tile[slot] = p_t;
    ring_issue<WT>(W, jb, stages + slot * pl.stage_bytes, smem_u32(bars + slot), p_g, p_t * TC, false);
    ++issued;
    ++p_t;
  };
  if (lane == 0) {
    for (int s = 0; s < S; ++s) mbar_init(smem_u32(bars + s), 1);
    mbar_init_fence();
    while (p_g >= 0 && issued < S && p_t < tpr) request();  // the first group only
  }
  __syncwarp();
  if (early) pdl_wait();
  if (lane == 0 && p_g >= 0) {
    p_next = steal();
    auto advance = [&]() {
      if (p_t == tpr) {
        p_t = 0;
        p_g = p_next;
        p_next = p_g >= 0 ? steal() : -1;
      }
    };
    advance();
    while (p_g >= 0 && issued < S) {
      request();
      advance();
    }
  }

  const float* xp;
  float* yp;
  row_ptrs(rd, jb, 0, &xp, &yp);
  {
    const float4* xg = reinterpret_cast<const float4*>(xp);
    const int kpieces = int(W.K / 4);
    for (int p = threadIdx.x; p < kpieces; p += blockDim.x) xs[x_swizzle(p)] = __ldg(xg + p);
  }
  __syncthreads();  // (also orders lane 0's stage_group / stage_tile writes before the reads below)

  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  int n_issued = __shfl_sync(0xffffffffu, issued, 0);
  for (int i = 0; i < n_issued; ++i) {
    const int slot = i % S;
    const int64_t g = stage_group[slot];
    const int t = stage_tile[slot];
    ring_tile<WT>(W, jb, pl, xs, stages + slot * pl.stage_bytes, smem_u32(bars + slot), uint32_t((i / S) & 1), g,
                  t * TC, lane, acc);
    if (t == tpr - 1) {  // group g done
      float mine = 0.0f;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float v = warp_sum(acc[r]);
        acc[r] = 0.0f;
        if (lane == r) mine = v;
      }
      const int64_t m = g * R + lane;
      if (lane < R && m < W.M) yp[m] = mine;
    }
    __syncwarp();  // every lane has read the stage (and its group / tile) before it is refilled
    if (lane == 0 && p_g >= 0) {  // issued == i + S: the stage just read
      request();
      if (p_t == tpr) {
        p_t = 0;
        p_g = p_next;
        p_next = p_g >= 0 ? steal() : -1;
      }
    }
    __syncwarp();  // lane 0's stage_group / stage_tile writes before the next reads
    n_issued = __shfl_sync(0xffffffffu, issued, 0);
  }
  finish_block();
#else
  __trap();  // sm_90 only (ring_plan_for never picks this kernel below)
#endif
}

std::atomic<int> g_ring_mode{0};    // set_matmul_ring: 0 automatic, 1 off
std::atomic<int> g_ring_wg{0};      // set_matmul_ring_shape: forced team size (0 automatic)
std::atomic<int> g_ring_stages{0};  // forced stages (0 automatic)
std::atomic<int> g_ring_variant{0};  // set_matmul_ring_variant (kRing* flags)

struct device_info {
  int dev = -1, sms = 0, optin = 0, major = 0;
};

// The current device's properties, read once per device.
device_info current_device() {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return device_info{};
  }
  static std::mutex mu;
  static std::vector<device_info> seen;
  std::lock_guard<std::mutex> lock(mu);
  for (const device_info& d : seen)
    if (d.dev == dev) return d;
  device_info d;
  d.dev = dev;
  if (cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&d.optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    cudaGetLastError();
    d.major = 0;  // the ring is never planned on it
  }
  seen.push_back(d);
  return d;
}

// Whether one block of the kernel can be resident with `smem` bytes of dynamic shared memory,
// cached per (kernel, device, size); the first call per (kernel, device) raises the kernel's limit
// to the device's opt-in maximum.
bool ring_ready(const void* kernel, const device_info& d, size_t smem) {
  struct entry {
    const void* kernel;
    int dev;
    size_t smem;
    bool ok;
  };
  static std::mutex mu;
  static std::vector<entry> seen;
  std::lock_guard<std::mutex> lock(mu);
  bool raised = false;
  for (const entry& e : seen) {
    if (e.kernel == kernel && e.dev == d.dev && e.smem == smem) return e.ok;
    if (e.kernel == kernel && e.dev == d.dev) raised = true;
  }
  bool ok = raised || cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, d.optin) == cudaSuccess;
  int blocks = 0;
  if (ok && cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kRingWarps * 32, smem) != cudaSuccess)
    ok = false;
  if (!ok) cudaGetLastError();  // not sticky; the caller falls back to the other kernels
  ok = ok && blocks >= 1;
  seen.push_back({kernel, d.dev, smem, ok});
  return ok;
}

// The cut of a call (false: the ring does not take it). Team size: the wg in {1, 2, 4, 8} (at most
// the tiles per row) that gives the busiest warp the fewest tiles, the smallest on ties (fewer
// barriers). Stages: as many as fit, at most kRingDefaultStages.
bool ring_plan_for(dtype wt, const mm_weights& W, unsigned jobs, const device_info& d, ring_plan* pl,
                   unsigned* blocks_per_job) {
  const int E = wt == dtype::fp8_e4m3 ? 16 : wt == dtype::mxfp4 ? 32 : wt == dtype::bf16 ? 8 : 0;
  if (E == 0 || d.dev < 0 || d.major < 9 || W.K <= 0 || W.K % E != 0 || W.K > (int64_t(1) << 24)) return false;
  const int64_t nchunks = W.K / E;
  if (wt != dtype::bf16 && !W.scales) return false;
  if (wt == dtype::mxfp4) {  // codes copied with the tile: 16-byte aligned runs of whole 16 codes
    if ((reinterpret_cast<uintptr_t>(W.scales) & 15) != 0 || W.s_nb1 % 16 != 0 || W.s_nb2 % 16 != 0 ||
        W.s_nb3 % 16 != 0 || nchunks % 16 != 0)
      return false;
  }
  pl->tpr = int((nchunks + kRingTC - 1) / kRingTC);
  pl->x_pieces = int((W.K / 4 + 7) / 8 * 8);
  pl->stage_bytes = kRingR * kRingTC * (16 + (wt == dtype::mxfp4 ? 1 : 0));
  const int64_t fixed = kRingHeader + int64_t(pl->x_pieces) * 16;
  const int64_t fit = (int64_t(d.optin) - fixed) / (int64_t(kRingWarps) * pl->stage_bytes);
  const int forced_s = g_ring_stages.load(std::memory_order_relaxed);
  pl->stages = int(std::min<int64_t>(fit, forced_s >= 2 ? std::min(forced_s, kRingMaxStages) : kRingDefaultStages));
  if (pl->stages < 2) return false;

  const int64_t per_job = std::max<int64_t>(1, d.sms / int64_t(jobs));
  const int64_t warps = per_job * kRingWarps;
  const int64_t ng = (W.M + kRingR - 1) / kRingR;
  const int variant = g_ring_variant.load(std::memory_order_relaxed);
  // Work stealing (gemv_steal_kernel) has no teams; the static kernel picks its team size.
  const int forced_wg = (variant & kRingStatic) ? g_ring_wg.load(std::memory_order_relaxed) : 1;
  int best = 1;
  int64_t best_cost = -1;
  for (int wg = 1; wg <= 8; wg *= 2) {
    if (forced_wg > 0 ? wg != forced_wg : wg > pl->tpr) continue;
    const int64_t teams = warps / wg;
    const int64_t cost = (ng + teams - 1) / teams * ((pl->tpr + wg - 1) / wg);
    if (best_cost < 0 || cost < best_cost) best = wg, best_cost = cost;
  }
  if (best_cost < 0) return false;  // (a forced size outside 1..8)
  pl->wg = best;
  const int64_t teams = warps / best;
  pl->gpt = (ng + teams - 1) / teams;
  if (pl->gpt * pl->tpr >= (int64_t(1) << 30)) return false;  // the kernel's int tile counter
  pl->variant = variant;
  *blocks_per_job = unsigned(per_job);
  return true;
}

// false: nothing launched (the call does not fit; *error set only for a scratch failure).
template <int WT>
bool ring_launch(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, bool pdl,
                 std::string* error) {
  const device_info d = current_device();
  ring_plan pl{};
  unsigned per_job = 0;
  if (!ring_plan_for(wt, W, jobs, d, &pl, &per_job)) return false;
  const size_t smem = size_t(kRingHeader) + size_t(pl.x_pieces) * 16 +
                      size_t(kRingWarps) * size_t(pl.stages) * size_t(pl.stage_bytes);
  const dim3 grid(per_job, jobs);
  if (pl.variant & kRingStatic) {
    const auto kernel = gemv_ring_kernel<WT>;
    if (!ring_ready(reinterpret_cast<const void*>(kernel), d, smem)) return false;
    if (pdl) launch(kernel, grid, kRingWarps * 32, smem, s, W, rd, pl);
    else kernel<<<grid, kRingWarps * 32, smem, s>>>(W, rd, pl);  // starts after the previous kernel
    return true;
  }
  const auto kernel = gemv_steal_kernel<WT>;
  if (!ring_ready(reinterpret_cast<const void*>(kernel), d, smem)) return false;
  int* ctr = static_cast<int*>(scratch(s, kRingScratchSlot, (size_t(jobs) + 1) * sizeof(int), error));
  if (!ctr) return false;
  if (pdl) launch(kernel, grid, kRingWarps * 32, smem, s, W, rd, pl, ctr);
  else kernel<<<grid, kRingWarps * 32, smem, s>>>(W, rd, pl, ctr);  // starts after the previous kernel
  return true;
}

}  // namespace

bool ring_wanted(dtype wt) {
  static const bool env_off = [] {
    const char* env = std::getenv("V4_CUDA_RING");
    return env && std::string(env) == "0";
  }();
  if (env_off || g_ring_mode.load(std::memory_order_relaxed) == 1) return false;
  return wt == dtype::fp8_e4m3 || wt == dtype::mxfp4 || wt == dtype::bf16;
}

bool launch_ring(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, bool pdl,
                 std::string* error) {
  switch (wt) {
    case dtype::fp8_e4m3: return ring_launch<kFP8>(s, wt, W, rd, jobs, pdl, error);
    case dtype::mxfp4: return ring_launch<kMXFP4>(s, wt, W, rd, jobs, pdl, error);
    case dtype::bf16: return ring_launch<kBF16>(s, wt, W, rd, jobs, pdl, error);
    default: return false;
  }
}

// Timing / test hooks for tests/cuda/test_cuda_matmul.cpp (declared there; not part of the
// backend's API): the ring for one-row calls (0 automatic, 1 off: the kernels before it), and its
// team size and stage count (0: automatic; a forced team size applies even past the tiles per row).
void set_matmul_ring(int mode) { g_ring_mode.store(mode, std::memory_order_relaxed); }
void set_matmul_ring_variant(int flags) { g_ring_variant.store(flags, std::memory_order_relaxed); }
void set_matmul_ring_shape(int wg, int stages) {
  g_ring_wg.store(wg, std::memory_order_relaxed);
  g_ring_stages.store(stages, std::memory_order_relaxed);
}

}  // namespace v4::cuda

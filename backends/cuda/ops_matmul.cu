// MATMUL and MATMUL_ID (tensor/ops.h) for weights f32, f16, bf16, fp8_e4m3 (e8m0 scales per
// sb_k x sb_m tile), mxfp4 (e8m0 per 32 of a row) and q8_0; x f32 with contiguous rows, y f32.
//
// Four kernels, picked per call by run() below (docs/CUDA.md "Matmuls" has the table):
//   gemv     decode (N <= 16 rows per weight matrix; f32/f16 at every N): one warp per R weight
//            rows, lanes over 16-byte chunks of the rows (several chunks in flight), each x value
//            loaded once for the R rows, NB x rows at a time. Weights decoded exactly to f32,
//            products and sums in f32, scales applied once per chunk to its partial sums (a
//            chunk never straddles a scale block). x is not rounded.
//            One x row of fp8 / mxfp4 (launch_decode): gemv_x1 (fp8: the first chunks and all
//            scale codes loaded before x is staged) and gemv1 (mxfp4: chunks streamed through a
//            per-warp cp.async ring in shared memory); same numerics.
//            split-K (launch_split): one x row, fp8 with a long K over few rows: gemv_x1 over K
//            slices writing partial sums to scratch, then splitk_sum_kernel adds them in slice
//            order (no atomics); same numerics.
//            cluster split (launch_cluster_split): one x row, fp8 / bf16, few rows: gemv_x1 over the
//            K slices of a thread-block cluster, partials added in rank order through distributed
//            shared memory (one launch, no atomics); same numerics as split-K.
//            MATMUL decode kernels start on their weights before the PDL wait (prefetch_warp_rows,
//            common.cuh): see kPrefetchMaxBytes for when.
//            gemv_ring (ops_matmul_ring.cu, sm_90): one x row, fp8 / mxfp4 / bf16 streamed through
//            shared-memory rings by bulk copies; taken (ring_takes) only where it measured faster.
//   tc_decode  one x row of fp8 (sb_k % 128 == 0) whose x is FP8-exact per 128 (QAT's activation
//            quantization; ops_matmul_tc.cu): f16 tensor cores, x and products exact.
//   tcv      mxfp4 decode with 2..16 x rows (ops_mma.cu): bf16 tensor cores, x rounded to bf16.
//   mma      prefill, N > 16 (ops_mma.cu): bf16 tensor cores, x rounded to bf16 once.
//   small_k, split_row  (ops_matmul_small.cu) K <= 32 with many outputs; few long weight rows.
//   generic  any alignment / K (odd test shapes, q8_0 decode): one warp per output row.
// MATMUL_ID with at most 16 (slot, token) pairs runs one job per pair; with more, group_kernel
// first groups the pairs by expert on the device and the jobs are the selected experts, so each
// expert's weights are read once.
// Pair jobs of mxfp4 weights whose x is FP8-exact per 128 (the routed experts with QAT) may go to
// tc4 (ops_matmul_tc4.cu: f16 tensor cores, x and products exact, each 32-k group scaled in f32):
// only when asked (V4_CUDA_TC_ID=1), as it measured no faster than gemv1.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <vector>

#include <cooperative_groups.h>

#include "backends/cuda/kernels.h"
#include "backends/cuda/matmul.cuh"
#include "backends/cuda/matmul_small.cuh"
#include "tensor/ops.h"
#include "tensor/backend.h"

namespace v4::cuda {
namespace cg = cooperative_groups;

int sm_count() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return sms;
}

// Whether the current GPU launches thread-block clusters (sm_90 and newer).
bool clusters_available() {
  int dev = 0, on = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&on, cudaDevAttrClusterLaunch, dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return on != 0;
}

namespace {

// ---- gemv -------------------------------------------------------------------------------------------
constexpr int kGemvWarps = 8;

// ---- weight prefetch before the PDL wait (common.cuh) ---------------------------------------------
// MATMUL jobs (mode 0) find their weight matrix from kernel parameters alone, so their blocks may
// start on the weights before pdl_wait(); a matmul_id job's expert comes from ids, which the
// previous kernel may still be writing, so those wait first (nothing to prefetch).
__device__ inline bool weights_known_early(const mm_rows& rd) { return rd.mode == 0; }

// One warp's L2 prefetch: rows [m_begin, m_end) of matrix w, bytes [b0, b1) of each (16-byte
// aligned), walked `par` rows at a time as the kernel walks them, until `budget` bytes: whole
// groups of par rows, then the same leading part of each row of the next group. Lane i takes row
// m_begin + i (+ 32, ...), one bulk prefetch each, and the line(s) of scale codes [col0, col1) of
// the rows that start a scale row (fp8: sb_m rows share one). Past the budget nothing is
// prefetched: the kernel's own loads fetch the rest, after the wait, as before.
__device__ inline void prefetch_warp_rows(const mm_weights& W, const char* w, const uint8_t* s, int64_t m_begin,
                                          int64_t m_end, int par, int64_t b0, int64_t b1, int64_t col0,
                                          int64_t col1, int budget, int lane) {
  const int64_t row_bytes = b1 - b0;
  if (budget < 16 || row_bytes <= 0 || m_end <= m_begin) return;
  const int64_t n = m_end - m_begin;
  const int64_t groups_whole = budget / (row_bytes * par);
  const int64_t rows_whole = groups_whole * par < n ? groups_whole * par : n;
  const int64_t part_bytes = ((budget - groups_whole * row_bytes * par) / par) & ~int64_t(15);
  const int64_t rows_part = part_bytes >= 16 ? (rows_whole + par < n ? rows_whole + par : n) : rows_whole;
  for (int64_t i = lane; i < rows_part; i += 32) {
    const int64_t m = m_begin + i;
    prefetch_l2_bulk(w + m * W.nb1 + b0, uint32_t(i < rows_whole ? row_bytes : part_bytes));
    if (s && (i == 0 || m % W.sb_m == 0)) {
      const uint8_t* srow = s + (m / W.sb_m) * W.s_nb1;
      for (int64_t c = col0; c < col1; c += 128) prefetch_l2_line(srow + c);
      prefetch_l2_line(srow + col1 - 1);  // (col0 need not start a line: the last one)
    }
  }
}

// Block: kGemvWarps warps, each R consecutive weight rows; grid (ceil(M / (warps * R)), jobs).
// XS (with NB = 1): the block first copies the job's x row into shared memory (K % 32 == 0).
// pf: bytes of its rows each warp prefetches into L2 before pdl_wait() (MATMUL only; 0: none).
template <int WT, int R, int NB, int U, bool XS>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(mm_weights W, mm_rows rd, int pf) {
  const bool early = weights_known_early(rd);
  if (!early) pdl_wait();
  static_assert(!XS || NB == 1, "shared x holds one row");
  extern __shared__ float4 xs[];
  constexpr int E = chunk<WT>::kElems;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const mm_job jb = job_of(W, rd, blockIdx.y);
  const int64_t m0 = (int64_t(blockIdx.x) * kGemvWarps + warp) * R;
  const bool active = m0 < W.M;
  const int64_t nchunks = W.K / E;
  if (early) {
    if (active && jb.count > 0)
      prefetch_warp_rows(W, jb.w, chunk<WT>::kScaled ? jb.s : nullptr, m0, m0 + R < W.M ? m0 + R : W.M, R, 0,
                         nchunks * 16, 0, chunk<WT>::kScaled ? scale_col(W, W.K - 1) + 1 : 0, pf, lane);
    pdl_wait();
  }
  if (jb.count == 0 || (!XS && !active)) return;  // (with XS every warp joins the block's barriers)

  const char* wrow[R];
  const uint8_t* srow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t m = m0 + r < W.M ? m0 + r : W.M - 1;  // past the end: recompute the last row, store nothing
    wrow[r] = jb.w + m * W.nb1;
    srow[r] = chunk<WT>::kScaled ? jb.s + (m / W.sb_m) * W.s_nb1 : nullptr;
  }

  for (int64_t r0 = 0; r0 < jb.count; r0 += NB) {
    const float* xp[NB];
    float* yp[NB];
#pragma unroll
    for (int b = 0; b < NB; ++b) row_ptrs(rd, jb, r0 + b < jb.count ? r0 + b : r0, &xp[b], &yp[b]);
    if constexpr (XS) {
      __syncthreads();  // the previous row's readers are done
      const float4* xg = reinterpret_cast<const float4*>(xp[0]);
      for (int64_t p = threadIdx.x; p < W.K / 4; p += blockDim.x) xs[x_swizzle(p)] = __ldg(xg + p);
      __syncthreads();
      if (!active) continue;
    }

    float acc[R][NB];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int b = 0; b < NB; ++b) acc[r][b] = 0.0f;

    for (int64_t c0 = lane; c0 < nchunks; c0 += 32 * U) {
      uint4 raw[U][R];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const int64_t c = c0 + 32 * u;
          raw[u][r] = c < nchunks ? __ldg(reinterpret_cast<const uint4*>(wrow[r]) + c) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = c0 + 32 * u;
        if (c >= nchunks) break;
        float part[R][NB];
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int b = 0; b < NB; ++b) part[r][b] = 0.0f;
#pragma unroll
        for (int j = 0; j < E / 4; ++j) {
          float wf[R][4];
#pragma unroll
          for (int r = 0; r < R; ++r) decode4<WT>(raw[u][r], j, wf[r]);
#pragma unroll
          for (int b = 0; b < NB; ++b) {
            const float4 xv =
                XS ? xs[x_swizzle(c * (E / 4) + j)] : __ldg(reinterpret_cast<const float4*>(xp[b] + c * E) + j);
#pragma unroll
            for (int r = 0; r < R; ++r) {
              float& p = chunk<WT>::kScaled ? part[r][b] : acc[r][b];
              p = fmaf(wf[r][0], xv.x, p);
              p = fmaf(wf[r][1], xv.y, p);
              p = fmaf(wf[r][2], xv.z, p);
              p = fmaf(wf[r][3], xv.w, p);
            }
          }
        }
        if constexpr (chunk<WT>::kScaled) {
#pragma unroll
          for (int r = 0; r < R; ++r) {
            // fp8: the scale of this chunk's sb_k block; mxfp4: the chunk is one group of 32.
            const float sc = WT == kFP8 ? e8m0_f(srow[r][scale_col(W, c * E)]) : e8m0_f(srow[r][c]);
#pragma unroll
            for (int b = 0; b < NB; ++b) {
              const float p = WT == kMXFP4 ? part[r][b] * kE2m1HalfUnscale : part[r][b];
              acc[r][b] = fmaf(p, sc, acc[r][b]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        const float v = warp_sum(acc[r][b]);
        if (lane == 0 && m0 + r < W.M && r0 + b < jb.count) yp[b][m0 + r] = v;
      }
  }
}

// ---- gemv1: one x row (decode), weights streamed through shared memory (used for mxfp4) -----------
// The gemv above alternates between waiting for its loads and decoding them, so a warp has bytes in
// flight only part of the time. Here each lane copies its 16-byte chunks (and the 4-byte word holding
// each chunk's scale code) into a per-warp ring of S stages in shared memory with cp.async, S - 1
// tiles ahead of the one it decodes: the copies cost no registers and never stop. A lane reads back
// only what it copied itself, so the ring needs no barrier (cp.async.wait_group makes a thread's own
// copies visible to it). x (one row, zero-padded to whole tiles) is staged once per block, swizzled
// as in the gemv. Blocks are persistent: each warp takes an equal run of R-row groups of its job.
// Numerics are the gemv's: weights decoded exactly, f32 FMA, each chunk's partial sum times its scale.
// Measured (docs/CUDA.md): the fastest for mxfp4 decode; for fp8, slower than gemv_x1 (the copies
// and their bookkeeping cost more instructions than fp8's cheaper decode leaves room for).
constexpr int kG1Warps = 8;

// 16 bytes, bypassing L1 (weights are read once); src_ok false: zero-fill.
__device__ inline void cp_async16_stream(uint32_t dst, const void* src, bool src_ok) {
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_ok ? 16 : 0)
               : "memory");
}
// 16 bytes through L1 (x: every block of the SM reads the same row).
__device__ inline void cp_async16_cached(uint32_t dst, const void* src, bool src_ok) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_ok ? 16 : 0) : "memory");
}
__device__ inline void cp_async4(uint32_t dst, const void* src, bool src_ok) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_ok ? 4 : 0) : "memory");
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ inline void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Shared memory of one block: x, then per warp S x R x 32 weight chunks, then as many scale words.
template <int WT, int R, int S>
size_t gemv1_smem(int tiles_per_row) {
  return size_t(tiles_per_row) * 32 * chunk<WT>::kElems * sizeof(float) + size_t(kG1Warps) * S * R * 32 * (16 + 4);
}

// grid (blocks per job, jobs), kG1Warps warps. tpr: tiles per row (ceil(K / (32 E))); gpw: row
// groups per warp. Jobs of one x row (mode 0 with N = 1, mode 2).
// pf: bytes of its rows each warp prefetches into L2 before pdl_wait() (MATMUL only; 0: none).
template <int WT, int R, int S>
__global__ void __launch_bounds__(kG1Warps * 32) gemv1_kernel(mm_weights W, mm_rows rd, int tpr, int64_t gpw,
                                                               int pf) {
  extern __shared__ float4 g1_smem[];
  constexpr int E = chunk<WT>::kElems;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (weights_known_early(rd)) {  // this warp's row groups, in the order it streams them
    const mm_job jb0 = job_of(W, rd, blockIdx.y);
    const int64_t g0 = (int64_t(blockIdx.x) * kG1Warps + warp) * gpw;
    const int64_t m_end = (g0 + gpw) * R < W.M ? (g0 + gpw) * R : W.M;
    const int64_t cols = WT == kFP8 ? scale_col(W, W.K - 1) + 1 : W.K / E;
    if (jb0.count > 0) prefetch_warp_rows(W, jb0.w, jb0.s, g0 * R, m_end, R, 0, (W.K / E) * 16, 0, cols, pf, lane);
  }
  pdl_wait();
  const mm_job jb = job_of(W, rd, blockIdx.y);
  if (jb.count == 0) return;  // the whole block
  const float* xp;
  float* yp;
  row_ptrs(rd, jb, 0, &xp, &yp);

  const int xpieces = tpr * 32 * (E / 4);
  float4* xs = g1_smem;
  uint4* ring = reinterpret_cast<uint4*>(xs + xpieces) + warp * (S * R * 32) + lane;
  uint32_t* sring = reinterpret_cast<uint32_t*>(reinterpret_cast<uint4*>(xs + xpieces) + kG1Warps * S * R * 32) +
                    warp * (S * R * 32) + lane;

  // x: its own cp.async group, the oldest one.
  const int64_t kpieces = W.K / 4;
  for (int p = threadIdx.x; p < xpieces; p += blockDim.x)
    cp_async16_cached(smem_u32(xs + x_swizzle(p)), xp + 4 * (p < kpieces ? p : 0), p < kpieces);
  cp_async_commit();

  // This warp's row groups [g, g_end) and its tiles (group, t): chunk lane + 32 t of R rows.
  const int64_t ng = (W.M + R - 1) / R;
  const int64_t wg = int64_t(blockIdx.x) * kG1Warps + warp;
  int64_t g_issue = wg * gpw;
  const int64_t g_end = g_issue + gpw < ng ? g_issue + gpw : ng;
  const int n_tiles = g_end > g_issue ? int(g_end - g_issue) * tpr : 0;  // < 2^31 (launcher)
  const int nchunks = int(W.K / E);

  const char* wrow[R];
  const uint8_t* srow[R];
  auto set_rows = [&](int64_t g) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t m0 = g * R + r, m = m0 < W.M ? m0 : W.M - 1;  // past the end: reread the last row
      wrow[r] = jb.w + m * W.nb1;
      srow[r] = jb.s + (m / W.sb_m) * W.s_nb1;
    }
  };
  int t_issue = 0, slot_issue = 0;
  if (n_tiles > 0) set_rows(g_issue);
  auto issue = [&]() {
    const int c = lane + 32 * t_issue;
    const bool ok = c < nchunks;
    const int w_off = ok ? c * 16 : 0;
    const int s_off = ok ? (WT == kFP8 ? (c * E) >> W.sb_k_shift : c) & ~3 : 0;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      cp_async16_stream(smem_u32(ring + (slot_issue * R + r) * 32), wrow[r] + w_off, ok);
      cp_async4(smem_u32(sring + (slot_issue * R + r) * 32), srow[r] + s_off, ok);
    }
    slot_issue = slot_issue + 1 == S ? 0 : slot_issue + 1;
    if (++t_issue == tpr) {
      t_issue = 0;
      if (++g_issue < g_end) set_rows(g_issue);
    }
  };
#pragma unroll
  for (int i = 0; i < S - 1; ++i) {
    if (i < n_tiles) issue();
    cp_async_commit();
  }
  cp_async_wait<S - 1>();  // x is in (the weight stages may still be in flight)
  __syncthreads();

  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  int t = 0, slot = 0;
  int64_t g = wg * gpw;
  for (int i = 0; i < n_tiles; ++i) {
    if (i + S - 1 < n_tiles) issue();
    cp_async_commit();
    cp_async_wait<S - 1>();  // tile i is in

    const int c = lane + 32 * t;
    const int col = WT == kFP8 ? (c * E) >> W.sb_k_shift : c;
    uint4 w[R];
#pragma unroll
    for (int r = 0; r < R; ++r) w[r] = ring[(slot * R + r) * 32];
    float part[R][2];
#pragma unroll
    for (int r = 0; r < R; ++r) part[r][0] = part[r][1] = 0.0f;
    chunk_dot<WT, R>(w, xs, c, part);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint8_t code = uint8_t(sring[(slot * R + r) * 32] >> (8 * (col & 3)));
      const float p = part[r][0] + part[r][1];
      acc[r] = fmaf(WT == kMXFP4 ? p * kE2m1HalfUnscale : p, e8m0_f(code), acc[r]);
    }
    slot = slot + 1 == S ? 0 : slot + 1;
    if (++t == tpr) {  // group g done
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float v = warp_sum(acc[r]);
        acc[r] = 0.0f;
        if (lane == r && g * R + r < W.M) yp[g * R + r] = v;
      }
      t = 0;
      ++g;
    }
  }
  cp_async_wait<0>();  // nothing may be in flight into shared memory when the block exits
}

// ---- gemv_x1: one x row (decode), weights in registers (used for fp8; split-K for every type) ---------
// The gemv's layout (a warp per R rows, lanes over 16-byte chunks, U chunks per row in flight, x in
// shared memory) with the latencies taken off the critical path: the first chunks and every
// chunk's scale code are loaded together, before x is staged and before anything waits (the gemv
// loads the codes after the chunks have arrived: a second round trip). Any fp8 scale block.
//
// SPLIT (split-K, blockIdx.z = slice; launch_split): the block covers chunks [z * slice_chunks,
// + slice_chunks) of its rows, stages only that part of x, and writes its f32 partial sums to
// part[(z * jobs + job) * M + m]; splitk_sum_kernel adds the slices in order. A chunk never
// straddles a scale block (sb_k % 32 == 0, chunks of at most 32 elements), so a slice boundary on
// a chunk boundary keeps every scale exact. Without SPLIT (slice_chunks, part unused) the kernel
// compiles to the same instructions as before split-K existed (compared with cuobjdump -sass).

// Block: kGemvWarps warps of R rows; grid (ceil(M / (warps * R)), jobs, slices); shared memory: the
// slice of x padded to whole groups of 8 pieces (the swizzle permutes within them).
//
// Before pdl_wait() (MATMUL: the weights are known from the parameters; matmul_id waits first for
// its ids): the first chunks and codes are loaded into registers, and the warp prefetches the
// next pf bytes of its rows (and their codes) into L2.
//
// CL > 1 (cluster split-K, launch_cluster_split): the CL blocks of a thread-block cluster (grid x =
// row block * CL + rank) take the CL slices of the same 16 rows; each writes its per-row partial
// sums to its shared memory, and after a cluster barrier rank 0 adds the CL partials in rank order
// through distributed shared memory and writes y (one launch, deterministic, no atomics, no
// scratch; the same slices and order as SPLIT).
template <int WT, int R, int U, bool SPLIT, int CL = 1>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_x1_kernel(mm_weights W, mm_rows rd, int slice_chunks,
                                                                  float* part, int pf) {
  constexpr bool kSliced = SPLIT || CL > 1;
  const bool early = weights_known_early(rd);
  if (!early) pdl_wait();
  extern __shared__ float4 x1_smem[];
  constexpr int E = chunk<WT>::kElems;
  constexpr bool kScaled = chunk<WT>::kScaled;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const mm_job jb = job_of(W, rd, blockIdx.y);
  if (jb.count == 0) return;  // the whole block (before touching anything)
  const int64_t row_block = CL > 1 ? blockIdx.x / CL : blockIdx.x;
  const int slice = CL > 1 ? int(blockIdx.x % CL) : SPLIT ? int(blockIdx.z) : 0;  // (x clusters: rank = x % CL)
  const int64_t m0 = (row_block * kGemvWarps + warp) * R;
  const int nchunks = int(W.K / E);
  const int c_begin = kSliced ? slice * slice_chunks : 0;
  const int c_end = kSliced && c_begin + slice_chunks < nchunks ? c_begin + slice_chunks : nchunks;

  const uint4* wrow[R];
  const uint8_t* srow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t m = m0 + r < W.M ? m0 + r : W.M - 1;  // past the end: reread the last row, store nothing
    wrow[r] = reinterpret_cast<const uint4*>(jb.w + m * W.nb1);
    srow[r] = kScaled ? jb.s + (m / W.sb_m) * W.s_nb1 : nullptr;
  }
  uint4 raw[U][R];
  uint8_t code[U][R];
  auto load = [&](int c0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
      const bool ok = c < c_end;
      const int col = WT == kFP8 ? int(scale_col(W, int64_t(c) * E)) : c;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        raw[u][r] = ok ? __ldg(wrow[r] + c) : make_uint4(0, 0, 0, 0);
        if constexpr (kScaled) code[u][r] = ok ? __ldg(srow[r] + col) : uint8_t(0);
      }
    }
  };
  load(c_begin + lane);
  if (early) {
    if (m0 < W.M) {
      // After the chunks load() took (32 U per row), in the slice; codes: the slice's columns.
      const int c_pf = c_begin + 32 * U < c_end ? c_begin + 32 * U : c_end;
      const int64_t col0 = WT == kFP8 ? scale_col(W, int64_t(c_begin) * E) : c_begin;
      const int64_t col1 = WT == kFP8 ? scale_col(W, int64_t(c_end - 1) * E) + 1 : c_end;
      prefetch_warp_rows(W, jb.w, kScaled ? jb.s : nullptr, m0, m0 + R < W.M ? m0 + R : W.M, R, int64_t(c_pf) * 16,
                         int64_t(c_end) * 16, col0, col1, pf, lane);
    }
    pdl_wait();
  }
  const float* xp;
  float* yp;
  row_ptrs(rd, jb, 0, &xp, &yp);

  if constexpr (kSliced) {  // x pieces (4 floats) of this slice, indexed from the slice's first chunk
    const float4* xg = reinterpret_cast<const float4*>(xp) + int64_t(c_begin) * (E / 4);
    const int xpieces = (c_end - c_begin) * (E / 4);
    for (int p = threadIdx.x; p < xpieces; p += blockDim.x) x1_smem[x_swizzle(p)] = __ldg(xg + p);
  } else {
    const float4* xg = reinterpret_cast<const float4*>(xp);
    for (int64_t p = threadIdx.x; p < W.K / 4; p += blockDim.x) x1_smem[x_swizzle(p)] = __ldg(xg + p);
  }
  __syncthreads();
  if (CL == 1 && m0 >= W.M) return;  // after the block's only barrier (clusters: every warp joins theirs)

  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  for (int c0 = c_begin + lane; c0 < c_end; c0 += 32 * U) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
      if (c >= c_end) break;
      float part_c[R][2];
#pragma unroll
      for (int r = 0; r < R; ++r) part_c[r][0] = part_c[r][1] = 0.0f;
      chunk_dot<WT, R>(raw[u], x1_smem, c - c_begin, part_c);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float p = part_c[r][0] + part_c[r][1];
        if constexpr (kScaled) acc[r] = fmaf(WT == kMXFP4 ? p * kE2m1HalfUnscale : p, e8m0_f(code[u][r]), acc[r]);
        else acc[r] += p;
      }
    }
    if (c0 + 32 * U < c_end) load(c0 + 32 * U);
  }
  if constexpr (CL > 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    __trap();  // no clusters before sm_90 (cluster_slices never picks this there)
#else
    __shared__ float cl_part[kGemvWarps * R];  // this slice's sum of each of the block's rows
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float v = warp_sum(acc[r]);
      if (lane == r) cl_part[warp * R + r] = v;
    }
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every slice's partials are written (release / acquire across the cluster)
    const int64_t m = row_block * kGemvWarps * R + threadIdx.x;
    if (slice == 0 && threadIdx.x < kGemvWarps * R && m < W.M) {
      float sum = *cluster.map_shared_rank(cl_part + threadIdx.x, 0);
#pragma unroll
      for (int q = 1; q < CL; ++q) sum += *cluster.map_shared_rank(cl_part + threadIdx.x, q);
      yp[m] = sum;
    }
    cluster.sync();  // no block leaves (freeing its shared memory) before rank 0 has read it
#endif
  } else {
    float* out = SPLIT ? part + (int64_t(blockIdx.z) * gridDim.y + blockIdx.y) * W.M : yp;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float v = warp_sum(acc[r]);
      if (lane == r && m0 + r < W.M) out[m0 + r] = v;
    }
  }
}

// Split-K, second launch: y[m] of each job = the sum of its S slice partials, added in slice order
// (deterministic: no atomics). Grid (ceil(M / 256), jobs), 256 threads, one output each.
__global__ void splitk_sum_kernel(mm_weights W, mm_rows rd, const float* part, int slices) {
  pdl_wait();
  const mm_job jb = job_of(W, rd, blockIdx.y);
  const int64_t m = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (jb.count == 0 || m >= W.M) return;  // jobs the first kernel skipped wrote no partials
  const float* xp;
  float* yp;
  row_ptrs(rd, jb, 0, &xp, &yp);
  const int64_t step = int64_t(gridDim.y) * W.M;
  const float* p = part + int64_t(blockIdx.y) * W.M + m;
  float sum = p[0];
  for (int z = 1; z < slices; ++z) sum += p[z * step];
  yp[m] = sum;
}

// ---- generic --------------------------------------------------------------------------------------
// One warp per weight row; the job's x rows one after the other; lanes stride along K.
__global__ void generic_kernel(int type, mm_weights W, mm_rows rd) {
  pdl_wait();
  const int lane = threadIdx.x & 31;
  const mm_job jb = job_of(W, rd, blockIdx.y);
  const int64_t m = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (jb.count == 0 || m >= W.M) return;
  const char* wrow = jb.w + m * W.nb1;
  const uint8_t* srow = jb.s ? jb.s + (m / W.sb_m) * W.s_nb1 : nullptr;
  for (int64_t r = 0; r < jb.count; ++r) {
    const float* x;
    float* y;
    row_ptrs(rd, jb, r, &x, &y);
    float acc = 0.0f;
    for (int64_t k = lane; k < W.K; k += 32) acc = fmaf(weight_at(type, wrow, srow, W.sb_k, k), x[k], acc);
    acc = warp_sum(acc);
    if (lane == 0) y[m] = acc;
  }
}

// ---- expert grouping (MATMUL_ID) ---------------------------------------------------------------------
constexpr int kMaxExperts = 4096;  // shared-memory counters; more experts go to the CPU (supports_op)

// One block. ids i32 [n_used, n_tok] (strides in bytes). Writes scratch: [0] n_active,
// active[P], offs[P + 1], pairs[n_pairs] (P = min(E, n_pairs)). Ids outside [0, E) are skipped
// (ops.h: a caller error; their outputs are left unwritten).
__global__ void group_kernel(const char* ids, int64_t ids_nb0, int64_t ids_nb1, int n_used, int64_t n_pairs, int E,
                             int P, int* scratch) {
  pdl_wait();
  __shared__ int cnt[kMaxExperts];
  int* n_active = scratch;
  int* active = scratch + 1;
  int* offs = active + P;
  int* pairs = offs + P + 1;
  for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  __syncthreads();
  auto expert_of = [&](int64_t p) {
    return *reinterpret_cast<const int32_t*>(ids + (p % n_used) * ids_nb0 + (p / n_used) * ids_nb1);
  };
  for (int64_t p = threadIdx.x; p < n_pairs; p += blockDim.x) {
    const int e = expert_of(p);
    if (e >= 0 && e < E) atomicAdd(&cnt[e], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {  // E is small (256 for V4): a serial scan is cheaper than a parallel one
    int sum = 0, na = 0;
    for (int e = 0; e < E; ++e) {
      const int c = cnt[e];
      if (c == 0) continue;
      active[na] = e;
      offs[na] = sum;
      cnt[e] = sum;  // from here on: the next free position of expert e
      sum += c;
      ++na;
    }
    offs[na] = sum;
    *n_active = na;
  }
  __syncthreads();
  for (int64_t p = threadIdx.x; p < n_pairs; p += blockDim.x) {
    const int e = expert_of(p);
    if (e >= 0 && e < E) pairs[atomicAdd(&cnt[e], 1)] = int(p);
  }
}

constexpr int kPairJobs = 16;        // MATMUL_ID with at most this many pairs: one job per pair
constexpr int kGroupScratchSlot = 20;  // ops_scratch.cu slot of the grouping lists (per stream)

// ---- dispatch -------------------------------------------------------------------------------------------
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

int chunk_elems(dtype wt) {
  switch (wt) {
    case dtype::f32: return chunk<kF32>::kElems;
    case dtype::f16: return chunk<kF16>::kElems;
    case dtype::bf16: return chunk<kBF16>::kElems;
    case dtype::fp8_e4m3: return chunk<kFP8>::kElems;
    case dtype::mxfp4: return chunk<kMXFP4>::kElems;
    default: return 0;  // q8_0: 34-byte blocks, no 16-byte chunks (generic decode path)
  }
}

// 16-byte aligned rows and matrices of w and x: what the gemv and mma loads need.
bool rows_aligned(const tensor* w, const tensor* x) {
  return aligned16(w->data) && aligned16(x->data) && w->nb[1] % 16 == 0 && w->nb[2] % 16 == 0 && w->nb[3] % 16 == 0 &&
         x->nb[1] % 16 == 0 && x->nb[2] % 16 == 0 && x->nb[3] % 16 == 0;
}

constexpr int64_t kMaxSharedX = 48 * 1024;  // bytes of x a block may stage (no opt-in needed)

// Bytes of its weight rows each warp of a MATMUL decode kernel prefetches into L2 before
// pdl_wait() (see prefetch_warp_rows). Only for calls whose weights (all jobs) are at most
// kPrefetchMaxBytes, and not for the cluster split (cluster_launch) or gemv1: measured in graph
// chains (docs/CUDA.md "Cluster split-K and weight prefetch"), it gains 0.1-1.9 us on small
// calls (bf16 K=4096 M=256 / 512, fp8 M=512), nothing at fp8 M=1024 or with the cluster split,
// and loses on larger ones (fp8 K=4096 M=2048: +0.3 us; K=8192 M=4096: 15.0 -> 17.0 us).
constexpr int kPrefetchWarpBytes = 16 * 1024;
constexpr int64_t kPrefetchMaxBytes = int64_t(4) << 20;
std::atomic<int> g_prefetch{-1};  // set_matmul_prefetch (a test hook): < 0 automatic, else forced

template <int WT, int R, int U>
void gemv_nb(cudaStream_t s, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t rows_hint) {
  const dim3 grid(unsigned((W.M + kGemvWarps * R - 1) / (kGemvWarps * R)), jobs);
  const int nb = rows_hint <= 1 ? 1 : rows_hint <= 2 ? 2 : rows_hint <= 4 ? 4 : 8;
  const int64_t x_bytes = W.K * int64_t(sizeof(float));
  const int pf = matmul_prefetch_bytes(W.nb1 * W.M * int64_t(jobs));
  // Shared x pays for the wide chunks (fp8, mxfp4); measured slower for f16/bf16 (docs/CUDA.md).
  if (nb == 1 && chunk<WT>::kElems >= 16 && W.K % 32 == 0 && x_bytes <= kMaxSharedX)
    launch(gemv_kernel<WT, R, 1, U, true>, grid, kGemvWarps * 32, size_t(x_bytes), s, W, rd, pf);
  else if (nb == 1) launch(gemv_kernel<WT, R, 1, U, false>, grid, kGemvWarps * 32, 0, s, W, rd, pf);
  else if (nb == 2) launch(gemv_kernel<WT, R, 2, U, false>, grid, kGemvWarps * 32, 0, s, W, rd, pf);
  else if (nb == 4) launch(gemv_kernel<WT, R, 4, U, false>, grid, kGemvWarps * 32, 0, s, W, rd, pf);
  else launch(gemv_kernel<WT, R, 8, U, false>, grid, kGemvWarps * 32, 0, s, W, rd, pf);
}

// ---- gemv1 launch -------------------------------------------------------------------------------------
// gemv1 for matmul_id (the routed experts) is launched WITHOUT the PDL attribute: in graph chains
// (docs/CUDA.md "Cluster split-K and weight prefetch") the expert call took 18.4 us with PDL and
// 15.0-15.2 us without, while a dense mxfp4 gemv1 (MATMUL) was faster with it (5.9 against 7.4 us).
// The plain launch starts after the previous kernel as without PDL; the kernel's pdl_wait() is
// then a no-op. set_matmul_expert_pdl (a test hook) or V4_CUDA_EXPERT_PDL=1 restore the attribute.
std::atomic<bool> g_expert_pdl{false};
// Whether a persistent decode kernel (gemv1, the ring) is launched with the PDL attribute: MATMUL
// always; matmul_id only when set_matmul_expert_pdl or V4_CUDA_EXPERT_PDL=1 asks for it.
bool launch_with_pdl(const mm_rows& rd) {
  static const bool env_expert_pdl = env_is("V4_CUDA_EXPERT_PDL", "1");
  return rd.mode == 0 || g_expert_pdl.load(std::memory_order_relaxed) || env_expert_pdl;
}
constexpr size_t kG1MaxSmem = 200 * 1024;  // opt-in dynamic shared memory (sm_90: up to 227 KiB)

int g1_occupancy(const void* kernel, size_t smem, int dev) {
  return resident_blocks(kernel, kG1Warps * 32, smem, dev, kG1MaxSmem);
}

// Launches gemv1 for one-row jobs; false (nothing launched) when it does not fit.
template <int WT, int R, int S>
bool gemv1_launch(cudaStream_t s, const mm_weights& W, const mm_rows& rd, unsigned jobs) {
  constexpr int E = chunk<WT>::kElems;
  const int tpr = int((W.K / E + 31) / 32);
  const size_t smem = gemv1_smem<WT, R, S>(tpr);
  if (smem > kG1MaxSmem) return false;
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const int occ = g1_occupancy(reinterpret_cast<const void*>(gemv1_kernel<WT, R, S>), smem, dev);
  if (occ <= 0) return false;
  // The warps that fit at once, shared by the jobs; every warp of a job gets the same number of
  // R-row groups (an uneven split would leave the last wave's warps waiting on the longest).
  const int64_t ng = (W.M + R - 1) / R;
  const int64_t warps_per_job = std::max<int64_t>(1, int64_t(sms) * occ * kG1Warps / int64_t(jobs));
  const int64_t gpw = (ng + warps_per_job - 1) / warps_per_job;
  const int64_t warps = (ng + gpw - 1) / gpw;
  if (gpw * tpr > (int64_t(1) << 30) || W.K > (int64_t(1) << 30)) return false;  // the kernel's int tile and chunk indices
  const unsigned blocks = unsigned((warps + kG1Warps - 1) / kG1Warps);
  // No weight prefetch unless a test forces one: measured slower (mxfp4 K=4096 M=1024: 5.9 -> 6.4 us).
  const int pf = matmul_prefetch_bytes(kPrefetchMaxBytes + 1);
  if (launch_with_pdl(rd)) {
    launch(gemv1_kernel<WT, R, S>, dim3(blocks, jobs), kG1Warps * 32, smem, s, W, rd, tpr, gpw, pf);
  } else {  // plain launch: waits for the previous kernel as without PDL (its pdl_wait() is a no-op)
    gemv1_kernel<WT, R, S><<<dim3(blocks, jobs), kG1Warps * 32, smem, s>>>(W, rd, tpr, gpw, pf);
  }
  return true;
}

// Launches gemv_x1 for one-row jobs; false (nothing launched) when x does not fit. Split-K:
// `slices` slices of slice_chunks chunks, partial sums to part (see gemv_x1_kernel).
template <int WT, int R, int U, bool SPLIT = false>
bool x1_launch(cudaStream_t s, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t slice_chunks = 0,
               int slices = 1, float* part = nullptr) {
  constexpr int E = chunk<WT>::kElems;
  if (slice_chunks <= 0) slice_chunks = W.K / E;
  const size_t smem = size_t((slice_chunks * (E / 4) + 7) / 8 * 8) * sizeof(float4);
  if (smem > kG1MaxSmem || W.K > (int64_t(1) << 30)) return false;
  const auto kernel = gemv_x1_kernel<WT, R, U, SPLIT>;
  if (smem > 48 * 1024) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    if (g1_occupancy(reinterpret_cast<const void*>(kernel), smem, dev) <= 0) return false;
  }
  const dim3 grid(unsigned((W.M + kGemvWarps * R - 1) / (kGemvWarps * R)), jobs, unsigned(slices));
  launch(kernel, grid, kGemvWarps * 32, smem, s, W, rd, int(slice_chunks), part,
         matmul_prefetch_bytes(W.nb1 * W.M * int64_t(jobs)));
  return true;
}

// set_decode_kernels_off (a timing hook): one-row calls go to the gemv as before launch_decode.
std::atomic<bool> g_decode_off{false};

// Every job multiplies one x row (matmul with N = 1, matmul_id by pair): what gemv_x1 / gemv1 do.
bool one_row_jobs(const mm_rows& rd) { return rd.mode == 2 || (rd.mode == 0 && rd.N == 1); }

// One x row per job (decode) of fp8 / mxfp4 with scales: whether launch_decode may take the call.
// mxfp4 (gemv1) reads each lane's scale codes as aligned 4-byte words, whole words inside a row.
bool decode_fits(dtype wt, const mm_weights& W, const mm_rows& rd) {
  if ((wt != dtype::fp8_e4m3 && wt != dtype::mxfp4) || !W.scales) return false;
  if (!one_row_jobs(rd)) return false;
  if (wt == dtype::fp8_e4m3) return true;
  return (reinterpret_cast<uintptr_t>(W.scales) & 3) == 0 && W.s_nb1 % 4 == 0 && W.s_nb2 % 4 == 0 &&
         W.s_nb3 % 4 == 0 && W.s_cols % 4 == 0;
}

// The decode kernels, as measured fastest (docs/CUDA.md "Matmuls", 2026-11-28): fp8 keeps its
// chunks in registers (gemv_x1, 2 rows x 2 chunks per lane: more in flight per warp measured
// slower, fewer resident warps); mxfp4 streams them (gemv1, 4 rows x 3 stages; 2 rows x 4 stages
// for several jobs with K >= 4096, the expert gate/up shape). False: nothing launched.
bool launch_decode(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs) {
  if (wt == dtype::fp8_e4m3) return x1_launch<kFP8, 2, 2>(s, W, rd, jobs);
  if (jobs > 1 && W.K >= 4096) return gemv1_launch<kMXFP4, 2, 4>(s, W, rd, jobs);
  return gemv1_launch<kMXFP4, 4, 3>(s, W, rd, jobs);
}

// ---- split-K decode --------------------------------------------------------------------------------------
// A one-row call with few rows leaves most of the GPU idle while each warp walks all of K. Split K
// into S slices, one block per (rows, slice), then add the slices' partial sums in a fixed order
// (gemv_x1_kernel<SPLIT>, splitk_sum_kernel: deterministic, no atomics; x not rounded).
//
// When it pays (2026-11-28, H200, 132 SMs; CudaMatmul.SplitKTiming, back-to-back launches, us per
// call, "off" = the kernels without split-K):
//   fp8 K=16384 M=4096       off 31.2   S=2 27.3   S=4 28.4      <- the one shape where it pays
//   fp8 K=4096 M=512         off 8.3    S=2 8.3    S=4 7.6   S=8 7.9
//   fp8 K=4096 M=1024        off 8.5    S=2 9.4    S=4 9.0   S=8 9.1
//   fp8 K=4096 M=2048        off 9.1    S=2 9.9    S=4 10.0  S=8 12.7
//   mxfp4 K=4096 M=1024      off 7.5 (gemv1)   S=2..8 9.3-9.4
//   matmul_id 6 experts: mxfp4 K=4096 M=2048 16.5 -> 24.5 (S=2); mxfp4 K=2048 M=4096 16.0 -> 31.7;
//                        fp8 K=4096 M=2048 21.9 -> 25.9
// ("off" fp8 there: gemv_x1 built from an intermediate source, ~0.5 us above the earlier 8.0 / 8.6 /
// 30.0 / 21.4; the unsplit gemv_x1 now compiles to the same SASS as those.) At K = 4096 a call
// costs ~8 us whatever its size (launch, round trips: docs/CUDA.md), and the second launch takes
// back what the shorter walk saves; the expert calls already fill the GPU.
// So: fp8 only, K of at least kSplitMinChunks chunks (16 or more loads per lane without a split),
// and S the largest power of two that keeps the grid within one wave of resident blocks.
constexpr int kSplitScratchSlot = 21;       // ops_scratch.cu slot of the partial sums (per stream)
constexpr int kSplitR = 2, kSplitU = 2;     // gemv_x1's rows per warp and chunks in flight
constexpr int kSliceMinChunks = 32;         // a slice gives every lane at least one chunk
constexpr int64_t kSplitMinChunks = 1024;   // fp8: K >= 16384
constexpr int kSplitBlocksPerSM = 4;        // gemv_x1 fp8 (64 registers, 8 warps): 4 blocks per SM
std::atomic<int> g_split_force{0};          // set_matmul_split_k (a test hook): 0 automatic

// Chunks per slice for about S slices: whole multiples of kSliceMinChunks (fp8: 512 elements, 4
// scale blocks of 128; mxfp4: 1024 elements, 32 scale blocks). The last slice may be shorter.
int64_t slice_chunks_for(int64_t nchunks, int S) {
  return ((nchunks + S - 1) / S + kSliceMinChunks - 1) / kSliceMinChunks * kSliceMinChunks;
}

// Slices for a one-row call of wt (1: no split); the slice of x fits the default 48 KiB of shared
// memory. set_matmul_split_k(n >= 2) forces about n slices for every weight type (tests, timing).
int split_slices(dtype wt, const mm_weights& W, unsigned jobs) {
  const int E = chunk_elems(wt);
  if (E == 0 || W.K % E != 0 || W.K > (int64_t(1) << 30)) return 1;
  if ((wt == dtype::fp8_e4m3 || wt == dtype::mxfp4) && !W.scales) return 1;
  const int64_t nchunks = W.K / E;
  const int64_t max_s = nchunks / kSliceMinChunks;
  const int force = g_split_force.load(std::memory_order_relaxed);
  if (force == 1 || max_s < 2) return 1;
  int S = 1;
  if (force > 1) {
    S = int(std::min<int64_t>(force, max_s));
  } else {
    if (wt != dtype::fp8_e4m3 || nchunks < kSplitMinChunks) return 1;
    const int64_t wave = int64_t(kSplitBlocksPerSM) * sm_count();
    const int64_t blocks = (W.M + kGemvWarps * kSplitR - 1) / (kGemvWarps * kSplitR) * int64_t(jobs);
    while (2 * S <= max_s && blocks * 2 * S <= wave) S *= 2;
  }
  if (S < 2 || slice_chunks_for(nchunks, S) * E * int64_t(sizeof(float)) > kMaxSharedX) return 1;
  return S;
}

// Launches the split of a one-row call into about S slices and the sum of their partials.
bool launch_split(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, int S,
                  std::string* error) {
  const int E = chunk_elems(wt);
  const int64_t nchunks = W.K / E;
  const int64_t slice = slice_chunks_for(nchunks, S);
  const int slices = int((nchunks + slice - 1) / slice);
  float* part = static_cast<float*>(
      scratch(s, kSplitScratchSlot, size_t(slices) * size_t(jobs) * size_t(W.M) * sizeof(float), error));
  if (!part) return false;
  bool ok = false;
  switch (wt) {
    case dtype::f32: ok = x1_launch<kF32, kSplitR, kSplitU, true>(s, W, rd, jobs, slice, slices, part); break;
    case dtype::f16: ok = x1_launch<kF16, kSplitR, kSplitU, true>(s, W, rd, jobs, slice, slices, part); break;
    case dtype::bf16: ok = x1_launch<kBF16, kSplitR, kSplitU, true>(s, W, rd, jobs, slice, slices, part); break;
    case dtype::fp8_e4m3: ok = x1_launch<kFP8, kSplitR, kSplitU, true>(s, W, rd, jobs, slice, slices, part); break;
    case dtype::mxfp4: ok = x1_launch<kMXFP4, kSplitR, kSplitU, true>(s, W, rd, jobs, slice, slices, part); break;
    default: break;
  }
  if (!ok) {  // split_slices keeps the slice of x within 48 KiB: not expected
    *error = "CUDA: matmul split-K: the kernel does not fit (K " + std::to_string(W.K) + ")";
    return false;
  }
  const dim3 grid(unsigned((W.M + 255) / 256), jobs);
  launch(splitk_sum_kernel, grid, 256, 0, s, W, rd, part, slices);
  return true;
}

// ---- cluster split-K (one launch) -------------------------------------------------------------------------
// A one-row MATMUL over few rows (q_a: M = 1024, 64 blocks of 16 rows on 132 SMs) leaves most SMs
// idle while each warp walks all of K in dependent rounds of loads. gemv_x1_kernel<CL> splits K
// over the CL blocks of a thread-block cluster instead (sm_90; partials summed through distributed
// shared memory in rank order): more blocks, shorter walks, and no second launch or scratch.
// When it pays is measured (docs/CUDA.md "Cluster split-K and weight prefetch"): cluster_slices.
std::atomic<int> g_cluster_force{0};  // set_matmul_cluster (a test hook): 0 automatic, 1 never, n forced


// The automatic choice (graph chains, docs/CUDA.md "Cluster split-K and weight prefetch"): the most slices
// (8, 4, 2) that leave every lane at least two chunks of its slice (one full round of gemv_x1's
// U = 2 loads: 64 chunks) and keep the grid within about two blocks per SM. Measured best at
// fp8 K=4096 M=1024 / 512 (4), bf16 K=4096 M=1024 (4), bf16 K=4096 M=256 (8). V4_CUDA_CLUSTER=0
// turns it off (an A/B of a model run).
int cluster_auto(const mm_weights& W, int E, unsigned jobs) {
  static const bool off = env_is("V4_CUDA_CLUSTER", "0");
  const int sms = sm_count();
  if (off || sms <= 0) return 1;
  const int64_t row_blocks = (W.M + kGemvWarps * kSplitR - 1) / (kGemvWarps * kSplitR) * int64_t(jobs);
  const int64_t nchunks = W.K / E;
  for (int CL = 8; CL >= 2; CL /= 2)
    if (nchunks / CL >= 2 * 32 && row_blocks * CL <= 2 * int64_t(sms)) return CL;
  return 1;
}

// Shared memory of a cluster slice's x (as x1_launch), 0 when the type has no cluster kernel.
int64_t cluster_smem(dtype wt, const mm_weights& W, int CL) {
  const int E = wt == dtype::fp8_e4m3 ? chunk<kFP8>::kElems : wt == dtype::bf16 ? chunk<kBF16>::kElems : 0;
  if (E == 0) return 0;
  return (slice_chunks_for(W.K / E, CL) * (E / 4) + 7) / 8 * 8 * int64_t(sizeof(float4));
}

// Cluster slices for a call (1: none): fp8 (with scales) or bf16, MATMUL jobs of one x row,
// aligned, K a multiple of the chunk, every one of the CL slices non-empty (whole multiples of
// 32 chunks), x's slice within 48 KiB; the GPU has clusters (sm_90). set_matmul_cluster(n >= 2)
// forces about n (a power of two, at most 8) where that holds.
int cluster_slices(dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t rows_hint, bool aligned) {
  const int force = g_cluster_force.load(std::memory_order_relaxed);
  if (force == 1 || !aligned || rows_hint != 1 || rd.mode != 0 || rd.N != 1) return 1;
  if (g_decode_off.load(std::memory_order_relaxed)) return 1;
  if (!(wt == dtype::bf16 || (wt == dtype::fp8_e4m3 && W.scales))) return 1;
  const int E = chunk_elems(wt);
  if (W.K % E != 0 || W.K > (int64_t(1) << 30) || !clusters_available()) return 1;
  const int64_t nchunks = W.K / E;
  int CL = 1;
  if (force > 1) {
    CL = force >= 8 ? 8 : force >= 4 ? 4 : 2;
  } else {
    CL = cluster_auto(W, E, jobs);
  }
  while (CL > 1 && ((nchunks + slice_chunks_for(nchunks, CL) - 1) / slice_chunks_for(nchunks, CL) != CL ||
                    cluster_smem(wt, W, CL) > kMaxSharedX))
    CL /= 2;
  return CL;
}

template <int WT, int CL>
void cluster_launch(cudaStream_t s, const mm_weights& W, const mm_rows& rd, unsigned jobs) {
  constexpr int E = chunk<WT>::kElems;
  const int64_t slice = slice_chunks_for(W.K / E, CL);
  const size_t smem = size_t((slice * (E / 4) + 7) / 8 * 8) * sizeof(float4);
  const unsigned row_blocks = unsigned((W.M + kGemvWarps * kSplitR - 1) / (kGemvWarps * kSplitR));
  // No weight prefetch unless a test forces one (measured: no gain with the split, kPrefetchMaxBytes).
  const int pf = matmul_prefetch_bytes(kPrefetchMaxBytes + 1);
  launch_clustered(gemv_x1_kernel<WT, kSplitR, kSplitU, false, CL>, dim3(row_blocks * CL, jobs), kGemvWarps * 32,
                   smem, s, CL, W, rd, int(slice), static_cast<float*>(nullptr), pf);
}

// Launches the cluster split chosen by cluster_slices (CL 2, 4 or 8).
void launch_cluster_split(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, int CL) {
  if (wt == dtype::fp8_e4m3) {
    if (CL == 2) cluster_launch<kFP8, 2>(s, W, rd, jobs);
    else if (CL == 4) cluster_launch<kFP8, 4>(s, W, rd, jobs);
    else cluster_launch<kFP8, 8>(s, W, rd, jobs);
  } else {
    if (CL == 2) cluster_launch<kBF16, 2>(s, W, rd, jobs);
    else if (CL == 4) cluster_launch<kBF16, 4>(s, W, rd, jobs);
    else cluster_launch<kBF16, 8>(s, W, rd, jobs);
  }
}

// Split-K slices for a call (1: none): one x row per job, 16-byte aligned rows (gemv_x1's loads),
// and not while set_decode_kernels_off holds (that hook times the gemv alone).
int split_for(dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t rows_hint, bool aligned) {
  if (rows_hint != 1 || !aligned || !one_row_jobs(rd) || g_decode_off.load(std::memory_order_relaxed)) return 1;
  return split_slices(wt, W, jobs);
}

bool launch_gemv(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t rows_hint,
                 std::string* error) {
  const bool decode_on = !g_decode_off.load(std::memory_order_relaxed);
  // One x row and a long K over too few rows to fill the GPU: split K.
  const int S = split_for(wt, W, rd, jobs, rows_hint, true);
  if (S > 1) return launch_split(s, wt, W, rd, jobs, S, error);
  // One x row of fp8 / mxfp4 (decode): the streaming kernel when it applies.
  if (rows_hint == 1 && decode_on && decode_fits(wt, W, rd) && launch_decode(s, wt, W, rd, jobs)) return true;
  // R rows per warp share each x load: mxfp4 (32 elements per chunk) needs the most reuse.
  switch (wt) {
    case dtype::f32: gemv_nb<kF32, 2, 4>(s, W, rd, jobs, rows_hint); break;
    case dtype::f16: gemv_nb<kF16, 2, 4>(s, W, rd, jobs, rows_hint); break;
    case dtype::bf16: gemv_nb<kBF16, 2, 4>(s, W, rd, jobs, rows_hint); break;
    case dtype::fp8_e4m3: gemv_nb<kFP8, 4, 2>(s, W, rd, jobs, rows_hint); break;
    case dtype::mxfp4: gemv_nb<kMXFP4, 4, 2>(s, W, rd, jobs, rows_hint); break;
    default: break;
  }
  return true;
}

mm_weights weights_of(const tensor* w) {
  mm_weights W{};
  W.data = static_cast<const char*>(w->data);
  W.nb1 = int64_t(w->nb[1]), W.nb2 = int64_t(w->nb[2]), W.nb3 = int64_t(w->nb[3]);
  if (traits(w->type).scaled && w->scales) {
    W.scales = static_cast<const uint8_t*>(w->scales->data);
    W.s_nb1 = int64_t(w->scales->nb[1]), W.s_nb2 = int64_t(w->scales->nb[2]), W.s_nb3 = int64_t(w->scales->nb[3]);
    W.sb_k = w->scale_block[0];
    W.sb_m = w->scale_block[1];
    W.sb_k_shift = -1;
    W.s_cols = w->scales->ne[0];
    for (int b = 0; b < 31; ++b)
      if (W.sb_k == (1 << b)) W.sb_k_shift = b;
  }
  W.K = w->ne[0];
  W.M = w->ne[1];
  return W;
}

// One-row calls the streaming kernel (ops_matmul_ring.cu) may take: aligned, not while a test hook
// forces split-K or the cluster split (their tests and timings) or sends decode to the gemv.
bool ring_takes(dtype wt, const mm_weights& W, const mm_rows& rd, int64_t rows_hint, bool aligned, bool split_forced) {
  if (rows_hint != 1 || !aligned || !one_row_jobs(rd) || split_forced || W.M == 0) return false;
  if (g_cluster_force.load(std::memory_order_relaxed) > 1 || g_decode_off.load(std::memory_order_relaxed)) return false;
  return ring_wanted(wt, W, rd);
}

// ---- tensor-core decode (ops_matmul_tc.cu) -------------------------------------------------------------
// set_matmul_tc_decode (a test hook): 0 automatic, 1 off, 2 every call that fits (whatever its size
// or x); V4_CUDA_TC_DECODE=0 turns it off too (an A/B of a model run).
std::atomic<int> g_tc_decode{0};

int tc_decode_mode() {
  static const bool env_off = env_is("V4_CUDA_TC_DECODE", "0");
  return env_off ? 1 : g_tc_decode.load(std::memory_order_relaxed);
}

// Whether the automatic choice may also take x that is not FP8-exact (rounded to bf16, below; the
// grouped wo_a, which the official model computes in bf16): on by default (docs/CUDA.md "Fourth
// session": tested on the H200, 0.203-0.224 against 0.226-0.230 ms per layer);
// V4_CUDA_TC_BF16X=0 turns it off. The test hook set_matmul_tc_bf16x: 0 automatic, 1 off, 2 on.
std::atomic<int> g_tc_bf16x{0};

bool tc_bf16x_on() {
  static const bool env_off = env_is("V4_CUDA_TC_BF16X", "0");
  const int hook = g_tc_bf16x.load(std::memory_order_relaxed);
  return hook == 0 ? !env_off : hook == 2;
}

// Whether x's values are FP8-exact per 128 along K: x (through views) is the output of a node that
// rounds every row in runs of 128 from its start (tensor/ops.h: fp8_rounded_block is 128), contiguous
// with rows a multiple of 128 long, and each row of x starts on a run boundary (byte offset and
// row strides multiples of 128 floats) so that x's 128-blocks are the node's runs.
bool x_fp8_exact(const tensor* x) {
  const tensor* p = x->view_src ? x->view_src : x;  // view_src is the base (tensor/ops.cpp)
  const size_t offs = x->view_src ? x->view_offs : 0;
  constexpr size_t kRun = 128 * sizeof(float);
  if (x->type != dtype::f32 || p->type != dtype::f32 || !p->is_contiguous() || p->ne[0] % 128 != 0) return false;
  if (offs % kRun != 0 || x->nb[0] != sizeof(float)) return false;
  for (int d = 1; d < kMaxDims; ++d)
    if (x->ne[d] > 1 && x->nb[d] % kRun != 0) return false;
  return fp8_rounded_block(p, offs, x->nbytes()) == 128;
}

// Where the tensor-core decode is taken (GraphChainTiming, docs/CUDA.md "Fourth session"): calls of
// at least kTcMinBytes of weights (all jobs). Measured per call in a replayed chain against the f32
// kernels: 32 MiB calls 11-12 against 14-16 us (wq_b, wo_b, the grouped wo_a), K 16384 M 4096
// 21.6 against 24.9; 8 MiB and below slower (4096 x 2048: 4.9 against 4.7; 2048 x 4096: 4.8
// against 4.0; 4096 x 1024: 3.9 against 3.4; 4096 x 512: 3.0 against 2.4): there the fixed cost of
// a call dominates and the f32 kernels' weight prefetch and cluster split do better. The threshold
// between (16 MiB: the shared expert's combined w1 + w3, K 4096 M 4096) is not measured yet.
constexpr int64_t kTcMinBytes = int64_t(16) << 20;
// x that is not FP8-exact is rounded to bf16 there (the official model's numerics for the
// bf16-dequantized wo_a), so such calls also need matrices of at least kTcBf16MinWeights weights
// each: a rule in K and M alone, so that matmul_x_rounding can tell the op harness which calls may
// round x (it cannot see the jobs).
constexpr int64_t kTcBf16MinWeights = int64_t(4) << 20;  // wo_a's 4096 x 1024 per group
bool tc_bf16x_shape(int64_t K, int64_t M) { return K % 128 == 0 && K * M >= kTcBf16MinWeights; }

// The tensor-core decode takes a MATMUL call of one x row with fp8 weights (scale blocks sb_k %
// 128 == 0) and aligned rows where it is wanted (above), unless a test hook sends decode elsewhere
// (2: every such call that fits). *x_exact: whether x is FP8-exact per 128 (not rounded at all).
bool tc_decode_takes(const tensor* dst, const mm_weights& W, const mm_rows& rd, unsigned jobs, bool aligned,
                     bool* x_exact) {
  const int mode = tc_decode_mode();
  if (mode == 1 || g_decode_off.load(std::memory_order_relaxed)) return false;
  if (g_split_force.load(std::memory_order_relaxed) > 1 || g_cluster_force.load(std::memory_order_relaxed) > 1)
    return false;
  if (dst->op != op_kind::MATMUL || rd.mode != 0 || rd.N != 1 || !aligned) return false;
  if (dst->src[0]->type != dtype::fp8_e4m3) return false;
  *x_exact = x_fp8_exact(dst->src[1]);
  if (!tc_decode_fits(W, jobs, *x_exact)) return false;
  if (mode == 2) return true;
  return W.K * W.M * int64_t(jobs) >= kTcMinBytes && (*x_exact || (tc_bf16x_on() && tc_bf16x_shape(W.K, W.M)));
}

// Runs one call. use_mma: the caller's decode/prefill decision (rows per weight matrix > 16).
bool run(cudaStream_t s, tensor* dst, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t max_rows,
         int64_t rows_hint, bool use_mma, const char* op, std::string* error) {
  const tensor* w = dst->src[0];
  const tensor* x = dst->src[1];
  const dtype wt = w->type;
  const bool aligned = rows_aligned(w, x);
  // set_matmul_split_k(n >= 2) (a test hook) puts split-K ahead of small_k / split_row, so that a
  // timing run can compare them; the automatic split-K choice is in launch_gemv.
  const bool split_forced = g_split_force.load(std::memory_order_relaxed) > 1;
  int forced_slices = 1, cluster = 1;
  bool x_exact = false;
  if (use_mma && aligned && mma_supported(wt, W.K)) {
    if (!launch_mma(s, wt, W, rd, jobs, max_rows, error)) return false;
  } else if (tc_decode_takes(dst, W, rd, jobs, aligned, &x_exact) && launch_tc_decode(s, W, rd, jobs, x_exact)) {
    // (launched: the tensor-core decode, ops_matmul_tc.cu)
  } else if (aligned && tcv_supported(wt, W.K, max_rows)) {
    if (!launch_tcv(s, wt, W, rd, jobs, max_rows, error)) return false;
  } else if (ring_takes(wt, W, rd, rows_hint, aligned, split_forced) &&
             launch_ring(s, wt, W, rd, jobs, launch_with_pdl(rd))) {
    // (launched: the streaming decode kernel, ops_matmul_ring.cu)
  } else if (split_forced && (forced_slices = split_for(wt, W, rd, jobs, rows_hint, aligned)) > 1) {
    if (!launch_split(s, wt, W, rd, jobs, forced_slices, error)) return false;
  } else if ((cluster = cluster_slices(wt, W, rd, jobs, rows_hint, aligned)) > 1) {
    launch_cluster_split(s, wt, W, rd, jobs, cluster);  // (ahead of split_row: measured, cluster_auto)
  } else if (small_k_wanted(W, max_rows, jobs)) {
    launch_small_k(s, wt, W, rd, jobs, max_rows);
  } else if (split_row_wanted(W, max_rows, jobs)) {
    launch_split_row(s, wt, W, rd, jobs, aligned);
  } else if (split_tall_wanted(W, rd, max_rows, jobs)) {
    launch_split_tall(s, wt, W, rd, jobs, max_rows, aligned);
  } else if (aligned && chunk_elems(wt) > 0 && W.K % chunk_elems(wt) == 0) {
    if (!launch_gemv(s, wt, W, rd, jobs, rows_hint, error)) return false;
  } else {
    const dim3 grid(unsigned((W.M + 7) / 8), jobs);
    launch(generic_kernel, grid, 256, 0, s, int(wt), W, rd);
  }
  return launched(op, error);
}

}  // namespace

// The rounding of x the kernels above use (the op harness holds each call to it): mma and tcv
// round x to bf16 (2^-8); so may the tensor-core decode of fp8 one-row calls whose x is not
// FP8-exact (tc_bf16x_shape while V4_CUDA_TC_BF16X is on; every fp8 one-row call while a test
// forces it; for FP8-exact x and for calls below kTcMinBytes nothing is rounded, so the bound is
// loose there but holds); gemv (with gemv_x1, gemv1, gemv_ring, split-K, the cluster split) and
// generic keep it. Must agree with the choices in launch_matmul / launch_matmul_id (MATMUL_ID asks
// for every per-expert N up to n_used * N).
double matmul_x_rounding(dtype wt, int64_t M, int64_t N, int64_t K) {
  if ((N > 16 && mma_supported(wt, K)) || tcv_supported(wt, K, N)) return 0x1p-8;
  const int tc = tc_decode_mode();
  const bool tc_may_round = tc == 2 || (tc == 0 && tc_bf16x_on() && tc_bf16x_shape(K, M));
  return wt == dtype::fp8_e4m3 && N == 1 && K % 128 == 0 && tc_may_round ? 0x1p-8 : 0.0;
}

// Test hook for tests/cuda/test_cuda_matmul.cpp (declared there; not part of the backend's API):
// the tensor-core decode: 0 automatic, 1 off, 2 every one-row fp8 MATMUL that fits.
void set_matmul_tc_decode(int mode) { g_tc_decode.store(mode, std::memory_order_relaxed); }

// Test hook for tests/cuda/test_cuda_matmul.cpp (declared there; not part of the backend's API):
// true lets the automatic choice take x that is not FP8-exact (as V4_CUDA_TC_BF16X=1).
void set_matmul_tc_bf16x(int mode) { g_tc_bf16x.store(mode, std::memory_order_relaxed); }

// Timing hook for tests/cuda/test_cuda_matmul.cpp (declared there; not part of the backend's API):
// true sends one-row fp8 / mxfp4 calls to the gemv, the kernel they used before gemv_x1 / gemv1,
// so that one run can time both.
void set_decode_kernels_off(bool off) { g_decode_off.store(off, std::memory_order_relaxed); }

// Timing hook for tests/cuda/test_cuda_matmul.cpp (declared there; not part of the backend's API):
// the split-K slices of one-row calls: 0 automatic (split_slices), 1 never, n >= 2 about n
// wherever K allows (slices of at least 32 chunks).
void set_matmul_split_k(int slices) { g_split_force.store(slices, std::memory_order_relaxed); }

// Timing hook for tests/cuda/test_cuda_matmul.cpp (declared there; not part of the backend's API):
// bytes each warp of a decode matmul prefetches before its PDL wait; < 0 the default, 0 none.
void set_matmul_prefetch(int bytes_per_warp) { g_prefetch.store(bytes_per_warp, std::memory_order_relaxed); }

// The hook's value when set (forced for every size), else: 0 above kPrefetchMaxBytes of weights,
// else V4_CUDA_PREFETCH (bytes per warp; 0 turns the prefetch off, for an A/B of a model run) or
// kPrefetchWarpBytes.
int matmul_prefetch_bytes(int64_t weight_bytes) {
  const int v = g_prefetch.load(std::memory_order_relaxed);
  if (v >= 0) return v;
  static const int from_env = [] {
    const char* env = std::getenv("V4_CUDA_PREFETCH");
    if (!env || !*env) return kPrefetchWarpBytes;
    const long n = std::strtol(env, nullptr, 10);
    return n < 0 ? kPrefetchWarpBytes : int(std::min<long>(n, 1 << 20));
  }();
  return weight_bytes <= kPrefetchMaxBytes ? from_env : 0;
}

// Timing hook for tests/cuda/test_cuda_matmul.cpp (declared there; not part of the backend's API):
// cluster split-K of one-row calls: 0 automatic (cluster_slices), 1 never, n >= 2 about n.
void set_matmul_cluster(int slices) { g_cluster_force.store(slices, std::memory_order_relaxed); }

// Timing hook for tests/cuda/test_cuda_matmul.cpp (declared there; not part of the backend's API):
// true launches gemv1 for matmul_id (the experts) with the PDL attribute, as before 2026-11-28.
void set_matmul_expert_pdl(bool on) { g_expert_pdl.store(on, std::memory_order_relaxed); }

// Scales must sit in the same kind of memory as the weights (the stream checks only sources).
static bool scales_with(const tensor* t) {
  return !t->scales->buf || !t->buf || t->scales->buf->type() == t->buf->type();
}

bool matmul_supported(const tensor* node) {
  const tensor* w = node->src[0];
  if (node->op == op_kind::MATMUL_ID &&
      (w->ne[2] > kMaxExperts || node->src[2]->ne[0] * node->src[2]->ne[1] > (int64_t(1) << 30)))
    return false;
  switch (w->type) {
    case dtype::f32:
    case dtype::f16:
    case dtype::bf16:
    case dtype::q8_0: return true;
    case dtype::fp8_e4m3:
    case dtype::mxfp4: return w->scales && w->scale_block[0] % 32 == 0 && w->scale_block[1] >= 1 && scales_with(w);
    default: return false;  // K-quants: the CPU
  }
}

bool launch_matmul(cudaStream_t s, tensor* dst, std::string* error) {
  const tensor* w = dst->src[0];
  const tensor* x = dst->src[1];
  const mm_weights W = weights_of(w);
  mm_rows rd{};
  rd.mode = 0;
  rd.x = static_cast<const char*>(x->data);
  rd.x_nb1 = int64_t(x->nb[1]), rd.x_nb2 = int64_t(x->nb[2]), rd.x_nb3 = int64_t(x->nb[3]);
  rd.y = static_cast<char*>(dst->data);
  rd.y_nb1 = int64_t(dst->nb[1]), rd.y_nb2 = int64_t(dst->nb[2]), rd.y_nb3 = int64_t(dst->nb[3]);
  rd.N = x->ne[1];
  rd.B2 = x->ne[2];
  rd.r2 = x->ne[2] / w->ne[2];
  rd.r3 = x->ne[3] / w->ne[3];
  const int64_t jobs = x->ne[2] * x->ne[3];
  if (jobs > 65535) {
    *error = "CUDA: matmul: more than 65535 batch slices";
    return false;
  }
  if (rd.N == 0 || W.M == 0) return true;
  return run(s, dst, W, rd, unsigned(jobs), rd.N, rd.N, rd.N > 16, "matmul", error);
}

// ---- tensor-core decode of the routed experts for FP8-exact x (ops_matmul_tc4.cu) ------------------
namespace {
// Not taken automatically: measured no faster than gemv1 at the model's expert calls (docs/CUDA.md
// "Fourth session: routed experts on tensor cores": w1 + w3 the same within noise, w2 1.5-2 us
// slower). set_matmul_tc_id (a test hook): 0 automatic (off), 1 off, 2 on; V4_CUDA_TC_ID=1 turns it
// on (an A/B of a model run).
std::atomic<int> g_tc_id{0};

// With the kernel asked for: the decode's MATMUL_ID (one job per pair) of mxfp4 weights with aligned
// rows and FP8-exact x, unless a test hook sends decode elsewhere (the f32 kernels' timings and
// tests: set_decode_kernels_off, forced split-K).
bool tc_id_takes(const tensor* dst, const mm_weights& W, const mm_rows& rd, unsigned jobs) {
  static const bool env_on = env_is("V4_CUDA_TC_ID", "1");
  const int mode = g_tc_id.load(std::memory_order_relaxed);
  if (mode == 1 || !(mode == 2 || env_on) || g_decode_off.load(std::memory_order_relaxed)) return false;
  if (g_split_force.load(std::memory_order_relaxed) > 1) return false;
  const tensor* w = dst->src[0];
  const tensor* x = dst->src[1];
  if (rd.mode != 2 || w->type != dtype::mxfp4 || !rows_aligned(w, x) || !tc4_fits(W, jobs)) return false;
  return x_fp8_exact(x);
}
}  // namespace

// Test hook for tests/cuda/test_cuda_matmul.cpp (declared there; not part of the backend's API):
// the routed experts' tensor-core decode for FP8-exact x (ops_matmul_tc4.cu): 0 automatic (off),
// 1 off, 2 on.
void set_matmul_tc_id(int mode) { g_tc_id.store(mode, std::memory_order_relaxed); }

bool launch_matmul_id(cudaStream_t s, tensor* dst, std::string* error) {
  const tensor* w = dst->src[0];
  const tensor* x = dst->src[1];
  const tensor* ids = dst->src[2];
  const int E = int(w->ne[2]);
  const int n_used = int(ids->ne[0]);
  const int64_t n_tok = ids->ne[1], n_pairs = int64_t(n_used) * n_tok;
  if (n_pairs == 0 || w->ne[1] == 0) return true;
  const mm_weights W = weights_of(w);
  mm_rows rd{};
  rd.x = static_cast<const char*>(x->data);
  rd.x_nb1 = int64_t(x->nb[1]), rd.x_nb2 = int64_t(x->nb[2]);
  rd.y = static_cast<char*>(dst->data);
  rd.y_nb1 = int64_t(dst->nb[1]), rd.y_nb2 = int64_t(dst->nb[2]);
  rd.n_used = n_used;
  rd.X1 = x->ne[1];
  if (n_pairs <= kPairJobs) {
    // Decode: one job per pair, no grouping launch (a repeated expert is read once per pair).
    rd.mode = 2;
    rd.ids = static_cast<const char*>(ids->data);
    rd.ids_nb0 = int64_t(ids->nb[0]), rd.ids_nb1 = int64_t(ids->nb[1]);
    rd.E = E;
    if (tc_id_takes(dst, W, rd, unsigned(n_pairs)) && launch_tc4(s, W, rd, unsigned(n_pairs), launch_with_pdl(rd)))
      return launched("matmul_id", error);  // (the tensor-core decode for FP8-exact x, ops_matmul_tc4.cu)
    return run(s, dst, W, rd, unsigned(n_pairs), 1, 1, false, "matmul_id", error);
  }
  const int P = int(n_pairs < E ? n_pairs : E);  // at most this many experts are selected
  int* lists =
      static_cast<int*>(scratch(s, kGroupScratchSlot, size_t(1 + P + P + 1 + n_pairs) * sizeof(int), error));
  if (!lists) return false;
  launch(group_kernel, 1, 1024, 0, s, static_cast<const char*>(ids->data), int64_t(ids->nb[0]), int64_t(ids->nb[1]), n_used,
                                  n_pairs, E, P, lists);
  if (!launched("matmul_id (grouping)", error)) return false;

  rd.mode = 1;
  rd.n_active = lists;
  rd.active = lists + 1;
  rd.offs = lists + 1 + P;
  rd.pairs = lists + 1 + P + P + 1;
  // Tensor cores when the experts get more than 16 rows on average (prefill); the kernels loop
  // over however many rows each expert really has.
  const bool use_mma = n_pairs > 16 * int64_t(P);
  return run(s, dst, W, rd, unsigned(P), n_pairs, n_tok, use_mma, "matmul_id", error);
}

// Blocks of `kernel` resident per SM (matmul.cuh), cached: the first query of a (kernel, device,
// threads, smem) asks the runtime, later ones read the table.
int resident_blocks(const void* kernel, int threads, size_t smem, int dev, size_t max_smem) {
  struct entry {
    const void* kernel;
    int dev, threads;
    size_t smem;
    int blocks;
  };
  static std::mutex mu;
  static std::vector<entry> seen;
  std::lock_guard<std::mutex> lock(mu);
  for (const entry& e : seen)
    if (e.kernel == kernel && e.dev == dev && e.threads == threads && e.smem == smem) return e.blocks;
  int blocks = 0;
  if (smem > max_smem) blocks = -1;
  if (blocks == 0 && smem > 48 * 1024 &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(max_smem)) != cudaSuccess)
    blocks = -1;
  if (blocks == 0 && cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, smem) != cudaSuccess)
    blocks = -1;
  if (blocks < 0) {
    cudaGetLastError();  // not sticky; the caller falls back to another kernel
    blocks = 0;
  }
  seen.push_back({kernel, dev, threads, smem, blocks});
  return blocks;
}

}  // namespace v4::cuda

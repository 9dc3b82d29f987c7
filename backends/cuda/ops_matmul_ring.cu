// gemv_ring: MATMUL / MATMUL_ID decode (one x row per weight matrix) of fp8_e4m3, mxfp4 and bf16
// weights through shared-memory rings filled by the bulk copy engine (issue 8; docs/CUDA.md "Third
// session: streaming decode GEMVs", which also has what it measured: faster than the register
// kernels only where ring_wanted says, slower or equal at the V4-Flash decode calls).
//
// Idea: the register kernels (gemv_x1, gemv1, ops_matmul.cu) alternate between waiting for their
// loads and decoding them, and their grids run in waves of short-lived blocks. Here:
//   - one persistent block of kRingWarps warps per SM (per job: the SMs are shared out among the
//     jobs), x staged once per block (swizzled, as the other decode kernels);
//   - each warp streams its tiles (kRingR rows x kRingTC 16-byte chunks, and for mxfp4 the tile's
//     scale codes) through its own ring of S shared-memory stages, filled by cp.async.bulk (one
//     instruction per row piece, completing on the stage's mbarrier): S - 1 tiles stay in flight
//     while it decodes one, at no register cost;
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

#include "backends/cuda/matmul.cuh"

namespace v4::cuda {
namespace {

constexpr int kRingWarps = 16;            // one block of 512 threads per SM
constexpr int kRingR = 4;                 // weight rows per tile (each x value read once for them)
constexpr int kRingP = 2;                 // chunks per lane per row and tile
constexpr int kRingTC = 32 * kRingP;      // chunks per row and tile (fp8: 1 KiB)
constexpr int kRingMaxStages = 4;         // mbarriers per warp
constexpr int kRingDefaultStages = 2;     // 16 warps x 2 x 4 KiB = 128 KiB of ring (3 measured slower)
// Header of the shared memory: mbarriers [warps][stages], team sums [2][warps][R].
constexpr int kRingHeader = kRingWarps * kRingMaxStages * 8 + 2 * kRingWarps * kRingR * 4;

// How a call is cut up (ring_plan_for).
struct ring_plan {
  int tpr;            // tiles per row: ceil(nchunks / kRingTC)
  int wg;             // warps per team (1, 2, 4, 8)
  int stages;         // S: stages of each warp's ring
  int stage_bytes;    // weights (+ codes, mxfp4) of one stage
  int x_pieces;       // 16-byte pieces of x staged (K / 4 padded to the swizzle's groups of 8)
  int64_t gpt;        // row groups (kRingR rows) per team
};

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
// codes (mxfp4). (One copy per row piece: merging the R rows of a whole-row tile into one copy
// measured no faster.)
template <int WT>
__device__ __forceinline__ void ring_issue(const mm_weights& W, const mm_job& jb, unsigned char* st, uint32_t bar,
                                           int64_t g, int c0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int E = chunk<WT>::kElems, R = kRingR, TC = kRingTC;
  constexpr bool kCodesInStage = WT == kMXFP4;  // mxfp4: a code per chunk, copied with the tile
  const int nchunks = int(W.K / E);
  const int nc = nchunks - c0 < TC ? nchunks - c0 : TC;
  mbar_expect_tx(bar, uint32_t(R * nc * (16 + (kCodesInStage ? 1 : 0))));
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
__device__ __forceinline__ void ring_tile(const mm_weights& W, const mm_job& jb, const float4* xs,
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
    if (c >= nchunks) break;
    uint4 w[R];
#pragma unroll
    for (int r = 0; r < R; ++r) w[r] = reinterpret_cast<const uint4*>(st + r * TC * 16)[lane + 32 * p];
    float part[R][2];
#pragma unroll
    for (int r = 0; r < R; ++r) part[r][0] = part[r][1] = 0.0f;
    chunk_dot<WT, R>(w, xs, c, part);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float sum = part[r][0] + part[r][1];
      if constexpr (WT == kFP8) {
        acc[r] = fmaf(sum, e8m0_f(code[p][r]), acc[r]);
      } else if constexpr (WT == kMXFP4) {
        const uint8_t cd = st[R * TC * 16 + r * TC + lane + 32 * p];
        acc[r] = fmaf(sum * kE2m1HalfUnscale, e8m0_f(cd), acc[r]);
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
  constexpr int R = kRingR, TC = kRingTC;
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
  const int64_t ng = (W.M + R - 1) / R;
  // (Teams of a block on adjacent row ranges instead measured the same.)
  const int64_t q = int64_t(team) * gridDim.x + blockIdx.x;
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
                   g_begin + i / tiles_per_group, (kw + wg * (i % tiles_per_group)) * TC);
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
      ring_tile<WT>(W, jb, xs, stages + slot * pl.stage_bytes, smem_u32(bars + slot), uint32_t((i / S) & 1), g,
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

std::atomic<int> g_ring_mode{0};    // set_matmul_ring: 0 automatic, 1 off, 2 every call that fits
std::atomic<int> g_ring_wg{0};      // set_matmul_ring_shape: forced team size (0 automatic)
std::atomic<int> g_ring_stages{0};  // forced stages (0 automatic)

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
  const int forced_wg = g_ring_wg.load(std::memory_order_relaxed);
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
  *blocks_per_job = unsigned(per_job);
  return true;
}

// false: nothing launched (the call does not fit).
template <int WT>
bool ring_launch(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, bool pdl) {
  const device_info d = current_device();
  ring_plan pl{};
  unsigned per_job = 0;
  if (!ring_plan_for(wt, W, jobs, d, &pl, &per_job)) return false;
  const size_t smem = size_t(kRingHeader) + size_t(pl.x_pieces) * 16 +
                      size_t(kRingWarps) * size_t(pl.stages) * size_t(pl.stage_bytes);
  const auto kernel = gemv_ring_kernel<WT>;
  if (resident_blocks(reinterpret_cast<const void*>(kernel), kRingWarps * 32, smem, d.dev, size_t(d.optin)) < 1)
    return false;
  const dim3 grid(per_job, jobs);
  if (pdl) launch(kernel, grid, kRingWarps * 32, smem, s, W, rd, pl);
  else kernel<<<grid, kRingWarps * 32, smem, s>>>(W, rd, pl);  // starts after the previous kernel
  return true;
}

}  // namespace

// Where the ring is faster than the other kernels (GraphChainTiming, docs/CUDA.md "Third session:
// streaming decode GEMVs"): one-row MATMULs of fp8 with K >= 16384 (split-K 27.9 -> 25.7 us at
// M = 4096) and of mxfp4 (gemv1 5.9 -> 4.7 us at K = 4096 M = 1024). Everywhere else it measured
// slower or the same (its fixed cost per call is larger): the V4-Flash decode calls keep their
// kernels. V4_CUDA_RING=0 turns it off, V4_CUDA_RING=1 sends every call that fits to it.
bool ring_wanted(dtype wt, const mm_weights& W, const mm_rows& rd) {
  static const int env = [] {
    const char* v = std::getenv("V4_CUDA_RING");
    return !v || !*v ? -1 : std::string(v) == "0" ? 0 : 1;
  }();
  const int mode = g_ring_mode.load(std::memory_order_relaxed);
  if (mode == 1 || (mode == 0 && env == 0)) return false;
  if (wt != dtype::fp8_e4m3 && wt != dtype::mxfp4 && wt != dtype::bf16) return false;
  if (mode == 2 || env == 1) return true;
  return rd.mode == 0 && (wt == dtype::mxfp4 || (wt == dtype::fp8_e4m3 && W.K >= 16384));
}

bool launch_ring(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, bool pdl) {
  switch (wt) {
    case dtype::fp8_e4m3: return ring_launch<kFP8>(s, wt, W, rd, jobs, pdl);
    case dtype::mxfp4: return ring_launch<kMXFP4>(s, wt, W, rd, jobs, pdl);
    case dtype::bf16: return ring_launch<kBF16>(s, wt, W, rd, jobs, pdl);
    default: return false;
  }
}

// Timing / test hooks for tests/cuda/test_cuda_matmul.cpp (declared there; not part of the
// backend's API): the ring for one-row calls (0 automatic (ring_wanted), 1 off: the kernels before
// it, 2 every call that fits), and its team size and stage count (0: automatic; a forced team size
// applies even past the tiles per row).
void set_matmul_ring(int mode) { g_ring_mode.store(mode, std::memory_order_relaxed); }
void set_matmul_ring_shape(int wg, int stages) {
  g_ring_wg.store(wg, std::memory_order_relaxed);
  g_ring_stages.store(stages, std::memory_order_relaxed);
}

}  // namespace v4::cuda

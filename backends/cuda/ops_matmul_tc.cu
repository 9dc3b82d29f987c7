// Tensor-core decode GEMV for fp8_e4m3 weights (matmul.cuh: launch_tc_decode; the host decides in
// ops_matmul.cu, tc_decode_takes).
//
// Why: the f32 decode kernels (gemv_x1, the ring) spend ~11 thread instructions per weight on
// conversions, x loads and FFMAs and sit at 40-50% of copy bandwidth, instruction-bound. Here one
// cvt turns two e4m3 weights into f16 and one mma.sync m16n8k16 takes 256 weights.
//
// x: rounded to bf16 (round to nearest even), as the official model computes the matmuls whose
// weights it dequantizes to bf16 (the grouped wo_a), and as the CPU's avx512_bf16 kernels do for
// fp8 weights. With QAT most fp8 matmuls' x has been rounded by the activation quantization
// (fp8_roundtrip(x, 128) or the fp8 option of rms_norm_w / swiglu / norm_rope): each 128-block is
// an e4m3 code * 2^s, which bf16 holds exactly, so for those calls x is not rounded at all.
//
// Exactness: per 128-block of x, t = floor(log2(amax)) - 15 of the bf16-rounded block's largest
// finite |x| (at least -126), so x / 2^t < 2^16 (at most 65280: no f16 overflow); x / 2^t has at
// most 8 significant bits. It is staged in f16: for FP8-exact x as one f16 (at most 4 significant
// bits: an FP8-exact block spans at most 2^18 below its amax, e4m3's range, so every value is an
// f16 normal); for other x as two f16 halves, hi (the 4 leading significant bits) and lo = x - hi
// (the other 4), both exact where x / 2^t >= 2^-17 (the lowest bit within f16's 2^-24 quantum),
// i.e. for every |x| >= 2^-32 amax; smaller elements are rounded to multiples of 2^(t-24) (absolute
// error at most 2^(t-25) for one f16, 2^(t-24) for two halves; 2^(t-24) <= 2^-39 amax). Every e4m3 weight code is an f16 value
// (cvt.rn.f16x2.e4m3x2, NaN kept). So every product fed to the tensor core has at most 4 + 4
// significant bits (below 2^25: exact), as with FP8-exact x, where the accumulation bound was
// measured to hold with room (TcDecode*); one f16 with 4 + 8-bit products measured outside it
// (docs/CUDA.md "Fourth session"). One mma.sync m16n8k16 f16 x f16 -> f32 sums 16 rows x 16 k
// products (two per k for split x) with no rounding of its inputs; the only roundings are the
// tensor core's f32 accumulation and the f32 sums of the scaled 128-block partials (the bound is
// in tests/cuda/test_cuda_matmul.cpp, TcDecode*).
//
// Layout: a warp owns 16-row tiles of the weight; a unit is one tile x one 128-wide K block (one
// weight scale column: sb_k % 128 == 0). Lane (g = lane / 4, c = lane % 4) loads bytes 16c .. 16c+15
// and 64+16c .. 64+16c+15 of the block in rows g and g+8 (4 x 16 bytes). The A fragment of mma i
// (0..3) of a 16-byte chunk takes bytes 4i, 4i+1 (k pair 2c) and 4i+2, 4i+3 (k pair 2c+8): the GEMV
// sums over k, so k may be permuted as long as x is permuted the same way, and with this choice the
// B fragment of lane c is x's f16 at the same 16 consecutive k (two 16-byte shared loads, natural
// order). Every lane loads x (not only the column-0 lanes), so all 8 columns of D are the same
// product and each lane's d[0] / d[2] is the tile's row g / g+8. The 8 mma of a unit chain in the
// accumulator; the unit's partial is multiplied by 2^t and the row's e8m0 scale (exact unless
// outside f32's range) and added to the warp's f32 sums.
//
// Split-K, two levels. Across blocks (long rows, tc_shape_of): the 2 blocks of a thread-block
// cluster (sm_90) take the two halves of K's 128-blocks for the same tiles, and each stages only
// its half of x; their partials are added in rank order through distributed shared memory (one
// launch, no atomics). Inside a block: the 8 warps are KS k-slices of the block's range x 8/KS tile
// lanes; each warp's partial of a tile goes to shared memory and the block adds the KS partials in
// slice order.
// x staging: the warps of one k-slice stage that slice's x and wait for each other only (a named
// barrier; one warp: __syncwarp), not for the whole block, so a slice whose x has arrived starts.
// Units are software-pipelined: kStages units' loads in registers, the next one issued as soon as
// one is consumed. MATMUL weights are known from the parameters, so the first loads go out before
// the PDL wait; x is staged after it.
#include <algorithm>
#include <atomic>
#include <cstdint>

#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include "backends/cuda/matmul.cuh"
#include "backends/cuda/quant_round.cuh"

namespace v4::cuda {
namespace cg = cooperative_groups;
namespace {

constexpr int kTcWarps = 8;
constexpr int kTcStages = 3;   // units in flight per warp (4 x 16 bytes per lane each)
constexpr int kTcBlock = 128;  // x's block along K (one 2^t), and the unit's K
constexpr int kTcBlocksPerSM = 2;  // blocks per SM the grid is sized for (and the registers allow)
constexpr int kTcMaxCluster = 2;   // clusters of K ranges (see tc_shape_of)

// Two e4m3 codes (low byte first) -> f16x2 bits, exact (NaN kept).
__device__ inline uint32_t e4m3x2_h2(uint32_t two) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(two & 0xffffu), __NV_E4M3);
  return uint32_t(h.x) | (uint32_t(h.y) << 16);
}

__device__ inline void mma_f16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The two halves of split x (v finite: v = hi + lo exactly): hi = v with all but its 4 leading
// significant bits cleared, lo = the rest. Non-finite v: hi = v, lo = 0 (NaN and +-inf kept).
__device__ inline float hi4(float v) {
  return qround::finite(v) ? __uint_as_float(__float_as_uint(v) & 0xfff00000u) : v;
}
__device__ inline float lo4(float v, float hi) { return qround::finite(v) ? v - hi : 0.0f; }

// x rounded to bf16 (round to nearest even; NaN and +-inf kept), as f32.
__device__ inline float bf16_round(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// The exponent t of a block whose largest finite |x| is m (see the top): floor(log2 m) - 15, at
// least -126 (m = 0, subnormal or tiny m: 2^-t stays a normal f32).
__device__ inline int tc_x_exp(float m) {
  const int e = int((__float_as_uint(m) >> 23) & 0xff) - 127;
  return e - 15 > -126 ? e - 15 : -126;
}

// One unit's raw data in registers: w[0], w[1] = row g's two 16-byte pieces, w[2], w[3] row g+8's;
// the e8m0 codes of rows g and g+8 for the unit's K block.
struct tc_unit {
  uint4 w[4];
  uint32_t code_lo, code_hi;
};

// grid (blocks, jobs), kTcWarps warps, clusters of CL along x (rank = blockIdx.x % CL: the block's
// range of K). ks_n: k-slices per block (1, 2, 4 or 8; at most the 128-blocks of every rank's
// range); rt: tiles per warp. Dynamic shared memory: x as f16 [the range's K], its block scales
// 2^t, partials [tiles per block][ks_n][16] (ks_n > 1 or CL > 1), the block's tile sums
// [tiles per block][16] (CL > 1). MATMUL jobs of one x row (mode 0, N = 1).
template <int CL, bool XS>
__global__ void __launch_bounds__(kTcWarps * 32, kTcBlocksPerSM) tc_decode_kernel(mm_weights W, mm_rows rd, int ks_n, int rt) {
  extern __shared__ uint4 tc_smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const int nkb = int(W.K / kTcBlock);
  const int rank = CL > 1 ? int(blockIdx.x % CL) : 0;
  const int64_t group = CL > 1 ? blockIdx.x / CL : blockIdx.x;  // the blocks of one cluster share tiles
  const int r0 = int(int64_t(rank) * nkb / CL), r1 = int(int64_t(rank + 1) * nkb / CL);  // this block's K blocks
  const int nkr = r1 - r0, nkr_max = (nkb + CL - 1) / CL;
  const int64_t n_tiles = (W.M + 15) / 16;
  const int lanes_t = kTcWarps / ks_n;  // tile lanes per block
  const int tiles_per_block = lanes_t * rt;
  const int tw = warp / ks_n, ks = warp % ks_n;
  const int kb0 = r0 + ks * nkr / ks_n, kb1 = r0 + (ks + 1) * nkr / ks_n, nkw = kb1 - kb0;
  const int64_t t_first = group * tiles_per_block + tw;  // tile j of this warp: t_first + j * lanes_t
  const int64_t left = t_first < n_tiles ? (n_tiles - t_first + lanes_t - 1) / lanes_t : 0;  // tiles from t_first on
  const int my_tiles = int(left < rt ? left : rt);
  const int n_units = my_tiles * nkw;
  const int q = W.sb_k / kTcBlock;  // 128-blocks per weight scale column

  __half* xs = reinterpret_cast<__half*>(tc_smem);  // x's blocks r0 .. r1 - 1
  __half* xl = xs + int64_t(nkr_max) * kTcBlock;  // (XS) the low halves
  float* xsc = reinterpret_cast<float*>(xl + (XS ? int64_t(nkr_max) * kTcBlock : 0));
  float* red = xsc + nkr_max;
  float* tile_sum = red + tiles_per_block * ks_n * 16;  // (CL > 1)

  const mm_job jb = job_of(W, rd, blockIdx.y);  // mode 0: from the parameters only
  // Issue side: the tile and K block of the next unit to load, and its rows.
  int i_j = 0, i_kb = kb0, issued = 0;
  const char* wlo = nullptr;
  const char* whi = nullptr;
  const uint8_t* slo = nullptr;
  const uint8_t* shi = nullptr;
  auto set_rows = [&](int j) {
    const int64_t m0 = (t_first + int64_t(j) * lanes_t) * 16;
    const int64_t mlo = m0 + g < W.M ? m0 + g : W.M - 1;  // past the end: reread the last row
    const int64_t mhi = m0 + g + 8 < W.M ? m0 + g + 8 : W.M - 1;
    wlo = jb.w + mlo * W.nb1 + 16 * c;
    whi = jb.w + mhi * W.nb1 + 16 * c;
    slo = jb.s + (mlo / W.sb_m) * W.s_nb1;
    shi = jb.s + (mhi / W.sb_m) * W.s_nb1;
  };
  auto load = [&](tc_unit& u) {
    if (issued >= n_units) return;
    const int64_t off = int64_t(i_kb) * kTcBlock;
    u.w[0] = __ldcs(reinterpret_cast<const uint4*>(wlo + off));
    u.w[1] = __ldcs(reinterpret_cast<const uint4*>(wlo + off + 64));
    u.w[2] = __ldcs(reinterpret_cast<const uint4*>(whi + off));
    u.w[3] = __ldcs(reinterpret_cast<const uint4*>(whi + off + 64));
    u.code_lo = __ldg(slo + i_kb / q);
    u.code_hi = __ldg(shi + i_kb / q);
    ++issued;
    if (++i_kb == kb1) {
      i_kb = kb0;
      if (++i_j < my_tiles) set_rows(i_j);
    }
  };

  tc_unit st[kTcStages];
  if (n_units > 0) set_rows(0);
#pragma unroll
  for (int i = 0; i < kTcStages; ++i) load(st[i]);
  pdl_wait();
  if (jb.count == 0) return;  // the same for every block of a cluster (one job)
  const float* xp;
  float* yp;
  row_ptrs(rd, jb, 0, &xp, &yp);

  // Stage this k-slice's x: its lanes_t warps take blocks kb0 + tw, kb0 + tw + lanes_t, ...; bf16
  // rounding and t as at the top. kXLoads blocks' loads are issued together (one L2 round trip for
  // them, not one each).
  constexpr int kXLoads = 4;
  for (int b0 = kb0 + tw; b0 < kb1; b0 += kXLoads * lanes_t) {
    float4 v[kXLoads];
#pragma unroll
    for (int i = 0; i < kXLoads; ++i) {
      const int b = b0 + i * lanes_t;
      v[i] = b < kb1 ? __ldg(reinterpret_cast<const float4*>(xp + int64_t(b) * kTcBlock) + lane)
                     : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int i = 0; i < kXLoads; ++i) {
      const int b = b0 + i * lanes_t;
      if (b >= kb1) break;  // warp-uniform
      const float4 r = make_float4(bf16_round(v[i].x), bf16_round(v[i].y), bf16_round(v[i].z), bf16_round(v[i].w));
      const float m = fmaxf(fmaxf(qround::finite_abs(r.x), qround::finite_abs(r.y)),
                            fmaxf(qround::finite_abs(r.z), qround::finite_abs(r.w)));
      const int t = tc_x_exp(warp_max(m));
      const float inv = qround::pow2(-t);
      const float4 v2 = make_float4(r.x * inv, r.y * inv, r.z * inv, r.w * inv);  // exact: powers of two
      __half2* dst = reinterpret_cast<__half2*>(xs + int64_t(b - r0) * kTcBlock) + 2 * lane;
      if constexpr (XS) {  // high 4 significant bits and the rest (both exact, see the top)
        const float4 hi = make_float4(hi4(v2.x), hi4(v2.y), hi4(v2.z), hi4(v2.w));
        dst[0] = __floats2half2_rn(hi.x, hi.y);
        dst[1] = __floats2half2_rn(hi.z, hi.w);
        __half2* dlo = reinterpret_cast<__half2*>(xl + int64_t(b - r0) * kTcBlock) + 2 * lane;
        dlo[0] = __floats2half2_rn(lo4(v2.x, hi.x), lo4(v2.y, hi.y));
        dlo[1] = __floats2half2_rn(lo4(v2.z, hi.z), lo4(v2.w, hi.w));
      } else {
        dst[0] = __floats2half2_rn(v2.x, v2.y);
        dst[1] = __floats2half2_rn(v2.z, v2.w);
      }
      if (lane == 0) xsc[b - r0] = qround::pow2(t);
    }
  }
  if (lanes_t == 1) {
    __syncwarp();
  } else {  // the slice's warps only (barrier 0 is __syncthreads')
    asm volatile("bar.sync %0, %1;" ::"r"(1 + ks), "r"(lanes_t * 32) : "memory");
  }

  // Consume side.
  int c_j = 0, c_kb = kb0;
  float acc_lo = 0.0f, acc_hi = 0.0f;
  for (int u0 = 0; u0 < n_units; u0 += kTcStages) {
#pragma unroll
    for (int i = 0; i < kTcStages; ++i) {
      if (u0 + i >= n_units) break;  // warp-uniform
      float d[4] = {0.f, 0.f, 0.f, 0.f};
      const uint4* xq = reinterpret_cast<const uint4*>(xs + int64_t(c_kb - r0) * kTcBlock + 16 * c);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint4 xa = xq[8 * h], xb = xq[8 * h + 1];  // x at k 64h + 16c .. +15 (f16)
        const uint32_t xw[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
        uint4 la = make_uint4(0, 0, 0, 0), lb = la;
        if constexpr (XS) {
          const uint4* xlq = reinterpret_cast<const uint4*>(xl + int64_t(c_kb - r0) * kTcBlock + 16 * c);
          la = xlq[8 * h], lb = xlq[8 * h + 1];
        }
        const uint32_t xlw[8] = {la.x, la.y, la.z, la.w, lb.x, lb.y, lb.z, lb.w};
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          const uint32_t lo = word(st[i].w[h], m), hi = word(st[i].w[2 + h], m);
          const uint32_t a[4] = {e4m3x2_h2(lo), e4m3x2_h2(hi), e4m3x2_h2(lo >> 16), e4m3x2_h2(hi >> 16)};
          mma_f16(d, a, xw[2 * m], xw[2 * m + 1]);
          if constexpr (XS) mma_f16(d, a, xlw[2 * m], xlw[2 * m + 1]);
        }
      }
      const float sx = xsc[c_kb - r0];
      acc_lo = fmaf(d[0] * sx, e8m0_f(uint8_t(st[i].code_lo)), acc_lo);
      acc_hi = fmaf(d[2] * sx, e8m0_f(uint8_t(st[i].code_hi)), acc_hi);
      load(st[i]);  // the unit kTcStages ahead
      if (++c_kb == kb1) {  // the tile's slice is done
        const int64_t t = t_first + int64_t(c_j) * lanes_t;
        if (ks_n == 1 && CL == 1) {
          if (c == 0) {
            if (t * 16 + g < W.M) yp[t * 16 + g] = acc_lo;
            if (t * 16 + g + 8 < W.M) yp[t * 16 + g + 8] = acc_hi;
          }
        } else if (c == 0) {
          float* r = red + ((c_j * lanes_t + tw) * ks_n + ks) * 16;
          r[g] = acc_lo;
          r[g + 8] = acc_hi;
        }
        acc_lo = acc_hi = 0.0f;
        c_kb = kb0;
        ++c_j;
      }
    }
  }
  if (ks_n == 1 && CL == 1) return;
  __syncthreads();
  const int64_t t0 = group * tiles_per_block;
  // The block's sum of its k-slices for row i of its tiles (tile i / 16 = j * lanes_t + tile lane:
  // the j-th tile of that lane), in slice order. Tiles past the end were not written: never read.
  auto slice_sum = [&](int i) {
    const float* p = red + int64_t(i / 16) * ks_n * 16 + i % 16;
    float s = p[0];
    for (int k = 1; k < ks_n; ++k) s += p[k * 16];
    return s;
  };
  if constexpr (CL == 1) {
    for (int i = threadIdx.x; i < tiles_per_block * 16; i += blockDim.x) {
      const int64_t m = t0 * 16 + i;
      if (m < W.M) yp[m] = slice_sum(i);
    }
  } else {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
    __trap();  // no clusters before sm_90 (the host never picks CL > 1 there)
#else
    for (int i = threadIdx.x; i < tiles_per_block * 16; i += blockDim.x)
      if (t0 * 16 + i < W.M) tile_sum[i] = slice_sum(i);
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every rank's tile sums are written (release / acquire across the cluster)
    // Rank r writes rows r * blockDim + tid, stepping by CL * blockDim: the ranks share the adds.
    for (int i = rank * int(blockDim.x) + int(threadIdx.x); i < tiles_per_block * 16; i += CL * int(blockDim.x)) {
      const int64_t m = t0 * 16 + i;
      if (m >= W.M) continue;
      float s = *cluster.map_shared_rank(tile_sum + i, 0);
#pragma unroll
      for (int r = 1; r < CL; ++r) s += *cluster.map_shared_rank(tile_sum + i, r);
      yp[m] = s;
    }
    cluster.sync();  // no block leaves (freeing its shared memory) before the others have read it
#endif
  }
}

constexpr size_t kTcMaxSmem = 48 * 1024;  // no opt-in

// The launch geometry of a call: cluster size, k-slices, tiles per warp, blocks per job and shared
// memory.
struct tc_shape {
  int cl = 1, ks_n = 1, rt = 1;
  unsigned blocks = 0;
  size_t smem = 0;
};

// Test hooks (set_matmul_tc_shape, set_matmul_tc_xsplit): forced cluster size and k-slices, 0
// automatic; whether x that is not FP8-exact is split in two f16 halves (1, the default) or staged
// as one f16 (0: a numerics experiment, not used otherwise).
std::atomic<int> g_tc_cl{0}, g_tc_ks{0}, g_tc_xsplit{1};

// The geometry for cluster size CL: K split in up to 8 slices per block (at least one 128-block
// each); tiles per warp so that the jobs' blocks come to about kTcBlocksPerSM per SM. xs: x staged
// as two f16 halves.
tc_shape tc_shape_for(const mm_weights& W, unsigned jobs, int CL, int ks_force, bool xs) {
  tc_shape sh;
  sh.cl = CL;
  const int64_t nkb = W.K / kTcBlock;
  const int64_t nkr_min = nkb / CL, nkr_max = (nkb + CL - 1) / CL;
  while (sh.ks_n < kTcWarps && 2 * sh.ks_n <= nkr_min && (ks_force == 0 || 2 * sh.ks_n <= ks_force)) sh.ks_n *= 2;
  const int64_t n_tiles = (W.M + 15) / 16;
  const int lanes_t = kTcWarps / sh.ks_n;
  const int sms = sm_count();
  const int64_t target = std::max<int64_t>(1, int64_t(std::max(sms, 1)) * kTcBlocksPerSM / (int64_t(jobs) * CL));
  const int64_t groups = (n_tiles + lanes_t - 1) / lanes_t;  // tile-lane groups of the job
  sh.rt = int(std::max<int64_t>(1, (groups + target - 1) / target));
  const int64_t per_block = int64_t(lanes_t) * sh.rt;
  sh.blocks = unsigned((n_tiles + per_block - 1) / per_block) * unsigned(CL);
  sh.smem = size_t(nkr_max) * (kTcBlock * 2 * (xs ? 2 : 1) + 4);
  if (sh.ks_n > 1 || CL > 1) sh.smem += size_t(per_block) * sh.ks_n * 16 * 4;
  if (CL > 1) sh.smem += size_t(per_block) * 16 * 4;
  return sh;
}

// The automatic cluster size (GraphChainTiming, docs/CUDA.md "Fourth session"): 2 for rows of at
// least kTcClusterMinK (wo_b K 8192 M 4096: 11.8 against 12.1 us; K 16384 M 4096: 21.6 against
// 22.7), else 1 (wq_b K 1024: 11.8 against 11.1; wo_a 4096 x 1024 x 8: 12.2 against 11.9). Clusters
// of 4 and 8 measured 1.5-2x slower at every shape the tensor-core decode takes.
constexpr int64_t kTcClusterMinK = 8192;

bool x_split(bool x_exact) { return !x_exact && g_tc_xsplit.load(std::memory_order_relaxed) != 0; }

// The geometry of a call: the forced or automatic cluster size (1 without clusters or when K has
// a single 128-block).
tc_shape tc_shape_of(const mm_weights& W, unsigned jobs, bool x_exact) {
  const int force = g_tc_cl.load(std::memory_order_relaxed);
  int CL = force > 0 ? std::min(force, kTcMaxCluster) : W.K >= kTcClusterMinK ? 2 : 1;
  if (CL > 1 && (!clusters_available() || W.K / kTcBlock < CL)) CL = 1;
  return tc_shape_for(W, jobs, CL, g_tc_ks.load(std::memory_order_relaxed), x_split(x_exact));
}

std::atomic<long long> g_tc_calls{0};

}  // namespace

bool tc_decode_fits(const mm_weights& W, unsigned jobs, bool x_exact) {
  if (!W.scales || W.sb_k % kTcBlock != 0 || W.K % kTcBlock != 0 || W.K > (int64_t(1) << 24) || W.M == 0) return false;
  if (W.M > (int64_t(1) << 34) || jobs == 0) return false;
  return tc_shape_of(W, jobs, x_exact).smem <= kTcMaxSmem;
}

bool launch_tc_decode(cudaStream_t s, const mm_weights& W, const mm_rows& rd, unsigned jobs, bool x_exact) {
  if (rd.mode != 0 || rd.N != 1 || !tc_decode_fits(W, jobs, x_exact)) return false;
  const tc_shape sh = tc_shape_of(W, jobs, x_exact);
  const dim3 grid(sh.blocks, jobs);
  const unsigned threads = kTcWarps * 32;
  if (x_split(x_exact)) {
    if (sh.cl == 1) launch(tc_decode_kernel<1, true>, grid, threads, sh.smem, s, W, rd, sh.ks_n, sh.rt);
    else launch_clustered(tc_decode_kernel<2, true>, grid, threads, sh.smem, s, 2u, W, rd, sh.ks_n, sh.rt);
  } else {
    if (sh.cl == 1) launch(tc_decode_kernel<1, false>, grid, threads, sh.smem, s, W, rd, sh.ks_n, sh.rt);
    else launch_clustered(tc_decode_kernel<2, false>, grid, threads, sh.smem, s, 2u, W, rd, sh.ks_n, sh.rt);
  }
  g_tc_calls.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Test hook (tests/cuda/test_cuda_matmul.cpp; not part of the backend's API): launches so far.
long long matmul_tc_decode_calls() { return g_tc_calls.load(std::memory_order_relaxed); }

// Test hook (tests/cuda/test_cuda_matmul.cpp; not part of the backend's API): the cluster size
// (1 or 2; 1 where K has a single 128-block) and the k-slices per block (at most; 1, 2, 4, 8) of
// the tensor-core decode, 0 automatic.
void set_matmul_tc_shape(int cluster, int kslices) {
  g_tc_cl.store(cluster, std::memory_order_relaxed);
  g_tc_ks.store(kslices, std::memory_order_relaxed);
}

// Test hook (tests/cuda/test_cuda_matmul.cpp; not part of the backend's API): 1 (the default)
// splits x that is not FP8-exact into two f16 halves, 0 stages it as one f16 (an experiment).
void set_matmul_tc_xsplit(int on) { g_tc_xsplit.store(on, std::memory_order_relaxed); }

}  // namespace v4::cuda

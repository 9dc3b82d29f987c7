// Tensor-core decode of the routed experts: MATMUL_ID by pair (one x row per job) with mxfp4
// weights whose x is FP8-exact per 128 (matmul.cuh: launch_tc4; the host decides in ops_matmul.cu,
// tc_id_takes). Correct (tests/cuda/test_cuda_matmul.cpp TcId*) but measured no faster than gemv1
// at the model's expert calls (docs/CUDA.md "Fourth session: routed experts on tensor cores"), so
// it runs only when asked: V4_CUDA_TC_ID=1 or the test hook.
//
// Why: the f32 decode kernel of the experts (gemv1) spends ~11 thread instructions per weight
// (docs/CUDA.md "Third session") and reads the experts' weights at ~42% of copy. With QAT the
// experts' x is rounded by the activation quantization (w1 + w3: the FFN input's act_quant; w2:
// swiglu's fp8 option): each 128-block of x is e4m3 code * 2^s, as for ops_matmul_tc.cu.
//
// Exactness: x / 2^t is exact in f16 (t = fp8_roundtrip's exponent recomputed from the rounded
// block, see ops_matmul_tc.cu). An e2m1 code S.EE.M becomes the f16 with the bits E E M at 11..9
// and S at 15 (e2m1x8_h2): the code's value times 2^-14 exactly (E = 0: the f16 subnormal
// M * 2^-15). Products of two f16 with at most 2 and 4 significant bits are exact in the tensor
// core's f32. The e8m0 scale is per 32 k of a row, and an mma sums the k of the four lanes of a
// quad, so the groups are kept apart by the mma's N dimension (below): each D column is one
// group's sum, scaled in f32 afterwards (nothing is folded into the f16 weights).
//
// Layout: a warp owns 16-row tiles; a unit is one tile x one 128-wide K block (4 scale groups of
// 32, one x block). Lane (g = lane / 4, c = lane % 4) loads group c (bytes 16c .. 16c+15 of the
// unit's 64 bytes) of rows g and g + 8. Per 4-byte word of its group (8 codes) two mma
// m16n8k16 (A rows g / g+8: the word's codes as 4 f16x2 pairs; a lane's 4 k slots take one pair
// each) chain in the accumulator, 8 mma per unit. B column n of the mma is supplied by lanes
// 4n .. 4n+3, k rows 2c.. by lane c of them: only lane (n, c = n), n < 4, loads x (the f16 of the
// codes of its slots); every other lane reads zeros. So D[m][n] (n < 4) = the sum over group n
// of row m alone, and columns 4..7 are 0. Lane (g, c < 2) then holds D[g][2c], D[g][2c+1] and
// D[g+8][..] (the groups 2c, 2c+1), multiplies them by 2^14, x's 2^t and the groups' e8m0 scales
// (exact unless outside f32's range) and adds them to its f32 sums; at the end of a tile the sums
// of lanes c = 0 and 1 are added (groups 0, 1 then 2, 3).
// x in shared memory: f16, per 8 k of a word in the order of the pairs (k 0, 4, 1, 5, 2, 6, 3, 7),
// so that a reading lane's B registers of a word are one 16-byte load; the zero lanes read a
// 64-byte zero area placed 8 banks away from the readers (no bank conflicts).
// Split-K inside the block, the software pipeline and the launch geometry are ops_matmul_tc.cu's:
// the 8 warps are KS k-slices x 8/KS tile lanes, slice partials added in slice order through shared
// memory (deterministic, no atomics); kT4Stages units' loads in registers per warp. The expert of
// a job comes from ids (written by the router kernel before), so nothing is loaded before the PDL
// wait, and the kernel is launched without the attribute unless asked (launch_with_pdl, as gemv1).
#include <algorithm>
#include <atomic>
#include <cstdint>

#include "backends/cuda/matmul.cuh"
#include "backends/cuda/quant_round.cuh"

namespace v4::cuda {
namespace {

constexpr int kT4Warps = 8;
constexpr int kT4Stages = 4;        // units in flight per warp (2 x 16 bytes per lane each): default
constexpr int kT4Block = 128;       // x's FP8 block along K, and the unit's K
constexpr int kT4Group = 32;        // k per e8m0 scale (mxfp4)
constexpr int kT4BlocksPerSM = 2;   // blocks per SM the grid is sized for (and the registers allow)
constexpr int kT4ZeroBytes = 128;   // the zero area: 64 bytes used at offset 32 (banks 8 .. 23)
constexpr bool kT4Interleaved = false;  // k-slices interleaved by 128-block (default order)

__device__ inline void mma_f16_16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 8 e2m1 codes (nibble j = code j, low nibble first) -> 4 f16x2 of their values times 2^-14:
// p[i] = (code i, code i + 4). The f16 bits of code S.EE.M are EEM at 11..9 and S at 15
// (e2m1x2_half_bits in matmul.cuh). r = a rotated left by 3 puts each nibble's sign 3 bits above
// its own place (nibble 7's at bit 2); ce takes the magnitudes of the even nibbles from a and
// everything else from r, co the odd ones, so that one shift (rotate) and mask of ce or co gives
// two codes with their signs. 11 instructions per 8 codes.
__device__ inline void e2m1x8_h2(uint32_t a, uint32_t p[4]) {
  const uint32_t r = __funnelshift_l(a, a, 3);
  const uint32_t ce = (a & 0x07070707u) | (r & ~0x07070707u);
  const uint32_t co = (a & 0x70707070u) | (r & ~0x70707070u);
  constexpr uint32_t kMask = 0x8E008E00u;
  p[0] = (ce << 9) & kMask;                    // codes 0, 4: EEM bits 0..2 -> 9..11, sign bit 6 -> 15
  p[1] = (co << 5) & kMask;                    // codes 1, 5: bits 4..6 -> 9..11, 10 -> 15
  p[2] = (ce << 1) & kMask;                    // codes 2, 6: bits 8..10 -> 9..11, 14 -> 15
  p[3] = __funnelshift_r(co, co, 3) & kMask;  // codes 3, 7: bits 12..14 -> 9..11, 18 -> 15 (7: 2 -> 31)
}

// Position of k (0..7 within an 8-k word) in x's shared-memory order: the f16 pairs of p[0..3].
__device__ inline int x_pos(int j) { return 2 * (j & 3) + (j >> 2); }

// One unit's raw data in registers: rows g and g+8's 16 bytes of group c; the e8m0 codes of groups
// 2(c & 1) and 2(c & 1) + 1 of rows g (bits 0..15) and g+8 (bits 16..31), low group first.
struct t4_unit {
  uint4 w[2];
  uint32_t s;
};

// grid (blocks, jobs), kT4Warps warps, S units in flight per warp. ks_n: k-slices per block (1, 2,
// 4 or 8); rt: tiles per warp; il: the k-slices interleaved by 128-block (else contiguous).
// Dynamic shared memory: x as f16 [K] (pair order), the zero area, x's block scales 2^t [K / 128],
// partials [tiles per block][ks_n][16] (ks_n > 1). MATMUL_ID jobs of one x row (mode 2).
template <int S>
__global__ void __launch_bounds__(kT4Warps * 32, kT4BlocksPerSM)
    tc4_kernel(mm_weights W, mm_rows rd, int ks_n, int rt, bool il) {
  extern __shared__ uint4 t4_smem[];
  pdl_wait();  // the job's expert is read from ids
  const mm_job jb = job_of(W, rd, blockIdx.y);
  if (jb.count == 0) return;  // the whole block (an id outside [0, E): output left unwritten)

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const int nkb = int(W.K / kT4Block);
  const int64_t n_tiles = (W.M + 15) / 16;
  const int lanes_t = kT4Warps / ks_n;  // tile lanes per block
  const int tiles_per_block = lanes_t * rt;
  const int tw = warp / ks_n, ks = warp % ks_n;
  // The warp's K blocks: kb0, kb0 + kstep, ... (nkw of them): contiguous slices (kstep 1) or
  // interleaved (kstep ks_n: the block's warps read adjacent 64-byte pieces of the same rows).
  const int kb0 = il ? ks : ks * nkb / ks_n, kstep = il ? ks_n : 1;
  const int nkw = il ? (nkb - ks + ks_n - 1) / ks_n : (ks + 1) * nkb / ks_n - kb0;
  const int64_t t_first = int64_t(blockIdx.x) * tiles_per_block + tw;  // tile j of this warp: t_first + j * lanes_t
  const int64_t left = t_first < n_tiles ? (n_tiles - t_first + lanes_t - 1) / lanes_t : 0;
  const int my_tiles = int(left < rt ? left : rt);
  const int n_units = my_tiles * nkw;

  __half* xs = reinterpret_cast<__half*>(t4_smem);
  char* zero = reinterpret_cast<char*>(xs + W.K);
  float* xsc = reinterpret_cast<float*>(zero + kT4ZeroBytes);
  float* red = xsc + nkb;

  // Issue side: the tile and K block of the next unit to load, and its rows.
  int i_j = 0, i_kb = kb0, i_n = 0, issued = 0;
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
    slo = jb.s + (mlo / W.sb_m) * W.s_nb1 + 2 * (c & 1);
    shi = jb.s + (mhi / W.sb_m) * W.s_nb1 + 2 * (c & 1);
  };
  auto load = [&](t4_unit& u) {
    if (issued >= n_units) return;
    const int64_t off = int64_t(i_kb) * (kT4Block / 2);
    u.w[0] = __ldcs(reinterpret_cast<const uint4*>(wlo + off));
    u.w[1] = __ldcs(reinterpret_cast<const uint4*>(whi + off));
    const int col = i_kb * (kT4Block / kT4Group);  // the unit's first scale group
    u.s = uint32_t(__ldg(reinterpret_cast<const uint16_t*>(slo + col))) |
          (uint32_t(__ldg(reinterpret_cast<const uint16_t*>(shi + col))) << 16);
    ++issued;
    i_kb += kstep;
    if (++i_n == nkw) {
      i_n = 0;
      i_kb = kb0;
      if (++i_j < my_tiles) set_rows(i_j);
    }
  };

  t4_unit st[S];
  if (n_units > 0) set_rows(0);
#pragma unroll
  for (int i = 0; i < S; ++i) load(st[i]);
  const float* xp;
  float* yp;
  row_ptrs(rd, jb, 0, &xp, &yp);

  // Stage x: warp w takes 128-blocks w, w + 8, ...; t from the rounded block's amax as
  // fp8_roundtrip derives it (qround::fp8_exp), x / 2^t exact in f16 (ops_matmul_tc.cu). Lane l
  // holds k 4l .. 4l+3 of the block: word l / 2 of it, k 4 (l & 1) .. +3 of that word.
  if (threadIdx.x < kT4ZeroBytes / 4) reinterpret_cast<uint32_t*>(zero)[threadIdx.x] = 0;
  constexpr int kXLoads = 4;
  for (int b0 = warp; b0 < nkb; b0 += kXLoads * kT4Warps) {
    float4 v[kXLoads];
#pragma unroll
    for (int i = 0; i < kXLoads; ++i) {
      const int b = b0 + i * kT4Warps;
      v[i] = b < nkb ? __ldg(reinterpret_cast<const float4*>(xp + int64_t(b) * kT4Block) + lane)
                     : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int i = 0; i < kXLoads; ++i) {
      const int b = b0 + i * kT4Warps;
      if (b >= nkb) break;  // warp-uniform
      const float m = fmaxf(fmaxf(qround::finite_abs(v[i].x), qround::finite_abs(v[i].y)),
                            fmaxf(qround::finite_abs(v[i].z), qround::finite_abs(v[i].w)));
      const int t = qround::fp8_exp(warp_max(m), qround::kFp8Floor);
      const float inv = qround::pow2(-t);
      __half* x8 = xs + int64_t(b) * kT4Block + 8 * (lane >> 1);  // the lane's 8-k word
      const int j0 = 4 * (lane & 1);
      x8[x_pos(j0)] = __float2half_rn(v[i].x * inv);
      x8[x_pos(j0 + 1)] = __float2half_rn(v[i].y * inv);
      x8[x_pos(j0 + 2)] = __float2half_rn(v[i].z * inv);
      x8[x_pos(j0 + 3)] = __float2half_rn(v[i].w * inv);
      if (lane == 0) xsc[b] = qround::pow2(t);
    }
  }
  __syncthreads();

  // B source of this lane: x of group c for lane (c, c), else the zero area (step 0 per unit).
  const bool reader = g == c;
  const uint4* xbase = reader ? reinterpret_cast<const uint4*>(xs) + 4 * c : reinterpret_cast<const uint4*>(zero + 32);
  const int xstep = reader ? kT4Block / 8 : 0;  // uint4 per 128-block

  // Consume side.
  int c_j = 0, c_kb = kb0, c_n = 0;
  float acc_lo = 0.0f, acc_hi = 0.0f;
  for (int u0 = 0; u0 < n_units; u0 += S) {
#pragma unroll
    for (int i = 0; i < S; ++i) {
      if (u0 + i >= n_units) break;  // warp-uniform
      float d[4] = {0.f, 0.f, 0.f, 0.f};
      const uint4* xq = xbase + c_kb * xstep;
#pragma unroll
      for (int wd = 0; wd < 4; ++wd) {
        const uint4 xw = xq[wd];
        uint32_t lo[4], hi[4];
        e2m1x8_h2(word(st[i].w[0], wd), lo);
        e2m1x8_h2(word(st[i].w[1], wd), hi);
        const uint32_t a0[4] = {lo[0], hi[0], lo[1], hi[1]};
        mma_f16_16816(d, a0, xw.x, xw.y);
        const uint32_t a1[4] = {lo[2], hi[2], lo[3], hi[3]};
        mma_f16_16816(d, a1, xw.z, xw.w);
      }
      // d: groups 2c, 2c+1 of rows g, g+8 (lanes c >= 2: zeros, their sums are not used).
      const float sx = xsc[c_kb];
      acc_lo = fmaf(d[0] * kE2m1HalfUnscale * sx, e8m0_f(uint8_t(st[i].s)), acc_lo);
      acc_lo = fmaf(d[1] * kE2m1HalfUnscale * sx, e8m0_f(uint8_t(st[i].s >> 8)), acc_lo);
      acc_hi = fmaf(d[2] * kE2m1HalfUnscale * sx, e8m0_f(uint8_t(st[i].s >> 16)), acc_hi);
      acc_hi = fmaf(d[3] * kE2m1HalfUnscale * sx, e8m0_f(uint8_t(st[i].s >> 24)), acc_hi);
      load(st[i]);  // the unit S ahead
      c_kb += kstep;
      if (++c_n == nkw) {  // the tile's slice is done: groups 0, 1 (lane c = 0) + groups 2, 3 (c = 1)
        const float sum_lo = acc_lo + __shfl_xor_sync(0xffffffffu, acc_lo, 1);
        const float sum_hi = acc_hi + __shfl_xor_sync(0xffffffffu, acc_hi, 1);
        const int64_t t = t_first + int64_t(c_j) * lanes_t;
        if (ks_n == 1) {
          if (c == 0) {
            if (t * 16 + g < W.M) yp[t * 16 + g] = sum_lo;
            if (t * 16 + g + 8 < W.M) yp[t * 16 + g + 8] = sum_hi;
          }
        } else if (c == 0) {
          float* r = red + ((c_j * lanes_t + tw) * ks_n + ks) * 16;
          r[g] = sum_lo;
          r[g + 8] = sum_hi;
        }
        acc_lo = acc_hi = 0.0f;
        c_kb = kb0;
        c_n = 0;
        ++c_j;
      }
    }
  }
  if (ks_n == 1) return;
  __syncthreads();
  const int64_t t0 = int64_t(blockIdx.x) * tiles_per_block;
  for (int i = threadIdx.x; i < tiles_per_block * 16; i += blockDim.x) {
    const int tl = i / 16, r = i % 16;
    const int64_t m = (t0 + tl) * 16 + r;  // tile tl = j * lanes_t + (tile lane): j-th tile of that lane
    if (m >= W.M) continue;
    const float* p = red + int64_t(tl) * ks_n * 16 + r;
    float s = p[0];
    for (int k = 1; k < ks_n; ++k) s += p[k * 16];
    yp[m] = s;
  }
}

// The launch geometry of a call (as ops_matmul_tc.cu's tc_shape_of): k-slices, tiles per warp,
// blocks per job and shared memory.
struct t4_shape {
  int ks_n = 1, rt = 1;
  unsigned blocks = 0;
  size_t smem = 0;
};

constexpr size_t kT4MaxSmem = 48 * 1024;  // no opt-in

// Test hooks (set_matmul_tc_id_shape): units in flight per warp (0: kT4Stages) and k-slices per
// block (0: automatic), for timing sweeps.
std::atomic<int> g_t4_stages{0}, g_t4_ks{0}, g_t4_il{0};

// K split in up to 8 slices (at least one 128-block each; fewer when a hook asks); tiles per warp
// so that the jobs' blocks come to about kT4BlocksPerSM per SM.
t4_shape t4_shape_of(const mm_weights& W, unsigned jobs) {
  t4_shape sh;
  const int64_t nkb = W.K / kT4Block;
  const int ks_max = g_t4_ks.load(std::memory_order_relaxed) > 0 ? g_t4_ks.load(std::memory_order_relaxed) : kT4Warps;
  while (sh.ks_n < kT4Warps && 2 * sh.ks_n <= ks_max && 2 * sh.ks_n <= nkb) sh.ks_n *= 2;
  const int64_t n_tiles = (W.M + 15) / 16;
  const int lanes_t = kT4Warps / sh.ks_n;
  const int sms = sm_count();
  const int64_t target = std::max<int64_t>(1, int64_t(std::max(sms, 1)) * kT4BlocksPerSM / int64_t(jobs));
  const int64_t groups = (n_tiles + lanes_t - 1) / lanes_t;  // tile-lane groups of the job
  sh.rt = int(std::max<int64_t>(1, (groups + target - 1) / target));
  const int64_t per_block = int64_t(lanes_t) * sh.rt;
  sh.blocks = unsigned((n_tiles + per_block - 1) / per_block);
  sh.smem = size_t(W.K) * 2 + kT4ZeroBytes + size_t(nkb) * 4 +
            (sh.ks_n > 1 ? size_t(per_block) * sh.ks_n * 16 * 4 : 0);
  return sh;
}

std::atomic<long long> g_tc4_calls{0};

}  // namespace

bool tc4_fits(const mm_weights& W, unsigned jobs) {
  if (!W.scales || W.sb_k != kT4Group || W.sb_m < 1 || W.K % kT4Block != 0 || W.M == 0 || jobs == 0) return false;
  if (W.K > (int64_t(1) << 24) || W.M > (int64_t(1) << 34)) return false;
  // Scale codes are read two at a time (groups 2i, 2i+1 of a row): 2-byte aligned scale rows.
  if ((reinterpret_cast<uintptr_t>(W.scales) & 1) || (W.s_nb1 & 1) || (W.s_nb2 & 1) || (W.s_nb3 & 1)) return false;
  if (W.s_cols < W.K / kT4Group) return false;
  return t4_shape_of(W, jobs).smem <= kT4MaxSmem;
}

bool launch_tc4(cudaStream_t s, const mm_weights& W, const mm_rows& rd, unsigned jobs, bool pdl) {
  if (rd.mode != 2 || !tc4_fits(W, jobs)) return false;
  const t4_shape sh = t4_shape_of(W, jobs);
  const dim3 grid(sh.blocks, jobs);
  const int stages = g_t4_stages.load(std::memory_order_relaxed);
  const int il_mode = g_t4_il.load(std::memory_order_relaxed);
  const bool il = il_mode == 0 ? kT4Interleaved : il_mode == 2;
  const auto kernel = stages == 2 ? tc4_kernel<2> : stages == 6 ? tc4_kernel<6> : stages == 8 ? tc4_kernel<8>
                                                                                              : tc4_kernel<kT4Stages>;
  if (pdl) {
    launch(kernel, grid, kT4Warps * 32, sh.smem, s, W, rd, sh.ks_n, sh.rt, il);
  } else {  // plain launch: waits for the previous kernel as without PDL (pdl_wait() is a no-op)
    kernel<<<grid, kT4Warps * 32, sh.smem, s>>>(W, rd, sh.ks_n, sh.rt, il);
  }
  g_tc4_calls.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Test hook (tests/cuda/test_cuda_matmul.cpp; not part of the backend's API): launches so far.
long long matmul_tc_id_calls() { return g_tc4_calls.load(std::memory_order_relaxed); }

// Timing hook (tests/cuda/test_cuda_matmul.cpp; not part of the backend's API): units in flight
// per warp (2, 4, 6, 8; 0 the default kT4Stages), at most ks k-slices per block (0: automatic), and
// the k-slices' order (il: 0 the default kT4Interleaved, 1 contiguous, 2 interleaved).
void set_matmul_tc_id_shape(int stages, int ks, int il) {
  g_t4_stages.store(stages, std::memory_order_relaxed);
  g_t4_ks.store(ks, std::memory_order_relaxed);
  g_t4_il.store(il, std::memory_order_relaxed);
}

}  // namespace v4::cuda

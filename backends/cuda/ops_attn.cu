// attn_mqa: H query heads over one shared set of K = V rows, with mask and sink (tensor/ops.h).
// attn_sparse: the same over keys read from the caches as stored (window ring | store rows by
// id, fp8 rows dequantized in the tile loader). No score matrix leaves the chip.
//
// attn_kernel: a block takes kGroup heads of one token and one chunk of the keys. The heads'
// queries and a tile of key rows sit in shared memory (copied with cp.async, the queries and the
// first tile in flight together); each warp scores kRows key rows against every head of the group
// (lanes along D, float4 reads; the 32 sums of a warp reduced together, one per lane), an online
// softmax (running max, started at the sink, and running sum per head) rescales the accumulated
// sum of p * row, and the tile's rows are added. A thread owns 2 output dims of every head
// (D <= 512), in registers across the tiles. Keys are read once per head group, not per head.
//
// The keys are split into C chunks (about two blocks per SM; a multiple of chunk_rows() = 8 keys
// each, tiles of up to 32 inside) so that a decode step (one token: 64 heads = 8 groups; 640 keys:
// 27 chunks of 24, a short context's 176 keys: 22 chunks of 8) still fills the GPU. With C > 1
// every block writes its partial (max m_c, sum l_c, unnormalised output acc_c) to scratch memory
// and a second launch, attn_combine_kernel (one block per (head, token), a thread per 4 dims; PDL
// makes the launch nearly free), combines them:
//   M = max m_c,  L = sum l_c e^(m_c - M) + e^(sink - M),  y = sum acc_c e^(m_c - M) / L.
// (The first version combined in the last block of each (token, group) to finish, found by a
// fence and an atomic counter, scalar reads and one warp_sum per score: 36 us at decode; see
// docs/CUDA.md.) A query whose logits are all -inf and has no sink gets zeros, as the CPU.
//
// attn_sparse (kSparse): the tile loader finds each key's row (a ring slot, or the store row its
// id names) and mask value, then converts the rows into the same shared-memory tile: f32 / f16 /
// bf16 exactly, fp8_e4m3 as code value times its e8m0 scale (one f32 product, as get_rows), four
// elements per load where rows are aligned. Everything after the tile is attn_mqa's code.
//
// The output rotation (tensor/ops.h: attn_out_rope; the model's inverse RoPE of o) happens where
// the output is finished: in attn_combine_kernel, or in attn_kernel when C = 1. Its cos / sin per
// pair are made first (while the loads are in flight), the finished row goes through shared
// memory (a pair's two dims belong to different threads), then each element is turned by
// rope.cuh's rope_elem and written [D, H, T].
//
// Numerics: f32 throughout, expf (within 2 ulp); the per-tile rescaling and the combine add a
// few roundings per chunk, inside the harness's bound (reference.cpp: ref_ATTN_MQA); the rotation
// as the rope kernel (explicit roundings: the CPU's operations on the same values).
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include <cuda_fp8.h>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/rope.cuh"

namespace v4::cuda {
namespace {

constexpr int kGroup = 8;        // heads per block
constexpr int kThreads = 256;    // 8 warps; a thread owns 2 output dims: D <= 2 * kThreads
constexpr int kMaxChunks = 64;   // chunks per (token, group): more would only lengthen the combine
constexpr int kRows = 4;         // key rows a warp scores at once
constexpr int kCombineThreads = 128;
static_assert(2 * kThreads >= kMaxAttnDim, "a thread owns two output dims");

struct attn_args {
  tview q, kv, mask, sink, y;
  bool has_mask, has_sink;
  float scale;
  int D, NK, H, T;
  int groups;     // ceil(H / kGroup)
  int chunks;     // C
  int per_chunk;  // keys per chunk
  int tile;       // key rows per tile in shared memory (<= 32: one lane per row in the softmax)
  float* part;    // [T, groups, C] x (kGroup*D acc, kGroup m, kGroup l), when chunks > 1
  // attn_sparse (tensor/ops.h: sparse_keys): key j < W is ring slot j, key j >= W store row
  // ids[j - W, t] (or j - W); mask [W + Rv, T] indexed by slot, then by row.
  tview ring, store, scales, rest, ids;
  int W, Rv;
  int nq;              // store dims read from `store` (fp8 when compact); the rest from `rest`
  int sb_k, sb_rows;   // compact: the scale block
  int sb_shift;        // log2(sb_k) when a power of two, else -1
  bool compact, has_ids;
  // The output rotation (tensor/ops.h: attn_out_rope): y is [D, H, T], rows turned by pos[t].
  bool rope;
  rope_args ra;
  tview pos;
};

// Output element d of (token t, head h): [D, H, T] with the rotation, [D, T, H] without.
__device__ inline float* y_at(const attn_args& p, int d, int t, int h) {
  return reinterpret_cast<float*>(p.rope ? at(p.y, d, h, t, 0) : at(p.y, d, t, h, 0));
}
// The rotation's cos and sin for token t's pairs into cs / sn (shared memory), a pair per thread
// (double pow / cos / sin: rope.cuh, the values the rope kernel computes).
__device__ inline void out_angles(const attn_args& p, int t, float* cs, float* sn) {
  const int32_t position = *reinterpret_cast<const int32_t*>(at(p.pos, t, 0, 0, 0));
  for (int i = threadIdx.x; i < p.ra.n_rot / 2; i += blockDim.x) rope_cos_sin(p.ra, i, position, &cs[i], &sn[i]);
}

__device__ inline float ld_f(const tview& v, int64_t i0, int64_t i1, int64_t i2) {
  return *reinterpret_cast<const float*>(at(v, i0, i1, i2, 0));
}

// Copies nr rows of D floats (row r at base + r * row_stride bytes, elements elem_stride apart)
// into dst [nr][D] in shared memory with kBatch loads in flight per thread (any strides; the
// packed case goes through load_rows_async). Loads one after another would each wait for memory.
constexpr int kBatch = 8;
__device__ inline void load_rows(float* dst, const char* base, int64_t row_stride, int64_t elem_stride, int nr, int D) {
  const int total = nr * D;
  for (int i0 = threadIdx.x; i0 < total; i0 += kBatch * blockDim.x) {
    float v[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int i = i0 + b * blockDim.x;
      if (i < total) v[b] = *reinterpret_cast<const float*>(base + int64_t(i / D) * row_stride + int64_t(i % D) * elem_stride);
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int i = i0 + b * blockDim.x;
      if (i < total) dst[i] = v[b];
    }
  }
}

// The packed copy (rows 16-byte aligned, D % 4 == 0) through cp.async (sm_80+): every 16-byte
// piece in flight at once, without registers (row and column advance by additions, not a
// division per piece); wait_rows() waits for all copies this thread started.
__device__ inline void load_rows_async(float* dst, const char* base, int64_t row_stride, int nr, int D) {
  const int per_row = D / 4, total = nr * per_row;
  const int dr = blockDim.x / per_row, dc = blockDim.x % per_row;
  int r = threadIdx.x / per_row, c = threadIdx.x % per_row;
  for (int i = threadIdx.x; i < total; i += blockDim.x) {
    const char* src = base + int64_t(r) * row_stride + int64_t(c) * 16;
    const unsigned to = unsigned(__cvta_generic_to_shared(dst + 4 * i));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(to), "l"(src) : "memory");
    r += dr;
    c += dc;
    if (c >= per_row) {
      c -= per_row;
      ++r;
    }
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
}
__device__ inline void wait_rows() { asm volatile("cp.async.wait_all;" ::: "memory"); }

__host__ __device__ inline bool packed16(const tview& v, int stride_dim, int D) {
  return D % 4 == 0 && v.nb[0] == 4 && reinterpret_cast<uintptr_t>(v.data) % 16 == 0 && v.nb[stride_dim] % 16 == 0;
}

// Sums each of the 32 values v[0..31] over the warp; lane l returns the sum of v[l]. Each step
// halves the values a lane holds (it keeps one half, sends the other to its partner): 31 shuffles
// in all instead of 32 x 5 for 32 separate warp_sums.
template <int kOff>
__device__ inline void fold_half(float (&v)[32], int lane) {
  const bool upper = lane & kOff;
#pragma unroll
  for (int i = 0; i < kOff; ++i) {
    const float send = upper ? v[i] : v[i + kOff];
    const float keep = upper ? v[i + kOff] : v[i];
    v[i] = keep + __shfl_xor_sync(0xffffffffu, send, kOff);
  }
}
__device__ inline float warp_sum_32(float (&v)[32]) {
  const int lane = threadIdx.x % 32;
  fold_half<16>(v, lane);
  fold_half<8>(v, lane);
  fold_half<4>(v, lane);
  fold_half<2>(v, lane);
  fold_half<1>(v, lane);
  return v[0];
}
static_assert(kRows * kGroup == 32, "a warp's scores are reduced 32 at a time, one per lane");
static_assert(kThreads / 32 * kRows >= 32, "every row group of a tile (<= 32 rows) has a warp");

// ---- attn_sparse's key rows ----
// quant/e8m0.h: 2^(e-127); 0 -> 2^-127 (subnormal); 0xFF -> NaN.
__device__ inline float e8m0_f(uint32_t e) {
  if (e == 0xFF) return __uint_as_float(0x7fc00000u);
  return __uint_as_float(e == 0 ? 0x00400000u : e << 23);
}
// quant/fp8.h's e4m3 (S.EEEE.MMM, bias 7, subnormals, 0x7F / 0xFF NaN), by its bits: a normal
// 2^(E-7) (1 + M/8) is the f32 with exponent field E + 120 and mantissa M << 20; a subnormal
// M 2^-9 is exact in f32.
__device__ inline float e4m3_f(uint32_t c) {
  const uint32_t e = (c >> 3) & 15, m = c & 7, sign = (c & 0x80) << 24;
  if (e == 0) return __uint_as_float(__float_as_uint(float(m) * 0x1p-9f) | sign);
  if (e == 15 && m == 7) return __uint_as_float(0x7fc00000u);
  return __uint_as_float(sign | ((e + 120) << 23) | (m << 20));
}

// Where one key row of a tile is and how to read it, found once per tile (sparse_key) so that
// the element loads need no index arithmetic beyond the column.
struct key_row {
  const char* a;      // the ring slot's row, or the store row (plain values or fp8 codes); nullptr:
                      // an id outside [0, Rv) (masked; reads as zeros)
  const char* rest;   // compact store rows: dims nq.. (rest's row)
  const uint8_t* sc;  // compact store rows: the row's e8m0 scales
  int type;           // a's type (kFp8: compact)
  int nq;             // dims read from a (D, or the store's nq)
};
constexpr int kFp8 = int(dtype::fp8_e4m3);

// Key j of token t: its row and its mask value.
__device__ inline void sparse_key(const attn_args& p, int t, int j, key_row* k, float* m) {
  k->rest = nullptr;
  k->sc = nullptr;
  k->nq = p.D;
  if (j < p.W) {
    k->a = p.ring.data + int64_t(j) * p.ring.nb[1];
    k->type = p.ring.type;
    *m = ld_f(p.mask, j, t, 0);
    return;
  }
  int i = j - p.W;
  if (p.has_ids) i = *reinterpret_cast<const int32_t*>(at(p.ids, i, t, 0, 0));
  if (i < 0 || i >= p.Rv) {
    k->a = nullptr;
    *m = -INFINITY;
    return;
  }
  k->a = p.store.data + int64_t(i) * p.store.nb[1];
  k->type = p.store.type;
  k->nq = p.nq;
  if (p.rest.data) k->rest = p.rest.data + int64_t(i) * p.rest.nb[1];
  if (p.compact) k->sc = reinterpret_cast<const uint8_t*>(p.scales.data + int64_t(i / p.sb_rows) * p.scales.nb[1]);
  *m = ld_f(p.mask, p.W + i, t, 0);
}

__device__ inline int elem_bytes(int type) { return type == kF32 ? 4 : 2; }
__device__ inline int scale_col(const attn_args& p, int d) { return p.sb_shift >= 0 ? d >> p.sb_shift : d / p.sb_k; }

// Element d of a key row as f32 (exact conversions: the values get_rows / cast produce).
__device__ inline float key_elem(const attn_args& p, const key_row& k, int d) {
  if (!k.a) return 0.0f;
  if (d >= k.nq) return load_f(k.rest + int64_t(d - k.nq) * elem_bytes(p.rest.type), p.rest.type);
  if (k.type == kFp8) return e4m3_f(uint8_t(k.a[d])) * e8m0_f(k.sc[scale_col(p, d)]);
  return load_f(k.a + int64_t(d) * elem_bytes(k.type), k.type);
}
// Four f32 / f16 / bf16 values at r (aligned for one load: attn_sparse's launcher checks).
__device__ inline float4 quad_f(const char* r, int type) {
  if (type == kF32) return *reinterpret_cast<const float4*>(r);
  const uint2 w = *reinterpret_cast<const uint2*>(r);
  if (type == kBF16)  // bf16 -> f32: the 16 bits on top
    return make_float4(__uint_as_float(w.x << 16), __uint_as_float(w.x & 0xffff0000u), __uint_as_float(w.y << 16),
                       __uint_as_float(w.y & 0xffff0000u));
  const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&w.x));
  const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&w.y));
  return make_float4(a.x, a.y, b.x, b.y);
}
// Two e4m3 codes (low byte first) as f32: the hardware conversion to f16 (exact: every e4m3 value
// is an f16 value, NaN stays NaN), then f16 -> f32 (exact).
__device__ inline float2 e4m3x2_f(uint32_t two) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(two), __NV_E4M3);
  return __half22float2(*reinterpret_cast<const __half2*>(&h));
}
// Elements d .. d+3 of a key row (d % 4 == 0; nq and the scale block are multiples of 4).
__device__ inline float4 key_quad(const attn_args& p, const key_row& k, int d) {
  if (!k.a) return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (d >= k.nq) return quad_f(k.rest + int64_t(d - k.nq) * elem_bytes(p.rest.type), p.rest.type);
  if (k.type != kFp8) return quad_f(k.a + int64_t(d) * elem_bytes(k.type), k.type);
  const uint32_t c = *reinterpret_cast<const uint32_t*>(k.a + d);
  const float s = e8m0_f(k.sc[scale_col(p, d)]);
  const float2 lo = e4m3x2_f(c & 0xFFFFu), hi = e4m3x2_f(c >> 16);
  return make_float4(lo.x * s, lo.y * s, hi.x * s, hi.y * s);  // one product each, as get_rows
}
// The nr rows of keys (rows[r] from sparse_key) into dst [nr][D], kBatch loads in flight per
// thread; row and column advance by additions (no division per element).
template <bool kVec>
__device__ inline void load_sparse_rows(float* dst, const attn_args& p, int nr, const key_row* rows) {
  const int per_row = kVec ? p.D / 4 : p.D, total = nr * per_row;
  const int dr = blockDim.x / per_row, dc = blockDim.x % per_row;
  int r = threadIdx.x / per_row, c = threadIdx.x % per_row;
  for (int i0 = threadIdx.x; i0 < total; i0 += kBatch * blockDim.x) {
    float4 v[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      if (i0 + b * int(blockDim.x) < total) {
        if (kVec) v[b] = key_quad(p, rows[r], 4 * c);
        else v[b].x = key_elem(p, rows[r], c);
      }
      r += dr;
      c += dc;
      if (c >= per_row) {
        c -= per_row;
        ++r;
      }
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int i = i0 + b * blockDim.x;
      if (i >= total) continue;
      if (kVec) reinterpret_cast<float4*>(dst)[i] = v[b];
      else dst[i] = v[b].x;
    }
  }
}

// kVec: q and the K=V rows packed and 16-byte aligned, D % 4 == 0, tile % 4 == 0 (V4 always):
// copies by cp.async, the dot products over float4 columns, and a thread owns the adjacent dims
// 2i and 2i + 1 (float2 reads of the rows). Otherwise scalar reads, dims i and i + kThreads.
// kSparse: attn_sparse's keys (the loader above), else attn_mqa's kv.
template <bool kVec, bool kSparse>
__global__ void __launch_bounds__(kThreads, 2) attn_kernel(attn_args p) {
  pdl_wait();
  extern __shared__ __align__(16) float sm[];
  const int D = p.D, TL = p.tile;
  float* qs = sm;               // [kGroup][D]
  float* ks = qs + kGroup * D;  // [TL][D]
  float* ps = ks + TL * D;      // [kGroup][TL]: the tile's e^(s - m)
  float* sp = ps + kGroup * TL;  // [slices][kGroup][TL]: partial dot products (scoring)
  __shared__ float s_m[kGroup], s_l[kGroup], s_alpha[kGroup];
  __shared__ float s_mask[32];
  __shared__ key_row s_keys[32];  // kSparse: the tile's key rows
  __shared__ float s_cs[kMaxAttnDim / 2], s_sn[kMaxAttnDim / 2];  // the output rotation (chunks == 1)

  const int t = blockIdx.x / p.chunks, c = blockIdx.x % p.chunks, grp = blockIdx.y;
  const int h0 = grp * kGroup, gn = min(kGroup, p.H - h0);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  const int j_begin = c * p.per_chunk, j_end = min(p.NK, j_begin + p.per_chunk);

  if (kVec) load_rows_async(qs, at(p.q, 0, t, h0, 0), p.q.nb[2], gn, D);
  else load_rows(qs, at(p.q, 0, t, h0, 0), p.q.nb[2], p.q.nb[0], gn, D);
  for (int i = gn * D + threadIdx.x; i < kGroup * D; i += blockDim.x) qs[i] = 0.0f;  // absent heads
  if (p.rope && p.chunks == 1) out_angles(p, t, s_cs, s_sn);  // while q's copy is in flight
  for (int i = threadIdx.x; i < kGroup * TL; i += blockDim.x) ps[i] = 0.0f;  // heads >= gn stay 0
  if (threadIdx.x < kGroup) {
    const int g = threadIdx.x;
    s_m[g] = p.has_sink && g < gn ? ld_f(p.sink, h0 + g, 0, 0) : -INFINITY;
    s_l[g] = 0.0f;
    s_alpha[g] = 1.0f;
  }
  // This thread's output dims d0 and d1 of the kGroup heads: acc = acc * alpha + sum_j p_j row_j.
  const int d0 = kVec ? 2 * threadIdx.x : threadIdx.x, d1 = kVec ? d0 + 1 : threadIdx.x + kThreads;
  const bool own0 = d0 < D, own1 = d1 < D;
  float v0[kGroup], v1[kGroup];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) v0[g] = v1[g] = 0.0f;

  for (int j0 = j_begin; j0 < j_end; j0 += TL) {
    const int n = min(TL, j_end - j0);
    // Prefill (T > 1): the tile's mask first, and a tile whose keys are all masked (-inf) is
    // skipped with its rows unread: it would change nothing (scores -inf: e = 0, alpha = 1, the
    // sums unchanged), and at a prefill chunk most tiles of [window | chunk] lie outside a query's
    // 128-token window. Decode (T = 1) keeps the mask's load in flight while the rows are read.
    const bool skip_masked = p.T > 1;
    if (kSparse) {
      // The mask value's load stays in flight while the rows are read (it is stored after them):
      // the row ids, then the rows, are the only dependent reads.
      float m = 0.0f;
      if (threadIdx.x < n) sparse_key(p, t, j0 + threadIdx.x, &s_keys[threadIdx.x], &m);
      if (skip_masked) {
        if (!__syncthreads_or(threadIdx.x < n && m != -INFINITY)) continue;
      } else {
        __syncthreads();
      }
      load_sparse_rows<kVec>(ks, p, n, s_keys);
      if (threadIdx.x < n) s_mask[threadIdx.x] = m;
    } else {
      const float m = threadIdx.x < n && p.has_mask ? ld_f(p.mask, j0 + threadIdx.x, t, 0) : 0.0f;
      if (skip_masked && !__syncthreads_or(threadIdx.x < n && m != -INFINITY)) continue;
      if (kVec) load_rows_async(ks, at(p.kv, 0, j0, 0, 0), p.kv.nb[1], n, D);
      else load_rows(ks, at(p.kv, 0, j0, 0, 0), p.kv.nb[1], p.kv.nb[0], n, D);
      if (threadIdx.x < n) s_mask[threadIdx.x] = m;
    }
    // kVec reads rows in fours without bounds checks (branches cost more than the reads): the
    // rows of a short last tile up to the next multiple of 4 become zeros.
    if (kVec)
      for (int i = n * D + threadIdx.x; i < ((n + 3) & ~3) * D; i += blockDim.x) ks[i] = 0.0f;
    if (kVec) wait_rows();
    __syncthreads();
    // Scores: a warp per kRows key rows, against every head of the group at once (each query
    // value read from shared memory serves kRows rows, each row value kGroup heads); a[u * kGroup
    // + g] is row jb + u against head g. A short tile (a chunk of 8 keys: two row groups) would
    // leave most warps idle and the rest with long loops: the spare warps take slices of the
    // columns instead, their partial dots summed in slice order by the softmax below.
    const int row_groups = (n + kRows - 1) / kRows, slices = ::max(1, n_warps / row_groups);
    const int jb = (warp % row_groups) * kRows, slice = warp / row_groups;
    if (slice < slices) {  // warp-uniform
      const int cols = kVec ? D / 4 : D, per = (cols + slices - 1) / slices;
      const int c_begin = slice * per, c_end = min(cols, c_begin + per);
      float a[kRows * kGroup];
#pragma unroll
      for (int i = 0; i < kRows * kGroup; ++i) a[i] = 0.0f;
      if (kVec) {
        for (int c4 = c_begin + lane; c4 < c_end; c4 += 32) {
          float4 qv[kGroup];
#pragma unroll
          for (int g = 0; g < kGroup; ++g) qv[g] = reinterpret_cast<const float4*>(qs + g * D)[c4];
#pragma unroll
          for (int u = 0; u < kRows; ++u) {  // rows >= n: zeros, their scores are not kept
            const float4 kd = reinterpret_cast<const float4*>(ks + (jb + u) * D)[c4];
#pragma unroll
            for (int g = 0; g < kGroup; ++g) {
              float& x = a[u * kGroup + g];
              x += qv[g].x * kd.x;
              x += qv[g].y * kd.y;
              x += qv[g].z * kd.z;
              x += qv[g].w * kd.w;
            }
          }
        }
      } else {
        for (int d = c_begin + lane; d < c_end; d += 32) {
          float qv[kGroup];
#pragma unroll
          for (int g = 0; g < kGroup; ++g) qv[g] = qs[g * D + d];
#pragma unroll
          for (int u = 0; u < kRows; ++u) {
            const float kd = jb + u < n ? ks[(jb + u) * D + d] : 0.0f;
#pragma unroll
            for (int g = 0; g < kGroup; ++g) a[u * kGroup + g] += qv[g] * kd;
          }
        }
      }
      const float dot = warp_sum_32(a);  // row jb + lane / kGroup, head lane % kGroup
      const int u = lane / kGroup, g = lane % kGroup;
      if (jb + u < n && g < gn) sp[(slice * kGroup + g) * TL + jb + u] = dot;
    }
    __syncthreads();
    // Online softmax: a warp per head, a lane per key row of the tile (rows >= n get e = 0).
    for (int g = warp; g < gn; g += n_warps) {
      float s = -INFINITY;
      if (lane < n) {
        float dot = sp[g * TL + lane];
        for (int k = 1; k < slices; ++k) dot += sp[(k * kGroup + g) * TL + lane];
        s = dot * p.scale + s_mask[lane];
      }
      const float m_old = s_m[g], m_new = fmaxf(m_old, warp_max(s));
      float e = 0.0f, alpha = 1.0f;
      if (m_new != -INFINITY) {
        e = s == -INFINITY ? 0.0f : expf(s - m_new);
        alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
      }
      const float sum = warp_sum(e);
      if (lane < TL) ps[g * TL + lane] = e;
      __syncwarp();  // every lane has read s_m[g] before lane 0 replaces it
      if (lane == 0) {
        s_alpha[g] = alpha;
        s_m[g] = m_new;
        s_l[g] = s_l[g] * alpha + sum;
      }
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      v0[g] *= s_alpha[g];
      v1[g] *= s_alpha[g];
    }
    if (kVec) {  // four p_j per float4 read, both dims per float2 read
      if (own0)
        for (int j = 0; j < n; j += 4) {
          float4 pg[kGroup];
#pragma unroll
          for (int g = 0; g < kGroup; ++g) pg[g] = *reinterpret_cast<const float4*>(ps + g * TL + j);
          float2 k[4];  // rows >= n: zeros (and their p_j = 0)
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) k[jj] = *reinterpret_cast<const float2*>(ks + (j + jj) * D + d0);
#pragma unroll
          for (int g = 0; g < kGroup; ++g) {
            v0[g] += pg[g].x * k[0].x;
            v1[g] += pg[g].x * k[0].y;
            v0[g] += pg[g].y * k[1].x;
            v1[g] += pg[g].y * k[1].y;
            v0[g] += pg[g].z * k[2].x;
            v1[g] += pg[g].z * k[2].y;
            v0[g] += pg[g].w * k[3].x;
            v1[g] += pg[g].w * k[3].y;
          }
        }
    } else {  // each p_j read from shared memory serves both dims
      for (int j = 0; j < n; ++j) {
        const float k0 = own0 ? ks[j * D + d0] : 0.0f, k1 = own1 ? ks[j * D + d1] : 0.0f;
#pragma unroll
        for (int g = 0; g < kGroup; ++g) {
          const float pj = ps[g * TL + j];
          v0[g] += pj * k0;
          v1[g] += pj * k1;
        }
      }
    }
    __syncthreads();  // ks, ps and s_alpha are rewritten by the next tile
  }
  if (kVec) wait_rows();  // the queries' copy, when there was no tile

  if (p.chunks == 1) {  // the whole row in this block: normalise and write
    __shared__ float s_inv[kGroup];
    if (threadIdx.x < gn) {
      const int g = threadIdx.x;
      const float M = s_m[g];
      float inv = 0.0f;
      if (M != -INFINITY) inv = 1.0f / (s_l[g] + (p.has_sink ? expf(ld_f(p.sink, h0 + g, 0, 0) - M) : 0.0f));
      s_inv[g] = inv;
    }
    __syncthreads();
    if (!p.rope) {
#pragma unroll
      for (int g = 0; g < kGroup; ++g) {
        if (g >= gn) break;
        if (own0) *y_at(p, d0, t, h0 + g) = v0[g] * s_inv[g];
        if (own1) *y_at(p, d1, t, h0 + g) = v1[g] * s_inv[g];
      }
      return;
    }
    // The rotation mixes dims other threads own: the rows through shared memory (qs: every copy
    // into it finished before the barrier above), then each element turned (rope.cuh).
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      if (g >= gn) break;
      if (own0) qs[g * D + d0] = v0[g] * s_inv[g];
      if (own1) qs[g * D + d1] = v1[g] * s_inv[g];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < gn * D; i += blockDim.x) {
      const int g = i / D, d = i % D;
      *y_at(p, d, t, h0 + g) = rope_elem(p.ra, qs + g * D, 1, D, d, s_cs, s_sn);
    }
    return;
  }

  // The partial result of this chunk, for attn_combine_kernel.
  const int64_t stride = int64_t(kGroup) * D + 2 * kGroup;
  float* mine = p.part + ((int64_t(t) * p.groups + grp) * p.chunks + c) * stride;
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    if (own0) mine[g * D + d0] = v0[g];
    if (own1) mine[g * D + d1] = v1[g];
  }
  if (threadIdx.x < kGroup) {
    mine[kGroup * D + threadIdx.x] = s_m[threadIdx.x];
    mine[kGroup * D + kGroup + threadIdx.x] = s_l[threadIdx.x];
  }
}

// One block per (head, token); a thread per 4 output dims (D % 4 == 0) or per dim. Each thread
// starts the loads of its first kFirst chunks' partial outputs, then reads every chunk's max and
// sum (the same few addresses for the whole block: L1), finds M, e^(m_c - M) and L itself, and
// sums. L = sum_c l_c e^(m_c - M) in chunk order, then + e^(sink - M).
constexpr int kFirst = 16;
__global__ void __launch_bounds__(kCombineThreads) attn_combine_kernel(attn_args p) {
  pdl_wait();
  __shared__ float ys[kMaxAttnDim];  // the output rotation: the row before it
  __shared__ float s_cs[kMaxAttnDim / 2], s_sn[kMaxAttnDim / 2];
  const int h = blockIdx.x, t = blockIdx.y, grp = h / kGroup, g = h % kGroup, D = p.D, C = p.chunks;
  const int64_t stride = int64_t(kGroup) * D + 2 * kGroup;
  const float* base = p.part + (int64_t(t) * p.groups + grp) * C * stride;
  const float* ml = base + kGroup * D + g;  // m_c at ml[c * stride], l_c at ml[c * stride + kGroup]
  const float* src = base + int64_t(g) * D;
  const bool vec = D % 4 == 0;  // 16-byte loads: stride and g * D are multiples of 4 floats
  const int per = vec ? D / 4 : D;
  bool angles = !p.rope;  // the rotation's angles made (once per thread, while its loads fly)
  for (int i = threadIdx.x; i < per; i += blockDim.x) {
    auto load = [&](int cc) {
      if (vec) return reinterpret_cast<const float4*>(src + cc * stride)[i];
      return make_float4(src[cc * stride + i], 0.0f, 0.0f, 0.0f);
    };
    float4 v[kFirst];
#pragma unroll
    for (int b = 0; b < kFirst; ++b) v[b] = b < C ? load(b) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (!angles) out_angles(p, t, s_cs, s_sn);
    angles = true;
    float M = -INFINITY;
    for (int cc = 0; cc < C; ++cc) M = fmaxf(M, ml[cc * stride]);
    float L = 0.0f;
    float4 y = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    auto add = [&](int cc, const float4& x) {
      const float m = ml[cc * stride];
      const float f = (M == -INFINITY || m == -INFINITY) ? 0.0f : expf(m - M);
      L += ml[cc * stride + kGroup] * f;
      y.x += x.x * f;
      y.y += x.y * f;
      y.z += x.z * f;
      y.w += x.w * f;
    };
#pragma unroll
    for (int b = 0; b < kFirst; ++b)
      if (b < C) add(b, v[b]);
    for (int c0 = kFirst; c0 < C; c0 += kBatch) {
      float4 w[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) w[b] = c0 + b < C ? load(c0 + b) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
      for (int b = 0; b < kBatch; ++b)
        if (c0 + b < C) add(c0 + b, w[b]);
    }
    float inv = 0.0f;
    if (M != -INFINITY) inv = 1.0f / (L + (p.has_sink ? expf(ld_f(p.sink, h, 0, 0) - M) : 0.0f));
    auto put = [&](int d, float v) {
      if (p.rope) ys[d] = v;
      else *y_at(p, d, t, h) = v;
    };
    if (vec) {
      const int d = 4 * i;
      put(d, y.x * inv);
      put(d + 1, y.y * inv);
      put(d + 2, y.z * inv);
      put(d + 3, y.w * inv);
    } else {
      put(i, y.x * inv);
    }
  }
  if (!p.rope) return;
  // The rotation mixes dims other threads made: the row through shared memory, then turned.
  if (!angles) out_angles(p, t, s_cs, s_sn);
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += blockDim.x) *y_at(p, d, t, h) = rope_elem(p.ra, ys, 1, D, d, s_cs, s_sn);
}

// Keys per chunk are a multiple of this. V4_ATTN_CHUNK_ROWS (a multiple of 4 in [4, 32]) replaces
// it, for measuring (32: whole tiles, as before the fourth session).
constexpr int kChunkRows = 8;
int chunk_rows() {
  static const int rows = [] {
    const char* e = std::getenv("V4_ATTN_CHUNK_ROWS");
    const int v = e ? std::atoi(e) : kChunkRows;
    return v >= 4 && v <= 32 && v % 4 == 0 ? v : kChunkRows;
  }();
  return rows;
}

struct device_info {
  int sms = 0;
  int smem_limit = 0;  // dynamic shared memory granted to attn_kernel
};
const device_info& info() {
  static const device_info i = [] {
    device_info r;
    int dev = 0, optin = 0;
    cudaGetDevice(&dev);
    if (cudaDeviceGetAttribute(&r.sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) r.sms = 1;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) optin = 48 << 10;
    cudaGetLastError();
    r.smem_limit = std::min(optin - (4 << 10), 160 << 10);  // room for the static shared arrays
    cudaFuncSetAttribute(attn_kernel<true, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, r.smem_limit);
    cudaFuncSetAttribute(attn_kernel<false, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, r.smem_limit);
    cudaFuncSetAttribute(attn_kernel<true, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, r.smem_limit);
    cudaFuncSetAttribute(attn_kernel<false, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, r.smem_limit);
    return r;
  }();
  return i;
}

}  // namespace

namespace {

// q, sink, y, scale and the shape of attn_mqa / attn_sparse (same source slots 0, 2, 3).
attn_args common_args(const tensor* dst, int64_t NK) {
  const tensor* q = dst->src[0];
  const tensor* mask = dst->src[2];
  const tensor* sink = dst->src[3];
  attn_args p{};
  p.q = view_of(q);
  p.mask = mask ? view_of(mask) : tview{};
  p.sink = sink ? view_of(sink) : tview{};
  p.y = view_of(dst);
  p.has_mask = mask != nullptr;
  p.has_sink = sink != nullptr;
  p.scale = dst->param_f(0);
  p.D = int(q->ne[0]);
  p.T = int(q->ne[1]);
  p.H = int(q->ne[2]);
  p.NK = int(NK);
  p.groups = (p.H + kGroup - 1) / kGroup;
  return p;
}
// The output rotation, when the node has positions (source slot pos_src).
void rope_args_into(attn_args& p, const tensor* dst, int pos_src) {
  const tensor* pos = dst->src[pos_src];
  p.rope = pos != nullptr;
  if (!p.rope) return;
  p.ra = rope_args_of(params::rope_of(dst, 1));
  p.pos = view_of(pos);
}

// Tiles, chunks and scratch for p, then the kernel (and the combine when there are chunks).
// vec: the kVec variant's conditions on the keys (attn_kernel); q's are checked here.
bool launch_attn(cudaStream_t s, attn_args& p, bool sparse, bool vec, const char* what, std::string* error) {
  if (p.D == 0 || p.T == 0 || p.H == 0) return true;
  if (p.D > 2 * kThreads) {
    *error = std::string("CUDA: ") + what + " with head dim " + std::to_string(p.D) + ": the kernel takes at most " +
             std::to_string(2 * kThreads) + " (run the op on the CPU)";
    return false;
  }
  const device_info& di = info();

  // Tile: the most key rows (<= 32) whose shared memory fits.
  // q, the key tile, e^(s - m), and up to kThreads / 32 slices of partial dots (attn_kernel).
  auto smem_for = [&](int tl) {
    return size_t(kGroup * p.D + tl * p.D + kGroup * tl + kThreads / 32 * kGroup * tl) * sizeof(float);
  };
  int max_tile = 32;
  while (max_tile > 1 && smem_for(max_tile) > size_t(di.smem_limit)) max_tile /= 2;
  if (smem_for(max_tile) > size_t(di.smem_limit)) {
    *error = std::string("CUDA: ") + what + " with head dim " + std::to_string(p.D) +
             " needs more shared memory than this GPU gives a block";
    return false;
  }
  // Chunks: about two blocks per SM (two fit at V4's sizes; more chunks would only lengthen the
  // combine), each a multiple of chunk_rows() keys: a short decode (window 128 + a few compressed
  // rows: 5-6 tiles of 32) still spreads over the GPU. The tile is then at most the chunk.
  const int quantum = std::min(chunk_rows(), max_tile);
  const int64_t pairs = int64_t(p.groups) * p.T, pieces = (int64_t(p.NK) + quantum - 1) / quantum;
  int64_t chunks = (2 * int64_t(di.sms) + pairs - 1) / pairs;
  chunks = std::max<int64_t>(1, std::min<int64_t>({chunks, kMaxChunks, pieces}));
  p.per_chunk = int((pieces + chunks - 1) / chunks) * quantum;
  p.chunks = p.NK == 0 ? 1 : int((p.NK + p.per_chunk - 1) / p.per_chunk);
  p.tile = p.per_chunk > 0 ? std::min(max_tile, p.per_chunk) : max_tile;
  if (p.chunks > 1) {
    const size_t part_bytes = size_t(pairs) * p.chunks * (size_t(kGroup) * p.D + 2 * kGroup) * sizeof(float);
    p.part = static_cast<float*>(scratch(s, 10, part_bytes, error));
    if (!p.part) return false;
  }
  const dim3 grid(unsigned(int64_t(p.T) * p.chunks), unsigned(p.groups));
  vec = vec && packed16(p.q, 2, p.D) && p.tile % 4 == 0;
  auto kernel = sparse ? (vec ? attn_kernel<true, true> : attn_kernel<false, true>)
                       : (vec ? attn_kernel<true, false> : attn_kernel<false, false>);
  launch(kernel, grid, kThreads, smem_for(p.tile), s, p);
  if (!launched(what, error)) return false;
  if (p.chunks == 1) return true;
  // chunks > 1 only when groups * T < 2 * SMs: T is small, the grid's y fits.
  launch(attn_combine_kernel, dim3(unsigned(p.H), unsigned(p.T)), kCombineThreads, 0, s, p);
  return launched(sparse ? "attn_sparse (combine)" : "attn_mqa (combine)", error);
}

// Rows of v readable four elements at a time (float4 / 8-byte loads) at every multiple of 4.
bool quads_ok(const tensor* v) {
  const size_t q = 4 * v->nb[0];
  return reinterpret_cast<uintptr_t>(v->data) % q == 0 && v->nb[1] % q == 0;
}
bool plain_type(const tensor* t) { return t->type == dtype::f32 || t->type == dtype::f16 || t->type == dtype::bf16; }

}  // namespace

bool launch_attn_mqa(cudaStream_t s, tensor* dst, std::string* error) {
  const tensor* kv = dst->src[1];
  attn_args p = common_args(dst, kv->ne[1]);
  rope_args_into(p, dst, 4);
  p.kv = view_of(kv);
  return launch_attn(s, p, false, packed16(p.kv, 1, p.D), "attn_mqa", error);
}

bool attn_sparse_supported(const tensor* dst) {
  const tensor* store = dst->src[4];
  const tensor* rest = dst->src[5];
  if (dst->ne[0] > kMaxAttnDim || !plain_type(dst->src[1]) || (rest && !plain_type(rest))) return false;
  if (!store || plain_type(store)) return true;
  return store->type == dtype::fp8_e4m3 && store->scales && store->scales->type == dtype::e8m0;
}

bool launch_attn_sparse(cudaStream_t s, tensor* dst, std::string* error) {
  const tensor* ring = dst->src[1];
  const tensor* mask = dst->src[2];
  const tensor* store = dst->src[4];
  const tensor* rest = dst->src[5];
  const tensor* ids = dst->src[6];
  const int64_t W = ring->ne[1], Rv = mask->ne[0] - W;
  attn_args p = common_args(dst, W + (ids ? ids->ne[0] : Rv));
  rope_args_into(p, dst, 7);
  p.ring = view_of(ring);
  p.W = int(W);
  p.Rv = int(Rv);
  p.nq = p.D;
  bool vec = p.D % 4 == 0 && quads_ok(ring);
  if (store) {
    p.store = view_of(store);
    p.compact = store->type == dtype::fp8_e4m3;
    p.nq = int(store->ne[0]);
    vec = vec && p.nq % 4 == 0 && quads_ok(store);
    if (p.compact) {
      if (!scales_readable(store, "attn_sparse", error)) return false;
      p.scales = view_of(store->scales);
      p.sb_k = store->scale_block[0];
      p.sb_rows = store->scale_block[1];
      p.sb_shift = -1;
      for (int b = 0; b < 31; ++b)
        if (p.sb_k == 1 << b) p.sb_shift = b;
    }
  }
  if (rest) {
    p.rest = view_of(rest);
    vec = vec && quads_ok(rest);
  }
  if (ids) {
    p.ids = view_of(ids);
    p.has_ids = true;
  }
  return launch_attn(s, p, true, vec, "attn_sparse", error);
}

}  // namespace v4::cuda

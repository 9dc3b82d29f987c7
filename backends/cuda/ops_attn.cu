// attn_mqa: H query heads over one shared set of K = V rows, with mask and sink (tensor/ops.h),
// in ONE launch: no score matrix leaves the chip.
//
// A block takes kGroup heads of one token and one chunk of the keys. The heads' queries and a
// tile of key rows sit in shared memory; each warp scores kRows key rows against every head of
// the group (lanes along D, shuffle reductions), an online softmax (running max, started at the
// sink, and running sum per head) rescales the accumulated sum of p * row, and the tile's rows
// are added. Keys are read once per head group, not once per head.
//
// The keys are split into C chunks of whole tiles (about two blocks per SM) so that a decode
// step (one token: 64 heads = 8 groups, 20 chunks of 32 rows) still fills the GPU: with C > 1 every block writes its partial (max, sum, unnormalised output) to
// scratch memory, and the last block of a (token, group) to finish (an atomic counter per pair)
// combines the C partials:  M = max m_c,  L = sum l_c e^(m_c - M) + e^(sink - M),
// y = sum acc_c e^(m_c - M) / L. It then resets the counter, so the next launch starts at zero.
// A query whose logits are all -inf and has no sink gets zeros, as the CPU.
//
// Numerics: f32 throughout, expf (within 2 ulp); the per-tile rescaling and the combine add a
// few roundings per chunk, inside the harness's bound (reference.cpp: ref_ATTN_MQA).
#include <algorithm>
#include <cmath>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace v4::cuda {
namespace {

constexpr int kGroup = 8;        // heads per block
constexpr int kThreads = 256;    // 8 warps
constexpr int kMaxChunks = 64;   // chunks per (token, group): bounds the combine's table
constexpr int kRows = 4;         // key rows a warp scores at once

struct attn_args {
  tview q, kv, mask, sink, y;
  bool has_mask, has_sink;
  float scale;
  int D, NK, H, T;
  int groups;     // ceil(H / kGroup)
  int chunks;     // C
  int per_chunk;  // keys per chunk
  int tile;       // key rows per tile in shared memory (<= 32: one lane per row in the softmax)
  float* part;    // [C, groups, T] x (kGroup*D acc, kGroup m, kGroup l), when chunks > 1
  unsigned* counters;  // [groups, T]
};

__device__ inline float ld_f(const tview& v, int64_t i0, int64_t i1, int64_t i2) {
  return *reinterpret_cast<const float*>(at(v, i0, i1, i2, 0));
}

// Copies nr rows of D floats (row r at base + r * row_stride bytes, elements elem_stride apart)
// into dst [nr][D] in shared memory with kBatch loads in flight per thread (16-byte loads when
// vec4: rows packed and 16-byte aligned, D % 4 == 0). Loads one after another would each wait
// for memory: that latency, not bandwidth, bounds a decode step.
constexpr int kBatch = 8;
__device__ inline void load_rows(float* dst, const char* base, int64_t row_stride, int64_t elem_stride, int nr, int D,
                                 bool vec4) {
  if (vec4) {
    const int per_row = D / 4, total = nr * per_row;
    for (int i0 = threadIdx.x; i0 < total; i0 += kBatch * blockDim.x) {
      float4 v[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const int i = i0 + b * blockDim.x;
        if (i < total)
          v[b] = *reinterpret_cast<const float4*>(base + int64_t(i / per_row) * row_stride + int64_t(i % per_row) * 16);
      }
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const int i = i0 + b * blockDim.x;
        if (i < total) reinterpret_cast<float4*>(dst)[i] = v[b];
      }
    }
    return;
  }
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

__device__ inline bool packed16(const tview& v, int stride_dim, int D) {
  return D % 4 == 0 && v.nb[0] == 4 && reinterpret_cast<uintptr_t>(v.data) % 16 == 0 && v.nb[stride_dim] % 16 == 0;
}

__global__ void __launch_bounds__(kThreads) attn_kernel(attn_args p) {
  pdl_wait();
  extern __shared__ float sm[];
  const int D = p.D, TL = p.tile;
  float* qs = sm;               // [kGroup][D]
  float* ks = qs + kGroup * D;  // [TL][D]
  float* acc = ks + TL * D;     // [kGroup][D]
  float* ps = acc + kGroup * D; // [kGroup][TL]
  __shared__ float s_m[kGroup], s_l[kGroup], s_alpha[kGroup];
  __shared__ float s_f[kMaxChunks * kGroup];
  __shared__ float s_mask[32];
  __shared__ bool s_last;

  const int t = blockIdx.x / p.chunks, c = blockIdx.x % p.chunks, grp = blockIdx.y;
  const int h0 = grp * kGroup, gn = min(kGroup, p.H - h0);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  const int j_begin = c * p.per_chunk, j_end = min(p.NK, j_begin + p.per_chunk);

  const bool q_vec = packed16(p.q, 2, D), kv_vec = packed16(p.kv, 1, D);
  load_rows(qs, at(p.q, 0, t, h0, 0), p.q.nb[2], p.q.nb[0], gn, D, q_vec);
  for (int i = gn * D + threadIdx.x; i < kGroup * D; i += blockDim.x) qs[i] = 0.0f;  // absent heads
  for (int i = threadIdx.x; i < kGroup * D; i += blockDim.x) acc[i] = 0.0f;
  for (int i = threadIdx.x; i < kGroup * TL; i += blockDim.x) ps[i] = 0.0f;  // heads >= gn stay 0
  if (threadIdx.x < kGroup) {
    const int g = threadIdx.x;
    s_m[g] = p.has_sink && g < gn ? ld_f(p.sink, h0 + g, 0, 0) : -INFINITY;
    s_l[g] = 0.0f;
    s_alpha[g] = 1.0f;
  }
  __syncthreads();

  for (int j0 = j_begin; j0 < j_end; j0 += TL) {
    const int n = min(TL, j_end - j0);
    load_rows(ks, at(p.kv, 0, j0, 0, 0), p.kv.nb[1], p.kv.nb[0], n, D, kv_vec);
    if (threadIdx.x < n) s_mask[threadIdx.x] = p.has_mask ? ld_f(p.mask, j0 + threadIdx.x, t, 0) : 0.0f;
    __syncthreads();
    // Scores: a warp per kRows key rows, against every head of the group at once (each query
    // value read from shared memory serves kRows rows, each row value kGroup heads).
    for (int jb = warp * kRows; jb < n; jb += n_warps * kRows) {
      float a[kRows][kGroup];
#pragma unroll
      for (int u = 0; u < kRows; ++u)
#pragma unroll
        for (int g = 0; g < kGroup; ++g) a[u][g] = 0.0f;
      for (int d = lane; d < D; d += 32) {
        float qv[kGroup];
#pragma unroll
        for (int g = 0; g < kGroup; ++g) qv[g] = qs[g * D + d];
#pragma unroll
        for (int u = 0; u < kRows; ++u) {
          const float kd = jb + u < n ? ks[(jb + u) * D + d] : 0.0f;
#pragma unroll
          for (int g = 0; g < kGroup; ++g) a[u][g] += qv[g] * kd;
        }
      }
#pragma unroll
      for (int u = 0; u < kRows; ++u)
#pragma unroll
        for (int g = 0; g < kGroup; ++g) a[u][g] = warp_sum(a[u][g]);
      if (lane == 0)
        for (int u = 0; u < kRows && jb + u < n; ++u)
          for (int g = 0; g < gn; ++g) ps[g * TL + jb + u] = a[u][g] * p.scale + s_mask[jb + u];
    }
    __syncthreads();
    // Online softmax: a warp per head, a lane per key row of the tile.
    for (int g = warp; g < gn; g += n_warps) {
      const float s = lane < n ? ps[g * TL + lane] : -INFINITY;
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
    // acc = acc * alpha + sum_j p_j * row_j; a thread owns dims d0 and d0 + blockDim (no races),
    // each p_j read from shared memory serving both.
    for (int d0 = threadIdx.x; d0 < D; d0 += 2 * blockDim.x) {
      const int d1 = d0 + blockDim.x;
      const bool two = d1 < D;
      float v0[kGroup], v1[kGroup];
#pragma unroll
      for (int g = 0; g < kGroup; ++g) {
        v0[g] = acc[g * D + d0] * s_alpha[g];
        v1[g] = two ? acc[g * D + d1] * s_alpha[g] : 0.0f;
      }
      for (int j = 0; j < n; ++j) {
        const float k0 = ks[j * D + d0], k1 = two ? ks[j * D + d1] : 0.0f;
#pragma unroll
        for (int g = 0; g < kGroup; ++g) {
          const float pj = ps[g * TL + j];
          v0[g] += pj * k0;
          v1[g] += pj * k1;
        }
      }
#pragma unroll
      for (int g = 0; g < kGroup; ++g) {
        acc[g * D + d0] = v0[g];
        if (two) acc[g * D + d1] = v1[g];
      }
    }
    __syncthreads();
  }

  if (p.chunks == 1) {  // the whole row in this block: normalise and write
    for (int i = threadIdx.x; i < gn * D; i += blockDim.x) {
      const int g = i / D, d = i % D;
      const float M = s_m[g];
      float y = 0.0f;
      if (M != -INFINITY) {
        const float L = s_l[g] + (p.has_sink ? expf(ld_f(p.sink, h0 + g, 0, 0) - M) : 0.0f);
        y = acc[i] * (1.0f / L);
      }
      *reinterpret_cast<float*>(at(p.y, d, t, h0 + g, 0)) = y;
    }
    return;
  }

  // Partial result of this chunk, then the last block of (t, grp) combines.
  const int64_t stride = int64_t(kGroup) * D + 2 * kGroup;
  auto part_of = [&](int cc) { return p.part + ((int64_t(t) * p.groups + grp) * p.chunks + cc) * stride; };
  float* mine = part_of(c);
  for (int i = threadIdx.x; i < kGroup * D; i += blockDim.x) mine[i] = acc[i];
  if (threadIdx.x < kGroup) {
    mine[kGroup * D + threadIdx.x] = s_m[threadIdx.x];
    mine[kGroup * D + kGroup + threadIdx.x] = s_l[threadIdx.x];
  }
  __threadfence();
  __syncthreads();
  unsigned* counter = p.counters + int64_t(t) * p.groups + grp;
  if (threadIdx.x == 0) s_last = atomicAdd(counter, 1u) == unsigned(p.chunks - 1);
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  // Per head (a warp each, a lane per chunk: chunks <= 64): M, the chunks' factors e^(m_c - M)
  // and 1 / L.
  for (int g = warp; g < gn; g += n_warps) {
    float m[2], l[2];
    for (int u = 0; u < 2; ++u) {
      const int cc = lane + 32 * u;
      m[u] = cc < p.chunks ? __ldcg(part_of(cc) + kGroup * D + g) : -INFINITY;
      l[u] = cc < p.chunks ? __ldcg(part_of(cc) + kGroup * D + kGroup + g) : 0.0f;
    }
    const float M = warp_max(fmaxf(m[0], m[1]));
    float L = 0.0f;
    for (int u = 0; u < 2; ++u) {
      const int cc = lane + 32 * u;
      const float f = (M == -INFINITY || m[u] == -INFINITY) ? 0.0f : expf(m[u] - M);
      if (cc < p.chunks) s_f[cc * kGroup + g] = f;
      L += l[u] * f;
    }
    L = warp_sum(L);
    if (lane == 0) {
      if (M != -INFINITY && p.has_sink) L += expf(ld_f(p.sink, h0 + g, 0, 0) - M);
      s_l[g] = M == -INFINITY ? 0.0f : 1.0f / L;
    }
  }
  __syncthreads();
  if (D % 4 == 0) {  // 16-byte loads, 4 outputs x 4 chunks in flight (the combine is latency-bound)
    constexpr int kOut = 4;
    const int total4 = gn * D / 4;
    for (int o0 = threadIdx.x; o0 < total4; o0 += kOut * blockDim.x) {
      float4 y[kOut];
#pragma unroll
      for (int u = 0; u < kOut; ++u) y[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
      for (int cc = 0; cc < p.chunks; ++cc) {
        const float4* src = reinterpret_cast<const float4*>(part_of(cc));
        float4 v[kOut];
#pragma unroll
        for (int u = 0; u < kOut; ++u) {
          const int o = o0 + u * blockDim.x;
          v[u] = o < total4 ? __ldcg(src + o) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
        for (int u = 0; u < kOut; ++u) {
          const int o = o0 + u * blockDim.x;
          const float f = o < total4 ? s_f[cc * kGroup + 4 * o / D] : 0.0f;
          y[u].x += v[u].x * f;
          y[u].y += v[u].y * f;
          y[u].z += v[u].z * f;
          y[u].w += v[u].w * f;
        }
      }
#pragma unroll
      for (int u = 0; u < kOut; ++u) {
        const int o = o0 + u * blockDim.x;
        if (o >= total4) continue;
        const int g = 4 * o / D, d = 4 * o % D;
        const float inv = s_l[g];
        *reinterpret_cast<float*>(at(p.y, d, t, h0 + g, 0)) = y[u].x * inv;
        *reinterpret_cast<float*>(at(p.y, d + 1, t, h0 + g, 0)) = y[u].y * inv;
        *reinterpret_cast<float*>(at(p.y, d + 2, t, h0 + g, 0)) = y[u].z * inv;
        *reinterpret_cast<float*>(at(p.y, d + 3, t, h0 + g, 0)) = y[u].w * inv;
      }
    }
  } else {
    for (int i = threadIdx.x; i < gn * D; i += blockDim.x) {
      const int g = i / D, d = i % D;
      float y = 0.0f;
      for (int cc = 0; cc < p.chunks; ++cc) y += __ldcg(part_of(cc) + i) * s_f[cc * kGroup + g];
      *reinterpret_cast<float*>(at(p.y, d, t, h0 + g, 0)) = y * s_l[g];
    }
  }
  if (threadIdx.x == 0) *counter = 0;
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
    cudaFuncSetAttribute(attn_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, r.smem_limit);
    return r;
  }();
  return i;
}

}  // namespace

bool launch_attn_mqa(cudaStream_t s, tensor* dst, std::string* error) {
  const tensor* q = dst->src[0];
  const tensor* kv = dst->src[1];
  const tensor* mask = dst->src[2];
  const tensor* sink = dst->src[3];
  attn_args p{};
  p.q = view_of(q);
  p.kv = view_of(kv);
  p.mask = mask ? view_of(mask) : tview{};
  p.sink = sink ? view_of(sink) : tview{};
  p.y = view_of(dst);
  p.has_mask = mask != nullptr;
  p.has_sink = sink != nullptr;
  p.scale = dst->param_f(0);
  p.D = int(q->ne[0]);
  p.T = int(q->ne[1]);
  p.H = int(q->ne[2]);
  p.NK = int(kv->ne[1]);
  p.groups = (p.H + kGroup - 1) / kGroup;
  if (p.D == 0 || p.T == 0 || p.H == 0) return true;
  const device_info& di = info();

  // Tile: the most key rows (<= 32) whose shared memory fits.
  auto smem_for = [&](int tl) { return size_t(2 * kGroup * p.D + tl * p.D + kGroup * tl) * sizeof(float); };
  p.tile = 32;
  while (p.tile > 1 && smem_for(p.tile) > size_t(di.smem_limit)) p.tile /= 2;
  if (smem_for(p.tile) > size_t(di.smem_limit)) {
    *error = "CUDA: attn_mqa with head dim " + std::to_string(p.D) + " needs more shared memory than this GPU gives a block";
    return false;
  }
  // Chunks: whole tiles each, about two blocks per SM (two fit at V4's sizes); more chunks would
  // only lengthen the combine.
  const int64_t pairs = int64_t(p.groups) * p.T, tiles = (int64_t(p.NK) + p.tile - 1) / p.tile;
  int64_t chunks = (2 * int64_t(di.sms) + pairs - 1) / pairs;
  chunks = std::max<int64_t>(1, std::min<int64_t>({chunks, kMaxChunks, tiles}));
  p.per_chunk = int((tiles + chunks - 1) / chunks) * p.tile;
  p.chunks = p.NK == 0 ? 1 : int((p.NK + p.per_chunk - 1) / p.per_chunk);
  if (p.chunks > 1) {
    const size_t part_bytes = size_t(pairs) * p.chunks * (size_t(kGroup) * p.D + 2 * kGroup) * sizeof(float);
    p.part = static_cast<float*>(scratch(s, 10, part_bytes, error));
    p.counters = static_cast<unsigned*>(scratch(s, 11, size_t(pairs) * sizeof(unsigned), error));
    if (!p.part || !p.counters) return false;
  }
  const dim3 grid(unsigned(int64_t(p.T) * p.chunks), unsigned(p.groups));
  launch(attn_kernel, grid, kThreads, smem_for(p.tile), s, p);
  return launched("attn_mqa", error);
}

}  // namespace v4::cuda

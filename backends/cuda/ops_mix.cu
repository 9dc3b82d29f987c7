// Mixing ops: hadamard (Walsh-Hadamard over dim 0) and sinkhorn (mHC's doubly-stochastic
// matrices), per tensor/ops.h.
//
// hadamard: one block per row, the row in shared memory, log2(n) rounds of butterflies
// (Sylvester order: span 1, 2, 4, ...), then the scale; n <= kMaxHadamard (supports_op).
// sinkhorn: one thread per n x n matrix (n = 4 in V4), working in the result's own memory, in
// the CPU kernel's order of operations (softmax over k, + eps, column, then row/column rounds).
#include <cmath>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/quant_round.cuh"
#include "tensor/ops.h"

namespace v4::cuda {
namespace {

__global__ void hadamard_kernel(tview y, tview a, float scale, int64_t rows) {
  pdl_wait();
  extern __shared__ float v[];
  const int64_t n = a.ne[0];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t i1 = r % a.ne[1], i2 = (r / a.ne[1]) % a.ne[2], i3 = r / (a.ne[1] * a.ne[2]);
    const char* x = at(a, 0, i1, i2, i3);
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) v[k] = *reinterpret_cast<const float*>(x + k * a.nb[0]);
    __syncthreads();
    for (int64_t h = 1; h < n; h *= 2) {
      for (int64_t i = threadIdx.x; i < n / 2; i += blockDim.x) {
        const int64_t j = (i / h) * 2 * h + i % h;
        const float u = v[j], w = v[j + h];
        v[j] = u + w;
        v[j + h] = u - w;
      }
      __syncthreads();
    }
    char* out = at(y, 0, i1, i2, i3);
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) *reinterpret_cast<float*>(out + k * y.nb[0]) = v[k] * scale;
    __syncthreads();  // v is reused by the next row
  }
}

__global__ void sinkhorn_kernel(tview y, tview a, int iters, float eps, int64_t mats) {
  pdl_wait();
  const int64_t n = a.ne[0];
  for (int64_t m = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; m < mats; m += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i2 = m % a.ne[2], i3 = m / a.ne[2];
    float* c = reinterpret_cast<float*>(at(y, 0, 0, i2, i3));  // contiguous [n, n]: c[j * n + k]
    auto in = [&](int64_t k, int64_t j) { return *reinterpret_cast<const float*>(at(a, k, j, i2, i3)); };
    for (int64_t j = 0; j < n; ++j) {  // softmax over k of each j, + eps
      float mx = -INFINITY;
      for (int64_t k = 0; k < n; ++k) mx = fmaxf(mx, in(k, j));
      float s = 0.0f;
      for (int64_t k = 0; k < n; ++k) s += c[j * n + k] = expf(in(k, j) - mx);
      for (int64_t k = 0; k < n; ++k) c[j * n + k] = c[j * n + k] / s + eps;
    }
    for (int it = 0; it < iters; ++it) {
      if (it > 0)
        for (int64_t j = 0; j < n; ++j) {  // rows: over k, for each j
          float s = 0.0f;
          for (int64_t k = 0; k < n; ++k) s += c[j * n + k];
          s += eps;
          for (int64_t k = 0; k < n; ++k) c[j * n + k] /= s;
        }
      for (int64_t k = 0; k < n; ++k) {  // columns: over j, for each k
        float s = 0.0f;
        for (int64_t j = 0; j < n; ++j) s += c[j * n + k];
        s += eps;
        for (int64_t j = 0; j < n; ++j) c[j * n + k] /= s;
      }
    }
  }
}

// n = 4 (V4's mHC): 16 lanes per matrix, lane l holds c[j][k] with j = l / 4, k = l % 4. Every
// sum is formed by one lane from the four values it gathers by shuffles, in the order the CPU
// kernel adds them, and every lane divides its own element: the same operations in the same order
// as sinkhorn_kernel (the same results), but a chain of 20 rounds of 4 divisions instead of 64.
// The 16 lanes' part: lane l = 4 j + k holds element (k, j) = v of its matrix; returns C[k, j].
__device__ inline float sinkhorn4_lanes(float v, int j, int k, int iters, float eps) {
  auto lane_of = [](int jj, int kk) { return jj * 4 + kk; };
  float mx = -INFINITY;
  for (int kk = 0; kk < 4; ++kk) mx = fmaxf(mx, __shfl_sync(0xffffffffu, v, lane_of(j, kk), 16));
  const float e = expf(v - mx);
  float s = 0.0f;
  for (int kk = 0; kk < 4; ++kk) s += __shfl_sync(0xffffffffu, e, lane_of(j, kk), 16);
  float c = e / s + eps;
  for (int it = 0; it < iters; ++it) {
    if (it > 0) {  // rows: over k, for each j
      float r = 0.0f;
      for (int kk = 0; kk < 4; ++kk) r += __shfl_sync(0xffffffffu, c, lane_of(j, kk), 16);
      r += eps;
      c /= r;
    }
    float col = 0.0f;  // columns: over j, for each k
    for (int jj = 0; jj < 4; ++jj) col += __shfl_sync(0xffffffffu, c, lane_of(jj, k), 16);
    col += eps;
    c /= col;
  }
  return c;
}

__global__ void sinkhorn4_kernel(tview y, tview a, int iters, float eps, int64_t mats) {
  pdl_wait();
  const int l = threadIdx.x % 16, j = l / 4, k = l % 4;
  const int64_t m = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 16;
  const bool live = m < mats;  // dead lanes still take part in the shuffles
  const int64_t i2 = live ? m % a.ne[2] : 0, i3 = live ? m / a.ne[2] : 0;
  const float v = live ? *reinterpret_cast<const float*>(at(a, k, j, i2, i3)) : 0.0f;
  const float c = sinkhorn4_lanes(v, j, k, iters, eps);
  if (live) reinterpret_cast<float*>(at(y, 0, 0, i2, i3))[j * 4 + k] = c;
}

// hc_mix for n = 4 (tensor/ops.h), 16 lanes per token: every lane one element of the comb matrix
// (the sinkhorn above), lanes 0-3 also pre[k], lanes 4-7 post[k], with the unfused kernels'
// operations (scale = one fused multiply-add, add, sigmoid in double), so the same bits. One token:
// m its mix row, out its result row; every lane of the warp calls it (dead lanes with live false
// still take part in the shuffles). Shared by hc_mix and hc_pre's finishing kernel.
// pre[k] = sigmoid(m s0 + b) + eps, as hc_mix computes it (hc_pre's finishing kernel computes the
// pre weights it needs with it, without waiting for the Sinkhorn rounds).
__device__ inline float hc_pre_weight(float m, float s0, float b, float eps) {
  const float z = __fadd_rn(__fmaf_rn(m, s0, 0.0f), b);
  return __fmaf_rn(float(sigmoid_d(z)), 1.0f, eps);
}

__device__ inline void hc_mix4_token(const float* m, const float* base, float s0, float s1, float s2, int iters,
                                     float eps, float* out, bool live) {
  constexpr int n = 4;
  const int l = threadIdx.x % 16, j = l / 4, k = l % 4;
  const float a = live ? __fadd_rn(__fmaf_rn(m[2 * n + j * n + k], s2, 0.0f), base[2 * n + j * n + k]) : 0.0f;
  const float c = sinkhorn4_lanes(a, j, k, iters, eps);
  if (!live) return;
  out[n + k * (n + 1) + 1 + j] = c;
  if (l < n) {
    out[l] = hc_pre_weight(m[l], s0, base[l], eps);
  } else if (l < 2 * n) {
    const int kk = l - n;
    const float z = __fadd_rn(__fmaf_rn(m[n + kk], s1, 0.0f), base[n + kk]);
    out[n + kk * (n + 1)] = __fmaf_rn(float(sigmoid_d(z)), 2.0f, 0.0f);
  }
}

__global__ void hc_mix4_kernel(tview y, tview mix, const float* base, float s0, float s1, float s2, int iters,
                               float eps, int64_t rows) {
  pdl_wait();
  const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 16;
  const bool live = r < rows;
  const int64_t i1 = live ? r % mix.ne[1] : 0, i2 = live ? (r / mix.ne[1]) % mix.ne[2] : 0,
                i3 = live ? r / (mix.ne[1] * mix.ne[2]) : 0;
  const float* m = reinterpret_cast<const float*>(at(mix, 0, i1, i2, i3));
  float* out = reinterpret_cast<float*>(at(y, 0, i1, i2, i3));
  hc_mix4_token(m, base, s0, s1, s2, iters, eps, out, live);
}

// ---- hc_pre (tensor/ops.h): mHC's pre chain in two kernels ----------------------------------------
// 1. hc_pre_part_kernel, grid (K / 256, T): thread kk of K = HC*D takes one element S[kk] of the
//    token's flattened streams: with post it computes it (hc_post_kernel's operations, so hc_post's
//    bits) and stores it in the S region, else it reads X. Each block then writes its partials: the
//    sum of S^2 and the M = 24 dot products fn[m] . S over its 256 elements (fn's rows are loaded
//    before pdl_wait: weights). Every partial is a fixed-order sum (warp shuffles, then the warps).
// 2. hc_pre_finish_kernel, one block per token: adds each partial over the blocks in order, so
//    mix[m] = (fn[m] . S) / sqrt(mean(S^2) + eps) (the norm's factor applied to the dot product: the
//    same value as the chain's dot of the normalised row, within the matmul's bound), hc_mix for the
//    token (hc_mix4_token: hc_mix's bits from those values), hc_sum into shared memory (hc_sum's
//    operations), rms_norm_w (its sum of squares in its own order), and with an fp8 block the round
//    trip of u by warps over runs (quant_round.cuh fp8_run: fp8_roundtrip's bits of those values).
// The partials live in scratch (ops_scratch.cu slot kHcPreSlot); nothing is accumulated with atomics.
constexpr int kHcPreThreads = 256;    // elements per block of kernel 1
constexpr int kHcPreM = 24;           // (2 + HC) HC for HC = 4 (supports_op)
constexpr int kHcPreParts = kHcPreM + 1;  // partials per block: sum of squares, then the M dots
constexpr int kHcPreFinishThreads = 1024;
constexpr int kHcPreSlot = 30;

template <bool kPost>
__global__ void hc_pre_part_kernel(float* S_out, tview X, tview f, tview wp, const float* fn, int64_t fn_row,
                                   bool fn_is_weight, float* part) {
  constexpr int HC = 4;
  const int64_t D = X.ne[0], K = HC * D, t = blockIdx.y;
  const int64_t kk = int64_t(blockIdx.x) * kHcPreThreads + threadIdx.x;
  const bool live = kk < K;
  float w_fn[kHcPreM];
  auto load_fn = [&] {
#pragma unroll
    for (int m = 0; m < kHcPreM; ++m) w_fn[m] = live ? fn[m * fn_row + kk] : 0.0f;
  };
  if (fn_is_weight) load_fn();  // a weight: no kernel writes it, so before the wait (common.cuh)
  pdl_wait();
  if (!fn_is_weight) load_fn();
  float v = 0.0f;
  if (live) {
    const int64_t d = kk % D, k = kk / D;
    if constexpr (kPost) {
      auto w = [&](int64_t i) { return *reinterpret_cast<const float*>(at(wp, i, k, wp.ne[2] == 1 ? 0 : t, 0)); };
      float acc = __fmaf_rn(*reinterpret_cast<const float*>(at(X, d, 0, t, 0)), w(1), 0.0f);
#pragma unroll
      for (int j = 1; j < HC; ++j) acc = __fmaf_rn(*reinterpret_cast<const float*>(at(X, d, j, t, 0)), w(1 + j), acc);
      v = __fadd_rn(__fmaf_rn(*reinterpret_cast<const float*>(at(f, d, t, 0, 0)), w(0), 0.0f), acc);
      S_out[t * K + kk] = v;
    } else {
      v = *reinterpret_cast<const float*>(at(X, d, k, t, 0));
    }
  }
  __shared__ float sh[kHcPreThreads / 32][kHcPreParts];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float r = warp_sum(v * v);
  if (lane == 0) sh[warp][0] = r;
#pragma unroll
  for (int m = 0; m < kHcPreM; ++m) {
    r = warp_sum(w_fn[m] * v);
    if (lane == 0) sh[warp][1 + m] = r;
  }
  __syncthreads();
  if (threadIdx.x < kHcPreParts) {
    float total = 0.0f;
    for (int i = 0; i < kHcPreThreads / 32; ++i) total += sh[i][threadIdx.x];
    part[(t * gridDim.x + blockIdx.x) * kHcPreParts + threadIdx.x] = total;
  }
}

struct hc_pre_args {
  float s0, s1, s2, hc_eps, rms_eps;
  int iters, fp8_block, blocks;  // blocks: kernel 1's blocks per token
};

// Grid (T, 2): per token, block y = 1 writes W (hc_mix4_token: 20 Sinkhorn rounds on one warp) and
// the padding, while block y = 0 computes pre itself (hc_pre_weight, the same bits as W's pre) and
// goes on to u and q without waiting for the rounds. Both add up the partials in the same order.
// S: the streams as [D, HC, T] (the S region or X); out: the node's output; base, norm: f32 rows.
__global__ void hc_pre_finish_kernel(tview S, float* out, const float* base, const float* norm, const float* part,
                                     hc_pre_args a, hc_pre_layout l) {
  constexpr int HC = 4;
  pdl_wait();
  extern __shared__ float summed[];  // [D]: hc_sum's row
  __shared__ float tot[kHcPreParts], mix[kHcPreM], pre[HC], red[kHcPreFinishThreads / 32];
  const int64_t D = S.ne[0], t = blockIdx.x;
  const int warps = int(blockDim.x) / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // The partials over the blocks: one warp per value, lanes striding the blocks, then a warp sum.
  for (int i = warp; i < kHcPreParts; i += warps) {
    float acc = 0.0f;
    for (int b = lane; b < a.blocks; b += 32) acc += part[(t * a.blocks + b) * kHcPreParts + i];
    acc = warp_sum(acc);
    if (lane == 0) tot[i] = acc;
  }
  __syncthreads();
  if (threadIdx.x < kHcPreM) {
    const float s = 1.0f / sqrtf(tot[0] / float(HC * D) + a.rms_eps);  // rms_norm's factor
    mix[threadIdx.x] = __fmul_rn(tot[1 + threadIdx.x], s);
  }
  __syncthreads();
  if (blockIdx.y == 1) {
    if (warp == 0) hc_mix4_token(mix, base, a.s0, a.s1, a.s2, a.iters, a.hc_eps, out + l.w + t * kHcPreM, lane < 16);
    if (t == 0) {  // the padding between the regions: zeros (tensor/ops.h)
      const int64_t from[4] = {l.s + (l.post ? l.D * l.HC * l.T : 0), l.u + l.D * l.T, l.q + (l.fp8 ? l.D * l.T : 0),
                               l.w + l.M * l.T};
      const int64_t to[4] = {l.u, l.q, l.w, l.total};
      for (int g = 0; g < 4; ++g)
        for (int64_t i = from[g] + threadIdx.x; i < to[g]; i += blockDim.x) out[i] = 0.0f;
    }
    return;
  }
  if (threadIdx.x < HC) pre[threadIdx.x] = hc_pre_weight(mix[threadIdx.x], a.s0, base[threadIdx.x], a.hc_eps);
  __syncthreads();
  // hc_sum into shared memory, and its row's sum of squares.
  float ss = 0.0f;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < HC; ++j) acc = __fadd_rn(acc, __fmaf_rn(*reinterpret_cast<const float*>(at(S, d, j, t, 0)), pre[j], 0.0f));
    summed[d] = acc;
    ss += acc * acc;
  }
  ss = warp_sum(ss);
  if (lane == 0) red[warp] = ss;
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < warps; ++i) total += red[i];
  const float s = 1.0f / sqrtf(total / float(D) + a.rms_eps);  // rms_norm_w's factor
  float* u = out + l.u + t * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) u[d] = __fmul_rn(__fmul_rn(summed[d], s), norm[d]);
  if (a.fp8_block > 0) {
    float* q = out + l.q + t * D;
    for (int64_t k0 = int64_t(warp) * a.fp8_block; k0 < D; k0 += int64_t(warps) * a.fp8_block)
      qround::fp8_run(
          k0, k0 + a.fp8_block < D ? k0 + a.fp8_block : D, lane,
          [&](int64_t k) { return __fmul_rn(__fmul_rn(summed[k], s), norm[k]); },
          [&](int64_t k, float v) { q[k] = v; });
  }
}

}  // namespace

bool launch_hadamard(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), a = view_of(dst->src[0]);
  const int64_t n = a.ne[0], rows = dst->nrows();
  if (rows == 0) return true;
  const int threads = int(n / 2 < 32 ? 32 : (n / 2 > 1024 ? 1024 : n / 2));
  const unsigned blocks = unsigned(rows < 65535 ? rows : 65535);
  launch(hadamard_kernel, blocks, threads, size_t(n) * sizeof(float), s, y, a, dst->param_f(0), rows);
  return launched("hadamard", error);
}

bool launch_hc_mix(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), mix = view_of(dst->src[0]);
  const int64_t rows = dst->nrows();
  if (rows == 0) return true;
  const int64_t blocks = (rows * 16 + kBlock - 1) / kBlock;
  launch(hc_mix4_kernel, unsigned(blocks), kBlock, 0, s, y, mix, static_cast<const float*>(dst->src[1]->data),
                                                     dst->param_f(0), dst->param_f(1), dst->param_f(2),
                                                     dst->param_i(3), dst->param_f(4), rows);
  return launched("hc_mix", error);
}

bool launch_sinkhorn(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), a = view_of(dst->src[0]);
  const int64_t mats = a.ne[2] * a.ne[3];
  if (mats == 0) return true;
  if (a.ne[0] == 4) {
    const int64_t blocks = (mats * 16 + kBlock - 1) / kBlock;
    launch(sinkhorn4_kernel, unsigned(blocks), kBlock, 0, s, y, a, dst->param_i(0), dst->param_f(1), mats);
  } else {
    launch(sinkhorn_kernel, grid_for(mats, 64), 64, 0, s, y, a, dst->param_i(0), dst->param_f(1), mats);
  }
  return launched("sinkhorn", error);
}

// hc_pre on the GPU: HC = 4 (hc_mix's 16-lane kernel), fn f32 with contiguous rows, hc_sum's row in
// shared memory (D <= kHcPreMaxD), and X / f / w_post readable element by element (any strides).
constexpr int64_t kHcPreMaxD = 8192;  // 32 KiB of shared memory (the static arrays fit beside it under 48)
bool hc_pre_supported(const tensor* dst) {
  const tensor* X = dst->src[0];
  return X->ne[1] == 4 && X->ne[0] <= kHcPreMaxD && dst->src[1]->type == dtype::f32;
}

bool launch_hc_pre(cudaStream_t s, tensor* dst, std::string* error) {
  const hc_pre_layout l = hc_pre_layout_of(dst);
  if (l.T == 0 || l.D == 0) return true;
  const tensor* fn = dst->src[1];
  float* out = static_cast<float*>(dst->data);
  const int64_t K = l.HC * l.D, blocks = (K + kHcPreThreads - 1) / kHcPreThreads;
  float* part = static_cast<float*>(scratch(s, kHcPreSlot, size_t(blocks * l.T * kHcPreParts) * sizeof(float), error));
  if (!part) return false;
  const tview X = view_of(dst->src[0]);
  const dim3 grid1(unsigned(blocks), unsigned(l.T));
  const float* fn_data = static_cast<const float*>(fn->data);
  const int64_t fn_row = int64_t(fn->nb[1] / sizeof(float));
  const bool fn_is_weight = (fn->base()->flags & kFlagWeight) != 0;
  tview S = X;
  if (l.post) {
    const tview f = view_of(dst->src[4]), wp = view_of(dst->src[5]);
    launch(hc_pre_part_kernel<true>, grid1, kHcPreThreads, 0, s, out + l.s, X, f, wp, fn_data, fn_row, fn_is_weight, part);
    S.data = reinterpret_cast<char*>(out + l.s);  // the S region: [D, HC, T] contiguous
    S.nb[0] = sizeof(float);
    S.nb[1] = S.nb[0] * l.D;
    S.nb[2] = S.nb[1] * l.HC;
    S.nb[3] = S.nb[2] * l.T;
  } else {
    launch(hc_pre_part_kernel<false>, grid1, kHcPreThreads, 0, s, out, X, X, X, fn_data, fn_row, fn_is_weight, part);
  }
  hc_pre_args a{};
  a.s0 = dst->param_f(0), a.s1 = dst->param_f(1), a.s2 = dst->param_f(2);
  a.iters = dst->param_i(3), a.hc_eps = dst->param_f(4), a.rms_eps = dst->param_f(5);
  a.fp8_block = dst->param_i(6), a.blocks = int(blocks);
  launch(hc_pre_finish_kernel, dim3(unsigned(l.T), 2), kHcPreFinishThreads, size_t(l.D) * sizeof(float), s, S, out,
         static_cast<const float*>(dst->src[2]->data), static_cast<const float*>(dst->src[3]->data), part, a, l);
  return launched("hc_pre", error);
}

}  // namespace v4::cuda

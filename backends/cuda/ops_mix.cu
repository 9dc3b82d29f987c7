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
// operations (scale = one fused multiply-add, add, sigmoid in double), so the same bits.
__global__ void hc_mix4_kernel(tview y, tview mix, const float* base, float s0, float s1, float s2, int iters,
                               float eps, int64_t rows) {
  pdl_wait();
  constexpr int n = 4;
  const int l = threadIdx.x % 16, j = l / 4, k = l % 4;
  const int64_t r = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 16;
  const bool live = r < rows;
  const int64_t i1 = live ? r % mix.ne[1] : 0, i2 = live ? (r / mix.ne[1]) % mix.ne[2] : 0,
                i3 = live ? r / (mix.ne[1] * mix.ne[2]) : 0;
  const float* m = reinterpret_cast<const float*>(at(mix, 0, i1, i2, i3));
  float* out = reinterpret_cast<float*>(at(y, 0, i1, i2, i3));
  const float a = live ? __fadd_rn(__fmaf_rn(m[2 * n + j * n + k], s2, 0.0f), base[2 * n + j * n + k]) : 0.0f;
  const float c = sinkhorn4_lanes(a, j, k, iters, eps);
  if (!live) return;
  out[n + k * (n + 1) + 1 + j] = c;
  if (l < n) {
    const float z = __fadd_rn(__fmaf_rn(m[l], s0, 0.0f), base[l]);
    out[l] = __fmaf_rn(float(sigmoid_d(z)), 1.0f, eps);
  } else if (l < 2 * n) {
    const int kk = l - n;
    const float z = __fadd_rn(__fmaf_rn(m[n + kk], s1, 0.0f), base[n + kk]);
    out[n + kk * (n + 1)] = __fmaf_rn(float(sigmoid_d(z)), 2.0f, 0.0f);
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

}  // namespace v4::cuda

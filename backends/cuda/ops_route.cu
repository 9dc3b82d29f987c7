// The MoE router's fused ops: route_topk, route_weights (tensor/ops.h). At decode they replace eight
// kernels of a few microseconds each (softplus, sqrt, add, top_k, gather, sum, div, scale) on a row
// of a few hundred logits by two.
//
//   route_topk: one block per token. Each thread scores its experts, s = sqrt(softplus(x)) + bias,
//     as the softplus, sqrt and add kernels compute them (ops_elementwise.cu), and stores one rank
//     key per expert in shared memory (rank.cuh: top_k's order and tie rule, keys all distinct).
//     Then the rank of each key is the number of keys above it: a key of rank j < k writes its
//     expert to output j. O(E^2 / threads) shared-memory reads, each broadcast to the warp and
//     pipelined (E = 256 with 256 threads: 256 loads per thread), and no sort.
//   route_weights: one warp per token, a lane per chosen expert: w_j = sqrt(softplus(logit[ids_j])),
//     their warp sum, then w_j / sum and fma(w, scale, 0) (as div and scale). The result may differ
//     from the CPU's through softplus and the sum's order (within ops/reference.cpp's bounds).
#include <cmath>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/rank.cuh"

namespace v4::cuda {
namespace {

// softplus as the SOFTPLUS kernel: x above PyTorch's threshold 20, else log1p(exp(x)) in double.
__device__ inline float softplus_f(float x) { return x > 20.0f ? x : float(::log1p(::exp(double(x)))); }

__global__ void route_topk_kernel(tview y, tview logits, tview bias, int k) {
  pdl_wait();
  extern __shared__ uint64_t keys[];  // [E]
  const int64_t r = blockIdx.x, E = logits.ne[0];
  const int64_t i1 = r % y.ne[1], i2 = (r / y.ne[1]) % y.ne[2], i3 = r / (y.ne[1] * y.ne[2]);
  const char* x = at(logits, 0, i1, i2, i3);
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    float s = sqrtf(softplus_f(*reinterpret_cast<const float*>(x + e * logits.nb[0])));  // correctly rounded sqrt
    if (bias.data) s = s + *reinterpret_cast<const float*>(bias.data + e * bias.nb[0]);
    keys[e] = make_key(s, e, true);
  }
  __syncthreads();
  const int n = int(E);
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    const uint64_t mine = keys[e];
    // No early exit: unrolled, the loads of one thread are independent and pipeline (a loop that
    // stops at k would wait on each load in turn).
    int above = 0;
#pragma unroll 8
    for (int j = 0; j < n; ++j) above += keys[j] > mine ? 1 : 0;
    if (above < k) *reinterpret_cast<int32_t*>(at(y, above, i1, i2, i3)) = int32_t(e);
  }
}

// One warp per token: lane j takes the chosen experts j, j + 32, ...; their loads and softplus run
// side by side, then one warp sum.
__global__ void route_weights_kernel(tview y, tview logits, tview ids, bool normalize, float scale, int64_t rows) {
  pdl_wait();
  const int lane = threadIdx.x % 32;
  const int64_t k = y.ne[0];
  const int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int64_t n_warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t r = warp; r < rows; r += n_warps) {  // the same r for all lanes: the warp sum sees all 32
    const int64_t i1 = r % y.ne[1], i2 = (r / y.ne[1]) % y.ne[2], i3 = r / (y.ne[1] * y.ne[2]);
    const char* x = at(logits, 0, i1, i2, i3);
    float part = 0.0f;
    for (int64_t j = lane; j < k; j += 32) {
      const int32_t e = *reinterpret_cast<const int32_t*>(at(ids, j, i1, i2, i3));
      const float w = sqrtf(softplus_f(*reinterpret_cast<const float*>(x + e * logits.nb[0])));
      *reinterpret_cast<float*>(at(y, j, i1, i2, i3)) = w;
      part += w;
    }
    const float total = warp_sum(part);
    for (int64_t j = lane; j < k; j += 32) {
      float* p = reinterpret_cast<float*>(at(y, j, i1, i2, i3));
      const float w = normalize ? *p / total : *p;  // IEEE division
      *p = __fmaf_rn(w, scale, 0.0f);             // one rounding, as the scale op
    }
  }
}

}  // namespace

bool launch_route_topk(cudaStream_t s, tensor* dst, std::string* error) {
  const tensor* logits = dst->src[0];
  const int64_t E = logits->ne[0], rows = dst->nrows();
  if (rows == 0) return true;
  const tview bias = dst->src[1] ? view_of(dst->src[1]) : tview{};
  // One thread per expert up to 1024 (whole warps); the keys take E * 8 bytes (<= 32 KiB).
  const int threads = E >= 1024 ? 1024 : int((E + 31) / 32 * 32);
  launch(route_topk_kernel, dim3(unsigned(rows)), threads, size_t(E) * 8, s, view_of(dst), view_of(logits), bias,
         dst->param_i(0));
  return launched("route_topk", error);
}

bool launch_route_weights(cudaStream_t s, tensor* dst, std::string* error) {
  const int64_t rows = dst->nrows();
  if (rows == 0) return true;
  constexpr int kThreads = 128;  // 4 tokens per block
  launch(route_weights_kernel, grid_for(rows * 32, kThreads), kThreads, 0, s, view_of(dst), view_of(dst->src[0]),
         view_of(dst->src[1]), dst->param_i(0) != 0, dst->param_f(1), rows);
  return launched("route_weights", error);
}

}  // namespace v4::cuda

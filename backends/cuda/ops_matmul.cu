// matmul (tensor/ops.h): w [K, M, Bw2, Bw3] f32/f16/bf16 with packed rows, x f32 [K, N, B2, B3]
// with packed rows, y f32 [M, N, B2, B3]; w broadcast over batches. One warp per result element:
// lanes stride along K, products and sums in f32 (x is not rounded), a shuffle reduction at the
// end. A first, plain kernel: correct for every shape; tiled / tensor-core kernels come later.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace v4::cuda {
namespace {

template <int WT>
__global__ void matmul_kernel(tview y, tview w, tview x, int64_t n_out) {
  const int lane = threadIdx.x % 32;
  const int64_t K = x.ne[0];
  const int64_t r2 = x.ne[2] / w.ne[2], r3 = x.ne[3] / w.ne[3];  // batch broadcast ratios
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t o = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; o < n_out; o += warps) {
    int64_t idx[4];
    unravel(o, y.ne, idx);  // (m, n, b2, b3)
    const char* wr = at(w, 0, idx[0], idx[2] / r2, idx[3] / r3);
    const float* xr = reinterpret_cast<const float*>(at(x, 0, idx[1], idx[2], idx[3]));
    float acc = 0.0f;
    for (int64_t k = lane; k < K; k += 32) {
      float wv;
      if constexpr (WT == kF32) wv = reinterpret_cast<const float*>(wr)[k];
      else if constexpr (WT == kF16) wv = __half2float(reinterpret_cast<const __half*>(wr)[k]);
      else wv = __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(wr)[k]);
      acc += wv * xr[k];
    }
    acc = warp_sum(acc);
    if (lane == 0) *reinterpret_cast<float*>(at(y, idx)) = acc;
  }
}

}  // namespace

bool launch_matmul(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), w = view_of(dst->src[0]), x = view_of(dst->src[1]);
  const int64_t n_out = n_elements(y);
  const unsigned grid = grid_for(n_out * 32);
  switch (dst->src[0]->type) {
    case dtype::f32: matmul_kernel<kF32><<<grid, kBlock, 0, s>>>(y, w, x, n_out); break;
    case dtype::f16: matmul_kernel<kF16><<<grid, kBlock, 0, s>>>(y, w, x, n_out); break;
    case dtype::bf16: matmul_kernel<kBF16><<<grid, kBlock, 0, s>>>(y, w, x, n_out); break;
    default:
      *error = std::string("CUDA: matmul has no kernel for weights of type ") + type_name(dst->src[0]->type);
      return false;
  }
  return launched("matmul", error);
}

}  // namespace v4::cuda

// Reductions and row normalisations: sum/max over any dim, rms_norm, softmax (scale, mask, sink).
// rms_norm and softmax give one warp to each row (lanes stride along dim 0, then a shuffle
// reduction; rms_norm of a few long rows: a block per row); sum/max give one thread to each result element.
#include <cmath>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace v4::cuda {
namespace {

template <bool kMax>
__global__ void reduce_kernel(tview y, tview a, int dim, int64_t n) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t idx[4];
    unravel(i, y.ne, idx);  // idx[dim] == 0
    const char* p = at(a, idx);
    // max of numbers, as the CPU (NaN propagation is not promised by tensor/ops.h).
    float acc = kMax ? -INFINITY : 0.0f;
    for (int64_t k = 0; k < a.ne[dim]; ++k) {
      const float v = *reinterpret_cast<const float*>(p + k * a.nb[dim]);
      if constexpr (kMax) acc = v > acc ? v : acc;
      else acc += v;
    }
    *reinterpret_cast<float*>(at(y, idx)) = acc;
  }
}

// Global warp index and warp count of a grid-stride loop over rows.
__device__ inline int64_t warp_id() { return (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; }
__device__ inline int64_t warp_count() { return int64_t(gridDim.x) * blockDim.x / 32; }

__global__ void rms_norm_kernel(tview y, tview a, float eps, int64_t rows) {
  pdl_wait();
  const int lane = threadIdx.x % 32;
  const int64_t n = a.ne[0];
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const int64_t i1 = r % a.ne[1], i2 = (r / a.ne[1]) % a.ne[2], i3 = r / (a.ne[1] * a.ne[2]);
    const char* x = at(a, 0, i1, i2, i3);
    float ss = 0.0f;
    for (int64_t k = lane; k < n; k += 32) {
      const float v = *reinterpret_cast<const float*>(x + k * a.nb[0]);
      ss += v * v;
    }
    ss = warp_sum(ss);
    const float scale = 1.0f / sqrtf(ss / float(n) + eps);
    char* out = at(y, 0, i1, i2, i3);
    for (int64_t k = lane; k < n; k += 32)
      *reinterpret_cast<float*>(out + k * y.nb[0]) = *reinterpret_cast<const float*>(x + k * a.nb[0]) * scale;
  }
}

// rms_norm of few long rows (mHC normalises one row of 4 x hidden = 16384 per token): one block
// per row, the block's warps' sums added in a fixed order. kVec: rows contiguous and 16-byte
// aligned, read as float4 (four loads in flight per thread).
constexpr int kRowThreads = 1024;
template <bool kVec>
__global__ void rms_norm_row_kernel(tview y, tview a, float eps) {
  pdl_wait();
  __shared__ float part[kRowThreads / 32];
  __shared__ float scale_s;
  const int64_t r = blockIdx.x, n = a.ne[0];
  const int64_t i1 = r % a.ne[1], i2 = (r / a.ne[1]) % a.ne[2], i3 = r / (a.ne[1] * a.ne[2]);
  const char* x = at(a, 0, i1, i2, i3);
  char* out = at(y, 0, i1, i2, i3);
  float ss = 0.0f;
  if constexpr (kVec) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
#pragma unroll 4
    for (int64_t k = threadIdx.x; k < n / 4; k += blockDim.x) {
      const float4 v = x4[k];
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  } else {
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      const float v = *reinterpret_cast<const float*>(x + k * a.nb[0]);
      ss += v * v;
    }
  }
  ss = warp_sum(ss);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x == 0) {
    float sum = 0.0f;
    for (int w = 0; w < kRowThreads / 32; ++w) sum += part[w];
    scale_s = 1.0f / sqrtf(sum / float(n) + eps);
  }
  __syncthreads();
  const float scale = scale_s;
  if constexpr (kVec) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* y4 = reinterpret_cast<float4*>(out);
#pragma unroll 4
    for (int64_t k = threadIdx.x; k < n / 4; k += blockDim.x) {
      const float4 v = x4[k];
      y4[k] = make_float4(v.x * scale, v.y * scale, v.z * scale, v.w * scale);
    }
  } else {
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x)
      *reinterpret_cast<float*>(out + k * y.nb[0]) = *reinterpret_cast<const float*>(x + k * a.nb[0]) * scale;
  }
}

// Softmax of one row per warp, per tensor/ops.h: z_j = a_j * scale + mask, M = max(max z, sink),
// p_j = exp(z_j - M) / (sum exp(z_j - M) + exp(sink - M)); all -inf and no sink: zeros.
__global__ void softmax_kernel(tview y, tview a, tview mask, bool has_mask, tview sink, bool has_sink, float scale,
                               int64_t rows) {
  pdl_wait();
  const int lane = threadIdx.x % 32;
  const int64_t n = a.ne[0];
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const int64_t i1 = r % a.ne[1], i2 = (r / a.ne[1]) % a.ne[2], i3 = r / (a.ne[1] * a.ne[2]);
    const char* x = at(a, 0, i1, i2, i3);
    const char* m = has_mask ? at(mask, 0, mask.ne[1] == 1 ? 0 : i1, mask.ne[2] == 1 ? 0 : i2,
                                  mask.ne[3] == 1 ? 0 : i3)
                             : nullptr;
    auto logit = [&](int64_t j) {
      const float z = *reinterpret_cast<const float*>(x + j * a.nb[0]) * scale;
      return m ? z + *reinterpret_cast<const float*>(m + j * mask.nb[0]) : z;
    };
    float M = -INFINITY;
    for (int64_t j = lane; j < n; j += 32) M = fmaxf(M, logit(j));
    M = warp_max(M);
    const float sk = has_sink ? *reinterpret_cast<const float*>(sink.data + i2 * sink.nb[0]) : -INFINITY;
    M = fmaxf(M, sk);
    char* out = at(y, 0, i1, i2, i3);
    if (M == -INFINITY) {  // every logit -inf and no (finite) sink
      for (int64_t j = lane; j < n; j += 32) *reinterpret_cast<float*>(out + j * y.nb[0]) = 0.0f;
      continue;
    }
    float S = 0.0f;
    for (int64_t j = lane; j < n; j += 32) {
      const float z = logit(j);
      S += z == -INFINITY ? 0.0f : expf(z - M);
    }
    S = warp_sum(S);
    if (has_sink) S += expf(sk - M);
    for (int64_t j = lane; j < n; j += 32) {
      const float z = logit(j);
      *reinterpret_cast<float*>(out + j * y.nb[0]) = (z == -INFINITY ? 0.0f : expf(z - M)) / S;
    }
  }
}

}  // namespace

bool launch_reduce(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), a = view_of(dst->src[0]);
  const int dim = dst->param_i(0);
  const int64_t n = n_elements(y);
  if (dst->op == op_kind::MAX) launch(reduce_kernel<true>, grid_for(n), kBlock, 0, s, y, a, dim, n);
  else launch(reduce_kernel<false>, grid_for(n), kBlock, 0, s, y, a, dim, n);
  return launched(op_name(dst->op), error);
}

bool launch_rms_norm(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), a = view_of(dst->src[0]);
  const int64_t rows = dst->nrows();
  // A warp per row while there are enough rows to fill the GPU, else a block per row.
  const bool vec = a.nb[0] == 4 && y.nb[0] == 4 && a.ne[0] % 4 == 0 &&
                   ((reinterpret_cast<uintptr_t>(a.data) | reinterpret_cast<uintptr_t>(y.data)) & 15) == 0 &&
                   a.nb[1] % 16 == 0 && a.nb[2] % 16 == 0 && a.nb[3] % 16 == 0 && y.nb[1] % 16 == 0 &&
                   y.nb[2] % 16 == 0 && y.nb[3] % 16 == 0;
  if (a.ne[0] >= 2048 && rows <= 4096 && vec)
    launch(rms_norm_row_kernel<true>, unsigned(rows), kRowThreads, 0, s, y, a, dst->param_f(0));
  else if (a.ne[0] >= 2048 && rows <= 4096)
    launch(rms_norm_row_kernel<false>, unsigned(rows), kRowThreads, 0, s, y, a, dst->param_f(0));
  else launch(rms_norm_kernel, grid_for(rows * 32), kBlock, 0, s, y, a, dst->param_f(0), rows);
  return launched("rms_norm", error);
}

bool launch_softmax(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), a = view_of(dst->src[0]);
  const tensor* mask = dst->src[1];
  const tensor* sink = dst->src[2];
  const tview mv = mask ? view_of(mask) : tview{};
  const tview sv = sink ? view_of(sink) : tview{};
  const int64_t rows = dst->nrows();
  launch(softmax_kernel, grid_for(rows * 32), kBlock, 0, s, y, a, mv, mask != nullptr, sv, sink != nullptr,
                                                        dst->param_f(0), rows);
  return launched("softmax", error);
}

}  // namespace v4::cuda

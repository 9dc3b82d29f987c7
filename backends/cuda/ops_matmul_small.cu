// small_k and split_row matmul kernels: see matmul_small.cuh.
#include "backends/cuda/matmul_small.cuh"

namespace v4::cuda {
namespace {

constexpr int kSmallK = 32;          // longest K small_k takes
constexpr int64_t kSplitRows = 256;  // most (weight row, job) pairs split_row takes
constexpr int64_t kSplitMinK = 1024;
constexpr int kSplitThreads = 1024;
constexpr int kTallM = 8;        // weight rows per split_tall block
constexpr int kTallN = 8;        // x rows per split_tall block
constexpr int kTallThreads = 256;

// Thread i of job blockIdx.y computes output (m = i % M, r = i / M): consecutive threads write
// consecutive y of one row.
__global__ void small_k_kernel(int type, mm_weights W, mm_rows rd) {
  pdl_wait();
  const mm_job jb = job_of(W, rd, blockIdx.y);
  const int64_t n = W.M * jb.count;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t m = i % W.M, r = i / W.M;
    const char* wrow = jb.w + m * W.nb1;
    const uint8_t* srow = jb.s ? jb.s + (m / W.sb_m) * W.s_nb1 : nullptr;
    const float* x;
    float* y;
    row_ptrs(rd, jb, r, &x, &y);
    float acc = 0.0f;
    for (int64_t k = 0; k < W.K; ++k) acc = fmaf(weight_at(type, wrow, srow, W.sb_k, k), x[k], acc);
    y[m] = acc;
  }
}

// Bytes of one weight row of K elements (q8_0: 34-byte blocks of 32; mxfp4 two per byte).
__device__ inline int64_t row_bytes_of(int type, int64_t K) {
  switch (type) {
    case kF32: return K * 4;
    case kF16:
    case kBF16: return K * 2;
    case kFP8: return K;
    case kMXFP4: return (K + 1) / 2;
    case kQ8_0: return (K + 31) / 32 * 34;
    default: return 0;
  }
}

// Block (m, job): threads stride K, then warp sums and one fixed-order sum over the warps.
// kVecF32: f32 weights and x rows 16-byte aligned with K % 4 == 0, read as float4.
// Before pdl_wait() (MATMUL only: the weights are known from the parameters; matmul_id's expert
// comes from ids) the block prefetches the first pf_block bytes of its row into L2, one line per
// thread (rows need not be aligned here).
template <bool kVecF32>
__global__ void split_row_kernel(int type, mm_weights W, mm_rows rd, int pf_block) {
  __shared__ float part[kSplitThreads / 32];
  const int64_t m = blockIdx.x;
  if (rd.mode == 0) {
    const mm_job jb0 = job_of(W, rd, blockIdx.y);
    const int64_t row_bytes = row_bytes_of(type, W.K), bytes = row_bytes < pf_block ? row_bytes : int64_t(pf_block);
    const char* wrow0 = jb0.w + m * W.nb1;
    // Lines from the one holding the row's first byte (the row need not start a line).
    const int64_t lead = reinterpret_cast<uintptr_t>(wrow0) & 127;
    for (int64_t b = int64_t(threadIdx.x) * 128 - lead; b < bytes; b += int64_t(blockDim.x) * 128)
      prefetch_l2_line(wrow0 + (b > 0 ? b : 0));
    if (jb0.s && threadIdx.x == 0) prefetch_l2_line(jb0.s + (m / W.sb_m) * W.s_nb1);
  }
  pdl_wait();
  const mm_job jb = job_of(W, rd, blockIdx.y);
  if (jb.count == 0) return;
  const char* wrow = jb.w + m * W.nb1;
  const uint8_t* srow = jb.s ? jb.s + (m / W.sb_m) * W.s_nb1 : nullptr;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t r = 0; r < jb.count; ++r) {
    const float* x;
    float* y;
    row_ptrs(rd, jb, r, &x, &y);
    float acc = 0.0f;
    if constexpr (kVecF32) {
      const float4* w4 = reinterpret_cast<const float4*>(wrow);
      const float4* x4 = reinterpret_cast<const float4*>(x);
#pragma unroll 4
      for (int64_t k = threadIdx.x; k < W.K / 4; k += blockDim.x) {
        const float4 a = w4[k], b = x4[k];
        acc = fmaf(a.x, b.x, acc);
        acc = fmaf(a.y, b.y, acc);
        acc = fmaf(a.z, b.z, acc);
        acc = fmaf(a.w, b.w, acc);
      }
    } else {
      for (int64_t k = threadIdx.x; k < W.K; k += blockDim.x)
        acc = fmaf(weight_at(type, wrow, srow, W.sb_k, k), x[k], acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) part[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
      float sum = 0.0f;
      for (int w = 0; w < kSplitThreads / 32; ++w) sum += part[w];
      y[m] = sum;
    }
    __syncthreads();  // part is reused by the next row
  }
}

// Block (weight-row tile, x-row tile, job): kTallM weight rows x kTallN x rows over all of K. Each
// thread takes every kTallThreads-th k (a float4 of k with kVecF32) and keeps the tile's
// kTallM x kTallN products in registers, so each weight and x value it loads serves kTallN or
// kTallM FMAs; then warp sums and one fixed-order sum over the warps per output (deterministic).
// Rows past M or the job's count are clamped to the last one for loading and not written.
template <bool kVecF32>
__global__ void __launch_bounds__(kTallThreads) split_tall_kernel(int type, mm_weights W, mm_rows rd) {
  __shared__ float part[kTallThreads / 32][kTallM * kTallN];
  pdl_wait();
  const mm_job jb = job_of(W, rd, blockIdx.z);
  const int64_t m0 = int64_t(blockIdx.x) * kTallM, r0 = int64_t(blockIdx.y) * kTallN;
  if (jb.count <= r0) return;
  const char* wrow[kTallM];
  const uint8_t* srow[kTallM];
  const float* x[kTallN];
  float* y[kTallN];
#pragma unroll
  for (int i = 0; i < kTallM; ++i) {
    const int64_t m = m0 + i < W.M ? m0 + i : W.M - 1;
    wrow[i] = jb.w + m * W.nb1;
    srow[i] = jb.s ? jb.s + (m / W.sb_m) * W.s_nb1 : nullptr;
  }
#pragma unroll
  for (int j = 0; j < kTallN; ++j) row_ptrs(rd, jb, r0 + j < jb.count ? r0 + j : jb.count - 1, &x[j], &y[j]);
  float acc[kTallM][kTallN] = {};
  if constexpr (kVecF32) {
    for (int64_t k = threadIdx.x; k < W.K / 4; k += kTallThreads) {
      float4 xv[kTallN];
#pragma unroll
      for (int j = 0; j < kTallN; ++j) xv[j] = reinterpret_cast<const float4*>(x[j])[k];
#pragma unroll
      for (int i = 0; i < kTallM; ++i) {
        const float4 wv = reinterpret_cast<const float4*>(wrow[i])[k];
#pragma unroll
        for (int j = 0; j < kTallN; ++j) {
          acc[i][j] = fmaf(wv.x, xv[j].x, acc[i][j]);
          acc[i][j] = fmaf(wv.y, xv[j].y, acc[i][j]);
          acc[i][j] = fmaf(wv.z, xv[j].z, acc[i][j]);
          acc[i][j] = fmaf(wv.w, xv[j].w, acc[i][j]);
        }
      }
    }
  } else {
    for (int64_t k = threadIdx.x; k < W.K; k += kTallThreads) {
      float xv[kTallN];
#pragma unroll
      for (int j = 0; j < kTallN; ++j) xv[j] = x[j][k];
#pragma unroll
      for (int i = 0; i < kTallM; ++i) {
        const float wv = weight_at(type, wrow[i], srow[i], W.sb_k, k);
#pragma unroll
        for (int j = 0; j < kTallN; ++j) acc[i][j] = fmaf(wv, xv[j], acc[i][j]);
      }
    }
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int i = 0; i < kTallM; ++i)
#pragma unroll
    for (int j = 0; j < kTallN; ++j) {
      const float v = warp_sum(acc[i][j]);
      if (lane == 0) part[warp][i * kTallN + j] = v;
    }
  __syncthreads();
  if (threadIdx.x < kTallM * kTallN) {
    const int i = threadIdx.x / kTallN, j = threadIdx.x % kTallN;
    if (m0 + i < W.M && r0 + j < jb.count) {
      float sum = 0.0f;
      for (int w = 0; w < kTallThreads / 32; ++w) sum += part[w][threadIdx.x];
      y[j][m0 + i] = sum;
    }
  }
}

}  // namespace

bool small_k_wanted(const mm_weights& W, int64_t max_rows, unsigned jobs) {
  return W.K <= kSmallK && W.M * max_rows * int64_t(jobs) >= 1024;
}

void launch_small_k(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t max_rows) {
  const dim3 grid(grid_for(W.M * max_rows), jobs);
  launch(small_k_kernel, grid, kBlock, 0, s, int(wt), W, rd);
}

bool split_row_wanted(const mm_weights& W, int64_t max_rows, unsigned jobs) {
  return W.M * int64_t(jobs) <= kSplitRows && W.K >= kSplitMinK && max_rows <= 16;
}

bool split_tall_wanted(const mm_weights& W, const mm_rows& rd, int64_t max_rows, unsigned jobs) {
  return rd.mode == 0 && W.M * int64_t(jobs) <= kSplitRows && W.K >= kSplitMinK && max_rows > 16 &&
         jobs <= 65535 && (max_rows + kTallN - 1) / kTallN <= 65535;
}

void launch_split_tall(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs,
                       int64_t max_rows, bool aligned) {
  const dim3 grid(unsigned((W.M + kTallM - 1) / kTallM), unsigned((max_rows + kTallN - 1) / kTallN), jobs);
  if (wt == dtype::f32 && aligned && W.K % 4 == 0)
    launch(split_tall_kernel<true>, grid, kTallThreads, 0, s, int(wt), W, rd);
  else launch(split_tall_kernel<false>, grid, kTallThreads, 0, s, int(wt), W, rd);
}

void launch_split_row(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, bool aligned) {
  const dim3 grid(unsigned(W.M), jobs);
  const int pf_block = matmul_prefetch_bytes(W.nb1 * W.M * int64_t(jobs)) * 8;
  if (wt == dtype::f32 && aligned && W.K % 4 == 0)
    launch(split_row_kernel<true>, grid, kSplitThreads, 0, s, int(wt), W, rd, pf_block);
  else launch(split_row_kernel<false>, grid, kSplitThreads, 0, s, int(wt), W, rd, pf_block);
}

}  // namespace v4::cuda

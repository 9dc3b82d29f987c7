// Fused ops of the decode graph (tensor/ops.h): rms_norm_w, swiglu, hc_sum, hc_post. One kernel
// each, parallel over dim 0 (d): consecutive threads take consecutive elements (or float4 groups
// where every row involved is 16-byte aligned and packed), so loads and stores coalesce. The
// arithmetic is the order tensor/ops.h states, written with explicit roundings (__fmul_rn,
// __fadd_rn, __fmaf_rn: nvcc contracts nothing), so hc_sum, hc_post and swiglu give the CPU's bits;
// rms_norm_w's sum of squares is added in its own order (within the reference's bound).
// rms_norm_w's and swiglu's optional FP8 rounding of their output (fp8 block > 0): one warp per
// run of the block, its amax a warp reduction, the rounding quant_round.cuh's (fp8_roundtrip's bits).
// Every kernel calls pdl_wait() first (common.cuh: programmatic dependent launch).
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/quant_round.cuh"

namespace v4::cuda {
namespace {

// A view whose rows can be read as float4: packed along dim 0, base and every stride 16-byte aligned.
bool rows_vec4(const tview& v) {
  return v.nb[0] == 4 && v.ne[0] % 4 == 0 && (reinterpret_cast<uintptr_t>(v.data) & 15) == 0 && v.nb[1] % 16 == 0 &&
         v.nb[2] % 16 == 0 && v.nb[3] % 16 == 0;
}

// Strides of a broadcast source: 0 along every dim where it has size 1, so at() repeats it.
tview bcast(tview v) {
  for (int d = 0; d < 4; ++d)
    if (v.ne[d] == 1) v.nb[d] = 0;
  return v;
}

__device__ inline float ld(const tview& v, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
  return *reinterpret_cast<const float*>(at(v, i0, i1, i2, i3));
}
__device__ inline float4 ld4(const tview& v, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
  return *reinterpret_cast<const float4*>(at(v, i0, i1, i2, i3));
}

// ---- rms_norm_w: one block per row (grid-stride over rows) ----------------------------------------
// The block's threads stride the row (float4 groups when kVec), each warp's partial sum of squares
// goes to shared memory and every thread adds the warps' sums in the same order (the same scale).
// With an fp8 block, the block's warps then take the row's runs (quant_round.cuh fp8_run), each
// computing its run's values from the source (the same two products).
constexpr int kMaxNormThreads = 1024;

template <bool kVec>
__global__ void rms_norm_w_kernel(tview y, tview a, tview w, float eps, int fp8_block, int64_t rows) {
  pdl_wait();
  __shared__ float part[kMaxNormThreads / 32];
  const int64_t n = a.ne[0];
  const int warps = int(blockDim.x) / 32;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t i1 = r % a.ne[1], i2 = (r / a.ne[1]) % a.ne[2], i3 = r / (a.ne[1] * a.ne[2]);
    float ss = 0.0f;
    if constexpr (kVec) {
      for (int64_t k = threadIdx.x; k < n / 4; k += blockDim.x) {
        const float4 v = ld4(a, 4 * k, i1, i2, i3);
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
      }
    } else {
      for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
        const float v = ld(a, k, i1, i2, i3);
        ss += v * v;
      }
    }
    ss = warp_sum(ss);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < warps; ++i) total += part[i];
    __syncthreads();  // part is written again by the next row
    const float s = 1.0f / sqrtf(total / float(n) + eps);  // IEEE sqrt and division (nvcc defaults)
    if (fp8_block > 0) {
      const int lane = threadIdx.x % 32;
      for (int64_t k0 = int64_t(threadIdx.x / 32) * fp8_block; k0 < n; k0 += int64_t(warps) * fp8_block)
        qround::fp8_run(
            k0, k0 + fp8_block < n ? k0 + fp8_block : n, lane,
            [&](int64_t k) { return __fmul_rn(__fmul_rn(ld(a, k, i1, i2, i3), s), ld(w, k, 0, 0, 0)); },
            [&](int64_t k, float v) { *reinterpret_cast<float*>(at(y, k, i1, i2, i3)) = v; });
    } else if constexpr (kVec) {
      for (int64_t k = threadIdx.x; k < n / 4; k += blockDim.x) {
        const float4 v = ld4(a, 4 * k, i1, i2, i3), g = ld4(w, 4 * k, 0, 0, 0);
        *reinterpret_cast<float4*>(at(y, 4 * k, i1, i2, i3)) =
            make_float4(__fmul_rn(__fmul_rn(v.x, s), g.x), __fmul_rn(__fmul_rn(v.y, s), g.y),
                        __fmul_rn(__fmul_rn(v.z, s), g.z), __fmul_rn(__fmul_rn(v.w, s), g.w));
      }
    } else {
      for (int64_t k = threadIdx.x; k < n; k += blockDim.x)
        *reinterpret_cast<float*>(at(y, k, i1, i2, i3)) = __fmul_rn(__fmul_rn(ld(a, k, i1, i2, i3), s), ld(w, k, 0, 0, 0));
    }
  }
}

// ---- swiglu: elementwise over [I, R1, R2, R3] --------------------------------------------------------
// silu as the unary kernel computes it (ops_elementwise.cu: in double; silu(-inf) = -0); the clamps
// as the clamp kernel's comparisons (a NaN passes through).
__device__ inline float swiglu1(float g, float u, float limit, bool clamped) {
  if (clamped) {
    g = g > limit ? limit : g;
    u = u < -limit ? -limit : u > limit ? limit : u;
  }
  const float s = g == -INFINITY ? -0.0f : float(double(g) * sigmoid_d(g));
  return __fmul_rn(s, u);
}

// Item e: kW consecutive elements of one row (kW = 4: float4 loads and stores, rows packed).
template <int kW>
__global__ void swiglu_kernel(tview y, tview g, tview u, tview wts, bool has_wts, float limit, int64_t items) {
  pdl_wait();
  const bool clamped = limit > 0.0f;
  const int64_t per_row = y.ne[0] / kW;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < items; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i0 = (e % per_row) * kW, r = e / per_row;
    const int64_t i1 = r % y.ne[1], i2 = (r / y.ne[1]) % y.ne[2], i3 = r / (y.ne[1] * y.ne[2]);
    const float s = has_wts ? ld(wts, 0, i1, i2, i3) : 1.0f;
    if constexpr (kW == 4) {
      const float4 gv = ld4(g, i0, i1, i2, i3), uv = ld4(u, i0, i1, i2, i3);
      float4 h = make_float4(swiglu1(gv.x, uv.x, limit, clamped), swiglu1(gv.y, uv.y, limit, clamped),
                             swiglu1(gv.z, uv.z, limit, clamped), swiglu1(gv.w, uv.w, limit, clamped));
      if (has_wts) h = make_float4(__fmul_rn(h.x, s), __fmul_rn(h.y, s), __fmul_rn(h.z, s), __fmul_rn(h.w, s));
      *reinterpret_cast<float4*>(at(y, i0, i1, i2, i3)) = h;
    } else {
      float h = swiglu1(ld(g, i0, i1, i2, i3), ld(u, i0, i1, i2, i3), limit, clamped);
      if (has_wts) h = __fmul_rn(h, s);
      *reinterpret_cast<float*>(at(y, i0, i1, i2, i3)) = h;
    }
  }
}

// With an fp8 block: one warp per (row, run of the block), quant_round.cuh fp8_run.
__global__ void swiglu_fp8_kernel(tview y, tview g, tview u, tview wts, bool has_wts, float limit, int block,
                                  int64_t n_runs, int64_t items) {
  pdl_wait();
  const bool clamped = limit > 0.0f;
  const int lane = threadIdx.x % 32;
  const int64_t n = y.ne[0], warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t it = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; it < items; it += warps) {
    const int64_t r = it / n_runs, k0 = (it % n_runs) * block;
    const int64_t i1 = r % y.ne[1], i2 = (r / y.ne[1]) % y.ne[2], i3 = r / (y.ne[1] * y.ne[2]);
    const float s = has_wts ? ld(wts, 0, i1, i2, i3) : 1.0f;
    qround::fp8_run(
        k0, k0 + block < n ? k0 + block : n, lane,
        [&](int64_t k) {
          const float h = swiglu1(ld(g, k, i1, i2, i3), ld(u, k, i1, i2, i3), limit, clamped);
          return has_wts ? __fmul_rn(h, s) : h;
        },
        [&](int64_t k, float v) { *reinterpret_cast<float*>(at(y, k, i1, i2, i3)) = v; });
  }
}

// ---- hc_sum: y[d, t] = sum_j pre[j, t] X[d, j, t] ---------------------------------------------------
// Item e: kW consecutive d of one token. Products as the CPU's scale, fma(x, p, 0); the sum from +0.
__device__ inline float4 fma4(float4 x, float s, float4 acc) {
  return make_float4(__fmaf_rn(x.x, s, acc.x), __fmaf_rn(x.y, s, acc.y), __fmaf_rn(x.z, s, acc.z),
                     __fmaf_rn(x.w, s, acc.w));
}
__device__ inline float4 add4(float4 a, float4 b) {
  return make_float4(__fadd_rn(a.x, b.x), __fadd_rn(a.y, b.y), __fadd_rn(a.z, b.z), __fadd_rn(a.w, b.w));
}
__device__ inline float4 mul4(float4 x, float s) { return fma4(x, s, make_float4(0.0f, 0.0f, 0.0f, 0.0f)); }

template <int kW>
__global__ void hc_sum_kernel(tview y, tview X, tview pre, int64_t items) {
  pdl_wait();
  const int64_t per_t = X.ne[0] / kW, HC = X.ne[1];
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < items; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = (e % per_t) * kW, t = e / per_t;
    if constexpr (kW == 4) {
      float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      for (int64_t j = 0; j < HC; ++j) acc = add4(acc, mul4(ld4(X, d, j, t, 0), ld(pre, 0, j, t, 0)));
      *reinterpret_cast<float4*>(at(y, d, t, 0, 0)) = acc;
    } else {
      float acc = 0.0f;
      for (int64_t j = 0; j < HC; ++j) acc = __fadd_rn(acc, __fmaf_rn(ld(X, d, j, t, 0), ld(pre, 0, j, t, 0), 0.0f));
      *reinterpret_cast<float*>(at(y, d, t, 0, 0)) = acc;
    }
  }
}

// ---- hc_post: Y[d, k, t] = round(w[0, k] f[d]) + (mixing sum over j by FMA) -------------------------
// Item e: kW consecutive d of one token, all HC output streams: the HC streams' values are loaded
// once into registers (HC <= kMaxHcPost), f once; w is read per (j, k), the same address in every
// thread of a token (a broadcast from cache).
constexpr int kMaxHcPost = 8;

template <int kW>
__global__ void hc_post_kernel(tview y, tview f, tview X, tview w, int64_t items) {
  pdl_wait();
  using vec = typename std::conditional<kW == 4, float4, float>::type;
  const int64_t per_t = X.ne[0] / kW, HC = X.ne[1];
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < items; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = (e % per_t) * kW, t = e / per_t;
    vec xs[kMaxHcPost];
#pragma unroll
    for (int j = 0; j < kMaxHcPost; ++j)
      if (j < HC) {
        if constexpr (kW == 4) xs[j] = ld4(X, d, j, t, 0);
        else xs[j] = ld(X, d, j, t, 0);
      }
    vec fv;
    if constexpr (kW == 4) fv = ld4(f, d, t, 0, 0);
    else fv = ld(f, d, t, 0, 0);
    for (int64_t k = 0; k < HC; ++k) {
      vec acc;
      if constexpr (kW == 4) {
        acc = mul4(xs[0], ld(w, 1, k, t, 0));
#pragma unroll
        for (int j = 1; j < kMaxHcPost; ++j)
          if (j < HC) acc = fma4(xs[j], ld(w, 1 + j, k, t, 0), acc);
        *reinterpret_cast<float4*>(at(y, d, k, t, 0)) = add4(mul4(fv, ld(w, 0, k, t, 0)), acc);
      } else {
        acc = __fmaf_rn(xs[0], ld(w, 1, k, t, 0), 0.0f);
#pragma unroll
        for (int j = 1; j < kMaxHcPost; ++j)
          if (j < HC) acc = __fmaf_rn(xs[j], ld(w, 1 + j, k, t, 0), acc);
        *reinterpret_cast<float*>(at(y, d, k, t, 0)) = __fadd_rn(__fmaf_rn(fv, ld(w, 0, k, t, 0), 0.0f), acc);
      }
    }
  }
}

}  // namespace

bool launch_rms_norm_w(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), a = view_of(dst->src[0]), w = view_of(dst->src[1]);
  const int64_t rows = dst->nrows(), n = a.ne[0];
  if (rows == 0 || n == 0) return true;
  const bool vec = rows_vec4(a) && rows_vec4(y) && rows_vec4(w);
  // Threads: enough for one pass over the row (a float4 each when vec), whole warps, at most 1024.
  const int64_t per_thread = vec ? 4 : 1, want = (n / per_thread + 31) / 32 * 32;
  const int threads = int(want < 32 ? 32 : want > kMaxNormThreads ? kMaxNormThreads : want);
  const unsigned blocks = unsigned(rows < (int64_t(1) << 20) ? rows : (int64_t(1) << 20));
  const int fp8_block = dst->param_i(1);
  if (vec) launch(rms_norm_w_kernel<true>, blocks, threads, 0, s, y, a, w, dst->param_f(0), fp8_block, rows);
  else launch(rms_norm_w_kernel<false>, blocks, threads, 0, s, y, a, w, dst->param_f(0), fp8_block, rows);
  return launched("rms_norm_w", error);
}

bool launch_swiglu(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), g = view_of(dst->src[0]), u = view_of(dst->src[1]);
  const bool has_wts = dst->src[2] != nullptr;
  const tview wts = has_wts ? bcast(view_of(dst->src[2])) : tview{};
  const int64_t n = n_elements(y);
  if (n == 0) return true;
  const float limit = dst->param_f(0);
  if (const int block = dst->param_i(1); block > 0) {
    const int64_t n_runs = (y.ne[0] + block - 1) / block, items = (n / y.ne[0]) * n_runs;
    launch(swiglu_fp8_kernel, grid_for(items * 32), kBlock, 0, s, y, g, u, wts, has_wts, limit, block, n_runs, items);
  } else if (rows_vec4(y) && rows_vec4(g) && rows_vec4(u))
    launch(swiglu_kernel<4>, grid_for(n / 4), kBlock, 0, s, y, g, u, wts, has_wts, limit, n / 4);
  else launch(swiglu_kernel<1>, grid_for(n), kBlock, 0, s, y, g, u, wts, has_wts, limit, n);
  return launched("swiglu", error);
}

bool launch_hc_sum(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), X = view_of(dst->src[0]), pre = bcast(view_of(dst->src[1]));
  const int64_t n = n_elements(y);
  if (n == 0) return true;
  if (rows_vec4(y) && rows_vec4(X)) launch(hc_sum_kernel<4>, grid_for(n / 4), kBlock, 0, s, y, X, pre, n / 4);
  else launch(hc_sum_kernel<1>, grid_for(n), kBlock, 0, s, y, X, pre, n);
  return launched("hc_sum", error);
}

bool hc_post_supported(const tensor* dst) { return dst->src[1]->ne[1] <= kMaxHcPost; }

bool launch_hc_post(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), f = view_of(dst->src[0]), X = view_of(dst->src[1]), w = bcast(view_of(dst->src[2]));
  const int64_t items = X.ne[0] * X.ne[2];  // (d, t) pairs
  if (items == 0) return true;
  if (rows_vec4(y) && rows_vec4(f) && rows_vec4(X))
    launch(hc_post_kernel<4>, grid_for(items / 4), kBlock, 0, s, y, f, X, w, items / 4);
  else launch(hc_post_kernel<1>, grid_for(items), kBlock, 0, s, y, f, X, w, items);
  return launched("hc_post", error);
}

}  // namespace v4::cuda

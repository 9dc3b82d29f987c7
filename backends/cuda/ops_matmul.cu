// MATMUL and MATMUL_ID (tensor/ops.h) for weights f32, f16, bf16, fp8_e4m3 (e8m0 scales per
// sb_k x sb_m tile), mxfp4 (e8m0 per 32 of a row) and q8_0; x f32 with contiguous rows, y f32.
//
// Four kernels, picked per call by run() below (docs/CUDA.md "Matmuls" has the table):
//   gemv     decode (N <= 16 rows per weight matrix; f32/f16 at every N): one warp per R weight
//            rows, lanes over 16-byte chunks of the rows (several chunks in flight), each x value
//            loaded once for the R rows, NB x rows at a time. Weights decoded exactly to f32,
//            products and sums in f32, scales applied once per chunk to its partial sums (a
//            chunk never straddles a scale block). x is not rounded.
//   tcv      mxfp4 decode with 2..16 x rows (ops_mma.cu): bf16 tensor cores, x rounded to bf16.
//   mma      prefill, N > 16 (ops_mma.cu): bf16 tensor cores, x rounded to bf16 once.
//   generic  any alignment / K (odd test shapes, q8_0 decode): one warp per output row.
// MATMUL_ID with at most 16 (slot, token) pairs runs one job per pair; with more, group_kernel
// first groups the pairs by expert on the device and the jobs are the selected experts, so each
// expert's weights are read once.
#include <cstdint>

#include "backends/cuda/kernels.h"
#include "backends/cuda/matmul.cuh"
#include "tensor/backend.h"

namespace v4::cuda {
namespace {

// ---- gemv -------------------------------------------------------------------------------------------
template <int WT>
struct chunk {
  // Elements per 16-byte chunk.
  static constexpr int kElems = WT == kF32 ? 4 : WT == kMXFP4 ? 32 : WT == kFP8 ? 16 : 8;
  static constexpr bool kScaled = WT == kFP8 || WT == kMXFP4;
};

__device__ inline uint32_t word(const uint4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// Elements 4j .. 4j+3 of a chunk, unscaled (mxfp4: times 2^-14, see e2m1x2_half_bits). j must be
// a compile-time constant after unrolling (register arrays).
template <int WT>
__device__ inline void decode4(const uint4& raw, int j, float f[4]) {
  if constexpr (WT == kF32) {
    f[0] = __uint_as_float(raw.x), f[1] = __uint_as_float(raw.y), f[2] = __uint_as_float(raw.z),
    f[3] = __uint_as_float(raw.w);
  } else if constexpr (WT == kBF16) {
    const uint32_t a = word(raw, 2 * j), b = word(raw, 2 * j + 1);
    f[0] = __uint_as_float(a << 16), f[1] = __uint_as_float(a & 0xffff0000u);
    f[2] = __uint_as_float(b << 16), f[3] = __uint_as_float(b & 0xffff0000u);
  } else if constexpr (WT == kF16) {
    const uint32_t a = word(raw, 2 * j), b = word(raw, 2 * j + 1);
    const float2 p = __half22float2(*reinterpret_cast<const __half2*>(&a));
    const float2 q = __half22float2(*reinterpret_cast<const __half2*>(&b));
    f[0] = p.x, f[1] = p.y, f[2] = q.x, f[3] = q.y;
  } else if constexpr (WT == kFP8) {
    const uint32_t a = word(raw, j);
    const float2 p = e4m3x2_f(uint16_t(a & 0xffffu)), q = e4m3x2_f(uint16_t(a >> 16));
    f[0] = p.x, f[1] = p.y, f[2] = q.x, f[3] = q.y;
  } else {  // mxfp4: bytes 2j, 2j+1 of the chunk
    const uint32_t h16 = word(raw, j / 2) >> (16 * (j & 1));
    const uint32_t a = e2m1x2_half_bits(h16 & 0xffu), b = e2m1x2_half_bits((h16 >> 8) & 0xffu);
    const float2 p = __half22float2(*reinterpret_cast<const __half2*>(&a));
    const float2 q = __half22float2(*reinterpret_cast<const __half2*>(&b));
    f[0] = p.x, f[1] = p.y, f[2] = q.x, f[3] = q.y;
  }
}

constexpr int kGemvWarps = 8;

// x in shared memory (XS): 16-byte piece p of the x row is stored at p ^ ((p >> 3) & 7), so that
// the lanes of a warp, each reading piece j of its own chunk (pieces E/4 apart), hit distinct
// banks for every chunk width (E = 4..32). Read from global memory instead, those lanes are 64 or
// 128 bytes apart: one L1 sector per lane per load, the decode kernel's bottleneck.
__device__ inline int64_t x_swizzle(int64_t p) { return p ^ ((p >> 3) & 7); }

// Block: kGemvWarps warps, each R consecutive weight rows; grid (ceil(M / (warps * R)), jobs).
// XS (with NB = 1): the block first copies the job's x row into shared memory (K % 32 == 0).
template <int WT, int R, int NB, int U, bool XS>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_kernel(mm_weights W, mm_rows rd) {
  static_assert(!XS || NB == 1, "shared x holds one row");
  extern __shared__ float4 xs[];
  constexpr int E = chunk<WT>::kElems;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const mm_job jb = job_of(W, rd, blockIdx.y);
  const int64_t m0 = (int64_t(blockIdx.x) * kGemvWarps + warp) * R;
  const bool active = m0 < W.M;
  if (jb.count == 0 || (!XS && !active)) return;  // (with XS every warp joins the block's barriers)
  const int64_t nchunks = W.K / E;

  const char* wrow[R];
  const uint8_t* srow[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t m = m0 + r < W.M ? m0 + r : W.M - 1;  // past the end: recompute the last row, store nothing
    wrow[r] = jb.w + m * W.nb1;
    srow[r] = chunk<WT>::kScaled ? jb.s + (m / W.sb_m) * W.s_nb1 : nullptr;
  }

  for (int64_t r0 = 0; r0 < jb.count; r0 += NB) {
    const float* xp[NB];
    float* yp[NB];
#pragma unroll
    for (int b = 0; b < NB; ++b) row_ptrs(rd, jb, r0 + b < jb.count ? r0 + b : r0, &xp[b], &yp[b]);
    if constexpr (XS) {
      __syncthreads();  // the previous row's readers are done
      const float4* xg = reinterpret_cast<const float4*>(xp[0]);
      for (int64_t p = threadIdx.x; p < W.K / 4; p += blockDim.x) xs[x_swizzle(p)] = __ldg(xg + p);
      __syncthreads();
      if (!active) continue;
    }

    float acc[R][NB];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int b = 0; b < NB; ++b) acc[r][b] = 0.0f;

    for (int64_t c0 = lane; c0 < nchunks; c0 += 32 * U) {
      uint4 raw[U][R];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const int64_t c = c0 + 32 * u;
          raw[u][r] = c < nchunks ? __ldg(reinterpret_cast<const uint4*>(wrow[r]) + c) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = c0 + 32 * u;
        if (c >= nchunks) break;
        float part[R][NB];
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int b = 0; b < NB; ++b) part[r][b] = 0.0f;
#pragma unroll
        for (int j = 0; j < E / 4; ++j) {
          float wf[R][4];
#pragma unroll
          for (int r = 0; r < R; ++r) decode4<WT>(raw[u][r], j, wf[r]);
#pragma unroll
          for (int b = 0; b < NB; ++b) {
            const float4 xv =
                XS ? xs[x_swizzle(c * (E / 4) + j)] : __ldg(reinterpret_cast<const float4*>(xp[b] + c * E) + j);
#pragma unroll
            for (int r = 0; r < R; ++r) {
              float& p = chunk<WT>::kScaled ? part[r][b] : acc[r][b];
              p = fmaf(wf[r][0], xv.x, p);
              p = fmaf(wf[r][1], xv.y, p);
              p = fmaf(wf[r][2], xv.z, p);
              p = fmaf(wf[r][3], xv.w, p);
            }
          }
        }
        if constexpr (chunk<WT>::kScaled) {
#pragma unroll
          for (int r = 0; r < R; ++r) {
            // fp8: the scale of this chunk's sb_k block; mxfp4: the chunk is one group of 32.
            const float sc = WT == kFP8 ? e8m0_f(srow[r][scale_col(W, c * E)]) : e8m0_f(srow[r][c]);
#pragma unroll
            for (int b = 0; b < NB; ++b) {
              const float p = WT == kMXFP4 ? part[r][b] * kE2m1HalfUnscale : part[r][b];
              acc[r][b] = fmaf(p, sc, acc[r][b]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        const float v = warp_sum(acc[r][b]);
        if (lane == 0 && m0 + r < W.M && r0 + b < jb.count) yp[b][m0 + r] = v;
      }
  }
}

// ---- generic --------------------------------------------------------------------------------------
// One warp per weight row; the job's x rows one after the other; lanes stride along K.
__global__ void generic_kernel(int type, mm_weights W, mm_rows rd) {
  const int lane = threadIdx.x & 31;
  const mm_job jb = job_of(W, rd, blockIdx.y);
  const int64_t m = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (jb.count == 0 || m >= W.M) return;
  const char* wrow = jb.w + m * W.nb1;
  const uint8_t* srow = jb.s ? jb.s + (m / W.sb_m) * W.s_nb1 : nullptr;
  for (int64_t r = 0; r < jb.count; ++r) {
    const float* x;
    float* y;
    row_ptrs(rd, jb, r, &x, &y);
    float acc = 0.0f;
    for (int64_t k = lane; k < W.K; k += 32) acc = fmaf(weight_at(type, wrow, srow, W.sb_k, k), x[k], acc);
    acc = warp_sum(acc);
    if (lane == 0) y[m] = acc;
  }
}

// ---- expert grouping (MATMUL_ID) ---------------------------------------------------------------------
constexpr int kMaxExperts = 4096;  // shared-memory counters; more experts go to the CPU (supports_op)

// One block. ids i32 [n_used, n_tok] (strides in bytes). Writes scratch: [0] n_active,
// active[P], offs[P + 1], pairs[n_pairs] (P = min(E, n_pairs)). Ids outside [0, E) are skipped
// (ops.h: a caller error; their outputs are left unwritten).
__global__ void group_kernel(const char* ids, int64_t ids_nb0, int64_t ids_nb1, int n_used, int64_t n_pairs, int E,
                             int P, int* scratch) {
  __shared__ int cnt[kMaxExperts];
  int* n_active = scratch;
  int* active = scratch + 1;
  int* offs = active + P;
  int* pairs = offs + P + 1;
  for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  __syncthreads();
  auto expert_of = [&](int64_t p) {
    return *reinterpret_cast<const int32_t*>(ids + (p % n_used) * ids_nb0 + (p / n_used) * ids_nb1);
  };
  for (int64_t p = threadIdx.x; p < n_pairs; p += blockDim.x) {
    const int e = expert_of(p);
    if (e >= 0 && e < E) atomicAdd(&cnt[e], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {  // E is small (256 for V4): a serial scan is cheaper than a parallel one
    int sum = 0, na = 0;
    for (int e = 0; e < E; ++e) {
      const int c = cnt[e];
      if (c == 0) continue;
      active[na] = e;
      offs[na] = sum;
      cnt[e] = sum;  // from here on: the next free position of expert e
      sum += c;
      ++na;
    }
    offs[na] = sum;
    *n_active = na;
  }
  __syncthreads();
  for (int64_t p = threadIdx.x; p < n_pairs; p += blockDim.x) {
    const int e = expert_of(p);
    if (e >= 0 && e < E) pairs[atomicAdd(&cnt[e], 1)] = int(p);
  }
}

constexpr int kPairJobs = 16;        // MATMUL_ID with at most this many pairs: one job per pair
constexpr int kGroupScratchSlot = 20;  // ops_scratch.cu slot of the grouping lists (per stream)

// ---- dispatch -------------------------------------------------------------------------------------------
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

int chunk_elems(dtype wt) {
  switch (wt) {
    case dtype::f32: return chunk<kF32>::kElems;
    case dtype::f16: return chunk<kF16>::kElems;
    case dtype::bf16: return chunk<kBF16>::kElems;
    case dtype::fp8_e4m3: return chunk<kFP8>::kElems;
    case dtype::mxfp4: return chunk<kMXFP4>::kElems;
    default: return 0;  // q8_0: 34-byte blocks, no 16-byte chunks (generic decode path)
  }
}

// 16-byte aligned rows and matrices of w and x: what the gemv and mma loads need.
bool rows_aligned(const tensor* w, const tensor* x) {
  return aligned16(w->data) && aligned16(x->data) && w->nb[1] % 16 == 0 && w->nb[2] % 16 == 0 && w->nb[3] % 16 == 0 &&
         x->nb[1] % 16 == 0 && x->nb[2] % 16 == 0 && x->nb[3] % 16 == 0;
}

constexpr int64_t kMaxSharedX = 48 * 1024;  // bytes of x a block may stage (no opt-in needed)

template <int WT, int R, int U>
void gemv_nb(cudaStream_t s, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t rows_hint) {
  const dim3 grid(unsigned((W.M + kGemvWarps * R - 1) / (kGemvWarps * R)), jobs);
  const int nb = rows_hint <= 1 ? 1 : rows_hint <= 2 ? 2 : rows_hint <= 4 ? 4 : 8;
  const int64_t x_bytes = W.K * int64_t(sizeof(float));
  // Shared x pays for the wide chunks (fp8, mxfp4); measured slower for f16/bf16 (docs/CUDA.md).
  if (nb == 1 && chunk<WT>::kElems >= 16 && W.K % 32 == 0 && x_bytes <= kMaxSharedX)
    gemv_kernel<WT, R, 1, U, true><<<grid, kGemvWarps * 32, size_t(x_bytes), s>>>(W, rd);
  else if (nb == 1) gemv_kernel<WT, R, 1, U, false><<<grid, kGemvWarps * 32, 0, s>>>(W, rd);
  else if (nb == 2) gemv_kernel<WT, R, 2, U, false><<<grid, kGemvWarps * 32, 0, s>>>(W, rd);
  else if (nb == 4) gemv_kernel<WT, R, 4, U, false><<<grid, kGemvWarps * 32, 0, s>>>(W, rd);
  else gemv_kernel<WT, R, 8, U, false><<<grid, kGemvWarps * 32, 0, s>>>(W, rd);
}

void launch_gemv(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t rows_hint) {
  // R rows per warp share each x load: mxfp4 (32 elements per chunk) needs the most reuse.
  switch (wt) {
    case dtype::f32: gemv_nb<kF32, 2, 4>(s, W, rd, jobs, rows_hint); break;
    case dtype::f16: gemv_nb<kF16, 2, 4>(s, W, rd, jobs, rows_hint); break;
    case dtype::bf16: gemv_nb<kBF16, 2, 4>(s, W, rd, jobs, rows_hint); break;
    case dtype::fp8_e4m3: gemv_nb<kFP8, 4, 2>(s, W, rd, jobs, rows_hint); break;
    case dtype::mxfp4: gemv_nb<kMXFP4, 4, 2>(s, W, rd, jobs, rows_hint); break;
    default: break;
  }
}

mm_weights weights_of(const tensor* w) {
  mm_weights W{};
  W.data = static_cast<const char*>(w->data);
  W.nb1 = int64_t(w->nb[1]), W.nb2 = int64_t(w->nb[2]), W.nb3 = int64_t(w->nb[3]);
  if (traits(w->type).scaled && w->scales) {
    W.scales = static_cast<const uint8_t*>(w->scales->data);
    W.s_nb1 = int64_t(w->scales->nb[1]), W.s_nb2 = int64_t(w->scales->nb[2]), W.s_nb3 = int64_t(w->scales->nb[3]);
    W.sb_k = w->scale_block[0];
    W.sb_m = w->scale_block[1];
    W.sb_k_shift = -1;
    for (int b = 0; b < 31; ++b)
      if (W.sb_k == (1 << b)) W.sb_k_shift = b;
  }
  W.K = w->ne[0];
  W.M = w->ne[1];
  return W;
}

// Runs one call. use_mma: the caller's decode/prefill decision (rows per weight matrix > 16).
bool run(cudaStream_t s, tensor* dst, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t max_rows,
         int64_t rows_hint, bool use_mma, const char* op, std::string* error) {
  const tensor* w = dst->src[0];
  const tensor* x = dst->src[1];
  const dtype wt = w->type;
  const bool aligned = rows_aligned(w, x);
  if (use_mma && aligned && mma_supported(wt, W.K)) {
    if (!launch_mma(s, wt, W, rd, jobs, max_rows, error)) return false;
  } else if (aligned && tcv_supported(wt, W.K, max_rows)) {
    if (!launch_tcv(s, wt, W, rd, jobs, max_rows, error)) return false;
  } else if (aligned && chunk_elems(wt) > 0 && W.K % chunk_elems(wt) == 0) {
    launch_gemv(s, wt, W, rd, jobs, rows_hint);
  } else {
    const dim3 grid(unsigned((W.M + 7) / 8), jobs);
    generic_kernel<<<grid, 256, 0, s>>>(int(wt), W, rd);
  }
  return launched(op, error);
}

}  // namespace

// The rounding of x the kernels above use (the op harness holds each call to it): mma rounds x
// to bf16 (2^-8); gemv and generic keep it. Must agree with the choices in launch_matmul /
// launch_matmul_id (MATMUL_ID asks for every per-expert N up to n_used * N).
double matmul_x_rounding(dtype wt, int64_t /*M*/, int64_t N, int64_t K) {
  return (N > 16 && mma_supported(wt, K)) || tcv_supported(wt, K, N) ? 0x1p-8 : 0.0;
}

// Scales must sit in the same kind of memory as the weights (the stream checks only sources).
static bool scales_with(const tensor* t) {
  return !t->scales->buf || !t->buf || t->scales->buf->type() == t->buf->type();
}

bool matmul_supported(const tensor* node) {
  const tensor* w = node->src[0];
  if (node->op == op_kind::MATMUL_ID &&
      (w->ne[2] > kMaxExperts || node->src[2]->ne[0] * node->src[2]->ne[1] > (int64_t(1) << 30)))
    return false;
  switch (w->type) {
    case dtype::f32:
    case dtype::f16:
    case dtype::bf16:
    case dtype::q8_0: return true;
    case dtype::fp8_e4m3:
    case dtype::mxfp4: return w->scales && w->scale_block[0] % 32 == 0 && w->scale_block[1] >= 1 && scales_with(w);
    default: return false;  // K-quants: the CPU
  }
}

bool launch_matmul(cudaStream_t s, tensor* dst, std::string* error) {
  const tensor* w = dst->src[0];
  const tensor* x = dst->src[1];
  const mm_weights W = weights_of(w);
  mm_rows rd{};
  rd.mode = 0;
  rd.x = static_cast<const char*>(x->data);
  rd.x_nb1 = int64_t(x->nb[1]), rd.x_nb2 = int64_t(x->nb[2]), rd.x_nb3 = int64_t(x->nb[3]);
  rd.y = static_cast<char*>(dst->data);
  rd.y_nb1 = int64_t(dst->nb[1]), rd.y_nb2 = int64_t(dst->nb[2]), rd.y_nb3 = int64_t(dst->nb[3]);
  rd.N = x->ne[1];
  rd.B2 = x->ne[2];
  rd.r2 = x->ne[2] / w->ne[2];
  rd.r3 = x->ne[3] / w->ne[3];
  const int64_t jobs = x->ne[2] * x->ne[3];
  if (jobs > 65535) {
    *error = "CUDA: matmul: more than 65535 batch slices";
    return false;
  }
  if (rd.N == 0 || W.M == 0) return true;
  return run(s, dst, W, rd, unsigned(jobs), rd.N, rd.N, rd.N > 16, "matmul", error);
}

bool launch_matmul_id(cudaStream_t s, tensor* dst, std::string* error) {
  const tensor* w = dst->src[0];
  const tensor* x = dst->src[1];
  const tensor* ids = dst->src[2];
  const int E = int(w->ne[2]);
  const int n_used = int(ids->ne[0]);
  const int64_t n_tok = ids->ne[1], n_pairs = int64_t(n_used) * n_tok;
  if (n_pairs == 0 || w->ne[1] == 0) return true;
  const mm_weights W = weights_of(w);
  mm_rows rd{};
  rd.x = static_cast<const char*>(x->data);
  rd.x_nb1 = int64_t(x->nb[1]), rd.x_nb2 = int64_t(x->nb[2]);
  rd.y = static_cast<char*>(dst->data);
  rd.y_nb1 = int64_t(dst->nb[1]), rd.y_nb2 = int64_t(dst->nb[2]);
  rd.n_used = n_used;
  rd.X1 = x->ne[1];
  if (n_pairs <= kPairJobs) {
    // Decode: one job per pair, no grouping launch (a repeated expert is read once per pair).
    rd.mode = 2;
    rd.ids = static_cast<const char*>(ids->data);
    rd.ids_nb0 = int64_t(ids->nb[0]), rd.ids_nb1 = int64_t(ids->nb[1]);
    rd.E = E;
    return run(s, dst, W, rd, unsigned(n_pairs), 1, 1, false, "matmul_id", error);
  }
  const int P = int(n_pairs < E ? n_pairs : E);  // at most this many experts are selected
  int* lists =
      static_cast<int*>(scratch(s, kGroupScratchSlot, size_t(1 + P + P + 1 + n_pairs) * sizeof(int), error));
  if (!lists) return false;
  group_kernel<<<1, 1024, 0, s>>>(static_cast<const char*>(ids->data), int64_t(ids->nb[0]), int64_t(ids->nb[1]), n_used,
                                  n_pairs, E, P, lists);
  if (!launched("matmul_id (grouping)", error)) return false;

  rd.mode = 1;
  rd.n_active = lists;
  rd.active = lists + 1;
  rd.offs = lists + 1 + P;
  rd.pairs = lists + 1 + P + P + 1;
  // Tensor cores when the experts get more than 16 rows on average (prefill); the kernels loop
  // over however many rows each expert really has.
  const bool use_mma = n_pairs > 16 * int64_t(P);
  return run(s, dst, W, rd, unsigned(P), n_pairs, n_tok, use_mma, "matmul_id", error);
}

}  // namespace v4::cuda

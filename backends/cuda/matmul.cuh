// Shared parts of the CUDA matmul kernels (ops_matmul.cu: launchers, GEMV and generic kernels;
// ops_mma.cu: tensor-core kernel): the weight and row-set descriptors, and exact decoders of the
// weight formats (quant/*.h).
//
// A launch is a set of "jobs" (blockIdx.y): one weight matrix and a list of x rows to multiply by
// it. MATMUL: a job per batch slice (b2, b3), rows n = 0..N-1. MATMUL_ID: a job per expert that
// some (slot, token) pair selects (the expert list and each expert's pairs are built on the
// device by a first kernel, so the host never waits for ids).
#pragma once

#include <cuda_fp8.h>

#include "backends/cuda/common.cuh"

namespace v4::cuda {

constexpr int kFP8 = int(dtype::fp8_e4m3);
constexpr int kMXFP4 = int(dtype::mxfp4);
constexpr int kQ8_0 = int(dtype::q8_0);

// One weight tensor [K, M, E or B2, B3] with its e8m0 scales (fp8, mxfp4).
struct mm_weights {
  const char* data;
  int64_t nb1, nb2, nb3;  // row and matrix strides (bytes)
  const uint8_t* scales;  // nullptr for unscaled types
  int64_t s_nb1, s_nb2, s_nb3;
  int sb_k, sb_m;
  int sb_k_shift;  // log2(sb_k) when sb_k is a power of two (V4: 128, V4.1: 32), else -1
  int64_t s_cols;  // scale codes per scale row (the scale tensor's ne[0])
  int64_t K, M;
};

// Scale column of element k (fp8: k / sb_k without a division in the usual case).
__device__ inline int64_t scale_col(const mm_weights& W, int64_t k) {
  return W.sb_k_shift >= 0 ? k >> W.sb_k_shift : k / W.sb_k;
}

// The x rows of each job and where their results go.
struct mm_rows {
  // 0: MATMUL (job = batch slice); 1: MATMUL_ID grouped (job = selected expert, its pairs);
  // 2: MATMUL_ID by pair (job = one (slot, token) pair, expert read from ids; few pairs: decode)
  int mode;
  const char* x;
  int64_t x_nb1, x_nb2, x_nb3;
  char* y;
  int64_t y_nb1, y_nb2, y_nb3;
  // MATMUL: N rows per job; job j = b2 + B2 * b3; the weight of a job is (b2 / r2, b3 / r3).
  int64_t N, B2, r2, r3;
  // MATMUL_ID (built by the grouping kernel): n_active experts; expert of slot s = active[s], its
  // pairs pairs[offs[s] .. offs[s+1]) with pair p = i + n_used * token.
  const int* n_active;
  const int* active;
  const int* offs;
  const int* pairs;
  int n_used;
  int64_t X1;
  // mode 2: ids i32 [n_used, n_tok] (byte strides), E experts
  const char* ids;
  int64_t ids_nb0, ids_nb1;
  int E;
};

// The weight matrix and scales of job j and its row count (0: nothing to do).
struct mm_job {
  const char* w;
  const uint8_t* s;
  int64_t count;
  int64_t first;  // MATMUL_ID: index of the first pair in rd.pairs
  int64_t b2, b3;
};

__device__ inline mm_job job_of(const mm_weights& W, const mm_rows& rd, int j) {
  mm_job jb{};
  int64_t mi2, mi3;
  if (rd.mode == 0) {
    jb.b2 = j % rd.B2;
    jb.b3 = j / rd.B2;
    jb.count = rd.N;
    mi2 = jb.b2 / rd.r2;
    mi3 = jb.b3 / rd.r3;
  } else if (rd.mode == 2) {
    const int e = *reinterpret_cast<const int32_t*>(rd.ids + (j % rd.n_used) * rd.ids_nb0 + (j / rd.n_used) * rd.ids_nb1);
    if (e < 0 || e >= rd.E) return jb;  // out of range (a caller error): output left unwritten
    mi2 = e;
    mi3 = 0;
    jb.first = j;
    jb.count = 1;
  } else {
    if (j >= *rd.n_active) return jb;  // count 0
    mi2 = rd.active[j];
    mi3 = 0;
    jb.first = rd.offs[j];
    jb.count = rd.offs[j + 1] - jb.first;
  }
  jb.w = W.data + mi2 * W.nb2 + mi3 * W.nb3;
  jb.s = W.scales ? W.scales + mi2 * W.s_nb2 + mi3 * W.s_nb3 : nullptr;
  return jb;
}

// x row and y row of the r-th row of a job.
__device__ inline void row_ptrs(const mm_rows& rd, const mm_job& jb, int64_t r, const float** x, float** y) {
  if (rd.mode == 0) {
    *x = reinterpret_cast<const float*>(rd.x + r * rd.x_nb1 + jb.b2 * rd.x_nb2 + jb.b3 * rd.x_nb3);
    *y = reinterpret_cast<float*>(rd.y + r * rd.y_nb1 + jb.b2 * rd.y_nb2 + jb.b3 * rd.y_nb3);
  } else {
    const int64_t p = rd.mode == 2 ? jb.first : rd.pairs[jb.first + r];
    const int64_t i = p % rd.n_used, t = p / rd.n_used;
    *x = reinterpret_cast<const float*>(rd.x + (i % rd.X1) * rd.x_nb1 + t * rd.x_nb2);
    *y = reinterpret_cast<float*>(rd.y + i * rd.y_nb1 + t * rd.y_nb2);
  }
}

// ---- exact decoders --------------------------------------------------------------------------------
// e8m0 code -> f32 (quant/e8m0.h): 2^(e-127), code 0 = 2^-127 (subnormal), 0xFF = NaN.
__device__ inline float e8m0_f(uint8_t e) {
  const uint32_t bits = e == 0xFF ? 0x7fc00000u : (e == 0 ? 0x00400000u : uint32_t(e) << 23);
  return __uint_as_float(bits);
}

// Two e4m3 codes (low byte first) -> two floats, exact (e4m3 NaN -> NaN; every e4m3 value is an
// f16 value). One cvt.rn.f16x2.e4m3x2 on sm_89+, a software conversion before.
__device__ inline float2 e4m3x2_f(uint16_t two) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(two), __NV_E4M3);
  return __half22float2(*reinterpret_cast<const __half2*>(&h));
}

// Two e2m1 codes (one byte, low nibble first) as an f16x2 whose values are the e2m1 values times
// 2^-14: the code's E.EM bits placed at f16 bits 11..9 give exponent field E (E = 0: the f16
// subnormal M * 2^-15, i.e. 0.5 * 2^-14) and mantissa bit M; the sign bit goes to bit 15.
__device__ inline uint32_t e2m1x2_half_bits(uint32_t byte) {
  const uint32_t t = byte | (byte << 12);  // low nibble at bits 0..3, high nibble at 16..19
  return ((t & 0x00070007u) << 9) | ((t & 0x00080008u) << 12);
}
constexpr float kE2m1HalfUnscale = 16384.0f;  // 2^14: undoes the 2^-14 of e2m1x2_half_bits

// One weight element k of row `row` (any type this file handles), scaled. The generic kernel's
// decoder: slow, exact, any K and alignment. srow: the scale row covering this weight row.
__device__ inline float weight_at(int type, const char* row, const uint8_t* srow, int sb_k, int64_t k) {
  switch (type) {
    case kF32: return reinterpret_cast<const float*>(row)[k];
    case kF16: return __half2float(reinterpret_cast<const __half*>(row)[k]);
    case kBF16: return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(row)[k]);
    case kFP8: {
      const uint8_t c = reinterpret_cast<const uint8_t*>(row)[k];
      return e4m3x2_f(c).x * e8m0_f(srow[k / sb_k]);
    }
    case kMXFP4: {
      const uint8_t b = reinterpret_cast<const uint8_t*>(row)[k / 2];
      const uint32_t h = e2m1x2_half_bits(b);
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
      return ((k & 1) ? f.y : f.x) * kE2m1HalfUnscale * e8m0_f(srow[k / 32]);
    }
    case kQ8_0: {
      const char* blk = row + (k / 32) * 34;
      const float d = __half2float(*reinterpret_cast<const __half*>(blk));
      return d * float(reinterpret_cast<const int8_t*>(blk + 2)[k % 32]);
    }
    default: return 0.0f;
  }
}

// ---- 16-byte chunks of weight rows and their exact decode (the decode kernels, ops_matmul.cu and
// ops_matmul_ring.cu) ------------------------------------------------------------------------------
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

// x in shared memory (XS): 16-byte piece p of the x row is stored at p ^ ((p >> 3) & 7), so that
// the lanes of a warp, each reading piece j of its own chunk (pieces E/4 apart), hit distinct
// banks for every chunk width (E = 4..32). Read from global memory instead, those lanes are 64 or
// 128 bytes apart: one L1 sector per lane per load, the decode kernel's bottleneck.
__device__ inline int64_t x_swizzle(int64_t p) { return p ^ ((p >> 3) & 7); }

__device__ inline uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// Pair i (0..3) of an mxfp4 word (8 codes, low nibble first): codes i and i + 4 as an f16x2 of
// their values times 2^-14 (e2m1x2_half_bits' placement: E.EM bits at 11..9, sign at 15).
template <int I>
__device__ inline uint32_t e2m1_pair(uint32_t a) {
  const uint32_t mag = (I == 3 ? a >> 3 : a << (9 - 4 * I)) & 0x0E000E00u;
  return mag | ((a << (12 - 4 * I)) & 0x80008000u);
}

__device__ inline float2 half2_bits_f(uint32_t h) { return __half22float2(*reinterpret_cast<const __half2*>(&h)); }

// Partial sums of one 16-byte chunk c of R rows against x (swizzled in shared memory): part[r][0]
// and [1] (two chains; their sum is the chunk's dot product, mxfp4 times 2^-14).
template <int WT, int R>
__device__ inline void chunk_dot(const uint4 (&w)[R], const float4* xs, int c, float (&part)[R][2]) {
  if constexpr (WT == kF32 || WT == kF16 || WT == kBF16) {  // (split-K) exact widening, as decode4
    constexpr int P = chunk<WT>::kElems / 4;                 // x pieces per chunk
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const float4 xv = xs[x_swizzle(c * P + j)];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float f[4];
        decode4<WT>(w[r], j, f);
        part[r][0] = fmaf(f[0], xv.x, part[r][0]);
        part[r][1] = fmaf(f[1], xv.y, part[r][1]);
        part[r][0] = fmaf(f[2], xv.z, part[r][0]);
        part[r][1] = fmaf(f[3], xv.w, part[r][1]);
      }
    }
  } else if constexpr (WT == kFP8) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float4 xv = xs[x_swizzle(c * 4 + j)];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint32_t a = word(w[r], j);
        const float2 p = e4m3x2_f(uint16_t(a & 0xffffu)), q = e4m3x2_f(uint16_t(a >> 16));
        part[r][0] = fmaf(p.x, xv.x, part[r][0]);
        part[r][1] = fmaf(p.y, xv.y, part[r][1]);
        part[r][0] = fmaf(q.x, xv.z, part[r][0]);
        part[r][1] = fmaf(q.y, xv.w, part[r][1]);
      }
    }
  } else {  // mxfp4: word j holds elements 8j .. 8j+7; pair i = elements 8j+i and 8j+i+4
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float4 xa = xs[x_swizzle(c * 8 + 2 * j)], xb = xs[x_swizzle(c * 8 + 2 * j + 1)];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const uint32_t a = word(w[r], j);
        const float2 f0 = half2_bits_f(e2m1_pair<0>(a)), f1 = half2_bits_f(e2m1_pair<1>(a));
        const float2 f2 = half2_bits_f(e2m1_pair<2>(a)), f3 = half2_bits_f(e2m1_pair<3>(a));
        part[r][0] = fmaf(f0.x, xa.x, part[r][0]);
        part[r][1] = fmaf(f0.y, xb.x, part[r][1]);
        part[r][0] = fmaf(f1.x, xa.y, part[r][0]);
        part[r][1] = fmaf(f1.y, xb.y, part[r][1]);
        part[r][0] = fmaf(f2.x, xa.z, part[r][0]);
        part[r][1] = fmaf(f2.y, xb.z, part[r][1]);
        part[r][0] = fmaf(f3.x, xa.w, part[r][0]);
        part[r][1] = fmaf(f3.y, xb.w, part[r][1]);
      }
    }
  }
}

// ---- entry points between the files -----------------------------------------------------------------
// Tensor-core path (ops_mma.cu): weight types bf16, fp8_e4m3, mxfp4, q8_0 with K % 32 == 0 and
// 16-byte aligned rows of w and x. x is rounded to bf16 once; weights are decoded to bf16 exactly;
// scales multiply f32 partial sums of each 32-wide K tile.
// Streaming multiprocessors of the current device (0 when it cannot be asked; the error cleared).
int sm_count();
// Whether the current GPU launches thread-block clusters (sm_90 and newer).
bool clusters_available();

bool mma_supported(dtype wt, int64_t K);
bool launch_mma(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t max_rows,
                std::string* error);

// Decode on tensor cores (ops_mma.cu): mxfp4 (K % 128 == 0) with 16-byte aligned rows, jobs of
// 2 to 16 x rows (more: passes of 16); x rounded to bf16, weights exact.
// max_rows: the most x rows a job has (at most 16 are staged per pass, as bf16 in shared memory).
bool tcv_supported(dtype wt, int64_t K, int64_t max_rows);
bool launch_tcv(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t max_rows,
                std::string* error);

// Streaming decode (ops_matmul_ring.cu, sm_90): one x row per job (matmul N = 1, matmul_id by
// pair), weights fp8_e4m3 / mxfp4 / bf16 with 16-byte aligned rows, streamed through per-warp
// shared-memory rings by the bulk copy engine; numerics as gemv_x1 (x not rounded).
// ring_wanted: whether the ring should take the call (where it measured faster; V4_CUDA_RING and a
// test hook override). launch_ring: false (nothing launched) when the call does not fit (K, scale
// alignment, shared memory, a GPU below sm_90). pdl: launch with the PDL attribute.
// Blocks of `kernel` (`threads` per block, `smem` bytes of dynamic shared memory) resident per SM
// of device `dev`, cached per (kernel, dev, threads, smem); above 48 KiB the kernel's limit is
// raised to max_smem first (smem above max_smem: 0). 0 when it cannot run (the error cleared).
int resident_blocks(const void* kernel, int threads, size_t smem, int dev, size_t max_smem);
bool ring_wanted(dtype wt, const mm_weights& W, const mm_rows& rd);
bool launch_ring(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, bool pdl);

// Tensor-core decode GEMV (ops_matmul_tc.cu): fp8_e4m3 weights with scale blocks sb_k % 128 == 0,
// MATMUL with one x row (N = 1), K % 128 == 0, 16-byte aligned rows. x is rounded to bf16 (nothing
// changes for x that is FP8-exact per 128, x_exact: ops_matmul.cu x_fp8_exact; other x is staged
// as two f16 halves); f16 x f16 -> f32 mma. tc_decode_fits: the shape fits (shared memory within
// 48 KiB); launch_tc_decode: false (nothing launched) when it does not.
bool tc_decode_fits(const mm_weights& W, unsigned jobs, bool x_exact);
bool launch_tc_decode(cudaStream_t s, const mm_weights& W, const mm_rows& rd, unsigned jobs, bool x_exact);

// Tensor-core decode of the routed experts (ops_matmul_tc4.cu): MATMUL_ID by pair (rd.mode 2: one
// x row per job, the decode's <= 16 pairs), mxfp4 weights (e8m0 per 32 k of a row: sb_k == 32),
// K % 128 == 0, 16-byte aligned rows, 2-byte aligned scale rows, and x FP8-exact per 128 (the
// caller checks that: ops_matmul.cu x_fp8_exact). x is not rounded; f16 x f16 -> f32 mma with
// exact products, each 32-k group's sum scaled in f32. tc4_fits: the shape fits (x within 48 KiB
// of shared memory); launch_tc4: false (nothing launched) when it does not. pdl: launch with the
// PDL attribute. Taken only when asked (ops_matmul.cu tc_id_takes: measured no faster than gemv1).
bool tc4_fits(const mm_weights& W, unsigned jobs);
bool launch_tc4(cudaStream_t s, const mm_weights& W, const mm_rows& rd, unsigned jobs, bool pdl);

}  // namespace v4::cuda

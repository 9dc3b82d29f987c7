// Tensor-core matmul for prefill shapes (matmul.cuh: launch_mma): mma.sync m16n8k16 bf16 with f32
// accumulators (sm_80+).
//
// Block tile 64 weight rows x 64 x rows x 32 along K, 4 warps of 32 x 32. Each thread decodes 16
// weights and 16 x values per K tile into shared memory:
//   weights  decoded to bf16 EXACTLY, unscaled: every e4m3 code, e2m1 code and int8 is a bf16
//            value (bf16 weights are copied)
//   x        rounded to bf16 (round to nearest even): the only rounding besides f32 summation
//   scales   one per (weight row, 32-wide K tile) in every format here (fp8: sb_k is a multiple of
//            32; mxfp4: 32; q8_0: its f16 d), so each tile's f32 partial products are multiplied
//            by their row's scale and added to the accumulators.
// The next tile's global loads are issued before the current tile's mma (register double
// buffering). NaN codes and NaN scales propagate to the outputs that use them.
#include "backends/cuda/matmul.cuh"

namespace v4::cuda {
namespace {

constexpr int kBM = 64, kBN = 64, kBK = 32;
constexpr int kLds = kBK + 8;  // shared row stride in bf16 (80 bytes: ldmatrix rows spread over all banks)
constexpr int kThreads = 128;

__device__ inline void ldsm_x4(uint32_t r[4], const void* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

__device__ inline void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ inline uint32_t bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The raw global data of one thread's share of a K tile: 16 weights of row lr, 16 x of row lr.
struct tile_raw {
  uint4 w0, w1;    // bf16: 32 bytes; fp8: w0; mxfp4: w0.x, w0.y; q8_0: w0 (16 int8), w1.x = d bits
  uint32_t scode;  // fp8 / mxfp4: the e8m0 code of this row's K tile
  float4 x[4];
};

template <int WT>
__device__ inline void load_tile(tile_raw& t, const char* arow, bool a_ok, const uint8_t* srow, int sb_k,
                                 const float* xr, int64_t k0, int lh) {
  const int64_t ka = k0 + 16 * lh;
  t.w0 = t.w1 = make_uint4(0, 0, 0, 0);
  t.scode = 0;
  if (a_ok) {
    if constexpr (WT == kBF16) {
      const uint4* p = reinterpret_cast<const uint4*>(arow + ka * 2);
      t.w0 = __ldg(p);
      t.w1 = __ldg(p + 1);
    } else if constexpr (WT == kFP8) {
      t.w0 = __ldg(reinterpret_cast<const uint4*>(arow + ka));
      t.scode = srow[k0 / sb_k];
    } else if constexpr (WT == kMXFP4) {
      const uint2 v = __ldg(reinterpret_cast<const uint2*>(arow + ka / 2));
      t.w0.x = v.x;
      t.w0.y = v.y;
      t.scode = srow[k0 / 32];
    } else {  // q8_0: block k0 / 32 (34 bytes, 2-byte aligned), its d and 16 of its codes
      const uint16_t* blk = reinterpret_cast<const uint16_t*>(arow + (k0 / 32) * 34);
      uint32_t w[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) w[i] = __ldg(blk + 1 + 8 * lh + i);
      t.w0 = make_uint4(w[0] | w[1] << 16, w[2] | w[3] << 16, w[4] | w[5] << 16, w[6] | w[7] << 16);
      t.w1.x = __ldg(blk);
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
    t.x[i] = xr ? __ldg(reinterpret_cast<const float4*>(xr + ka) + i) : make_float4(0.f, 0.f, 0.f, 0.f);
}

__device__ inline uint32_t wd(const uint4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// 16 weights as 8 bf16x2 words, and the scale of the row's K tile.
template <int WT>
__device__ inline void decode_tile(const tile_raw& t, uint32_t out[8], float* scale) {
  if constexpr (WT == kBF16) {
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = wd(t.w0, i), out[4 + i] = wd(t.w1, i);
    *scale = 1.0f;
  } else if constexpr (WT == kFP8) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t a = wd(t.w0, i);
      const float2 p = e4m3x2_f(uint16_t(a & 0xffffu)), q = e4m3x2_f(uint16_t(a >> 16));
      out[2 * i] = bf16x2(p.x, p.y);
      out[2 * i + 1] = bf16x2(q.x, q.y);
    }
    *scale = e8m0_f(uint8_t(t.scode));
  } else if constexpr (WT == kMXFP4) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t byte = ((i < 4 ? t.w0.x : t.w0.y) >> (8 * (i & 3))) & 0xffu;
      const uint32_t h = e2m1x2_half_bits(byte);
      const float2 p = __half22float2(*reinterpret_cast<const __half2*>(&h));
      out[i] = bf16x2(p.x * kE2m1HalfUnscale, p.y * kE2m1HalfUnscale);
    }
    *scale = e8m0_f(uint8_t(t.scode));
  } else {  // q8_0
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t a = wd(t.w0, i / 2) >> (16 * (i & 1));
      out[i] = bf16x2(float(int8_t(a & 0xffu)), float(int8_t((a >> 8) & 0xffu)));
    }
    const uint16_t d = uint16_t(t.w1.x);
    *scale = __half2float(*reinterpret_cast<const __half*>(&d));
  }
}

template <int WT>
__global__ void __launch_bounds__(kThreads) mma_kernel(mm_weights W, mm_rows rd) {
  pdl_wait();
  constexpr bool kScaled = WT != kBF16;
  __shared__ __align__(16) uint16_t As[kBM][kLds];
  __shared__ __align__(16) uint16_t Bs[kBN][kLds];
  __shared__ float sc[kBM];
  __shared__ const float* xrow[kBN];
  __shared__ float* yrow[kBN];

  const mm_job jb = job_of(W, rd, blockIdx.y);
  if (jb.count == 0) return;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp & 1, wn = warp >> 1;  // the warp's 32 x 32 quarter of the tile
  const int g = lane >> 2, c = lane & 3;    // mma fragment coordinates
  const int lr = tid >> 1, lh = tid & 1;    // loader: row lr of both tiles, elements 16*lh .. +16
  const int64_t m0 = int64_t(blockIdx.x) * kBM;
  const bool a_ok = m0 + lr < W.M;
  const int64_t ma = a_ok ? m0 + lr : 0;
  const char* arow = jb.w + ma * W.nb1;
  const uint8_t* srow = kScaled && jb.s ? jb.s + (ma / W.sb_m) * W.s_nb1 : nullptr;

  for (int64_t n0 = int64_t(blockIdx.z) * kBN; n0 < jb.count; n0 += int64_t(gridDim.z) * kBN) {
    __syncthreads();  // the previous chunk's stores read yrow
    if (tid < kBN) {
      const float* x = nullptr;
      float* y = nullptr;
      if (n0 + tid < jb.count) row_ptrs(rd, jb, n0 + tid, &x, &y);
      xrow[tid] = x;
      yrow[tid] = y;
    }
    __syncthreads();
    const float* xr = xrow[lr];

    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    tile_raw raw;
    load_tile<WT>(raw, arow, a_ok, srow, W.sb_k, xr, 0, lh);
    for (int64_t k0 = 0; k0 < W.K; k0 += kBK) {
      {  // decode the loaded tile into shared memory
        uint32_t wv[8];
        float s;
        decode_tile<WT>(raw, wv, &s);
        uint4* ad = reinterpret_cast<uint4*>(&As[lr][16 * lh]);
        ad[0] = make_uint4(wv[0], wv[1], wv[2], wv[3]);
        ad[1] = make_uint4(wv[4], wv[5], wv[6], wv[7]);
        if (lh == 0) sc[lr] = a_ok ? s : 0.0f;
        uint32_t xv[8];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          xv[2 * i] = bf16x2(raw.x[i].x, raw.x[i].y);
          xv[2 * i + 1] = bf16x2(raw.x[i].z, raw.x[i].w);
        }
        uint4* bd = reinterpret_cast<uint4*>(&Bs[lr][16 * lh]);
        bd[0] = make_uint4(xv[0], xv[1], xv[2], xv[3]);
        bd[1] = make_uint4(xv[4], xv[5], xv[6], xv[7]);
      }
      __syncthreads();
      if (k0 + kBK < W.K) load_tile<WT>(raw, arow, a_ok, srow, W.sb_k, xr, k0 + kBK, lh);  // in flight during the mma

      float tmp[2][4][4];
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) tmp[i][j][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kBK; kk += 16) {
        uint32_t a[2][4], b[4][2];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) ldsm_x4(a[mt], &As[wm * 32 + mt * 16 + (lane & 15)][kk + (lane >> 4) * 8]);
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          uint32_t r[4];
          ldsm_x4(r, &Bs[wn * 32 + np * 16 + (lane & 7) + ((lane >> 4) << 3)][kk + ((lane >> 3) & 1) * 8]);
          b[2 * np][0] = r[0], b[2 * np][1] = r[1], b[2 * np + 1][0] = r[2], b[2 * np + 1][1] = r[3];
        }
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int nt = 0; nt < 4; ++nt) mma_bf16(kScaled ? tmp[mt][nt] : acc[mt][nt], a[mt], b[nt][0], b[nt][1]);
      }
      if constexpr (kScaled) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const float s_lo = sc[wm * 32 + mt * 16 + g], s_hi = sc[wm * 32 + mt * 16 + g + 8];
#pragma unroll
          for (int nt = 0; nt < 4; ++nt) {
            acc[mt][nt][0] = fmaf(tmp[mt][nt][0], s_lo, acc[mt][nt][0]);
            acc[mt][nt][1] = fmaf(tmp[mt][nt][1], s_lo, acc[mt][nt][1]);
            acc[mt][nt][2] = fmaf(tmp[mt][nt][2], s_hi, acc[mt][nt][2]);
            acc[mt][nt][3] = fmaf(tmp[mt][nt][3], s_hi, acc[mt][nt][3]);
          }
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t m = m0 + wm * 32 + mt * 16 + g + (e >> 1) * 8;
          float* y = yrow[wn * 32 + nt * 8 + 2 * c + (e & 1)];
          if (m < W.M && y) y[m] = acc[mt][nt][e];
        }
  }
}

}  // namespace

bool mma_supported(dtype wt, int64_t K) {
  return K % kBK == 0 && (wt == dtype::bf16 || wt == dtype::fp8_e4m3 || wt == dtype::mxfp4 || wt == dtype::q8_0);
}

bool launch_mma(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t max_rows,
                std::string* error) {
  // MATMUL: one block per 64 x rows; MATMUL_ID: the row counts per expert are on the device, so
  // each block loops over its expert's rows.
  const int64_t row_tiles = rd.mode != 0 ? 1 : (max_rows + kBN - 1) / kBN;
  const dim3 grid(unsigned((W.M + kBM - 1) / kBM), jobs, unsigned(row_tiles < 65535 ? row_tiles : 65535));
  switch (wt) {
    case dtype::bf16: launch(mma_kernel<kBF16>, grid, kThreads, 0, s, W, rd); break;
    case dtype::fp8_e4m3: launch(mma_kernel<kFP8>, grid, kThreads, 0, s, W, rd); break;
    case dtype::mxfp4: launch(mma_kernel<kMXFP4>, grid, kThreads, 0, s, W, rd); break;
    case dtype::q8_0: launch(mma_kernel<kQ8_0>, grid, kThreads, 0, s, W, rd); break;
    default:
      *error = std::string("CUDA: no tensor-core matmul for ") + type_name(wt);
      return false;
  }
  return launched("matmul (tensor cores)", error);
}

// ---- decode on tensor cores: mxfp4 weights, 2 to 16 x rows per pass ---------------------------------------
// The weights are the B operand (an n-tile = 8 weight rows per warp), x the A operand (16 rows,
// zero past the job's count), so one mma multiplies 8 weight rows by up to 16 x rows over 16 k.
// The four lanes of a quad (lanes 4g .. 4g+3) hold the four quarters (8 consecutive k each) of
// the same 32-wide scale group of weight row g: a group's two mma (k 0..3 and 4..7 of each
// quarter) sum that group only, and its e8m0 scales multiply the f32 result per weight row.
// A warp reads its 8 rows in 64-byte segments (a quad's four 16-byte loads, U segments in
// flight), stages them in its own shared memory and reads the quarters back (the row stride
// makes both conflict-free). The block's x rows are staged once as bf16 in shared memory.
// Decoding e2m1 to bf16 is exact: a byte-permute table lookup of the bf16 bytes of 0, .5, 1, 1.5,
// 2, 3, 4, 6, and the sign bit moved into place. Measured (docs/CUDA.md): faster than the f32
// gemv for mxfp4 at 2..16 rows, slower at 1 row (the gemv keeps that, exact).
namespace {

template <int WT>
struct tcv {
  static constexpr int kGroups = 4;   // 32-wide groups per 64-byte segment
  static constexpr int kStride = 20;  // shared row stride in words (conflict-free stores and reads)
};
constexpr int kTcvWarps = 4, kTcvU = 4;  // U segments per row in flight
constexpr int64_t kTcvMaxX = 96 * 1024;  // bytes of bf16 x a block stages (opt-in above 48 KiB)

// One quarter of an e2m1 group (8 codes, low nibble first) -> 4 bf16x2 words in k order.
__device__ inline void quarter_bf16(uint32_t w, uint32_t out[4]) {
  // bf16 bytes of the e2m1 magnitudes 0..7: 0x0000 0x3F00 0x3F80 0x3FC0 0x4000 0x4040 0x4080 0x40C0
  constexpr uint32_t kLo0 = 0xC0800000u, kLo1 = 0xC0804000u, kHi0 = 0x3F3F3F00u, kHi1 = 0x40404040u;
  const uint32_t mag = w & 0x77777777u;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const uint32_t sel = (mag >> (16 * h)) & 0xffffu;
    const uint32_t lo = __byte_perm(kLo0, kLo1, sel), hi = __byte_perm(kHi0, kHi1, sel);
    out[2 * h] = __byte_perm(lo, hi, 0x5140);      // elements 4h, 4h+1
    out[2 * h + 1] = __byte_perm(lo, hi, 0x7362);  // elements 4h+2, 4h+3
  }
  // Sign bit 4e+3 of element e -> bit 15 / 31 of its bf16 (the multiplies place two bits at once).
  out[0] |= ((w & 0x88u) * 0x01001000u) & 0x80008000u;
  out[1] |= ((w & 0x8800u) * 0x00010010u) & 0x80008000u;
  out[2] |= (((w >> 16) & 0x88u) * 0x01001000u) & 0x80008000u;
  out[3] |= (((w >> 16) & 0x8800u) * 0x00010010u) & 0x80008000u;
}

template <int WT>
__global__ void __launch_bounds__(kTcvWarps * 32) tcv_kernel(mm_weights W, mm_rows rd, int pass) {
  pdl_wait();
  constexpr int G = tcv<WT>::kGroups, S = tcv<WT>::kStride;
  __shared__ __align__(16) uint32_t sm[kTcvWarps][kTcvU][8 * S];
  extern __shared__ uint4 xs4[];  // [16 x rows][K / 2] bf16x2 words (rows below the pass's count)
  uint32_t* xs = reinterpret_cast<uint32_t*>(xs4);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const mm_job jb = job_of(W, rd, blockIdx.y);
  if (jb.count == 0) return;
  const int64_t mw = (int64_t(blockIdx.x) * kTcvWarps + warp) * 8;  // the warp's first weight row
  const bool active = mw < W.M;  // inactive warps still join the block's barriers
  const int64_t n_seg = W.K / (32 * G);  // 64-byte segments per row
  const int64_t kw = W.K / 2;           // bf16x2 words per staged x row

  const int64_t ml = mw + g < W.M ? mw + g : W.M - 1;  // the row this lane loads
  const char* lrow = jb.w + ml * W.nb1 + 16 * c;
  const uint8_t* srow[2];  // scale rows of this lane's output columns mw + 2c, mw + 2c + 1
  for (int i = 0; i < 2; ++i) {
    const int64_t mo = mw + 2 * c + i < W.M ? mw + 2 * c + i : W.M - 1;
    srow[i] = jb.s + (mo / W.sb_m) * W.s_nb1;
  }
  uint32_t* my = sm[warp][0];

  for (int64_t r0 = 0; r0 < jb.count; r0 += pass) {  // pass <= 16 x rows at a time
    const int rows = int(jb.count - r0 < pass ? jb.count - r0 : pass);
    // Stage x rows r0 .. r0+rows-1 as bf16 (the only rounding of x).
    __syncthreads();
    for (int r = 0; r < rows; ++r) {
      const float* x;
      float* y;
      row_ptrs(rd, jb, r0 + r, &x, &y);
      for (int64_t i = threadIdx.x; i < W.K / 4; i += blockDim.x) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(x) + i);
        xs[r * kw + 2 * i] = bf16x2(v.x, v.y);
        xs[r * kw + 2 * i + 1] = bf16x2(v.z, v.w);
      }
    }
    __syncthreads();
    if (!active) continue;
    float* y_lo = nullptr;
    float* y_hi = nullptr;
    {
      const float* x;
      if (g < rows) row_ptrs(rd, jb, r0 + g, &x, &y_lo);
      if (g + 8 < rows) row_ptrs(rd, jb, r0 + g + 8, &x, &y_hi);
    }
    float acc[4] = {0.f, 0.f, 0.f, 0.f};

    uint4 raw[kTcvU];
    uint8_t sc[kTcvU][2][G];
    auto load = [&](int64_t seg0) {
#pragma unroll
      for (int u = 0; u < kTcvU; ++u) {
        const int64_t seg = seg0 + u;
        const bool in = seg < n_seg;
        raw[u] = in ? __ldg(reinterpret_cast<const uint4*>(lrow + seg * 64)) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < G; ++j)
            sc[u][i][j] = in ? __ldg(srow[i] + seg * G + j) : 0;
      }
    };
    load(0);
    for (int64_t seg0 = 0; seg0 < n_seg; seg0 += kTcvU) {
      __syncwarp();
#pragma unroll
      for (int u = 0; u < kTcvU; ++u) *reinterpret_cast<uint4*>(my + u * 8 * S + g * S + 4 * c) = raw[u];
      uint8_t scs[kTcvU][2][G];
#pragma unroll
      for (int u = 0; u < kTcvU; ++u)
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < G; ++j) scs[u][i][j] = sc[u][i][j];
      __syncwarp();
      load(seg0 + kTcvU);  // the next segments, in flight during this compute
#pragma unroll
      for (int u = 0; u < kTcvU; ++u) {
        const int64_t seg = seg0 + u;
        if (seg >= n_seg) break;
        const uint32_t* row = my + u * 8 * S + g * S;
#pragma unroll
        for (int j = 0; j < G; ++j) {
          const int64_t k = 32 * (seg * G + j) + 8 * c;
          // A: x rows g, g+8 at this lane's 8 k (zeros past the pass's rows).
          uint4 lo = make_uint4(0, 0, 0, 0), hi = make_uint4(0, 0, 0, 0);
          if (g < rows) lo = *reinterpret_cast<const uint4*>(xs + g * kw + k / 2);
          if (g + 8 < rows) hi = *reinterpret_cast<const uint4*>(xs + (g + 8) * kw + k / 2);
          const uint32_t a1[4] = {lo.x, hi.x, lo.y, hi.y}, a2[4] = {lo.z, hi.z, lo.w, hi.w};
          uint32_t b[4];
          quarter_bf16(row[4 * j + c], b);
          float d[4] = {0.f, 0.f, 0.f, 0.f};
          mma_bf16(d, a1, b[0], b[1]);
          mma_bf16(d, a2, b[2], b[3]);
          const float s0 = e8m0_f(scs[u][0][j]), s1 = e8m0_f(scs[u][1][j]);
          acc[0] = fmaf(d[0], s0, acc[0]);
          acc[1] = fmaf(d[1], s1, acc[1]);
          acc[2] = fmaf(d[2], s0, acc[2]);
          acc[3] = fmaf(d[3], s1, acc[3]);
        }
      }
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t m = mw + 2 * c + (e & 1);
      float* y = e < 2 ? y_lo : y_hi;
      if (y && m < W.M) y[m] = acc[e];
    }
  }
}

template <int WT>
bool launch_tcv_t(cudaStream_t s, const mm_weights& W, const mm_rows& rd, unsigned jobs, int pass) {
  const size_t x_bytes = size_t(pass) * size_t(W.K) * 2;
  static const bool opted_in =
      cudaFuncSetAttribute(tcv_kernel<WT>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kTcvMaxX)) == cudaSuccess;
  if (!opted_in && x_bytes > 48 * 1024 - sizeof(uint32_t) * kTcvWarps * kTcvU * 8 * tcv<WT>::kStride) return false;
  const dim3 grid(unsigned((W.M + 8 * kTcvWarps - 1) / (8 * kTcvWarps)), jobs);
  launch(tcv_kernel<WT>, grid, kTcvWarps * 32, x_bytes, s, W, rd, pass);
  return true;
}

}  // namespace

// x rows per pass: all of a job's (up to 16) when their bf16 copy fits the shared-memory budget.
int tcv_pass(int64_t K, int64_t max_rows) {
  const int64_t fit = kTcvMaxX / (2 * K);
  const int64_t rows = max_rows < 16 ? max_rows : 16;
  return int(rows < fit ? rows : fit);
}

bool tcv_supported(dtype wt, int64_t K, int64_t max_rows) {
  return wt == dtype::mxfp4 && K % 128 == 0 && max_rows >= 2 && tcv_pass(K, max_rows) >= 2;
}

bool launch_tcv(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t max_rows,
                std::string* error) {
  if (wt != dtype::mxfp4 || !launch_tcv_t<kMXFP4>(s, W, rd, jobs, tcv_pass(W.K, max_rows))) {
    *error = "CUDA: matmul (tensor-core decode): shared memory for x unavailable";
    return false;
  }
  return launched("matmul (tensor-core decode)", error);
}

}  // namespace v4::cuda

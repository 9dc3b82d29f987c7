// FP8_ROUNDTRIP, FP4_ROUNDTRIP (tensor/ops.h) and SET_ROWS into scaled destinations (fp8_e4m3 with
// scale_block {b, 1}, mxfp4 {32, 1}): quantize-on-write. Bit-exact to quant/fp8.cpp and
// quant/mxfp4.cpp: the rounding helpers of quant_round.cuh, and codes made the same way.
#include "backends/cuda/kernels.h"
#include "backends/cuda/matmul.cuh"
#include "backends/cuda/quant_round.cuh"
#include "tensor/backend.h"

namespace v4::cuda {
namespace {

using namespace qround;

// Codes (quant/fp8.cpp e4m3_from_f32, quant/mxfp4.cpp e2m1_from_f32).
__device__ inline uint8_t e4m3_code(float x) {
  const uint8_t sign = uint8_t((__float_as_uint(x) >> 24) & 0x80);
  if (isnan(x)) return sign | 0x7f;
  const float a = fabsf(x);
  if (a >= kE4m3Max) return sign | 0x7e;
  const float r = round_minifloat<3, -6>(a);
  if (r < 0x1p-6f) return sign | uint8_t(__fmul_rn(r, 512.0f));
  const uint32_t b = __float_as_uint(r);
  const int e = int((b >> 23) & 0xff) - 127 + 7;
  return sign | uint8_t(e << 3) | uint8_t((b >> 20) & 7);
}
__device__ inline uint8_t e2m1_code(float x) {
  if (isnan(x)) return 0;
  const uint8_t sign = signbit(x) ? 8 : 0;
  const float a = fminf(fabsf(x), kE2m1Max);
  const int t = int(__fmul_rn(round_minifloat<1, 0>(a), 2.0f));
  return sign | uint8_t(t <= 4 ? t : t == 6 ? 5 : t == 8 ? 6 : 7);
}

// Largest finite |v| over a warp (0 if none; NaN never wins a comparison).
__device__ inline float warp_amax(float local) { return warp_max(local); }

// ---- round trips ---------------------------------------------------------------------------------------
// One warp per (row, run); run == n_runs copies the unquantized tail [nq, ne0).
template <bool FP8>
__global__ void roundtrip_kernel(tview y, tview a, int block, int64_t nq, float floor, int64_t n_rows) {
  pdl_wait();
  const int lane = threadIdx.x & 31;
  const int64_t n_runs = (nq + block - 1) / block;
  const int64_t items = n_rows * (n_runs + 1);
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t it = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; it < items; it += warps) {
    const int64_t row = it / (n_runs + 1), run = it % (n_runs + 1);
    const int64_t i1 = row % a.ne[1], i2 = (row / a.ne[1]) % a.ne[2], i3 = row / (a.ne[1] * a.ne[2]);
    const char* src = at(a, 0, i1, i2, i3);
    float* dst = reinterpret_cast<float*>(at(y, 0, i1, i2, i3));
    if (run == n_runs) {
      for (int64_t k = nq + lane; k < a.ne[0]; k += 32) dst[k] = *reinterpret_cast<const float*>(src + k * a.nb[0]);
      continue;
    }
    const int64_t k0 = run * block, k1 = k0 + block < nq ? k0 + block : nq;
    float m = 0.0f;
    for (int64_t k = k0 + lane; k < k1; k += 32) m = fmaxf(m, finite_abs(*reinterpret_cast<const float*>(src + k * a.nb[0])));
    const float amax = warp_amax(m);
    const int e = FP8 ? fp8_exp(amax, floor) : fp4_exp(amax, floor);
    const float s = pow2(e), inv = pow2(-e);
    for (int64_t k = k0 + lane; k < k1; k += 32) {
      const float v = *reinterpret_cast<const float*>(src + k * a.nb[0]);
      dst[k] = FP8 ? fp8_rt(v, inv, s) : fp4_rt(v, inv, s);
    }
  }
}

// ---- set_rows into scaled rows ----------------------------------------------------------------------------
// One warp per (scale block g, batch b): walks n in order so that duplicate ids keep the last write
// (ops.h), quantizing block g of src row n into block g of dst row ids[n, b].
template <bool FP8>
__global__ void set_rows_scaled_kernel(tview dst, tview src, tview ids, tview scales, int block, int64_t n_blocks) {
  pdl_wait();
  const int lane = threadIdx.x & 31;
  const int64_t K = src.ne[0], N = src.ne[1], B = src.ne[2];
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  for (int64_t it = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; it < n_blocks * B; it += warps) {
    const int64_t g = it % n_blocks, b = it / n_blocks;
    const int64_t k0 = g * block, k1 = k0 + block < K ? k0 + block : K;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t row = load_index(at(ids, n, b, 0, 0), ids.type);
      const char* s = at(src, 0, n, b, 0);
      float m = 0.0f;
      for (int64_t k = k0 + lane; k < k1; k += 32) m = fmaxf(m, finite_abs(*reinterpret_cast<const float*>(s + k * src.nb[0])));
      const float amax = warp_amax(m);
      const int e = FP8 ? fp8_exp(amax, kFp8Floor) : fp4_exp(amax, kFp4Floor);
      const float inv = pow2(-e);
      uint8_t* q = reinterpret_cast<uint8_t*>(at(dst, 0, row, b, 0));
      if (lane == 0) reinterpret_cast<uint8_t*>(at(scales, 0, row, b, 0))[g] = e < -127 || e > 127 ? 0xFF : uint8_t(e + 127);
      if (FP8) {
        for (int64_t k = k0 + lane; k < k1; k += 32)
          q[k] = e4m3_code(__fmul_rn(*reinterpret_cast<const float*>(s + k * src.nb[0]), inv));
      } else {
        for (int64_t k = k0 + 2 * lane; k < k1; k += 64) {  // K is even for mxfp4
          const float v0 = *reinterpret_cast<const float*>(s + k * src.nb[0]);
          const float v1 = *reinterpret_cast<const float*>(s + (k + 1) * src.nb[0]);
          q[k / 2] = uint8_t(e2m1_code(__fmul_rn(v0, inv)) | (e2m1_code(__fmul_rn(v1, inv)) << 4));
        }
      }
      __syncwarp();  // the next n may write the same row: this n's stores come first
    }
  }
}

bool launch_roundtrip(cudaStream_t s, tensor* dst, bool fp8, std::string* error) {
  const tview y = view_of(dst), a = view_of(dst->src[0]);
  const int block = dst->param_i(0);
  const int64_t nq = dst->param_i(1);
  const float floor = dst->param_f(2);
  const int64_t n_rows = a.ne[1] * a.ne[2] * a.ne[3];
  const int64_t items = n_rows * ((nq + block - 1) / block + 1);
  const unsigned grid = grid_for(items * 32);
  if (fp8) launch(roundtrip_kernel<true>, grid, kBlock, 0, s, y, a, block, nq, floor, n_rows);
  else launch(roundtrip_kernel<false>, grid, kBlock, 0, s, y, a, block, nq, floor, n_rows);
  return launched(fp8 ? "fp8_roundtrip" : "fp4_roundtrip", error);
}

}  // namespace

bool launch_fp8_roundtrip(cudaStream_t s, tensor* dst, std::string* error) { return launch_roundtrip(s, dst, true, error); }
bool launch_fp4_roundtrip(cudaStream_t s, tensor* dst, std::string* error) { return launch_roundtrip(s, dst, false, error); }

bool set_rows_scaled_supported(const tensor* d) {
  if (d->type != dtype::fp8_e4m3 && d->type != dtype::mxfp4) return false;
  return d->scales && d->scale_block[1] == 1 && d->scale_block[0] % 32 == 0 &&
         (!d->scales->buf || !d->buf || d->scales->buf->type() == d->buf->type());
}

bool launch_set_rows_any(cudaStream_t s, tensor* dst, std::string* error) {
  tensor* d = dst->src[0];
  if (!traits(d->type).scaled) return launch_set_rows(s, dst, error);
  const tview dv = view_of(d), sv = view_of(dst->src[1]), iv = view_of(dst->src[2]), sc = view_of(d->scales);
  const int block = d->scale_block[0];
  const int64_t n_blocks = (d->ne[0] + block - 1) / block;
  const unsigned grid = grid_for(n_blocks * d->ne[2] * 32);
  if (d->type == dtype::fp8_e4m3) launch(set_rows_scaled_kernel<true>, grid, kBlock, 0, s, dv, sv, iv, sc, block, n_blocks);
  else launch(set_rows_scaled_kernel<false>, grid, kBlock, 0, s, dv, sv, iv, sc, block, n_blocks);
  return launched("set_rows (quantize on write)", error);
}

}  // namespace v4::cuda

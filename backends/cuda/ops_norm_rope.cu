// NORM_ROPE (tensor/ops.h): per-head RMSNorm (optionally weighted), RoPE and the optional FP8 round
// trip, fused. One block per row (grid-stride over rows): the block's threads add the row's squares
// (warp sums, then the warps' sums in one order, as rms_norm_w), then every element is computed
// from the source by the chain's own roundings: round(a s), times w (one more rounding), and for a
// rotated element the pair's rotation with explicit roundings (__fmul_rn, __fsub_rn: nvcc contracts
// nothing), so that only the sum of squares' order differs from the CPU. The FP8 runs [0, fp8_n)
// go to the block's warps, one run at a time (quant_round.cuh: fp8_roundtrip's bits); the
// elements past fp8_n are stored as computed.
#include <cstdint>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/quant_round.cuh"
#include "backends/cuda/rope.cuh"

namespace v4::cuda {
namespace {

constexpr int kMaxThreads = 1024;

__device__ inline float ld(const tview& v, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
  return *reinterpret_cast<const float*>(at(v, i0, i1, i2, i3));
}

__global__ void norm_rope_kernel(tview y, tview a, tview w, bool has_w, tview pos, rope_args p, float eps, int fp8_block,
                                 int64_t fp8_n, int64_t rows) {
  pdl_wait();
  __shared__ float part[kMaxThreads / 32];
  const int64_t n = a.ne[0], r0 = n - p.n_rot, half = p.n_rot / 2;
  const int warps = int(blockDim.x) / 32, lane = int(threadIdx.x) % 32;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t i1 = r % a.ne[1], i2 = (r / a.ne[1]) % a.ne[2], i3 = r / (a.ne[1] * a.ne[2]);
    float ss = 0.0f;
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      const float v = ld(a, k, i1, i2, i3);
      ss += v * v;
    }
    ss = warp_sum(ss);
    if (lane == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < warps; ++i) total += part[i];
    __syncthreads();  // part is written again by the next row
    const float s = 1.0f / sqrtf(total / float(n) + eps);  // IEEE sqrt and division (nvcc defaults)
    const int32_t position = *reinterpret_cast<const int32_t*>(pos.data + i2 * pos.nb[0]);

    // Element k normalised (rms_norm, then the weight), and the row's element k after the rotation.
    auto norm = [&](int64_t k) {
      const float v = __fmul_rn(ld(a, k, i1, i2, i3), s);
      return has_w ? __fmul_rn(v, ld(w, k, 0, 0, 0)) : v;
    };
    auto value = [&](int64_t k) {
      const float x = norm(k);
      if (k < r0) return x;
      const int64_t j = k - r0;  // pair i = (x0, x1): (r0 + 2i, r0 + 2i + 1) or (r0 + i, r0 + i + half)
      const bool first = p.interleaved ? j % 2 == 0 : j < half;
      const int i = int(p.interleaved ? j / 2 : j % half);
      const float other = norm(p.interleaved ? (first ? k + 1 : k - 1) : (first ? k + half : k - half));
      float c, sn;
      rope_cos_sin(p, i, position, &c, &sn);
      return first ? __fsub_rn(__fmul_rn(x, c), __fmul_rn(other, sn))    // x0 cos - x1 sin
                   : __fadd_rn(__fmul_rn(other, sn), __fmul_rn(x, c));   // x0 sin + x1 cos
    };
    auto store = [&](int64_t k, float v) { *reinterpret_cast<float*>(at(y, k, i1, i2, i3)) = v; };

    int64_t plain0 = 0;  // the first element stored without rounding
    if (fp8_block > 0) {
      for (int64_t k0 = int64_t(threadIdx.x / 32) * fp8_block; k0 < fp8_n; k0 += int64_t(warps) * fp8_block)
        qround::fp8_run(k0, k0 + fp8_block < fp8_n ? k0 + fp8_block : fp8_n, lane, value, store);
      plain0 = fp8_n;
    }
    for (int64_t k = plain0 + threadIdx.x; k < n; k += blockDim.x) store(k, value(k));
  }
}

}  // namespace

bool launch_norm_rope(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), a = view_of(dst->src[0]), pos = view_of(dst->src[1]);
  const bool has_w = dst->src[2] != nullptr;
  const tview w = has_w ? view_of(dst->src[2]) : tview{};
  const int64_t rows = dst->nrows(), n = a.ne[0];
  if (rows == 0 || n == 0) return true;
  // Threads: one element each for the sum of squares (whole warps, at most kMaxThreads).
  const int64_t want = (n + 31) / 32 * 32;
  const int threads = int(want > kMaxThreads ? kMaxThreads : want);
  const unsigned blocks = unsigned(rows < (int64_t(1) << 20) ? rows : (int64_t(1) << 20));
  launch(norm_rope_kernel, blocks, threads, 0, s, y, a, w, has_w, pos, rope_args_of(params::rope_of(dst)),
         dst->param_f(8), dst->param_i(9), int64_t(dst->param_i(10)), rows);
  return launched("norm_rope", error);
}

}  // namespace v4::cuda

// Rotary embedding (tensor/ops.h ROPE): the last n_rot dims of each row rotate in pairs,
// interleaved or as halves, with the YaRN frequency ramp, possibly inverted. One thread per
// (pair or pass-through element, row). Frequencies, angles, sin and cos are computed in double
// (rope.cuh, as the CPU does), the rotation itself in f32.
#include <algorithm>
#include <cmath>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/rope.cuh"
#include "tensor/ops.h"

namespace v4::cuda {
namespace {

__global__ void rope_kernel(tview y, tview a, tview pos, rope_args p, int64_t n) {
  pdl_wait();
  const int half = p.n_rot / 2;
  const int64_t D = a.ne[0], r0 = D - p.n_rot;
  const int64_t per_row = r0 + half;  // pass-through elements, then one item per pair
  for (int64_t it = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; it < n; it += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = it % per_row, row = it / per_row;
    const int64_t h = row % a.ne[1], t = (row / a.ne[1]) % a.ne[2], b = row / (a.ne[1] * a.ne[2]);
    const char* x = at(a, 0, h, t, b);
    char* out = at(y, 0, h, t, b);
    if (k < r0) {
      *reinterpret_cast<float*>(out + k * y.nb[0]) = *reinterpret_cast<const float*>(x + k * a.nb[0]);
      continue;
    }
    const int i = int(k - r0);
    const int32_t position = *reinterpret_cast<const int32_t*>(pos.data + t * pos.nb[0]);
    float c, sn;
    rope_cos_sin(p, i, position, &c, &sn);
    const int64_t k0 = r0 + (p.interleaved ? 2 * i : i);
    const int64_t k1 = p.interleaved ? k0 + 1 : k0 + half;
    const float x0 = *reinterpret_cast<const float*>(x + k0 * a.nb[0]);
    const float x1 = *reinterpret_cast<const float*>(x + k1 * a.nb[0]);
    *reinterpret_cast<float*>(out + k0 * y.nb[0]) = x0 * c - x1 * sn;
    *reinterpret_cast<float*>(out + k1 * y.nb[0]) = x0 * sn + x1 * c;
  }
}

}  // namespace

bool launch_rope(cudaStream_t s, tensor* dst, std::string* error) {
  const rope_params rp = params::rope_of(dst);
  const rope_args p = rope_args_of(rp);
  const tview y = view_of(dst), a = view_of(dst->src[0]), pos = view_of(dst->src[1]);
  const int64_t n = (a.ne[0] - rp.n_rot + rp.n_rot / 2) * dst->nrows();
  if (n == 0) return true;
  launch(rope_kernel, grid_for(n), kBlock, 0, s, y, a, pos, p, n);
  return launched("rope", error);
}

}  // namespace v4::cuda

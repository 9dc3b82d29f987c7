// Rotary embedding (tensor/ops.h ROPE): the last n_rot dims of each row rotate in pairs,
// interleaved or as halves, with the YaRN frequency ramp, possibly inverted. One thread per
// (pair or pass-through element, row). Frequencies, angles, sin and cos are computed in double
// (as the CPU does), the rotation itself in f32.
#include <algorithm>
#include <cmath>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "tensor/ops.h"

namespace v4::cuda {
namespace {

struct rope_args {
  int n_rot;
  bool interleaved;
  double sign;     // -1 for the inverse rotation
  double base;
  bool yarn;
  double factor, lo, hi;  // YaRN ramp over pair index i: (i - lo) / (hi - lo), clamped to [0, 1]
};

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
    double f = ::pow(p.base, -2.0 * i / p.n_rot);
    if (p.yarn) {
      const double ramp = fmin(fmax((i - p.lo) / (p.hi - p.lo), 0.0), 1.0);
      f = f / p.factor * ramp + f * (1.0 - ramp);
    }
    const int32_t position = *reinterpret_cast<const int32_t*>(pos.data + t * pos.nb[0]);
    const double angle = p.sign * double(position) * f;
    const float c = float(::cos(angle)), sn = float(::sin(angle));
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
  rope_args p{};
  p.n_rot = rp.n_rot;
  p.interleaved = rp.interleaved;
  p.sign = rp.inverse ? -1.0 : 1.0;
  p.base = double(rp.base);
  p.yarn = rp.yarn_factor > 1.0f;
  p.factor = double(rp.yarn_factor);
  if (p.yarn) {  // the ramp's ends, as tensor/ops.h (and the CPU) compute them
    const double two_pi = 2.0 * M_PI;
    auto corr = [&](double c) {
      return rp.n_rot * std::log(double(rp.yarn_orig_ctx) / (c * two_pi)) / (2.0 * std::log(double(rp.base)));
    };
    p.lo = std::max(std::floor(corr(rp.yarn_beta_fast)), 0.0);
    p.hi = std::min(std::ceil(corr(rp.yarn_beta_slow)), double(rp.n_rot - 1));
    if (p.lo == p.hi) p.hi += 0.001;
  }
  const tview y = view_of(dst), a = view_of(dst->src[0]), pos = view_of(dst->src[1]);
  const int64_t n = (a.ne[0] - rp.n_rot + rp.n_rot / 2) * dst->nrows();
  if (n == 0) return true;
  launch(rope_kernel, grid_for(n), kBlock, 0, s, y, a, pos, p, n);
  return launched("rope", error);
}

}  // namespace v4::cuda

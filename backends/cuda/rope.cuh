// Rotary-embedding pieces shared by the ROPE kernel (ops_rope.cu), the fused NORM_ROPE kernel
// (ops_norm_rope.cu) and the attention's output rotation (ops_attn.cu): the parameters as kernels
// take them, one pair's angle, and (rope_elem) one element of a turned row held in memory.
// Frequencies, angles, sin and cos are computed in double (as the CPU does).
#pragma once

#include <algorithm>
#include <cmath>

#include "backends/cuda/common.cuh"
#include "tensor/ops.h"

namespace v4::cuda {

struct rope_args {
  int n_rot;
  bool interleaved;
  double sign;     // -1 for the inverse rotation
  double base;
  bool yarn;
  double factor, lo, hi;  // YaRN ramp over pair index i: (i - lo) / (hi - lo), clamped to [0, 1]
};

inline rope_args rope_args_of(const rope_params& rp) {
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
  return p;
}

// cos and sin (as f32) of pair i's angle at position.
__device__ inline void rope_cos_sin(const rope_args& p, int i, int32_t position, float* c, float* s) {
  double f = ::pow(p.base, -2.0 * i / p.n_rot);
  if (p.yarn) {
    const double ramp = fmin(fmax((i - p.lo) / (p.hi - p.lo), 0.0), 1.0);
    f = f / p.factor * ramp + f * (1.0 - ramp);
  }
  const double angle = p.sign * double(position) * f;
  *c = float(::cos(angle));
  *s = float(::sin(angle));
}

// Element k of a row after the rotation, given the row x (element m at x[m * stride]) and the
// rotation's cos / sin per pair (cs[i], sn[i]): dims before D - n_rot unchanged; pair i = (x0, x1)
// at (r0 + 2i, r0 + 2i + 1) or (r0 + i, r0 + i + half) turned with explicit roundings
// (__fmul_rn, __fsub_rn: nvcc would contract them into FMAs), as the CPU's rope_row computes it.
__device__ inline float rope_elem(const rope_args& p, const float* x, int stride, int D, int k, const float* cs,
                                  const float* sn) {
  const int r0 = D - p.n_rot, half = p.n_rot / 2;
  const float v = x[k * stride];
  if (k < r0) return v;
  const int j = k - r0;
  const bool first = p.interleaved ? j % 2 == 0 : j < half;
  const int i = p.interleaved ? j / 2 : j % half;
  const float other = x[(p.interleaved ? (first ? k + 1 : k - 1) : (first ? k + half : k - half)) * stride];
  return first ? __fsub_rn(__fmul_rn(v, cs[i]), __fmul_rn(other, sn[i]))   // x0 cos - x1 sin
               : __fadd_rn(__fmul_rn(other, sn[i]), __fmul_rn(v, cs[i]));  // x0 sin + x1 cos
}

}  // namespace v4::cuda

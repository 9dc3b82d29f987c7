// Rotary embedding (partial, interleaved or halves, YaRN ramp, inverse) and the Walsh-Hadamard transform.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/ops/common.h"
#include "backends/cpu/ops/rope.h"

namespace v4::cpu {

// Frequencies f_i, i in [0, n_rot/2), per the formula in tensor/ops.h (computed in double).
std::vector<double> rope_freqs(const rope_params& p) {
  const int half = p.n_rot / 2;
  std::vector<double> f(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) f[i] = std::pow(double(p.base), -2.0 * i / p.n_rot);
  if (p.yarn_factor > 1.0f) {
    const double two_pi = 2.0 * M_PI;
    auto corr = [&](double c) {
      return p.n_rot * std::log(double(p.yarn_orig_ctx) / (c * two_pi)) / (2.0 * std::log(double(p.base)));
    };
    const double lo = std::max(std::floor(corr(p.yarn_beta_fast)), 0.0);
    double hi = std::min(std::ceil(corr(p.yarn_beta_slow)), double(p.n_rot - 1));
    if (lo == hi) hi += 0.001;
    for (int i = 0; i < half; ++i) {
      const double ramp = std::clamp((i - lo) / (hi - lo), 0.0, 1.0);
      f[i] = f[i] / p.yarn_factor * ramp + f[i] * (1.0 - ramp);
    }
  }
  return f;
}

void rope_angles(const rope_params& p, const std::vector<double>& freqs, int32_t position, float* cs, float* sn) {
  const double sign = p.inverse ? -1.0 : 1.0;
  for (int i = 0; i < p.n_rot / 2; ++i) {
    const double angle = sign * double(position) * freqs[i];
    cs[i] = float(std::cos(angle));
    sn[i] = float(std::sin(angle));
  }
}

// Pair i: (r0 + 2i, r0 + 2i + 1) interleaved, or (r0 + i, r0 + i + half). Each pair's two inputs
// are read before either output is written (in place is safe).
void rope_row(const rope_params& p, const char* x, size_t xs, float* y, int64_t D, const float* cs, const float* sn) {
  const int half = p.n_rot / 2;
  const int64_t r0 = D - p.n_rot;  // first rotated dim
  auto in = [&](int64_t k) { return *reinterpret_cast<const float*>(x + k * xs); };
  for (int64_t k = 0; k < r0; ++k) y[k] = in(k);
  for (int i = 0; i < half; ++i) {
    const int64_t k0 = r0 + (p.interleaved ? 2 * i : i);
    const int64_t k1 = p.interleaved ? k0 + 1 : k0 + half;
    const float x0 = in(k0), x1 = in(k1);
    y[k0] = x0 * cs[i] - x1 * sn[i];
    y[k1] = x0 * sn[i] + x1 * cs[i];
  }
}

void kernel_ROPE(const exec& ex, tensor* dst) {
  const tensor* a = dst->src[0];
  const tensor* pos = dst->src[1];
  const rope_params p = params::rope_of(dst);
  const std::vector<double> freqs = rope_freqs(p);
  const int64_t D = a->ne[0], H = a->ne[1], T = a->ne[2], B = a->ne[3];
  parallel_for(ex, T * B, H * D, [&](int64_t tb) {
    const int64_t t = tb % T, b = tb / T;
    const int32_t position = *reinterpret_cast<const int32_t*>(at(pos, t, 0, 0, 0));
    thread_local std::vector<float> cs, sn;
    cs.resize(size_t(p.n_rot / 2));
    sn.resize(size_t(p.n_rot / 2));
    rope_angles(p, freqs, position, cs.data(), sn.data());
    for (int64_t h = 0; h < H; ++h)
      rope_row(p, at(a, 0, h, t, b), a->nb[0], reinterpret_cast<float*>(at(dst, 0, h, t, b)), D, cs.data(), sn.data());
  });
}

void kernel_HADAMARD(const exec& ex, tensor* dst) {
  const tensor* a = dst->src[0];
  const float scale = dst->param_f(0);
  const int64_t n = a->ne[0];
  parallel_for(ex, dst->nrows(), n * 8, [&](int64_t r) {
    const row_index i = split_row(dst, r);
    const char* x = at(a, 0, i.i1, i.i2, i.i3);
    float* y = frow(dst, r);
    for (int64_t k = 0; k < n; ++k) y[k] = *reinterpret_cast<const float*>(x + k * a->nb[0]);
    for (int64_t h = 1; h < n; h *= 2)  // Sylvester order: butterflies of growing span
      for (int64_t j0 = 0; j0 < n; j0 += 2 * h)
        for (int64_t j = j0; j < j0 + h; ++j) {
          const float u = y[j], v = y[j + h];
          y[j] = u + v;
          y[j + h] = u - v;
        }
    for (int64_t k = 0; k < n; ++k) y[k] *= scale;
  });
}

}  // namespace v4::cpu

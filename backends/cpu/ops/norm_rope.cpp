// NORM_ROPE (tensor/ops.h): per-head RMSNorm (optionally weighted), RoPE and the optional FP8 round
// trip of one row, fused. Each step is the unfused kernel's own code on the same values: rms_norm's
// sum_sq and scale (reduce.cpp), mul's v.mul by the weight (rms_norm_w), rope's angles and rotation
// (rope.h, turning the normalised row in place), the FP8_ROUNDTRIP row function (quant/fp8.h),
// so the node gives the bits of rms_norm[_w] -> rope -> fp8_roundtrip.
#include <cmath>
#include <vector>

#include "backends/cpu/ops/common.h"
#include "backends/cpu/ops/rope.h"
#include "quant/fp8.h"

namespace v4::cpu {

void kernel_NORM_ROPE(const exec& ex, tensor* dst) {
  const tensor* a = dst->src[0];
  const tensor* pos = dst->src[1];
  const tensor* w = dst->src[2];
  const rope_params p = params::rope_of(dst);
  const float eps = dst->param_f(8);
  const int fp8_block = dst->param_i(9);
  const int64_t fp8_n = dst->param_i(10);
  const vec::table& v = vec::best();
  const int64_t n = a->ne[0];
  const std::vector<double> freqs = rope_freqs(p);
  std::vector<float> wr;  // the weight row, packed once (read by every row)
  if (w) {
    wr.resize(size_t(n));
    for (int64_t k = 0; k < n; ++k) wr[size_t(k)] = *reinterpret_cast<const float*>(at(w, k, 0, 0, 0));
  }
  // The angles of every position first (T of them, shared by the H x B rows of each).
  const int64_t T = a->ne[2], half = p.n_rot / 2;
  std::vector<float> cs(size_t(T * half)), sn(size_t(T * half));
  parallel_for(ex, T, half * 64, [&](int64_t t) {
    const int32_t position = *reinterpret_cast<const int32_t*>(at(pos, t, 0, 0, 0));
    rope_angles(p, freqs, position, &cs[size_t(t * half)], &sn[size_t(t * half)]);
  });
  parallel_for(ex, dst->nrows(), n * 4, [&](int64_t r) {
    thread_local std::vector<float> tmp;
    const row_index i = split_row(dst, r);
    // The source row, packed (gathered into tmp when dim 0 is strided).
    const float* x = packed_f32(at(a, 0, i.i1, i.i2, i.i3), a->nb[0], n, tmp);
    const float mean_sq = v.sum_sq(x, n) / float(n);
    const float s = 1.0f / std::sqrt(mean_sq + eps);
    float* y = frow(dst, r);
    v.scale(x, s, 0.0f, y, n);
    if (w) v.mul(y, wr.data(), y, n);

    const size_t t0 = size_t(i.i2 * half);
    rope_row(p, reinterpret_cast<const char*>(y), sizeof(float), y, n, &cs[t0], &sn[t0]);
    if (fp8_block > 0) quant::fp8_roundtrip_row(y, y, fp8_n, fp8_block, quant::kFp8AmaxFloor);
  });
}

}  // namespace v4::cpu

// HC_PRE (tensor/ops.h: mHC's pre chain, fused): the unfused chain's own CPU kernels, called in
// the chain's order on nodes made here that point into the output's regions (or scratch rows), so
// the fused node gives the bits of the chain by construction, with the same parameters:
//   [hc_post ->] rms_norm -> matmul -> hc_mix -> hc_sum -> rms_norm_w [-> fp8_roundtrip].
// The CPU gains nothing from the fusion but the graph's smaller size; the point is the CUDA kernel
// (backends/cuda/ops_mix.cu), and this is its oracle as well as its fallback.
#include <algorithm>
#include <vector>

#include "backends/cpu/ops/common.h"
#include "quant/fp8.h"

namespace v4::cpu {

namespace {

// A contiguous f32 node of op `op` over data (not owned) with sources srcs.
tensor step_node(op_kind op, float* data, std::initializer_list<int64_t> ne, std::initializer_list<tensor*> srcs) {
  tensor t;
  t.type = dtype::f32;
  t.op = op;
  int d = 0;
  for (int64_t n : ne) t.ne[d++] = n;
  t.nb[0] = sizeof(float);
  for (int i = 1; i < kMaxDims; ++i) t.nb[i] = t.nb[i - 1] * size_t(t.ne[i - 1]);
  t.data = data;
  int s = 0;
  for (tensor* src : srcs) t.src[s++] = src;
  return t;
}

}  // namespace

void kernel_HC_PRE(const exec& ex, tensor* dst) {
  tensor* X = dst->src[0];
  tensor* fn = dst->src[1];
  tensor* base = dst->src[2];
  tensor* norm = dst->src[3];
  const hc_pre_layout l = hc_pre_layout_of(dst);
  const int64_t D = l.D, HC = l.HC, T = l.T, M = l.M;
  const float rms_eps = dst->param_f(5);
  float* out = static_cast<float*>(dst->data);

  // S: hc_post(f, X, w_post) into its region, or X itself (contiguous, the constructor checks).
  tensor post = step_node(op_kind::HC_POST, out + l.s, {D, HC, T}, {dst->src[4], X, dst->src[5]});
  if (l.post) kernel_HC_POST(ex, &post);
  tensor* S = l.post ? &post : X;

  // mix = matmul(fn, rms_norm(S as [HC*D, T])): the hc_fn projection of the normalised streams.
  thread_local std::vector<float> normed, mix, summed;
  normed.resize(size_t(HC * D * T));
  mix.resize(size_t(M * T));
  summed.resize(size_t(D * T));
  tensor flat = step_node(op_kind::RESHAPE, static_cast<float*>(S->data), {HC * D, T}, {S});
  tensor norm_all = step_node(op_kind::RMS_NORM, normed.data(), {HC * D, T}, {&flat});
  norm_all.set_param_f(0, rms_eps);
  kernel_RMS_NORM(ex, &norm_all);
  tensor proj = step_node(op_kind::MATMUL, mix.data(), {M, T}, {fn, &norm_all});
  kernel_MATMUL(ex, &proj);

  // W = hc_mix(mix): pre, then (post[k], comb[k][.]) per stream k; hc_mix's parameter words.
  tensor w = step_node(op_kind::HC_MIX, out + l.w, {M, T}, {&proj, base});
  for (int i = 0; i < 3; ++i) w.set_param_f(i, dst->param_f(i));
  w.set_param_i(3, dst->param_i(3));
  w.set_param_f(4, dst->param_f(4));
  w.set_param_i(5, int32_t(HC));
  kernel_HC_MIX(ex, &w);

  // u = rms_norm_w(hc_sum(S, pre), norm): pre is W's first HC values of each token (a view).
  tensor pre = step_node(op_kind::VIEW, out + l.w, {1, HC, T}, {&w});
  pre.nb[1] = sizeof(float);
  pre.nb[2] = size_t(M) * sizeof(float);
  pre.nb[3] = pre.nb[2] * size_t(T);
  tensor sum = step_node(op_kind::HC_SUM, summed.data(), {D, T}, {S, &pre});
  kernel_HC_SUM(ex, &sum);
  tensor u = step_node(op_kind::RMS_NORM_W, out + l.u, {D, T}, {&sum, norm});
  u.set_param_f(0, rms_eps);
  u.set_param_i(1, 0);
  kernel_RMS_NORM_W(ex, &u);

  // q = fp8_roundtrip(u, block) over whole rows (fp8_roundtrip's parameter words).
  if (l.fp8) {
    tensor q = step_node(op_kind::FP8_ROUNDTRIP, out + l.q, {D, T}, {&u});
    q.set_param_i(0, dst->param_i(6));
    q.set_param_i(1, int32_t(D));
    q.set_param_f(2, quant::kFp8AmaxFloor);
    kernel_FP8_ROUNDTRIP(ex, &q);
  }

  // Prefill-sized scratch (HC*D floats per token: 16 MiB for a 256-token chunk of V4-Flash) is
  // given back; decode's stays for the next call.
  constexpr size_t kKeepFloats = size_t(1) << 18;
  if (normed.capacity() > kKeepFloats) std::vector<float>().swap(normed);
  if (summed.capacity() > kKeepFloats) std::vector<float>().swap(summed);

  // The padding between the regions holds zeros (tensor/ops.h).
  auto zero = [&](int64_t from, int64_t to) { std::fill(out + from, out + to, 0.0f); };
  zero(l.s + (l.post ? D * HC * T : 0), l.u);
  zero(l.u + D * T, l.q);
  zero(l.q + (l.fp8 ? D * T : 0), l.w);
  zero(l.w + M * T, l.total);
}

}  // namespace v4::cpu

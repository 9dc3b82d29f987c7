// The MoE router's fused ops: route_topk, route_weights (tensor/ops.h).
//
// Each gives the bits of the chain it replaces (softplus, sqrt, add, top_k; gather, sum, div, scale)
// by calling the functions those kernels call, on the same operands in the same order:
//  * softplus is the vector table's, run over the WHOLE row of E logits as the softplus kernel runs
//    it: a SIMD approximation may round an element differently in the vector body and in the tail,
//    so evaluating only the k chosen logits could change a bit. (E is a few hundred: cheap.)
//  * sqrt is std::sqrt (correctly rounded); add, div and scale are the vector table's (exact, or one
//    fused rounding: the same bits on every ISA); the sum is the vector table's sum over the k
//    contiguous weights, as the sum kernel reduces a packed row; the choice is top_k's own ranking.
#include <cmath>
#include <vector>

#include "backends/cpu/ops/common.h"
#include "backends/cpu/ops/rank.h"

namespace v4::cpu {

namespace {

// Row (i1, i2, i3) of t, n floats: the row itself when packed, else copied into tmp.
const float* f32_row(const tensor* t, int64_t i1, int64_t i2, int64_t i3, int64_t n, std::vector<float>& tmp) {
  const char* p = at(t, 0, i1, i2, i3);
  if (t->nb[0] == sizeof(float)) return reinterpret_cast<const float*>(p);
  tmp.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) tmp[size_t(i)] = *reinterpret_cast<const float*>(p + i * t->nb[0]);
  return tmp.data();
}

}  // namespace

void kernel_ROUTE_TOPK(const exec& ex, tensor* dst) {
  const tensor* logits = dst->src[0];
  const tensor* bias = dst->src[1];
  const int k = dst->param_i(0);
  const int64_t E = logits->ne[0];
  const vec::table& v = vec::best();
  std::vector<float> bias_tmp;
  const float* b = bias ? f32_row(bias, 0, 0, 0, E, bias_tmp) : nullptr;
  parallel_for(ex, dst->nrows(), E * 16, [&](int64_t r) {
    thread_local std::vector<float> x_tmp, score;
    thread_local std::vector<int32_t> order;
    const row_index i = split_row(dst, r);
    score.resize(size_t(E));
    v.softplus(f32_row(logits, i.i1, i.i2, i.i3, E, x_tmp), score.data(), E);
    for (int64_t e = 0; e < E; ++e) score[size_t(e)] = std::sqrt(score[size_t(e)]);  // s = sqrtsoftplus
    if (b) v.add(score.data(), b, score.data(), E);                                   // the choice's bias
    top_k_order(score.data(), E, k, order);
    int32_t* y = reinterpret_cast<int32_t*>(row(dst, r));
    for (int j = 0; j < k; ++j) y[j] = order[size_t(j)];
  });
}

void kernel_ROUTE_WEIGHTS(const exec& ex, tensor* dst) {
  const tensor* logits = dst->src[0];
  const tensor* ids = dst->src[1];
  const bool normalize = dst->param_i(0) != 0;
  const float scale = dst->param_f(1);
  const int64_t E = logits->ne[0], k = dst->ne[0];
  const vec::table& v = vec::best();
  parallel_for(ex, dst->nrows(), E, [&](int64_t r) {
    thread_local std::vector<float> x_tmp, sp, w, total;
    const row_index i = split_row(dst, r);
    sp.resize(size_t(E));
    w.resize(size_t(k));
    v.softplus(f32_row(logits, i.i1, i.i2, i.i3, E, x_tmp), sp.data(), E);  // the whole row: see the top
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = *reinterpret_cast<const int32_t*>(at(ids, j, i.i1, i.i2, i.i3));
      w[size_t(j)] = std::sqrt(sp[size_t(e)]);
    }
    if (normalize) {
      total.assign(size_t(k), v.sum(w.data(), k));  // the divisor broadcast over the row, as div sees it
      v.div(w.data(), total.data(), w.data(), k);
    }
    v.scale(w.data(), scale, 0.0f, frow(dst, r), k);
  });
}

}  // namespace v4::cpu

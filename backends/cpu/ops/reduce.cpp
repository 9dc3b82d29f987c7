// Reductions and row normalisations: sum, max (over any dim), rms_norm, softmax (mask + sink).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backends/cpu/ops/common.h"

namespace v4::cpu {

namespace {

// Reduction of a over dimension `dim` into dst (dst.ne[dim] == 1).
template <typename RowF, typename StridedF>
void reduce(const exec& ex, tensor* dst, RowF&& row_reduce, StridedF&& step, float init) {
  const tensor* a = dst->src[0];
  const int dim = dst->param_i(0);
  if (dim == 0) {
    parallel_for(ex, dst->nrows(), a->ne[0], [&](int64_t r) {
      const row_index i = split_row(dst, r);
      const char* p = at(a, 0, i.i1, i.i2, i.i3);
      if (a->nb[0] == sizeof(float)) {
        *frow(dst, r) = row_reduce(reinterpret_cast<const float*>(p), a->ne[0]);
      } else {
        float acc = init;
        for (int64_t k = 0; k < a->ne[0]; ++k) acc = step(acc, *reinterpret_cast<const float*>(p + k * a->nb[0]));
        *frow(dst, r) = acc;
      }
    });
    return;
  }
  // Other dims: each output element walks a strided line of a.
  const int64_t n_out = dst->nelements();
  parallel_for(ex, n_out, a->ne[dim], [&](int64_t e) {
    int64_t idx[kMaxDims];
    int64_t rest = e;
    for (int d = 0; d < kMaxDims; ++d) {
      idx[d] = rest % dst->ne[d];
      rest /= dst->ne[d];
    }
    const char* p = at(a, idx[0], idx[1], idx[2], idx[3]);
    float acc = init;
    for (int64_t k = 0; k < a->ne[dim]; ++k) acc = step(acc, *reinterpret_cast<const float*>(p + k * a->nb[dim]));
    *reinterpret_cast<float*>(at(dst, idx[0], idx[1], idx[2], idx[3])) = acc;
  });
}

}  // namespace

void kernel_SUM(const exec& ex, tensor* dst) {
  const auto sum = vec::best().sum;
  reduce(ex, dst, sum, [](float acc, float v) { return acc + v; }, 0.0f);
}

void kernel_MAX(const exec& ex, tensor* dst) {
  const auto mx = vec::best().max;
  // NaN-propagating is not promised; max of numbers (as torch.amax for finite input).
  reduce(ex, dst, mx, [](float acc, float v) { return v > acc ? v : acc; }, -std::numeric_limits<float>::infinity());
}

void kernel_RMS_NORM(const exec& ex, tensor* dst) {
  const tensor* a = dst->src[0];
  const float eps = dst->param_f(0);
  const vec::table& v = vec::best();
  const int64_t n = a->ne[0];
  parallel_for(ex, dst->nrows(), n, [&](int64_t r) {
    thread_local std::vector<float> tmp;
    const row_index i = split_row(dst, r);
    const float* x = packed_f32(at(a, 0, i.i1, i.i2, i.i3), a->nb[0], n, tmp);
    const float mean_sq = v.sum_sq(x, n) / float(n);
    const float s = 1.0f / std::sqrt(mean_sq + eps);
    v.scale(x, s, 0.0f, frow(dst, r), n);
  });
}

namespace {
// One n x n matrix: a[j n + k] = element (k, j) of tensor/ops.h's sinkhorn; the result c in the
// same layout. Plain loops in f32, in the order of tensor/ops.h (SINKHORN and HC_MIX share it).
void sinkhorn_matrix(const float* a, int64_t n, int iters, float eps, float* c) {
  for (int64_t j = 0; j < n; ++j) {  // softmax over k of each j, + eps
    float mx = -INFINITY;
    for (int64_t k = 0; k < n; ++k) mx = std::max(mx, a[j * n + k]);
    float s = 0;
    for (int64_t k = 0; k < n; ++k) s += c[j * n + k] = std::exp(a[j * n + k] - mx);
    for (int64_t k = 0; k < n; ++k) c[j * n + k] = c[j * n + k] / s + eps;
  }
  // Divides each line a of c (element b at c[a * outer + b * inner]) by its sum + eps, summing
  // in order of b: columns (over j, for each k) with outer 1, inner n; rows with outer n, inner 1.
  auto normalize = [&](int64_t outer, int64_t inner) {
    for (int64_t a = 0; a < n; ++a) {
      float s = 0;
      for (int64_t b = 0; b < n; ++b) s += c[a * outer + b * inner];
      s += eps;
      for (int64_t b = 0; b < n; ++b) c[a * outer + b * inner] /= s;
    }
  };
  auto col_norm = [&] { normalize(1, n); };
  auto row_norm = [&] { normalize(n, 1); };
  col_norm();
  for (int it = 1; it < iters; ++it) {
    row_norm();
    col_norm();
  }
}
}  // namespace

// One small matrix per task (n = 4 in V4).
void kernel_SINKHORN(const exec& ex, tensor* dst) {
  const tensor* a = dst->src[0];
  const int iters = dst->param_i(0);
  const float eps = dst->param_f(1);
  const int64_t n = a->ne[0], mats = a->ne[2] * a->ne[3];
  parallel_for(ex, mats, n * n * iters * 4, [&](int64_t m) {
    thread_local std::vector<float> in;
    const int64_t i2 = m % a->ne[2], i3 = m / a->ne[2];
    in.resize(size_t(n * n));
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < n; ++k) in[size_t(j * n + k)] = *reinterpret_cast<const float*>(at(a, k, j, i2, i3));
    sinkhorn_matrix(in.data(), n, iters, eps, reinterpret_cast<float*>(at(dst, 0, 0, i2, i3)));
  });
}

// Per token: the unfused chain's vector functions on the same values (scale, add, sigmoid, scale;
// the sinkhorn above), so the same bits; then the hc_post layout (tensor/ops.h).
void kernel_HC_MIX(const exec& ex, tensor* dst) {
  const tensor* mix = dst->src[0];
  const float* base = reinterpret_cast<const float*>(dst->src[1]->data);
  const float s0 = dst->param_f(0), s1 = dst->param_f(1), s2 = dst->param_f(2), eps = dst->param_f(4);
  const int iters = dst->param_i(3);
  const int64_t n = dst->param_i(5);
  const vec::table& v = vec::best();
  parallel_for(ex, dst->nrows(), n * n * iters * 4, [&](int64_t r) {
    thread_local std::vector<float> t, a, c;
    t.resize(size_t(n));
    a.resize(size_t(n * n));
    c.resize(size_t(n * n));
    const row_index i = split_row(dst, r);
    const float* m = reinterpret_cast<const float*>(at(mix, 0, i.i1, i.i2, i.i3));
    float* out = frow(dst, r);
    v.scale(m, s0, 0.0f, t.data(), n);  // pre
    v.add(t.data(), base, t.data(), n);
    v.sigmoid(t.data(), t.data(), n);
    v.scale(t.data(), 1.0f, eps, out, n);
    v.scale(m + n, s1, 0.0f, t.data(), n);  // post
    v.add(t.data(), base + n, t.data(), n);
    v.sigmoid(t.data(), t.data(), n);
    v.scale(t.data(), 2.0f, 0.0f, t.data(), n);
    v.scale(m + 2 * n, s2, 0.0f, a.data(), n * n);  // comb
    v.add(a.data(), base + 2 * n, a.data(), n * n);
    sinkhorn_matrix(a.data(), n, iters, eps, c.data());
    for (int64_t k = 0; k < n; ++k) {
      float* row = out + n + k * (n + 1);
      row[0] = t[size_t(k)];
      for (int64_t j = 0; j < n; ++j) row[1 + j] = c[size_t(j * n + k)];
    }
  });
}

void kernel_SOFTMAX(const exec& ex, tensor* dst) {
  const tensor* a = dst->src[0];
  const tensor* mask = dst->src[1];
  const tensor* sink = dst->src[2];
  const float scale = dst->param_f(0);
  const vec::table& v = vec::best();
  const int64_t n = a->ne[0];
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  parallel_for(ex, dst->nrows(), n, [&](int64_t r) {
    const row_index i = split_row(dst, r);
    float* y = frow(dst, r);
    const char* p = at(a, 0, i.i1, i.i2, i.i3);
    for (int64_t k = 0; k < n; ++k) y[k] = *reinterpret_cast<const float*>(p + k * a->nb[0]) * scale;
    if (mask) {
      const char* m = at(mask, 0, i.i1 % mask->ne[1], i.i2 % mask->ne[2], i.i3 % mask->ne[3]);
      for (int64_t k = 0; k < n; ++k) y[k] += *reinterpret_cast<const float*>(m + k * mask->nb[0]);
    }
    const float s = sink ? *reinterpret_cast<const float*>(at(sink, i.i2, 0, 0, 0)) : kNegInf;
    const float m = std::max(v.max(y, n), s);
    if (m == kNegInf) {  // every logit masked and no sink
      for (int64_t k = 0; k < n; ++k) y[k] = 0.0f;
      return;
    }
    float denom = v.exp_sum(y, m, y, n);
    if (sink) denom += std::exp(s - m);
    v.scale(y, 1.0f / denom, 0.0f, y, n);
  });
}

}  // namespace v4::cpu

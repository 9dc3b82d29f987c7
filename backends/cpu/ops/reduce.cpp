// Reductions and row normalisations: sum, max (over any dim), rms_norm, softmax (mask + sink).
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
    const char* p = at(a, 0, i.i1, i.i2, i.i3);
    const float* x = reinterpret_cast<const float*>(p);
    if (a->nb[0] != sizeof(float)) {
      tmp.resize(size_t(n));
      for (int64_t k = 0; k < n; ++k) tmp[k] = *reinterpret_cast<const float*>(p + k * a->nb[0]);
      x = tmp.data();
    }
    const float mean_sq = v.sum_sq(x, n) / float(n);
    const float s = 1.0f / std::sqrt(mean_sq + eps);
    v.scale(x, s, 0.0f, frow(dst, r), n);
  });
}

// One (query, head) per task: scores against every key row, softmax with the sink, then the
// weighted sum of the same rows. f32 throughout; the loops over D are contiguous (vectorised).
void kernel_ATTN_MQA(const exec& ex, tensor* dst) {
  const tensor* q = dst->src[0];
  const tensor* kv = dst->src[1];
  const tensor* mask = dst->src[2];
  const tensor* sink = dst->src[3];
  const float scale = dst->param_f(0);
  const int64_t D = q->ne[0], T = q->ne[1], H = q->ne[2], NK = kv->ne[1];
  parallel_for(ex, T * H, NK * D * 2, [&](int64_t r) {
    const int64_t t = r % T, h = r / T;
    const float* qv = reinterpret_cast<const float*>(at(q, 0, t, h, 0));
    float* y = reinterpret_cast<float*>(at(dst, 0, t, h, 0));
    thread_local std::vector<float> s;
    s.resize(size_t(NK));
    float M = sink ? *reinterpret_cast<const float*>(at(sink, h, 0, 0, 0)) : -INFINITY;
    const float sink_logit = M;
    for (int64_t j = 0; j < NK; ++j) {
      const float* k = reinterpret_cast<const float*>(at(kv, 0, j, 0, 0));
      float acc = 0;
      for (int64_t d = 0; d < D; ++d) acc += qv[d] * k[d];
      const float m = mask ? *reinterpret_cast<const float*>(at(mask, j, t, 0, 0)) : 0.0f;
      s[size_t(j)] = acc * scale + m;
      M = std::max(M, s[size_t(j)]);
    }
    for (int64_t d = 0; d < D; ++d) y[d] = 0;
    if (M == -INFINITY) return;  // nothing visible and no sink: zeros
    float sum = sink ? std::exp(sink_logit - M) : 0.0f;
    for (int64_t j = 0; j < NK; ++j) {
      const float e = std::exp(s[size_t(j)] - M);
      s[size_t(j)] = e;
      sum += e;
    }
    for (int64_t j = 0; j < NK; ++j) {
      const float w = s[size_t(j)];
      if (w == 0) continue;
      const float* k = reinterpret_cast<const float*>(at(kv, 0, j, 0, 0));
      for (int64_t d = 0; d < D; ++d) y[d] += w * k[d];
    }
    const float inv = 1.0f / sum;
    for (int64_t d = 0; d < D; ++d) y[d] *= inv;
  });
}

// One small matrix per task (n = 4 in V4): plain loops in f32, the order of tensor/ops.h.
void kernel_SINKHORN(const exec& ex, tensor* dst) {
  const tensor* a = dst->src[0];
  const int iters = dst->param_i(0);
  const float eps = dst->param_f(1);
  const int64_t n = a->ne[0], mats = a->ne[2] * a->ne[3];
  parallel_for(ex, mats, n * n * iters * 4, [&](int64_t m) {
    const int64_t i2 = m % a->ne[2], i3 = m / a->ne[2];
    float* c = reinterpret_cast<float*>(at(dst, 0, 0, i2, i3));  // contiguous [n, n]
    for (int64_t j = 0; j < n; ++j) {  // softmax over k of each j, + eps
      float mx = -INFINITY;
      for (int64_t k = 0; k < n; ++k) mx = std::max(mx, *reinterpret_cast<const float*>(at(a, k, j, i2, i3)));
      float s = 0;
      for (int64_t k = 0; k < n; ++k) s += c[j * n + k] = std::exp(*reinterpret_cast<const float*>(at(a, k, j, i2, i3)) - mx);
      for (int64_t k = 0; k < n; ++k) c[j * n + k] = c[j * n + k] / s + eps;
    }
    auto col_norm = [&] {  // over j, for each k
      for (int64_t k = 0; k < n; ++k) {
        float s = 0;
        for (int64_t j = 0; j < n; ++j) s += c[j * n + k];
        s += eps;
        for (int64_t j = 0; j < n; ++j) c[j * n + k] /= s;
      }
    };
    auto row_norm = [&] {  // over k, for each j
      for (int64_t j = 0; j < n; ++j) {
        float s = 0;
        for (int64_t k = 0; k < n; ++k) s += c[j * n + k];
        s += eps;
        for (int64_t k = 0; k < n; ++k) c[j * n + k] /= s;
      }
    };
    col_norm();
    for (int it = 1; it < iters; ++it) {
      row_norm();
      col_norm();
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

// Elementwise kernels: add, sub, mul, div (with broadcasting), scale, clamp, unary functions.
// Results are contiguous f32; sources may be strided.
#include <cmath>
#include <vector>

#include "backends/cpu/ops/common.h"

namespace v4::cpu {

namespace {

// Row r of t (rows addressed by (i1, i2, i3), repeated where t has size 1) as contiguous floats:
// the row itself when packed, else gathered into tmp.
const float* load_row(const tensor* t, int64_t i1, int64_t i2, int64_t i3, int64_t n, std::vector<float>& tmp) {
  const char* p = at(t, 0, i1 % t->ne[1], i2 % t->ne[2], i3 % t->ne[3]);
  if (t->ne[0] == n && t->nb[0] == sizeof(float)) return reinterpret_cast<const float*>(p);
  tmp.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) tmp[i] = *reinterpret_cast<const float*>(p + (t->ne[0] == 1 ? 0 : i * t->nb[0]));
  return tmp.data();
}

using binary_fn = void (*)(const float*, const float*, float*, int64_t);
using unary_fn = void (*)(const float*, float*, int64_t);

void binary(const exec& ex, tensor* dst, binary_fn vec::table::*fn) {
  const tensor* a = dst->src[0];
  const tensor* b = dst->src[1];
  const binary_fn f = vec::best().*fn;
  const int64_t n = dst->ne[0];
  parallel_for(ex, dst->nrows(), n, [&](int64_t r) {
    thread_local std::vector<float> ta, tb;
    const row_index i = split_row(dst, r);
    f(load_row(a, i.i1, i.i2, i.i3, n, ta), load_row(b, i.i1, i.i2, i.i3, n, tb), frow(dst, r), n);
  });
}

template <typename F>
void unary(const exec& ex, tensor* dst, F&& f) {
  const tensor* a = dst->src[0];
  const int64_t n = dst->ne[0];
  parallel_for(ex, dst->nrows(), n, [&](int64_t r) {
    thread_local std::vector<float> ta;
    const row_index i = split_row(dst, r);
    f(load_row(a, i.i1, i.i2, i.i3, n, ta), frow(dst, r), n);
  });
}

void unary_vec(const exec& ex, tensor* dst, unary_fn vec::table::*fn) {
  const unary_fn f = vec::best().*fn;
  unary(ex, dst, f);
}

}  // namespace

void kernel_ADD(const exec& ex, tensor* dst) { binary(ex, dst, &vec::table::add); }
void kernel_SUB(const exec& ex, tensor* dst) { binary(ex, dst, &vec::table::sub); }
void kernel_MUL(const exec& ex, tensor* dst) { binary(ex, dst, &vec::table::mul); }
void kernel_DIV(const exec& ex, tensor* dst) { binary(ex, dst, &vec::table::div); }

void kernel_SCALE(const exec& ex, tensor* dst) {
  const float s = dst->param_f(0), b = dst->param_f(1);
  const auto f = vec::best().scale;
  unary(ex, dst, [&](const float* x, float* y, int64_t n) { f(x, s, b, y, n); });
}

void kernel_CLAMP(const exec& ex, tensor* dst) {
  const float lo = dst->param_f(0), hi = dst->param_f(1);
  unary(ex, dst, [&](const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] < lo ? lo : x[i] > hi ? hi : x[i];  // NaN passes through
  });
}

void kernel_SQRT(const exec& ex, tensor* dst) {
  unary(ex, dst, [](const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = std::sqrt(x[i]);
  });
}

void kernel_RELU(const exec& ex, tensor* dst) {
  unary(ex, dst, [](const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : (x[i] != x[i] ? x[i] : 0.0f);
  });
}

void kernel_EXP(const exec& ex, tensor* dst) { unary_vec(ex, dst, &vec::table::exp); }
void kernel_SILU(const exec& ex, tensor* dst) { unary_vec(ex, dst, &vec::table::silu); }
void kernel_SIGMOID(const exec& ex, tensor* dst) { unary_vec(ex, dst, &vec::table::sigmoid); }
void kernel_SOFTPLUS(const exec& ex, tensor* dst) { unary_vec(ex, dst, &vec::table::softplus); }

}  // namespace v4::cpu

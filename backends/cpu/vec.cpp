// The scalar table (the reference every SIMD table is tested against) and run-time dispatch.
//
// Reference choices: exact ops are the plain float expressions (scale is fused, std::fma);
// transcendental functions are evaluated in double and rounded once, so they are within about
// 0.5 ulp, subnormal results included; reductions accumulate in double.
#include <cmath>

#include "backends/cpu/arch/vec_arch.h"
#include "backends/cpu/vec.h"
#include "tensor/tensor.h"

namespace v4::cpu::vec {
namespace {

void add(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}
void sub(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] - b[i];
}
void mul(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
}
void div(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] / b[i];
}
void scale(const float* a, float s, float b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::fma(a[i], s, b);
}

// sigmoid in double through u = exp(-|x|) in [0, 1]: no overflow, no lost subnormal range.
double sigmoid_d(double x) {
  const double u = std::exp(-std::fabs(x));
  return (x >= 0 ? 1.0 : u) / (1.0 + u);
}

void exp(const float* a, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = float(std::exp(double(a[i])));
}
// silu(-inf) = -0, the limit (x * sigmoid(x) would be -inf * 0 = NaN).
void silu(const float* a, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] == -INFINITY ? -0.0f : float(double(a[i]) * sigmoid_d(a[i]));
}
void sigmoid(const float* a, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = float(sigmoid_d(a[i]));
}
void softplus(const float* a, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] > 20.0f ? a[i] : float(std::log1p(std::exp(double(a[i]))));
}

float sum(const float* a, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i];
  return float(s);
}
// NaN elements are skipped (a NaN never compares greater).
float max(const float* a, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) m = a[i] > m ? a[i] : m;
  return m;
}
float sum_sq(const float* a, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * a[i];
  return float(s);
}
float dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(a[i]) * b[i];
  return float(s);
}
// a[i] - m is rounded to float first, as every SIMD table does.
float exp_sum(const float* a, float m, float* y, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    y[i] = float(std::exp(double(a[i] - m)));
    s += y[i];
  }
  return float(s);
}

void f16_to_f32(const uint16_t* a, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = v4::f16_to_f32(a[i]);
}
void f32_to_f16(const float* a, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = v4::f32_to_f16(a[i]);
}
void bf16_to_f32(const uint16_t* a, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = v4::bf16_to_f32(a[i]);
}
void f32_to_bf16(const float* a, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = v4::f32_to_bf16(a[i]);
}

}  // namespace

const table& scalar() {
  static const table t{"scalar",   add,        sub,         mul,         div,     scale,   exp,
                       silu,       sigmoid,    softplus,    sum,         max,     sum_sq,  dot,
                       exp_sum,    f16_to_f32, f32_to_f16,  bf16_to_f32, f32_to_bf16};
  return t;
}

const table* for_isa(isa level) {
  if (!isa_available(level)) return nullptr;
  switch (level) {
    case isa::scalar: return &scalar();
#if defined(__x86_64__)
    case isa::avx2: return table_avx2();
    case isa::avx512: return table_avx512();
#endif
#if defined(__aarch64__)
    case isa::neon: return table_neon();
#endif
    default: return nullptr;
  }
}

// Looked up on every call: tests (and users) may lower the cap at any time.
const table& best() {
  for (const isa level : {isa::avx512, isa::avx2, isa::neon}) {
    if (!isa_allowed(level)) continue;
    if (const table* t = for_isa(level)) return *t;
  }
  return scalar();
}

}  // namespace v4::cpu::vec

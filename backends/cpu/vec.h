// Vector primitives on contiguous float rows, one table per ISA level.
// Every function takes any n >= 0 and any alignment. The scalar table is the reference each
// SIMD table is tested against (tests/cpu/test_vec.cpp), at lengths and misalignments around
// the vector width.
//
// Accuracy contract (tested): add/sub/mul/div/scale and the conversions are exact (the same
// bits as the scalar table; f32->f16/bf16 round to nearest even, NaN stays NaN); exp, silu,
// sigmoid, softplus within 4 ulp of the correctly rounded float result (relative 5e-7), finite
// for finite input, exp(-inf) = 0, exp of large inputs = +inf; reductions (sum, sum_sq, dot,
// exp_sum) may reorder additions: within n * 2^-23 * sum|terms| of the exact value.
#pragma once

#include <cstdint>

#include "backends/cpu/cpu.h"

namespace v4::cpu::vec {

struct table {
  const char* name;
  void (*add)(const float* a, const float* b, float* y, int64_t n);
  void (*sub)(const float* a, const float* b, float* y, int64_t n);
  void (*mul)(const float* a, const float* b, float* y, int64_t n);
  void (*div)(const float* a, const float* b, float* y, int64_t n);
  void (*scale)(const float* a, float s, float b, float* y, int64_t n);   // y = a*s + b
  void (*exp)(const float* a, float* y, int64_t n);
  void (*silu)(const float* a, float* y, int64_t n);
  void (*sigmoid)(const float* a, float* y, int64_t n);
  void (*softplus)(const float* a, float* y, int64_t n);                 // = a for a > 20
  float (*sum)(const float* a, int64_t n);
  float (*max)(const float* a, int64_t n);                               // -inf for n = 0
  float (*sum_sq)(const float* a, int64_t n);
  float (*dot)(const float* a, const float* b, int64_t n);
  float (*exp_sum)(const float* a, float m, float* y, int64_t n);        // y = exp(a - m); returns sum y
  void (*f16_to_f32)(const uint16_t* a, float* y, int64_t n);
  void (*f32_to_f16)(const float* a, uint16_t* y, int64_t n);
  void (*bf16_to_f32)(const uint16_t* a, float* y, int64_t n);
  void (*f32_to_bf16)(const float* a, uint16_t* y, int64_t n);
};

const table& scalar();
// nullptr when not built in or the host cannot run it.
const table* for_isa(isa level);
// The best table the host runs within isa_limit().
const table& best();

}  // namespace v4::cpu::vec

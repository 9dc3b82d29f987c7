// Vector primitives on contiguous float rows, one table per ISA level.
// Every function takes any n >= 0 and any alignment, writes y[0..n-1] only, and reads nothing
// outside its inputs; y may be the same pointer as an input (in place), other overlaps are not
// supported. The scalar table is the reference each SIMD table is tested against
// (tests/cpu/test_vec.cpp), at lengths and misalignments around the vector width.
//
// Accuracy contract (tested):
//  * add/sub/mul/div/scale are exact: the same bits as the scalar table (NaN payloads aside).
//    scale is fused, y = fma(a, s, b) with one rounding, so every ISA gives the same bits.
//  * The conversions give the same bits as v4::f16_to_f32 / f32_to_f16 / bf16_to_f32 /
//    f32_to_bf16 (tensor/tensor.h), NaN payloads included: f32->f16/bf16 round to nearest even,
//    overflow to inf, NaN stays NaN (quiet); f16->f32 keeps signalling NaNs signalling.
//  * exp, silu, sigmoid, softplus: within 4 ulp of the correctly rounded float result (relative
//    5e-7 in the normal range). An ulp is the spacing of floats at the result, 2^-149 for
//    subnormal results: results underflow gradually, they are not flushed to zero. Finite for
//    finite input, except exp once its rounded result overflows: exp(x) = +inf for
//    x >= 88.72283935546875 (0x42b17218, the first float above ln(FLT_MAX)), finite below;
//    exp(-inf) = 0, sigmoid(-inf) = 0, silu(-inf) = -0 (the limit), softplus(-inf) = 0;
//    NaN in, NaN out. softplus(x) = x exactly for x > 20.
//  * sum, sum_sq, dot and exp_sum's returned sum may reorder additions: within
//    n * 2^-23 * sum|terms| of the exact value. exp_sum's y[i] = exp(a[i] - m) as exp above,
//    of the difference rounded to float.
//  * max is exact; NaN elements are skipped (-inf for n = 0 or all NaN); when +0 and -0 tie
//    for the maximum, either may be returned.
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

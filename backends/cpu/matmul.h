// Matrix-multiply kernels of the CPU backend: y = x @ w^T (see tensor.h for the convention).
//
// One problem = one batch slice: w has M rows of K elements (type wtype, row stride w_stride
// bytes), x has N rows of K f32 (row stride x_stride), y has N rows of M f32 (row stride
// y_stride). Decode shapes have small N (1-16): bandwidth-bound, each weight row read once.
// Prefill shapes have large N: compute-bound, tiled (AMX-BF16 for bf16 weights where present).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "backends/cpu/cpu.h"
#include "tensor/tensor.h"

namespace v4::cpu {

struct mm_problem {
  dtype wtype = dtype::f32;
  const void* w = nullptr;
  size_t w_stride = 0;
  const float* x = nullptr;
  size_t x_stride = 0;
  float* y = nullptr;
  size_t y_stride = 0;
  int64_t M = 0, N = 0, K = 0;
  // Scaled types (fp8_e4m3, mxfp4; see tensor::scales): e8m0 scales of THIS problem's weight
  // rows, scale row r covering weight rows [r*sb_m, (r+1)*sb_m), each scale covering sb_k
  // elements along K; s_stride bytes between scale rows. Row m of w uses scale row m / sb_m.
  const uint8_t* scales = nullptr;
  size_t s_stride = 0;
  int64_t sb_k = 0, sb_m = 0;
};

// A kernel variant: one ISA level (plus optional extension), one set of weight types.
struct mm_variant {
  const char* name;                 // "scalar", "avx2", "avx512", "avx512_bf16", "amx_bf16", "neon", ...
  isa level;                        // the level it needs (capped by isa_limit())
  bool (*available)();              // host check beyond the level (e.g. AMX, AVX512-BF16)
  bool (*supports)(dtype wtype, int64_t M, int64_t N, int64_t K);
  // Runs the whole problem with n_threads OpenMP threads.
  void (*run)(const mm_problem& p, int n_threads);
  // Rounding class, for tests: 0 = products in f32 of the exact inputs (error from summation
  // order only); otherwise the relative precision x is rounded to first (2^-8 for bf16, 2^-11 f16).
  double x_rounding;
  // Second rounding class (x_rounding is then 0): x quantized to int8 per block of this many
  // elements along K before the dot products (0 = not). q8-style: per block d = amax|x| / 127,
  // x' = d * rint(x / d), so |x - x'| <= d / 2 = amax / 254 per element (1 + 2^-20, plus 2^-140
  // absolute for blocks so tiny that d is subnormal), i.e. relative to the block's largest |x|,
  // not to |x_k|. A block holding NaN or inf makes the outputs of its x row NaN. Derivation of
  // the test bound: backends/cpu/qmatmul.cpp (rounding contracts).
  int x_int8_block = 0;
};

// All variants built into this binary (scalar first).
const mm_variant* mm_variants(int* count);

// Shared by the variant tables (matmul.cpp, qmatmul.cpp): lookup by name, and whether a variant
// can run this problem on this host within isa_limit().
inline const mm_variant* mm_find(const mm_variant* table, int count, const char* name) {
  for (int i = 0; i < count; ++i)
    if (std::string_view(table[i].name) == name) return &table[i];
  return nullptr;
}
inline bool mm_usable(const mm_variant* v, dtype t, int64_t M, int64_t N, int64_t K) {
  return v && isa_allowed(v->level) && v->available() && v->supports(t, M, N, K);
}
// The variant matmul() would use for this problem, given the host and isa_limit().
const mm_variant& mm_pick(dtype wtype, int64_t M, int64_t N, int64_t K);
// Computes p with the picked variant. Supports f32, f16 and bf16 weights (block types from
// quant/ are added by issue 3 as further variants).
void matmul(const mm_problem& p, int n_threads);
bool matmul_supports(dtype wtype);

}  // namespace v4::cpu

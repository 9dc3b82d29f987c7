// CPU matmul: the variant table, the pick rules, dispatch, and the scalar reference variant.
// The SIMD variants live in arch/matmul_<isa>.cpp (see arch/matmul_arch.h).
#include "backends/cpu/matmul.h"

#include <cassert>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "backends/cpu/arch/matmul_arch.h"
#include "backends/cpu/qmatmul.h"

namespace v4::cpu {

namespace mm_arch {

void* mm_scratch(scratch_slot slot, size_t bytes) {
  struct block {
    void* p = nullptr;
    size_t size = 0;
    ~block() { std::free(p); }
  };
  static thread_local block blocks[2];
  block& b = blocks[slot];
  if (b.size < bytes) {
    std::free(b.p);
    b.size = 0;
    b.p = std::aligned_alloc(64, size_t(round_up(int64_t(bytes), 64)));
    if (!b.p) return nullptr;
    b.size = bytes;
  }
  return b.p;
}

}  // namespace mm_arch

namespace {

using namespace mm_arch;

bool plain_float(dtype t) { return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16; }
[[maybe_unused]] bool only_bf16(dtype t) { return t == dtype::bf16; }

bool supports_plain(dtype t, int64_t, int64_t, int64_t) { return plain_float(t); }
bool always() { return true; }

// ---- scalar reference -----------------------------------------------------------------------
// Plain C++: each weight row is converted to f32 once, then every output is one f32 sum in k
// order. This is the definition every SIMD variant is tested against (together with the float64
// reference of tests/cpu/test_matmul.cpp), so it stays simple.
void to_f32_row(dtype t, const void* src, float* dst, int64_t K) {
  switch (t) {
    case dtype::f32:
      for (int64_t k = 0; k < K; ++k) dst[k] = static_cast<const float*>(src)[k];
      break;
    case dtype::f16:
      for (int64_t k = 0; k < K; ++k) dst[k] = f16_to_f32(static_cast<const uint16_t*>(src)[k]);
      break;
    case dtype::bf16:
      for (int64_t k = 0; k < K; ++k) dst[k] = bf16_to_f32(static_cast<const uint16_t*>(src)[k]);
      break;
    default:
      assert(false && "scalar matmul: unsupported weight type");
  }
}

void scalar_run(const mm_problem& p, int n_threads) {
  if (handle_empty(p)) return;
  parallel(useful_threads(p, n_threads), [&](int tid, int nth) {
    int64_t m0, m1;
    split(p.M, 1, tid, nth, &m0, &m1);
    std::vector<float> wrow(size_t(p.K));
    for (int64_t m = m0; m < m1; ++m) {
      to_f32_row(p.wtype, row_ptr(p.w, p.w_stride, m), wrow.data(), p.K);
      for (int64_t n = 0; n < p.N; ++n) {
        const float* x = xrow(p, n);
        float acc = 0.0f;
        for (int64_t k = 0; k < p.K; ++k) acc += wrow[size_t(k)] * x[k];
        yrow(p, n)[m] = acc;
      }
    }
  });
}

#if defined(__x86_64__)
bool supports_bf16(dtype t, int64_t, int64_t, int64_t) { return only_bf16(t); }
bool has_avx512_bf16() { return host_features().avx512_bf16; }
bool has_amx_bf16() { return host_features().amx_bf16 && host_features().avx512_bf16; }
#endif

// The table, scalar first. Order does not decide the pick (mm_pick below does); tests and
// `v4 bench matmul --variant` address variants by name.
constexpr double kBf16Rounding = 1.0 / 256.0;  // 2^-8: bf16 keeps 8 significant bits
const mm_variant kVariants[] = {
    {"scalar", isa::scalar, always, supports_plain, scalar_run, 0.0},
#if defined(__x86_64__)
    {"avx2", isa::avx2, always, supports_plain, avx2_run, 0.0},
    {"avx512", isa::avx512, always, supports_plain, avx512_run, 0.0},
    {"avx512_bf16", isa::avx512, has_avx512_bf16, supports_bf16, avx512bf16_run, kBf16Rounding},
    {"amx_bf16", isa::avx512, has_amx_bf16, supports_bf16, amx_run, kBf16Rounding},
#endif
#if defined(__aarch64__)
    {"neon", isa::neon, always, supports_plain, neon_run, 0.0},
#endif
};
constexpr int kNumVariants = int(sizeof(kVariants) / sizeof(kVariants[0]));

const mm_variant* find(const char* name) { return mm_find(kVariants, kNumVariants, name); }
bool usable(const mm_variant* v, dtype t, int64_t M, int64_t N, int64_t K) { return mm_usable(v, t, M, N, K); }

}  // namespace

const mm_variant* mm_variants(int* count) {
  *count = kNumVariants;
  return kVariants;
}

// Pick rules (first usable entry of the list for the weight type wins):
//
//  * f32, f16 weights: avx512 > avx2 > neon > scalar. All exact (products of the exact inputs,
//    f32 accumulation). No rounding variant is ever picked for them.
//  * bf16 weights: amx_bf16 for N >= kAmxMinN, else avx512_bf16, else the exact ones as above.
//    bf16 weights times activations rounded to bf16 with f32 accumulation is the standard
//    contract for bf16 models (llama.cpp and PyTorch's CPU bf16 linear do the same); its extra
//    error is 2^-8 relative per x element, the same order as the weights' own rounding.
//
// Measured with `v4 bench matmul` (M = K = 4096, 2 threads, weights rotated through >= 2 GiB for
// N <= 16):
//  * An Intel Xeon with AMX (not the development host): amx_bf16 vs avx512_bf16 GFLOP/s at
//    N = 1: 16 vs 21, N = 4: 67 vs 76, N = 8: 143 vs 109, N = 16: 268 vs 127,
//    N = 32: 774 vs 143, N = 512: 1249 vs 135. Hence kAmxMinN = 8.
//  * Zen 4 (no AMX, the development host): avx512_bf16 vs the exact avx512 on bf16 weights:
//    N = 1: 29.8 vs 28.1 (both at DRAM speed), N = 16: 279 vs 182, N = 512: 391 vs 201
//    (vdpbf16ps does two products per lane; its measured peak there is twice the f32 FMA peak).
constexpr int64_t kAmxMinN = 8;

const mm_variant& mm_pick(dtype wtype, int64_t M, int64_t N, int64_t K) {
  if (qmatmul_supports(wtype)) return qmm_pick(wtype, M, N, K);  // block-quantized weights: qmatmul.h
  static const char* const exact[] = {"avx512", "avx2", "neon", "scalar"};
  if (wtype == dtype::bf16) {
    if (N >= kAmxMinN && usable(find("amx_bf16"), wtype, M, N, K)) return *find("amx_bf16");
    if (usable(find("avx512_bf16"), wtype, M, N, K)) return *find("avx512_bf16");
  }
  for (const char* name : exact) {
    const mm_variant* v = find(name);
    if (usable(v, wtype, M, N, K)) return *v;
  }
  return kVariants[0];  // scalar: its supports() is false for types nobody handles
}

bool matmul_supports(dtype wtype) { return kVariants[0].supports(wtype, 1, 1, 1) || qmatmul_supports(wtype); }

void matmul(const mm_problem& p, int n_threads) {
  // Callers check matmul_supports() (the backend's supports_op does); an unsupported type here
  // is a programming error.
  assert(matmul_supports(p.wtype));
  if (!matmul_supports(p.wtype)) return;
  if (qmatmul_supports(p.wtype)) return qmatmul(p, n_threads);
  mm_pick(p.wtype, p.M, p.N, p.K).run(p, n_threads);
}

}  // namespace v4::cpu

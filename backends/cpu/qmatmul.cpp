// Quantized-weight matmul: the variant table, the pick rules, dispatch, the scalar reference
// variant, and the layout / fill helpers for tools. SIMD variants: arch/qmatmul_<isa>.cpp.
#include "backends/cpu/qmatmul.h"

#include <cassert>
#include <string_view>
#include <vector>

#include "backends/cpu/arch/qmatmul_arch.h"
#include "quant/quant.h"

#if defined(__x86_64__)
namespace v4::cpu::qmm_arch {  // arch/qmatmul_amx.cpp
bool qmm_amx_available();
void qmm_amx_run(const mm_problem& p, int n_threads);
}  // namespace v4::cpu::qmm_arch
#endif

namespace v4::cpu {

namespace {

using namespace qmm_arch;

bool scaled(dtype t) { return t == dtype::fp8_e4m3 || t == dtype::mxfp4; }
bool kquant(dtype t) { return t == dtype::q4_k || t == dtype::q3_k || t == dtype::q2_k; }
bool any_quant(dtype t) { return scaled(t) || t == dtype::q8_0 || kquant(t); }

// Elements per in-row block (K must be a multiple) and bytes per block.
int64_t block_elems(dtype t) {
  switch (t) {
    case dtype::mxfp4: return 2;
    case dtype::q8_0: return 32;
    case dtype::q4_k:
    case dtype::q3_k:
    case dtype::q2_k: return 256;
    default: return 1;
  }
}
size_t block_bytes(dtype t) {
  switch (t) {
    case dtype::q8_0: return sizeof(quant::block_q8_0);
    case dtype::q4_k: return sizeof(quant::block_q4_k);
    case dtype::q3_k: return sizeof(quant::block_q3_k);
    case dtype::q2_k: return sizeof(quant::block_q2_k);
    default: return 1;
  }
}

bool always() { return true; }
bool supports_all(dtype t, int64_t, int64_t, int64_t) { return any_quant(t); }
[[maybe_unused]] bool supports_neon(dtype t, int64_t, int64_t, int64_t) { return any_quant(t); }

// ---- scalar reference -----------------------------------------------------------------------
// Each weight row is dequantized to f32 by quant/'s reference row dequantizer, then every output
// is one f32 sum in k order. The definition the SIMD variants are tested against (with the
// float64 reference of tests/cpu/test_qmatmul.cpp), so it stays simple.
void dequantize_row(const mm_problem& p, int64_t m, float* dst) {
  const uint8_t* w = reinterpret_cast<const uint8_t*>(row_ptr(p.w, p.w_stride, m));
  switch (p.wtype) {
    case dtype::fp8_e4m3: quant::dequantize_row_fp8(w, scale_row(p, m), int(p.sb_k), dst, p.K); break;
    case dtype::mxfp4: quant::dequantize_row_mxfp4(w, scale_row(p, m), dst, p.K); break;
    case dtype::q8_0: quant::dequantize_row_q8_0(w, dst, p.K); break;
    case dtype::q4_k: quant::dequantize_row_q4_k(w, dst, p.K); break;
    case dtype::q3_k: quant::dequantize_row_q3_k(w, dst, p.K); break;
    case dtype::q2_k: quant::dequantize_row_q2_k(w, dst, p.K); break;
    default: assert(false && "qmatmul scalar: unsupported weight type");
  }
}

void scalar_run(const mm_problem& p, int n_threads) {
  if (handle_empty(p)) return;
  parallel(useful_threads(p, n_threads), [&](int tid, int nth) {
    int64_t m0, m1;
    split(p.M, 1, tid, nth, &m0, &m1);
    std::vector<float> wrow(size_t(p.K));
    for (int64_t m = m0; m < m1; ++m) {
      dequantize_row(p, m, wrow.data());
      for (int64_t n = 0; n < p.N; ++n) {
        const float* x = xrow(p, n);
        float acc = 0.0f;
        for (int64_t k = 0; k < p.K; ++k) acc += wrow[size_t(k)] * x[k];
        yrow(p, n)[m] = acc;
      }
    }
  });
}

// ---- rounding contracts (mm_variant::x_rounding) --------------------------------------------
// bf16: x rounded to nearest (even) with 8 significant bits: |x' - x| <= 2^-8 |x| (unit roundoff
// of a p = 8 bit format is 2^-p). vcvtne2ps2bf16 also flushes f32 subnormal x to 0 (an absolute
// error below 2^-126, outside this bound; DeepSeek activations are never that small).
constexpr double kBf16Rounding = 1.0 / 256.0;
// (An int8 x, as llama.cpp's q8 activations, would err by up to amax/254 per element, d = amax/127
// per block of 32, i.e. relative to the block's largest |x| rather than to |x_k|. No VNNI variant
// was built: by instruction count, per x row and 64 weights, vpdpbusd + vcvtdq2ps + a multiply
// of the two block scales + an FMA (4) is not fewer than 2 vdpbf16ps + 1 FMA (3) once x has
// per-32 scales, and the bf16 x is the more precise.)

const mm_variant kVariants[] = {
    {"scalar", isa::scalar, always, supports_all, scalar_run, 0.0},
#if defined(__x86_64__)
    {"avx512_bf16", isa::avx512, qmm_avx512bf16_available, supports_all, qmm_avx512bf16_run, kBf16Rounding},
    {"amx_bf16", isa::avx512, qmm_amx_available, supports_all, qmm_amx_run, kBf16Rounding},
    {"avx2", isa::avx2, always, supports_all, qmm_avx2_run, 0.0},
#endif
#if defined(__aarch64__)
    {"neon", isa::neon, always, supports_neon, qmm_neon_run, 0.0},
#endif
};
constexpr int kNumVariants = int(sizeof(kVariants) / sizeof(kVariants[0]));

const mm_variant* find(const char* name) { return mm_find(kVariants, kNumVariants, name); }
bool usable(const mm_variant* v, dtype t, int64_t M, int64_t N, int64_t K) { return mm_usable(v, t, M, N, K); }

uint64_t next_random(uint64_t* s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

}  // namespace

bool qmatmul_supports(dtype wtype) { return any_quant(wtype); }

const mm_variant* qmm_variants(int* count) {
  *count = kNumVariants;
  return kVariants;
}

// Pick rules: the first usable variant of  avx512_bf16 > avx2 > neon > scalar  (each takes all
// six types). avx512_bf16 is exact for DeepSeek's numerics (x already on the e4m3 grid, see
// qmatmul.h) and the fastest at every N measured on Zen 4 (mxfp4 N = 1 from DRAM about 3x avx2,
// prefill ~10x); for the llama.cpp-style types its bf16 x (2^-8 relative per element) is finer
// than llama.cpp's int8 x per 256. The exact avx2 variant is never picked over it: tests and
// `v4 bench matmul --variant avx2` address it by name.
//
// amx_bf16 (same rounding contract as avx512_bf16) takes prefill shapes, N >= kAmxMinN, where
// the host has AMX-BF16. The crossover was not measured: the development host (Zen 4) has no AMX.
// 64 is the brief's prefill threshold and conservative against matmul.cpp's bf16 measurement
// (amx_bf16 5.4x avx512_bf16 at N = 32 on a Xeon); decoding a weight tile costs about what
// loading a bf16 one does once it is reused across 64 columns.
constexpr int64_t kAmxMinN = 64;

const mm_variant& qmm_pick(dtype wtype, int64_t M, int64_t N, int64_t K) {
  if (N >= kAmxMinN && usable(find("amx_bf16"), wtype, M, N, K)) return *find("amx_bf16");
  static const char* const order[] = {"avx512_bf16", "avx2", "neon", "scalar"};
  for (const char* name : order) {
    const mm_variant* v = find(name);
    if (usable(v, wtype, M, N, K)) return *v;
  }
  return kVariants[0];
}

void qmatmul(const mm_problem& p, int n_threads) {
  // Callers check qmatmul_supports() and the shapes (the backend's supports_op does); anything
  // else here is a programming error.
  assert(qmatmul_supports(p.wtype));
  assert(p.K % block_elems(p.wtype) == 0);
  assert(!scaled(p.wtype) || (p.scales && p.sb_k > 0 && p.sb_k % 32 == 0 && p.sb_m >= 1));
  assert(p.wtype != dtype::mxfp4 || p.sb_k == 32);
  if (!qmatmul_supports(p.wtype)) return;
  qmm_pick(p.wtype, p.M, p.N, p.K).run(p, n_threads);
}

// ---- layout and fill helpers ----------------------------------------------------------------
qmm_layout qmm_layout_of(dtype wtype, int64_t M, int64_t K, int64_t sb_k, int64_t sb_m) {
  qmm_layout lo;
  lo.row_bytes = size_t(K / block_elems(wtype)) * block_bytes(wtype);
  if (scaled(wtype)) {
    lo.sb_k = sb_k > 0 ? sb_k : wtype == dtype::mxfp4 ? 32 : 128;
    lo.sb_m = sb_m > 0 ? sb_m : wtype == dtype::mxfp4 ? 1 : 128;
    lo.s_stride = size_t((K + lo.sb_k - 1) / lo.sb_k);
    lo.scale_rows = (M + lo.sb_m - 1) / lo.sb_m;
  }
  return lo;
}

size_t qmm_weight_bytes(dtype wtype, int64_t M, int64_t K, int64_t sb_k, int64_t sb_m) {
  const qmm_layout lo = qmm_layout_of(wtype, M, K, sb_k, sb_m);
  return lo.row_bytes * size_t(M) + lo.s_stride * size_t(lo.scale_rows);
}

void qmm_fill_random(dtype wtype, const qmm_layout& lo, void* w, size_t w_stride, uint8_t* scales, int64_t M,
                     int64_t K, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  const uint16_t d_small = f32_to_f16(1.0f / 64.0f), d_min = f32_to_f16(1.0f / 256.0f);
  for (int64_t m = 0; m < M; ++m) {
    uint8_t* row = static_cast<uint8_t*>(w) + size_t(m) * w_stride;
    for (size_t i = 0; i < lo.row_bytes; ++i) row[i] = uint8_t(next_random(&s) >> 32);
    switch (wtype) {
      case dtype::fp8_e4m3:
        for (size_t i = 0; i < lo.row_bytes; ++i)
          if ((row[i] & 0x7f) == 0x7f) row[i] ^= 1;  // no NaN codes
        break;
      case dtype::q8_0:
        for (int64_t b = 0; b < K / 32; ++b) {
          auto* blk = reinterpret_cast<quant::block_q8_0*>(row) + b;
          blk->d = d_small;
          for (int8_t& q : blk->qs) q = q == -128 ? -127 : q;
        }
        break;
      case dtype::q4_k:
        for (int64_t b = 0; b < K / 256; ++b) {
          auto* blk = reinterpret_cast<quant::block_q4_k*>(row) + b;
          blk->d = d_min;
          blk->dmin = d_min;
        }
        break;
      case dtype::q3_k:
        for (int64_t b = 0; b < K / 256; ++b) reinterpret_cast<quant::block_q3_k*>(row)[b].d = d_min;
        break;
      case dtype::q2_k:
        for (int64_t b = 0; b < K / 256; ++b) {
          auto* blk = reinterpret_cast<quant::block_q2_k*>(row) + b;
          blk->d = d_small;
          blk->dmin = d_small;
        }
        break;
      default: break;
    }
  }
  for (int64_t r = 0; r < lo.scale_rows; ++r)
    for (size_t c = 0; c < lo.s_stride; ++c) scales[size_t(r) * lo.s_stride + c] = uint8_t(123 + next_random(&s) % 9);
}

}  // namespace v4::cpu

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
// int8 x (avx512_vnni, mm_variant::x_int8_block = 32): per x row and block b of 32 elements
// along K, d_b = fl(amax_b / 127), q_k = clamp(rint(fl(x_k / d_b)), -127, 127), x'_k = d_b q_k.
//   |x_k - x'_k| <= e_b := (amax_b / 254)(1 + 2^-20) + 2^-140:
// fl(x/d) = (x/d)(1 + t), |t| <= u, |x/d| <= 127 (1 + u), so |x/d - q| <= 1/2 + 128u and
// |x - d q| <= d/2 + 128 u d; d <= (amax/127)(1 + u) when d is normal; a subnormal d errs by at
// most 2^-150 absolute, and then the clamp adds at most 127 * 2^-150 (the 2^-140 term).
// The kernel then forms y = sum_b s_b * S_b (+ the mins term - sum_j m_j X_j), where S_b = the
// exact int32 dot product of the block's codes (|S_b| < 2^24, so the conversion to f32 is exact),
// s_b = fl(weight scale * d_b) (one rounding; the weight scale itself is exact: an f16 times a
// small integer), then one rounding for the FMA that accumulates it, K/32 + 4 roundings in all for
// the sums of the accumulators and the 16-lane reduction; the mins term likewise (X_j = fl(d_b
// sum of the codes of sub-block j), one more rounding). Every term has at most K/16 + 8 <= K + 2
// roundings, so
//   |y - sum_k w_k x'_k| <= (K + 2) u sum_k |w_k x'_k|   (as for every variant: Higham eq. 3.4),
//   |y - sum_k w_k x_k|  <= sum_k |w_k| e_b(k) + (K + 2) u sum_k |w_k| (|x_k| + e_b(k)).
// tests/cpu/test_qmatmul.cpp checks the first against x' emulated bit for bit (f32 division and
// rint, as above), then the second against x; the op harness (tests/ops/reference.cpp) the second.
// (The error is relative to the block's largest |x|: an outlier makes its block's small elements
// coarse, up to amax/254 each; bf16's 2^-8 |x_k| is the finer contract.)
constexpr int kInt8Block = 32;

#if defined(__x86_64__)
bool vnni_types(dtype t, int64_t, int64_t, int64_t) { return qmm_vnni_supports(t); }
#endif

const mm_variant kVariants[] = {
    {"scalar", isa::scalar, always, supports_all, scalar_run, 0.0},
#if defined(__x86_64__)
    {"avx512_bf16", isa::avx512, qmm_avx512bf16_available, supports_all, qmm_avx512bf16_run, kBf16Rounding},
    {"amx_bf16", isa::avx512, qmm_amx_available, supports_all, qmm_amx_run, kBf16Rounding},
    {"avx2", isa::avx2, always, supports_all, qmm_avx2_run, 0.0},
    {"avx512_vnni", isa::avx512, qmm_vnni_available, vnni_types, qmm_vnni_run, 0.0, kInt8Block},
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

// Pick rules: avx512_vnni for q8_0 and the K-quants where the host has it; amx_bf16 for fp8_e4m3
// and mxfp4 with N >= kAmxMinN where the host has AMX-BF16 (below); else, for q8_0 and
// the K-quants, avx512_vnni where the host has AVX512-VNNI; else the first usable variant of
// avx512_bf16 > avx2 > neon > scalar (each takes all six types). avx512_bf16 is exact for
// DeepSeek's numerics (x already on the e4m3 grid, see qmatmul.h) and the fastest at every N
// measured on Zen 4 for fp8 and mxfp4 (mxfp4 N = 1 from DRAM about 3x avx2, prefill ~10x). The
// exact avx2 variant is never picked over it: tests and `v4 bench matmul --variant avx2` address
// it by name.
//
// avx512_vnni (int8 x per 32, the llama.cpp-style numerics of the llama.cpp-style types) against
// avx512_bf16, Zen 4, 2 threads, best of 3 interleaved (2026-11-28 19:26-19:33 UTC, docs/KERNELS.md):
//   N = 1, K = 16384, M = 131072, GB/s from DRAM: q8_0 30.7 vs 15.5, q4_k 29.6 vs 24.4,
//     q3_k 22.3 vs 9.7, q2_k 24.0 vs 12.2;
//   M = K = 4096, GFLOP/s, N = 2: q8_0 99 vs 52, q4_k 142 vs 109, q3_k 128 vs 78, q2_k 179 vs 112;
//     N = 8: 176 vs 150, 214 vs 171, 155 vs 132, 223 vs 141; N = 16: 256 vs 201, 194 vs 187,
//     162 vs 167 (a tie within the noise), 189 vs 163;
//   N = 512: q8_0 574 vs 246, q4_k 490 vs 190, q3_k 529 vs 174, q2_k 466 vs 165.
// So it takes these types at every N, also where the host has AMX: on the GPU machine's Xeon
// (16 threads, 2026-11-28 20:25 UTC, `v4 bench matmul --type q4_k --rows N --k 4096 --n-out 4096
// --threads 16 --variant V`), GFLOP/s avx512_vnni / amx_bf16 / avx512_bf16: N = 16: 815 / 563 /
// 451; N = 32: 1409 / 1235 / 485; N = 64: 1700 / 1742 / 504; N = 128: 1939 / 2080 / 469;
// N = 512: 1924 / 1686 / 469 (AMX ahead by 2-7% at 64-128 only).
//
// amx_bf16 (same rounding contract as avx512_bf16) takes fp8_e4m3 and mxfp4 from N >= kAmxMinN
// where the host has AMX-BF16. Same machine and command, fp8_e4m3, amx_bf16 / avx512_bf16: N = 16:
// 547 / 557; N = 32: 1166 / 416; N = 64: 1997 / 331; N = 128: 2869 / 431; N = 512: 3417 / 566.
constexpr int64_t kAmxMinN = 32;

const mm_variant& qmm_pick(dtype wtype, int64_t M, int64_t N, int64_t K) {
  if (usable(find("avx512_vnni"), wtype, M, N, K)) return *find("avx512_vnni");  // q8_0, K-quants
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

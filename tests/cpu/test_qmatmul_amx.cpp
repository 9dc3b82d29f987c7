// The AMX-BF16 quantized matmul (qmatmul variant "amx_bf16", backends/cpu/arch/qmatmul_amx.cpp)
// at prefill shapes: odd M, N and K, partial tiles (M % 32 and N % 32 of every kind), all six
// weight types, against a float64 reference of the dequantized weights with x rounded to bf16
// (the variant's x_rounding). test_qmatmul.cpp runs every variant, this one included, on its
// general shapes; this file adds the AMX-specific cases. Skipped on hosts without AMX-BF16.
//
// Tolerance per output (derivation in test_qmatmul.cpp): |y - ref| <= 2 K 2^-24 mag with
// mag = sum_k |w_k x'_k|, where for q4_k / q2_k |w_k| is |d sc q| + |dmin m| (the kernel sums the
// two parts separately).
//
// On hosts without AMX but with AVX512-BF16 and VBMI (the development host, Zen 4) the kernel's
// source is compiled a second time into this file with the tile instructions emulated in C++
// (V4_QMM_AMX_EMULATE: same decoders, blocking, scale groups, mins and partial tiles; faults of a
// bad configuration become traps) and run on the same cases: the "Emulated" tests.
//
// Tile configuration: the kernel loads a new configuration whenever the row count of an m block
// changes. If the stores that fill it were dropped (the GCC 12 _tile_loadconfig problem, see the
// kernel's header), ldtilecfg would read stale stack bytes: a #GP fault (reserved bytes set) or
// tiles of the wrong shape, i.e. wrong results. TileConfigsInARowInAChild runs many shapes in a
// row in a child process and expects it to exit cleanly, so both outcomes fail the test.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu.h"
#include "backends/cpu/qmatmul.h"
#include "quant/quant.h"
#include "tensor/tensor.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vbmi")
#define V4_QMM_AMX_EMULATE 1
#include "backends/cpu/arch/qmatmul_amx.cpp"
#pragma GCC pop_options
#define V4_HAVE_AMX_EMULATION 1
#endif

namespace v4::cpu {
namespace {

constexpr double kEpsAcc = 1.0 / 16777216.0;  // 2^-24

const mm_variant* amx_variant() {
  int count = 0;
  const mm_variant* all = qmm_variants(&count);
  const mm_variant* v = mm_find(all, count, "amx_bf16");
  return v && isa_available(v->level) && v->available() ? v : nullptr;
}

bool has_mins(dtype t) { return t == dtype::q4_k || t == dtype::q2_k; }

// One problem: weights from qmm_fill_random (valid codes, scales 2^-4 .. 2^4), x in [-1, 1).
struct amx_case {
  dtype t;
  int64_t M, N, K;
  qmm_layout lo;
  std::vector<uint8_t> w, s;
  std::vector<float> x, y;

  amx_case(dtype t_, int64_t M_, int64_t N_, int64_t K_, uint64_t seed) : t(t_), M(M_), N(N_), K(K_) {
    lo = qmm_layout_of(t, M, K);
    w.assign(lo.row_bytes * size_t(M) + 64, 0);
    s.assign(lo.s_stride * size_t(lo.scale_rows) + 64, 0);
    qmm_fill_random(t, lo, w.data(), lo.row_bytes, s.data(), M, K, seed);
    std::mt19937 rng{uint32_t(seed)};
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    x.resize(size_t(N * K));
    for (float& v : x) v = u(rng);
    y.assign(size_t(N * M), std::nanf(""));
  }

  mm_problem problem() {
    mm_problem p;
    p.wtype = t;
    p.w = w.data();
    p.w_stride = lo.row_bytes;
    p.x = x.data();
    p.x_stride = size_t(K) * 4;
    p.y = y.data();
    p.y_stride = size_t(M) * 4;
    p.M = M;
    p.N = N;
    p.K = K;
    if (lo.s_stride) {
      p.scales = s.data();
      p.s_stride = lo.s_stride;
      p.sb_k = lo.sb_k;
      p.sb_m = lo.sb_m;
    }
    return p;
  }

  // Row m dequantized by quant/ into out (K floats); `part` 0: the whole weight, 1: only the d
  // part (dmin zeroed), 2: only the min part (d zeroed) of q4_k / q2_k.
  void row(int64_t m, int part, float* out) const {
    std::vector<uint8_t> r(w.begin() + long(lo.row_bytes) * m, w.begin() + long(lo.row_bytes) * (m + 1));
    if (part > 0) {  // q4_k and q2_k both start with f16 d, then f16 dmin, per 256-block
      const size_t bb = t == dtype::q4_k ? sizeof(quant::block_q4_k) : sizeof(quant::block_q2_k);
      for (size_t b = 0; b < r.size() / bb; ++b) std::memset(r.data() + b * bb + (part == 1 ? 2 : 0), 0, 2);
    }
    const uint8_t* sc = lo.s_stride ? s.data() + size_t(m / lo.sb_m) * lo.s_stride : nullptr;
    switch (t) {
      case dtype::fp8_e4m3: quant::dequantize_row_fp8(r.data(), sc, int(lo.sb_k), out, K); break;
      case dtype::mxfp4: quant::dequantize_row_mxfp4(r.data(), sc, out, K); break;
      case dtype::q8_0: quant::dequantize_row_q8_0(r.data(), out, K); break;
      case dtype::q4_k: quant::dequantize_row_q4_k(r.data(), out, K); break;
      case dtype::q3_k: quant::dequantize_row_q3_k(r.data(), out, K); break;
      case dtype::q2_k: quant::dequantize_row_q2_k(r.data(), out, K); break;
      default: break;
    }
  }

  // Number of outputs outside the bound; *first describes the first.
  int64_t check(std::string* first) const {
    std::vector<float> xr(x.size());
    for (size_t i = 0; i < x.size(); ++i) xr[i] = bf16_to_f32(f32_to_bf16(x[i]));
    std::vector<float> wf(static_cast<size_t>(K)), wd(static_cast<size_t>(K)), wm(static_cast<size_t>(K));
    int64_t bad = 0;
    for (int64_t m = 0; m < M; ++m) {
      row(m, 0, wf.data());
      if (has_mins(t)) {
        row(m, 1, wd.data());
        row(m, 2, wm.data());
      }
      for (int64_t n = 0; n < N; ++n) {
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < K; ++k) {
          const double xv = xr[size_t(n * K + k)];
          ref += double(wf[size_t(k)]) * xv;
          mag += (has_mins(t) ? std::fabs(double(wd[size_t(k)])) + std::fabs(double(wm[size_t(k)]))
                              : std::fabs(double(wf[size_t(k)]))) * std::fabs(xv);
        }
        const double got = y[size_t(n * M + m)];
        const double tol = 2.0 * double(K) * kEpsAcc * mag;
        if (!(std::fabs(got - ref) <= tol)) {
          if (bad++ == 0)
            *first = "y[" + std::to_string(n) + "][" + std::to_string(m) + "] = " + std::to_string(got) + ", reference " +
                     std::to_string(ref) + " +- " + std::to_string(tol);
        }
      }
    }
    return bad;
  }
};

struct shape {
  int64_t M, N, K;
};

// K per type: odd where the type allows it (fp8 any K, mxfp4 even, q8_0 x32, K-quants x256).
std::vector<shape> shapes_for(dtype t) {
  switch (t) {
    case dtype::fp8_e4m3: return {{33, 64, 100}, {17, 65, 333}, {64, 97, 256}, {50, 130, 1000}, {1, 64, 31}};
    case dtype::mxfp4: return {{33, 64, 98}, {17, 65, 334}, {64, 97, 256}, {50, 130, 1000}, {1, 64, 30}};
    case dtype::q8_0: return {{33, 64, 96}, {17, 65, 352}, {64, 97, 256}, {50, 130, 992}, {1, 64, 32}};
    default: return {{33, 64, 256}, {17, 65, 512}, {64, 97, 768}, {50, 130, 256}, {1, 64, 256}};
  }
}

const dtype kTypes[] = {dtype::fp8_e4m3, dtype::mxfp4, dtype::q8_0, dtype::q4_k, dtype::q3_k, dtype::q2_k};

using run_fn = void (*)(const mm_problem&, int);

void odd_shapes_all_types(run_fn run) {
  uint64_t seed = 1;
  for (dtype t : kTypes)
    for (const shape& s : shapes_for(t))
      for (int threads : {1, 2}) {
        amx_case c(t, s.M, s.N, s.K, seed++);
        run(c.problem(), threads);
        std::string first;
        const int64_t bad = c.check(&first);
        EXPECT_EQ(bad, 0) << type_name(t) << " M " << s.M << " N " << s.N << " K " << s.K << ", " << threads
                          << " threads: " << first;
      }
}

TEST(QmatmulAmx, OddShapesAllTypes) {
  quant::register_types();
  const mm_variant* v = amx_variant();
  if (!v) GTEST_SKIP() << "no AMX-BF16 on this host (" << features_string() << ")";
  odd_shapes_all_types(v->run);
}

#if defined(V4_HAVE_AMX_EMULATION)
TEST(QmatmulAmx, EmulatedOddShapesAllTypes) {
  quant::register_types();
  if (!qmm_arch::qmm_avx512bf16_available()) GTEST_SKIP() << "the emulation needs AVX512-BF16 and VBMI";
  odd_shapes_all_types(qmm_arch::qmm_amx_run);
}

// The fallback for scales the folding cannot represent must give the same function.
TEST(QmatmulAmx, EmulatedExtremeScalesFallBack) {
  quant::register_types();
  if (!qmm_arch::qmm_avx512bf16_available()) GTEST_SKIP() << "the emulation needs AVX512-BF16 and VBMI";
  for (dtype t : {dtype::fp8_e4m3, dtype::mxfp4}) {
    amx_case c(t, 33, 70, 256, 7);
    for (size_t i = 0; i < c.lo.s_stride * size_t(c.lo.scale_rows); ++i) c.s[i] = uint8_t(120 + i % 3);
    c.s[1] = 1;  // 2^-126: scaled codes would be bf16 subnormals
    qmm_arch::qmm_amx_run(c.problem(), 2);
    std::string first;
    EXPECT_EQ(c.check(&first), 0) << type_name(t) << ": " << first;
  }
}
#endif

// Many row counts of the last m block (1..32), i.e. many tile configurations, in one process.
TEST(QmatmulAmxDeathTest, TileConfigsInARowInAChild) {
  quant::register_types();
  const mm_variant* v = amx_variant();
  if (!v) GTEST_SKIP() << "no AMX-BF16 on this host (" << features_string() << ")";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto run_all = [&] {
    uint64_t seed = 100;
    for (dtype t : {dtype::fp8_e4m3, dtype::q8_0, dtype::q4_k})
      for (int64_t M : {32, 1, 47, 16, 63, 9, 40, 31, 17}) {
        amx_case c(t, M, 65, t == dtype::fp8_e4m3 || t == dtype::q8_0 ? 160 : 256, seed++);
        v->run(c.problem(), 2);
        std::string first;
        if (c.check(&first) != 0) {
          std::fprintf(stderr, "%s M %lld: %s\n", type_name(t), static_cast<long long>(M), first.c_str());
          std::exit(1);
        }
      }
    std::exit(0);
  };
  EXPECT_EXIT(run_all(), ::testing::ExitedWithCode(0), "");
}

// Not AMX, but the same checker: avx512_bf16's decode path splits K into segments whose bf16 x
// stays in L1 (16 KiB per pass) when the single pass's x rows do not fit; K past those segments,
// with tails, for every type and 1, 3 and 8 x rows.
TEST(QmatmulAmx, Avx512DecodeKSegments) {
  quant::register_types();
  int count = 0;
  const mm_variant* all = qmm_variants(&count);
  const mm_variant* v = mm_find(all, count, "avx512_bf16");
  if (!v || !isa_available(v->level) || !v->available()) GTEST_SKIP() << "no avx512_bf16 on this host";
  uint64_t seed = 300;
  for (dtype t : kTypes) {
    const int64_t K = t == dtype::fp8_e4m3 ? 8292 : t == dtype::mxfp4 ? 8290 : t == dtype::q8_0 ? 8288 : 8448;
    for (int64_t N : {1, 3, 8}) {
      amx_case c(t, 37, N, K, seed++);
      v->run(c.problem(), 2);
      std::string first;
      EXPECT_EQ(c.check(&first), 0) << type_name(t) << " N " << N << " K " << K << ": " << first;
    }
  }
}

// The pick: amx_bf16 only where it runs, and then for prefill shapes only.
TEST(QmatmulAmx, PickedOnlyForPrefillWhereAvailable) {
  const mm_variant* v = amx_variant();
  for (dtype t : kTypes) {
    EXPECT_STRNE(qmm_pick(t, 4096, 1, 4096).name, "amx_bf16");
    EXPECT_STRNE(qmm_pick(t, 4096, 16, 4096).name, "amx_bf16");
    const bool amx = std::string(qmm_pick(t, 4096, 512, 4096).name) == "amx_bf16";
    EXPECT_EQ(amx, v != nullptr && isa_allowed(v->level)) << type_name(t);
  }
}

}  // namespace
}  // namespace v4::cpu

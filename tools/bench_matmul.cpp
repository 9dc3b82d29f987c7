// v4 bench matmul: one matmul shape through cpu::matmul (or a named variant), timed.
// v4 bench peak:   the hardware limits measured in the same run, to quote the others against:
//                  f32 FMA throughput, bf16 dot-product throughput (vdpbf16ps, AMX), int8 dot
//                  throughput (vpdpbusd), DRAM read
//                  bandwidth.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <omp.h>

#include <nlohmann/json.hpp>

#include "backends/cpu/cpu.h"
#include "backends/cpu/matmul.h"
#include "backends/cpu/qmatmul.h"
#include "tensor/tensor.h"
#include "tools/commands.h"

#if defined(__x86_64__)
// GCC 12 warns about the undefined vectors inside its own AVX-512 intrinsics (bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace v4::cli {

namespace {

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

constexpr size_t kDramBytes = size_t(2) << 30;  // working sets meant to come from DRAM: >= 2 GiB

struct aligned_buffer {
  void* p = nullptr;
  explicit aligned_buffer(size_t bytes) { p = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096); }
  ~aligned_buffer() { std::free(p); }
  aligned_buffer(const aligned_buffer&) = delete;
  aligned_buffer& operator=(const aligned_buffer&) = delete;
};

// Random values in [-1, 1) (xorshift), converted to t; never zeros, which can time differently.
void fill_random(dtype t, void* dst, int64_t n, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    const float v = float(int64_t(s >> 40) - (int64_t(1) << 23)) / float(1 << 23);
    switch (t) {
      case dtype::f32: static_cast<float*>(dst)[i] = v; break;
      case dtype::f16: static_cast<uint16_t*>(dst)[i] = f32_to_f16(v); break;
      default: static_cast<uint16_t*>(dst)[i] = f32_to_bf16(v); break;
    }
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ---- v4 bench matmul --------------------------------------------------------------------------
struct matmul_opts {
  std::string type = "bf16", variant;
  int64_t rows = 1, k = 4096, n_out = 4096;
  int64_t sb_k = 0, sb_m = 0;  // scale blocks of fp8_e4m3 (0: the type's default, 128 x 128)
  int threads = 0, reps = 0;
  bool json = false, hot = false;
};

void run_matmul(const matmul_opts& o) {
  dtype wt;
  if (!type_from_name(o.type, &wt) || !cpu::matmul_supports(wt))
    throw CLI::ValidationError("--type", "unsupported weight type '" + o.type +
                                             "' (use f32, f16, bf16, fp8_e4m3, mxfp4, q8_0, q4_k, q3_k or q2_k)");
  const bool quantized = cpu::qmatmul_supports(wt);
  const int64_t M = o.n_out, N = o.rows, K = o.k;
  if (M < 1 || N < 1 || K < 1) throw CLI::ValidationError("shape", "--rows, --k and --n-out must be >= 1");
  const int nt = o.threads > 0 ? o.threads : cpu::default_threads();

  const cpu::mm_variant* v = &cpu::mm_pick(wt, M, N, K);
  if (!o.variant.empty()) {
    int count = 0;
    const cpu::mm_variant* all = quantized ? cpu::qmm_variants(&count) : cpu::mm_variants(&count);
    v = cpu::mm_find(all, count, o.variant.c_str());
    if (!v) throw CLI::ValidationError("--variant", "no variant named '" + o.variant + "'");
    if (!cpu::isa_available(v->level) || !v->available() || !v->supports(wt, M, N, K))
      throw CLI::ValidationError("--variant", o.variant + " cannot run this problem on this host (" +
                                                  cpu::features_string() + ")");
  }

  // Decode shapes are bandwidth-bound: rotate through enough copies of the weights that the
  // working set is >= 2 GiB, so every call reads its weights from DRAM, not from cache.
  // Quantized types: the weight rows, then their e8m0 scales (fp8 {128,128}, mxfp4 {32,1}).
  if (o.sb_k || o.sb_m) {
    if (wt != dtype::fp8_e4m3)
      throw CLI::ValidationError("--sb-k/--sb-m", "scale blocks are chosen only for fp8_e4m3 (mxfp4 is fixed at 32 x 1)");
    if (o.sb_k < 0 || o.sb_k % 32 != 0 || o.sb_m < 0)
      throw CLI::ValidationError("--sb-k/--sb-m", "--sb-k must be a positive multiple of 32 and --sb-m positive");
  }
  const cpu::qmm_layout lo = quantized ? cpu::qmm_layout_of(wt, M, K, o.sb_k, o.sb_m) : cpu::qmm_layout{};
  const size_t rows_bytes = row_size(wt, K) * size_t(M);
  const size_t scales_off = (rows_bytes + 63) / 64 * 64;
  const size_t wbytes = quantized ? cpu::qmm_weight_bytes(wt, M, K, o.sb_k, o.sb_m) : rows_bytes;
  const size_t wspan = (scales_off + lo.s_stride * size_t(lo.scale_rows) + 4095) / 4096 * 4096;
  const bool decode = N <= 16;
  const int64_t copies = decode && !o.hot && wbytes < kDramBytes ? int64_t((kDramBytes + wbytes - 1) / wbytes) : 1;
  aligned_buffer wbuf(wspan * size_t(copies));
  std::vector<float> x(size_t(N * K)), y(size_t(N * M));
  if (!wbuf.p) throw CLI::RuntimeError("out of memory for " + std::to_string(wspan * copies >> 20) + " MiB of weights", 1);
  char* w0 = static_cast<char*>(wbuf.p);
  if (quantized)
    cpu::qmm_fill_random(wt, lo, w0, row_size(wt, K), reinterpret_cast<uint8_t*>(w0 + scales_off), M, K, 1);
  else
    fill_random(wt, w0, M * K, 1);
  for (int64_t c = 1; c < copies; ++c) std::memcpy(w0 + wspan * size_t(c), w0, wspan);
  fill_random(dtype::f32, x.data(), N * K, 2);

  cpu::mm_problem p;
  p.wtype = wt;
  p.w_stride = row_size(wt, K);
  p.x = x.data();
  p.x_stride = size_t(K) * 4;
  p.y = y.data();
  p.y_stride = size_t(M) * 4;
  p.M = M;
  p.N = N;
  p.K = K;
  p.s_stride = lo.s_stride;
  p.sb_k = lo.sb_k;
  p.sb_m = lo.sb_m;

  // Warm-up: one pass over every copy (also faults the pages in).
  auto point_at = [&](int64_t c) {
    p.w = w0 + wspan * size_t(c);
    p.scales = quantized && lo.s_stride ? reinterpret_cast<const uint8_t*>(w0 + wspan * size_t(c) + scales_off) : nullptr;
  };
  for (int64_t c = 0; c < copies; ++c) {
    point_at(c);
    v->run(p, nt);
  }
  const double flops = 2.0 * double(M) * double(N) * double(K);
  int reps = o.reps;
  if (reps <= 0) {  // about a second, at least 2 passes over the copies, 5 .. 1000 calls
    const auto t0 = clock_type::now();
    point_at(0);
    v->run(p, nt);
    const double t = std::max(seconds_since(t0), 1e-6);
    reps = int(std::clamp<double>(std::max(1.0 / t, 2.0 * double(copies)), 5, 1000));
  }
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    point_at(r % copies);
    const auto t0 = clock_type::now();
    v->run(p, nt);
    times.push_back(seconds_since(t0));
  }
  const double t = median(times);
  const double gflops = flops / t / 1e9, gbps = double(wbytes) / t / 1e9;
  const double ws = double(wbytes) * double(copies);
  if (o.json) {
    nlohmann::json j = {{"seconds", t},     {"gflops", gflops},         {"gbps", gbps},     {"variant", v->name},
                        {"type", o.type},   {"M", M},                   {"N", N},           {"K", K},
                        {"threads", nt},    {"reps", reps},             {"weight_copies", copies},
                        {"working_set_bytes", ws}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("v4 bench matmul: %s weights [K=%lld, M=%lld] x f32 [K=%lld, N=%lld], %d threads, variant %s\n",
              o.type.c_str(), (long long)K, (long long)M, (long long)K, (long long)N, nt, v->name);
  if (copies > 1)
    std::printf("weights %.1f MiB, rotating %lld copies: working set %.2f GiB (>= 2 GiB: weights come from DRAM)\n",
                double(wbytes) / (1 << 20), (long long)copies, ws / double(1 << 30));
  else
    std::printf("weights %.1f MiB, one copy%s\n", double(wbytes) / (1 << 20),
                o.hot ? " (--hot: may stay in cache)"
                : decode ? " (>= 2 GiB: from DRAM)"
                         : " (prefill: reused from cache across x rows)");
  std::printf("median of %d calls: %.3f ms   %.1f GFLOP/s   %.2f GB/s (weight bytes / time)\n", reps, t * 1e3, gflops,
              gbps);
}

// ---- v4 bench peak ----------------------------------------------------------------------------
// Each measurement runs on all threads at once and reports total throughput; best of a few runs.
template <class F>
double best_rate(int nt, int runs, double work_per_thread, F&& body) {
  double best = 0;
  for (int r = 0; r < runs; ++r) {
    const auto t0 = clock_type::now();
#pragma omp parallel num_threads(nt)
    body(omp_get_thread_num());
    best = std::max(best, work_per_thread * nt / seconds_since(t0));
  }
  return best;
}

volatile float g_sink;  // keeps the loops' results alive

#if defined(__x86_64__)
// a = a * b + c on independent accumulators: FMA throughput, not latency. b < 1 keeps the
// values bounded and normal.
__attribute__((target("avx2,fma"))) void fma_loop_avx2(int64_t iters) {
  constexpr int A = 12;  // 2 FMA pipes x 4-5 cycles latency; 12 + 2 of the 16 ymm registers
  __m256 a[A];
#pragma GCC unroll 32
  for (int i = 0; i < A; ++i) a[i] = _mm256_set1_ps(float(i));
  const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-3f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < A; ++i) a[i] = _mm256_fmadd_ps(a[i], b, c);
  }
  __m256 s = a[0];
#pragma GCC unroll 32
  for (int i = 1; i < A; ++i) s = _mm256_add_ps(s, a[i]);
  g_sink = _mm256_cvtss_f32(s);
}

__attribute__((target("avx512f"))) void fma_loop_avx512(int64_t iters) {
  constexpr int A = 24;  // of the 32 zmm registers
  __m512 a[A];
#pragma GCC unroll 32
  for (int i = 0; i < A; ++i) a[i] = _mm512_set1_ps(float(i));
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-3f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < A; ++i) a[i] = _mm512_fmadd_ps(a[i], b, c);
  }
  __m512 s = a[0];
#pragma GCC unroll 32
  for (int i = 1; i < A; ++i) s = _mm512_add_ps(s, a[i]);
  g_sink = _mm512_reduce_add_ps(s);
}

// vdpbf16ps: 16 lanes x 2 products per instruction.
__attribute__((target("avx512f,avx512bf16"))) void bf16_dot_loop(int64_t iters) {
  constexpr int A = 24;
  __m512 a[A];
#pragma GCC unroll 32
  for (int i = 0; i < A; ++i) a[i] = _mm512_set1_ps(float(i));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.75f), _mm512_set1_ps(-0.5f));
  const __m512bh c = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(2e-3f));
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < A; ++i) a[i] = _mm512_dpbf16_ps(a[i], b, c);
  }
  __m512 s = a[0];
#pragma GCC unroll 32
  for (int i = 1; i < A; ++i) s = _mm512_add_ps(s, a[i]);
  g_sink = _mm512_reduce_add_ps(s);
}

// vpdpbusd (the avx512_vnni qmatmul's instruction): 16 lanes x 4 u8 x s8 products per instruction.
// 12 accumulators: with 24, GCC 12 copies registers every iteration and the rate halves.
__attribute__((target("avx512f,avx512vnni"))) void int8_dot_loop(int64_t iters) {
  constexpr int A = 12;
  __m512i a[A];
#pragma GCC unroll 32
  for (int i = 0; i < A; ++i) a[i] = _mm512_set1_epi32(i);
  const __m512i b = _mm512_set1_epi8(3), c = _mm512_set1_epi8(-2);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < A; ++i) a[i] = _mm512_dpbusd_epi32(a[i], b, c);
  }
  __m512i s = a[0];
#pragma GCC unroll 32
  for (int i = 1; i < A; ++i) s = _mm512_add_epi32(s, a[i]);
  g_sink = float(_mm512_reduce_add_epi32(s));
}

// AMX: 6 independent C tiles += A x B on tiles loaded once (16 x 16 x 32 bf16 each).
struct alignas(64) amx_config {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
void amx_loop(int64_t iters) {
  amx_config cfg = {};
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  // The whole struct as the memory operand: GCC 12's _tile_loadconfig names only 8 bytes of it.
  __asm__ volatile("ldtilecfg %0" ::"m"(cfg));
  alignas(64) uint16_t src[16 * 32];
  for (int i = 0; i < 16 * 32; ++i) src[i] = f32_to_bf16(float(i % 7 - 3) / 8.0f);
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm6" ::"r"(src), "r"(64L) : "memory");
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm7" ::"r"(src), "r"(64L) : "memory");
  __asm__ volatile("tilezero %%tmm0\n\ttilezero %%tmm1\n\ttilezero %%tmm2\n\t"
                   "tilezero %%tmm3\n\ttilezero %%tmm4\n\ttilezero %%tmm5" ::);
  for (int64_t it = 0; it < iters; ++it)
    __asm__ volatile(
        "tdpbf16ps %%tmm7, %%tmm6, %%tmm0\n\ttdpbf16ps %%tmm7, %%tmm6, %%tmm1\n\t"
        "tdpbf16ps %%tmm7, %%tmm6, %%tmm2\n\ttdpbf16ps %%tmm7, %%tmm6, %%tmm3\n\t"
        "tdpbf16ps %%tmm7, %%tmm6, %%tmm4\n\ttdpbf16ps %%tmm7, %%tmm6, %%tmm5" ::);
  alignas(64) float out[256];
  __asm__ volatile("tilestored %%tmm0, (%0,%1,1)" ::"r"(out), "r"(64L) : "memory");
  __asm__ volatile("tilerelease" ::);
  g_sink = out[17];
}
#endif

// Sum of 64-bit words: integer adds reassociate freely, so this vectorizes in the generic build
// and the loads, not the adds, are the limit.
uint64_t sum_words(const uint64_t* p, size_t n) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += p[i];
    s1 += p[i + 1];
    s2 += p[i + 2];
    s3 += p[i + 3];
  }
  for (; i < n; ++i) s0 += p[i];
  return s0 + s1 + s2 + s3;
}

}  // namespace

// DRAM read bandwidth in GB/s: each thread sums its own contiguous chunk of a 2.25 GiB buffer
// (first touched by the same thread), best of 5. -1 when the buffer cannot be allocated.
// Also used by `v4 bench model` (tools/bench_model.cpp) to quote decode speed against.
double measure_dram_read_gbps(int threads) {
  const int nt = threads > 0 ? threads : cpu::default_threads();
  const size_t bytes = kDramBytes + (size_t(256) << 20);
  aligned_buffer buf(bytes);
  if (!buf.p) return -1;
  uint64_t* words = static_cast<uint64_t*>(buf.p);
  const size_t n = bytes / 8;
  auto chunk = [&](int tid, size_t* b, size_t* e) {
    *b = n / size_t(nt) * size_t(tid);
    *e = tid == nt - 1 ? n : *b + n / size_t(nt);
  };
#pragma omp parallel num_threads(nt)
  {
    size_t b, e;
    chunk(omp_get_thread_num(), &b, &e);
    for (size_t i = b; i < e; ++i) words[i] = i * 0x9E3779B97F4A7C15ull;
  }
  std::vector<uint64_t> sums(static_cast<size_t>(nt));
  const double dram = best_rate(nt, 5, double(bytes) / nt, [&](int tid) {
                        size_t b, e;
                        chunk(tid, &b, &e);
                        sums[size_t(tid)] = sum_words(words + b, e - b);
                      }) / 1e9;
  g_sink = float(sums[0] & 1);
  return dram;
}

namespace {

void run_peak(int threads, bool json) {
  const int nt = threads > 0 ? threads : cpu::default_threads();
  const cpu::features& f = cpu::host_features();
  nlohmann::json j = {{"threads", nt}, {"features", cpu::features_string()}};
  double fma_best = 0;
  std::string fma_unit = "none";
#if defined(__x86_64__)
  constexpr int64_t kIters = 15000000;  // x 12-24 FMAs: ~0.1-0.3 s per run
  if (f.has_avx2()) {
    const double r = best_rate(nt, 3, 2.0 * 8 * 12 * double(kIters), [&](int) { fma_loop_avx2(kIters); }) / 1e9;
    j["fma_f32_avx2_gflops"] = r;
    if (r > fma_best) {
      fma_best = r;
      fma_unit = "avx2 (ymm)";
    }
  }
  if (f.has_avx512()) {
    const double r = best_rate(nt, 3, 2.0 * 16 * 24 * double(kIters), [&](int) { fma_loop_avx512(kIters); }) / 1e9;
    j["fma_f32_avx512_gflops"] = r;
    if (r > fma_best) {
      fma_best = r;
      fma_unit = "avx512 (zmm)";
    }
  }
  if (f.has_avx512() && f.avx512_bf16) {
    const double r = best_rate(nt, 3, 4.0 * 16 * 24 * double(kIters), [&](int) { bf16_dot_loop(kIters); }) / 1e9;
    j["bf16_dot_avx512_gflops"] = r;
  } else {
    j["bf16_dot_avx512_gflops"] = nullptr;
  }
  if (f.has_avx512() && f.avx512_vnni) {
    const double r = best_rate(nt, 3, 8.0 * 16 * 12 * double(kIters), [&](int) { int8_dot_loop(kIters); }) / 1e9;
    j["int8_dot_avx512_gops"] = r;
  } else {
    j["int8_dot_avx512_gops"] = nullptr;
  }
  if (f.amx_bf16) {
    constexpr int64_t kAmxIters = 200000;  // x 6 tdpbf16ps of 16*16*32 multiply-adds
    const double r = best_rate(nt, 3, 6.0 * 2 * 16 * 16 * 32 * double(kAmxIters), [&](int) { amx_loop(kAmxIters); }) / 1e9;
    j["amx_bf16_gflops"] = r;
  } else {
    j["amx_bf16_gflops"] = nullptr;
  }
#endif
  j["fma_f32_gflops"] = fma_best;
  j["fma_f32_unit"] = fma_unit;

  const size_t bytes = kDramBytes + (size_t(256) << 20);
  const double dram = measure_dram_read_gbps(nt);
  if (dram < 0) throw CLI::RuntimeError("out of memory for the 2.25 GiB bandwidth buffer", 1);
  j["dram_read_gbps"] = dram;
  j["dram_buffer_bytes"] = bytes;

  if (json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("v4 bench peak: %d threads, %s\n", nt, cpu::features_string().c_str());
  std::printf("  f32 FMA peak          %9.1f GFLOP/s   (%s, register-resident FMA loop)\n", fma_best, fma_unit.c_str());
  if (j.contains("fma_f32_avx2_gflops") && j.contains("fma_f32_avx512_gflops"))
    std::printf("    avx2 %.1f, avx512 %.1f GFLOP/s\n", j["fma_f32_avx2_gflops"].get<double>(),
                j["fma_f32_avx512_gflops"].get<double>());
  if (!j["bf16_dot_avx512_gflops"].is_null())
    std::printf("  bf16 dot (vdpbf16ps)  %9.1f GFLOP/s\n", j["bf16_dot_avx512_gflops"].get<double>());
  if (j.contains("int8_dot_avx512_gops") && !j["int8_dot_avx512_gops"].is_null())
    std::printf("  int8 dot (vpdpbusd)   %9.1f GOP/s      (u8 x s8 multiply-adds x 2)\n",
                j["int8_dot_avx512_gops"].get<double>());
  if (j["amx_bf16_gflops"].is_null())
    std::printf("  AMX-BF16              n/a (not on this host)\n");
  else
    std::printf("  AMX-BF16              %9.1f GFLOP/s\n", j["amx_bf16_gflops"].get<double>());
  std::printf("  DRAM read             %9.2f GB/s     (%.2f GiB buffer, sum over all threads, best of 5)\n", dram,
              double(bytes) / double(1 << 30));
}

}  // namespace

static void add_bench_matmul(CLI::App& bench) {
  auto o = std::make_shared<matmul_opts>();
  CLI::App* cmd = bench.add_subcommand("matmul", "Time one matmul shape: y[N, M] = x[N, K] @ w[M, K]^T");
  cmd->add_option("--type", o->type, "Weight type: f32, f16, bf16, fp8_e4m3, mxfp4, q8_0, q4_k, q3_k, q2_k")->capture_default_str();
  cmd->add_option("--rows", o->rows, "N: rows of x (tokens); <= 16 is a decode shape")->capture_default_str();
  cmd->add_option("--k", o->k, "K: the reduced dimension")->capture_default_str();
  cmd->add_option("--n-out", o->n_out, "M: outputs per row (rows of w)")->capture_default_str();
  cmd->add_option("--sb-k", o->sb_k, "fp8_e4m3: scale block along K (default 128; V4.1 uses 32)");
  cmd->add_option("--sb-m", o->sb_m, "fp8_e4m3: scale block along the rows (default 128; V4.1 uses 32)");
  cmd->add_option("--threads,-t", o->threads, "Threads (default: all cores)");
  cmd->add_option("--variant", o->variant, "Kernel variant by name (default: what matmul() picks)");
  cmd->add_option("--reps", o->reps, "Timed calls (median reported; default: about one second)");
  cmd->add_flag("--hot", o->hot, "Decode shapes: no rotation, weights may stay in cache (measures the kernel, not DRAM)");
  cmd->add_flag("--json", o->json, "Print one JSON object: seconds, gflops, gbps, variant, type, shape");
  cmd->callback([o] { run_matmul(*o); });
}

static void add_bench_peak(CLI::App& bench) {
  struct opts {
    int threads = 0;
    bool json = false;
  };
  auto o = std::make_shared<opts>();
  CLI::App* cmd = bench.add_subcommand("peak", "Measured hardware limits: f32 FMA and bf16 GFLOP/s, DRAM GB/s");
  cmd->add_option("--threads,-t", o->threads, "Threads (default: all cores)");
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->callback([o] { run_peak(o->threads, o->json); });
}

V4_BENCH_COMMAND(add_bench_matmul, 91);

V4_BENCH_COMMAND(add_bench_peak, 92);

}  // namespace v4::cli

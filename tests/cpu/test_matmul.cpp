// CPU matmul: every variant the host runs, against a float64 reference.
//
// The reference is computed in double from the dequantized weights and x (for rounding variants
// from x rounded to bf16 with v4::f32_to_bf16, which is what those kernels promise), so it is
// exact up to double rounding. Tolerance per output (check_output):
//
//   |y - ref| <= c * K * 2^-24 * sum_k |w_k x_k|,   c = 2
//
// Why: every variant forms each product exactly in f32 (exact inputs; bf16 x bf16 products are
// exact too) and adds K of them in f32 in some order: lanes, blocks, tiles, a horizontal tree.
// Any order of K additions errs by at most (K - 1) u sum|terms| to first order (Higham, Accuracy
// and Stability, eq. 3.4), u = 2^-24; c = 2 covers the second-order term. Rounding variants
// (vdpbf16ps, AMX) flush subnormals, so the data keeps every |w x| >= 2^-100: no subnormal can
// appear and the same bound holds. They are also checked against the reference from the
// unrounded x with the documented contract: + x_rounding * sum|w x| (bf16 rounds to nearest,
// relative error <= 2^-8 per x element).
//
// Besides values, every run checks that all outputs were written (y is poisoned with NaN) and
// that nothing outside them was touched (guard bytes before, between and after the rows of y).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu.h"
#include "backends/cpu/matmul.h"
#include "tensor/tensor.h"

namespace v4::cpu {
namespace {

constexpr double kEpsAcc = 1.0 / 16777216.0;  // 2^-24
constexpr double kC = 2.0;
constexpr uint8_t kGuard = 0xA5;

size_t elem_size(dtype t) { return t == dtype::f32 ? 4 : 2; }

// Memory layout of one case: strides and base offsets in bytes beyond the packed ones.
struct layout {
  int64_t w_pad = 0, x_pad = 0, y_pad = 0;  // extra elements per row
  size_t w_off = 0, x_off = 0, y_off = 0;   // byte offset of row 0 from a 64-aligned base
};
const layout kPacked{};
// Row strides not multiples of anything useful, rows starting 4 (f32) / 2 (f16, bf16) bytes
// past a 64-byte boundary.
layout misaligned(dtype wt) { return {3, 5, 3, wt == dtype::f32 ? 4u : 2u, 4, 4}; }

enum class data_kind { random, adversarial };

// One problem with its buffers, its dequantized weights and its references.
class test_case {
 public:
  test_case(dtype wt, int64_t M, int64_t N, int64_t K, const layout& lo, data_kind kind, uint32_t seed)
      : wt_(wt), M_(M), N_(N), K_(K), lo_(lo) {
    w_stride_ = size_t(K + lo.w_pad) * elem_size(wt);
    x_stride_ = size_t(K + lo.x_pad) * 4;
    y_stride_ = size_t(M + lo.y_pad) * 4;
    wbuf_.assign(lo.w_off + size_t(M) * w_stride_ + 64, 0);
    xbuf_.assign(lo.x_off + size_t(N) * x_stride_ + 64, 0);
    y_begin_ = 64 + lo.y_off;  // 64 guard bytes before row 0
    ybuf_.assign(y_begin_ + size_t(N) * y_stride_ + 64, 0);
    wd_.resize(size_t(M * K));
    xf_.resize(size_t(N * K));
    fill(kind, seed);
  }

  mm_problem problem() {
    mm_problem p;
    p.wtype = wt_;
    p.w = aligned(wbuf_) + lo_.w_off;
    p.w_stride = w_stride_;
    p.x = reinterpret_cast<const float*>(aligned(xbuf_) + lo_.x_off);
    p.x_stride = x_stride_;
    p.y = reinterpret_cast<float*>(aligned(ybuf_) + y_begin_);
    p.y_stride = y_stride_;
    p.M = M_;
    p.N = N_;
    p.K = K_;
    return p;
  }

  // Guard pattern everywhere, NaN in every output.
  void poison() {
    std::memset(ybuf_.data(), kGuard, ybuf_.size());
    for (int64_t n = 0; n < N_; ++n)
      for (int64_t m = 0; m < M_; ++m) *out(n, m) = std::nanf("");
  }

  float* out(int64_t n, int64_t m) { return problem().y + (size_t(n) * y_stride_) / 4 + size_t(m); }
  float y(int64_t n, int64_t m) { return *out(n, m); }

  // sum_k w[m][k] * x'[n][k] and sum_k |w x'| in double; x' = bf16(x) when rounded.
  void reference(bool rounded, std::vector<double>* ref, std::vector<double>* mag) const {
    ref->assign(size_t(N_ * M_), 0.0);
    mag->assign(size_t(N_ * M_), 0.0);
    std::vector<double> xr(static_cast<size_t>(K_));
    for (int64_t n = 0; n < N_; ++n) {
      for (int64_t k = 0; k < K_; ++k) {
        const float v = xf_[size_t(n * K_ + k)];
        xr[size_t(k)] = rounded ? double(bf16_to_f32(f32_to_bf16(v))) : double(v);
      }
      for (int64_t m = 0; m < M_; ++m) {
        double s = 0, a = 0;
        const double* w = wd_.data() + size_t(m * K_);  // not &wd_[..]: K may be 0 (empty vector)
        for (int64_t k = 0; k < K_; ++k) {
          s += w[k] * xr[size_t(k)];
          a += std::fabs(w[k] * xr[size_t(k)]);
        }
        (*ref)[size_t(n * M_ + m)] = s;
        (*mag)[size_t(n * M_ + m)] = a;
      }
    }
  }

  // Byte offsets (from ybuf start) of every output byte: [row start, row start + 4M).
  bool guards_intact(std::string* where) {
    const uint8_t* b = aligned(ybuf_);
    const size_t total = ybuf_.size() - size_t(b - ybuf_.data());
    for (size_t i = 0; i < total; ++i) {
      bool inside = false;
      if (i >= y_begin_) {
        const size_t rel = i - y_begin_;
        const size_t n = rel / y_stride_, col = rel % y_stride_;
        inside = int64_t(n) < N_ && col < size_t(M_) * 4;
      }
      if (!inside && b[i] != kGuard) {
        *where = "byte " + std::to_string(int64_t(i) - int64_t(y_begin_)) + " relative to y[0][0]";
        return false;
      }
    }
    return true;
  }

  dtype wtype() const { return wt_; }
  int64_t M() const { return M_; }
  int64_t N() const { return N_; }
  int64_t K() const { return K_; }

 private:
  static uint8_t* aligned(std::vector<uint8_t>& v) {
    // buffers are over-allocated by 64; align the base so the offsets mean what they say
    const uintptr_t a = reinterpret_cast<uintptr_t>(v.data());
    return v.data() + ((64 - a % 64) % 64);
  }

  void set_w(int64_t m, int64_t k, float v) {
    uint8_t* row = aligned(wbuf_) + lo_.w_off + size_t(m) * w_stride_;
    double d = 0;
    switch (wt_) {
      case dtype::f32:
        std::memcpy(row + k * 4, &v, 4);
        d = v;
        break;
      case dtype::f16: {
        const uint16_t h = f32_to_f16(v);
        std::memcpy(row + k * 2, &h, 2);
        d = f16_to_f32(h);
        break;
      }
      default: {
        const uint16_t h = f32_to_bf16(v);
        std::memcpy(row + k * 2, &h, 2);
        d = bf16_to_f32(h);
        break;
      }
    }
    wd_[size_t(m * K_ + k)] = d;
  }
  void set_x(int64_t n, int64_t k, float v) {
    std::memcpy(aligned(xbuf_) + lo_.x_off + size_t(n) * x_stride_ + size_t(k) * 4, &v, 4);
    xf_[size_t(n * K_ + k)] = v;
  }

  void fill(data_kind kind, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> uni(0.5f, 1.0f);
    // Magnitudes 2^e * [0.5, 1) with e in [lo, hi], random signs, some exact zeros. All normal
    // in every weight type (f16's smallest normal is 2^-14).
    auto value = [&](int lo, int hi) {
      const int e = std::uniform_int_distribution<int>(lo, hi)(rng);
      if (rng() % 16 == 0) return 0.0f;
      const float v = std::ldexp(uni(rng), e);
      return (rng() & 1) ? -v : v;
    };
    const bool f16 = wt_ == dtype::f16;
    if (kind == data_kind::random) {
      for (int64_t m = 0; m < M_; ++m)
        for (int64_t k = 0; k < K_; ++k) set_w(m, k, value(-6, 2));
      for (int64_t n = 0; n < N_; ++n)
        for (int64_t k = 0; k < K_; ++k) set_x(n, k, value(-6, 2));
      return;
    }
    // Adversarial: magnitudes spread over 2^-13 .. 2^15 (f16) or 2^-40 .. 2^40, and pairs
    // (k, k+1) that cancel exactly: w equal, x opposite, so most of the large terms sum to 0
    // and the result is carried by the small ones.
    const int wlo = f16 ? -13 : -40, whi = f16 ? 15 : 40;
    for (int64_t m = 0; m < M_; ++m)
      for (int64_t k = 0; k < K_; ++k) set_w(m, k, (k % 2 == 1 && rng() % 4) ? float(wd_[size_t(m * K_ + k - 1)]) : value(wlo, whi));
    for (int64_t n = 0; n < N_; ++n)
      for (int64_t k = 0; k < K_; ++k) set_x(n, k, (k % 2 == 1 && rng() % 4) ? -xf_[size_t(n * K_ + k - 1)] : value(-40, 40));
  }

  dtype wt_;
  int64_t M_, N_, K_;
  layout lo_;
  size_t w_stride_ = 0, x_stride_ = 0, y_stride_ = 0, y_begin_ = 0;
  std::vector<uint8_t> wbuf_, xbuf_, ybuf_;
  std::vector<double> wd_;
  std::vector<float> xf_;
};

// Result of comparing a run against the references; testable on its own (CheckerCatches*).
struct check_result {
  int bad = 0;
  std::string first;
  bool ok() const { return bad == 0; }
};

// Checks every output against ref within kC * K * 2^-24 * mag + extra_rel * mag, and the guards.
check_result check_output(test_case& tc, const std::vector<double>& ref, const std::vector<double>& mag, double extra_rel) {
  check_result r;
  for (int64_t n = 0; n < tc.N(); ++n) {
    for (int64_t m = 0; m < tc.M(); ++m) {
      const size_t i = size_t(n * tc.M() + m);
      const double y = tc.y(n, m);
      const double tol = kC * double(tc.K()) * kEpsAcc * mag[i] + extra_rel * mag[i];
      const double err = std::fabs(y - ref[i]);
      if (!(err <= tol)) {  // also catches NaN: an output never written
        if (r.bad++ == 0)
          r.first = "y[" + std::to_string(n) + "][" + std::to_string(m) + "] = " + std::to_string(y) + ", ref " +
                    std::to_string(ref[i]) + ", |err| " + std::to_string(err) + " > tol " + std::to_string(tol);
      }
    }
  }
  std::string where;
  if (!tc.guards_intact(&where)) {
    if (r.bad++ == 0) r.first = "wrote outside y: " + where;
  }
  return r;
}

// Runs v on tc with n_threads and checks it (both references for rounding variants).
check_result run_and_check(const mm_variant& v, test_case& tc, int n_threads) {
  tc.poison();
  v.run(tc.problem(), n_threads);
  std::vector<double> ref, mag;
  const bool rounded = v.x_rounding > 0;
  tc.reference(rounded, &ref, &mag);
  check_result r = check_output(tc, ref, mag, 0.0);
  if (r.ok() && rounded) {
    tc.reference(false, &ref, &mag);
    r = check_output(tc, ref, mag, v.x_rounding);
    if (!r.ok()) r.first = "(against unrounded x) " + r.first;
  }
  return r;
}

struct shape {
  int64_t M, N, K;
};
// Decode (N <= 16) and prefill (N > 16) shapes; M, N, K from {1, 2, 3, 7, 16, 17, 31, 33, 64,
// 100, 257} and a few more, K mostly not a multiple of 16 or 32.
const shape kShapes[] = {
    {1, 1, 1},     {2, 3, 7},     {3, 1, 16},    {7, 2, 17},    {16, 16, 31},  {17, 7, 33},
    {31, 3, 64},   {33, 16, 100}, {64, 1, 257},  {100, 5, 1},   {257, 4, 2},   {1, 13, 64},
    {257, 1, 100}, {33, 17, 31},  {64, 33, 17},  {100, 64, 33}, {17, 96, 100}, {257, 130, 7},
    {31, 96, 257}, {7, 130, 64},  {64, 100, 3},  {3, 257, 16},  {130, 31, 64}, {100, 96, 257},
    {257, 64, 33}, {16, 17, 520}, {40, 20, 1030},
    // decode with several groups of x rows and K long enough for the K-blocked dot products
    {37, 7, 1100}, {20, 16, 2100},
};

const dtype kTypes[] = {dtype::f32, dtype::f16, dtype::bf16};

std::string describe(const mm_variant& v, dtype t, const shape& s, const char* what) {
  return std::string(v.name) + " " + type_name(t) + " M=" + std::to_string(s.M) + " N=" + std::to_string(s.N) +
         " K=" + std::to_string(s.K) + " " + what;
}

// ---- per-variant tests -----------------------------------------------------------------------
class MatmulVariant : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    int count = 0;
    const mm_variant* all = mm_variants(&count);
    v_ = &all[GetParam()];
    if (!isa_available(v_->level) || !v_->available())
      GTEST_SKIP() << v_->name << ": this host cannot run it (" << features_string() << ")";
  }
  const mm_variant* v_ = nullptr;
};

std::string variant_name(const ::testing::TestParamInfo<int>& info) {
  int count = 0;
  return mm_variants(&count)[info.param].name;
}

TEST_P(MatmulVariant, RandomDataAllShapes) {
  uint32_t seed = 1;
  for (dtype t : kTypes) {
    if (!v_->supports(t, 1, 1, 1)) continue;
    for (const shape& s : kShapes) {
      for (const layout& lo : {kPacked, misaligned(t)}) {
        test_case tc(t, s.M, s.N, s.K, lo, data_kind::random, seed++);
        const check_result r = run_and_check(*v_, tc, 2);
        ASSERT_TRUE(r.ok()) << describe(*v_, t, s, lo.w_off ? "misaligned" : "packed") << ": " << r.bad
                            << " bad, first " << r.first;
      }
    }
  }
}

TEST_P(MatmulVariant, AdversarialData) {
  const shape shapes[] = {{7, 3, 64}, {33, 16, 257}, {17, 40, 130}, {64, 96, 100}, {5, 1, 2}};
  uint32_t seed = 1000;
  for (dtype t : kTypes) {
    if (!v_->supports(t, 1, 1, 1)) continue;
    for (const shape& s : shapes) {
      test_case tc(t, s.M, s.N, s.K, misaligned(t), data_kind::adversarial, seed++);
      const check_result r = run_and_check(*v_, tc, 2);
      ASSERT_TRUE(r.ok()) << describe(*v_, t, s, "adversarial") << ": " << r.bad << " bad, first " << r.first;
    }
  }
}

// No variant splits K across threads, so one and two threads give the same bits.
TEST_P(MatmulVariant, OneAndTwoThreadsAgree) {
  const shape shapes[] = {{257, 1, 1030}, {100, 7, 257}, {257, 96, 100}, {64, 130, 257}, {33, 257, 64}};
  uint32_t seed = 2000;
  for (dtype t : kTypes) {
    if (!v_->supports(t, 1, 1, 1)) continue;
    for (const shape& s : shapes) {
      test_case tc(t, s.M, s.N, s.K, misaligned(t), data_kind::random, seed++);
      const check_result r1 = run_and_check(*v_, tc, 1);
      ASSERT_TRUE(r1.ok()) << describe(*v_, t, s, "1 thread") << ": " << r1.first;
      std::vector<float> y1;
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t m = 0; m < s.M; ++m) y1.push_back(tc.y(n, m));
      const check_result r2 = run_and_check(*v_, tc, 2);
      ASSERT_TRUE(r2.ok()) << describe(*v_, t, s, "2 threads") << ": " << r2.first;
      size_t i = 0;
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t m = 0; m < s.M; ++m, ++i)
          ASSERT_EQ(std::memcmp(&y1[i], tc.out(n, m), 4), 0)
              << describe(*v_, t, s, "") << " y[" << n << "][" << m << "]: " << y1[i] << " (1 thread) vs " << tc.y(n, m);
    }
  }
}

TEST_P(MatmulVariant, EmptySumIsZero) {
  for (dtype t : kTypes) {
    if (!v_->supports(t, 1, 1, 1)) continue;
    for (const shape& s : {shape{5, 3, 0}, shape{40, 70, 0}}) {
      test_case tc(t, s.M, s.N, s.K, misaligned(t), data_kind::random, 7);
      const check_result r = run_and_check(*v_, tc, 2);
      ASSERT_TRUE(r.ok()) << describe(*v_, t, s, "K=0") << ": " << r.first;
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t m = 0; m < s.M; ++m) ASSERT_EQ(tc.y(n, m), 0.0f);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, MatmulVariant, ::testing::Range(0, [] {
                           int count = 0;
                           mm_variants(&count);
                           return count;
                         }()),
                         variant_name);

// ---- AMX: several tile configurations in a row ----------------------------------------------
// The AMX kernel configures its tiles per thread and per row count of an m block (M % 32 gives
// tiles of fewer rows). A configuration whose stores the compiler dropped would fault or give
// garbage on the second and later shapes; run many different ones back to back, on one thread
// and on two.
TEST(Matmul, AmxSeveralTileShapesInARow) {
  int count = 0;
  const mm_variant* all = mm_variants(&count);
  const mm_variant* amx = nullptr;
  for (int i = 0; i < count; ++i)
    if (std::string(all[i].name) == "amx_bf16") amx = &all[i];
  if (!amx || !isa_available(amx->level) || !amx->available())
    GTEST_SKIP() << "no AMX-BF16 on this host (" << features_string() << ")";
  const shape shapes[] = {{32, 32, 32}, {7, 33, 64}, {16, 17, 31}, {33, 64, 100}, {48, 96, 257},
                          {1, 1, 1},    {31, 130, 33}, {17, 40, 16}, {64, 32, 2},  {100, 64, 77}};
  uint32_t seed = 3000;
  for (int threads : {1, 2, 1}) {
    for (const shape& s : shapes) {
      test_case tc(dtype::bf16, s.M, s.N, s.K, misaligned(dtype::bf16), data_kind::random, seed++);
      const check_result r = run_and_check(*amx, tc, threads);
      ASSERT_TRUE(r.ok()) << describe(*amx, dtype::bf16, s, threads == 1 ? "1 thread" : "2 threads") << ": " << r.first;
    }
  }
}

// ---- the checker itself can fail ------------------------------------------------------------
TEST(Matmul, CheckerCatchesWrongValuesUnwrittenOutputsAndStrayWrites) {
  int count = 0;
  const mm_variant& scalar = mm_variants(&count)[0];
  ASSERT_STREQ(scalar.name, "scalar");
  test_case tc(dtype::f32, 9, 5, 40, misaligned(dtype::f32), data_kind::random, 42);
  std::vector<double> ref, mag;
  tc.reference(false, &ref, &mag);

  tc.poison();
  scalar.run(tc.problem(), 1);
  ASSERT_TRUE(check_output(tc, ref, mag, 0.0).ok());

  // A perturbation of 64 K u sum|w x| on one output: 32 times the tolerance.
  const size_t i = size_t(2 * tc.M() + 3);
  const float saved = tc.y(2, 3);
  *tc.out(2, 3) = float(ref[i] + 64.0 * double(tc.K()) * kEpsAcc * mag[i]);
  EXPECT_FALSE(check_output(tc, ref, mag, 0.0).ok());
  *tc.out(2, 3) = std::nanf("");  // never written
  EXPECT_FALSE(check_output(tc, ref, mag, 0.0).ok());
  *tc.out(2, 3) = saved;
  ASSERT_TRUE(check_output(tc, ref, mag, 0.0).ok());

  // One byte past the last output of row 1 (inside the row gap).
  reinterpret_cast<uint8_t*>(tc.out(1, tc.M() - 1))[4] ^= 0xFF;
  EXPECT_FALSE(check_output(tc, ref, mag, 0.0).ok());
}

// ---- dispatch --------------------------------------------------------------------------------
struct isa_limit_guard {
  isa saved = isa_limit();
  ~isa_limit_guard() { set_isa_limit(saved); }
};

TEST(Matmul, SupportsFloatAndQuantizedWeightTypes) {
  EXPECT_TRUE(matmul_supports(dtype::f32));
  EXPECT_TRUE(matmul_supports(dtype::f16));
  EXPECT_TRUE(matmul_supports(dtype::bf16));
  EXPECT_FALSE(matmul_supports(dtype::i32));
  EXPECT_TRUE(matmul_supports(dtype::q8_0));   // routed to qmatmul.h
  EXPECT_FALSE(matmul_supports(dtype::e8m0));  // scales, not weights
}

TEST(Matmul, PickIsUsableAndFollowsTheRules) {
  isa_limit_guard guard;
  const shape shapes[] = {{4096, 1, 4096}, {4096, 16, 4096}, {4096, 512, 4096}, {7, 33, 5}};
  for (dtype t : kTypes) {
    for (const shape& s : shapes) {
      const mm_variant& v = mm_pick(t, s.M, s.N, s.K);
      EXPECT_TRUE(isa_allowed(v.level) && v.available() && v.supports(t, s.M, s.N, s.K)) << v.name;
      if (t != dtype::bf16) {
        EXPECT_EQ(v.x_rounding, 0.0) << v.name << " picked for " << type_name(t);
      }
    }
  }
  const features& f = host_features();
#if defined(__x86_64__)
  if (f.has_avx512() && f.has_avx2()) {
    EXPECT_STREQ(mm_pick(dtype::f32, 4096, 1, 4096).name, "avx512");

    EXPECT_STREQ(mm_pick(dtype::f16, 4096, 512, 4096).name, "avx512");
  }
  if (f.has_avx512() && f.has_avx2() && f.avx512_bf16) {
    EXPECT_STREQ(mm_pick(dtype::bf16, 4096, 1, 4096).name, "avx512_bf16");
    EXPECT_STREQ(mm_pick(dtype::bf16, 4096, 512, 4096).name, f.amx_bf16 ? "amx_bf16" : "avx512_bf16");
  }
  set_isa_limit(isa::avx2);
  if (f.has_avx2()) {
    EXPECT_STREQ(mm_pick(dtype::bf16, 4096, 512, 4096).name, "avx2");
  }
#elif defined(__aarch64__)
  EXPECT_STREQ(mm_pick(dtype::f16, 4096, 1, 4096).name, "neon");
#endif
  (void)f;
  set_isa_limit(isa::scalar);
  for (dtype t : kTypes) EXPECT_STREQ(mm_pick(t, 64, 64, 64).name, "scalar");
}

TEST(Matmul, DispatchRunsThePickedVariant) {
  for (dtype t : kTypes) {
    for (const shape& s : {shape{100, 3, 130}, shape{70, 40, 100}}) {
      test_case a(t, s.M, s.N, s.K, kPacked, data_kind::random, 77);
      test_case b(t, s.M, s.N, s.K, kPacked, data_kind::random, 77);
      a.poison();
      b.poison();
      matmul(a.problem(), 2);
      mm_pick(t, s.M, s.N, s.K).run(b.problem(), 2);
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t m = 0; m < s.M; ++m) ASSERT_EQ(std::memcmp(a.out(n, m), b.out(n, m), 4), 0);
    }
  }
}

}  // namespace
}  // namespace v4::cpu

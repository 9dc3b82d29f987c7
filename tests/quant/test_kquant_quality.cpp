// K-quant quantizer quality and speed: quantize -> dequantize RMSE of q4_k, q3_k, q2_k on fixed
// Gaussian, heavy-tailed (Student-t, 3 degrees of freedom) and importance-weighted rows must not
// exceed what the first implementation of the scale search reached (recorded below); and the
// quantizer's speed in ns per weight, printed (not asserted: it depends on the machine).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <random>
#include <vector>

#include "quant/quant.h"

namespace v4::quant {
namespace {

// Data from mt19937_64 bits only (std::normal_distribution differs between standard libraries):
// uniform in (0, 1), Box-Muller normals, Student-t3 = z / sqrt(chi2_3 / 3).
double uniform01(std::mt19937_64& r) { return (double(r() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
double normal(std::mt19937_64& r) {
  const double u = uniform01(r), v = uniform01(r);
  return std::sqrt(-2 * std::log(u)) * std::cos(6.283185307179586 * v);
}
std::vector<float> gaussian_rows(size_t n, uint64_t seed) {
  std::mt19937_64 r(seed);
  std::vector<float> x(n);
  for (float& v : x) v = float(normal(r));
  return x;
}
std::vector<float> student_t3_rows(size_t n, uint64_t seed) {
  std::mt19937_64 r(seed);
  std::vector<float> x(n);
  for (float& v : x) {
    const double z = normal(r);
    double chi2 = 0;
    for (int k = 0; k < 3; ++k) {
      const double g = normal(r);
      chi2 += g * g;
    }
    v = float(z / std::sqrt(chi2 / 3));
  }
  return x;
}
// Skewed column importances (a product of two exponentials), like mean squared activations.
std::vector<float> importances(size_t n, uint64_t seed) {
  std::mt19937_64 r(seed);
  std::vector<float> w(n);
  for (float& v : w) v = float(-std::log(uniform01(r)) * -std::log(uniform01(r)) * 4);
  return w;
}

struct KQuant {
  const char* name;
  size_t bytes;  // per 256 weights
  void (*quant)(const float*, void*, int64_t, const float*);
  void (*dequant)(const void*, float*, int64_t);
  // RMSE / RMS (weighted by the importances for the third) of the first implementation of the
  // scale search (11 / 14 sampled candidate scales, each assigned, refit and re-assigned; 3x3
  // integer scales per sub-block; one super-scale refit), on the rows below (65536 weights each),
  // measured on x86-64 with its code (commit 288d7e9) before the rewrite.
  double ref_gauss, ref_t3, ref_weighted;
};
const KQuant kTypes[] = {
    {"q4_k", sizeof(block_q4_k), quantize_row_q4_k_w, dequantize_row_q4_k, 0.0701554477, 0.0900711922, 0.0593208729},
    {"q3_k", sizeof(block_q3_k), quantize_row_q3_k_w, dequantize_row_q3_k, 0.144123865, 0.183578959, 0.125877092},
    {"q2_k", sizeof(block_q2_k), quantize_row_q2_k_w, dequantize_row_q2_k, 0.262833325, 0.290571746, 0.207102717},
};

// Relative slack on the recorded numbers: the current search evaluates the same candidates as the
// first one but rounds some products in another order (and libm's log/cos may differ by an ulp
// between platforms), which moves the RMSE by up to ~1.3e-5 relative (measured); a weaker search
// moves it by 5e-4 or more.
constexpr double kSlack = 1e-4;
constexpr size_t kRows = 65536;

double rel_rmse(const KQuant& t, const std::vector<float>& x, const std::vector<float>* imp) {
  const int64_t k = int64_t(x.size());
  std::vector<uint8_t> blocks(x.size() / 256 * t.bytes);
  t.quant(x.data(), blocks.data(), k, imp ? imp->data() : nullptr);
  std::vector<float> y(x.size());
  t.dequant(blocks.data(), y.data(), k);
  double se = 0, ss = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double w = imp ? (*imp)[i] : 1.0, d = double(x[i]) - y[i];
    se += w * d * d;
    ss += w * double(x[i]) * x[i];
  }
  return std::sqrt(se / ss);
}

TEST(KQuantQuality, rmse_not_above_the_first_search) {
  const std::vector<float> g = gaussian_rows(kRows, 1), t3 = student_t3_rows(kRows, 2), imp = importances(kRows, 3);
  for (const KQuant& t : kTypes) {
    const double eg = rel_rmse(t, g, nullptr), et = rel_rmse(t, t3, nullptr), ew = rel_rmse(t, g, &imp);
    std::cout << "[   INFO   ] " << t.name << " RMSE/RMS: gaussian " << eg << " (first search " << t.ref_gauss
              << "), student-t3 " << et << " (" << t.ref_t3 << "), weighted " << ew << " (" << t.ref_weighted << ")\n";
    EXPECT_LE(eg, t.ref_gauss * (1 + kSlack)) << t.name;
    EXPECT_LE(et, t.ref_t3 * (1 + kSlack)) << t.name;
    EXPECT_LE(ew, t.ref_weighted * (1 + kSlack)) << t.name;
  }
}

// Rows that make the least-squares fits degenerate (all codes equal) or push magnitudes to the
// limits, with skewed importances: constant rows stay nearly exact, nothing becomes NaN or inf.
TEST(KQuantQuality, degenerate_weighted_rows_stay_sane) {
  const std::vector<float> imp = importances(512, 5);
  for (const KQuant& t : kTypes) {
    std::vector<uint8_t> blocks(2 * t.bytes);
    std::vector<float> y(512);
    for (float c : {3.0f, -0.7f, 250.0f}) {
      const std::vector<float> x(512, c);
      t.quant(x.data(), blocks.data(), 512, imp.data());
      t.dequant(blocks.data(), y.data(), 512);
      for (float v : y) ASSERT_LE(std::fabs(v - c), 2e-3 * std::fabs(c)) << t.name << " constant " << c;
    }
    std::vector<float> x = gaussian_rows(512, 6);
    for (size_t i = 0; i < x.size(); i += 7) x[i] = (i % 2 ? 1e30f : -1e30f);  // far beyond what f16 scales hold
    t.quant(x.data(), blocks.data(), 512, imp.data());
    t.dequant(blocks.data(), y.data(), 512);
    for (float v : y) ASSERT_TRUE(std::isfinite(v)) << t.name;
  }
}

// Speed, printed only. The first search took about 125 (q4_k), 110 (q3_k) and 205 (q2_k) ns per
// weight on the 2-core AMD EPYC (Zen 4) development machine, under load, CPU time.
TEST(KQuantQuality, quantize_speed_printed) {
  const std::vector<float> x = gaussian_rows(1 << 18, 4);
  for (const KQuant& t : kTypes) {
    std::vector<uint8_t> blocks(x.size() / 256 * t.bytes);
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      t.quant(x.data(), blocks.data(), int64_t(x.size()), nullptr);
      const auto t1 = std::chrono::steady_clock::now();
      best = std::min(best, std::chrono::duration<double, std::nano>(t1 - t0).count() / double(x.size()));
    }
    std::cout << "[   INFO   ] " << t.name << " quantize: " << best << " ns/weight (best of 3, wall clock)\n";
    EXPECT_GT(best, 0.0);
  }
}

}  // namespace
}  // namespace v4::quant

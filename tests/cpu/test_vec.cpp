// Vector primitives (backends/cpu/vec.h): every table the host runs, selected through
// set_isa_limit at each ISA level, against the scalar table and against float64 math, at lengths
// and misalignments around the vector widths, with guard bytes around every output.
// The checkers return reports instead of asserting, so VecChecker can show that each of them
// rejects a deliberately broken table.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "backends/cpu/cpu.h"
#include "backends/cpu/vec.h"
#include "tensor/tensor.h"

namespace v4::cpu {
namespace {

using vec::table;
using unary_fn = void (*)(const float*, float*, int64_t);
using binary_fn = void (*)(const float*, const float*, float*, int64_t);
using reduce_fn = float (*)(const float*, int64_t);
using to_f32_fn = void (*)(const uint16_t*, float*, int64_t);
using from_f32_fn = void (*)(const float*, uint16_t*, int64_t);

constexpr int64_t kLengths[] = {0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 257, 1000, 4099};
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kFltMax = std::numeric_limits<float>::max();
constexpr float kFltMin = std::numeric_limits<float>::min();
constexpr float kDenormMin = std::numeric_limits<float>::denorm_min();
constexpr int kMaxUlp = 4;  // vec.h: exp, silu, sigmoid, softplus

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// Position on the number line counted in floats; +0 and -0 are the same point.
int64_t ordinal(float f) {
  const uint32_t u = bits_of(f);
  return (u & 0x80000000u) ? -int64_t(u & 0x7fffffffu) : int64_t(u);
}
int64_t ulp_distance(float a, float b) { return std::llabs(ordinal(a) - ordinal(b)); }
// |y - exact| in units of the float spacing at `exact` (2^-149 in the subnormal range).
double ulp_error(float y, double exact) {
  if (std::isinf(y) || std::isinf(float(exact))) return y == float(exact) ? 0.0 : INFINITY;
  const int e = exact == 0 ? -126 : std::max(std::ilogb(exact), -126);
  return std::fabs(double(y) - exact) / std::ldexp(1.0, e - 23);
}

// What a checker found: failures (with the first one described) and the worst errors seen.
struct report {
  int64_t checked = 0, failures = 0;
  double max_ulp = 0, max_rel = 0;
  float worst_x = 0;     // the input of max_ulp
  double max_bound = 0;  // reductions: the largest error / allowed error
  std::string first;
  void fail(const std::string& what) {
    if (failures++ == 0) first = what;
  }
  void merge(const report& o) {
    checked += o.checked;
    if (o.failures && !failures) first = o.first;
    failures += o.failures;
    if (o.max_ulp > max_ulp) worst_x = o.worst_x;
    max_ulp = std::max(max_ulp, o.max_ulp);
    max_rel = std::max(max_rel, o.max_rel);
    max_bound = std::max(max_bound, o.max_bound);
  }
};

// A buffer of n elements starting `misalign` elements past a 64-byte boundary, with at least
// 64 pattern bytes on each side; guards_intact() says whether any of them was written.
template <class T>
class guarded {
 public:
  static constexpr unsigned char kPattern = 0xa5;
  guarded(int64_t n, int misalign) : n_(n), raw_(size_t(n) * sizeof(T) + 256, kPattern) {
    uintptr_t p = reinterpret_cast<uintptr_t>(raw_.data()) + 64;
    p = (p + 63) & ~uintptr_t(63);
    data_ = reinterpret_cast<T*>(p) + misalign;
  }
  guarded(const std::vector<T>& v, int misalign) : guarded(int64_t(v.size()), misalign) {
    if (!v.empty()) std::memcpy(data_, v.data(), v.size() * sizeof(T));
  }
  T* data() { return data_; }
  T operator[](int64_t i) const { return data_[i]; }
  bool guards_intact() const {
    const unsigned char* lo = reinterpret_cast<const unsigned char*>(data_);
    const unsigned char* hi = lo + size_t(n_) * sizeof(T);
    for (const unsigned char* p = raw_.data(); p < lo; ++p)
      if (*p != kPattern) return false;
    for (const unsigned char* p = hi; p < raw_.data() + raw_.size(); ++p)
      if (*p != kPattern) return false;
    return true;
  }

 private:
  int64_t n_;
  std::vector<unsigned char> raw_;
  T* data_;
};

// ---- inputs ---------------------------------------------------------------------------------
const std::vector<float>& specials() {
  static const std::vector<float> v = {
      0.0f, -0.0f, kDenormMin, -kDenormMin, 1e-40f, -1e-40f, kFltMin, -kFltMin, kFltMax, -kFltMax, kInf, -kInf,
      from_bits(0x7fc00000), from_bits(0xffc00000), from_bits(0x7f800001), from_bits(0x7fbfffff), 1.0f, -1.0f,
      0.5f, -0.5f, 1e-8f, -1e-8f, 20.0f, -20.0f, 88.7228317f, 88.7228394f, 89.0f, -87.3365479f, -103.278931f,
      -103.972084f, -104.0f, -110.0f, -200.0f, 1000.0f, 87.68f, -87.68f, 0.3465736f, -0.3465736f};
  return v;
}
// Mostly uniform in [lo, hi], with a special value every 11th element (at varying lanes).
std::vector<float> mixed(int64_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = (i % 11 == 5) ? specials()[(i / 11 + seed) % specials().size()] : u(rng);
  return v;
}
// The accuracy sweep: [-100, 100] step 2^-10, uniform random in [-110, 110], random bit
// patterns of every magnitude, 64 floats either side of each threshold, the specials.
const std::vector<float>& sweep() {
  static const std::vector<float> v = [] {
    std::vector<float> s;
    for (int i = -102400; i <= 102400; ++i) s.push_back(float(i) / 1024.0f);
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> u(-110.0f, 110.0f);
    for (int i = 0; i < 65536; ++i) s.push_back(u(rng));
    for (int i = 0; i < 65536; ++i) {
      const uint32_t b = uint32_t(rng());
      if ((b & 0x7f800000u) != 0x7f800000u) s.push_back(from_bits(b));
    }
    for (const float t : {88.7228317f, -87.3365479f, -103.278931f, -103.972084f, 20.0f, -20.0f, 87.6835f,
                          -87.6835f, 0.0f, 0.3465736f, -0.3465736f, 0.4142135f, -0.8813736f, 63.0f, -63.0f}) {
      float up = t, down = t;
      for (int i = 0; i < 64; ++i) {
        s.push_back(up = std::nextafter(up, kInf));
        s.push_back(down = std::nextafter(down, -kInf));
      }
    }
    for (const float x : specials()) s.push_back(x);
    return s;
  }();
  return v;
}

// ---- float64 references ------------------------------------------------------------------------
double sigmoid_d(double x) {
  const double u = std::exp(-std::fabs(x));  // no overflow; keeps the subnormal results
  return (x >= 0 ? 1.0 : u) / (1.0 + u);
}
double ref_exp(double x) { return std::exp(x); }
double ref_sigmoid(double x) { return sigmoid_d(x); }
double ref_silu(double x) { return x == -INFINITY ? -0.0 : x * sigmoid_d(x); }  // the limit at -inf
double ref_softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }

struct unary_case {
  const char* name;
  unary_fn table::*fn;
  double (*ref)(double);
};
const unary_case kExp{"exp", &table::exp, ref_exp};
const unary_case kSilu{"silu", &table::silu, ref_silu};
const unary_case kSigmoid{"sigmoid", &table::sigmoid, ref_sigmoid};
const unary_case kSoftplus{"softplus", &table::softplus, ref_softplus};

// ---- checkers ---------------------------------------------------------------------------------
// y against the float64 value: NaN iff NaN, +-inf iff the rounded value is, within max_ulp floats
// of the rounded value. Records the worst ulp and relative (normal range) errors.
void check_ulp(report& r, const char* what, float x, float y, double exact, int max_ulp) {
  ++r.checked;
  const float want = float(exact);
  if (std::isnan(want) || std::isnan(y)) {
    if (std::isnan(want) != std::isnan(y)) r.fail(fmt("%s(%a) = %a, want %a", what, x, y, want));
    return;
  }
  if (std::isinf(want) != std::isinf(y) || ulp_distance(y, want) > max_ulp) {
    r.fail(fmt("%s(%a) = %a (%.9g), want %a (%.9g): %lld ulp", what, x, y, y, want, want, (long long)ulp_distance(y, want)));
    return;
  }
  const double e = ulp_error(y, exact);
  if (e > r.max_ulp) r.worst_x = x;
  r.max_ulp = std::max(r.max_ulp, e);
  if (std::fabs(exact) >= kFltMin && !std::isinf(want)) r.max_rel = std::max(r.max_rel, std::fabs(y - exact) / std::fabs(exact));
}
// Exact results: the same bits, or both NaN when NaN payloads are not promised (arithmetic).
void check_same(report& r, const std::string& what, float got, float want, bool any_nan) {
  ++r.checked;
  if (bits_of(got) == bits_of(want)) return;
  if (any_nan && std::isnan(got) && std::isnan(want)) return;
  r.fail(fmt("%s: got %a (0x%08x), want %a (0x%08x)", what.c_str(), got, bits_of(got), want, bits_of(want)));
}
void check_same16(report& r, const std::string& what, uint16_t got, uint16_t want) {
  ++r.checked;
  if (got != want) r.fail(fmt("%s: got 0x%04x, want 0x%04x", what.c_str(), got, want));
}
// A reduction: |got - exact| <= n * 2^-23 * sum|terms|.
void check_bound(report& r, const std::string& what, float got, double exact, double abs_sum, int64_t n) {
  ++r.checked;
  const double bound = double(n) * std::ldexp(1.0, -23) * abs_sum;
  const double err = std::fabs(double(got) - exact);
  if (!(err <= bound)) r.fail(fmt("%s: got %.9g, exact %.17g, error %.3g > bound %.3g", what.c_str(), got, exact, err, bound));
  if (bound > 0) r.max_bound = std::max(r.max_bound, err / bound);
}
template <class T>
void check_guards(report& r, const std::string& what, const guarded<T>& b) {
  ++r.checked;
  if (!b.guards_intact()) r.fail(what + ": wrote outside [y, y + n)");
}
std::string at(const char* fn, int64_t n, int mis, int64_t i) { return fmt("%s n=%lld mis=%d i=%lld", fn, (long long)n, mis, (long long)i); }

// Each check runs one function of a table over every length and misalignment (a at mis, b at
// mis+1, y at mis+3 mod 4), then (where it applies) in place, y == a.
report check_binary(const table& t, const char* name, binary_fn table::*fn, double (*op)(double, double)) {
  report r;
  for (const int64_t n : kLengths) {
    for (int mis = 0; mis < 4; ++mis) {
      const std::vector<float> av = mixed(n, -1e3f, 1e3f, uint32_t(n * 4 + mis)), bv = mixed(n, -2.0f, 2.0f, uint32_t(n * 4 + mis + 99));
      guarded<float> a(av, mis), b(bv, (mis + 1) % 4), y(n, (mis + 3) % 4), ys(n, 0);
      (t.*fn)(a.data(), b.data(), y.data(), n);
      (vec::scalar().*fn)(a.data(), b.data(), ys.data(), n);
      check_guards(r, at(name, n, mis, -1), y);
      for (int64_t i = 0; i < n; ++i) {
        // float64 then float: correctly rounded for + - * / (53 >= 2*24 + 2)
        check_same(r, at(name, n, mis, i), y[i], float(op(av[i], bv[i])), true);
        check_same(r, at(name, n, mis, i) + " vs scalar", y[i], ys[i], true);
      }
      (t.*fn)(a.data(), b.data(), a.data(), n);
      for (int64_t i = 0; i < n; ++i) check_same(r, at(name, n, mis, i) + " in place", a[i], y[i], true);
    }
  }
  return r;
}

report check_scale(const table& t) {
  report r;
  const float cases[][2] = {{0.37f, -1.5f}, {-3.0f, 0.0f}, {1e30f, 1e30f}, {1e-30f, 0.0f}, {kInf, 1.0f}};
  for (const int64_t n : kLengths) {
    for (int mis = 0; mis < 4; ++mis) {
      const auto& c = cases[(n + mis) % 5];
      const std::vector<float> av = mixed(n, -1e3f, 1e3f, uint32_t(n * 4 + mis));
      guarded<float> a(av, mis), y(n, (mis + 3) % 4), ys(n, 0);
      t.scale(a.data(), c[0], c[1], y.data(), n);
      vec::scalar().scale(a.data(), c[0], c[1], ys.data(), n);
      check_guards(r, at("scale", n, mis, -1), y);
      for (int64_t i = 0; i < n; ++i) {
        check_same(r, at("scale", n, mis, i), y[i], std::fma(av[i], c[0], c[1]), true);
        check_same(r, at("scale", n, mis, i) + " vs scalar", y[i], ys[i], true);
      }
      t.scale(a.data(), c[0], c[1], a.data(), n);
      for (int64_t i = 0; i < n; ++i) check_same(r, at("scale", n, mis, i) + " in place", a[i], y[i], true);
    }
  }
  return r;
}

// Tails, guards and in-place use at every length, then the accuracy sweep in one call.
report check_unary(const table& t, const unary_case& c) {
  report r;
  for (const int64_t n : kLengths) {
    for (int mis = 0; mis < 4; ++mis) {
      const std::vector<float> av = mixed(n, -110.0f, 110.0f, uint32_t(n * 4 + mis));
      guarded<float> a(av, mis), y(n, (mis + 3) % 4), ys(n, 0);
      (t.*c.fn)(a.data(), y.data(), n);
      (vec::scalar().*c.fn)(a.data(), ys.data(), n);
      check_guards(r, at(c.name, n, mis, -1), y);
      for (int64_t i = 0; i < n; ++i) {
        check_ulp(r, c.name, av[i], y[i], c.ref(av[i]), kMaxUlp);
        check_ulp(r, (std::string(c.name) + " vs scalar").c_str(), av[i], y[i], ys[i], 2 * kMaxUlp);
      }
      (t.*c.fn)(a.data(), a.data(), n);
      for (int64_t i = 0; i < n; ++i) check_same(r, at(c.name, n, mis, i) + " in place", a[i], y[i], false);
    }
  }
  const std::vector<float>& x = sweep();
  std::vector<float> y(x.size());
  (t.*c.fn)(x.data(), y.data(), int64_t(x.size()));
  report s;
  for (size_t i = 0; i < x.size(); ++i) check_ulp(s, c.name, x[i], y[i], c.ref(x[i]), kMaxUlp);
  r.merge(s);
  return r;
}

// sum, sum_sq, dot, max, exp_sum at every length and misalignment, on three kinds of data:
// uniform [-1, 1], all positive with a wide range of magnitudes, and large cancelling values.
std::vector<float> reduction_data(int64_t n, int kind, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float x = u(rng);
    v[i] = kind == 0 ? x : kind == 1 ? std::ldexp(std::fabs(x) + 0.5f, int(i % 17) - 8) : (i % 2 ? 1e4f : -1e4f) + x;
  }
  return v;
}

report check_reductions(const table& t) {
  report r;
  for (const int64_t n : kLengths) {
    for (int mis = 0; mis < 4; ++mis) {
      for (int kind = 0; kind < 3; ++kind) {
        const std::vector<float> av = reduction_data(n, kind, uint32_t(n * 16 + mis * 4 + kind));
        const std::vector<float> bv = reduction_data(n, (kind + 1) % 3, uint32_t(n * 16 + mis * 4 + kind + 7));
        guarded<float> a(av, mis), b(bv, (mis + 1) % 4);
        double s = 0, sa = 0, q = 0, d = 0, da = 0;
        float mx = -kInf;
        for (int64_t i = 0; i < n; ++i) {
          s += av[i];
          sa += std::fabs(av[i]);
          q += double(av[i]) * av[i];
          d += double(av[i]) * bv[i];
          da += std::fabs(double(av[i]) * bv[i]);
          mx = std::max(mx, av[i]);
        }
        const std::string w = fmt("n=%lld mis=%d kind=%d", (long long)n, mis, kind);
        check_bound(r, "sum " + w, t.sum(a.data(), n), s, sa, n);
        check_bound(r, "sum_sq " + w, t.sum_sq(a.data(), n), q, q, n);
        check_bound(r, "dot " + w, t.dot(a.data(), b.data(), n), d, da, n);
        // against the scalar table: both within the bound of the exact value
        check_bound(r, "sum vs scalar " + w, t.sum(a.data(), n), vec::scalar().sum(a.data(), n), 2 * sa, n);
        check_bound(r, "dot vs scalar " + w, t.dot(a.data(), b.data(), n), vec::scalar().dot(a.data(), b.data(), n), 2 * da, n);
        check_same(r, "max " + w, t.max(a.data(), n), mx, false);
        if (n > 0) {  // NaN elements are skipped
          std::vector<float> nv = av;
          nv[size_t(n - 1)] = NAN;
          nv[size_t(n / 2)] = NAN;
          float nm = -kInf;
          for (const float x : nv) nm = x > nm ? x : nm;
          guarded<float> na(nv, mis);
          check_same(r, "max with NaN " + w, t.max(na.data(), n), nm, false);
        }
      }
    }
  }
  return r;
}

// exp_sum: y = exp(a - m) within 4 ulp of exp of the float difference, the returned sum within
// the reduction bound of the sum of the y written, guards, in place.
report check_exp_sum(const table& t) {
  report r;
  for (const int64_t n : kLengths) {
    for (int mis = 0; mis < 4; ++mis) {
      std::vector<float> av = mixed(n, -30.0f, 5.0f, uint32_t(n * 4 + mis));
      for (float& x : av)
        if (std::isnan(x) || std::isinf(x) || std::fabs(x) > 200) x = -50.0f;  // finite logits
      const float m = n ? *std::max_element(av.begin(), av.end()) : 0.0f;
      guarded<float> a(av, mis), y(n, (mis + 3) % 4), ys(n, 0);
      const float s = t.exp_sum(a.data(), m, y.data(), n);
      const float ss = vec::scalar().exp_sum(a.data(), m, ys.data(), n);
      check_guards(r, at("exp_sum", n, mis, -1), y);
      double sum = 0, abs_sum = 0, diff = 0;
      for (int64_t i = 0; i < n; ++i) {
        diff += std::fabs(double(y[i]) - ys[i]);
        check_ulp(r, "exp_sum", av[i] - m, y[i], std::exp(double(av[i] - m)), kMaxUlp);
        check_ulp(r, "exp_sum vs scalar", av[i] - m, y[i], ys[i], 2 * kMaxUlp);
        sum += y[i];
        abs_sum += std::fabs(y[i]);
      }
      check_bound(r, at("exp_sum sum", n, mis, -1), s, sum, abs_sum, n);
      // against the scalar sum: both within the bound of their own y, which differ by `diff`
      ++r.checked;
      if (!(std::fabs(double(s) - ss) <= 2 * double(n) * std::ldexp(abs_sum, -23) + 2 * diff))
        r.fail(at("exp_sum sum vs scalar", n, mis, -1) + fmt(": %.9g vs %.9g", s, ss));
      const float si = t.exp_sum(a.data(), m, a.data(), n);
      check_same(r, at("exp_sum in place sum", n, mis, -1), si, s, false);
      for (int64_t i = 0; i < n; ++i) check_same(r, at("exp_sum in place", n, mis, i), a[i], y[i], false);
    }
  }
  // the full sweep, m = 0
  const std::vector<float>& x = sweep();
  std::vector<float> y(x.size());
  t.exp_sum(x.data(), 0.0f, y.data(), int64_t(x.size()));
  report sw;
  for (size_t i = 0; i < x.size(); ++i) check_ulp(sw, "exp_sum", x[i], y[i], std::exp(double(x[i])), kMaxUlp);
  r.merge(sw);
  return r;
}

// ---- conversions: bit-exact against the scalar functions in tensor/ --------------------------
std::vector<uint16_t> all_codes() {
  std::vector<uint16_t> v(65536);
  for (int i = 0; i < 65536; ++i) v[size_t(i)] = uint16_t(i);
  return v;
}
// f32 inputs for f32 -> f16/bf16: specials, NaN payloads, every tie (midpoint of two adjacent
// finite codes) and its two neighbours for f16 and for bf16, random bit patterns.
const std::vector<float>& to16_inputs() {
  static const std::vector<float> v = [] {
    std::vector<float> s = specials();
    for (const uint32_t b : {0x7f800001u, 0x7fc00001u, 0xff802000u, 0x7fffe000u, 0x7fbfe000u, 0x7f801fffu, 0x477ff000u,
                             0x477fefffu, 0x477ff001u, 0x33000000u, 0x33000001u, 0x32ffffffu, 0x387fc000u, 0x38800000u,
                             0x7f7fffffu, 0x7f7f8000u, 0x7f7f7fffu, 0x00008000u, 0x00018000u, 0x00000001u})
      for (const uint32_t sign : {0u, 0x80000000u}) s.push_back(from_bits(b | sign));
    for (uint32_t h = 0; h < 0x7c00; ++h) {  // f16: midpoint of h and h+1 is exact in f32
      const float mid = float((double(v4::f16_to_f32(uint16_t(h))) + double(v4::f16_to_f32(uint16_t(h + 1)))) / 2);
      for (const float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, kInf)}) {
        s.push_back(x);
        s.push_back(-x);
      }
    }
    for (uint32_t h = 0; h < 0x7f80; ++h) {  // bf16: midpoint bits are (h << 16) | 0x8000
      const uint32_t mid = (h << 16) | 0x8000u;
      for (const uint32_t b : {mid, mid - 1, mid + 1}) {
        s.push_back(from_bits(b));
        s.push_back(from_bits(b | 0x80000000u));
      }
    }
    std::mt19937 rng(1);
    for (int i = 0; i < (1 << 18); ++i) s.push_back(from_bits(uint32_t(rng())));
    return s;
  }();
  return v;
}

// Independent round-to-nearest-even references (float64 + nearbyint), for non-NaN input.
uint16_t rne_f16(float x) {
  const uint16_t sign = (bits_of(x) >> 16) & 0x8000;
  const double a = std::fabs(double(x));
  if (a >= 65520.0) return sign | 0x7c00;
  const int e = std::max(a == 0 ? -14 : std::ilogb(a), -14);
  const double r = std::nearbyint(std::ldexp(a, 10 - e));  // integer significand in [0, 2048]
  if (e == -14 && r < 1024) return sign | uint16_t(r);      // subnormal (or zero)
  const int re = r == 2048 ? e + 1 : e;
  const uint32_t mant = uint32_t(r == 2048 ? 1024 : r) - 1024;
  return sign | uint16_t(((re + 15) << 10) | mant);
}
uint16_t rne_bf16(float x) {
  const uint32_t sign = bits_of(x) & 0x80000000u;
  const double a = std::fabs(double(x));
  if (a == 0 || std::isinf(a)) return uint16_t((sign | bits_of(float(a))) >> 16);
  const int e = std::max(std::ilogb(a), -126);
  const double v = std::ldexp(std::nearbyint(std::ldexp(a, 7 - e)), e - 7);  // 8-bit significand
  return uint16_t((sign | bits_of(float(v))) >> 16);                          // 2^128 -> inf
}

report check_conversions(const table& t) {
  report r;
  // all 65536 codes, at every misalignment, against the scalar functions (NaN payloads included)
  const std::vector<uint16_t> codes = all_codes();
  for (int mis = 0; mis < 4; ++mis) {
    guarded<uint16_t> a(codes, mis);
    guarded<float> y(65536, (mis + 3) % 4), z(65536, mis);
    t.f16_to_f32(a.data(), y.data(), 65536);
    t.bf16_to_f32(a.data(), z.data(), 65536);
    check_guards(r, "f16_to_f32 all codes", y);
    check_guards(r, "bf16_to_f32 all codes", z);
    for (int i = 0; i < 65536; ++i) {
      check_same(r, fmt("f16_to_f32(0x%04x)", i), y[i], v4::f16_to_f32(uint16_t(i)), false);
      check_same(r, fmt("bf16_to_f32(0x%04x)", i), z[i], v4::bf16_to_f32(uint16_t(i)), false);
    }
  }
  // f32 -> 16 bits over the tie set, against the scalar functions and the independent references
  const std::vector<float>& x = to16_inputs();
  std::vector<uint16_t> h(x.size()), b(x.size());
  t.f32_to_f16(x.data(), h.data(), int64_t(x.size()));
  t.f32_to_bf16(x.data(), b.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const std::string w = fmt("(%a = 0x%08x)", x[i], bits_of(x[i]));
    check_same16(r, "f32_to_f16" + w, h[i], v4::f32_to_f16(x[i]));
    check_same16(r, "f32_to_bf16" + w, b[i], v4::f32_to_bf16(x[i]));
    if (std::isnan(x[i])) {  // NaN stays NaN, quiet
      check_same16(r, "f32_to_f16 NaN is quiet NaN" + w, h[i] & 0x7e00, 0x7e00);
      check_same16(r, "f32_to_bf16 NaN is quiet NaN" + w, b[i] & 0x7fc0, 0x7fc0);
    } else {
      check_same16(r, "f32_to_f16 vs rne" + w, h[i], rne_f16(x[i]));
      check_same16(r, "f32_to_bf16 vs rne" + w, b[i], rne_bf16(x[i]));
    }
  }
  // tails and guards at every length and misalignment, in both directions
  for (const int64_t n : kLengths) {
    for (int mis = 0; mis < 4; ++mis) {
      std::vector<uint16_t> cv(static_cast<size_t>(n));
      std::vector<float> fv(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        cv[size_t(i)] = uint16_t(i * 40503u + uint32_t(n) * 7 + uint32_t(mis));
        fv[size_t(i)] = x[size_t((i * 7919 + n * 31 + mis) % int64_t(x.size()))];
      }
      guarded<uint16_t> c(cv, mis), o16(n, (mis + 1) % 4), ob16(n, (mis + 2) % 4);
      guarded<float> f(fv, (mis + 3) % 4), o32(n, (mis + 2) % 4), ob32(n, (mis + 1) % 4);
      t.f16_to_f32(c.data(), o32.data(), n);
      t.bf16_to_f32(c.data(), ob32.data(), n);
      t.f32_to_f16(f.data(), o16.data(), n);
      t.f32_to_bf16(f.data(), ob16.data(), n);
      check_guards(r, at("f16_to_f32", n, mis, -1), o32);
      check_guards(r, at("bf16_to_f32", n, mis, -1), ob32);
      check_guards(r, at("f32_to_f16", n, mis, -1), o16);
      check_guards(r, at("f32_to_bf16", n, mis, -1), ob16);
      for (int64_t i = 0; i < n; ++i) {
        check_same(r, at("f16_to_f32", n, mis, i), o32[i], v4::f16_to_f32(cv[size_t(i)]), false);
        check_same(r, at("bf16_to_f32", n, mis, i), ob32[i], v4::bf16_to_f32(cv[size_t(i)]), false);
        check_same16(r, at("f32_to_f16", n, mis, i), o16[i], v4::f32_to_f16(fv[size_t(i)]));
        check_same16(r, at("f32_to_bf16", n, mis, i), ob16[i], v4::f32_to_bf16(fv[size_t(i)]));
      }
    }
  }
  return r;
}

// ---- the table under test, chosen through the ISA cap ---------------------------------------------
std::vector<isa> built_levels() {
#if defined(__x86_64__)
  return {isa::scalar, isa::avx2, isa::avx512};
#elif defined(__aarch64__)
  return {isa::scalar, isa::neon};
#else
  return {isa::scalar};
#endif
}

class VecTable : public ::testing::TestWithParam<isa> {
 protected:
  void SetUp() override {
    saved_ = isa_limit();
    if (!isa_available(GetParam())) GTEST_SKIP() << isa_name(GetParam()) << " is not available on this host";
    set_isa_limit(GetParam());
    t_ = &vec::best();
    ASSERT_STREQ(t_->name, isa_name(GetParam()));
  }
  void TearDown() override { set_isa_limit(saved_); }
  void expect_clean(const report& r, const char* what) {
    EXPECT_EQ(r.failures, 0) << r.failures << " of " << r.checked << " checks failed; first: " << r.first;
    EXPECT_GT(r.checked, 0);
    std::printf("  [%-6s] %-10s %8lld checks: max %.3f ulp (x = %.9g), rel %.3g", t_->name, what, (long long)r.checked,
                r.max_ulp, r.worst_x, r.max_rel);
    if (r.max_bound > 0) std::printf("; sums: max error/bound %.3g", r.max_bound);
    std::printf("\n");
  }
  isa saved_ = isa::scalar;
  const table* t_ = nullptr;
};

TEST_P(VecTable, Add) { expect_clean(check_binary(*t_, "add", &table::add, [](double a, double b) { return a + b; }), "add"); }
TEST_P(VecTable, Sub) { expect_clean(check_binary(*t_, "sub", &table::sub, [](double a, double b) { return a - b; }), "sub"); }
TEST_P(VecTable, Mul) { expect_clean(check_binary(*t_, "mul", &table::mul, [](double a, double b) { return a * b; }), "mul"); }
TEST_P(VecTable, Div) { expect_clean(check_binary(*t_, "div", &table::div, [](double a, double b) { return a / b; }), "div"); }
TEST_P(VecTable, Scale) { expect_clean(check_scale(*t_), "scale"); }
TEST_P(VecTable, Exp) { expect_clean(check_unary(*t_, kExp), "exp"); }
TEST_P(VecTable, Silu) { expect_clean(check_unary(*t_, kSilu), "silu"); }
TEST_P(VecTable, Sigmoid) { expect_clean(check_unary(*t_, kSigmoid), "sigmoid"); }
TEST_P(VecTable, Softplus) { expect_clean(check_unary(*t_, kSoftplus), "softplus"); }
TEST_P(VecTable, Reductions) { expect_clean(check_reductions(*t_), "reductions"); }
TEST_P(VecTable, ExpSum) { expect_clean(check_exp_sum(*t_), "exp_sum"); }
TEST_P(VecTable, Conversions) { expect_clean(check_conversions(*t_), "convert"); }

// The contract's named special values, spelled out.
TEST_P(VecTable, SpecialValues) {
  const float in[] = {-kInf, kInf, NAN, 89.0f, 88.7228394f, 88.7228317f, -0.0f, 0.0f, 25.0f, -kFltMax, kFltMax};
  constexpr int n = sizeof in / sizeof in[0];
  float e[n], s[n], g[n], p[n];
  t_->exp(in, e, n);
  t_->silu(in, s, n);
  t_->sigmoid(in, g, n);
  t_->softplus(in, p, n);
  EXPECT_EQ(bits_of(e[0]), 0u);  // exp(-inf) = +0
  EXPECT_EQ(e[1], kInf);
  EXPECT_TRUE(std::isnan(e[2]) && std::isnan(s[2]) && std::isnan(g[2]) && std::isnan(p[2]));
  EXPECT_EQ(e[3], kInf);
  EXPECT_EQ(e[4], kInf);
  EXPECT_TRUE(std::isfinite(e[5]) && e[5] > 3.4e38f);
  EXPECT_EQ(e[6], 1.0f);
  EXPECT_EQ(e[7], 1.0f);
  EXPECT_EQ(g[0], 0.0f);
  EXPECT_EQ(g[1], 1.0f);
  EXPECT_EQ(s[1], kInf);
  EXPECT_EQ(p[0], 0.0f);
  EXPECT_EQ(p[1], kInf);
  EXPECT_EQ(bits_of(p[8]), bits_of(25.0f));  // softplus(x) = x for x > 20
  for (int i : {9, 10}) EXPECT_TRUE(std::isfinite(s[i]) && std::isfinite(g[i]) && std::isfinite(p[i])) << in[i];
  EXPECT_EQ(t_->max(in, 0), -kInf);
  EXPECT_EQ(t_->sum(in, 0), 0.0f);
}

#if defined(__linux__)
// Inputs that end at a page boundary followed by an inaccessible page (and start right after
// one): a tail that reads past a[n-1] or before a[0] faults.
TEST_P(VecTable, NoReadOutsideInput) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  void* mem = mmap(nullptr, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  char* base = static_cast<char*>(mem);
  ASSERT_EQ(mprotect(base, page, PROT_NONE), 0);
  ASSERT_EQ(mprotect(base + 2 * page, page, PROT_NONE), 0);
  char* lo = base + page;
  char* hi = base + 2 * page;
  for (size_t i = 0; i < page; ++i) lo[i] = char(0x3c);  // every float 0.0115, every half 0x3c3c
  float out[64];
  uint16_t out16[64];
  int64_t checked = 0;
  for (int64_t n = 1; n <= 40; ++n) {
    for (const bool at_end : {true, false}) {
      const float* a = at_end ? reinterpret_cast<const float*>(hi) - n : reinterpret_cast<const float*>(lo);
      const uint16_t* h = at_end ? reinterpret_cast<const uint16_t*>(hi) - n : reinterpret_cast<const uint16_t*>(lo);
      t_->add(a, a, out, n);
      t_->scale(a, 2.0f, 1.0f, out, n);
      t_->exp(a, out, n);
      t_->silu(a, out, n);
      t_->sigmoid(a, out, n);
      t_->softplus(a, out, n);
      EXPECT_GE(t_->sum(a, n), 0.0f);
      EXPECT_GE(t_->max(a, n), 0.0f);
      EXPECT_GE(t_->sum_sq(a, n), 0.0f);
      EXPECT_GE(t_->dot(a, a, n), 0.0f);
      EXPECT_GE(t_->exp_sum(a, 1.0f, out, n), 0.0f);
      t_->f16_to_f32(h, out, n);
      EXPECT_EQ(out[n - 1], v4::f16_to_f32(0x3c3c));
      t_->bf16_to_f32(h, out, n);
      t_->f32_to_f16(a, out16, n);
      t_->f32_to_bf16(a, out16, n);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 80);
  munmap(mem, 3 * page);
}
#endif

std::string level_name(const ::testing::TestParamInfo<isa>& info) { return isa_name(info.param); }
INSTANTIATE_TEST_SUITE_P(Vec, VecTable, ::testing::ValuesIn(built_levels()), level_name);

// ---- dispatch ---------------------------------------------------------------------------------
TEST(VecDispatch, ForIsaMatchesAvailability) {
  for (const isa level : {isa::scalar, isa::avx2, isa::avx512, isa::neon}) {
    const table* t = vec::for_isa(level);
    EXPECT_EQ(t != nullptr, isa_available(level)) << isa_name(level);
    if (t) {
      EXPECT_STREQ(t->name, isa_name(level));
    }
  }
  EXPECT_EQ(vec::for_isa(isa::scalar), &vec::scalar());
#if defined(__x86_64__)
  EXPECT_EQ(vec::for_isa(isa::neon), nullptr);
#elif defined(__aarch64__)
  EXPECT_NE(vec::for_isa(isa::neon), nullptr);  // NEON is mandatory on AArch64
  EXPECT_EQ(vec::for_isa(isa::avx2), nullptr);
#endif
}

// best() follows set_isa_limit at every call (nothing cached), in both directions.
TEST(VecDispatch, BestFollowsTheCap) {
  const isa saved = isa_limit();
  set_isa_limit(isa::scalar);
  EXPECT_STREQ(vec::best().name, "scalar");
  isa top = isa::scalar;
  for (const isa level : built_levels()) {
    set_isa_limit(level);
    if (isa_available(level)) top = level;
    EXPECT_STREQ(vec::best().name, isa_name(top)) << "cap " << isa_name(level);
  }
  set_isa_limit(isa::scalar);
  EXPECT_STREQ(vec::best().name, "scalar");
  set_isa_limit(saved);
  // every table has every function
  for (const isa level : built_levels()) {
    const table* t = vec::for_isa(level);
    if (!t) continue;
    const void* const* fns = reinterpret_cast<const void* const*>(&t->add);
    for (size_t i = 0; i < (sizeof(table) - offsetof(table, add)) / sizeof(void*); ++i) EXPECT_NE(fns[i], nullptr) << t->name << " #" << i;
  }
}

// ---- the checkers reject broken tables ------------------------------------------------------------
void add_writes_past_end(const float* a, const float* b, float* y, int64_t n) {
  vec::scalar().add(a, b, y, n);
  if (n > 0) y[n] = 0.0f;
}
void add_skips_last(const float* a, const float* b, float* y, int64_t n) { vec::scalar().add(a, b, y, n > 0 ? n - 1 : 0); }
void add_flips_a_bit(const float* a, const float* b, float* y, int64_t n) {
  vec::scalar().add(a, b, y, n);
  if (n > 5) y[5] = from_bits(bits_of(y[5]) ^ 1);
}
void exp_5ulp(const float* a, float* y, int64_t n) {
  vec::scalar().exp(a, y, n);
  for (int64_t i = 0; i < n; ++i)
    if (std::isfinite(y[i]) && y[i] > 1.0f) y[i] = from_bits(bits_of(y[i]) + 5);
}
void exp_flush_subnormal(const float* a, float* y, int64_t n) {
  vec::scalar().exp(a, y, n);
  for (int64_t i = 0; i < n; ++i)
    if (y[i] < kFltMin) y[i] = 0.0f;
}
void silu_overflowing(const float* a, float* y, int64_t n) {  // the naive x / (1 + exp(-x))
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] / (1.0f + std::exp(-a[i]));
}
void scale_unfused(const float* a, float s, float b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    volatile float p = a[i] * s;  // volatile: no contraction into an fma
    y[i] = p + b;
  }
}
float exp_sum_drops_last(const float* a, float m, float* y, int64_t n) {
  vec::scalar().exp_sum(a, m, y, n);
  double s = 0;
  for (int64_t i = 0; i + 1 < n; ++i) s += y[i];
  return float(s);
}
float sum_sloppy(const float* a, int64_t n) {
  double s = vec::scalar().sum(a, n), sa = 0;
  for (int64_t i = 0; i < n; ++i) sa += std::fabs(a[i]);
  return float(s + 2.0 * double(n) * std::ldexp(sa, -23));
}
float max_nan(const float* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (std::isnan(a[i])) return a[i];
  return vec::scalar().max(a, n);
}
void f16_quieting(const uint16_t* a, float* y, int64_t n) {  // what F16C does to signalling NaNs
  vec::scalar().f16_to_f32(a, y, n);
  for (int64_t i = 0; i < n; ++i)
    if (std::isnan(y[i])) y[i] = from_bits(bits_of(y[i]) | 0x00400000u);
}
void bf16_truncating(const float* a, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = uint16_t(bits_of(a[i]) >> 16);
}

TEST(VecChecker, RejectsBrokenTables) {
  const table& s = vec::scalar();
  auto fails = [](const report& r) { return r.failures > 0; };
  {
    table t = s;
    t.add = add_writes_past_end;
    EXPECT_TRUE(fails(check_binary(t, "add", &table::add, [](double a, double b) { return a + b; })));
    t.add = add_skips_last;
    EXPECT_TRUE(fails(check_binary(t, "add", &table::add, [](double a, double b) { return a + b; })));
    t.add = add_flips_a_bit;
    EXPECT_TRUE(fails(check_binary(t, "add", &table::add, [](double a, double b) { return a + b; })));
  }
  {
    table t = s;
    t.exp = exp_5ulp;
    EXPECT_TRUE(fails(check_unary(t, kExp)));
    t.exp = exp_flush_subnormal;
    EXPECT_TRUE(fails(check_unary(t, kExp)));
    t.silu = silu_overflowing;
    EXPECT_TRUE(fails(check_unary(t, kSilu)));
  }
  {
    table t = s;
    t.scale = scale_unfused;
    EXPECT_TRUE(fails(check_scale(t)));
    t.exp_sum = exp_sum_drops_last;
    EXPECT_TRUE(fails(check_exp_sum(t)));
  }
  {
    table t = s;
    t.sum = sum_sloppy;
    EXPECT_TRUE(fails(check_reductions(t)));
    t = s;
    t.max = max_nan;
    EXPECT_TRUE(fails(check_reductions(t)));
  }
  {
    table t = s;
    t.f16_to_f32 = f16_quieting;
    EXPECT_TRUE(fails(check_conversions(t)));
    t = s;
    t.f32_to_bf16 = bf16_truncating;
    EXPECT_TRUE(fails(check_conversions(t)));
  }
  // and accept the reference itself
  EXPECT_FALSE(fails(check_binary(s, "add", &table::add, [](double a, double b) { return a + b; })));
  EXPECT_FALSE(fails(check_unary(s, kExp)));
}

TEST(VecChecker, UlpAndBoundEdges) {
  report r;
  const double exact = 1.2345678;
  const float want = float(exact);
  check_ulp(r, "t", 0, from_bits(bits_of(want) + 4), exact, 4);
  EXPECT_EQ(r.failures, 0);
  check_ulp(r, "t", 0, from_bits(bits_of(want) + 5), exact, 4);
  EXPECT_EQ(r.failures, 1);
  check_ulp(r, "t", 0, kFltMax, 3.5e38, 4);  // rounds to +inf: only +inf passes
  EXPECT_EQ(r.failures, 2);
  check_ulp(r, "t", 0, NAN, 1.0, 4);
  EXPECT_EQ(r.failures, 3);
  check_ulp(r, "t", 0, kDenormMin * 3, 2.0 * kDenormMin, 4);  // subnormal: 1 ulp = 2^-149
  EXPECT_EQ(r.failures, 3);
  check_ulp(r, "t", 0, kDenormMin * 7, 2.0 * kDenormMin, 4);
  EXPECT_EQ(r.failures, 4);
  report b;
  check_bound(b, "t", 1.0f, 1.0 + 3 * std::ldexp(1.0, -23), 1.0, 3);
  EXPECT_EQ(b.failures, 0);
  check_bound(b, "t", 1.0f, 1.0 + 4 * std::ldexp(1.0, -23), 1.0, 3);
  EXPECT_EQ(b.failures, 1);
  report c;
  check_same(c, "t", NAN, from_bits(0x7fc00001), true);  // arithmetic: any NaN
  EXPECT_EQ(c.failures, 0);
  check_same(c, "t", NAN, from_bits(0x7fc00001), false);  // conversions: the same bits
  EXPECT_EQ(c.failures, 1);
  guarded<float> g(5, 3);
  report gr;
  check_guards(gr, "t", g);
  EXPECT_EQ(gr.failures, 0);
  g.data()[-1] = 0.0f;
  check_guards(gr, "t", g);
  EXPECT_EQ(gr.failures, 1);
}

// Every f32 bit pattern through f32_to_f16/f32_to_bf16 of every table, against the scalar
// functions. About a minute per table; run with --gtest_also_run_disabled_tests.
TEST(VecExhaustive, DISABLED_AllFloatsTo16) {
  constexpr int64_t kChunk = 1 << 16;
  std::vector<float> x(kChunk);
  std::vector<uint16_t> h(kChunk), b(kChunk);
  for (const isa level : built_levels()) {
    const table* t = vec::for_isa(level);
    if (!t || level == isa::scalar) continue;
    int64_t bad = 0;
    for (uint64_t base = 0; base < (1ull << 32); base += kChunk) {
      for (int64_t i = 0; i < kChunk; ++i) x[i] = from_bits(uint32_t(base + uint64_t(i)));
      t->f32_to_f16(x.data(), h.data(), kChunk);
      t->f32_to_bf16(x.data(), b.data(), kChunk);
      for (int64_t i = 0; i < kChunk; ++i) {
        if (h[i] != v4::f32_to_f16(x[i]) || b[i] != v4::f32_to_bf16(x[i])) {
          if (bad++ < 5) ADD_FAILURE() << t->name << " 0x" << std::hex << bits_of(x[i]);
        }
      }
    }
    EXPECT_EQ(bad, 0) << t->name;
  }
}

}  // namespace
}  // namespace v4::cpu

// Float64 references, one function per op, written from tensor/ops.h. Each computes the exact
// result of the documented formula on the exact input values, and a per-element bound on the
// error a correct float32 kernel may make. The bounds (u = 2^-24, the unit roundoff of f32):
//
//   exact (0)          views, relu, clamp, max, get_rows, set_rows, gather, top_k, argsort,
//                      concat, cpy, cast: no arithmetic, only moves and (RNE) conversions, which
//                      are exact functions of the input.
//   u*|y|              add, sub, mul, sqrt: one IEEE operation, correctly rounded (half an ulp).
//   2u*|y|             div: an IEEE division, or a product with a correctly rounded reciprocal.
//   u*(|a*s| + |y|)    scale: a product and a sum, each rounded once (or one fused multiply-add).
//   4 ulp  = 2^-21|y|  exp: vectorised exp approximations are within a few ulp.
//   8 ulp  = 2^-20|y|  silu, sigmoid: exp (4 ulp) then 1+e, division and product (one rounding each).
//   2^-20|y| + 2^-23   softplus: as sigmoid, plus the absolute 2^-24 lost when 1+exp(a) rounds
//                      (kernels need not use log1p; the spec formula is log(1 + exp(a))).
//   n*u*sum|a|         sum over n terms (any summation order).
//   (n+8)*u*|y|        rms_norm: sum of n squares (positive terms, n*u relative), then mean,
//                      + eps, sqrt, reciprocal and product (a few roundings / approximation ulps).
//   softmax            relative error of p_j from: rounding of z = a*s + mask (2u per term), of
//                      z - max (u), exp (4 ulp), the (n+1)-term sum and the division, see below.
//   rope               (|x|+|y|) * (angle error + 16u): the angle pos*f_i is computed in float
//                      (f_i from pow or from i repeated products; the exponent's rounding is
//                      amplified by ln(base)), then sin/cos (few ulp), two products and a sum.
//   (x_r + (K+2)u) * sum_k |w_k x_k|   matmul, matmul_id: K-term f32 accumulation plus the
//                      backend's declared rounding x_r of x (bf16 2^-8, f16 2^-11, else 0).
//   (n+1)*u*|s|*sum|a| hadamard: each output is a signed sum of n inputs (any algorithm), scaled.
//   exact              fp8_roundtrip, fp4_roundtrip: deterministic roundings (power-of-two scales
//                      make every step exact in f32), so every bit must match.
//   fused ops          rms_norm_w (n+9)u|y|, swiglu (2^-20 + 2u)|y|, hc_sum (HC+2)u sum|terms|,
//                      hc_post (HC+3)u sum|terms|, norm_rope (rms_norm's bound carried through
//                      rope's), attn_sparse (attn_mqa's on the assembled keys), hc_pre (each step's
//                      bound plus its inputs' errors carried to first order): the bounds of the
//                      chains they replace, derived next to each.
//   router             route_weights: sqrt(softplus) within softplus's bound, a k-term sum, a
//                      division and a scale; route_topk: exact, except where experts' scores lie
//                      within their error bounds of each other (ref_ROUTE_TOPK says how).
//   fp8 output option  (rms_norm_w, swiglu, norm_rope with an fp8 block) the round trip of a value
//                      known within its bound: the interval of results fp8_roundtrip can give for
//                      any value in that bound (round_fp8_bounds, with the quantization section).
#include "ops/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

namespace v4::optest {

namespace {

constexpr double u = 0x1p-24;           // unit roundoff of f32 (half an ulp, relative)
constexpr double kExpUlps = 0x1p-21;    // 4 ulp of f32, relative: vectorised exp / log
constexpr double kTiny = 0x1p-120;      // absolute slack for results that underflow in f32
const double kInf = std::numeric_limits<double>::infinity();

// x rounded to a binary float with p significant bits, minimum normal exponent emin and largest
// finite value maxv (values that round beyond it become inf). Round to nearest, ties to even.
double round_binary(double x, int p, int emin, double maxv) {
  if (!std::isfinite(x) || x == 0.0) return x;
  int e;
  std::frexp(x, &e);             // |x| = m * 2^e, m in [0.5, 1): the leading bit is 2^(e-1)
  int lead = std::max(e - 1, emin);  // subnormals share the spacing of the smallest normal
  const double q = std::ldexp(1.0, lead - (p - 1));
  const double r = std::nearbyint(x / q) * q;  // x / q is exact (power of two); nearbyint is RNE
  if (std::fabs(r) > maxv) return std::copysign(kInf, x);
  return r;
}

}  // namespace

double round_to(dtype t, double x) {
  if (std::isnan(x)) return x;
  switch (t) {
    case dtype::f32: return round_binary(x, 24, -126, 0x1.fffffep127);
    case dtype::f16: return round_binary(x, 11, -14, 65504.0);
    case dtype::bf16: return round_binary(x, 8, -126, 0x1.fep127);
    case dtype::fp8_e4m3: {  // 4 significant bits, subnormals from 2^-6, saturating at +-448 (no inf)
      const double r = round_binary(x, 4, -6, kInf);
      return std::fabs(r) > 448.0 ? std::copysign(448.0, x) : r;
    }
    case dtype::e8m0: {  // a power of two 2^-127 .. 2^127: |x| = m 2^e rounds up from m = 1.5
      if (std::isinf(x)) return std::numeric_limits<double>::quiet_NaN();
      int e;
      const double m = std::frexp(std::fabs(x), &e);  // |x| = m 2^e, m in [0.5, 1)
      if (x == 0.0) return 0x1p-127;
      const int k = std::min(std::max(m >= 0.75 ? e : e - 1, -127), 127);
      return std::ldexp(1.0, k);
    }
    default: return x;
  }
}

size_t elem_size(dtype t) {
  switch (t) {
    case dtype::f32: case dtype::i32: return 4;
    case dtype::f16: case dtype::bf16: return 2;
    case dtype::i8: case dtype::fp8_e4m3: case dtype::e8m0: return 1;
    case dtype::i64: return 8;
    default: return 0;
  }
}

double decode(dtype t, const void* p) {
  switch (t) {
    case dtype::f32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case dtype::f16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      const int e = (h >> 10) & 31, m = h & 1023;
      const double s = (h & 0x8000) ? -1.0 : 1.0;
      if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : s * kInf;
      if (e == 0) return s * std::ldexp(double(m), -24);
      return s * std::ldexp(double(1024 + m), e - 25);
    }
    case dtype::bf16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      const uint32_t bits = uint32_t(h) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case dtype::i8: return double(*static_cast<const int8_t*>(p));
    case dtype::fp8_e4m3: {  // S.EEEE.MMM, bias 7; S.1111.111 is NaN; E = 0: M * 2^-9
      const uint8_t c = *static_cast<const uint8_t*>(p);
      const int e = (c >> 3) & 15, m = c & 7;
      const double s = (c & 0x80) ? -1.0 : 1.0;
      if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
      return e == 0 ? s * std::ldexp(double(m), -9) : s * std::ldexp(double(8 + m), e - 10);
    }
    case dtype::e8m0: {  // 2^(c - 127); 0xFF is NaN
      const uint8_t c = *static_cast<const uint8_t*>(p);
      return c == 0xFF ? std::numeric_limits<double>::quiet_NaN() : std::ldexp(1.0, int(c) - 127);
    }
    case dtype::i32: {
      int32_t i;
      std::memcpy(&i, p, 4);
      return double(i);
    }
    case dtype::i64: {
      int64_t i;
      std::memcpy(&i, p, 8);
      return double(i);
    }
    default: return std::numeric_limits<double>::quiet_NaN();
  }
}

void encode(dtype t, double x, void* p) {
  switch (t) {
    case dtype::f32: {
      const float f = float(x);
      std::memcpy(p, &f, 4);
      return;
    }
    case dtype::f16: {
      uint16_t h;
      const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
      const double ax = std::fabs(x);
      if (std::isnan(x)) {
        h = 0x7e00;
      } else if (std::isinf(x)) {
        h = sign | 0x7c00;
      } else if (ax == 0.0) {
        h = sign;
      } else {
        int e;
        std::frexp(ax, &e);
        const int lead = e - 1;
        if (lead < -14) {
          h = sign | uint16_t(ax * 0x1p24);
        } else {
          h = sign | uint16_t((lead + 15) << 10) | uint16_t((std::ldexp(ax, -lead) - 1.0) * 1024.0);
        }
      }
      std::memcpy(p, &h, 2);
      return;
    }
    case dtype::bf16: {
      const float f = float(x);  // x is representable in bf16, hence exactly in f32
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      const uint16_t h = std::isnan(x) ? uint16_t(0x7fc0) : uint16_t(bits >> 16);
      std::memcpy(p, &h, 2);
      return;
    }
    case dtype::i8: *static_cast<int8_t*>(p) = int8_t(x); return;
    case dtype::fp8_e4m3: {
      const uint8_t sign = std::signbit(x) ? 0x80 : 0;
      const double ax = std::fabs(x);
      uint8_t c;
      if (std::isnan(x)) {
        c = sign | 0x7F;
      } else if (ax < 0x1p-6) {
        c = sign | uint8_t(ax * 0x1p9);  // subnormal (or zero): M = x / 2^-9
      } else {
        int e;
        std::frexp(ax, &e);  // ax = m 2^e, m in [0.5, 1): leading bit 2^(e-1)
        c = sign | uint8_t((e - 1 + 7) << 3) | uint8_t((std::ldexp(ax, 1 - e) - 1.0) * 8.0);
      }
      *static_cast<uint8_t*>(p) = c;
      return;
    }
    case dtype::e8m0: {
      int e;
      std::frexp(x, &e);
      *static_cast<uint8_t*>(p) = std::isnan(x) ? uint8_t(0xFF) : uint8_t(e - 1 + 127);
      return;
    }
    case dtype::i32: {
      const int32_t i = int32_t(x);
      std::memcpy(p, &i, 4);
      return;
    }
    case dtype::i64: {
      const int64_t i = int64_t(x);
      std::memcpy(p, &i, 8);
      return;
    }
    default: return;
  }
}

namespace {

// Visits every index of a 4-d shape, i0 fastest.
template <class F>
void for_each(const int64_t* ne, F f) {
  for (int64_t i3 = 0; i3 < ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < ne[2]; ++i2)
      for (int64_t i1 = 0; i1 < ne[1]; ++i1)
        for (int64_t i0 = 0; i0 < ne[0]; ++i0) f(i0, i1, i2, i3);
}

// out shaped like src[0], f32; f(a) -> value, tol.
template <class F>
void unary(const ref_in& in, ref_out* o, F f) {
  const darray& a = in.src[0];
  o->shape(dtype::f32, a.ne);
  for (int64_t i = 0; i < a.n(); ++i) f(a.v[size_t(i)], &o->v[size_t(i)], &o->tol[size_t(i)]);
}

// b broadcast to a (b.ne[d] is a.ne[d] or 1).
template <class F>
void binary(const ref_in& in, ref_out* o, F f) {
  const darray &a = in.src[0], &b = in.src[1];
  o->shape(dtype::f32, a.ne);
  for_each(a.ne, [&](int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    const double x = a.at(i0, i1, i2, i3);
    const double y = b.at(i0 % b.ne[0], i1 % b.ne[1], i2 % b.ne[2], i3 % b.ne[3]);
    const size_t k = size_t(o->idx(i0, i1, i2, i3));
    f(x, y, &o->v[k], &o->tol[k]);
  });
}

void copy_exact(const darray& a, ref_out* o) {
  o->shape(a.type, a.ne);
  o->v = a.v;
  o->exact = true;
}

}  // namespace

// ---- views: the result aliases a; the expected values are a's elements seen through the view ----
static void ref_NONE(const ref_in& in, ref_out* o) { copy_exact(in.src[0], o); }

// a contiguous; element i of the view is at byte offset + sum_d i_d * nb_d of a's data.
static void ref_VIEW(const ref_in& in, ref_out* o) {
  const darray& a = in.src[0];
  const op_args& p = in.args;
  const size_t ts = elem_size(a.type);
  o->shape(a.type, p.view_ne);
  o->exact = true;
  for_each(p.view_ne, [&](int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    const size_t byte = p.view_offset + size_t(i0) * p.view_nb[0] + size_t(i1) * p.view_nb[1] +
                        size_t(i2) * p.view_nb[2] + size_t(i3) * p.view_nb[3];
    o->v[size_t(o->idx(i0, i1, i2, i3))] = a.v[byte / ts];
  });
}

static void ref_RESHAPE(const ref_in& in, ref_out* o) {
  o->shape(in.src[0].type, in.args.view_ne);
  o->v = in.src[0].v;
  o->exact = true;
}

// result dim i is a's dim axes[i].
static void ref_PERMUTE(const ref_in& in, ref_out* o) {
  const darray& a = in.src[0];
  const int* ax = in.args.axes;
  int64_t ne[4];
  for (int i = 0; i < 4; ++i) ne[i] = a.ne[ax[i]];
  o->shape(a.type, ne);
  o->exact = true;
  for_each(ne, [&](int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    const int64_t oi[4] = {i0, i1, i2, i3};
    int64_t s[4];
    for (int i = 0; i < 4; ++i) s[ax[i]] = oi[i];
    o->v[size_t(o->idx(i0, i1, i2, i3))] = a.at(s[0], s[1], s[2], s[3]);
  });
}

// ---- elementwise ---------------------------------------------------------------------------------
static void ref_ADD(const ref_in& in, ref_out* o) {
  binary(in, o, [](double a, double b, double* y, double* t) { *y = a + b; *t = u * std::fabs(*y); });
}
static void ref_SUB(const ref_in& in, ref_out* o) {
  binary(in, o, [](double a, double b, double* y, double* t) { *y = a - b; *t = u * std::fabs(*y); });
}
static void ref_MUL(const ref_in& in, ref_out* o) {
  binary(in, o, [](double a, double b, double* y, double* t) { *y = a * b; *t = u * std::fabs(*y); });
}
static void ref_DIV(const ref_in& in, ref_out* o) {
  binary(in, o, [](double a, double b, double* y, double* t) { *y = a / b; *t = 2 * u * std::fabs(*y); });
}
static void ref_SCALE(const ref_in& in, ref_out* o) {
  const double s = in.args.f0, b = in.args.f1;
  unary(in, o, [&](double a, double* y, double* t) {
    *y = a * s + b;
    *t = u * (std::fabs(a * s) + std::fabs(*y));
  });
}
static void ref_CLAMP(const ref_in& in, ref_out* o) {
  const double lo = in.args.f0, hi = in.args.f1;
  unary(in, o, [&](double a, double* y, double* t) { *y = std::isnan(a) ? a : std::min(std::max(a, lo), hi); });
  o->exact = true;
}
static double sigmoid_d(double a) { return 1.0 / (1.0 + std::exp(-a)); }
static void ref_SILU(const ref_in& in, ref_out* o) {
  unary(in, o, [](double a, double* y, double* t) {
    *y = a * sigmoid_d(a);
    *t = 0x1p-20 * std::fabs(*y) + kTiny;
  });
}
static void ref_SIGMOID(const ref_in& in, ref_out* o) {
  unary(in, o, [](double a, double* y, double* t) {
    *y = sigmoid_d(a);
    *t = 0x1p-20 * std::fabs(*y) + kTiny;
  });
}
static void ref_SOFTPLUS(const ref_in& in, ref_out* o) {
  unary(in, o, [](double a, double* y, double* t) {
    *y = a > 20.0 ? a : std::log1p(std::exp(a));
    *t = 0x1p-20 * std::fabs(*y) + 0x1p-23;
  });
}
static void ref_SQRT(const ref_in& in, ref_out* o) {
  unary(in, o, [](double a, double* y, double* t) {
    *y = std::sqrt(a);
    *t = u * std::fabs(*y);
  });
}
static void ref_RELU(const ref_in& in, ref_out* o) {
  unary(in, o, [](double a, double* y, double*) { *y = std::max(a, 0.0); });
  o->exact = true;
}
static void ref_EXP(const ref_in& in, ref_out* o) {
  unary(in, o, [](double a, double* y, double* t) {
    *y = std::exp(a);
    *t = kExpUlps * std::fabs(*y) + kTiny;
  });
}

// ---- reductions -------------------------------------------------------------------------------------
template <bool kMax>
static void reduce(const ref_in& in, ref_out* o) {
  const darray& a = in.src[0];
  const int dim = in.args.dim;
  int64_t ne[4] = {a.ne[0], a.ne[1], a.ne[2], a.ne[3]};
  ne[dim] = 1;
  o->shape(dtype::f32, ne);
  o->exact = kMax;
  const int64_t n = a.ne[dim];
  for_each(ne, [&](int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    int64_t ix[4] = {i0, i1, i2, i3};
    double acc = kMax ? -kInf : 0.0, mag = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      ix[dim] = j;
      const double x = a.at(ix[0], ix[1], ix[2], ix[3]);
      acc = kMax ? std::max(acc, x) : acc + x;
      mag += std::fabs(x);
    }
    const size_t k = size_t(o->idx(i0, i1, i2, i3));
    o->v[k] = acc;
    o->tol[k] = double(n) * u * mag;
  });
}
static void ref_SUM(const ref_in& in, ref_out* o) { reduce<false>(in, o); }
static void ref_MAX(const ref_in& in, ref_out* o) { reduce<true>(in, o); }

// Rows normalised by their RMS, times w[i0] when w is given (rms_norm_w: one more rounding, the
// product by w: (n + 9)u|y| instead of rms_norm's (n + 8)u|y|).
static void rms_rows(const ref_in& in, ref_out* o, const darray* w) {
  const darray& a = in.src[0];
  const int64_t n = a.ne[0];
  o->shape(dtype::f32, a.ne);
  for (int64_t r = 0; r < a.n() / n; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < n; ++j) ss += a.v[size_t(r * n + j)] * a.v[size_t(r * n + j)];
    const double inv = 1.0 / std::sqrt(ss / double(n) + double(in.args.f0));
    for (int64_t j = 0; j < n; ++j) {
      const size_t k = size_t(r * n + j);
      o->v[k] = w ? a.v[k] * inv * w->at(j) : a.v[k] * inv;
      o->tol[k] = double(w ? n + 9 : n + 8) * u * std::fabs(o->v[k]) + (w ? kTiny : 0.0);
    }
  }
}

static void ref_RMS_NORM(const ref_in& in, ref_out* o) { rms_rows(in, o, nullptr); }

// Softmax error bound for p_j = e_j / S, e_j = exp(z_j - M), S = sum_k e_k (+ e_sink):
//   z_k = a_k*s + m_k rounds twice: |dz_k| <= 2u(|a_k s| + |m_k|); z_k - M rounds: u|z_k - M|;
//   so e_k has relative error <= d_k + D + 4ulp(exp), with d_k = 2u(|a_k s|+|m_k|) + u|z_k - M|
//   and D = max_k 2u(|a_k s| + |m_k|) (M is one of the computed z, or the exact sink).
//   S: relative error <= max_k(d_k) + D + 4ulp + (n+1)u (positive terms); the division: u.
static void ref_SOFTMAX(const ref_in& in, ref_out* o) {
  const darray& a = in.src[0];
  const op_args& p = in.args;
  const darray* mask = p.has_mask ? &in.src[1] : nullptr;
  const darray* sink = p.has_sink ? &in.src[p.has_mask ? 2 : 1] : nullptr;
  const int64_t n = a.ne[0];
  const double s = p.softmax_scale;
  o->shape(dtype::f32, a.ne);
  std::vector<double> z(static_cast<size_t>(n)), d(static_cast<size_t>(n));
  for (int64_t i3 = 0; i3 < a.ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < a.ne[2]; ++i2)
      for (int64_t i1 = 0; i1 < a.ne[1]; ++i1) {
        double M = -kInf, D = 0;
        for (int64_t j = 0; j < n; ++j) {
          const double as = a.at(j, i1, i2, i3) * s;
          const double m = mask ? mask->at(j, i1 % mask->ne[1], i2 % mask->ne[2], i3 % mask->ne[3]) : 0.0;
          z[size_t(j)] = as + m;
          M = std::max(M, z[size_t(j)]);
          if (std::isfinite(z[size_t(j)])) D = std::max(D, 2 * u * (std::fabs(as) + std::fabs(m)));
          d[size_t(j)] = std::isfinite(z[size_t(j)]) ? 2 * u * (std::fabs(as) + std::fabs(m)) : 0.0;
        }
        const double sk = sink ? sink->at(i2) : -kInf;
        M = std::max(M, sk);
        if (M == -kInf) continue;  // every logit -inf and no sink: zeros (already)
        double S = std::exp(sk - M), dmax = 0;
        for (int64_t j = 0; j < n; ++j) {
          if (std::isfinite(z[size_t(j)])) {
            d[size_t(j)] += u * std::fabs(z[size_t(j)] - M);
            dmax = std::max(dmax, d[size_t(j)]);
          }
          S += std::exp(z[size_t(j)] - M);
        }
        if (sink) dmax = std::max(dmax, u * std::fabs(sk - M));
        for (int64_t j = 0; j < n; ++j) {
          const size_t k = size_t(o->idx(j, i1, i2, i3));
          o->v[k] = std::exp(z[size_t(j)] - M) / S;
          o->tol[k] = o->v[k] * (d[size_t(j)] + dmax + 2 * D + 2 * kExpUlps + double(n + 2) * u) + kTiny;
        }
      }
}

// ---- rope -----------------------------------------------------------------------------------------------
double rope_freq(int i, const rope_params& p) {
  const double base = p.base;
  double f = std::pow(base, -2.0 * i / p.n_rot);
  if (p.yarn_factor > 1.0f) {
    const double pi = 3.14159265358979323846;
    auto corr = [&](double c) { return p.n_rot * std::log(double(p.yarn_orig_ctx) / (c * 2 * pi)) / (2 * std::log(base)); };
    const double lo = std::max(std::floor(corr(p.yarn_beta_fast)), 0.0);
    double hi = std::min(std::ceil(corr(p.yarn_beta_slow)), double(p.n_rot - 1));
    if (lo == hi) hi += 0.001;
    const double ramp = std::clamp((i - lo) / (hi - lo), 0.0, 1.0);
    f = f / p.yarn_factor * ramp + f * (1 - ramp);
  }
  return f;
}

// The angle pos*f_i computed in float. f_i = base^(-2i/n_rot) from powf carries the exponent's
// rounding amplified by ln(base) (<= (2i/n_rot) ln(base) u) and a few ulp; built by repeated
// products of theta_scale = base^(-2/n_rot) it carries i times theta_scale's error plus i
// roundings: <= i (2 ln(base)/n_rot + 3) u, which covers both. YaRN's mix, the product with pos
// and the rounding of theta itself add a few u: 8u. (f_0 = 1 and small positions stay exact.)
double rope_angle_bound(double theta, int i, const rope_params& p) {
  return std::fabs(theta) * u * (i * (2 * std::log(double(p.base)) / p.n_rot + 3) + 8);
}

static void ref_ROPE(const ref_in& in, ref_out* o) {
  const darray &a = in.src[0], &pos = in.src[1];
  const rope_params& p = in.args.rope;
  const int64_t D = a.ne[0], r = D - p.n_rot, half = p.n_rot / 2;
  o->shape(dtype::f32, a.ne);
  o->v = a.v;  // dims before r pass through (tol 0)
  for (int64_t i3 = 0; i3 < a.ne[3]; ++i3)
    for (int64_t t = 0; t < a.ne[2]; ++t)
      for (int64_t h = 0; h < a.ne[1]; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const double theta = pos.at(t) * rope_freq(int(i), p) * (p.inverse ? -1.0 : 1.0);
          const int64_t j0 = p.interleaved ? r + 2 * i : r + i;
          const int64_t j1 = p.interleaved ? r + 2 * i + 1 : r + i + half;
          const double x = a.at(j0, h, t, i3), y = a.at(j1, h, t, i3);
          const size_t k0 = size_t(o->idx(j0, h, t, i3)), k1 = size_t(o->idx(j1, h, t, i3));
          o->v[k0] = x * std::cos(theta) - y * std::sin(theta);
          o->v[k1] = x * std::sin(theta) + y * std::cos(theta);
          o->tol[k0] = o->tol[k1] = (std::fabs(x) + std::fabs(y)) * (rope_angle_bound(theta, int(i), p) + 16 * u);
        }
}

// ---- linear algebra --------------------------------------------------------------------------------------
// The backend's declared rounding of x (ref_in::mm_x_rounding) comes in one of two classes:
//  * r >= 0: x rounded to relative precision r per element, |x' - x| <= r |x|;
//  * r < 0: x quantized to int8 per block of B = -r elements along K (backends/cpu/matmul.h,
//    mm_variant::x_int8_block): d = amax / 127 over the block, |x' - x| <= e_b = (amax_b / 254)
//    (1 + 2^-20) + 2^-140 per element (derived in backends/cpu/qmatmul.cpp), relative to the
//    block's largest |x| rather than to |x_k|. Then
//      |y - sum w x| <= sum_k |w_k| e_b(k) + (K + 2) u sum_k |w_k| (|x_k| + e_b(k)).
struct x_rounding_class {
  double rel = 0;     // relative precision (first class)
  int64_t block = 0;  // int8 block along K (second class), 0 if none
  void add(double r) {  // the coarser of both (several problem shapes: MATMUL_ID)
    if (r >= 0) rel = std::max(rel, r);
    else block = std::max(block, int64_t(-r));
  }
};

// sum_k |w(k)| e_b(k) over one output, for int8 blocks of B along K of x(k).
template <class W, class X>
static double int8_x_term(int64_t K, int64_t B, W w, X x) {
  double s = 0;
  for (int64_t k0 = 0; k0 < K; k0 += B) {
    double amax = 0;
    for (int64_t k = k0; k < std::min(K, k0 + B); ++k) amax = std::max(amax, std::fabs(x(k)));
    const double e = amax / 254.0 * (1.0 + 0x1p-20) + 0x1p-140;
    for (int64_t k = k0; k < std::min(K, k0 + B); ++k) s += std::fabs(w(k)) * e;
  }
  return s;
}

static void ref_MATMUL(const ref_in& in, ref_out* o) {
  const darray &w = in.src[0], &x = in.src[1];
  const int64_t K = w.ne[0], M = w.ne[1], N = x.ne[1];
  const int64_t ne[4] = {M, N, x.ne[2], x.ne[3]};
  o->shape(dtype::f32, ne);
  x_rounding_class xr;
  if (in.mm_x_rounding) xr.add(in.mm_x_rounding(w.type, M, N, K));
  const int64_t r2 = x.ne[2] / w.ne[2], r3 = x.ne[3] / w.ne[3];
  for_each(ne, [&](int64_t m, int64_t n, int64_t b2, int64_t b3) {
    double acc = 0, mag = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double t = w.at(k, m, b2 / r2, b3 / r3) * x.at(k, n, b2, b3);
      acc += t;
      mag += std::fabs(t);
    }
    const double e = xr.block == 0 ? 0.0
                                   : int8_x_term(K, xr.block, [&](int64_t k) { return w.at(k, m, b2 / r2, b3 / r3); },
                                                 [&](int64_t k) { return x.at(k, n, b2, b3); });
    const size_t i = size_t(o->idx(m, n, b2, b3));
    o->v[i] = acc;
    o->tol[i] = (xr.rel + double(K + 2) * u) * mag + e * (1.0 + double(K + 2) * u);
  });
}

static void ref_MATMUL_ID(const ref_in& in, ref_out* o) {
  const darray &w = in.src[0], &x = in.src[1], &ids = in.src[2];
  const int64_t K = w.ne[0], M = w.ne[1], X1 = x.ne[1], n_used = ids.ne[0], N = ids.ne[1];
  const int64_t ne[4] = {M, n_used, N, 1};
  o->shape(dtype::f32, ne);
  // Each expert is one matmul problem whose N is the number of rows routed to it: take the
  // coarsest rounding the backend declares for any such N.
  x_rounding_class xr;
  if (in.mm_x_rounding)
    for (int64_t nn = 1; nn <= n_used * N; ++nn) xr.add(in.mm_x_rounding(w.type, M, nn, K));
  for_each(ne, [&](int64_t m, int64_t i, int64_t n, int64_t) {
    const int64_t e = int64_t(ids.at(i, n));
    double acc = 0, mag = 0;
    for (int64_t k = 0; k < K; ++k) {
      const double t = w.at(k, m, e) * x.at(k, i % X1, n);
      acc += t;
      mag += std::fabs(t);
    }
    const double ex = xr.block == 0 ? 0.0
                                    : int8_x_term(K, xr.block, [&](int64_t k) { return w.at(k, m, e); },
                                                  [&](int64_t k) { return x.at(k, i % X1, n); });
    const size_t j = size_t(o->idx(m, i, n, 0));
    o->v[j] = acc;
    o->tol[j] = (xr.rel + double(K + 2) * u) * mag + ex * (1.0 + double(K + 2) * u);
  });
}

// ---- indexing ----------------------------------------------------------------------------------------------
static void ref_GET_ROWS(const ref_in& in, ref_out* o) {
  const darray &a = in.src[0], &ids = in.src[1];
  const int64_t ne[4] = {a.ne[0], ids.ne[0], ids.ne[1], 1};
  o->shape(dtype::f32, ne);
  o->exact = true;
  for_each(ne, [&](int64_t k, int64_t n, int64_t b, int64_t) {
    o->v[size_t(o->idx(k, n, b, 0))] = a.at(k, int64_t(ids.at(n, b)), b);
  });
}

static void ref_SET_ROWS(const ref_in& in, ref_out* o) {
  const darray &dst = in.src[0], &src = in.src[1], &ids = in.src[2];
  copy_exact(dst, o);
  for (int64_t b = 0; b < src.ne[2]; ++b)
    for (int64_t n = 0; n < src.ne[1]; ++n)  // in order of n: the last duplicate wins
      for (int64_t k = 0; k < src.ne[0]; ++k)
        o->v[size_t(o->idx(k, int64_t(ids.at(n, b)), b, 0))] = round_to(dst.type, src.at(k, n, b));
}

static void ref_GATHER(const ref_in& in, ref_out* o) {
  const darray &a = in.src[0], &idx = in.src[1];
  o->shape(dtype::f32, idx.ne);
  o->exact = true;
  for_each(idx.ne, [&](int64_t j, int64_t i1, int64_t i2, int64_t i3) {
    o->v[size_t(o->idx(j, i1, i2, i3))] = a.at(int64_t(idx.at(j, i1, i2, i3)), i1, i2, i3);
  });
}

static void ref_ROWS_MASK(const ref_in& in, ref_out* o) {
  const darray& pos = in.src[0];
  const int64_t rows = in.args.n_quant, ratio = in.args.k;
  const int64_t ne[4] = {rows, pos.ne[0], 1, 1};
  o->shape(dtype::f32, ne);
  o->exact = true;
  for (int64_t t = 0; t < pos.ne[0]; ++t)
    for (int64_t i = 0; i < rows; ++i)  // row i holds tokens [i * ratio, (i + 1) * ratio)
      o->v[size_t(o->idx(i, t, 0, 0))] = (i + 1) * ratio <= int64_t(pos.at(t, 0, 0, 0)) + 1 ? 0.0 : -INFINITY;
}

// Row order for top_k: larger values first, NaN below every number, ties (NaNs among
// themselves included) by lower index.
static void ref_TOP_K(const ref_in& in, ref_out* o) {
  const darray& a = in.src[0];
  const int64_t n = a.ne[0], k = in.args.k;
  const int64_t ne[4] = {k, a.ne[1], a.ne[2], a.ne[3]};
  o->shape(dtype::i32, ne);
  o->exact = true;
  std::vector<int64_t> ix(static_cast<size_t>(n));
  for (int64_t r = 0; r < a.n() / n; ++r) {
    const double* row = &a.v[size_t(r * n)];
    std::iota(ix.begin(), ix.end(), 0);
    std::sort(ix.begin(), ix.end(), [&](int64_t x, int64_t y) {
      const bool nx = std::isnan(row[x]), ny = std::isnan(row[y]);
      if (nx != ny) return ny;
      if (!nx && row[x] != row[y]) return row[x] > row[y];
      return x < y;
    });
    for (int64_t j = 0; j < k; ++j) o->v[size_t(r * k + j)] = double(ix[size_t(j)]);
  }
}

static void ref_ARGSORT(const ref_in& in, ref_out* o) {
  const darray& a = in.src[0];
  const int64_t n = a.ne[0];
  const bool desc = in.args.descending;
  o->shape(dtype::i32, a.ne);
  o->exact = true;
  std::vector<int64_t> ix(static_cast<size_t>(n));
  for (int64_t r = 0; r < a.n() / n; ++r) {
    const double* row = &a.v[size_t(r * n)];
    std::iota(ix.begin(), ix.end(), 0);
    std::stable_sort(ix.begin(), ix.end(), [&](int64_t x, int64_t y) { return desc ? row[x] > row[y] : row[x] < row[y]; });
    for (int64_t j = 0; j < n; ++j) o->v[size_t(r * n + j)] = double(ix[size_t(j)]);
  }
}

static void ref_CONCAT(const ref_in& in, ref_out* o) {
  const darray &a = in.src[0], &b = in.src[1];
  const int dim = in.args.dim;
  int64_t ne[4] = {a.ne[0], a.ne[1], a.ne[2], a.ne[3]};
  ne[dim] += b.ne[dim];
  o->shape(a.type, ne);
  o->exact = true;
  for_each(ne, [&](int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    int64_t ix[4] = {i0, i1, i2, i3};
    double v;
    if (ix[dim] < a.ne[dim]) {
      v = a.at(ix[0], ix[1], ix[2], ix[3]);
    } else {
      ix[dim] -= a.ne[dim];
      v = b.at(ix[0], ix[1], ix[2], ix[3]);
    }
    o->v[size_t(o->idx(i0, i1, i2, i3))] = v;
  });
}

// ---- copies ---------------------------------------------------------------------------------------------------
// Elements of a in a's logical order go to dst's logical order, converted (RNE) to dst's type.
static void ref_CPY(const ref_in& in, ref_out* o) {
  const darray &a = in.src[0], &dst = in.src[1];
  o->shape(dst.type, dst.ne);
  o->exact = true;
  for (int64_t i = 0; i < a.n(); ++i) o->v[size_t(i)] = round_to(dst.type, a.v[size_t(i)]);
}

// cast() is a CPY node that writes into a new contiguous tensor of args.cast_type.
void ref_cast(const ref_in& in, ref_out* o) {
  const darray& a = in.src[0];
  o->shape(in.args.cast_type, a.ne);
  o->exact = true;
  for (int64_t i = 0; i < a.n(); ++i) o->v[size_t(i)] = round_to(in.args.cast_type, a.v[size_t(i)]);
}

// Sylvester ordering: H_n[i][j] = (-1)^popcount(i & j).
static void ref_HADAMARD(const ref_in& in, ref_out* o) {
  const darray& a = in.src[0];
  const int64_t n = a.ne[0];
  const double s = in.args.f0;
  o->shape(dtype::f32, a.ne);
  for (int64_t r = 0; r < a.n() / n; ++r) {
    const double* x = &a.v[size_t(r * n)];
    double mag = 0;
    for (int64_t j = 0; j < n; ++j) mag += std::fabs(x[j]);
    for (int64_t i = 0; i < n; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < n; ++j) acc += (__builtin_popcountll(uint64_t(i & j)) & 1) ? -x[j] : x[j];
      o->v[size_t(r * n + i)] = s * acc;
      o->tol[size_t(r * n + i)] = double(n + 1) * u * std::fabs(s) * mag;
    }
  }
}

// The attention ops' output rotation (tensor/ops.h: attn_out_rope), when the case has one: o
// [D, T, H] becomes [D, H, T], each row turned as ref_ROPE turns it. A rotated pair (x, y) with
// bounds (e_x, e_y) gets rope's own bound on the values the kernel turns, (|x| + e_x + |y| +
// e_y)(angle error + 16u), plus the inputs' errors carried through the rotation, at most
// |cos| e_x + |sin| e_y <= e_x + e_y (norm_rope's treatment).
static void attn_out_rotation(const ref_in& in, ref_out* o) {
  if (in.args.out_rope_input < 0) return;
  const darray& pos = in.src[size_t(in.args.out_rope_input)];
  const rope_params& p = in.args.rope;
  const int64_t D = o->ne[0], T = o->ne[1], H = o->ne[2], r = D - p.n_rot, half = p.n_rot / 2;
  ref_out y;
  const int64_t ne[4] = {D, H, T, 1};
  y.shape(dtype::f32, ne);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t d = 0; d < D; ++d) {  // dims before r pass through
        y.v[size_t(y.idx(d, h, t, 0))] = o->v[size_t(o->idx(d, t, h, 0))];
        y.tol[size_t(y.idx(d, h, t, 0))] = o->tol[size_t(o->idx(d, t, h, 0))];
      }
      for (int64_t i = 0; i < half; ++i) {
        const double theta = pos.at(t) * rope_freq(int(i), p) * (p.inverse ? -1.0 : 1.0);
        const int64_t j0 = p.interleaved ? r + 2 * i : r + i, j1 = p.interleaved ? r + 2 * i + 1 : r + i + half;
        const size_t k0 = size_t(y.idx(j0, h, t, 0)), k1 = size_t(y.idx(j1, h, t, 0));
        const double x0 = y.v[k0], x1 = y.v[k1], carried = y.tol[k0] + y.tol[k1];
        y.v[k0] = x0 * std::cos(theta) - x1 * std::sin(theta);
        y.v[k1] = x0 * std::sin(theta) + x1 * std::cos(theta);
        y.tol[k0] = y.tol[k1] =
            (std::fabs(x0) + std::fabs(x1) + carried) * (rope_angle_bound(theta, int(i), p) + 16 * u) + carried;
      }
    }
  *o = std::move(y);
}

// attn_mqa bound, per output element y_d = sum_j p_j k_dj:
//   logits: s_j = (q . k_j)*scale + m_j, |ds_j| <= (D+2)u*scale*sum_d|q_d k_dj| + u|m_j| + u|s_j - M|
//   (dot product, scale, mask add, the subtraction of M); E = max_j |ds_j| (and u|sink - M|).
//   softmax: |dp_j| <= p_j (2E + 2 exp-ulps + (NK+3)u) (each exp and the normalising sum).
//   output: |dy_d| <= sum_j |dp_j| |k_dj| + (NK+1)u sum_j p_j |k_dj| (the weighted sum, the 1/S).
static void ref_ATTN_MQA(const ref_in& in, ref_out* o) {
  const darray& q = in.src[0];
  const darray& kv = in.src[1];
  const op_args& p = in.args;
  const darray* mask = p.has_mask ? &in.src[2] : nullptr;
  const darray* sink = p.has_sink ? &in.src[p.has_mask ? 3 : 2] : nullptr;
  const int64_t D = q.ne[0], T = q.ne[1], H = q.ne[2], NK = kv.ne[1];
  const double scale = p.softmax_scale;
  o->shape(dtype::f32, q.ne);
  std::vector<double> s(static_cast<size_t>(NK)), ds(static_cast<size_t>(NK));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t t = 0; t < T; ++t) {
      double M = sink ? sink->at(h) : -kInf;
      for (int64_t j = 0; j < NK; ++j) {
        double dot = 0, mag = 0;
        for (int64_t d = 0; d < D; ++d) {
          dot += q.at(d, t, h) * kv.at(d, j);
          mag += std::fabs(q.at(d, t, h) * kv.at(d, j));
        }
        const double m = mask ? mask->at(j, t) : 0.0;
        s[size_t(j)] = dot * scale + m;
        ds[size_t(j)] = std::isfinite(s[size_t(j)]) ? double(D + 2) * u * std::fabs(scale) * mag + u * std::fabs(m) : 0.0;
        M = std::max(M, s[size_t(j)]);
      }
      if (M == -kInf) continue;  // zeros (already), exact
      double S = sink ? std::exp(sink->at(h) - M) : 0.0, E = sink ? u * std::fabs(sink->at(h) - M) : 0.0;
      for (int64_t j = 0; j < NK; ++j) {
        if (std::isfinite(s[size_t(j)])) E = std::max(E, ds[size_t(j)] + u * std::fabs(s[size_t(j)] - M));
        S += std::exp(s[size_t(j)] - M);
      }
      const double rel = 2 * E + 2 * kExpUlps + double(NK + 3) * u + double(NK + 1) * u;
      for (int64_t d = 0; d < D; ++d) {
        double y = 0, mag = 0;
        for (int64_t j = 0; j < NK; ++j) {
          const double pj = std::exp(s[size_t(j)] - M) / S;
          y += pj * kv.at(d, j);
          mag += pj * std::fabs(kv.at(d, j));
        }
        const size_t k = size_t(o->idx(d, t, h, 0));
        o->v[k] = y;
        o->tol[k] = rel * mag + kTiny;
      }
    }
  attn_out_rotation(in, o);
}

// attn_sparse: the keys and mask of each token assembled as tensor/ops.h defines them (the
// store's values are the scaled ones), then attn_mqa's reference and bound on them: the fused
// op makes the same computation on the same values.
static void ref_ATTN_SPARSE(const ref_in& in, ref_out* o) {
  const op_args& p = in.args;
  const darray& q = in.src[0];
  const darray& ring = in.src[1];
  const darray& mask = in.src[2];
  size_t k = 3;
  const darray* sink = p.has_sink ? &in.src[k++] : nullptr;
  const darray* store = p.has_store ? &in.src[k++] : nullptr;
  const darray* rest = p.has_rest ? &in.src[k++] : nullptr;
  const darray* ids = p.has_ids ? &in.src[k++] : nullptr;
  const int64_t D = q.ne[0], T = q.ne[1], H = q.ne[2], W = ring.ne[1], Rv = mask.ne[0] - W;
  const int64_t NK = W + (ids ? ids->ne[0] : Rv), nq = store ? store->ne[0] : 0;
  o->shape(dtype::f32, q.ne);
  op_args a = p;
  a.has_mask = true;
  a.out_rope_input = -1;  // the rotation after the whole output (below)
  for (int64_t t = 0; t < T; ++t) {
    const int64_t qne[4] = {D, 1, H, 1}, kne[4] = {D, NK, 1, 1}, mne[4] = {NK, 1, 1, 1};
    darray qt(dtype::f32, qne), kv(dtype::f32, kne), m(dtype::f32, mne);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) qt.at(d, 0, h) = q.at(d, t, h);
    for (int64_t j = 0; j < NK; ++j) {
      if (j < W) {
        for (int64_t d = 0; d < D; ++d) kv.at(d, j) = ring.at(d, j);
        m.at(j) = mask.at(j, t);
        continue;
      }
      const int64_t i = ids ? int64_t(ids->at(j - W, t)) : j - W;
      if (i < 0 || i >= Rv) {  // not a row: masked, zeros
        m.at(j) = -kInf;
        continue;
      }
      for (int64_t d = 0; d < D; ++d) kv.at(d, j) = rest && d >= nq ? rest->at(d - nq, i) : store->at(d, i);
      m.at(j) = mask.at(W + i, t);
    }
    std::vector<darray> src{qt, kv, m};
    if (sink) src.push_back(*sink);
    const ref_in one{a, std::move(src), in.mm_x_rounding};
    ref_out y;
    ref_ATTN_MQA(one, &y);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) {
        o->v[size_t(o->idx(d, t, h, 0))] = y.v[size_t(y.idx(d, 0, h, 0))];
        o->tol[size_t(o->idx(d, t, h, 0))] = y.tol[size_t(y.idx(d, 0, h, 0))];
      }
  }
  attn_out_rotation(in, o);
}

// Sinkhorn bound, relative to each output: the softmax as ref_SOFTMAX (2u|a_k - M| + exp ulps +
// (n+2)u), then each of the 2*iters - 1 normalisations adds at most (n+2)u (a sum of n positive
// terms, + eps, one division) to the relative error of every element. The iteration is a
// contraction (Sinkhorn-Knopp converges geometrically for positive matrices), so earlier errors do
// not grow; we still count each step's error in full, and allow 4x that sum.
// One matrix in float64: a(k, j) gives element (k, j); c[j n + k] gets the result; returns the
// largest spread (max - min over k) of a row, for the bound.
template <class A>
static double sinkhorn_f64(int64_t n, int iters, double eps, A a, std::vector<double>& c) {
  c.assign(size_t(n * n), 0.0);
  double spread = 0;
  for (int64_t j = 0; j < n; ++j) {
    double mx = -kInf, mn = kInf, s = 0;
    for (int64_t k = 0; k < n; ++k) mx = std::max(mx, a(k, j)), mn = std::min(mn, a(k, j));
    spread = std::max(spread, mx - mn);
    for (int64_t k = 0; k < n; ++k) s += c[size_t(j * n + k)] = std::exp(a(k, j) - mx);
    for (int64_t k = 0; k < n; ++k) c[size_t(j * n + k)] = c[size_t(j * n + k)] / s + eps;
  }
  auto norm = [&](bool over_k) {
    for (int64_t x = 0; x < n; ++x) {
      double s = eps;
      for (int64_t y = 0; y < n; ++y) s += over_k ? c[size_t(x * n + y)] : c[size_t(y * n + x)];
      for (int64_t y = 0; y < n; ++y) (over_k ? c[size_t(x * n + y)] : c[size_t(y * n + x)]) /= s;
    }
  };
  norm(false);
  for (int it = 1; it < iters; ++it) {
    norm(true);
    norm(false);
  }
  return spread;
}

static void ref_SINKHORN(const ref_in& in, ref_out* o) {
  const darray& a = in.src[0];
  const int iters = in.args.k;
  const double eps = in.args.f0;
  const int64_t n = a.ne[0];
  o->shape(dtype::f32, a.ne);
  std::vector<double> c;
  for (int64_t i3 = 0; i3 < a.ne[3]; ++i3)
    for (int64_t i2 = 0; i2 < a.ne[2]; ++i2) {
      const double spread = sinkhorn_f64(n, iters, eps, [&](int64_t k, int64_t j) { return a.at(k, j, i2, i3); }, c);
      const double rel = 4 * (2 * u * spread + kExpUlps + double(n + 2) * u + double(2 * iters - 1) * double(n + 2) * u);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t k = 0; k < n; ++k) {
          const size_t idx = size_t(o->idx(k, j, i2, i3));
          o->v[idx] = c[size_t(j * n + k)];
          o->tol[idx] = rel * std::fabs(o->v[idx]) + kTiny;
        }
    }
}

// hc_mix (tensor/ops.h) in float64 from the f32 inputs. pre / post: the argument z = m s + b
// carries two f32 roundings (|dz| <= 2u|z|, |m s| <= |z| + |b|), sigmoid moves by at most
// sigmoid(z)(1 - sigmoid(z))|dz| <= |dz| sigmoid(z) relative, then sigmoid's 8 ulp and one rounding
// for + eps / * 2. comb: ref_SINKHORN's bound with its input perturbed by 2u(|m s2| + |b|), i.e.
// a relative 2 x that, spread over the softmax (exp(a - max): both move), 4x as there.
static void ref_HC_MIX(const ref_in& in, ref_out* o) {
  const darray &mix = in.src[0], &base = in.src[1];
  const double s0 = in.args.f0, s1 = in.args.f1, s2 = in.args.hc_s2, eps = in.args.hc_eps;
  const int iters = in.args.k;
  const int64_t n = in.args.hc_n;
  o->shape(dtype::f32, mix.ne);
  std::vector<double> c;
  for_each(mix.ne, [&](int64_t e, int64_t i1, int64_t i2, int64_t i3) {
    if (e != 0) return;  // one token per e == 0
    auto put = [&](int64_t at, double v, double rel) {
      const size_t i = size_t(o->idx(at, i1, i2, i3));
      o->v[i] = v;
      o->tol[i] = rel * std::fabs(v) + kTiny;
    };
    for (int64_t k = 0; k < n; ++k) {
      for (int part = 0; part < 2; ++part) {
        const double ms = mix.at(part * n + k, i1, i2, i3) * (part ? s1 : s0), b = base.at(part * n + k);
        const double z = ms + b, sg = sigmoid_d(z);
        const double dz = 2 * u * (std::fabs(ms) + std::fabs(b));
        const double rel = dz + 0x1p-20 + 2 * u;
        if (part == 0) put(k, sg + eps, rel);
        else put(n + k * (n + 1), 2 * sg, rel);
      }
    }
    double amax = 0;
    std::vector<double> a(size_t(n * n));
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < n; ++k) {
        const double ms = mix.at(2 * n + j * n + k, i1, i2, i3) * s2, b = base.at(2 * n + j * n + k);
        a[size_t(j * n + k)] = ms + b;
        amax = std::max(amax, std::fabs(ms) + std::fabs(b));
      }
    const double spread = sinkhorn_f64(n, iters, eps, [&](int64_t k, int64_t j) { return a[size_t(j * n + k)]; }, c);
    const double rel = 4 * (2 * u * spread + 4 * u * amax + kExpUlps + double(n + 2) * u +
                            double(2 * iters - 1) * double(n + 2) * u);
    for (int64_t k = 0; k < n; ++k)
      for (int64_t j = 0; j < n; ++j) put(n + k * (n + 1) + 1 + j, c[size_t(j * n + k)], rel);
  });
}

// ---- fused ops of the decode graph (tensor/ops.h) ----------------------------------------------------
// The FP8 round trip (block runs over the first n of each row; 0 = all) of a result o known within
// its bounds: defined with the round trips below.
static void round_fp8_bounds(ref_out* o, int block, int64_t n);

// rms_norm_w: rms_norm's value times w[i0]; its bound (n + 8)u|y| plus one more rounding (the
// product by w: u|y|). With an fp8 block (args.block): then rounded, round_fp8_bounds.
static void ref_RMS_NORM_W(const ref_in& in, ref_out* o) {
  rms_rows(in, o, &in.src[1]);
  if (in.args.block > 0) round_fp8_bounds(o, in.args.block, 0);
}

// swiglu: silu(min(g, L)) * clamp(u, -L, L) * wts (L = f0; no clamp for L <= 0), silu(-inf) = -0.
// The clamps are exact; silu is within 8 ulp (2^-20 relative, as ref_SILU), then two products
// round once each (u each): (2^-20 + 2u)|y|, with kTiny for results that underflow.
static void ref_SWIGLU(const ref_in& in, ref_out* o) {
  const darray &g = in.src[0], &up = in.src[1];
  const darray* wts = in.args.has_wts ? &in.src[2] : nullptr;
  const double L = in.args.f0;
  o->shape(dtype::f32, g.ne);
  for_each(g.ne, [&](int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    double x = g.at(i0, i1, i2, i3), y = up.at(i0, i1, i2, i3);
    if (L > 0) {
      if (x > L) x = L;                            // NaN stays NaN
      if (y > L) y = L;
      else if (y < -L) y = -L;
    }
    const double s = x == -kInf ? -0.0 : x * sigmoid_d(x);
    double h = s * y;
    if (wts) h *= wts->at(0, i1 % wts->ne[1], i2 % wts->ne[2], i3 % wts->ne[3]);
    const size_t k = size_t(o->idx(i0, i1, i2, i3));
    o->v[k] = h;
    o->tol[k] = (0x1p-20 + 2 * u) * std::fabs(h) + kTiny;
  });
  if (in.args.block > 0) round_fp8_bounds(o, in.args.block, 0);
}

// norm_rope: rms_norm (times w when args.has_wts) with its bound e_k ((n + 8)u|y|, or (n + 9)u|y|
// with w: rms_rows), then rope of the normalised row: a rotated pair (x, y) gets rope's own bound
// (|x| + |y|)(angle error + 16u) plus the inputs' errors carried through the rotation, at most
// |cos| e_x + |sin| e_y <= e_x + e_y. Then, with an fp8 block, the round trip of [0, n_quant).
static void ref_NORM_ROPE(const ref_in& in, ref_out* o) {
  const darray& pos = in.src[1];
  rms_rows(in, o, in.args.has_wts ? &in.src[2] : nullptr);
  const rope_params& p = in.args.rope;
  const int64_t D = o->ne[0], r = D - p.n_rot, half = p.n_rot / 2;
  for (int64_t i3 = 0; i3 < o->ne[3]; ++i3)
    for (int64_t t = 0; t < o->ne[2]; ++t)
      for (int64_t h = 0; h < o->ne[1]; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const double theta = pos.at(t) * rope_freq(int(i), p) * (p.inverse ? -1.0 : 1.0);
          const size_t k0 = size_t(o->idx(p.interleaved ? r + 2 * i : r + i, h, t, i3));
          const size_t k1 = size_t(o->idx(p.interleaved ? r + 2 * i + 1 : r + i + half, h, t, i3));
          const double x = o->v[k0], y = o->v[k1];
          const double carried = o->tol[k0] + o->tol[k1];
          o->v[k0] = x * std::cos(theta) - y * std::sin(theta);
          o->v[k1] = x * std::sin(theta) + y * std::cos(theta);
          o->tol[k0] = o->tol[k1] = (std::fabs(x) + std::fabs(y)) * (rope_angle_bound(theta, int(i), p) + 16 * u) + carried;
        }
  if (in.args.block > 0) round_fp8_bounds(o, in.args.block, in.args.n_quant);
}

// hc_sum: y[d, t] = sum_j pre[0, j, t] X[d, j, t] (pre broadcast over t when its dim 2 is 1). HC
// rounded products added in order: at most (HC + 2)u sum|terms| (a sum's bound, as matmul's).
static void ref_HC_SUM(const ref_in& in, ref_out* o) {
  const darray &X = in.src[0], &pre = in.src[1];
  const int64_t D = X.ne[0], HC = X.ne[1], T = X.ne[2];
  const int64_t ne[4] = {D, T, 1, 1};
  o->shape(dtype::f32, ne);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d) {
      double acc = 0, mag = 0;
      for (int64_t j = 0; j < HC; ++j) {
        const double term = pre.at(0, j, t % pre.ne[2]) * X.at(d, j, t);
        acc += term;
        mag += std::fabs(term);
      }
      const size_t i = size_t(o->idx(d, t, 0, 0));
      o->v[i] = acc;
      o->tol[i] = double(HC + 2) * u * mag + kTiny;
    }
}

// hc_post: Y[d, k, t] = w[0, k, t] f[d, t] + sum_j w[1 + j, k, t] X[d, j, t] (w broadcast over t
// when its dim 2 is 1). A dot product of K = 1 + HC rounded products, the bound of matmul (which
// it replaces in the model): (K + 2)u sum|terms|.
static void ref_HC_POST(const ref_in& in, ref_out* o) {
  const darray &f = in.src[0], &X = in.src[1], &w = in.src[2];
  const int64_t D = X.ne[0], HC = X.ne[1], T = X.ne[2];
  const int64_t ne[4] = {D, HC, T, 1};
  o->shape(dtype::f32, ne);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < HC; ++k)
      for (int64_t d = 0; d < D; ++d) {
        const int64_t tw = t % w.ne[2];
        double acc = w.at(0, k, tw) * f.at(d, t), mag = std::fabs(acc);
        for (int64_t j = 0; j < HC; ++j) {
          const double term = w.at(1 + j, k, tw) * X.at(d, j, t);
          acc += term;
          mag += std::fabs(term);
        }
        const size_t i = size_t(o->idx(d, k, t, 0));
        o->v[i] = acc;
        o->tol[i] = double(HC + 3) * u * mag + kTiny;
      }
}

// hc_pre (tensor/ops.h): the chain in float64, each step's bound the bound of the op it is (the
// references above), plus the errors of its inputs carried through it to first order:
//   S     hc_post's (HC + 3)u sum|terms| (post), or exact (X).
//   mix   r (fn . S), r = 1 / sqrt(mean(S^2) + eps): rms_norm's (n + 8)u relative on r, the
//         matmul's (K + 2)u r sum|fn S|, one more rounding u|mix| (a backend may apply r to the dot
//         product instead of each element), and S's errors e: r sum|fn| e, plus |mix| times the
//         relative change of r, sum|S| e / (sum S^2 + n eps).
//   W     hc_mix's own bound (ref_HC_MIX) at the exact mix, plus sum_m |dW/dmix_m| e_mix_m with the
//         derivatives by central differences in float64 (step 2^-20 max(|mix_m|, 1)), doubled:
//         e_mix is ~1e-3 relative at most (K = 16384) and the map is smooth (sigmoid, exp, divisions by
//         sums of positive terms + eps), so the first-order term dominates and 2x covers the rest.
//   y     hc_sum's (HC + 2)u sum|terms| + sum_j (|S_j| e_pre_j + |pre_j| e_S_j).
//   u     rms_norm_w's (D + 9)u|u| + |norm| r2 e_y + |u| sum|y| e_y / (sum y^2 + D eps).
//   q     the FP8 round trip of u within its bound (round_fp8_bounds).
// The regions' padding: exact zeros.
static void ref_HC_PRE(const ref_in& in, ref_out* o) {
  const op_args& a = in.args;
  const darray &X = in.src[0], &fn = in.src[1], &base = in.src[2], &norm = in.src[3];
  const int64_t D = X.ne[0], HC = X.ne[1], T = X.ne[2], M = (2 + HC) * HC, K = HC * D;
  const hc_pre_layout l = hc_pre_layout_of(D, HC, T, a.has_post, a.block > 0);
  const int64_t ne[4] = {l.total, 1, 1, 1};
  o->shape(dtype::f32, ne);  // zeros with tolerance 0: the padding
  // S [D, HC, T] and its bound.
  ref_out S;
  if (a.has_post) {
    ref_in post{a, {in.src[4], X, in.src[5]}, in.mm_x_rounding};
    ref_HC_POST(post, &S);
    for (int64_t i = 0; i < K * T; ++i) {
      o->v[size_t(l.s + i)] = S.v[size_t(i)];
      o->tol[size_t(l.s + i)] = S.tol[size_t(i)];
    }
  } else {
    S.shape(dtype::f32, X.ne);
    S.v = X.v;
  }
  op_args mix_args;
  mix_args.f0 = a.f0, mix_args.f1 = a.f1, mix_args.hc_s2 = a.hc_s2, mix_args.k = a.k, mix_args.hc_eps = a.hc_eps;
  mix_args.hc_n = HC;
  const int64_t mix_ne[4] = {M, 1, 1, 1};
  auto hc_mix_of = [&](const std::vector<double>& m, ref_out* w) {
    darray md(dtype::f32, mix_ne);
    md.v = m;
    ref_in mi{mix_args, {md, base}, in.mm_x_rounding};
    ref_HC_MIX(mi, w);
  };
  ref_out uq;  // u [D, T] and its bound, for q
  const int64_t u_ne[4] = {D, T, 1, 1};
  uq.shape(dtype::f32, u_ne);
  for (int64_t t = 0; t < T; ++t) {
    const double* s = &S.v[size_t(t * K)];
    const double* es = &S.tol[size_t(t * K)];
    double ss = 0, s_e = 0;
    for (int64_t k = 0; k < K; ++k) ss += s[k] * s[k], s_e += std::fabs(s[k]) * es[k];
    const double r = 1.0 / std::sqrt(ss / double(K) + double(a.rms_eps));
    const double rel_r = double(K + 8) * u + s_e / (ss + double(K) * double(a.rms_eps));
    std::vector<double> mix(static_cast<size_t>(M)), e_mix(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) {
      double dot = 0, mag = 0, carried = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double w = fn.at(k, m);
        dot += w * s[k];
        mag += std::fabs(w * s[k]);
        carried += std::fabs(w) * es[k];
      }
      mix[size_t(m)] = r * dot;
      e_mix[size_t(m)] = std::fabs(r * dot) * (rel_r + u) + double(K + 2) * u * r * mag + r * carried + kTiny;
    }
    ref_out W;
    hc_mix_of(mix, &W);
    for (int64_t m = 0; m < M; ++m) {  // first-order carry of mix's errors (see above)
      const double h = 0x1p-20 * std::max(std::fabs(mix[size_t(m)]), 1.0);
      std::vector<double> lo = mix, hi = mix;
      lo[size_t(m)] -= h, hi[size_t(m)] += h;
      ref_out wl, wh;
      hc_mix_of(lo, &wl);
      hc_mix_of(hi, &wh);
      for (int64_t i = 0; i < M; ++i)
        W.tol[size_t(i)] += 2 * std::fabs(wh.v[size_t(i)] - wl.v[size_t(i)]) / (2 * h) * e_mix[size_t(m)];
    }
    for (int64_t i = 0; i < M; ++i) {
      o->v[size_t(l.w + t * M + i)] = W.v[size_t(i)];
      o->tol[size_t(l.w + t * M + i)] = W.tol[size_t(i)];
    }
    // y = hc_sum(S, pre), then u = rms_norm_w(y, norm).
    std::vector<double> y(static_cast<size_t>(D)), e_y(static_cast<size_t>(D));
    double yy = 0, y_e = 0;
    for (int64_t d = 0; d < D; ++d) {
      double acc = 0, mag = 0, carried = 0;
      for (int64_t j = 0; j < HC; ++j) {
        const double p = W.v[size_t(j)], x = s[j * D + d];
        acc += p * x;
        mag += std::fabs(p * x);
        carried += std::fabs(x) * W.tol[size_t(j)] + std::fabs(p) * es[j * D + d];
      }
      y[size_t(d)] = acc;
      e_y[size_t(d)] = double(HC + 2) * u * mag + carried + kTiny;
      yy += acc * acc, y_e += std::fabs(acc) * e_y[size_t(d)];
    }
    const double r2 = 1.0 / std::sqrt(yy / double(D) + double(a.rms_eps));
    const double rel_r2 = y_e / (yy + double(D) * double(a.rms_eps));
    for (int64_t d = 0; d < D; ++d) {
      const double v = y[size_t(d)] * r2 * norm.at(d);
      const double e = double(D + 9) * u * std::fabs(v) + std::fabs(norm.at(d)) * r2 * e_y[size_t(d)] +
                       std::fabs(v) * rel_r2 + kTiny;
      uq.v[size_t(t * D + d)] = v, uq.tol[size_t(t * D + d)] = e;
      o->v[size_t(l.u + t * D + d)] = v, o->tol[size_t(l.u + t * D + d)] = e;
    }
  }
  if (a.block > 0) {
    round_fp8_bounds(&uq, a.block, 0);
    for (int64_t i = 0; i < D * T; ++i) {
      o->v[size_t(l.q + i)] = uq.v[size_t(i)];
      o->tol[size_t(l.q + i)] = uq.tol[size_t(i)];
    }
  }
}

static void ref_CUSTOM(const ref_in& in, ref_out* o) { in.args.custom_ref(in, o); }

// ---- the MoE router (route_topk, route_weights) -------------------------------------------------------------
namespace {

// s = sqrt(softplus(x)) and a bound on |computed s - s|: softplus within t = 2^-20 sp + 2^-23 (as
// ref_SOFTPLUS), so sqrt(sp') lies in [sqrt(max(sp - t, 0)), sqrt(sp + t)]; then the sqrt rounds
// once (u). softplus(-inf) = log(1 + 0) = 0 exactly, and +inf stays +inf: both exact.
struct sqrtsoftplus {
  double s, err;
};
sqrtsoftplus sqrt_softplus(double x) {
  if (x == -kInf) return {0.0, 0.0};
  if (std::isnan(x) || x == kInf) return {x, 0.0};
  const double sp = x > 20.0 ? x : std::log1p(std::exp(x));
  const double t = 0x1p-20 * sp + 0x1p-23;
  const double s = std::sqrt(sp);
  const double d = std::max(std::sqrt(sp + t) - s, s - std::sqrt(std::max(sp - t, 0.0)));
  return {s, d + u * (s + d)};
}

}  // namespace

// route_topk: the top_k ranking (ref_TOP_K's order and tie rule) of c_e = s_e + bias_e per row.
// The kernels rank their f32 scores, each within err_e = err(s_e) + u(|c_e| + err(s_e)) (the add
// rounds once) of c_e, so two experts whose intervals [c - err, c + err] overlap may come out in
// either order (or trade places at the k-th). The check is exact except there: experts are split
// into the connected components of overlapping intervals (sorted by their lower ends, merged while
// they overlap); components occupy consecutive ranks, and their order is certain. A component whose
// members are not all the same input (logit and bias equal: then their computed scores are equal
// too, and the tie rule decides) or all exact (err 0: equal values) is ambiguous: its ranks below k
// accept any expert index within the spread of the component's indices around the expected one
// (tol = max |index_m - index_expected| over its members m); every other rank must match exactly.
// Inputs of the cases keep such components rare (grid-valued or well-spread logits).
static void ref_ROUTE_TOPK(const ref_in& in, ref_out* o) {
  const darray& a = in.src[0];
  const darray* bias = in.args.has_bias ? &in.src[1] : nullptr;
  const int64_t E = a.ne[0], k = in.args.k;
  const int64_t ne[4] = {k, a.ne[1], a.ne[2], a.ne[3]};
  o->shape(dtype::i32, ne);
  std::vector<double> c(static_cast<size_t>(E)), err(static_cast<size_t>(E));
  std::vector<int64_t> ix(static_cast<size_t>(E)), by_low(static_cast<size_t>(E)), comp(static_cast<size_t>(E));
  for (int64_t r = 0; r < a.n() / E; ++r) {
    for (int64_t e = 0; e < E; ++e) {
      const sqrtsoftplus s = sqrt_softplus(a.v[size_t(r * E + e)]);
      const double b = bias ? bias->v[size_t(e)] : 0.0;
      c[size_t(e)] = s.s + b;
      err[size_t(e)] = std::isfinite(c[size_t(e)]) ? s.err + u * (std::fabs(c[size_t(e)]) + s.err) : 0.0;
    }
    std::iota(ix.begin(), ix.end(), 0);
    std::sort(ix.begin(), ix.end(), [&](int64_t x, int64_t y) {
      const bool nx = std::isnan(c[size_t(x)]), ny = std::isnan(c[size_t(y)]);
      if (nx != ny) return ny;
      if (!nx && c[size_t(x)] != c[size_t(y)]) return c[size_t(x)] > c[size_t(y)];
      return x < y;
    });
    // Components of overlapping intervals (NaN scores: each its own, exact).
    std::iota(by_low.begin(), by_low.end(), 0);
    auto low = [&](int64_t e) { return std::isnan(c[size_t(e)]) ? -kInf : c[size_t(e)] - err[size_t(e)]; };
    std::sort(by_low.begin(), by_low.end(), [&](int64_t x, int64_t y) { return low(x) < low(y) || (low(x) == low(y) && x < y); });
    int64_t n_comp = 0;
    double reach = -kInf;  // the highest upper end of the current component (-inf: none open)
    for (const int64_t e : by_low) {
      const double hi = c[size_t(e)] + err[size_t(e)];
      if (std::isnan(c[size_t(e)])) {
        ++n_comp;
        reach = -kInf;
      } else if (reach == -kInf || low(e) > reach) {
        ++n_comp;
        reach = hi;
      } else {
        reach = std::max(reach, hi);
      }
      comp[size_t(e)] = n_comp;
    }
    for (int64_t j = 0; j < k; ++j) {
      const int64_t want = ix[size_t(j)];
      double spread = 0;
      bool same_input = true, all_exact = true;
      for (int64_t m = 0; m < E; ++m) {
        if (comp[size_t(m)] != comp[size_t(want)]) continue;
        spread = std::max(spread, std::fabs(double(m - want)));
        same_input = same_input && a.v[size_t(r * E + m)] == a.v[size_t(r * E + want)] &&
                     (!bias || bias->v[size_t(m)] == bias->v[size_t(want)]);
        all_exact = all_exact && err[size_t(m)] == 0.0;
      }
      o->v[size_t(r * k + j)] = double(want);
      o->tol[size_t(r * k + j)] = same_input || all_exact ? 0.0 : spread;
    }
  }
}

// route_weights: w_j = s(logits[ids_j]) within err_j (above); with normalize, q_j = w_j / S, S the
// sum of the k weights, computed within ES = sum err_j + k u (S + sum err_j) (a k-term sum of
// perturbed terms, any order), so |q' - q| <= (err_j + q ES) / (S - ES) before the division's
// rounding (u); then y = q * scale, one more rounding (u|y|). S = 0 (every chosen logit -inf) gives
// 0/0: NaN. When S <= ES the quotient is not bounded: the cases avoid it.
static void ref_ROUTE_WEIGHTS(const ref_in& in, ref_out* o) {
  const darray &a = in.src[0], &ids = in.src[1];
  const bool normalize = in.args.normalize;
  const double scale = in.args.f0;
  const int64_t E = a.ne[0], k = ids.ne[0];
  o->shape(dtype::f32, ids.ne);
  std::vector<sqrtsoftplus> w(static_cast<size_t>(k));
  for (int64_t r = 0; r < ids.n() / k; ++r) {
    double S = 0, ES = 0;
    for (int64_t j = 0; j < k; ++j) {
      w[size_t(j)] = sqrt_softplus(a.v[size_t(r * E + int64_t(ids.v[size_t(r * k + j)]))]);
      S += w[size_t(j)].s;
      ES += w[size_t(j)].err;
    }
    ES += double(k) * u * (S + ES);
    for (int64_t j = 0; j < k; ++j) {
      const size_t i = size_t(r * k + j);
      const double wj = w[size_t(j)].s, ej = w[size_t(j)].err;
      if (!normalize) {
        o->v[i] = wj * scale;
        o->tol[i] = std::fabs(scale) * ej + u * (std::fabs(o->v[i]) + std::fabs(scale) * ej) + kTiny;
        continue;
      }
      const double q = wj / S;  // NaN for 0/0, inf/inf
      const double eq = S > ES ? (ej + q * ES) / (S - ES) : kInf;
      o->v[i] = q * scale;
      o->tol[i] = std::fabs(scale) * (eq + u * (q + eq)) * (1 + u) + u * std::fabs(o->v[i]) + kTiny;
    }
  }
}


// ---- quantization round-trips ------------------------------------------------------------------------------
// The formats are defined here from their bit fields (never from quant/): every non-negative finite
// code of a binary format with ebits exponent and mbits mantissa bits and exponent bias `bias` is
// listed with its value; an element takes the nearest listed value, a tie going to the even code
// (the code whose mantissa LSB is 0: IEEE round-to-nearest-even). The scale 2^k comes from the f32
// product f32(max(amax, floor) * f32(1/max)) with k = ceil(log2) read off frexp.
namespace {

struct minifloat {
  std::vector<double> value;  // value[c] for the non-negative codes c, NaN codes left out
  double max = 0;
};

minifloat make_minifloat(int ebits, int mbits, int bias, bool top_code_is_nan) {
  minifloat f;
  const int n = 1 << (ebits + mbits);
  for (int c = 0; c < n; ++c) {
    if (top_code_is_nan && c == n - 1) break;
    const int e = c >> mbits, m = c & ((1 << mbits) - 1);
    const double v = e == 0 ? std::ldexp(double(m), 1 - bias - mbits) : std::ldexp(1.0 + std::ldexp(double(m), -mbits), e - bias);
    f.value.push_back(v);
  }
  f.max = f.value.back();
  return f;
}

// |a| <= f.max: the nearest value, ties to the even code.
double nearest(const minifloat& f, double a) {
  size_t best = 0;
  for (size_t c = 1; c < f.value.size(); ++c) {
    const double d = std::fabs(f.value[c] - a), db = std::fabs(f.value[best] - a);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return f.value[best];
}

void ref_roundtrip(const ref_in& in, ref_out* o, const minifloat& fmt, double amax_floor) {
  const darray& a = in.src[0];
  const int64_t ne0 = a.ne[0], n = in.args.n_quant ? in.args.n_quant : ne0, block = in.args.block;
  const double inv = double(float(1.0 / fmt.max));  // the kernels' f32 constant 1/max
  o->shape(dtype::f32, a.ne);
  o->exact = true;
  for (int64_t r = 0; r < a.n() / ne0; ++r) {
    const double* x = &a.v[size_t(r * ne0)];
    double* y = &o->v[size_t(r * ne0)];
    for (int64_t i = n; i < ne0; ++i) y[i] = x[i];
    for (int64_t c0 = 0; c0 < n; c0 += block) {
      const int64_t c1 = std::min(n, c0 + block);
      double amax = 0;
      for (int64_t i = c0; i < c1; ++i)
        if (std::isfinite(x[i])) amax = std::max(amax, std::fabs(x[i]));
      const double ratio = round_to(dtype::f32, std::max(amax, amax_floor) * inv);  // exact product, one rounding
      int e;
      const double m = std::frexp(ratio, &e);  // ratio = m * 2^e, m in [0.5, 1)
      const double s = std::ldexp(1.0, m == 0.5 ? e - 1 : e);
      for (int64_t i = c0; i < c1; ++i) {
        if (!std::isfinite(x[i])) {
          y[i] = x[i];
          continue;
        }
        const double v = std::clamp(x[i] / s, -fmt.max, fmt.max);
        y[i] = std::copysign(nearest(fmt, std::fabs(v)), v) * s;
      }
    }
  }
}

}  // namespace

// E4M3 (bias 7, S.1111.111 = NaN, max 448); amax floor 1e-4 as the f32 constant of the official kernel.
static void ref_FP8_ROUNDTRIP(const ref_in& in, ref_out* o) {
  static const minifloat e4m3 = make_minifloat(4, 3, 7, true);
  ref_roundtrip(in, o, e4m3, double(1e-4f));
}

// A fused op's FP8 output rounding, y = fp8_roundtrip(z, block, n), where z is the op's value,
// known only within its bound: every element of the kernel's z lies in [v - tol, v + tol]. The
// round trip is monotone in each of its inputs given the scale, and the scale exponent
// ceil(log2(f32(max(amax, floor) / 448))) is monotone in amax; a run's amax lies between
// max(|v| - tol) and max(|v| + tol) over its finite elements, so its scale is one of the (one or
// two) powers of two between those amaxes' scales. The element's result is then one of the values
// between its lowest rounding (of v - tol, at any of those scales) and its highest (of v + tol):
// that interval becomes the expected value (its middle) and bound (its half width). A bound of 0
// leaves the exact round trip. Non-finite elements pass through unchanged and enter no amax.
static void round_fp8_bounds(ref_out* o, int block, int64_t n_quant) {
  static const minifloat e4m3 = make_minifloat(4, 3, 7, true);
  const double inv = double(float(1.0 / e4m3.max)), floor = double(1e-4f);
  auto scale_exp = [&](double amax) {  // as ref_roundtrip
    const double ratio = round_to(dtype::f32, std::max(amax, floor) * inv);
    int e;
    const double m = std::frexp(ratio, &e);
    return m == 0.5 ? e - 1 : e;
  };
  auto round = [&](double x, double s) {
    const double v = std::clamp(x / s, -e4m3.max, e4m3.max);
    return std::copysign(nearest(e4m3, std::fabs(v)), v) * s;
  };
  const int64_t ne0 = o->ne[0], n = n_quant ? n_quant : ne0;
  for (int64_t row = 0; row < o->n() / ne0; ++row) {
    double* v = &o->v[size_t(row * ne0)];
    double* tol = &o->tol[size_t(row * ne0)];
    for (int64_t c0 = 0; c0 < n; c0 += block) {
      const int64_t c1 = std::min(n, c0 + block);
      double amax_lo = 0, amax_hi = 0;
      for (int64_t i = c0; i < c1; ++i)
        if (std::isfinite(v[i])) {
          amax_lo = std::max(amax_lo, std::max(std::fabs(v[i]) - tol[i], 0.0));
          amax_hi = std::max(amax_hi, std::fabs(v[i]) + tol[i]);
        }
      const int e_lo = scale_exp(amax_lo), e_hi = scale_exp(amax_hi);
      for (int64_t i = c0; i < c1; ++i) {
        if (!std::isfinite(v[i])) continue;
        double lo = kInf, hi = -kInf;
        for (int e = e_lo; e <= e_hi; ++e) {
          const double s = std::ldexp(1.0, e);
          lo = std::min(lo, round(v[i] - tol[i], s));
          hi = std::max(hi, round(v[i] + tol[i], s));
        }
        v[i] = (lo + hi) / 2;
        tol[i] = (hi - lo) / 2;
      }
    }
  }
}

// E2M1 (bias 1, no NaN, max 6); amax floor 6 * 2^-126.
static void ref_FP4_ROUNDTRIP(const ref_in& in, ref_out* o) {
  static const minifloat e2m1 = make_minifloat(2, 1, 1, false);
  ref_roundtrip(in, o, e2m1, 6.0 * std::ldexp(1.0, -126));
}

// ---- the table, generated from the registry ------------------------------------------------------------------
namespace {
constexpr ref_fn kTable[] = {
#define X(e, name, min_src, max_src) ref_##e,
#include "tensor/ops.def"
#undef X
};
static_assert(sizeof(kTable) / sizeof(kTable[0]) == size_t(op_kind::COUNT), "one reference per op in ops.def");
}  // namespace

ref_fn reference(op_kind op) { return kTable[size_t(op)]; }

}  // namespace v4::optest

// K-quant-class formats (q4_k, q3_k, q2_k): layouts in kquant.h.
//
// Quantization, per super-block of 256, minimising E = sum_i w_i (x_i - y_i)^2:
//  1. Each sub-block gets a float scale (and min) from a set of candidate scales around
//     range / levels: each candidate's codes get their least-squares (scale, min), the codes are
//     re-assigned to that, and the lowest E wins; it is polished by up to two more
//     assign / refit rounds.
//  2. The sub-block scales (mins) are quantized to integers against one f16 super-scale each
//     (max / integer range); each sub-block tries its rounded integer scale (and min) +-1 with the
//     codes re-assigned, keeping the lowest E.
//  3. The super-scales are refit by least squares to the integer scales and codes, rounded to f16,
//     step 2 repeated; kept only when E drops.
//
// How it is fast (about 3x the first version of this search for q4_k and q2_k, 1.6x for q3_k, with
// the same results, measured by tests/quant/test_kquant_quality.cpp): the candidates of
// step 1 do not need a pass each to find their codes: one sweep finds every candidate's code
// moments at once (see sweep()); the least-squares refits are closed forms of moments; the passes
// that remain are branch-free loops over arrays (codes kept as floats, the clamp done without
// comparisons) that the compiler vectorises under strict IEEE; the passes that only rank
// candidates compute the error and nothing else.
#include "quant/kquant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "tensor/tensor.h"

namespace v4::quant {

namespace {

// Magnitude limits that keep every intermediate finite: inputs are clamped to +-2^40 (the f16
// super-scales cannot represent more than ~6e7 anyway), reciprocal scales to 2^60 and mins to
// +-2^41, so (x - m) / s stays below 2^102.
constexpr float kMaxInput = 1099511627776.0f;        // 2^40
constexpr float kMaxMin = 2199023255552.0f;          // 2^41
constexpr float kMinScale = 8.673617379884035e-19f;  // 2^-60
constexpr double kMaxFit = 1125899906842624.0;       // 2^50: bound on fitted scales and mins

// max(t, 0) without a comparison: exact, as 0.5 t is.
inline float relu(float t) {
  const float h = 0.5f * t;
  return h + std::fabs(h);
}
// v rounded to the nearest integer (ties to even), then clamped to the integers [lo, hi]; |v| < 2^102.
// The add-and-subtract of 1.5 * 2^23 rounds exactly for |v| < 2^22 (larger |v| only need to stay
// beyond the clamp), and the clamp is arithmetic on integers, exact: no comparison, so loops using
// it vectorise under strict IEEE (a compare-and-select may trap, which blocks if-conversion).
inline float round_clamp_f(float v, float lo, float hi) {
  float r = (v + 12582912.0f) - 12582912.0f;
  r = lo + relu(r - lo);
  return hi - relu(hi - r);
}

// Sum of e[0..N), N a multiple of 4, in a fixed order (4 interleaved partial sums).
template <int N>
inline float sum_n(const float* e) {
  float acc[4] = {};
  for (int i0 = 0; i0 < N; i0 += 4)
    for (int l = 0; l < 4; ++l) acc[l] += e[i0 + l];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// x and weights of one super-block: NaN/inf -> 0, |x| <= 2^40; importances scaled so that the
// largest is 1 (the minimiser does not change, the sums cannot overflow).
void load(const float* x, const float* imp, float* xs, float* w) {
  for (int i = 0; i < kQK; ++i) {
    const float v = std::isfinite(x[i]) ? x[i] : 0.0f;
    xs[i] = std::fabs(v) <= kMaxInput ? v : std::copysign(kMaxInput, v);
  }
  if (!imp) {
    for (int i = 0; i < kQK; ++i) w[i] = 1.0f;
    return;
  }
  float wmax = 0.0f;
  for (int i = 0; i < kQK; ++i) {
    w[i] = std::isfinite(imp[i]) && imp[i] > 0.0f ? imp[i] : 0.0f;
    wmax = std::max(wmax, w[i]);
  }
  if (wmax > 0.0f)
    for (int i = 0; i < kQK; ++i) w[i] /= wmax;
}

// Super-scales saturate at +-65504 (inputs beyond ~65504 * 63 * 15 lose accuracy, not validity).
uint16_t to_f16(float v) {
  const uint16_t h = f32_to_f16(v);
  return (h & 0x7fff) >= 0x7c00 ? uint16_t((h & 0x8000) | 0x7bff) : h;
}
float from_f16(uint16_t h) { return f16_to_f32(h); }

// Weighted moments of one sub-block's data: sum w, sum w x, sum w x^2.
struct DataMoments {
  double sw = 0, sx = 0, sxx = 0;
};
template <int N>
DataMoments data_moments(const float* x, const float* w) {
  float a[N], b[N], c[N];
  for (int i = 0; i < N; ++i) {
    a[i] = w[i];
    b[i] = w[i] * x[i];
    c[i] = b[i] * x[i];
  }
  return {sum_n<N>(a), sum_n<N>(b), sum_n<N>(c)};
}

// The weighted error of y = s*q + m at the (s, m) the codes were assigned with, and the weighted
// moments of the codes: sum w q, sum w q^2, sum w q x.
struct CodeMoments {
  float err = 0, sq = 0, sqq = 0, sqx = 0;
};

// 1/s, 0 when |s| <= 2^-60 (every code is then the clamp of 0) or s is NaN.
inline float inverse(float s) { return std::fabs(s) > kMinScale ? 1.0f / s : 0.0f; }
inline float safe_min(float m) { return std::fabs(m) <= kMaxMin ? m : m > 0 ? kMaxMin : -kMaxMin; }  // NaN -> -2^41

// Codes q_i = round((x_i - m) / s) clamped to [qlo, qhi] (as floats), for y = s*q + m, with their
// moments and error. (Per-element terms go to arrays and are summed afterwards: a loop without a
// reduction vectorises under strict IEEE.)
template <int N>
CodeMoments assign(const float* x, const float* w, float qlo, float qhi, float s, float m, float* __restrict q) {
  const float inv = inverse(s);
  m = safe_min(m);
  float e[N], tq[N], tqq[N], tqx[N];
  for (int i = 0; i < N; ++i) {
    const float c = round_clamp_f((x[i] - m) * inv, qlo, qhi);
    q[i] = c;
    const float d = s * c + m - x[i];
    const float wc = w[i] * c;
    e[i] = w[i] * d * d;
    tq[i] = wc;
    tqq[i] = wc * c;
    tqx[i] = wc * x[i];
  }
  return {sum_n<N>(e), sum_n<N>(tq), sum_n<N>(tqq), sum_n<N>(tqx)};
}

// Only the error of assign() (for ranking candidates).
template <int N>
float assign_error(const float* x, const float* w, float qlo, float qhi, float s, float m) {
  const float inv = inverse(s);
  m = safe_min(m);
  float e[N];
  for (int i = 0; i < N; ++i) {
    const float c = round_clamp_f((x[i] - m) * inv, qlo, qhi);
    const float d = s * c + m - x[i];
    e[i] = w[i] * d * d;
  }
  return sum_n<N>(e);
}

// ---- the candidate sweep -----------------------------------------------------------------------------------
// Candidate k (0 <= k < K) scales the data by p_k = p0 + k * dp and rounds:
//   code_i(k) = sign(z_i) * min(cap_i, round(|z_i| p_k)),
// z_i being the data in units of the sweep. Over the sweep each |code| grows by at most 2
// (callers keep |z| (p_{K-1} - p0) <= 2), so instead of K assignment passes one pass finds each
// element's code at k = 0 and the k at which it steps up (once or twice); the steps go to per-k
// bins of moment increments, and the moments of candidate k are the prefix sums of the bins.
constexpr int kMaxK = 16;
struct Sweep {
  CodeMoments at[kMaxK];  // moments of the codes of candidate k (err unused)
};

template <int N>
void sweep(const float* x, const float* w, const float* z, const float* cap, float p0, float dp, int K, Sweep* out) {
  float a0[N], kf1[N], kf2[N], sg[N], tq[N], tqq[N], tqx[N];
  const float inv_dp = 1.0f / dp, fk = float(K), zmin = 1.0f / 1048576.0f;  // |z| below 2^-20 never steps
  for (int i = 0; i < N; ++i) {
    const float az = std::fabs(z[i]), sgn = std::copysign(1.0f, z[i]);
    const float a = round_clamp_f(az * p0, 0.0f, cap[i]);
    // |code| reaches a + 1 (a + 2) at p >= (a + 0.5) / |z| (+ 1 / |z|): the first such k, rounded
    // up (as round(v + 0.5): exact ties are rounding ties anyway), clamped to [0, K] (K = never).
    const float inv_z = 1.0f / (zmin + relu(az - zmin));
    const float k1 = ((a + 0.5f) * inv_z - p0) * inv_dp + 0.5f;
    kf1[i] = round_clamp_f(k1, 0.0f, fk);
    kf2[i] = round_clamp_f(k1 + inv_z * inv_dp, 0.0f, fk);
    a0[i] = a;
    sg[i] = sgn;
    const float q = sgn * a, wq = w[i] * q;
    tq[i] = wq;
    tqq[i] = wq * q;
    tqx[i] = wq * x[i];
  }
  float dq[kMaxK + 1] = {}, dqq[kMaxK + 1] = {}, dqx[kMaxK + 1] = {};
  for (int i = 0; i < N; ++i) {
    const float sw = sg[i] * w[i], swx = sw * x[i];
    if (a0[i] + 1.0f <= cap[i]) {
      const int k = int(kf1[i]);
      dq[k] += sw;
      dqq[k] += w[i] * (2.0f * a0[i] + 1.0f);
      dqx[k] += swx;
    }
    if (a0[i] + 2.0f <= cap[i]) {
      const int k = int(kf2[i]);
      dq[k] += sw;
      dqq[k] += w[i] * (2.0f * a0[i] + 3.0f);
      dqx[k] += swx;
    }
  }
  float sq = sum_n<N>(tq), sqq = sum_n<N>(tqq), sqx = sum_n<N>(tqx);
  for (int k = 0; k < K; ++k) {
    sq += dq[k];
    sqq += dqq[k];
    sqx += dqx[k];
    out->at[k] = {0.0f, sq, sqq, sqx};
  }
}

// Whether two sweep candidates have the same codes (no step between them): same moments.
inline bool same_codes(const CodeMoments& a, const CodeMoments& b) {
  return a.sq == b.sq && a.sqq == b.sqq && a.sqx == b.sqx;
}

// A sub-block's float fit: the scale and the min.
struct SubFit {
  float s = 0, m = 0;
};

// ---- asymmetric: y = s*q + m, q in [0, nmax], s >= 0, m <= 0 ------------------------------------------
// Least-squares (s, m) for fixed codes (given by their moments), under s >= 0, m <= 0.
void refit_asym(const DataMoments& dm, const CodeMoments& cm, double* s, double* m) {
  const double sw = dm.sw, sx = dm.sx, sq = cm.sq, sqq = cm.sqq, sqx = cm.sqx;
  // det = sum_{i<j} w_i w_j (q_i - q_j)^2; below 1e-5 of sw sqq the codes are (as good as) all
  // equal and det is rounding noise of the float moments: take the edge solution.
  const double det = sw * sqq - sq * sq;
  const bool regular = det > 1e-5 * sw * sqq;
  double ss = 0, mm = 0;
  if (regular) {
    ss = (sw * sqx - sq * sx) / det;
    mm = (sqq * sx - sq * sqx) / det;
  }
  if (!regular || mm > 0 || ss < 0) {  // constrained optimum on an edge
    mm = 0;
    ss = sqq > 0 ? sqx / sqq : 0;
    if (ss < 0) {
      ss = 0;
      mm = sw > 0 ? std::min(0.0, sx / sw) : 0;
    }
  }
  *s = ss;
  *m = mm;
}

template <int N>
SubFit fit_asym(const float* x, const float* w, const DataMoments& dm, float nmax) {
  float lo = 0.0f, hi = -INFINITY;
  for (int i = 0; i < N; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  SubFit f;
  if (!(hi > lo)) {  // constant (non-positive) sub-block: y = m exactly
    f.m = lo;
    return f;
  }
  // Candidates: the range split into nmax - 1 ... nmax + 1 steps (11 of them), the min at the
  // lowest value: in units of the range, z = (x - lo) / (hi - lo) in [0, 1], p from nmax - 1 to
  // nmax + 1.
  constexpr int K = 11;
  const float range = hi - lo, inv_range = 1.0f / range;
  float z[N], cap[N];
  for (int i = 0; i < N; ++i) {
    z[i] = (x[i] - lo) * inv_range;
    cap[i] = nmax;
  }
  Sweep sw;
  sweep<N>(x, w, z, cap, nmax - 1.0f, 2.0f / float(K - 1), K, &sw);
  // Each candidate's least-squares (s, m), codes re-assigned to it: the lowest error wins.
  // (Errors below 1e-12 of sum w x^2 are rounding noise and count as ties: the first wins.)
  const float noise = float(dm.sxx) * 1e-12f;
  double bs = range / nmax, bm = lo;
  float best = INFINITY;
  for (int k = 0; k < K; ++k) {
    if (k > 0 && same_codes(sw.at[k], sw.at[k - 1])) continue;  // same (s, m), same error: a tie
    double s, m;
    refit_asym(dm, sw.at[k], &s, &m);
    const float e = std::max(noise, assign_error<N>(x, w, 0.0f, nmax, float(s), float(m)));
    if (e < best) {
      best = e;
      bs = s;
      bm = m;
    }
  }
  // Polish: assignment and least squares each lower E; stop when the codes stop improving it.
  float q[N];
  for (int it = 0; it < 2; ++it) {
    const CodeMoments cm = assign<N>(x, w, 0.0f, nmax, float(bs), float(bm), q);
    double s, m;
    refit_asym(dm, cm, &s, &m);
    const float e = std::max(noise, assign_error<N>(x, w, 0.0f, nmax, float(s), float(m)));
    if (!(e < best)) break;
    best = e;
    bs = s;
    bm = m;
  }
  f.s = float(std::min(bs, kMaxFit));  // (finite, also for degenerate moments)
  f.m = float(std::max(bm, -kMaxFit));
  return f;
}

// One super-block of an asymmetric format: NSUB sub-blocks of LEN, codes [0, NMAX], integer
// scales and mins in [0, LMAX]. Outputs f16 d/dmin, integer scales/mins, codes.
template <int NSUB, int LEN, int NMAX, int LMAX>
void superblock_asym(const float* x, const float* w, uint16_t* hd, uint16_t* hdmin, uint8_t* ls, uint8_t* lm,
                     float* q) {
  DataMoments dm[NSUB];
  SubFit fit[NSUB];
  float smax = 0.0f, mmax = 0.0f;
  for (int j = 0; j < NSUB; ++j) {
    dm[j] = data_moments<LEN>(x + j * LEN, w + j * LEN);
    fit[j] = fit_asym<LEN>(x + j * LEN, w + j * LEN, dm[j], float(NMAX));
    smax = std::max(smax, fit[j].s);
    mmax = std::max(mmax, -fit[j].m);
  }
  // Integer scales and mins for super-scales (h, hm): per sub-block the rounded float scale (min)
  // +-1, ranked by their error with codes re-assigned; the best is assigned. Returns the total E;
  // out_cm gets the moments of the chosen codes (for the refit below).
  auto quantize_scales = [&](uint16_t h, uint16_t hm, uint8_t* out_ls, uint8_t* out_lm, float* out_q,
                             CodeMoments* out_cm) {
    const float d = from_f16(h), dmin = from_f16(hm);
    float total = 0.0f;
    for (int j = 0; j < NSUB; ++j) {
      const float* xj = x + j * LEN;
      const float* wj = w + j * LEN;
      const int l0 = d > 0 ? int(round_clamp_f(fit[j].s / d, 0.0f, float(LMAX))) : 0;
      const int m0 = dmin > 0 ? int(round_clamp_f(-fit[j].m / dmin, 0.0f, float(LMAX))) : 0;
      int ba = l0, bb = m0;
      float best = INFINITY;
      for (int a = std::max(0, l0 - 1); a <= std::min(LMAX, l0 + 1); ++a)
        for (int b = std::max(0, m0 - 1); b <= std::min(LMAX, m0 + 1); ++b) {
          const float e = assign_error<LEN>(xj, wj, 0.0f, float(NMAX), d * float(a), -dmin * float(b));
          if (e < best) {
            best = e;
            ba = a;
            bb = b;
          }
        }
      out_ls[j] = uint8_t(ba);
      out_lm[j] = uint8_t(bb);
      out_cm[j] = assign<LEN>(xj, wj, 0.0f, float(NMAX), d * float(ba), -dmin * float(bb), out_q + j * LEN);
      total += out_cm[j].err;
    }
    return total;
  };
  CodeMoments cm[NSUB];
  *hd = to_f16(smax / float(LMAX));
  *hdmin = to_f16(mmax / float(LMAX));
  const float err = quantize_scales(*hd, *hdmin, ls, lm, q, cm);

  // Refit d and dmin to the integer scales and codes, y_i = d * (ls q_i) - dmin * lm, from the
  // per-sub-block moments.
  double a11 = 0, a12 = 0, a22 = 0, b1 = 0, b2 = 0;
  for (int j = 0; j < NSUB; ++j) {
    const double l = ls[j], n = lm[j];
    a11 += l * l * cm[j].sqq;
    a12 -= l * n * cm[j].sq;
    a22 += n * n * dm[j].sw;
    b1 += l * cm[j].sqx;
    b2 -= n * dm[j].sx;
  }
  const double det = a11 * a22 - a12 * a12;
  if (det > 0) {
    const double d = (a22 * b1 - a12 * b2) / det, dmin = (a11 * b2 - a12 * b1) / det;
    if (d >= 0 && dmin >= 0) {
      uint8_t ls2[NSUB], lm2[NSUB];
      float q2[NSUB * LEN];
      CodeMoments cm2[NSUB];
      const uint16_t h = to_f16(float(d)), hm = to_f16(float(dmin));
      // (The same super-scales would repeat the same choices.)
      const float err2 = h == *hd && hm == *hdmin ? INFINITY : quantize_scales(h, hm, ls2, lm2, q2, cm2);
      if (err2 < err) {
        *hd = h;
        *hdmin = hm;
        std::memcpy(ls, ls2, NSUB);
        std::memcpy(lm, lm2, NSUB);
        std::memcpy(q, q2, sizeof(q2));
      }
    }
  }
}

// ---- symmetric: y = s*q, q in [qmin, qmax] ---------------------------------------------------------------
template <int N>
SubFit fit_sym(const float* x, const float* w, float qmin, float qmax) {
  float xm = 0.0f;  // the element of largest magnitude
  for (int i = 0; i < N; ++i)
    if (std::fabs(x[i]) > std::fabs(xm)) xm = x[i];
  SubFit f;
  if (xm == 0.0f) return f;
  // Candidates: xm mapped to qmin -+ 0.6 (the longer side) or to qmax -+ 0.6, 7 each. In the units
  // of the sweep: code = clamp(round(x t / xm)) with t = -p (p from -qmin - 0.6) or t = p (from
  // qmax - 0.6), i.e. z = -x / xm or x / xm, capped at qmax for positive codes, -qmin for negative.
  constexpr int K = 7;
  const float inv_xm = 1.0f / xm;
  const float noise = float(data_moments<N>(x, w).sxx) * 1e-12f;  // (as in fit_asym)
  float best = INFINITY;
  double bs = xm / qmin;
  for (int side = 0; side < 2; ++side) {
    const float unit = side == 0 ? -inv_xm : inv_xm;
    float z[N], cap[N];
    for (int i = 0; i < N; ++i) {
      z[i] = x[i] * unit;
      const float negative = 0.5f - 0.5f * std::copysign(1.0f, z[i]);  // 1 for z < 0 (and -0), else 0
      cap[i] = qmax + (-qmin - qmax) * negative;
    }
    Sweep sw;
    sweep<N>(x, w, z, cap, side == 0 ? -qmin - 0.6f : qmax - 0.6f, 0.2f, K, &sw);
    // Each candidate's least-squares scale sqx / sqq, codes re-assigned to it: the lowest error wins.
    for (int k = 0; k < K; ++k) {
      if (!(sw.at[k].sqq > 0) || (k > 0 && same_codes(sw.at[k], sw.at[k - 1]))) continue;
      const double s = double(sw.at[k].sqx) / sw.at[k].sqq;
      const float e = std::max(noise, assign_error<N>(x, w, qmin, qmax, float(s), 0.0f));
      if (e < best) {
        best = e;
        bs = s;
      }
    }
  }
  float q[N];
  for (int it = 0; it < 2; ++it) {
    const CodeMoments cm = assign<N>(x, w, qmin, qmax, float(bs), 0.0f, q);
    if (!(cm.sqq > 0) || cm.sqx == 0) break;
    const double s = double(cm.sqx) / cm.sqq;
    const float e = std::max(noise, assign_error<N>(x, w, qmin, qmax, float(s), 0.0f));
    if (!(e < best)) break;
    best = e;
    bs = s;
  }
  f.s = float(std::max(-kMaxFit, std::min(bs, kMaxFit)));  // (finite, also for degenerate moments)
  return f;
}

// One super-block of a symmetric format: NSUB sub-blocks of LEN, codes [QMIN, QMAX], signed integer
// scales in [LMIN, LMAX] (the sub-block of largest |scale| maps to LMIN).
template <int NSUB, int LEN, int QMIN, int QMAX, int LMIN, int LMAX>
void superblock_sym(const float* x, const float* w, uint16_t* hd, int8_t* ls, float* q) {
  SubFit fit[NSUB];
  float smax = 0.0f;
  for (int j = 0; j < NSUB; ++j) {
    fit[j] = fit_sym<LEN>(x + j * LEN, w + j * LEN, float(QMIN), float(QMAX));
    if (std::fabs(fit[j].s) > std::fabs(smax)) smax = fit[j].s;
  }
  auto quantize_scales = [&](uint16_t h, int8_t* out_ls, float* out_q, CodeMoments* out_cm) {
    const float d = from_f16(h);
    float total = 0.0f;
    for (int j = 0; j < NSUB; ++j) {
      const float* xj = x + j * LEN;
      const float* wj = w + j * LEN;
      const int l0 = d != 0.0f ? int(round_clamp_f(fit[j].s / d, float(LMIN), float(LMAX))) : 0;
      int ba = l0;
      float best = INFINITY;
      for (int a = std::max(LMIN, l0 - 1); a <= std::min(LMAX, l0 + 1); ++a) {
        const float e = assign_error<LEN>(xj, wj, float(QMIN), float(QMAX), d * float(a), 0.0f);
        if (e < best) {
          best = e;
          ba = a;
        }
      }
      out_ls[j] = int8_t(ba);
      out_cm[j] = assign<LEN>(xj, wj, float(QMIN), float(QMAX), d * float(ba), 0.0f, out_q + j * LEN);
      total += out_cm[j].err;
    }
    return total;
  };
  CodeMoments cm[NSUB];
  *hd = to_f16(smax / float(LMIN));
  const float err = quantize_scales(*hd, ls, q, cm);
  // Refit d, y_i = d * (ls q_i), from the per-sub-block moments.
  double num = 0, den = 0;
  for (int j = 0; j < NSUB; ++j) {
    num += double(ls[j]) * cm[j].sqx;
    den += double(ls[j]) * ls[j] * cm[j].sqq;
  }
  if (den > 0) {
    const uint16_t h = to_f16(float(num / den));
    int8_t ls2[NSUB];
    float q2[NSUB * LEN];
    CodeMoments cm2[NSUB];
    if (h != *hd && quantize_scales(h, ls2, q2, cm2) < err) {  // (the same d would repeat the same choices)
      *hd = h;
      std::memcpy(ls, ls2, NSUB);
      std::memcpy(q, q2, sizeof(q2));
    }
  }
}

// 2-bit planes: element 128c + 32t + l at bits 2t of p[32c + l].
void put_2bit(const uint8_t* codes, uint8_t* p) {
  std::memset(p, 0, 64);
  for (int i = 0; i < kQK; ++i) p[32 * (i / 128) + i % 32] |= uint8_t((codes[i] & 3) << (2 * ((i / 32) % 4)));
}
uint8_t get_2bit(const uint8_t* p, int i) { return (p[32 * (i / 128) + i % 32] >> (2 * ((i / 32) % 4))) & 3; }

}  // namespace

void pack_6bit_16(const uint8_t v[16], uint8_t out[12]) {
  for (int i = 0; i < 8; ++i) out[i] = uint8_t((v[i] & 15) | ((v[i + 8] & 15) << 4));
  for (int t = 0; t < 4; ++t) out[8 + t] = 0;
  for (int i = 0; i < 16; ++i) out[8 + i / 4] |= uint8_t(((v[i] >> 4) & 3) << (2 * (i % 4)));
}

void unpack_6bit_16(const uint8_t in[12], uint8_t v[16]) {
  for (int i = 0; i < 16; ++i) {
    const uint8_t lo = i < 8 ? (in[i] & 15) : (in[i - 8] >> 4);
    v[i] = uint8_t(lo | (((in[8 + i / 4] >> (2 * (i % 4))) & 3) << 4));
  }
}

// ---- q4_k ------------------------------------------------------------------------------------------------
void quantize_row_q4_k_w(const float* x, void* blocks, int64_t k, const float* importance) {
  block_q4_k* b = static_cast<block_q4_k*>(blocks);
  float xs[kQK], w[kQK];
  for (int64_t s = 0; s < k / kQK; ++s) {
    load(x + s * kQK, importance ? importance + s * kQK : nullptr, xs, w);
    uint8_t sm[16];
    float q[kQK];
    superblock_asym<8, 32, 15, 63>(xs, w, &b[s].d, &b[s].dmin, sm, sm + 8, q);
    pack_6bit_16(sm, b[s].scales);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) b[s].qs[32 * c + l] = uint8_t(int(q[64 * c + l]) | (int(q[64 * c + 32 + l]) << 4));
  }
}
void quantize_row_q4_k(const float* x, void* blocks, int64_t k) { quantize_row_q4_k_w(x, blocks, k, nullptr); }

void dequantize_row_q4_k(const void* blocks, float* y, int64_t k) {
  const block_q4_k* b = static_cast<const block_q4_k*>(blocks);
  for (int64_t s = 0; s < k / kQK; ++s, y += kQK) {
    const float d = f16_to_f32(b[s].d), dmin = f16_to_f32(b[s].dmin);
    uint8_t sm[16];
    unpack_6bit_16(b[s].scales, sm);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const uint8_t byte = b[s].qs[32 * c + l];
        const int j0 = 2 * c, j1 = 2 * c + 1;  // sub-blocks of the low and high nibbles
        y[64 * c + l] = d * float(sm[j0]) * float(byte & 15) - dmin * float(sm[8 + j0]);
        y[64 * c + 32 + l] = d * float(sm[j1]) * float(byte >> 4) - dmin * float(sm[8 + j1]);
      }
  }
}

// ---- q3_k ------------------------------------------------------------------------------------------------
void quantize_row_q3_k_w(const float* x, void* blocks, int64_t k, const float* importance) {
  block_q3_k* b = static_cast<block_q3_k*>(blocks);
  float xs[kQK], w[kQK];
  for (int64_t s = 0; s < k / kQK; ++s) {
    load(x + s * kQK, importance ? importance + s * kQK : nullptr, xs, w);
    int8_t ls[16];
    float q[kQK];
    superblock_sym<16, 16, -4, 3, -32, 31>(xs, w, &b[s].d, ls, q);
    uint8_t v[16];
    for (int j = 0; j < 16; ++j) v[j] = uint8_t(ls[j] + 32);
    pack_6bit_16(v, b[s].scales);
    uint8_t codes[kQK];
    for (int i = 0; i < kQK; ++i) codes[i] = uint8_t(int(q[i]) + 4);
    put_2bit(codes, b[s].qs);
    std::memset(b[s].hmask, 0, 32);
    for (int i = 0; i < kQK; ++i) b[s].hmask[i % 32] |= uint8_t(((codes[i] >> 2) & 1) << (i / 32));
  }
}
void quantize_row_q3_k(const float* x, void* blocks, int64_t k) { quantize_row_q3_k_w(x, blocks, k, nullptr); }

void dequantize_row_q3_k(const void* blocks, float* y, int64_t k) {
  const block_q3_k* b = static_cast<const block_q3_k*>(blocks);
  for (int64_t s = 0; s < k / kQK; ++s, y += kQK) {
    const float d = f16_to_f32(b[s].d);
    uint8_t v[16];
    unpack_6bit_16(b[s].scales, v);
    for (int i = 0; i < kQK; ++i) {
      const int code = get_2bit(b[s].qs, i) | (((b[s].hmask[i % 32] >> (i / 32)) & 1) << 2);
      y[i] = d * float(int(v[i / 16]) - 32) * float(code - 4);
    }
  }
}

// ---- q2_k ------------------------------------------------------------------------------------------------
void quantize_row_q2_k_w(const float* x, void* blocks, int64_t k, const float* importance) {
  block_q2_k* b = static_cast<block_q2_k*>(blocks);
  float xs[kQK], w[kQK];
  for (int64_t s = 0; s < k / kQK; ++s) {
    load(x + s * kQK, importance ? importance + s * kQK : nullptr, xs, w);
    uint8_t ls[16], lm[16];
    float q[kQK];
    superblock_asym<16, 16, 3, 15>(xs, w, &b[s].d, &b[s].dmin, ls, lm, q);
    for (int j = 0; j < 16; ++j) b[s].scales[j] = uint8_t(ls[j] | (lm[j] << 4));
    uint8_t codes[kQK];
    for (int i = 0; i < kQK; ++i) codes[i] = uint8_t(int(q[i]));
    put_2bit(codes, b[s].qs);
  }
}
void quantize_row_q2_k(const float* x, void* blocks, int64_t k) { quantize_row_q2_k_w(x, blocks, k, nullptr); }

void dequantize_row_q2_k(const void* blocks, float* y, int64_t k) {
  const block_q2_k* b = static_cast<const block_q2_k*>(blocks);
  for (int64_t s = 0; s < k / kQK; ++s, y += kQK) {
    const float d = f16_to_f32(b[s].d), dmin = f16_to_f32(b[s].dmin);
    for (int i = 0; i < kQK; ++i) {
      const uint8_t sc = b[s].scales[i / 16];
      y[i] = d * float(sc & 15) * float(get_2bit(b[s].qs, i)) - dmin * float(sc >> 4);
    }
  }
}

}  // namespace v4::quant

// Fused ops of the decode graph (tensor/ops.h): rms_norm_w, swiglu, hc_sum, hc_post.
// Each is built from the vector functions the unfused kernels use, applied to the same values in
// the same order, so a fused node gives the bits of the chain it replaces (rms_norm then mul;
// clamp, clamp, silu, mul, mul; mul then sum over the streams). hc_post replaces a matmul whose
// summation order was the ISA kernel's own: it follows the order tensor/ops.h states instead.
// rms_norm_w's and swiglu's optional FP8 rounding is the FP8_ROUNDTRIP kernel's row function
// (quant/fp8.h) applied in place to the finished row: the bits of the op then fp8_roundtrip.
// Sources may be strided: a strided row is gathered into a thread-local buffer first.
#include <cmath>
#include <vector>

#include "backends/cpu/ops/common.h"
#include "quant/fp8.h"

namespace v4::cpu {

namespace {

// Row (i1, i2, i3) of t as n contiguous floats: t's own memory when packed, else gathered into tmp.
const float* packed_row(const tensor* t, int64_t i1, int64_t i2, int64_t i3, std::vector<float>& tmp) {
  const char* p = at(t, 0, i1, i2, i3);
  const int64_t n = t->ne[0];
  if (t->nb[0] == sizeof(float)) return reinterpret_cast<const float*>(p);
  tmp.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) tmp[size_t(i)] = *reinterpret_cast<const float*>(p + i * t->nb[0]);
  return tmp.data();
}

// One f32 element of t at (i0, i1, i2, i3), each index taken as 0 where t has size 1 (broadcast).
float bcast_at(const tensor* t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
  return *reinterpret_cast<const float*>(at(t, t->ne[0] == 1 ? 0 : i0, t->ne[1] == 1 ? 0 : i1,
                                            t->ne[2] == 1 ? 0 : i2, t->ne[3] == 1 ? 0 : i3));
}

// y[i] = fma(x[i], s, y[i]), one rounding each: the same bits on every path. The x86-64 baseline
// has no FMA instruction (std::fma would be a libm call per element): hosts with AVX2 + FMA take a
// clone compiled for them (isa_allowed respects the tests' ISA cap; the bits do not depend on it).
void fma_row_generic(const float* x, float s, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::fma(x[i], s, y[i]);
}
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void fma_row_avx2(const float* x, float s, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::fma(x[i], s, y[i]);
}
#endif
void fma_row(const float* x, float s, float* y, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa_allowed(isa::avx2)) return fma_row_avx2(x, s, y, n);
#endif
  fma_row_generic(x, s, y, n);
}

}  // namespace

// rms_norm's row kernel (reduce.cpp: the same sum_sq, scale) followed by mul's v.mul by w, then
// (fp8 block > 0) the FP8 round trip of the row.
void kernel_RMS_NORM_W(const exec& ex, tensor* dst) {
  const tensor* a = dst->src[0];
  const tensor* w = dst->src[1];
  const float eps = dst->param_f(0);
  const int fp8_block = dst->param_i(1);
  const vec::table& v = vec::best();
  const int64_t n = a->ne[0];
  std::vector<float> w_packed;
  const float* wr = packed_row(w, 0, 0, 0, w_packed);  // read by every row: gathered once
  parallel_for(ex, dst->nrows(), n, [&](int64_t r) {
    thread_local std::vector<float> tmp;
    const row_index i = split_row(dst, r);
    const float* x = packed_row(a, i.i1, i.i2, i.i3, tmp);
    const float mean_sq = v.sum_sq(x, n) / float(n);
    const float s = 1.0f / std::sqrt(mean_sq + eps);
    float* y = frow(dst, r);
    v.scale(x, s, 0.0f, y, n);
    v.mul(y, wr, y, n);
    if (fp8_block > 0) quant::fp8_roundtrip_row(y, y, n, fp8_block, quant::kFp8AmaxFloor);
  });
}

// Per row: clamp g from above and u on both sides (the clamp kernel's comparisons: NaN passes),
// silu of the whole row (v.silu over the same n as the silu kernel), times u, times the row's
// weight, then (fp8 block > 0) the FP8 round trip of the row.
void kernel_SWIGLU(const exec& ex, tensor* dst) {
  const tensor* g = dst->src[0];
  const tensor* u = dst->src[1];
  const tensor* wts = dst->src[2];
  const float limit = dst->param_f(0);
  const int fp8_block = dst->param_i(1);
  const bool clamped = limit > 0.0f;
  const vec::table& v = vec::best();
  const int64_t n = dst->ne[0];
  parallel_for(ex, dst->nrows(), n * 8, [&](int64_t r) {
    thread_local std::vector<float> tg, tu, gc, uc;
    const row_index i = split_row(dst, r);
    const float* gr = packed_row(g, i.i1, i.i2, i.i3, tg);
    const float* ur = packed_row(u, i.i1, i.i2, i.i3, tu);
    if (clamped) {
      gc.resize(size_t(n));
      uc.resize(size_t(n));
      for (int64_t k = 0; k < n; ++k) {
        const float x = gr[k], y = ur[k];
        gc[size_t(k)] = x > limit ? limit : x;                                // clamp(g, -inf, limit)
        uc[size_t(k)] = y < -limit ? -limit : y > limit ? limit : y;          // clamp(u, -limit, limit)
      }
      gr = gc.data();
      ur = uc.data();
    }
    float* y = frow(dst, r);
    v.silu(gr, y, n);
    v.mul(y, ur, y, n);
    if (wts) {
      const float s = bcast_at(wts, 0, i.i1, i.i2, i.i3);
      for (int64_t k = 0; k < n; ++k) y[k] = y[k] * s;  // mul by the broadcast weight: one rounding
    }
    if (fp8_block > 0) quant::fp8_roundtrip_row(y, y, n, fp8_block, quant::kFp8AmaxFloor);
  });
}

// Per token t: y = 0, then y = y + X[:, j, t] pre[j, t] for j = 0..HC-1 (the product as scale's one
// fused rounding, fma(x, p, 0): the bits of mul's, as the sum starts from +0).
void kernel_HC_SUM(const exec& ex, tensor* dst) {
  const tensor* X = dst->src[0];
  const tensor* pre = dst->src[1];
  const int64_t D = X->ne[0], HC = X->ne[1], T = X->ne[2];
  const vec::table& v = vec::best();
  parallel_for(ex, T, D * HC * 2, [&](int64_t t) {
    thread_local std::vector<float> tx, prod;
    prod.resize(size_t(D));
    float* y = reinterpret_cast<float*>(at(dst, 0, t, 0, 0));
    for (int64_t d = 0; d < D; ++d) y[d] = 0.0f;
    for (int64_t j = 0; j < HC; ++j) {
      const float p = bcast_at(pre, 0, j, t, 0);
      v.scale(packed_row(X, j, t, 0, tx), p, 0.0f, prod.data(), D);
      v.add(y, prod.data(), y, D);
    }
  });
}

// Per output stream k and token t, in tensor/ops.h's order: the mixing sum S over the streams as
// a chain of fused multiply-adds, then the post term: round(f w[0, k]) + S (the first product as
// scale's fma(x, s, 0), as the CUDA kernel).
void kernel_HC_POST(const exec& ex, tensor* dst) {
  const tensor* f = dst->src[0];
  const tensor* X = dst->src[1];
  const tensor* w = dst->src[2];
  const int64_t D = X->ne[0], HC = X->ne[1], T = X->ne[2];
  const vec::table& v = vec::best();
  parallel_for(ex, HC * T, D * (2 * HC + 1), [&](int64_t r) {
    thread_local std::vector<float> tf, tx, prod;
    prod.resize(size_t(D));
    const int64_t k = r % HC, t = r / HC;
    float* y = reinterpret_cast<float*>(at(dst, 0, k, t, 0));
    v.scale(packed_row(X, 0, t, 0, tx), bcast_at(w, 1, k, t, 0), 0.0f, y, D);
    for (int64_t j = 1; j < HC; ++j) fma_row(packed_row(X, j, t, 0, tx), bcast_at(w, 1 + j, k, t, 0), y, D);
    v.scale(packed_row(f, t, 0, 0, tf), bcast_at(w, 0, k, t, 0), 0.0f, prod.data(), D);
    v.add(prod.data(), y, y, D);
  });
}

}  // namespace v4::cpu

// Float64 references for every op, written from the documentation in tensor/ops.h (never from
// kernel code), and the number formats they need (independent of tensor/types.cpp).
//
// Each reference returns the expected output (type, shape, values) AND a per-element error
// bound: the bound is derived next to the formula, in reference.cpp, with its justification.
// The table reference(op) is generated from tensor/ops.def: an op without a reference function
// does not link.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "tensor/ops.h"
#include "tensor/tensor.h"

namespace v4::optest {

// ---- number formats (independent implementations, IEEE round-to-nearest-even) -----------------
// x rounded to the nearest value of type t (f32/f16/bf16: RNE with subnormals and overflow to
// inf; fp8_e4m3: RNE with subnormals, saturating at +-448 (quant/fp8.h); e8m0: the power of two
// 2^-127..2^127 of |x|, rounding up from mantissa 1.5 (quant/e8m0.h); integer types: unchanged,
// the caller keeps them in range). Block-quantized types (mxfp4, q8_0, q4_k, q3_k, q2_k) have no
// element-wise form here: the harness makes them with quant/'s row quantizers (harness.cpp).
double round_to(dtype t, double x);
// One element of plain type t at p, as a double (exact; fp8_e4m3 and e8m0 included, unscaled).
double decode(dtype t, const void* p);
// Writes x (already representable in t, see round_to) as type t at p.
void encode(dtype t, double x, void* p);
size_t elem_size(dtype t);

// ---- a dense float64 array in the library's dim order (ne[0] innermost) ------------------------
struct darray {
  dtype type = dtype::f32;  // the type the values came from / are meant for
  int64_t ne[4] = {1, 1, 1, 1};
  std::vector<double> v;

  darray() = default;
  darray(dtype t, const int64_t* shape) : type(t) {
    for (int i = 0; i < 4; ++i) ne[i] = shape[i];
    v.assign(size_t(n()), 0.0);
  }
  int64_t n() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t idx(int64_t i0, int64_t i1, int64_t i2, int64_t i3) const {
    return i0 + ne[0] * (i1 + ne[1] * (i2 + ne[2] * i3));
  }
  double& at(int64_t i0, int64_t i1 = 0, int64_t i2 = 0, int64_t i3 = 0) { return v[size_t(idx(i0, i1, i2, i3))]; }
  double at(int64_t i0, int64_t i1 = 0, int64_t i2 = 0, int64_t i3 = 0) const { return v[size_t(idx(i0, i1, i2, i3))]; }
};

// ---- what a test case asks of its op (the same values go to the constructor and the reference) ---
struct ref_in;
struct ref_out;
using ref_fn = void (*)(const ref_in&, ref_out*);

struct op_args {
  // SCALE: y = a*f0 + f1. CLAMP: [f0, f1]. RMS_NORM: eps = f0. HADAMARD: scale = f0.
  float f0 = 0.0f, f1 = 0.0f;
  int dim = 0;                // SUM, MAX, CONCAT
  int k = 0;                  // TOP_K, ROUTE_TOPK
  bool descending = false;    // ARGSORT
  // SOFTMAX: inputs are [a, mask?, sink?] in that order, as flagged here.
  float softmax_scale = 1.0f;
  bool has_mask = false, has_sink = false;
  // ATTN_SPARSE: inputs [q, ring, mask, sink?, store?, rest?, ids?] in that order, as flagged here.
  bool has_store = false, has_rest = false, has_ids = false;
  rope_params rope;           // ROPE (inputs [a, pos]); ATTN_MQA / ATTN_SPARSE: the output rotation
  int out_rope_input = -1;    // ATTN_MQA / ATTN_SPARSE: the output rotation's positions input (-1: none)
  dtype cast_type = dtype::f32;  // CAST
  // VIEW (byte strides and offset into a contiguous source), RESHAPE (view_ne), PERMUTE (axes)
  int view_ndims = 4;
  int64_t view_ne[4] = {1, 1, 1, 1};
  size_t view_nb[4] = {0, 0, 0, 0};
  size_t view_offset = 0;
  int axes[4] = {0, 1, 2, 3};
  // FP8_ROUNDTRIP, FP4_ROUNDTRIP: runs of `block` elements over the first n_quant of each row (0: all).
  // ROWS_MASK: rows = n_quant, ratio = k.
  int block = 0;
  int64_t n_quant = 0;
  // HC_MIX: s0 = f0, s1 = f1, s2 = hc_s2, iters = k, eps = hc_eps, n = hc_n.
  float hc_s2 = 0.0f, hc_eps = 0.0f;
  int64_t hc_n = 0;
  // HC_PRE: as HC_MIX (hc_n unused: X's dim 1), rms eps = rms_eps, fp8 block = block (0: none),
  // inputs [X, fn, base, norm, f?, w_post?] with f and w_post when has_post.
  float rms_eps = 0.0f;
  bool has_post = false;
  // RMS_NORM_W: eps = f0. SWIGLU: limit = f0, inputs [g, u, wts?] with wts when has_wts.
  // Both: block > 0 = the fp8 output rounding's block (0: none).
  // NORM_ROPE: eps = f0, rope, inputs [a, pos, w?] with w when has_wts, fp8 block = block (0: none)
  // over the first n_quant of each row (0: all).
  bool has_wts = false;
  // ROUTE_TOPK: k, inputs [logits, bias?] with bias when has_bias. ROUTE_WEIGHTS: inputs [logits,
  // ids], normalize, scale = f0.
  bool has_bias = false, normalize = false;
  // CUSTOM: the op's meaning is the user's; the case supplies its reference.
  std::function<void(const ref_in&, ref_out*)> custom_ref;
};

struct ref_in {
  const op_args& args;
  std::vector<darray> src;  // the op's inputs as the kernel sees them (logical element order)
  // The backend's declared rounding of x in matmul (see backends/cpu/matmul.h): r >= 0 relative
  // precision per element (0 = exact inputs); r < 0 int8 per block of -r elements along K
  // (reference.cpp, x_rounding_class, has the bounds of both).
  std::function<double(dtype wtype, int64_t M, int64_t N, int64_t K)> mm_x_rounding;
};

struct ref_out {
  dtype type = dtype::f32;
  int64_t ne[4] = {1, 1, 1, 1};
  std::vector<double> v;    // expected values (already rounded to `type` when exact)
  std::vector<double> tol;  // per element: |got - v| <= tol (ignored when exact)
  bool exact = false;       // bit-for-bit value equality (NaN matches NaN)

  void shape(dtype t, const int64_t* n) {
    type = t;
    for (int i = 0; i < 4; ++i) ne[i] = n[i];
    const size_t count = size_t(n[0] * n[1] * n[2] * n[3]);
    v.assign(count, 0.0);
    tol.assign(count, 0.0);
  }
  int64_t n() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t idx(int64_t i0, int64_t i1, int64_t i2, int64_t i3) const {
    return i0 + ne[0] * (i1 + ne[1] * (i2 + ne[2] * i3));
  }
};

// The reference of op (never nullptr: the table is generated from ops.def).
ref_fn reference(op_kind op);

// cast(a, t): a's elements converted (RNE) to args.cast_type, contiguous (cast is a CPY node).
void ref_cast(const ref_in& in, ref_out* o);

// Rope angle error bound (radians) for angle theta of pair i, shared by the rope reference and
// the inverse-after-forward composite case. See reference.cpp.
double rope_angle_bound(double theta, int i, const rope_params& p);
// Rope frequency of pair i (YaRN included), in double.
double rope_freq(int i, const rope_params& p);

}  // namespace v4::optest

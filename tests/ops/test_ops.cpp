// The op cases: every op of tensor/ops.def at odd sizes, several ranks, broadcasting, strided
// inputs and each documented parameter variant; run on every target (device x kernel variant)
// against the float64 references of ops/reference.cpp.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <iostream>
#include <limits>
#include <memory>

#include "ops/harness.h"
#include "quant/quant.h"

namespace v4::optest {
namespace {

const double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string shape_name(const input& i) {
  std::string s;
  for (int d = 0; d < 4; ++d) {
    if (d > 0 && i.ne[d] == 1 && (d == 3 || (i.ne[2] == 1 && i.ne[3] == 1) || (d == 2 && i.ne[3] == 1))) break;
    if (d) s += 'x';
    s += std::to_string(i.ne[d]);
  }
  return s;
}
std::string lay_name(const input& i) { return std::string(i.lay.name) == "cont" ? "" : std::string("_") + i.lay.name; }

op_case mk(op_kind op, std::string name, std::vector<input> ins, build_fn b, op_args a = {}) {
  op_case c;
  c.op = op;
  c.name = std::move(name);
  c.inputs = std::move(ins);
  c.build = std::move(b);
  c.args = std::move(a);
  return c;
}

// Values of magnitude in [lo, hi] with random sign (divisors away from zero).
filler signed_range(double lo, double hi) {
  return [lo, hi](std::vector<double>& v, const int64_t*, std::mt19937_64& rng) {
    std::uniform_real_distribution<double> d(lo, hi);
    for (double& x : v) x = (rng() & 1) ? d(rng) : -d(rng);
  };
}
// Uniform values with a fraction p of them replaced by `special` (NaN, -inf, ...).
filler with_specials(double lo, double hi, double p, std::vector<double> special) {
  return [=](std::vector<double>& v, const int64_t*, std::mt19937_64& rng) {
    std::uniform_real_distribution<double> d(lo, hi), coin(0, 1);
    for (double& x : v) x = coin(rng) < p ? special[rng() % special.size()] : d(rng);
  };
}
// A softmax mask: 0 or a small bias, -inf with probability p; the last dim-1 row fully -inf.
filler mask_fill(double p) {
  return [p](std::vector<double>& v, const int64_t* ne, std::mt19937_64& rng) {
    std::uniform_real_distribution<double> d(-1, 1), coin(0, 1);
    for (size_t i = 0; i < v.size(); ++i) {
      const int64_t i1 = int64_t(i) / ne[0] % ne[1];
      v[i] = (i1 == ne[1] - 1 || coin(rng) < p) ? -kInf : d(rng);
    }
  };
}

// ---- elementwise ---------------------------------------------------------------------------------
// Shapes x layouts shared by unary and binary ops: ranks 1..4, odd sizes, strided inputs.
std::vector<input> unary_inputs(filler f) {
  return {
      in(dtype::f32, {1}, f),
      in(dtype::f32, {7}, f),
      in(dtype::f32, {17, 3}, f),
      in(dtype::f32, {17, 3}, f, transposed()),
      in(dtype::f32, {33, 5, 2}, f),
      in(dtype::f32, {33, 5, 2}, f, padded()),
      in(dtype::f32, {33, 5, 2}, f, padded_transposed()),
      in(dtype::f32, {33, 5, 2}, f, permuted_0213()),
      in(dtype::f32, {257, 2, 1, 3}, f),
      in(dtype::f32, {257, 2, 1, 3}, f, padded()),
  };
}

void add_unary(std::vector<op_case>& cs, op_kind op, filler f, build_fn b, op_args a = {}, const char* tag = "") {
  for (const input& i : unary_inputs(f)) cs.push_back(mk(op, tag + shape_name(i) + lay_name(i), {i}, b, a));
}

void add_elementwise(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  // scale: y = a*s + b
  op_args sc;
  sc.f0 = 0.75f;
  sc.f1 = -0.5f;
  add_unary(cs, op_kind::SCALE, uniform(-4, 4), [](context& c, T t, const op_args& a) { return scale(c, t[0], a.f0, a.f1); }, sc);
  sc.f0 = -3.0f;
  sc.f1 = 0.0f;
  cs.push_back(mk(op_kind::SCALE, "no_bias_33x5", {in(dtype::f32, {33, 5}, uniform(-4, 4))},
                  [](context& c, T t, const op_args& a) { return scale(c, t[0], a.f0); }, sc));
  // clamp, with NaN (stays NaN) and infinities in the input; also an infinite bound.
  op_args cl;
  cl.f0 = -0.5f;
  cl.f1 = 0.75f;
  add_unary(cs, op_kind::CLAMP, with_specials(-2, 2, 0.1, {kNaN, kInf, -kInf}),
            [](context& c, T t, const op_args& a) { return clamp(c, t[0], a.f0, a.f1); }, cl);
  cl.f0 = -std::numeric_limits<float>::infinity();
  cl.f1 = 0.25f;
  cs.push_back(mk(op_kind::CLAMP, "lo_-inf_65x3", {in(dtype::f32, {65, 3}, with_specials(-2, 2, 0.1, {kNaN, -kInf}))},
                  [](context& c, T t, const op_args& a) { return clamp(c, t[0], a.f0, a.f1); }, cl));
  add_unary(cs, op_kind::SILU, uniform(-20, 20), [](context& c, T t, const op_args&) { return silu(c, t[0]); });
  add_unary(cs, op_kind::SIGMOID, uniform(-20, 20), [](context& c, T t, const op_args&) { return sigmoid(c, t[0]); });
  // softplus: both sides of the a > 20 threshold.
  add_unary(cs, op_kind::SOFTPLUS, uniform(-30, 30), [](context& c, T t, const op_args&) { return softplus(c, t[0]); });
  cs.push_back(mk(op_kind::SOFTPLUS, "threshold_values", {in(dtype::f32, {16}, values({19.5, 20.0, 20.001, 20.5, -20, 0, 1e-3, -1e-3, 88, -88, 5, -5, 15, -15, 25, 30}))},
                  [](context& c, T t, const op_args&) { return softplus(c, t[0]); }));
  add_unary(cs, op_kind::SQRT, uniform(0, 100), [](context& c, T t, const op_args&) { return v4::sqrt(c, t[0]); });
  add_unary(cs, op_kind::RELU, uniform(-1, 1), [](context& c, T t, const op_args&) { return relu(c, t[0]); });
  add_unary(cs, op_kind::EXP, uniform(-30, 30), [](context& c, T t, const op_args&) { return v4::exp(c, t[0]); });

  // binary: a shapes with b broadcast along various dims, strided a and b.
  struct bcase {
    input a, b;
  };
  auto binaries = [](filler fa, filler fb) {
    return std::vector<bcase>{
        {in(dtype::f32, {1}, fa), in(dtype::f32, {1}, fb)},
        {in(dtype::f32, {7}, fa), in(dtype::f32, {7}, fb)},
        {in(dtype::f32, {7}, fa), in(dtype::f32, {1}, fb)},
        {in(dtype::f32, {17, 3}, fa), in(dtype::f32, {17, 3}, fb)},
        {in(dtype::f32, {17, 3}, fa), in(dtype::f32, {17, 1}, fb)},
        {in(dtype::f32, {17, 3}, fa, transposed()), in(dtype::f32, {1, 3}, fb)},
        {in(dtype::f32, {33, 5, 2}, fa, padded()), in(dtype::f32, {33, 5, 2}, fb, transposed())},
        {in(dtype::f32, {33, 5, 2}, fa), in(dtype::f32, {33, 1, 2}, fb, padded())},
        {in(dtype::f32, {33, 5, 2}, fa, permuted_0213()), in(dtype::f32, {1, 5, 1}, fb)},
        {in(dtype::f32, {257, 2, 1, 3}, fa), in(dtype::f32, {257, 1, 1, 3}, fb)},
        {in(dtype::f32, {257, 2, 1, 3}, fa, padded()), in(dtype::f32, {1, 1, 1, 1}, fb)},
        {in(dtype::f32, {16, 4, 3, 2}, fa), in(dtype::f32, {16, 4, 1, 2}, fb, padded_transposed())},
    };
  };
  struct bop {
    op_kind op;
    tensor* (*fn)(context&, tensor*, tensor*);
    filler fb;
  };
  for (const bop& o : {bop{op_kind::ADD, add, uniform(-4, 4)}, bop{op_kind::SUB, sub, uniform(-4, 4)},
                       bop{op_kind::MUL, mul, uniform(-4, 4)}, bop{op_kind::DIV, div, signed_range(0.25, 4)}}) {
    auto fn = o.fn;
    for (const bcase& b : binaries(uniform(-4, 4), o.fb))
      cs.push_back(mk(o.op, shape_name(b.a) + lay_name(b.a) + "_by_" + shape_name(b.b) + lay_name(b.b), {b.a, b.b},
                      [fn](context& c, T t, const op_args&) { return fn(c, t[0], t[1]); }));
  }
}

// ---- reductions and normalisation ---------------------------------------------------------------------
void add_reductions(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  for (op_kind op : {op_kind::SUM, op_kind::MAX}) {
    auto b = [op](context& c, T t, const op_args& a) { return op == op_kind::SUM ? sum(c, t[0], a.dim) : max(c, t[0], a.dim); };
    auto add = [&](input i, int dim, const char* tag = "") {
      op_args a;
      a.dim = dim;
      cs.push_back(mk(op, std::string(tag) + shape_name(i) + lay_name(i) + "_dim" + std::to_string(dim), {i}, b, a));
    };
    add(in(dtype::f32, {1}, uniform(-2, 2)), 0);
    for (int d = 0; d < 4; ++d) {
      add(in(dtype::f32, {7, 5, 3, 2}, uniform(-2, 2)), d);
      add(in(dtype::f32, {7, 5, 3, 2}, uniform(-2, 2), padded_transposed()), d);
      add(in(dtype::f32, {33, 17, 3, 5}, uniform(-2, 2), padded()), d);
    }
    add(in(dtype::f32, {257, 3}, uniform(-2, 2), transposed()), 0);
    add(in(dtype::f32, {257, 3}, uniform(-2, 2)), 1);
    add(in(dtype::f32, {1031, 2}, uniform(-2, 2)), 0);
    add(in(dtype::f32, {33, 5, 2}, uniform(-3, -1)), 0, "negative_");  // max must not start from 0
    add(in(dtype::f32, {4, 33, 2}, uniform(-3, -1), permuted_0213()), 1, "negative_");
  }

  auto rms = [](context& c, T t, const op_args& a) { return rms_norm(c, t[0], a.f0); };
  op_args e;
  e.f0 = 1e-6f;
  for (const input& i : {in(dtype::f32, {1}, uniform(-2, 2)), in(dtype::f32, {7, 3}, uniform(-2, 2)),
                         in(dtype::f32, {33, 5, 2}, uniform(-2, 2)), in(dtype::f32, {33, 5, 2}, uniform(-2, 2), transposed()),
                         in(dtype::f32, {257, 4}, uniform(-2, 2), padded()), in(dtype::f32, {1024, 3}, uniform(-8, 8)),
                         in(dtype::f32, {64, 3, 2, 2}, uniform(-2, 2), permuted_0213())})
    cs.push_back(mk(op_kind::RMS_NORM, shape_name(i) + lay_name(i), {i}, rms, e));
  e.f0 = 1e-2f;  // eps matters: small values
  cs.push_back(mk(op_kind::RMS_NORM, "large_eps_33x4", {in(dtype::f32, {33, 4}, uniform(-0.1, 0.1))}, rms, e));
  cs.push_back(mk(op_kind::RMS_NORM, "zero_rows_16x2", {in(dtype::f32, {16, 2}, values({0.0}))}, rms, e));
}

// ---- attn_mqa ---------------------------------------------------------------------------------------------
rope_params rp(int n_rot, bool interleaved, bool inverse, float base);  // (rope, below)
rope_params yarn(bool interleaved, bool inverse);
// The attention ops' output rotation (tensor/ops.h: attn_out_rope) in a case: its parameters, and
// a positions input (up to max_pos) added as the next input.
void with_out_rope(op_args& a, std::vector<input>& ins, const rope_params& p, int64_t Tq, int64_t max_pos) {
  a.out_rope_input = int(ins.size());
  a.rope = p;
  ins.push_back(in(dtype::i32, {Tq}, ints(0, max_pos)));
}
// The rotation a case's builder passes (the result's pointer: nullptr without one).
struct out_rope_arg {
  attn_out_rope r;
  const attn_out_rope* get() const { return r.pos ? &r : nullptr; }
};
out_rope_arg out_rope_of(const std::vector<tensor*>& t, const op_args& a) {
  if (a.out_rope_input < 0) return {};
  return {{t[size_t(a.out_rope_input)], a.rope}};
}

void add_attn_mqa(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto b = [](context& c, T t, const op_args& a) {
    size_t k = 2;
    tensor* mask = a.has_mask ? t[k++] : nullptr;
    tensor* sink = a.has_sink ? t[k++] : nullptr;
    const out_rope_arg out = out_rope_of(t, a);
    return attn_mqa(c, t[0], t[1], mask, sink, a.softmax_scale, out.get());
  };
  auto add = [&](std::string name, int64_t D, int64_t Tq, int64_t H, int64_t NK, bool mask, bool sink, layout ql,
                 const rope_params* rot = nullptr) {
    op_args a;
    a.softmax_scale = 1.0f / std::sqrt(float(D));
    a.has_mask = mask;
    a.has_sink = sink;
    std::vector<input> ins{in(dtype::f32, {D, Tq, H}, uniform(-2, 2), ql), in(dtype::f32, {D, NK}, uniform(-2, 2))};
    if (mask) ins.push_back(in(dtype::f32, {NK, Tq}, mask_fill(0.4)));
    if (sink) ins.push_back(in(dtype::f32, {H}, uniform(-3, 3)));
    if (rot) with_out_rope(a, ins, *rot, Tq, 65535);
    cs.push_back(mk(op_kind::ATTN_MQA, std::move(name), std::move(ins), b, a));
  };
  add("decode_D128_H4_NK137_mask_sink", 128, 1, 4, 137, true, true, cont());   // the last query fully masked
  add("prefill_D64_T5_H2_NK40_mask_sink", 64, 5, 2, 40, true, true, cont());
  add("D32_T3_H3_NK7_plain", 32, 3, 3, 7, false, false, cont());
  add("D16_T4_H2_NK9_sink_only_perm", 16, 4, 2, 9, false, true, permuted_0213());
  add("D48_T2_H2_NK1_mask_padded", 48, 2, 2, 1, true, false, padded());      // row 1: all -inf, no sink -> 0
  // The output rotation: V4's (YaRN, inverse, 64 interleaved dims) at decode and over a prefill
  // chunk of 48 tokens x 64 heads (one chunk per (token, head group): the rotation inside the
  // attention kernel on CUDA); halves over part of the dims, with a partial head group and few keys.
  const rope_params v4 = yarn(true, true), halves = rp(16, false, true, 10000.0f), il = rp(8, true, true, 10000.0f);
  // (No mask at T = 1: mask_fill masks the last query fully, and rotated zeros test nothing.)
  add("decode_D128_H4_NK137_sink_rope_v4", 128, 1, 4, 137, false, true, cont(), &v4);
  add("prefill_D64_T48_H64_NK40_mask_sink_rope_v4", 64, 48, 64, 40, true, true, cont(), &v4);
  add("D40_T3_H9_NK7_sink_perm_rope_halves16", 40, 3, 9, 7, false, true, permuted_0213(), &halves);
  add("D48_T2_H2_NK1_mask_rope_interleaved8", 48, 2, 2, 1, true, false, cont(), &il);  // row 1: rotated zeros
}

// ---- sinkhorn (mHC) ------------------------------------------------------------------------------------------
void add_sinkhorn(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto b = [](context& c, T t, const op_args& a) { return sinkhorn(c, t[0], a.k, a.f0); };
  auto add = [&](std::string name, int iters, float eps, input i) {
    op_args a;
    a.k = iters;
    a.f0 = eps;
    cs.push_back(mk(op_kind::SINKHORN, std::move(name) + "_it" + std::to_string(iters), {i}, b, a));
  };
  add("4x4x7", 20, 1e-6f, in(dtype::f32, {4, 4, 7}, uniform(-3, 3)));            // V4: 4 streams, T tokens
  add("4x4x3x2_transposed", 20, 1e-6f, in(dtype::f32, {4, 4, 3, 2}, uniform(-6, 6), permuted_0213()));
  add("1x1x5", 3, 1e-6f, in(dtype::f32, {1, 1, 5}, uniform(-1, 1)));
  add("3x3x4_padded", 1, 0.0f, in(dtype::f32, {3, 3, 4}, uniform(-20, 20), padded()));
  add("8x8x2", 50, 1e-3f, in(dtype::f32, {8, 8, 2}, uniform(-4, 4)));
}

// ---- hc_mix (mHC, fused) ------------------------------------------------------------------------------------
void add_hc_mix(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto b = [](context& c, T t, const op_args& a) {
    const float s[3] = {a.f0, a.f1, a.hc_s2};
    return hc_mix(c, t[0], t[1], s, a.k, a.hc_eps);
  };
  auto add = [&](std::string name, int64_t n, int64_t T1, int64_t T2, int iters, float eps, layout l) {
    op_args a;
    a.f0 = 0.37f, a.f1 = 1.5f, a.hc_s2 = 0.8f, a.k = iters, a.hc_eps = eps, a.hc_n = n;
    const int64_t w = (2 + n) * n;
    cs.push_back(mk(op_kind::HC_MIX, std::move(name),
                    {in(dtype::f32, {w, T1, T2}, uniform(-3, 3), l), in(dtype::f32, {w}, uniform(-1, 1))}, b, a));
  };
  add("n4_T7", 4, 7, 1, 20, 1e-6f, cont());  // V4: 4 streams, 20 rounds
  add("n4_T3x2_padded", 4, 3, 2, 20, 1e-6f, padded());
  add("n1_T5", 1, 5, 1, 3, 1e-6f, cont());
  add("n3_T4", 3, 4, 1, 1, 0.0f, cont());
  add("n8_T2", 8, 2, 1, 50, 1e-3f, cont());
}

// ---- hc_pre (mHC's pre chain, fused) ------------------------------------------------------------------------
// X [D, HC, T], fn [HC*D, M] scaled as the model's (mix values of order 1: entries ~ 2/sqrt(K)), base,
// norm; with post f [D, T] and w_post [1+HC, HC, T] (packed, a padded view as hc_mix's rows, or
// broadcast over T); with and without the FP8 rounding of u.
void add_hc_pre(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto b = [](context& c, T t, const op_args& a) {
    hc_pre_params p;
    p.scale[0] = a.f0, p.scale[1] = a.f1, p.scale[2] = a.hc_s2;
    p.iters = a.k, p.hc_eps = a.hc_eps, p.rms_eps = a.rms_eps, p.fp8_block = a.block;
    if (a.has_post) p.f = t[4], p.w_post = t[5];
    return hc_pre(c, t[0], t[1], t[2], t[3], p);
  };
  auto add = [&](int64_t D, int64_t HC, int64_t Tn, bool post, int block, layout xl, layout wl, bool bcast) {
    op_args a;
    a.f0 = 0.37f, a.f1 = 1.5f, a.hc_s2 = 0.8f, a.k = 20, a.hc_eps = 1e-6f, a.rms_eps = 1e-6f;
    a.block = block, a.has_post = post;
    const int64_t K = HC * D, M = (2 + HC) * HC;
    const double fs = 2.0 / std::sqrt(double(K));
    std::vector<input> ins = {in(dtype::f32, {D, HC, Tn}, uniform(-3, 3), xl), in(dtype::f32, {K, M}, uniform(-fs, fs)),
                              in(dtype::f32, {M}, uniform(-1, 1)), in(dtype::f32, {D}, uniform(0.5, 1.5))};
    if (post) {
      ins.push_back(in(dtype::f32, {D, Tn}, uniform(-3, 3)));
      ins.push_back(in(dtype::f32, {1 + HC, HC, bcast ? 1 : Tn}, uniform(0, 2), wl));
    }
    const std::string name = shape_name(ins[0]) + lay_name(ins[0]) + (post ? "_post" + lay_name(ins[5]) : "") +
                             (bcast ? "_bcast" : "") + (block ? "_fp8_" + std::to_string(block) : "");
    cs.push_back(mk(op_kind::HC_PRE, name, std::move(ins), b, a));
  };
  add(4096, 4, 1, true, 128, cont(), padded(), false);  // V4-Flash decode: the model's node
  add(4096, 4, 2, false, 128, cont(), cont(), false);   // the first layer's first sublayer
  add(64, 4, 1, false, 0, cont(), cont(), false);
  add(256, 4, 3, true, 128, cont(), padded(), false);
  add(33, 4, 2, true, 16, padded(), cont(), true);
  add(130, 4, 4, true, 0, permuted_0213(), transposed(), false);
  add(40, 2, 2, true, 0, cont(), cont(), false);  // HC = 2: the CPU only
}

// ---- fused ops of the decode graph: rms_norm_w, swiglu, hc_sum, hc_post ------------------------------------
void add_fused(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  const double inf = kInf;
  // rms_norm_w: a [n, ...] in every layout, w [n] packed or strided (a padded transposed leaf).
  auto rmsw = [](context& c, T t, const op_args& a) { return rms_norm_w(c, t[0], t[1], a.f0); };
  auto add_rmsw = [&](input a, layout wl, float eps, const char* tag = "") {
    op_args e;
    e.f0 = eps;
    const std::string wtag = std::string(wl.name) == "cont" ? "" : std::string("_w_") + wl.name;
    cs.push_back(mk(op_kind::RMS_NORM_W, tag + shape_name(a) + lay_name(a) + wtag,
                    {a, in(dtype::f32, {a.ne[0]}, uniform(-2, 2), wl)}, rmsw, e));
  };
  add_rmsw(in(dtype::f32, {1}, uniform(-2, 2)), cont(), 1e-6f);
  add_rmsw(in(dtype::f32, {7, 3}, uniform(-2, 2)), cont(), 1e-6f);
  add_rmsw(in(dtype::f32, {33, 5, 2}, uniform(-2, 2), transposed()), padded_transposed(), 1e-6f);
  add_rmsw(in(dtype::f32, {257, 4}, uniform(-2, 2), padded()), padded(1), 1e-6f);
  add_rmsw(in(dtype::f32, {512, 9}, uniform(-8, 8)), cont(), 1e-6f);          // kv_norm / compressor rows
  add_rmsw(in(dtype::f32, {4096, 2}, uniform(-8, 8)), cont(), 1e-6f);         // V4-Flash hidden
  add_rmsw(in(dtype::f32, {4100, 1}, uniform(-8, 8), padded()), cont(), 1e-6f);  // long row, not 16-byte aligned
  add_rmsw(in(dtype::f32, {64, 3, 2, 2}, uniform(-2, 2), permuted_0213()), cont(), 1e-6f);
  add_rmsw(in(dtype::f32, {33, 4}, uniform(-0.1, 0.1)), cont(), 1e-2f, "large_eps_");
  add_rmsw(in(dtype::f32, {16, 2}, values({0.0})), cont(), 1e-2f, "zero_rows_");
  // With the fp8 output rounding (block 128: the activation quantization of the matmul it feeds):
  // q_lora rows (1024) at T = 1 and T > 1, rows that are no multiple of the block (the goldens' 32
  // and 96, 300 strided), huge outliers (one run's scale, the others' elements to fp8 subnormals or
  // zero), zero rows (the amax floor), other blocks.
  auto rmsw8 = [](context& c, T t, const op_args& a) { return rms_norm_w(c, t[0], t[1], a.f0, a.block); };
  auto add_rmsw8 = [&](input a, layout wl, int block, const char* tag = "") {
    op_args e;
    e.f0 = 1e-6f;
    e.block = block;
    const std::string wtag = std::string(wl.name) == "cont" ? "" : std::string("_w_") + wl.name;
    cs.push_back(mk(op_kind::RMS_NORM_W, std::string("fp8_") + std::to_string(block) + "_" + tag + shape_name(a) +
                                             lay_name(a) + wtag,
                    {a, in(dtype::f32, {a.ne[0]}, uniform(-2, 2), wl)}, rmsw8, e));
  };
  add_rmsw8(in(dtype::f32, {1024, 1}, uniform(-8, 8)), cont(), 128);
  add_rmsw8(in(dtype::f32, {1024, 5}, uniform(-8, 8)), cont(), 128);
  add_rmsw8(in(dtype::f32, {96, 3}, uniform(-2, 2)), cont(), 128);
  add_rmsw8(in(dtype::f32, {32, 4}, uniform(-2, 2)), cont(), 128);
  add_rmsw8(in(dtype::f32, {300, 2}, uniform(-2, 2), padded()), padded(1), 128);
  add_rmsw8(in(dtype::f32, {33, 5, 2}, uniform(-2, 2), transposed()), padded_transposed(), 16);
  add_rmsw8(in(dtype::f32, {64, 3, 2, 2}, uniform(-2, 2), permuted_0213()), cont(), 64);
  add_rmsw8(in(dtype::f32, {1024, 2}, with_specials(-1, 1, 0.01, {3e4, -5e5})), cont(), 128, "outliers_");
  add_rmsw8(in(dtype::f32, {200, 2}, values({0.0})), cont(), 128, "zero_rows_");
  add_rmsw8(in(dtype::f32, {7, 3}, uniform(-2, 2)), cont(), 1);

  // swiglu: gate values on both sides of the limit, specials (NaN, +-inf) in gate and up.
  auto sw = [](context& c, T t, const op_args& a) { return swiglu(c, t[0], t[1], a.f0, a.has_wts ? t[2] : nullptr); };
  auto add_sw = [&](std::string name, float limit, input g, input u, const input* w) {
    op_args a;
    a.f0 = limit;
    a.has_wts = w != nullptr;
    std::vector<input> ins = {g, u};
    if (w) ins.push_back(*w);
    cs.push_back(mk(op_kind::SWIGLU, std::move(name), ins, sw, a));
  };
  const filler gate = with_specials(-14, 14, 0.05, {kNaN, inf, -inf});
  const filler up = with_specials(-14, 14, 0.05, {kNaN, inf, -inf});
  {
    const input w62 = in(dtype::f32, {1, 6, 2}, uniform(0, 1));
    const input w61 = in(dtype::f32, {1, 6, 1}, uniform(0, 1), padded());
    const input w6 = in(dtype::f32, {1, 6, 1}, uniform(0, 1));
    const input w2322 = in(dtype::f32, {1, 2, 3, 2}, uniform(-1, 1), padded());
    const input w1 = in(dtype::f32, {1}, uniform(0, 1));
    add_sw("7_nolimit", 0.0f, in(dtype::f32, {7}, uniform(-20, 20)), in(dtype::f32, {7}, uniform(-4, 4)), nullptr);
    add_sw("7_nolimit_-inf_gate", -1.0f, in(dtype::f32, {7}, values({-inf, 3, -2, -inf, 0.5, 1e-3, -30})),
           in(dtype::f32, {7}, uniform(-4, 4)), nullptr);
    add_sw("33x6x2_limit7_wts", 7.0f, in(dtype::f32, {33, 6, 2}, gate), in(dtype::f32, {33, 6, 2}, up), &w62);
    add_sw("33x6x2_transposed_padded_wts_bcast", 7.0f, in(dtype::f32, {33, 6, 2}, gate, transposed()),
           in(dtype::f32, {33, 6, 2}, up, padded()), &w61);
    add_sw("257x3_limit2", 2.0f, in(dtype::f32, {257, 3}, uniform(-4, 4)), in(dtype::f32, {257, 3}, uniform(-4, 4)),
           nullptr);
    add_sw("2048x6_limit10_wts", 10.0f, in(dtype::f32, {2048, 6}, gate), in(dtype::f32, {2048, 6}, up), &w6);  // V4 decode
    add_sw("2050x6_padded_limit10_wts", 10.0f, in(dtype::f32, {2050, 6}, gate, padded()),
           in(dtype::f32, {2050, 6}, up, padded(2)), &w6);
    add_sw("64x2x3x2_permuted_wts", 10.0f, in(dtype::f32, {64, 2, 3, 2}, gate, permuted_0213()),
           in(dtype::f32, {64, 2, 3, 2}, up, padded_transposed()), &w2322);
    add_sw("1_nolimit_wts", -3.0f, in(dtype::f32, {1}, uniform(-4, 4)), in(dtype::f32, {1}, uniform(-4, 4)), &w1);
  }
  // swiglu with the fp8 output rounding (block 128: the activation quantization of w2 / sw2): the
  // routed experts' [I, k, T] with weights at T = 1 and T > 1, the shared expert's [I, T] without
  // (no clamp), rows that are no multiple of the block (the goldens' 32, the tiny model's 64),
  // strided gate and up, specials (NaN, +-inf pass through and stay out of the amax), huge
  // outliers (no clamp: 1e6-scale products beside small ones), zeros.
  {
    auto sw8 = [](context& c, T t, const op_args& a) {
      return swiglu(c, t[0], t[1], a.f0, a.has_wts ? t[2] : nullptr, a.block);
    };
    auto add_sw8 = [&](std::string name, float limit, int block, input g, input u, const input* w) {
      op_args a;
      a.f0 = limit;
      a.block = block;
      a.has_wts = w != nullptr;
      std::vector<input> ins = {g, u};
      if (w) ins.push_back(*w);
      cs.push_back(mk(op_kind::SWIGLU, "fp8_" + std::to_string(block) + "_" + name, ins, sw8, a));
    };
    const input w6 = in(dtype::f32, {1, 6, 1}, uniform(0, 1));
    const input w63 = in(dtype::f32, {1, 6, 3}, uniform(0, 1), padded());
    const input w22 = in(dtype::f32, {1, 2, 2}, uniform(0, 1));
    add_sw8("2048x6_limit10_wts", 10.0f, 128, in(dtype::f32, {2048, 6}, uniform(-14, 14)),
            in(dtype::f32, {2048, 6}, uniform(-14, 14)), &w6);
    add_sw8("256x6x3_limit10_wts", 10.0f, 128, in(dtype::f32, {256, 6, 3}, uniform(-14, 14)),
            in(dtype::f32, {256, 6, 3}, uniform(-14, 14)), &w63);
    add_sw8("2048x3_shared", 0.0f, 128, in(dtype::f32, {2048, 3}, uniform(-6, 6)), in(dtype::f32, {2048, 3}, uniform(-6, 6)),
            nullptr);
    add_sw8("64x2x2_limit7_wts", 7.0f, 128, in(dtype::f32, {64, 2, 2}, uniform(-9, 9)),
            in(dtype::f32, {64, 2, 2}, uniform(-9, 9)), &w22);
    add_sw8("32x5_shared", 0.0f, 128, in(dtype::f32, {32, 5}, uniform(-4, 4)), in(dtype::f32, {32, 5}, uniform(-4, 4)), nullptr);
    add_sw8("300x6_padded_transposed_limit10_wts", 10.0f, 128, in(dtype::f32, {300, 6}, uniform(-14, 14), padded()),
            in(dtype::f32, {300, 6}, uniform(-14, 14), transposed()), &w6);
    add_sw8("33x6x2_specials_limit7", 7.0f, 16, in(dtype::f32, {33, 6, 2}, gate), in(dtype::f32, {33, 6, 2}, up), nullptr);
    add_sw8("512x2_outliers_shared", 0.0f, 128, in(dtype::f32, {512, 2}, with_specials(-2, 2, 0.01, {2e3, -3e3})),
            in(dtype::f32, {512, 2}, with_specials(-2, 2, 0.01, {1e3, -4e3})), nullptr);
    add_sw8("256x2_zeros", 10.0f, 128, in(dtype::f32, {256, 2}, values({0.0})), in(dtype::f32, {256, 2}, uniform(-2, 2)),
            nullptr);
  }

  // hc_sum: X [D, HC, T] (packed, streams-major transposed X^T, padded, dim 0 strided), pre
  // [1, HC, T] packed, padded (a view of a wider row, as hc_mix's output) or broadcast over T.
  auto hs = [](context& c, T t, const op_args&) { return hc_sum(c, t[0], t[1]); };
  auto add_hs = [&](int64_t D, int64_t HC, int64_t Tn, layout xl, layout pl, bool bcast) {
    const input X = in(dtype::f32, {D, HC, Tn}, uniform(-3, 3), xl);
    const input p = in(dtype::f32, {1, HC, bcast ? 1 : Tn}, uniform(0, 2), pl);
    cs.push_back(mk(op_kind::HC_SUM, shape_name(X) + lay_name(X) + "_pre_" + shape_name(p) + lay_name(p), {X, p}, hs));
  };
  add_hs(64, 4, 3, cont(), cont(), false);
  add_hs(4096, 4, 2, cont(), padded(), false);  // V4-Flash
  add_hs(33, 4, 5, padded(), padded(), false);
  add_hs(33, 4, 5, permuted_0213(), cont(), false);
  add_hs(17, 3, 4, transposed(), cont(), true);
  add_hs(130, 4, 4, padded_transposed(), cont(), true);
  add_hs(7, 1, 2, cont(), cont(), false);
  add_hs(40, 9, 2, cont(), cont(), false);

  // hc_post: f [D, T], X [D, HC, T], w [1+HC, HC, T] or [1+HC, HC, 1], in the layouts above.
  auto hp = [](context& c, T t, const op_args&) { return hc_post(c, t[0], t[1], t[2]); };
  auto add_hp = [&](int64_t D, int64_t HC, int64_t Tn, layout fl, layout xl, layout wl, bool bcast) {
    const input f = in(dtype::f32, {D, Tn}, uniform(-3, 3), fl);
    const input X = in(dtype::f32, {D, HC, Tn}, uniform(-3, 3), xl);
    const input w = in(dtype::f32, {1 + HC, HC, bcast ? 1 : Tn}, uniform(0, 2), wl);
    cs.push_back(mk(op_kind::HC_POST,
                    std::string("f") + lay_name(f) + "_" + shape_name(X) + lay_name(X) + "_w_" + shape_name(w) + lay_name(w),
                    {f, X, w}, hp));
  };
  add_hp(64, 4, 3, cont(), cont(), cont(), false);
  add_hp(4096, 4, 2, cont(), cont(), padded(), false);  // V4-Flash: w a view of hc_mix's rows
  add_hp(33, 4, 5, padded(), permuted_0213(), padded(), false);
  add_hp(36, 4, 3, cont(), padded(), transposed(), false);
  add_hp(17, 3, 4, transposed(), transposed(), cont(), true);
  add_hp(130, 4, 4, padded_transposed(), padded_transposed(), padded(), true);
  add_hp(7, 1, 2, cont(), cont(), cont(), false);
  add_hp(40, 8, 2, cont(), cont(), cont(), false);
  add_hp(40, 9, 2, cont(), cont(), cont(), false);
}

// ---- softmax ----------------------------------------------------------------------------------------------
void add_softmax(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto b = [](context& c, T t, const op_args& a) {
    softmax_params p;
    p.scale = a.softmax_scale;
    size_t k = 1;
    if (a.has_mask) p.mask = t[k++];
    if (a.has_sink) p.sink = t[k++];
    return softmax(c, t[0], p);
  };
  auto add = [&](std::string name, float scale, std::vector<input> ins, bool mask, bool sink) {
    op_args a;
    a.softmax_scale = scale;
    a.has_mask = mask;
    a.has_sink = sink;
    cs.push_back(mk(op_kind::SOFTMAX, std::move(name), std::move(ins), b, a));
  };
  const filler logits = uniform(-4, 4);
  add("1x1", 1.0f, {in(dtype::f32, {1, 1}, logits)}, false, false);
  add("7x3_scale0.5", 0.5f, {in(dtype::f32, {7, 3}, logits)}, false, false);
  add("33x5x2_transposed", 0.125f, {in(dtype::f32, {33, 5, 2}, logits, transposed())}, false, false);
  add("257x4x2_padded", 1.0f, {in(dtype::f32, {257, 4, 2}, uniform(-20, 20), padded())}, false, false);
  add("1031x2", 0.3f, {in(dtype::f32, {1031, 2}, uniform(-10, 10))}, false, false);
  // masks with -inf entries; the last row of each mask is fully -inf (no sink: all zeros).
  add("mask2d_33x5x3", 0.7f, {in(dtype::f32, {33, 5, 3}, logits), in(dtype::f32, {33, 5}, mask_fill(0.3))}, true, false);
  add("mask4d_17x4x3x2", 1.0f, {in(dtype::f32, {17, 4, 3, 2}, logits), in(dtype::f32, {17, 4, 3, 2}, mask_fill(0.3))}, true, false);
  add("mask_bcast_17x4x3x2", 1.0f, {in(dtype::f32, {17, 4, 3, 2}, logits), in(dtype::f32, {17, 4, 1, 2}, mask_fill(0.2))}, true, false);
  add("mask_padded_65x6x2", 0.25f, {in(dtype::f32, {65, 6, 2}, logits, padded()), in(dtype::f32, {65, 6}, mask_fill(0.5), padded())}, true, false);
  // sinks: one extra logit per dim-2 index, in the denominator only.
  add("sink_17x4x3", 1.0f, {in(dtype::f32, {17, 4, 3}, logits), in(dtype::f32, {3}, uniform(-2, 2))}, false, true);
  add("sink_dominant_33x2x5", 0.1f, {in(dtype::f32, {33, 2, 5}, logits), in(dtype::f32, {5}, uniform(5, 10))}, false, true);
  // mask and sink; the fully masked last row gives zeros (numerators are 0, the sink's term is 1).
  add("mask_sink_33x5x3", 0.7f, {in(dtype::f32, {33, 5, 3}, logits), in(dtype::f32, {33, 5}, mask_fill(0.3)), in(dtype::f32, {3}, uniform(-2, 2))}, true, true);
  add("mask_sink_257x3x2x2", 0.125f, {in(dtype::f32, {257, 3, 2, 2}, uniform(-30, 30)), in(dtype::f32, {257, 3, 2, 2}, mask_fill(0.1)), in(dtype::f32, {2}, uniform(-1, 1))}, true, true);
  add("mask_sink_1x2x2", 1.0f, {in(dtype::f32, {1, 2, 2}, logits), in(dtype::f32, {1, 2}, values({0.5, -kInf})), in(dtype::f32, {2}, uniform(-1, 1))}, true, true);
}

// ---- rope -------------------------------------------------------------------------------------------------
rope_params rp(int n_rot, bool interleaved, bool inverse = false, float base = 10000.0f) {
  rope_params p;
  p.n_rot = n_rot;
  p.interleaved = interleaved;
  p.inverse = inverse;
  p.base = base;
  return p;
}
rope_params yarn(bool interleaved, bool inverse = false) {
  rope_params p = rp(64, interleaved, inverse, 160000.0f);
  p.yarn_factor = 16.0f;
  p.yarn_orig_ctx = 65536.0f;
  p.yarn_beta_fast = 32.0f;
  p.yarn_beta_slow = 1.0f;
  return p;
}

// inverse(rope(x)) = x: each rotation keeps |x|+|y| within sqrt(2) of the original pair's.
void ref_rope_roundtrip(const ref_in& in, ref_out* o) {
  const darray& a = in.src[0];
  const rope_params& p = in.args.rope;
  const int64_t D = a.ne[0], r = D - p.n_rot, half = p.n_rot / 2;
  o->shape(dtype::f32, a.ne);
  o->v = a.v;
  for (int64_t i3 = 0; i3 < a.ne[3]; ++i3)
    for (int64_t t = 0; t < a.ne[2]; ++t)
      for (int64_t h = 0; h < a.ne[1]; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const double theta = in.src[1].at(t) * rope_freq(int(i), p);
          const int64_t j0 = p.interleaved ? r + 2 * i : r + i, j1 = p.interleaved ? r + 2 * i + 1 : r + i + half;
          const double m = std::fabs(a.at(j0, h, t, i3)) + std::fabs(a.at(j1, h, t, i3));
          o->tol[size_t(o->idx(j0, h, t, i3))] = o->tol[size_t(o->idx(j1, h, t, i3))] =
              (1 + std::sqrt(2.0)) * m * (rope_angle_bound(theta, int(i), p) + 16 * 0x1p-24);
        }
}

void add_rope(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto b = [](context& c, T t, const op_args& a) { return rope(c, t[0], t[1], a.rope); };
  auto add = [&](std::string name, rope_params p, int64_t D, int64_t H, int64_t Tn, int64_t B, int64_t max_pos,
                 layout l = cont()) {
    op_args a;
    a.rope = p;
    cs.push_back(mk(op_kind::ROPE, std::move(name),
                    {in(dtype::f32, {D, H, Tn, B}, uniform(-2, 2), l), in(dtype::i32, {Tn}, ints(0, max_pos))}, b, a));
  };
  add("interleaved_D64", rp(64, true), 64, 3, 5, 1, 300);
  add("halves_D64", rp(64, false), 64, 3, 5, 1, 300);
  add("interleaved_partial_D40_rot16", rp(16, true), 40, 7, 3, 2, 1000);
  add("halves_partial_D40_rot16", rp(16, false), 40, 7, 3, 2, 1000);
  add("interleaved_inverse_D48_rot32", rp(32, true, true), 48, 3, 4, 1, 500);
  add("halves_inverse_D48_rot32", rp(32, false, true), 48, 3, 4, 1, 500);
  add("interleaved_D2", rp(2, true), 2, 1, 1, 1, 7);
  add("halves_D18_rot8", rp(8, false), 18, 7, 3, 2, 100);
  add("interleaved_D66_rot64", rp(64, true), 66, 1, 17, 1, 4096);
  add("yarn_interleaved_D192_rot64", yarn(true), 192, 2, 9, 1, 65535);
  add("yarn_halves_D192_rot64", yarn(false), 192, 2, 9, 1, 65535);
  add("yarn_inverse_interleaved_D64", yarn(true, true), 64, 3, 5, 2, 20000);
  add("yarn_off_base160000_D64", rp(64, true, false, 160000.0f), 64, 3, 5, 1, 65535);
  add("interleaved_padded_D64", rp(64, true), 64, 3, 5, 1, 300, padded());
  add("halves_perm0213_D64", rp(64, false), 64, 3, 5, 2, 300, permuted_0213());
  add("yarn_padded_D128_rot64", yarn(true), 128, 4, 3, 1, 30000, padded(7));

  // inverse(forward(x)) = x, as one graph.
  for (rope_params p : {rp(64, true), rp(64, false), yarn(true), yarn(false), rp(16, true)}) {
    op_args a;
    a.rope = p;
    op_case c = mk(op_kind::ROPE,
                   std::string("inverse_after_forward_") + (p.interleaved ? "interleaved" : "halves") +
                       (p.yarn_factor > 1 ? "_yarn" : "") + "_rot" + std::to_string(p.n_rot),
                   {in(dtype::f32, {p.n_rot + 6, 3, 7, 1}, uniform(-2, 2)), in(dtype::i32, {7}, ints(0, 60000))},
                   [](context& c, T t, const op_args& a) {
                     rope_params inv = a.rope;
                     inv.inverse = true;
                     return rope(c, rope(c, t[0], t[1], a.rope), t[1], inv);
                   },
                   a);
    c.ref_override = ref_rope_roundtrip;
    cs.push_back(std::move(c));
  }
}

// ---- norm_rope: per-head rms_norm (weighted or not), rope, optional fp8 round trip ----------------------------
void add_norm_rope(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto b = [](context& c, T t, const op_args& a) {
    return norm_rope(c, t[0], a.has_wts ? t[2] : nullptr, t[1], a.rope, a.f0, a.block, a.n_quant);
  };
  // a [D, H, Tn, B] in layout l, positions up to max_pos, weight (layout wl) when has_w.
  auto add = [&](std::string name, rope_params p, int64_t D, int64_t H, int64_t Tn, int64_t B, int64_t max_pos, bool has_w,
                 int block, int64_t n_quant, layout l = cont(), filler f = uniform(-3, 3), layout wl = cont()) {
    op_args a;
    a.rope = p;
    a.f0 = 1e-6f;
    a.has_wts = has_w;
    a.block = block;
    a.n_quant = n_quant;
    std::vector<input> ins = {in(dtype::f32, {D, H, Tn, B}, f, l), in(dtype::i32, {Tn}, ints(0, max_pos))};
    if (has_w) ins.push_back(in(dtype::f32, {D}, uniform(-2, 2), wl));
    cs.push_back(mk(op_kind::NORM_ROPE, std::move(name), std::move(ins), b, a));
  };
  // V4's q (no weight, 64 heads of 512, 64 rope dims) and kv (kv_norm, YaRN, fp8 block 64 over
  // the 448 non-rope dims) at T = 1 and T > 1.
  add("q_D512x64_T1", rp(64, true), 512, 64, 1, 1, 5000, false, 0, 0);
  add("q_D512x8_T3", rp(64, true), 512, 8, 3, 1, 5000, false, 0, 0);
  add("kv_yarn_D512_T1_w_fp8_64_448", yarn(true), 512, 1, 1, 1, 65535, true, 64, 448);
  add("kv_yarn_D512_T5_w_fp8_64_448", yarn(true), 512, 1, 5, 1, 65535, true, 64, 448);
  add("kv_D512_T2_w_fp8_64_448", rp(64, true), 512, 1, 2, 1, 300, true, 64, 448);
  // The tiny and golden models' heads (64, rope 16; the run past n a partial one).
  add("q_D64x4_T3_rot16", rp(16, true), 64, 4, 3, 1, 100, false, 0, 0);
  add("kv_D64_T3_w_fp8_64_48", rp(16, true), 64, 1, 3, 1, 100, true, 64, 48);
  add("kv_D64_T1_w_fp8_32_48", yarn(true), 64, 1, 1, 1, 60000, true, 32, 48);
  // Halves, inverse, the rotated dims inside the rounded runs (n = 0: the whole row), blocks that
  // do not divide the row, 4-d.
  add("halves_D48x3_T4_rot32_fp8_16_all", rp(32, false), 48, 3, 4, 1, 500, true, 16, 0);
  add("interleaved_inverse_D40x7_T3x2_rot16_fp8_12_all", rp(16, true, true), 40, 7, 3, 2, 1000, false, 12, 0);
  add("yarn_halves_D192x2_T9_fp8_128_150", yarn(false), 192, 2, 9, 1, 65535, true, 128, 150);
  add("interleaved_D2_fp8_1_all", rp(2, true), 2, 1, 1, 1, 7, true, 1, 0);
  // Strided sources (the model passes reshaped matmul outputs; views must work too).
  add("padded_D64x3_T5_w_padded", rp(64, true), 64, 3, 5, 1, 300, true, 0, 0, padded(), uniform(-3, 3), padded(1));
  add("perm0213_D64x3_T5x2_fp8_32_all", rp(64, false), 64, 3, 5, 2, 300, false, 32, 0, permuted_0213());
  add("transposed_D33x4_T1_rot16_w_transposed_fp8_16_17", rp(16, true), 33, 4, 1, 1, 50, true, 16, 17, transposed(),
      uniform(-3, 3), padded_transposed());
  add("padded_transposed_yarn_D128x4_T3_fp8_64_64", yarn(true), 128, 4, 3, 1, 30000, true, 64, 64, padded_transposed());
  // Zero rows (the amax floor), huge outliers (one run holds the scale, others go to fp8 subnormals
  // or zero after the normalisation).
  add("zeros_D64x2_T2_fp8_64_48", rp(16, true), 64, 2, 2, 1, 10, true, 64, 48, cont(), values({0.0}));
  add("outliers_D512x2_T2_fp8_64_448", yarn(true), 512, 2, 2, 1, 65535, true, 64, 448, cont(),
      with_specials(-1, 1, 0.01, {4e4, -7e5}));
}

// ---- matmul ------------------------------------------------------------------------------------------------
void add_matmul(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto b = [](context& c, T t, const op_args&) { return matmul(c, t[0], t[1]); };
  struct mm {
    int64_t K, M, N, Bw2 = 1, Bw3 = 1, B2 = 1, B3 = 1;
    bool pad_x = false;
  };
  const std::vector<mm> shapes = {
      // decode-like: N in 1..16
      {1, 1, 1}, {7, 3, 2}, {16, 5, 3}, {33, 17, 1}, {33, 17, 4}, {33, 17, 5, 1, 1, 1, 1, true}, {64, 8, 8},
      {257, 33, 13}, {128, 16, 16}, {1024, 9, 7},
      // prefill-like: N >= 64
      {257, 33, 64}, {64, 32, 65}, {256, 64, 100}, {96, 17, 67, 1, 1, 1, 1, true},
      // batches: w broadcast over x's dims 2 and 3
      {33, 9, 5, 2, 1, 6, 2}, {16, 8, 70, 1, 1, 3, 1}, {32, 7, 3, 2, 2, 2, 2}};
  for (dtype wt : {dtype::f32, dtype::f16, dtype::bf16}) {
    // x with its N and batch dims swapped in memory (rows still contiguous), w broadcast over 2 batches
    cs.push_back(mk(op_kind::MATMUL, std::string(type_name(wt)) + "_K33_M9_N5_x_perm0213",
                    {in(wt, {33, 9, 2}, uniform(-1, 1)), in(dtype::f32, {33, 5, 4}, uniform(-1, 1), permuted_0213())}, b));
    cs.push_back(mk(op_kind::MATMUL, std::string(type_name(wt)) + "_K64_M16_N40_x_perm0213",
                    {in(wt, {64, 16, 1}, uniform(-1, 1)), in(dtype::f32, {64, 40, 3}, uniform(-1, 1), permuted_0213())}, b));
  }
  for (dtype wt : {dtype::f32, dtype::f16, dtype::bf16})
    for (const mm& s : shapes) {
      const std::string name = std::string(type_name(wt)) + "_K" + std::to_string(s.K) + "_M" + std::to_string(s.M) +
                               "_N" + std::to_string(s.N) +
                               (s.B2 * s.B3 > 1 ? "_w" + std::to_string(s.Bw2) + "x" + std::to_string(s.Bw3) + "_x" +
                                                      std::to_string(s.B2) + "x" + std::to_string(s.B3)
                                                : "") +
                               (s.pad_x ? "_xpadded" : "");
      cs.push_back(mk(op_kind::MATMUL, name,
                      {in(wt, {s.K, s.M, s.Bw2, s.Bw3}, uniform(-1, 1)),
                       in(dtype::f32, {s.K, s.N, s.B2, s.B3}, uniform(-1, 1), s.pad_x ? padded() : cont())},
                      b));
    }

  auto bid = [](context& c, T t, const op_args&) { return matmul_id(c, t[0], t[1], t[2]); };
  struct mmid {
    int64_t K, M, E, X1, n_used, N;
    filler ids;
    const char* tag;
  };
  const std::vector<mmid> id_shapes = {
      {33, 17, 4, 1, 3, 5, ints(0, 3), "x1"},
      {33, 17, 4, 3, 3, 5, ints(0, 3), "xn"},
      {33, 17, 4, 3, 3, 4, values({1, 1, 3, 0, 2, 2, 3, 3, 3, 2, 0, 1}), "repeats"},
      {64, 16, 8, 6, 6, 70, ints(0, 7), "prefill"},
      {7, 5, 3, 1, 2, 1, values({2, 2}), "tiny"},
      {128, 32, 4, 4, 4, 40, values({0, 1, 2, 3, 3, 3, 3, 3}), "skewed"},  // expert 3 gets most rows
  };
  for (dtype wt : {dtype::f32, dtype::f16, dtype::bf16})
    for (const mmid& s : id_shapes)
      cs.push_back(mk(op_kind::MATMUL_ID,
                      std::string(type_name(wt)) + "_" + s.tag + "_K" + std::to_string(s.K) + "_M" + std::to_string(s.M) +
                          "_E" + std::to_string(s.E) + "_X1_" + std::to_string(s.X1) + "_used" + std::to_string(s.n_used) +
                          "_N" + std::to_string(s.N),
                      {in(wt, {s.K, s.M, s.E}, uniform(-1, 1)), in(dtype::f32, {s.K, s.X1, s.N}, uniform(-1, 1)),
                       in(dtype::i32, {s.n_used, s.N}, s.ids)},
                      bid));
}

// ---- matmul with quantized weights ---------------------------------------------------------------------------
// Weights are valid encodings of random data: fp8_e4m3 codes over the whole range (subnormals to
// 448) and mxfp4 codes, each with random power-of-two e8m0 scales in a separate input; q8_0 and the
// K-quants quantized from random rows by quant/'s reference quantizers. The reference multiplies
// the dequantized values (quant/'s reference dequantizers, times the scales) in float64; the bound
// is the usual matmul one with the x rounding the target declares for the weight type.

// Random sign, magnitude 2^u with u uniform in [elo, ehi]; one value in 16 is zero.
filler log_uniform(double elo, double ehi) {
  return [=](std::vector<double>& v, const int64_t*, std::mt19937_64& rng) {
    std::uniform_real_distribution<double> e(elo, ehi);
    for (double& x : v) x = rng() % 16 == 0 ? 0.0 : std::copysign(std::exp2(e(rng)), (rng() & 1) ? 1.0 : -1.0);
  };
}
// Powers of two 2^lo .. 2^hi (e8m0 scales).
filler pow2s(int lo, int hi) {
  return [=](std::vector<double>& v, const int64_t*, std::mt19937_64& rng) {
    std::uniform_int_distribution<int> e(lo, hi);
    for (double& x : v) x = std::ldexp(1.0, e(rng));
  };
}
// Rows whose groups of 16 along dim 0 (the K-quants' sub-blocks) differ in spread (2^-4 .. 2^2)
// and offset, so that every sub-block gets its own scale and min.
filler blocky() {
  return [](std::vector<double>& v, const int64_t* ne, std::mt19937_64& rng) {
    std::uniform_real_distribution<double> u(-1, 1), e(-4, 2);
    double spread = 1, offset = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      if (int64_t(i) % ne[0] % 16 == 0) {
        spread = std::exp2(e(rng));
        offset = 0.5 * spread * u(rng);
      }
      v[i] = offset + spread * u(rng);
    }
  };
}

void add_qmatmul(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  quant::register_types();  // the type names below (cases may be listed before any target exists)
  struct qmm {
    int64_t K, M, N;
    int32_t sb_k = 0, sb_m = 0;  // scaled types only
    layout x_lay = cont();
    int64_t Bw2 = 1, B2 = 1;     // w broadcast over x's dim 2
    bool pad_w = false, pad_s = false;  // weight rows / scale rows with a stride past the row (padded())
  };
  const std::vector<qmm> fp8_shapes = {
      {300, 17, 1, 128, 128},  // last scale column 44 wide, M below one scale row block
      {100, 33, 3, 32, 32},    // last column 4 wide, last row block 1 row
      {200, 31, 16, 64, 3},    // odd row blocks: 31 = 10 * 3 + 1
      {1030, 9, 5, 128, 128},
      {130, 67, 40, 32, 32, permuted_0213(), 1, 3},
      {257, 33, 300, 64, 3, padded()},
      {96, 19, 7, 32, 32, cont(), 1, 1, true, true},
      {64, 10, 5, 32, 3, cont(), 2, 4},
      {256, 130, 64, 128, 128},
  };
  const std::vector<qmm> mxfp4_shapes = {
      {64, 17, 1},  {100, 33, 3}, {514, 9, 16}, {62, 31, 40, 0, 0, permuted_0213(), 1, 2}, {256, 67, 130, 0, 0, padded()},
      {96, 10, 5, 0, 0, cont(), 2, 4}, {2, 5, 3}, {160, 21, 9, 0, 0, cont(), 1, 1, true, true},
  };
  const std::vector<qmm> q8_shapes = {
      {32, 17, 1}, {96, 33, 3}, {544, 9, 16}, {160, 31, 40, 0, 0, permuted_0213(), 1, 3}, {96, 67, 300, 0, 0, padded()},
      {64, 10, 5, 0, 0, cont(), 2, 4}, {160, 13, 6, 0, 0, cont(), 2, 2, true},
  };
  const std::vector<qmm> kq_shapes = {
      {256, 17, 1}, {512, 33, 3}, {1280, 9, 16}, {256, 31, 40, 0, 0, permuted_0213(), 1, 3}, {512, 67, 130, 0, 0, padded()},
      {256, 19, 300}, {256, 10, 5, 0, 0, cont(), 2, 4}, {512, 13, 6, 0, 0, cont(), 2, 2, true},
  };
  auto weight_fill = [](dtype t) {
    return t == dtype::fp8_e4m3 ? log_uniform(-10, 8.8) : t == dtype::mxfp4 ? uniform(-6.5, 6.5) : blocky();
  };
  // The weight input (index 0) and, for scaled types, its scales (index `si`): e8m0 2^-6 .. 2^6.
  auto weight_inputs = [&](dtype t, int64_t K, int64_t M, int64_t E, const qmm& s, int si, std::vector<input>* ins) {
    const bool scaled = t == dtype::fp8_e4m3 || t == dtype::mxfp4;
    const int32_t bk = t == dtype::mxfp4 ? 32 : s.sb_k, bm = t == dtype::mxfp4 ? 1 : s.sb_m;
    (*ins)[0] = scaled ? qin(t, {K, M, E}, weight_fill(t), si, bk, bm, s.pad_w ? padded() : cont())
                       : qin(t, {K, M, E}, weight_fill(t), -1, 0, 0, s.pad_w ? padded() : cont());
    if (scaled) {
      if (ins->size() <= size_t(si)) ins->resize(size_t(si) + 1);
      (*ins)[size_t(si)] = in(dtype::e8m0, {(K + bk - 1) / bk, (M + bm - 1) / bm, E}, pow2s(-6, 6), s.pad_s ? padded() : cont());
    }
  };
  auto sb_name = [](dtype t, const qmm& s) {
    return t == dtype::fp8_e4m3 ? "_sb" + std::to_string(s.sb_k) + "x" + std::to_string(s.sb_m) : std::string();
  };
  const dtype types[] = {dtype::fp8_e4m3, dtype::mxfp4, dtype::q8_0, dtype::q4_k, dtype::q3_k, dtype::q2_k};
  for (dtype t : types) {
    const std::vector<qmm>& shapes = t == dtype::fp8_e4m3 ? fp8_shapes : t == dtype::mxfp4 ? mxfp4_shapes
                                     : t == dtype::q8_0   ? q8_shapes
                                                          : kq_shapes;
    for (const qmm& s : shapes) {
      std::vector<input> ins(2);
      weight_inputs(t, s.K, s.M, s.Bw2, s, 2, &ins);
      ins[1] = in(dtype::f32, {s.K, s.N, s.B2}, uniform(-1, 1), s.x_lay);
      const std::string name = std::string(type_name(t)) + "_K" + std::to_string(s.K) + "_M" + std::to_string(s.M) + "_N" +
                               std::to_string(s.N) + sb_name(t, s) +
                               (s.B2 > 1 ? "_w" + std::to_string(s.Bw2) + "_x" + std::to_string(s.B2) : "") +
                               (std::string(s.x_lay.name) != "cont" ? std::string("_x") + s.x_lay.name : "") +
                               (s.pad_w ? "_wpadded" : "") + (s.pad_s ? "_spadded" : "");
      cs.push_back(mk(op_kind::MATMUL, name, ins, [](context& c, T in, const op_args&) { return matmul(c, in[0], in[1]); }));
    }
  }
  // NaN codes: an e4m3 NaN weight, and a NaN scale (0xFF), make the outputs that use them NaN.
  cs.push_back(mk(op_kind::MATMUL, "fp8_e4m3_nan_codes_K96_M7_N3",
                  {qin(dtype::fp8_e4m3, {96, 7}, with_specials(-3, 3, 0.01, {kNaN}), 2, 32, 2), in(dtype::f32, {96, 3}, uniform(-1, 1)),
                   in(dtype::e8m0, {3, 4}, values({1, 2, 0.5, 4, 1, kNaN, 1, 1, 2, 1, 0.25, 1}))},
                  [](context& c, T in, const op_args&) { return matmul(c, in[0], in[1]); }));
  cs.push_back(mk(op_kind::MATMUL, "mxfp4_nan_scale_K64_M5_N2",
                  {qin(dtype::mxfp4, {64, 5}, uniform(-6, 6), 2, 32, 1), in(dtype::f32, {64, 2}, uniform(-1, 1)),
                   in(dtype::e8m0, {2, 5}, values({1, 2, 0.5, 4, 1, 1, kNaN, 1, 2, 1}))},
                  [](context& c, T in, const op_args&) { return matmul(c, in[0], in[1]); }));

  // Expert matmul: several experts, repeated and unused expert ids, X1 = 1 and X1 = n_used, and a
  // prefill-sized batch where each expert gets more rows than a decode tile.
  struct qmmid {
    int64_t M, E, X1, n_used, N;
    filler ids;
    const char* tag;
  };
  const std::vector<qmmid> id_shapes = {
      {17, 4, 1, 3, 5, values({0, 3, 3, 1, 0, 3, 3, 1, 0, 0, 0, 0, 1, 3, 0}), "x1_repeats_e2_unused"},
      {33, 4, 2, 2, 7, ints(0, 3), "xn"},
      {9, 8, 6, 6, 40, ints(0, 7), "prefill"},
  };
  // K (and fp8 scale blocks) per type and shape; the "xn" experts have padded rows and planes.
  auto id_k = [](dtype t, size_t j) -> std::pair<int64_t, qmm> {
    qmm s{t == dtype::mxfp4 ? (j == 0 ? 100 : j == 1 ? 64 : 130)
          : t == dtype::q8_0 ? (j == 0 ? 96 : j == 1 ? 160 : 64)
                             : (j == 1 ? 512 : 256),
          0, 0};
    if (t == dtype::fp8_e4m3) {
      const qmm f[] = {{100, 0, 0, 32, 32}, {200, 0, 0, 64, 3}, {300, 0, 0, 128, 128}};
      s = f[j];
    }
    s.pad_w = j == 1;
    return {s.K, s};
  };
  for (dtype t : types)
    for (size_t j = 0; j < id_shapes.size(); ++j) {
      const qmmid& s = id_shapes[j];
      const auto [K, sq] = id_k(t, j);
      std::vector<input> ins(3);
      weight_inputs(t, K, s.M, s.E, sq, 3, &ins);
      ins[1] = in(dtype::f32, {K, s.X1, s.N}, uniform(-1, 1));
      ins[2] = in(dtype::i32, {s.n_used, s.N}, s.ids);
      cs.push_back(mk(op_kind::MATMUL_ID,
                      std::string(type_name(t)) + "_" + s.tag + "_K" + std::to_string(K) + "_M" + std::to_string(s.M) + "_E" +
                          std::to_string(s.E) + "_X1_" + std::to_string(s.X1) + "_used" + std::to_string(s.n_used) + "_N" +
                          std::to_string(s.N) + sb_name(t, sq) + (sq.pad_w ? "_wpadded" : ""),
                      ins, [](context& c, T in, const op_args&) { return matmul_id(c, in[0], in[1], in[2]); }));
    }
}

// ---- indexing -------------------------------------------------------------------------------------------------
void add_indexing(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto gr = [](context& c, T t, const op_args&) { return get_rows(c, t[0], t[1]); };
  for (dtype at : {dtype::f32, dtype::f16, dtype::bf16}) {
    const std::string ty = type_name(at);
    cs.push_back(mk(op_kind::GET_ROWS, ty + "_33x17_ids7", {in(at, {33, 17}, uniform(-3, 3)), in(dtype::i32, {7}, ints(0, 16))}, gr));
    cs.push_back(mk(op_kind::GET_ROWS, ty + "_1x5_ids3", {in(at, {1, 5}, uniform(-3, 3)), in(dtype::i32, {3}, values({4, 0, 4}))}, gr));
    cs.push_back(mk(op_kind::GET_ROWS, ty + "_16x9x3_ids4x3", {in(at, {16, 9, 3}, uniform(-3, 3)), in(dtype::i32, {4, 3}, ints(0, 8))}, gr));
    cs.push_back(mk(op_kind::GET_ROWS, ty + "_33x9_ids_padded", {in(at, {33, 9}, uniform(-3, 3)), in(dtype::i32, {6}, ints(0, 8), padded())}, gr));
    cs.push_back(mk(op_kind::GET_ROWS, ty + "_257x6x2_padded", {in(at, {257, 6, 2}, uniform(-3, 3), padded()), in(dtype::i32, {5, 2}, ints(0, 5))}, gr));
  }

  cs.push_back(mk(op_kind::GET_ROWS, "i32_7x5", {in(dtype::i32, {7, 5}, ints(-100000, 100000)), in(dtype::i32, {3}, ints(0, 4))}, gr));

  auto sr = [](context& c, T t, const op_args&) { return set_rows(c, t[0], t[1], t[2]); };
  for (dtype dt : {dtype::f32, dtype::f16, dtype::bf16})
    for (dtype it : {dtype::i32, dtype::i64}) {
      const std::string ty = std::string(type_name(dt)) + "_" + type_name(it);
      auto add = [&](std::string name, input dst, input src, input ids) {
        op_case c = mk(op_kind::SET_ROWS, ty + "_" + name, {dst, src, ids}, sr);
        c.writes_input = 0;
        cs.push_back(std::move(c));
      };
      add("33x17_dup_ids", in(dt, {33, 17}, uniform(-3, 3)), in(dtype::f32, {33, 7}, uniform(-3, 3)),
          in(it, {7}, values({3, 5, 3, 16, 0, 5, 9})));
      add("16x9x2", in(dt, {16, 9, 2}, uniform(-3, 3)), in(dtype::f32, {16, 4, 2}, uniform(-3, 3)),
          in(it, {4, 2}, values({8, 0, 2, 5, 1, 7, 3, 6})));
      add("dst_padded_65x12", in(dt, {65, 12}, uniform(-3, 3), padded()), in(dtype::f32, {65, 3}, uniform(-3, 3), padded()),
          in(it, {3}, values({11, 0, 6})));
      add("1x4", in(dt, {1, 4}, uniform(-3, 3)), in(dtype::f32, {1, 2}, uniform(-3, 3)), in(it, {2}, values({2, 2})));
    }

  auto ga = [](context& c, T t, const op_args&) { return gather(c, t[0], t[1]); };
  cs.push_back(mk(op_kind::GATHER, "17x5x3_k4", {in(dtype::f32, {17, 5, 3}, uniform(-3, 3)), in(dtype::i32, {4, 5, 3}, ints(0, 16))}, ga));
  cs.push_back(mk(op_kind::GATHER, "1x3_k6", {in(dtype::f32, {1, 3}, uniform(-3, 3)), in(dtype::i32, {6, 3}, ints(0, 0))}, ga));
  cs.push_back(mk(op_kind::GATHER, "33x4x2x2_k40", {in(dtype::f32, {33, 4, 2, 2}, uniform(-3, 3)), in(dtype::i32, {40, 4, 2, 2}, ints(0, 32))}, ga));
  cs.push_back(mk(op_kind::GATHER, "17x5x3_transposed", {in(dtype::f32, {17, 5, 3}, uniform(-3, 3), transposed()), in(dtype::i32, {4, 5, 3}, ints(0, 16))}, ga));
  cs.push_back(mk(op_kind::GATHER, "257x3_padded", {in(dtype::f32, {257, 3}, uniform(-3, 3), padded()), in(dtype::i32, {9, 3}, ints(0, 256), padded())}, ga));

  // rows_mask: rows = n_quant, ratio = k; positions before, at and past row boundaries.
  auto rm = [](context& c, T t, const op_args& a) { return rows_mask(c, t[0], a.n_quant, a.k); };
  auto add_rm = [&](std::string name, input pos, int64_t rows, int ratio) {
    op_args a;
    a.n_quant = rows;
    a.k = ratio;
    cs.push_back(mk(op_kind::ROWS_MASK, name + "_r" + std::to_string(rows) + "_ratio" + std::to_string(ratio), {pos}, rm, a));
  };
  add_rm("decode", in(dtype::i32, {1}, values({131})), 40, 4);
  add_rm("T9", in(dtype::i32, {9}, values({0, 1, 2, 3, 4, 7, 8, 126, 127})), 33, 4);
  add_rm("T300", in(dtype::i32, {300}, ints(0, 70000)), 600, 128);
  add_rm("ratio1", in(dtype::i32, {5}, ints(0, 10)), 12, 1);

  // top_k: exact ties go to the lower index; NaN ranks below every number.
  auto tk = [](context& c, T t, const op_args& a) { return top_k(c, t[0], a.k); };
  auto add_tk = [&](std::string name, input i, int k) {
    op_args a;
    a.k = k;
    cs.push_back(mk(op_kind::TOP_K, name + "_k" + std::to_string(k), {i}, tk, a));
  };
  add_tk("1x1", in(dtype::f32, {1, 1}, uniform(-1, 1)), 1);
  add_tk("7x3", in(dtype::f32, {7, 3}, uniform(-1, 1)), 3);
  add_tk("257x2", in(dtype::f32, {257, 2}, uniform(-1, 1)), 17);
  add_tk("33x2_full", in(dtype::f32, {33, 2}, uniform(-1, 1)), 33);
  add_tk("ties3_64x4", in(dtype::f32, {64, 4}, ties(3)), 10);
  add_tk("ties2_257x3", in(dtype::f32, {257, 3}, ties(2)), 100);
  add_tk("all_equal_33x2", in(dtype::f32, {33, 2}, values({1.5})), 7);
  add_tk("relu_like_ties_1024x2", in(dtype::f32, {1024, 2}, with_specials(0, 4, 0.5, {0.0})), 256);
  add_tk("nan_33x3", in(dtype::f32, {33, 3}, with_specials(-1, 1, 0.3, {kNaN, -kInf, kInf})), 20);
  add_tk("mostly_nan_17x2", in(dtype::f32, {17, 2}, with_specials(-1, 1, 0.8, {kNaN})), 12);
  add_tk("signed_zero_ties_33x2", in(dtype::f32, {33, 2}, values({0.0, -0.0, 0.0, -0.0, -0.0, 1.0, -1.0})), 9);
  add_tk("transposed_65x3", in(dtype::f32, {65, 3}, ties(5), transposed()), 9);
  add_tk("padded_65x3x2", in(dtype::f32, {65, 3, 2}, uniform(-1, 1), padded()), 4);

  // argsort: stable in both directions (ties keep index order).
  auto as = [](context& c, T t, const op_args& a) { return argsort(c, t[0], a.descending); };
  for (bool desc : {false, true}) {
    auto add = [&](std::string name, input i) {
      op_args a;
      a.descending = desc;
      cs.push_back(mk(op_kind::ARGSORT, (desc ? "desc_" : "asc_") + name, {i}, as, a));
    };
    add("1", in(dtype::f32, {1}, uniform(-1, 1)));
    add("7x3", in(dtype::f32, {7, 3}, uniform(-1, 1)));
    add("ties4_33x2", in(dtype::f32, {33, 2}, ties(4)));
    add("257x2", in(dtype::f32, {257, 2}, uniform(-1, 1)));
    add("ties_inf_65x2", in(dtype::f32, {65, 2}, with_specials(-2, 2, 0.4, {0.0, 1.0, -kInf, kInf})));
    add("transposed_17x5", in(dtype::f32, {17, 5}, ties(3), transposed()));
    add("signed_zero_ties_17x2", in(dtype::f32, {17, 2}, values({0.0, -0.0, 0.5, -0.0, 0.0, -0.5})));
    add("padded_33x3x2", in(dtype::f32, {33, 3, 2}, uniform(-1, 1), padded()));
  }
}

// ---- concat, copies, conversions ----------------------------------------------------------------------------------
void add_copies(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto cc = [](context& c, T t, const op_args& a) { return concat(c, t[0], t[1], a.dim); };
  auto add_cc = [&](dtype ty, int dim, layout la = cont(), layout lb = cont()) {
    int64_t na[4] = {7, 3, 2, 2}, nb[4] = {7, 3, 2, 2};
    nb[dim] = 5;
    const filler f = ty == dtype::i32 ? ints(-1000, 1000) : uniform(-3, 3);
    input a = in(ty, {na[0], na[1], na[2], na[3]}, f, la), b = in(ty, {nb[0], nb[1], nb[2], nb[3]}, f, lb);
    op_args args;
    args.dim = dim;
    cs.push_back(mk(op_kind::CONCAT, std::string(type_name(ty)) + "_dim" + std::to_string(dim) + lay_name(a) + lay_name(b), {a, b}, cc, args));
  };
  for (int d = 0; d < 4; ++d) add_cc(dtype::f32, d);
  add_cc(dtype::f16, 0);
  add_cc(dtype::f16, 2);
  add_cc(dtype::bf16, 1);
  add_cc(dtype::i32, 0);
  add_cc(dtype::i32, 3);
  add_cc(dtype::f32, 0, transposed(), padded());
  add_cc(dtype::f32, 1, padded(), permuted_0213());
  add_cc(dtype::f16, 3, padded_transposed(), cont());
  {
    op_args args;
    args.dim = 0;
    cs.push_back(mk(op_kind::CONCAT, "f32_dim0_1_plus_257", {in(dtype::f32, {1, 3}, uniform(-1, 1)), in(dtype::f32, {257, 3}, uniform(-1, 1))}, cc, args));
  }

  // cpy between every pair of f32/f16/bf16, into contiguous and strided destinations.
  auto cp = [](context& c, T t, const op_args&) { return cpy(c, t[0], t[1]); };
  const dtype floats[] = {dtype::f32, dtype::f16, dtype::bf16};
  for (dtype st : floats)
    for (dtype dt : floats) {
      const std::string ty = std::string(type_name(st)) + "_to_" + type_name(dt);
      auto add = [&](std::string name, input src, input dst) {
        op_case c = mk(op_kind::CPY, ty + "_" + name, {src, dst}, cp);
        c.writes_input = 1;
        cs.push_back(std::move(c));
      };
      add("33x5x2", in(st, {33, 5, 2}, uniform(-100, 100)), in(dt, {33, 5, 2}, uniform(-1, 1)));
      add("transposed_into_padded", in(st, {17, 6, 3}, uniform(-100, 100), transposed()), in(dt, {17, 6, 3}, uniform(-1, 1), padded()));
    }
  {
    auto add = [&](std::string name, input src, input dst) {
      op_case c = mk(op_kind::CPY, name, {src, dst}, cp);
      c.writes_input = 1;
      cs.push_back(std::move(c));
    };
    add("f32_to_f16_into_transposed", in(dtype::f32, {33, 5, 2}, uniform(-10, 10)), in(dtype::f16, {33, 5, 2}, uniform(-1, 1), transposed()));
    add("f32_to_bf16_into_padded_transposed", in(dtype::f32, {9, 4, 3, 2}, uniform(-10, 10), permuted_0213()), in(dtype::bf16, {9, 4, 3, 2}, uniform(-1, 1), padded_transposed()));
    add("f32_reshaping_12x5_to_20x3", in(dtype::f32, {12, 5}, uniform(-10, 10)), in(dtype::f32, {20, 3}, uniform(-1, 1)));
    add("f16_reshaping_60_to_3x4x5_padded", in(dtype::f16, {60}, uniform(-10, 10)), in(dtype::f32, {3, 4, 5}, uniform(-1, 1), padded()));
    add("f32_1", in(dtype::f32, {1}, uniform(-1, 1)), in(dtype::f16, {1}, uniform(-1, 1)));
    add("i32_transposed_into_padded", in(dtype::i32, {17, 6}, ints(-1 << 30, 1 << 30), transposed()), in(dtype::i32, {17, 6}, ints(0, 9), padded()));
  }

  // cast, with RNE ties, overflow to inf, subnormals, signed zero, inf and NaN.
  auto ca = [](context& c, T t, const op_args& a) { return cast(c, t[0], a.cast_type); };
  const std::vector<double> specials = {
      1 + 0x1p-11, 1 + 3 * 0x1p-11, 1 + 0x1p-8, 1 + 3 * 0x1p-8, -(1 + 0x1p-11), 65504, 65519, 65520, -70000, 1e-8,
      3e-5, 0x1p-24, 0x1p-25, 0x1.8p-25, -0.0, kInf, -kInf, kNaN, 3.0e38, 1e-30, 0.1, -2.5, 1e6, 0x1.fffffep127};
  struct cast_case {
    dtype from, to;
    filler f;
    layout l;
  };
  for (const cast_case& k : {cast_case{dtype::f32, dtype::f16, values(specials), cont()},
                             cast_case{dtype::f32, dtype::bf16, values(specials), cont()},
                             cast_case{dtype::f16, dtype::f32, values(specials), cont()},
                             cast_case{dtype::bf16, dtype::f32, values(specials), cont()},
                             cast_case{dtype::f16, dtype::bf16, values(specials), cont()},
                             cast_case{dtype::bf16, dtype::f16, values(specials), cont()},
                             cast_case{dtype::f32, dtype::f16, uniform(-1000, 1000), transposed()},
                             cast_case{dtype::f32, dtype::bf16, uniform(-1000, 1000), padded()},
                             cast_case{dtype::f32, dtype::f32, uniform(-1000, 1000), padded_transposed()},
                             cast_case{dtype::f16, dtype::f16, uniform(-1000, 1000), padded()},
                             cast_case{dtype::bf16, dtype::f32, uniform(-1000, 1000), permuted_0213()}}) {
    op_args a;
    a.cast_type = k.to;
    const int64_t n0 = k.l.perm[0] == 0 && !k.l.pad ? 24 : 33;
    input i = in(k.from, {n0, 5, 2}, k.f, k.l);
    op_case c = mk(op_kind::CPY, std::string("cast_") + type_name(k.from) + "_to_" + type_name(k.to) + "_" + shape_name(i) + lay_name(i), {i}, ca, a);
    c.ref_override = ref_cast;
    cs.push_back(std::move(c));
  }

  // hadamard over dim 0, n = 1, 2, 128, 256, with scale.
  auto hd = [](context& c, T t, const op_args& a) { return hadamard(c, t[0], a.f0); };
  auto add_hd = [&](input i, float s) {
    op_args a;
    a.f0 = s;
    cs.push_back(mk(op_kind::HADAMARD, shape_name(i) + lay_name(i) + "_scale" + std::to_string(s), {i}, hd, a));
  };
  add_hd(in(dtype::f32, {1, 3}, uniform(-2, 2)), 1.0f);
  add_hd(in(dtype::f32, {2, 5}, uniform(-2, 2)), 0.5f);
  add_hd(in(dtype::f32, {2, 3, 2}, uniform(-2, 2), transposed()), 1.0f);
  add_hd(in(dtype::f32, {128, 3}, uniform(-2, 2)), float(1 / std::sqrt(128.0)));
  add_hd(in(dtype::f32, {128, 2, 3}, uniform(-2, 2), padded()), 1.0f);
  add_hd(in(dtype::f32, {256, 4}, uniform(-2, 2)), 0.0625f);
  add_hd(in(dtype::f32, {256, 2, 1, 2}, uniform(-2, 2), permuted_0213()), -0.75f);
  add_hd(in(dtype::f32, {64, 5}, uniform(-2, 2)), 0.125f);
}

// ---- views as ops: the result aliases the input; read through the view's own strides ---------------------------------
void add_views(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto view_case = [&](std::string name, input a, op_args args, build_fn b) {
    cs.push_back(mk(op_kind::VIEW, std::move(name), {a}, std::move(b), args));
  };
  {
    op_args a;
    a.view_ne[0] = 17;
    a.view_ne[1] = 4;
    a.view_nb[0] = 4;
    a.view_nb[1] = 40 * 4;
    a.view_offset = 3 * 4 + 40 * 4;
    view_case("2d_40x6_rows", in(dtype::f32, {40, 6}, uniform(-1, 1)), a,
              [](context& c, T t, const op_args& a) { return view_2d(c, t[0], a.view_ne[0], a.view_ne[1], a.view_nb[1], a.view_offset); });
  }
  {
    op_args a;
    a.view_ne[0] = 13;
    a.view_nb[0] = 2;
    a.view_offset = 7 * 2;
    view_case("1d_f16_offset", in(dtype::f16, {33, 2}, uniform(-1, 1)), a,
              [](context& c, T t, const op_args& a) { return view_1d(c, t[0], a.view_ne[0], a.view_offset); });
  }
  {
    op_args a;
    a.view_ne[0] = 5;
    a.view_ne[1] = 3;
    a.view_ne[2] = 2;
    a.view_nb[0] = 4;
    a.view_nb[1] = 9 * 4;
    a.view_nb[2] = 9 * 4 * 4;
    a.view_offset = 4;
    view_case("3d_9x4x3", in(dtype::f32, {9, 4, 3}, uniform(-1, 1)), a, [](context& c, T t, const op_args& a) {
      return view_3d(c, t[0], a.view_ne[0], a.view_ne[1], a.view_ne[2], a.view_nb[1], a.view_nb[2], a.view_offset);
    });
  }
  {
    op_args a;
    a.view_ne[0] = 3;
    a.view_ne[1] = 4;
    a.view_ne[2] = 2;
    a.view_ne[3] = 2;
    a.view_nb[0] = 4;  // view() takes the strides of dims 1..3: dim 0 is packed
    a.view_nb[1] = 8 * 4;
    a.view_nb[2] = 8 * 5 * 4 * 2;  // every other plane
    a.view_nb[3] = 8 * 5 * 4 * 2 * 2 + 4 * 8;
    a.view_offset = 4;
    view_case("4d_strided_8x5x4x3", in(dtype::f32, {8, 5, 4, 3}, uniform(-1, 1)), a, [](context& c, T t, const op_args& a) {
      return view(c, t[0], 4, a.view_ne, a.view_nb + 1, a.view_offset);
    });
  }
  {
    op_args a;
    a.view_ne[0] = 6;
    a.view_ne[1] = 10;
    cs.push_back(mk(op_kind::RESHAPE, "12x5_to_6x10", {in(dtype::f32, {12, 5}, uniform(-1, 1))}, [](context& c, T t, const op_args&) { return reshape(c, t[0], {6, 10}); }, a));
    a.view_ne[0] = 3;
    a.view_ne[1] = 4;
    a.view_ne[2] = 5;
    cs.push_back(mk(op_kind::RESHAPE, "60_to_3x4x5", {in(dtype::bf16, {60}, uniform(-1, 1))}, [](context& c, T t, const op_args&) { return reshape(c, t[0], {3, 4, 5}); }, a));
    a.view_ne[0] = 7;
    a.view_ne[1] = 1;
    a.view_ne[2] = 1;
    cs.push_back(mk(op_kind::RESHAPE, "7x1x1x1_to_7", {in(dtype::i32, {1, 7}, ints(-5, 5))}, [](context& c, T t, const op_args&) { return reshape(c, t[0], {7}); }, a));
  }
  auto perm_case = [&](int a0, int a1, int a2, int a3, layout l) {
    op_args a;
    a.axes[0] = a0;
    a.axes[1] = a1;
    a.axes[2] = a2;
    a.axes[3] = a3;
    input i = in(dtype::f32, {7, 5, 3, 2}, uniform(-1, 1), l);
    cs.push_back(mk(op_kind::PERMUTE,
                    "axes" + std::to_string(a0) + std::to_string(a1) + std::to_string(a2) + std::to_string(a3) + lay_name(i), {i},
                    [](context& c, T t, const op_args& a) { return permute(c, t[0], a.axes[0], a.axes[1], a.axes[2], a.axes[3]); }, a));
  };
  perm_case(1, 0, 2, 3, cont());
  perm_case(0, 2, 1, 3, cont());
  perm_case(3, 2, 1, 0, cont());
  perm_case(2, 0, 3, 1, cont());
  perm_case(1, 2, 0, 3, padded());
  {
    op_args a;
    a.axes[0] = 1;
    a.axes[1] = 0;
    cs.push_back(mk(op_kind::PERMUTE, "transpose_17x4", {in(dtype::f16, {17, 4}, uniform(-1, 1))}, [](context& c, T t, const op_args&) { return transpose(c, t[0]); }, a));
  }
}

// ---- custom: a user function y = 2a + b over rows split by (ith, nth) -------------------------------------------------
struct custom_state {
  std::atomic<int> calls[256];
  std::atomic<int> nth_seen{0};
  std::atomic<bool> nth_varies{false};
  int max_threads = 0;
  void reset() {
    for (auto& c : calls) c = 0;
    nth_seen = 0;
    nth_varies = false;
  }
  std::string check() const {
    const int nth = nth_seen.load();
    if (nth <= 0) return "custom fn never ran";
    if (nth_varies) return "custom fn saw different nth values";
    if (max_threads > 0 && nth > max_threads) return "custom fn ran with nth " + std::to_string(nth) + " > max_threads " + std::to_string(max_threads);
    for (int i = 0; i < 256; ++i) {
      const int want = i < nth ? 1 : 0;
      if (calls[i] != want)
        return "custom fn called " + std::to_string(calls[i].load()) + " times for ith " + std::to_string(i) + " (nth " + std::to_string(nth) + ")";
    }
    return "";
  }
};

void custom_axpb(tensor* dst, const tensor* const* src, int n_src, int ith, int nth, void* user) {
  auto* st = static_cast<custom_state*>(user);
  if (ith >= 0 && ith < 256) st->calls[ith]++;
  int expected = 0;
  if (!st->nth_seen.compare_exchange_strong(expected, nth) && expected != nth) st->nth_varies = true;
  if (n_src != 2) return;
  const tensor *a = src[0], *b = src[1];
  for (int64_t r = ith; r < dst->nrows(); r += nth) {
    const int64_t i1 = r % dst->ne[1], i2 = r / dst->ne[1] % dst->ne[2], i3 = r / (dst->ne[1] * dst->ne[2]);
    for (int64_t i0 = 0; i0 < dst->ne[0]; ++i0) {
      auto at = [&](const tensor* t) {
        return reinterpret_cast<float*>(static_cast<char*>(t->data) + i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3]);
      };
      *at(dst) = 2.0f * *at(a) + *at(b);
    }
  }
}

void ref_axpb(const ref_in& in, ref_out* o) {
  const darray &a = in.src[0], &b = in.src[1];
  o->shape(dtype::f32, a.ne);
  for (int64_t i = 0; i < a.n(); ++i) {
    o->v[size_t(i)] = 2 * a.v[size_t(i)] + b.v[size_t(i)];
    o->tol[size_t(i)] = 0x1p-24 * std::fabs(o->v[size_t(i)]);  // 2a is exact; one rounded add
  }
}

void add_custom(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto add = [&](std::string name, input a, input b, int max_threads) {
    auto st = std::make_shared<custom_state>();
    st->max_threads = max_threads;
    op_args args;
    args.custom_ref = ref_axpb;
    op_case c = mk(op_kind::CUSTOM, std::move(name), {a, b},
                   [st](context& c, T t, const op_args&) {
                     st->reset();
                     custom_params p;
                     p.fn = custom_axpb;
                     p.user = st.get();
                     p.max_threads = st->max_threads;
                     return custom(c, dtype::f32, {t[0]->ne[0], t[0]->ne[1], t[0]->ne[2], t[0]->ne[3]}, {t[0], t[1]}, p);
                   },
                   args);
    c.post_check = [st] { return st->check(); };
    cs.push_back(std::move(c));
  };
  add("7x5", in(dtype::f32, {7, 5}, uniform(-1, 1)), in(dtype::f32, {7, 5}, uniform(-1, 1)), 0);
  add("33x17x2", in(dtype::f32, {33, 17, 2}, uniform(-1, 1)), in(dtype::f32, {33, 17, 2}, uniform(-1, 1)), 0);
  add("33x17_max_threads1", in(dtype::f32, {33, 17}, uniform(-1, 1)), in(dtype::f32, {33, 17}, uniform(-1, 1)), 1);
  add("1x1_max_threads64", in(dtype::f32, {1}, uniform(-1, 1)), in(dtype::f32, {1}, uniform(-1, 1)), 64);
  add("transposed_padded_17x9", in(dtype::f32, {17, 9}, uniform(-1, 1), transposed()), in(dtype::f32, {17, 9}, uniform(-1, 1), padded()), 0);
}


// ---- sweeps: lengths around the vector widths (8, 16 and 32 lanes, 64-byte lines), starting at
// misaligned offsets, so every kernel's main loop, tail and masked paths meet the reference --------
const int64_t kSweep[] = {2, 3, 4, 5, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 127, 128, 129};

void add_sweeps(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto lay = [](int64_t n) { return padded(1 + n % 3); };
  auto tag = [](int64_t n) { return "sweep_n" + std::to_string(n); };
  struct un {
    op_kind op;
    filler f;
    build_fn b;
    float f0 = 1.5f, f1 = 0.25f;  // scale: y = 1.5a + 0.25; clamp: its bounds
  };
  op_args sc;
  sc.f0 = 1.5f;
  sc.f1 = 0.25f;
  sc.dim = 0;
  const std::vector<un> unaries = {
      {op_kind::SILU, uniform(-20, 20), [](context& c, T t, const op_args&) { return silu(c, t[0]); }},
      {op_kind::SIGMOID, uniform(-20, 20), [](context& c, T t, const op_args&) { return sigmoid(c, t[0]); }},
      {op_kind::SOFTPLUS, uniform(-30, 30), [](context& c, T t, const op_args&) { return softplus(c, t[0]); }},
      {op_kind::EXP, uniform(-30, 30), [](context& c, T t, const op_args&) { return v4::exp(c, t[0]); }},
      {op_kind::SQRT, uniform(0, 100), [](context& c, T t, const op_args&) { return v4::sqrt(c, t[0]); }},
      {op_kind::RELU, uniform(-1, 1), [](context& c, T t, const op_args&) { return relu(c, t[0]); }},
      {op_kind::SCALE, uniform(-4, 4), [](context& c, T t, const op_args& a) { return scale(c, t[0], a.f0, a.f1); }},
      {op_kind::CLAMP, with_specials(-2, 2, 0.1, {kNaN}), [](context& c, T t, const op_args& a) { return clamp(c, t[0], a.f0, a.f1); }, -0.5f, 0.5f},
      {op_kind::SUM, uniform(-2, 2), [](context& c, T t, const op_args&) { return sum(c, t[0], 0); }},
      {op_kind::MAX, uniform(-3, -1), [](context& c, T t, const op_args&) { return max(c, t[0], 0); }},
      {op_kind::RMS_NORM, uniform(-2, 2), [](context& c, T t, const op_args& a) { return rms_norm(c, t[0], a.f0); }, 1e-6f},
      {op_kind::ADD, uniform(-4, 4), [](context& c, T t, const op_args&) { return add(c, t[0], t[1]); }},
      {op_kind::SUB, uniform(-4, 4), [](context& c, T t, const op_args&) { return sub(c, t[0], t[1]); }},
      {op_kind::MUL, uniform(-4, 4), [](context& c, T t, const op_args&) { return mul(c, t[0], t[1]); }},
      {op_kind::DIV, signed_range(0.25, 4), [](context& c, T t, const op_args&) { return div(c, t[0], t[1]); }},
  };
  for (const un& u : unaries)
    for (int64_t n : kSweep) {
      std::vector<input> ins = {in(dtype::f32, {n, 3}, u.f, lay(n))};
      if (u.op == op_kind::ADD || u.op == op_kind::SUB || u.op == op_kind::MUL || u.op == op_kind::DIV)
        ins.push_back(in(dtype::f32, {n, n % 2 ? 1 : 3}, u.f, padded(n % 4)));  // odd n: b broadcast over rows
      op_args a = sc;
      a.f0 = u.f0;
      a.f1 = u.f1;
      cs.push_back(mk(u.op, tag(n), ins, u.b, a));
    }

  // The fused ops with rows across the vector widths: packed at misaligned offsets (the CUDA
  // kernels' float4 paths need 16-byte rows) and padded.
  for (int64_t n : kSweep) {
    op_args e;
    e.f0 = 1e-6f;
    cs.push_back(mk(op_kind::RMS_NORM_W, tag(n), {in(dtype::f32, {n, 3}, uniform(-2, 2), lay(n)), in(dtype::f32, {n}, uniform(-2, 2), padded(n % 4))},
                    [](context& c, T t, const op_args& a) { return rms_norm_w(c, t[0], t[1], a.f0); }, e));
    op_args sw;
    sw.f0 = 3.0f;
    sw.has_wts = true;
    cs.push_back(mk(op_kind::SWIGLU, tag(n),
                    {in(dtype::f32, {n, 3}, uniform(-5, 5), lay(n)), in(dtype::f32, {n, 3}, uniform(-5, 5), padded(n % 4)),
                     in(dtype::f32, {1, 3}, uniform(0, 1))},
                    [](context& c, T t, const op_args& a) { return swiglu(c, t[0], t[1], a.f0, t[2]); }, sw));
    cs.push_back(mk(op_kind::HC_SUM, tag(n), {in(dtype::f32, {n, 4, 2}, uniform(-3, 3), lay(n)), in(dtype::f32, {1, 4, 2}, uniform(0, 2))},
                    [](context& c, T t, const op_args&) { return hc_sum(c, t[0], t[1]); }));
    cs.push_back(mk(op_kind::HC_POST, tag(n),
                    {in(dtype::f32, {n, 2}, uniform(-3, 3), padded(n % 4)), in(dtype::f32, {n, 4, 2}, uniform(-3, 3), lay(n)),
                     in(dtype::f32, {5, 4, 2}, uniform(0, 2), padded())},
                    [](context& c, T t, const op_args&) { return hc_post(c, t[0], t[1], t[2]); }));
  }
  // softmax with mask and sink; rope with n_rot across the lane widths; hadamard at every n.
  for (int64_t n : kSweep) {
    op_args a;
    a.softmax_scale = 0.5f;
    a.has_mask = a.has_sink = true;
    cs.push_back(mk(op_kind::SOFTMAX, tag(n),
                    {in(dtype::f32, {n, 3, 2}, uniform(-8, 8), lay(n)), in(dtype::f32, {n, 3}, mask_fill(0.25)),
                     in(dtype::f32, {2}, uniform(-2, 2))},
                    [](context& c, T t, const op_args& a) {
                      softmax_params p;
                      p.scale = a.softmax_scale;
                      p.mask = t[1];
                      p.sink = t[2];
                      return softmax(c, t[0], p);
                    },
                    a));
  }
  for (int n_rot : {2, 4, 6, 8, 14, 16, 18, 30, 32, 34, 62, 64, 66, 126, 128})
    for (bool il : {true, false}) {
      op_args a;
      a.rope = rp(n_rot, il);
      cs.push_back(mk(op_kind::ROPE, std::string("sweep_") + (il ? "interleaved" : "halves") + "_rot" + std::to_string(n_rot),
                      {in(dtype::f32, {n_rot + 2, 3, 4}, uniform(-2, 2), padded(1 + n_rot % 3)), in(dtype::i32, {4}, ints(0, 2000))},
                      [](context& c, T t, const op_args& a) { return rope(c, t[0], t[1], a.rope); }, a));
    }
  for (int64_t n : {4, 8, 16, 32, 64, 512}) {
    op_args a;
    a.f0 = float(1 / std::sqrt(double(n)));
    cs.push_back(mk(op_kind::HADAMARD, tag(n), {in(dtype::f32, {n, 3}, uniform(-2, 2), lay(n))},
                    [](context& c, T t, const op_args& a) { return hadamard(c, t[0], a.f0); }, a));
  }

  // matmul: K across the lane widths and the 32-wide bf16 pairs, M and N across tile edges.
  const int64_t Ms[] = {1, 15, 16, 17, 31, 33};
  const int64_t Ns[] = {1, 2, 4, 7, 16, 17, 31, 32, 33, 48};
  int pick = 0;
  for (dtype wt : {dtype::f32, dtype::f16, dtype::bf16})
    for (int64_t K : {2, 3, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129})
      for (int j = 0; j < 3; ++j, ++pick) {
        const int64_t M = Ms[pick % 6], N = Ns[(pick * 7 + j) % 10];
        cs.push_back(mk(op_kind::MATMUL,
                        std::string("sweep_") + type_name(wt) + "_K" + std::to_string(K) + "_M" + std::to_string(M) + "_N" + std::to_string(N),
                        {in(wt, {K, M}, uniform(-1, 1)), in(dtype::f32, {K, N}, uniform(-1, 1), padded(1 + K % 3))},
                        [](context& c, T t, const op_args&) { return matmul(c, t[0], t[1]); }));
      }

  // conversions and row moves at every length, from and to each 16-bit type.
  for (int64_t n : kSweep) {
    for (auto [st, dt] : {std::pair{dtype::f32, dtype::f16}, std::pair{dtype::f32, dtype::bf16}, std::pair{dtype::f16, dtype::f32},
                          std::pair{dtype::bf16, dtype::f32}}) {
      op_case c = mk(op_kind::CPY, tag(n) + "_" + type_name(st) + "_to_" + type_name(dt),
                     {in(st, {n, 3}, uniform(-300, 300), lay(n)), in(dt, {n, 3}, uniform(-1, 1), padded(n % 4))},
                     [](context& c, T t, const op_args&) { return cpy(c, t[0], t[1]); });
      c.writes_input = 1;
      cs.push_back(std::move(c));
    }
    for (dtype at : {dtype::f16, dtype::bf16}) {
      cs.push_back(mk(op_kind::GET_ROWS, tag(n) + "_" + type_name(at), {in(at, {n, 5}, uniform(-3, 3), lay(n)), in(dtype::i32, {4}, ints(0, 4))},
                      [](context& c, T t, const op_args&) { return get_rows(c, t[0], t[1]); }));
      op_case c = mk(op_kind::SET_ROWS, tag(n) + "_" + type_name(at),
                     {in(at, {n, 5}, uniform(-3, 3), lay(n)), in(dtype::f32, {n, 2}, uniform(-3, 3)), in(dtype::i32, {2}, values({4, 1}))},
                     [](context& c, T t, const op_args&) { return set_rows(c, t[0], t[1], t[2]); });
      c.writes_input = 0;
      cs.push_back(std::move(c));
    }
    op_args a;
    a.descending = n % 2;
    a.k = int(std::min<int64_t>(n, 1 + n / 3));
    cs.push_back(mk(op_kind::ARGSORT, tag(n), {in(dtype::f32, {n, 2}, ties(int(n / 4 + 1)), lay(n))},
                    [](context& c, T t, const op_args& a) { return argsort(c, t[0], a.descending); }, a));
    cs.push_back(mk(op_kind::TOP_K, tag(n), {in(dtype::f32, {n, 2}, ties(int(n / 4 + 1)), lay(n))},
                    [](context& c, T t, const op_args& a) { return top_k(c, t[0], a.k); }, a));
  }
  // the indexer's shape: top 512 of a few thousand scores, many of them tied at 0 (sums of ReLUs).
  {
    op_args a;
    a.k = 512;
    cs.push_back(mk(op_kind::TOP_K, "indexer_4099x3_k512", {in(dtype::f32, {4099, 3}, with_specials(0, 3, 0.6, {0.0}))},
                    [](context& c, T t, const op_args& a) { return top_k(c, t[0], a.k); }, a));
    a.descending = true;
    cs.push_back(mk(op_kind::ARGSORT, "large_ties_2048x2", {in(dtype::f32, {2048, 2}, ties(50))},
                    [](context& c, T t, const op_args& a) { return argsort(c, t[0], a.descending); }, a));
  }
}

// ---- the MoE router: route_topk, route_weights ---------------------------------------------------------------
// The model's shapes (256 or 384 experts, top 6; decode and prefill rows), k up to E, exact ties
// (integer logits, equal biases: the lower expert first), specials (NaN ranks last, +inf first,
// -inf scores 0), values past softplus's threshold, strided logits, ids and bias.
void add_router(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto tk = [](context& c, T t, const op_args& a) { return route_topk(c, t[0], a.has_bias ? t[1] : nullptr, a.k); };
  auto add_tk = [&](std::string name, input logits, int k, const input* bias) {
    op_args a;
    a.k = k;
    a.has_bias = bias != nullptr;
    std::vector<input> ins = {logits};
    if (bias) ins.push_back(*bias);
    cs.push_back(mk(op_kind::ROUTE_TOPK, std::move(name), ins, tk, a));
  };
  const filler logit = uniform(-6, 6);
  const input b256 = in(dtype::f32, {256}, uniform(-0.3, 0.3));
  const input b384 = in(dtype::f32, {384}, uniform(-0.3, 0.3));
  add_tk("flash_256x1_k6_bias", in(dtype::f32, {256, 1}, logit), 6, &b256);
  add_tk("flash_256x7_k6_bias", in(dtype::f32, {256, 7}, logit), 6, &b256);
  add_tk("prefill_256x130_k6_bias", in(dtype::f32, {256, 130}, logit), 6, &b256);
  add_tk("pro_384x3_k6_bias", in(dtype::f32, {384, 3}, logit), 6, &b384);
  add_tk("256x4_k8_nobias", in(dtype::f32, {256, 4}, logit), 8, nullptr);
  add_tk("64x5_k64_all", in(dtype::f32, {64, 5}, logit), 64, nullptr);
  add_tk("1x3_k1", in(dtype::f32, {1, 3}, logit), 1, nullptr);
  const input b33 = in(dtype::f32, {33}, uniform(-1, 1), padded(2));
  add_tk("33x6x2_k5_transposed_bias_padded", in(dtype::f32, {33, 6, 2}, logit, transposed()), 5, &b33);
  add_tk("70x4_k9_padded", in(dtype::f32, {70, 4}, logit, padded()), 9, nullptr);
  const input b_equal = in(dtype::f32, {64}, values({0.25}));
  add_tk("ties_64x4_k10_equal_bias", in(dtype::f32, {64, 4}, ties(8)), 10, &b_equal);
  const input b_ties = in(dtype::f32, {64}, ties(2));
  add_tk("ties_64x4_k20_tied_bias", in(dtype::f32, {64, 4}, ties(6)), 20, &b_ties);
  const input b96 = in(dtype::f32, {96}, uniform(-0.5, 0.5));
  add_tk("specials_96x4_k12_bias", in(dtype::f32, {96, 4}, with_specials(-30, 30, 0.15, {kNaN, kInf, -kInf})), 12, &b96);
  add_tk("all_nan_16x2_k4", in(dtype::f32, {16, 2}, values({kNaN})), 4, nullptr);
  // Around softplus's threshold (20), far past it, signed zeros, tiny and hugely negative logits.
  // k = 40 reaches the near-ties the reference marks ambiguous (ref_ROUTE_TOPK): +-1e-30 and +-0
  // (scores sqrt(ln 2) apart by 1e-31), and -20, -100, -1e30 (scores within softplus's absolute
  // bound of 0).
  add_tk("adversarial_48x2_k40", in(dtype::f32, {48, 2}, values({-1e30, 1e30, -100, 100, 25, 19.99, 20.01, -20, 1e-30, -1e-30, 0.0, -0.0})),
         40, nullptr);
  add_tk("large_4096x2_k32", in(dtype::f32, {4096, 2}, logit), 32, nullptr);
  add_tk("past_cuda_cap_5000x1_k6", in(dtype::f32, {5000, 1}, logit), 6, nullptr);  // CUDA: stays on the CPU

  auto rw = [](context& c, T t, const op_args& a) { return route_weights(c, t[0], t[1], a.normalize, a.f0); };
  auto add_rw = [&](std::string name, input logits, input ids, bool normalize, float scale) {
    op_args a;
    a.normalize = normalize;
    a.f0 = scale;
    cs.push_back(mk(op_kind::ROUTE_WEIGHTS, std::move(name), {logits, ids}, rw, a));
  };
  add_rw("flash_256x1_k6_norm", in(dtype::f32, {256, 1}, logit), in(dtype::i32, {6, 1}, ints(0, 255)), true, 1.5f);
  add_rw("flash_256x9_k6_norm", in(dtype::f32, {256, 9}, logit), in(dtype::i32, {6, 9}, ints(0, 255)), true, 1.5f);
  add_rw("pro_384x130_k6_norm", in(dtype::f32, {384, 130}, logit), in(dtype::i32, {6, 130}, ints(0, 383)), true, 2.5f);
  add_rw("256x4_k8_plain", in(dtype::f32, {256, 4}, logit), in(dtype::i32, {8, 4}, ints(0, 255)), false, 2.5f);
  add_rw("64x3_k1_norm", in(dtype::f32, {64, 3}, logit), in(dtype::i32, {1, 3}, ints(0, 63)), true, 1.0f);
  add_rw("64x3_k40_norm", in(dtype::f32, {64, 3}, logit), in(dtype::i32, {40, 3}, ints(0, 63)), true, -0.75f);
  add_rw("33x5_k4_transposed_ids_padded", in(dtype::f32, {33, 5}, logit, transposed()),
         in(dtype::i32, {4, 5}, ints(0, 32), padded()), true, 1.5f);
  add_rw("33x3x2_k4_ids_transposed", in(dtype::f32, {33, 3, 2}, logit, padded()),
         in(dtype::i32, {4, 3, 2}, ints(0, 32), transposed()), true, 1.5f);
  add_rw("specials_64x4_k6_plain", in(dtype::f32, {64, 4}, with_specials(-30, 30, 0.2, {kNaN, kInf, -kInf})),
         in(dtype::i32, {6, 4}, ints(0, 63)), false, 1.5f);
  // Row 1 all -inf: every weight 0, normalized 0/0 = NaN (as the unfused chain); rows 0 and 2 mix
  // -inf (weight exactly 0) with values past the threshold.
  add_rw("neg_inf_row_8x3_k3_norm",
         in(dtype::f32, {8, 3}, values({-kInf, 3, -2, -kInf, 25, 0.5, -30, 1, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf,
                                        2, -kInf, 4, -1, 21, -kInf, 0, 7})),
         in(dtype::i32, {3, 3}, values({0, 1, 3, 0, 5, 7, 1, 2, 4})), true, 1.5f);
}

// ---- quantization round-trips (exact): KV and activation shapes, partial runs, ties, specials -----------
// Integers in [lo, hi] divided by denom: dyadic values, many of them exact ties once scaled.
filler dyadic(int64_t lo, int64_t hi, double denom) {
  return [=](std::vector<double>& v, const int64_t*, std::mt19937_64& rng) {
    std::uniform_int_distribution<int64_t> d(lo, hi);
    for (double& x : v) x = double(d(rng)) / denom;
  };
}

void add_quant(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  auto fp8 = [](context& c, T t, const op_args& a) { return fp8_roundtrip(c, t[0], a.block, a.n_quant); };
  auto fp4 = [](context& c, T t, const op_args& a) { return fp4_roundtrip(c, t[0], a.block, a.n_quant); };
  auto add = [&](op_kind op, std::string name, input i, int block, int64_t n_quant = 0) {
    op_args a;
    a.block = block;
    a.n_quant = n_quant;
    cs.push_back(mk(op, std::move(name), {i}, op == op_kind::FP8_ROUNDTRIP ? build_fn(fp8) : build_fn(fp4), a));
  };
  // Block of 16 whose amax is 448 (fp8) or 6 (fp4), so s = 1: the other values sit exactly on
  // midpoints between neighbouring codes (ties to even), in the subnormal range, on zero signs.
  const std::vector<double> fp8_ties = {448, 0x1p-10, 3 * 0x1p-10, 5 * 0x1p-10, -3 * 0x1p-10, 1.0625, 1.1875, -1.1875,
                                        0x1p-6, 15 * 0x1p-11, 232, -232, 0.0, -0.0, 0x1p-11, -0x1.8p-9};
  const std::vector<double> fp4_ties = {6, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, -0.25, -0.75, -1.75, -2.5, -5, 0.1, -0.1, 5.9};
  for (op_kind op : {op_kind::FP8_ROUNDTRIP, op_kind::FP4_ROUNDTRIP}) {
    const bool f8 = op == op_kind::FP8_ROUNDTRIP;
    const int b = f8 ? 64 : 32;
    add(op, "ties_16x3_block16", in(dtype::f32, {16, 3}, values(f8 ? fp8_ties : fp4_ties)), 16);
    add(op, "uniform_448x5", in(dtype::f32, {448, 5}, uniform(-3, 3)), b);
    add(op, "kv_row_512x4_first448", in(dtype::f32, {512, 4}, uniform(-2, 2)), 64, 448);
    add(op, "indexer_128x64x2", in(dtype::f32, {128, 64, 2}, uniform(-1, 1)), 32);
    add(op, "act_4096x2_block128", in(dtype::f32, {4096, 2}, uniform(-40, 40)), 128);
    add(op, "dyadic_ties_256x3", in(dtype::f32, {256, 3}, dyadic(-512, 512, 64)), b);
    add(op, "specials_192x3", in(dtype::f32, {192, 3}, with_specials(-4, 4, 0.1, {kNaN, kInf, -kInf})), b);
    add(op, "all_nonfinite_64x2", in(dtype::f32, {64, 2}, values({kNaN, kInf, -kInf})), 32);
    add(op, "below_amax_floor_128x3", in(dtype::f32, {128, 3}, uniform(-1e-5, 1e-5)), b);
    // Whole runs under the floor, small enough to land in the format's subnormals once scaled: only
    // there does the (floor-given) scale change the rounding.
    add(op, "floor_sets_scale_128x3", in(dtype::f32, {128, 3}, f8 ? uniform(-1e-8, 1e-8) : uniform(-2e-38, 2e-38)), b);
    add(op, "f32_subnormals_64x2", in(dtype::f32, {64, 2}, uniform(-1e-39, 1e-39)), 32);
    add(op, "huge_128x2", in(dtype::f32, {128, 2}, uniform(-3e37, 3e37)), b);
    add(op, "zeros_64x2", in(dtype::f32, {64, 2}, values({0.0, -0.0})), 32);
    add(op, "outlier_rows_96x4", in(dtype::f32, {96, 4}, with_specials(-1, 1, 0.02, {1e4, -3e5})), 32);
    add(op, "partial_last_run_100x3", in(dtype::f32, {100, 3}, uniform(-5, 5)), b);
    add(op, "transposed_64x17", in(dtype::f32, {64, 17}, uniform(-2, 2), transposed()), 32);
    add(op, "padded_128x3x2", in(dtype::f32, {128, 3, 2}, uniform(-2, 2), padded()), b, 96);
    add(op, "permuted_64x3x2x2", in(dtype::f32, {64, 3, 2, 2}, uniform(-2, 2), permuted_0213()), 16);
    add(op, "block1_33x2", in(dtype::f32, {33, 2}, uniform(-9, 9)), 1);
    add(op, "block_over_row_40x3", in(dtype::f32, {40, 3}, uniform(-9, 9)), 64);
  }
  // act_quant_fp8 is an FP8_ROUNDTRIP node with block 128.
  cs.push_back(mk(op_kind::FP8_ROUNDTRIP, "act_quant_fp8_1024x3", {in(dtype::f32, {1024, 3}, uniform(-8, 8))},
                  [](context& c, T t, const op_args&) { return act_quant_fp8(c, t[0]); }, [] {
                    op_args a;
                    a.block = 128;
                    return a;
                  }()));
  // run lengths around the vector widths, at misaligned offsets.
  for (int64_t n : {2, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129})
    for (op_kind op : {op_kind::FP8_ROUNDTRIP, op_kind::FP4_ROUNDTRIP})
      add(op, "sweep_n" + std::to_string(n), in(dtype::f32, {n, 3}, uniform(-3, 3), padded(1 + n % 3)),
          op == op_kind::FP8_ROUNDTRIP ? 64 : 32);
}

// ---- attn_sparse -----------------------------------------------------------------------------------------
// Keys read from caches as the model stores them: a window ring (f32 / f16 / bf16) and a store of
// compressed rows, plain or compact (fp8_e4m3 dims with e8m0 scales per 64 + a bf16 rest), all
// rows or the rows ids select (duplicates and, in one case, ids outside [0, Rv): masked). V4-Flash
// decode shapes (D 512, 64 heads, window 128, top 512 of the CSA rows; all HCA rows) and small odd
// ones (D % 4 != 0, a partial head group, several tokens, permuted q).
void add_attn_sparse(std::vector<op_case>& cs) {
  using T = const std::vector<tensor*>&;
  // Visible with probability 1 - p, logits offsets in (-1, 1); never a whole column masked by
  // construction (the sink keeps such a column defined anyway).
  auto vis_mask = [](double p) -> filler {
    return [p](std::vector<double>& v, const int64_t*, std::mt19937_64& rng) {
      std::uniform_real_distribution<double> d(-1, 1), coin(0, 1);
      for (double& x : v) x = coin(rng) < p ? -kInf : d(rng);
    };
  };
  struct shape {
    const char* name;
    int64_t D, Tq, H, W, R, Rv, k;  // k = 0: no ids (rows 0 .. Rv-1)
    dtype ring, store;              // store f32 / f16 / bf16 plain, fp8_e4m3 compact, NONE: no store
    int64_t nq = 0;                 // compact: fp8 dims (the rest bf16)
    bool sink = true;
    layout ql = cont();
    filler ids = nullptr;           // default: uniform in [0, Rv)
    const rope_params* rot = nullptr;  // the output rotation (none: nullptr)
  };
  // The output rotation: V4's (YaRN, inverse, 64 interleaved dims); halves over 20 of 100 dims.
  const rope_params v4 = yarn(true, true), halves = rp(20, false, true, 10000.0f);
  const dtype none = dtype::count;
  const std::vector<shape> shapes = {
      {"v4_csa_decode_D512_H64_W128_k512_fp8", 512, 1, 64, 128, 1088, 1024, 512, dtype::bf16, dtype::fp8_e4m3, 448},
      {"v4_hca_decode_D512_H64_W128_Rv192_fp8", 512, 1, 64, 128, 256, 192, 0, dtype::bf16, dtype::fp8_e4m3, 448},
      {"v4_csa_decode_D512_H64_W128_k512_bf16", 512, 1, 64, 128, 1024, 1024, 512, dtype::bf16, dtype::bf16},
      {"v4_window_only_D512_H64_W128_bf16", 512, 1, 64, 128, 0, 0, 0, dtype::bf16, none},
      {"D100_T2_H9_W7_k13_fp8_nq72_perm", 100, 2, 9, 7, 40, 33, 13, dtype::f32, dtype::fp8_e4m3, 72, true,
       permuted_0213()},
      {"D64_T1_H8_W5_Rv70_fp8_whole", 64, 1, 8, 5, 70, 70, 0, dtype::f16, dtype::fp8_e4m3, 64},
      {"D37_T3_H5_W7_k6_f16_bad_ids", 37, 3, 5, 7, 12, 11, 6, dtype::f32, dtype::f16, 0, false, cont(),
       values({3, -1, 10, 11, 3, 0, 5, 7, 100, 2, 9, 4, 1, 1, 1, 8, 6, 10})},
      {"D48_T2_H3_W9_Rv10_f32", 48, 2, 3, 9, 16, 10, 0, dtype::bf16, dtype::f32},
      {"D36_T1_H4_W3_window_only_nosink", 36, 1, 4, 3, 0, 0, 0, dtype::f32, none, 0, false},
      {"v4_csa_decode_D512_H64_W128_k512_fp8_rope", 512, 1, 64, 128, 1088, 1024, 512, dtype::bf16, dtype::fp8_e4m3,
       448, true, cont(), nullptr, &v4},
      {"v4_window_only_D512_H64_W128_bf16_rope", 512, 1, 64, 128, 0, 0, 0, dtype::bf16, none, 0, true, cont(), nullptr,
       &v4},
      {"D100_T2_H9_W7_k13_fp8_nq72_perm_rope_halves", 100, 2, 9, 7, 40, 33, 13, dtype::f32, dtype::fp8_e4m3, 72, true,
       permuted_0213(), nullptr, &halves},
      // 40 tokens x 64 heads: one chunk per (token, head group), the rotation in the attention kernel.
      {"D64_T40_H64_W5_Rv20_f16_rope_v4", 64, 40, 64, 5, 24, 20, 0, dtype::f16, dtype::bf16, 0, true, cont(), nullptr,
       &v4},
  };
  for (const shape& s : shapes) {
    op_args a;
    a.softmax_scale = 1.0f / std::sqrt(float(s.D));
    a.has_mask = true;
    a.has_sink = s.sink;
    a.has_store = s.store != none;
    a.has_rest = s.store == dtype::fp8_e4m3 && s.nq < s.D;
    a.has_ids = s.k > 0;
    std::vector<input> ins{in(dtype::f32, {s.D, s.Tq, s.H}, uniform(-2, 2), s.ql), in(s.ring, {s.D, s.W}, uniform(-2, 2)),
                           in(dtype::f32, {s.W + s.Rv, s.Tq}, vis_mask(0.3))};
    if (s.sink) ins.push_back(in(dtype::f32, {s.H}, uniform(-3, 3)));
    const int store_at = int(ins.size());
    if (s.store == dtype::fp8_e4m3) {
      ins.push_back(input{});  // set below, once the scales' index is known
      if (a.has_rest) ins.push_back(in(dtype::bf16, {s.D - s.nq, s.R}, uniform(-2, 2)));
    } else if (a.has_store) {
      ins.push_back(in(s.store, {s.D, s.R}, uniform(-2, 2)));
    }
    if (a.has_ids) ins.push_back(in(dtype::i32, {s.k, s.Tq}, s.ids ? s.ids : ints(0, s.Rv - 1)));
    if (s.rot) with_out_rope(a, ins, *s.rot, s.Tq, 65535);
    if (s.store == dtype::fp8_e4m3) {
      // e4m3 values of magnitude up to 2 times scales 2^-2 .. 2^1: logits of order 1 to 10.
      const int si = int(ins.size());
      ins[size_t(store_at)] = qin(dtype::fp8_e4m3, {s.nq, s.R}, uniform(-2, 2), si, 64, 1);
      ins.push_back(in(dtype::e8m0, {(s.nq + 63) / 64, s.R}, [](std::vector<double>& v, const int64_t*, std::mt19937_64& rng) {
        std::uniform_int_distribution<int> e(-2, 1);
        for (double& x : v) x = std::ldexp(1.0, e(rng));
      }));
    }
    auto b = [](context& c, T t, const op_args& p) {
      size_t i = 3;
      tensor* sink = p.has_sink ? t[i++] : nullptr;
      sparse_keys k{.ring = t[1]};
      if (p.has_store) k.store = t[i++];
      if (p.has_rest) k.rest = t[i++];
      if (p.has_ids) k.ids = t[i++];
      const out_rope_arg out = out_rope_of(t, p);
      return attn_sparse(c, t[0], k, t[2], sink, p.softmax_scale, out.get());
    };
    cs.push_back(mk(op_kind::ATTN_SPARSE, s.name, std::move(ins), b, a));
  }
}

}  // namespace

const std::vector<op_case>& all_cases() {
  static const std::vector<op_case> cases = [] {
    std::vector<op_case> cs;
    add_views(cs);
    add_elementwise(cs);
    add_reductions(cs);
    add_softmax(cs);
    add_sinkhorn(cs);
    add_hc_mix(cs);
    add_hc_pre(cs);
    add_fused(cs);
    add_router(cs);
    add_attn_mqa(cs);
    add_attn_sparse(cs);
    add_rope(cs);
    add_norm_rope(cs);
    add_matmul(cs);
    add_qmatmul(cs);
    add_indexing(cs);
    add_copies(cs);
    add_custom(cs);
    add_sweeps(cs);
    add_quant(cs);
    return cs;
  }();
  return cases;
}

namespace {

// One test per (target, op): ops/OpTest.matches_float64/CPU_avx2_softmax runs every softmax case
// with the CPU's kernels capped at AVX2.
class OpTest : public ::testing::TestWithParam<std::tuple<size_t, op_kind>> {};

TEST_P(OpTest, matches_float64) {
  const target& tg = all_targets()[std::get<0>(GetParam())];
  const op_kind op = std::get<1>(GetParam());
  int n = 0, unsupported = 0, passed = 0;
  std::string skipped, worst_case;
  double worst = 0;
  for (const op_case& c : all_cases()) {
    if (c.op != op) continue;
    ++n;
    const case_result r = run_case(tg, c);
    if (r.status == outcome::unsupported) {
      ++unsupported;
      skipped += "\n  " + c.name + ": " + r.report;
      continue;
    }
    if (r.status != outcome::pass) {
      ADD_FAILURE() << op_name(op) << " / " << c.name << " on " << tg.name << ": " << r.report;
      continue;
    }
    ++passed;
    if (r.worst >= worst) {
      worst = r.worst;
      worst_case = c.name;
    }
  }
  // How close the kernels come to their bounds (1 = at the bound): a tightness signal, not a check.
  std::cout << "[   INFO   ] " << op_name(op) << " on " << tg.name << ": " << passed << " of " << n << " cases passed"
            << (passed ? ", worst |err|/bound " + std::to_string(worst) + " (" + worst_case + ")" : "") << "\n";
  if (unsupported) {
    if (unsupported == n) GTEST_SKIP() << op_name(op) << " unsupported on " << tg.name << skipped;
    std::cout << "[ SKIPPED ] " << unsupported << " of " << n << " cases unsupported on " << tg.name << skipped << "\n";
  }
}

INSTANTIATE_TEST_SUITE_P(ops, OpTest,
                         ::testing::Combine(::testing::Range(size_t(0), all_targets().size()), ::testing::ValuesIn(ops_with_cases())),
                         [](const ::testing::TestParamInfo<std::tuple<size_t, op_kind>>& info) {
                           return all_targets()[std::get<0>(info.param)].name + "_" + op_name(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace v4::optest

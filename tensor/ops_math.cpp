// Elementwise, reduction and normalisation ops; softmax, rope, hadamard.
#include <cmath>
#include <cstdint>
#include <string>

#include "tensor/ops_common.h"

namespace v4 {
using detail::describe;
using detail::have;

namespace {

bool need_f32(context& ctx, const char* op, const tensor* a) {
  if (a->type == dtype::f32) return true;
  ctx.fail("%s: %s must be f32 (cast() it first)", op, describe(a).c_str());
  return false;
}

tensor* binary(context& ctx, op_kind op, tensor* a, tensor* b) {
  if (!have({a, b})) return nullptr;
  if (!need_f32(ctx, op_name(op), a) || !need_f32(ctx, op_name(op), b)) return nullptr;
  if (!detail::can_broadcast(b, a)) {
    ctx.fail("%s: %s does not broadcast to %s (each dim must match or be 1)", op_name(op), describe(b).c_str(),
             describe(a).c_str());
    return nullptr;
  }
  return detail::new_node(ctx, op, dtype::f32, a->ne, {a, b});
}

tensor* unary(context& ctx, op_kind op, tensor* a) {
  if (!have({a})) return nullptr;
  if (!need_f32(ctx, op_name(op), a)) return nullptr;
  return detail::new_node(ctx, op, dtype::f32, a->ne, {a});
}

}  // namespace

tensor* add(context& ctx, tensor* a, tensor* b) { return binary(ctx, op_kind::ADD, a, b); }
tensor* sub(context& ctx, tensor* a, tensor* b) { return binary(ctx, op_kind::SUB, a, b); }
tensor* mul(context& ctx, tensor* a, tensor* b) { return binary(ctx, op_kind::MUL, a, b); }
tensor* div(context& ctx, tensor* a, tensor* b) { return binary(ctx, op_kind::DIV, a, b); }

tensor* scale(context& ctx, tensor* a, float s, float b) {
  tensor* r = unary(ctx, op_kind::SCALE, a);
  if (r) {
    r->set_param_f(0, s);
    r->set_param_f(1, b);
  }
  return r;
}

tensor* clamp(context& ctx, tensor* a, float lo, float hi) {
  if (a && !(lo <= hi)) {
    ctx.fail("clamp: lo %g > hi %g", lo, hi);
    return nullptr;
  }
  tensor* r = unary(ctx, op_kind::CLAMP, a);
  if (r) {
    r->set_param_f(0, lo);
    r->set_param_f(1, hi);
  }
  return r;
}

tensor* silu(context& ctx, tensor* a) { return unary(ctx, op_kind::SILU, a); }
tensor* sigmoid(context& ctx, tensor* a) { return unary(ctx, op_kind::SIGMOID, a); }
tensor* softplus(context& ctx, tensor* a) { return unary(ctx, op_kind::SOFTPLUS, a); }
tensor* sqrt(context& ctx, tensor* a) { return unary(ctx, op_kind::SQRT, a); }
tensor* relu(context& ctx, tensor* a) { return unary(ctx, op_kind::RELU, a); }
tensor* exp(context& ctx, tensor* a) { return unary(ctx, op_kind::EXP, a); }

namespace {
tensor* reduce(context& ctx, op_kind op, tensor* a, int dim) {
  if (!have({a})) return nullptr;
  if (!need_f32(ctx, op_name(op), a)) return nullptr;
  if (dim < 0 || dim >= kMaxDims) {
    ctx.fail("%s: dim %d out of range 0..3", op_name(op), dim);
    return nullptr;
  }
  int64_t ne[kMaxDims] = {a->ne[0], a->ne[1], a->ne[2], a->ne[3]};
  ne[dim] = 1;
  tensor* r = detail::new_node(ctx, op, dtype::f32, ne, {a});
  if (r) r->set_param_i(0, dim);
  return r;
}
}  // namespace

tensor* sum(context& ctx, tensor* a, int dim) { return reduce(ctx, op_kind::SUM, a, dim); }
tensor* max(context& ctx, tensor* a, int dim) { return reduce(ctx, op_kind::MAX, a, dim); }

tensor* rms_norm(context& ctx, tensor* a, float eps) {
  if (a && !(eps >= 0.0f)) {
    ctx.fail("rms_norm: eps %g must be >= 0", eps);
    return nullptr;
  }
  tensor* r = unary(ctx, op_kind::RMS_NORM, a);
  if (r) r->set_param_f(0, eps);
  return r;
}

tensor* softmax(context& ctx, tensor* a, const softmax_params& p) {
  if (!have({a})) return nullptr;
  if (!need_f32(ctx, "softmax", a)) return nullptr;
  if (p.mask) {
    if (!need_f32(ctx, "softmax mask", p.mask)) return nullptr;
    if (p.mask->ne[0] != a->ne[0] || !detail::can_broadcast(p.mask, a)) {
      ctx.fail("softmax: mask %s does not fit scores %s", describe(p.mask).c_str(), describe(a).c_str());
      return nullptr;
    }
  }
  if (p.sink) {
    if (!need_f32(ctx, "softmax sink", p.sink)) return nullptr;
    if (p.sink->nelements() != a->ne[2] || p.sink->ne[0] != a->ne[2]) {
      ctx.fail("softmax: sink %s needs one value per index of dim 2 of %s", describe(p.sink).c_str(),
               describe(a).c_str());
      return nullptr;
    }
  }
  tensor* r = detail::new_node(ctx, op_kind::SOFTMAX, dtype::f32, a->ne, {a, p.mask, p.sink});
  if (r) r->set_param_f(0, p.scale);
  return r;
}

namespace {
// rope()'s checks of a, pos and p (op names the caller in messages).
bool check_rope(context& ctx, const char* op, const tensor* a, const tensor* pos, const rope_params& p) {
  if (!need_f32(ctx, op, a)) return false;
  if (pos->type != dtype::i32 || pos->nelements() != a->ne[2] || pos->ne[0] != a->ne[2]) {
    ctx.fail("%s: positions %s must be i32 [%lld] (one per index of dim 2 of %s)", op, describe(pos).c_str(),
             (long long)a->ne[2], describe(a).c_str());
    return false;
  }
  if (p.n_rot <= 0 || p.n_rot % 2 != 0 || p.n_rot > a->ne[0]) {
    ctx.fail("%s: n_rot %d must be even, > 0 and <= dim 0 of %s", op, p.n_rot, describe(a).c_str());
    return false;
  }
  if (!(p.base > 1.0f) || (p.yarn_factor > 1.0f && !(p.yarn_orig_ctx > 0.0f))) {
    ctx.fail("%s: base %g must be > 1, and YaRN (factor %g) needs yarn_orig_ctx > 0", op, p.base, p.yarn_factor);
    return false;
  }
  return true;
}
// Words first..first+7 of a node (ROPE, NORM_ROPE: 0; the attention ops' output rotation: 1;
// params::rope_of reads them back).
void set_rope_params(tensor* r, const rope_params& p, int first = 0) {
  r->set_param_i(first + 0, p.n_rot);
  r->set_param_i(first + 1, p.interleaved);
  r->set_param_i(first + 2, p.inverse);
  r->set_param_f(first + 3, p.base);
  r->set_param_f(first + 4, p.yarn_factor);
  r->set_param_f(first + 5, p.yarn_orig_ctx);
  r->set_param_f(first + 6, p.yarn_beta_fast);
  r->set_param_f(first + 7, p.yarn_beta_slow);
}
// An fp8 output rounding option (rms_norm_w, swiglu, norm_rope): block >= 0 (0: off).
bool check_fp8_block(context& ctx, const char* op, int block) {
  if (block >= 0) return true;
  ctx.fail("%s: fp8 block %d must be >= 0 (0: no rounding)", op, block);
  return false;
}
// A norm's weight (when given: one f32 row as long as a's rows) and eps >= 0 (rms_norm_w, norm_rope).
bool check_norm_args(context& ctx, const char* op, const tensor* a, const tensor* w, float eps) {
  if (w) {
    const std::string what = std::string(op) + " weight";
    if (!need_f32(ctx, what.c_str(), w)) return false;
    if (w->ne[0] != a->ne[0] || w->nelements() != w->ne[0]) {
      ctx.fail("%s: weight %s must be one row of %lld (the rows of %s)", op, describe(w).c_str(), (long long)a->ne[0],
               describe(a).c_str());
      return false;
    }
  }
  if (!(eps >= 0.0f)) {
    ctx.fail("%s: eps %g must be >= 0", op, double(eps));
    return false;
  }
  return true;
}
}  // namespace

tensor* rope(context& ctx, tensor* a, tensor* pos, const rope_params& p) {
  if (!have({a, pos})) return nullptr;
  if (!check_rope(ctx, "rope", a, pos, p)) return nullptr;
  tensor* r = detail::new_node(ctx, op_kind::ROPE, dtype::f32, a->ne, {a, pos});
  if (r) set_rope_params(r, p);
  return r;
}

tensor* norm_rope(context& ctx, tensor* a, tensor* w, tensor* pos, const rope_params& p, float eps, int fp8_block,
                  int64_t fp8_n) {
  if (!have({a, pos})) return nullptr;
  if (!check_rope(ctx, "norm_rope", a, pos, p)) return nullptr;
  if (!check_norm_args(ctx, "norm_rope", a, w, eps)) return nullptr;
  if (!check_fp8_block(ctx, "norm_rope", fp8_block)) return nullptr;
  if (fp8_n < 0 || fp8_n > a->ne[0] || (fp8_block == 0 && fp8_n != 0) || a->ne[0] > INT32_MAX) {
    ctx.fail("norm_rope: fp8 n = %lld must be in [0, %lld] (dim 0 of %s; 0 = all), and 0 without an fp8 block",
             (long long)fp8_n, (long long)a->ne[0], describe(a).c_str());
    return nullptr;
  }
  tensor* r = detail::new_node(ctx, op_kind::NORM_ROPE, dtype::f32, a->ne, {a, pos, w});
  if (!r) return nullptr;
  set_rope_params(r, p);
  r->set_param_f(8, eps);
  r->set_param_i(9, fp8_block);
  r->set_param_i(10, int32_t(fp8_block == 0 ? 0 : fp8_n == 0 ? a->ne[0] : fp8_n));
  return r;
}

rope_params params::rope_of(const tensor* t, int first) {
  rope_params p;
  p.n_rot = t->param_i(first + 0);
  p.interleaved = t->param_i(first + 1) != 0;
  p.inverse = t->param_i(first + 2) != 0;
  p.base = t->param_f(first + 3);
  p.yarn_factor = t->param_f(first + 4);
  p.yarn_orig_ctx = t->param_f(first + 5);
  p.yarn_beta_fast = t->param_f(first + 6);
  p.yarn_beta_slow = t->param_f(first + 7);
  return p;
}

tensor* hadamard(context& ctx, tensor* a, float scale) {
  if (!have({a})) return nullptr;
  if (!need_f32(ctx, "hadamard", a)) return nullptr;
  const int64_t n = a->ne[0];
  if (n < 1 || (n & (n - 1)) != 0) {
    ctx.fail("hadamard: dim 0 of %s must be a power of two", describe(a).c_str());
    return nullptr;
  }
  tensor* r = detail::new_node(ctx, op_kind::HADAMARD, dtype::f32, a->ne, {a});
  if (r) r->set_param_f(0, scale);
  return r;
}

namespace {
// The node of an attention op with the output rotation: f32 [D, H, T] (q is [D, T, H]), pos the
// last source, rope's checks (on the result's shape: dim 2 = T) and its parameters in words 1..8.
tensor* out_node(context& ctx, op_kind op, const tensor* q, std::initializer_list<tensor*> srcs,
                 const attn_out_rope* out, const char* what) {
  if (!out->pos) {
    ctx.fail("%s: the output rotation needs positions", what);
    return nullptr;
  }
  const int64_t ne[kMaxDims] = {q->ne[0], q->ne[2], q->ne[1], 1};
  tensor* r = detail::new_node(ctx, op, dtype::f32, ne, srcs);
  if (!r || !check_rope(ctx, what, r, out->pos, out->p)) return nullptr;
  set_rope_params(r, out->p, 1);
  return r;
}
}  // namespace

tensor* attn_mqa(context& ctx, tensor* q, tensor* kv, tensor* mask, tensor* sink, float scale,
                 const attn_out_rope* out) {
  if (!have({q, kv})) return nullptr;
  if (!need_f32(ctx, "attn_mqa q", q) || !need_f32(ctx, "attn_mqa kv", kv)) return nullptr;
  const int64_t D = q->ne[0], T = q->ne[1], H = q->ne[2], NK = kv->ne[1];
  if (kv->ne[0] != D || kv->ne[2] != 1 || kv->ne[3] != 1 || q->ne[3] != 1 || !q->rows_contiguous() ||
      !kv->rows_contiguous()) {
    ctx.fail("attn_mqa: q %s must be [D, T, H] and kv %s [D, NK], both with contiguous rows", describe(q).c_str(),
             describe(kv).c_str());
    return nullptr;
  }
  if (mask && (!need_f32(ctx, "attn_mqa mask", mask) || mask->ne[0] != NK || mask->ne[1] != T || mask->ne[2] != 1 ||
               mask->ne[3] != 1)) {
    if (ctx.ok()) ctx.fail("attn_mqa: mask %s must be [%lld, %lld]", describe(mask).c_str(), (long long)NK, (long long)T);
    return nullptr;
  }
  if (sink && (!need_f32(ctx, "attn_mqa sink", sink) || sink->nelements() != H || sink->ne[0] != H)) {
    if (ctx.ok()) ctx.fail("attn_mqa: sink %s must be [%lld]", describe(sink).c_str(), (long long)H);
    return nullptr;
  }
  tensor* r = out ? out_node(ctx, op_kind::ATTN_MQA, q, {q, kv, mask, sink, out->pos}, out, "attn_mqa")
                  : detail::new_node(ctx, op_kind::ATTN_MQA, dtype::f32, q->ne, {q, kv, mask, sink});
  if (r) r->set_param_f(0, scale);
  return r;
}

namespace {
bool plain_rows(const tensor* t) { return traits(t->type).is_float && t->nb[0] == traits(t->type).block_bytes; }
}  // namespace

tensor* attn_sparse(context& ctx, tensor* q, const sparse_keys& k, tensor* mask, tensor* sink, float scale,
                    const attn_out_rope* out) {
  if (!have({q, k.ring, mask})) return nullptr;
  if (!need_f32(ctx, "attn_sparse q", q) || !need_f32(ctx, "attn_sparse mask", mask)) return nullptr;
  const int64_t D = q->ne[0], T = q->ne[1], H = q->ne[2], W = k.ring->ne[1];
  if (q->ne[3] != 1 || !q->rows_contiguous() || !plain_rows(k.ring) || k.ring->ne[0] != D || k.ring->ne[2] != 1 ||
      k.ring->ne[3] != 1) {
    ctx.fail("attn_sparse: q %s must be [D, T, H] f32 and ring %s [D, W] f32/f16/bf16, both with contiguous rows",
             describe(q).c_str(), describe(k.ring).c_str());
    return nullptr;
  }
  const int64_t Rv = mask->ne[0] - W;
  if (mask->ne[1] != T || mask->ne[2] != 1 || mask->ne[3] != 1 || Rv < 0 || (!k.store && Rv != 0)) {
    ctx.fail("attn_sparse: mask %s must be [W + Rv, %lld] with W = %lld (Rv = 0 without a store)",
             describe(mask).c_str(), (long long)T, (long long)W);
    return nullptr;
  }
  if (sink && (!need_f32(ctx, "attn_sparse sink", sink) || sink->nelements() != H || sink->ne[0] != H)) {
    if (ctx.ok()) ctx.fail("attn_sparse: sink %s must be [%lld]", describe(sink).c_str(), (long long)H);
    return nullptr;
  }
  int64_t NK = W + Rv;
  if (k.store) {
    const tensor* s = k.store;
    const bool compact = s->type == dtype::fp8_e4m3;
    if (compact && !detail::check_scales(ctx, "attn_sparse store", s)) return nullptr;
    const int64_t nq = s->ne[0];
    const bool rest_ok = compact && nq < D ? k.rest && plain_rows(k.rest) && k.rest->ne[0] == D - nq &&
                                                 k.rest->ne[1] == s->ne[1] && k.rest->ne[2] == 1 && k.rest->ne[3] == 1
                                           : !k.rest;
    const bool store_ok =
        (compact ? s->nb[0] == 1 && nq <= D : plain_rows(s) && nq == D) && s->ne[2] == 1 && s->ne[3] == 1;
    if (!store_ok || !rest_ok || Rv > s->ne[1]) {
      ctx.fail("attn_sparse: store %s (rest %s) must be [%lld, R >= %lld] f32/f16/bf16, or fp8_e4m3 [nq, R] with "
               "scales and a rest [%lld - nq, R] f32/f16/bf16 when nq < %lld, all with contiguous rows",
               describe(s).c_str(), k.rest ? describe(k.rest).c_str() : "none", (long long)D, (long long)Rv,
               (long long)D, (long long)D);
      return nullptr;
    }
  } else if (k.rest || k.ids) {
    ctx.fail("attn_sparse: rest or ids without a store");
    return nullptr;
  }
  if (k.ids) {
    if (k.ids->type != dtype::i32 || k.ids->ne[1] != T || k.ids->ne[2] != 1 || k.ids->ne[3] != 1) {
      ctx.fail("attn_sparse: ids %s must be i32 [k, %lld]", describe(k.ids).c_str(), (long long)T);
      return nullptr;
    }
    NK = W + k.ids->ne[0];
  }
  if (NK > int64_t(INT32_MAX)) {
    ctx.fail("attn_sparse: %lld keys per token (at most %d)", (long long)NK, INT32_MAX);
    return nullptr;
  }
  tensor* r = out ? out_node(ctx, op_kind::ATTN_SPARSE, q, {q, k.ring, mask, sink, k.store, k.rest, k.ids, out->pos},
                             out, "attn_sparse")
                  : detail::new_node(ctx, op_kind::ATTN_SPARSE, dtype::f32, q->ne,
                                     {q, k.ring, mask, sink, k.store, k.rest, k.ids});
  if (r) r->set_param_f(0, scale);
  return r;
}

tensor* hc_mix(context& ctx, tensor* mix, tensor* base, const float s[3], int iters, float eps) {
  if (!have({mix, base})) return nullptr;
  if (!need_f32(ctx, "hc_mix", mix) || !need_f32(ctx, "hc_mix", base)) return nullptr;
  int64_t n = 1;
  while ((n + 1) * (n + 3) <= mix->ne[0]) ++n;  // the n with (2 + n) n == ne0, if any
  if ((2 + n) * n != mix->ne[0] || !mix->rows_contiguous()) {
    ctx.fail("hc_mix: mix %s must have (2 + n) n elements per contiguous row (n = 4 for V4)", describe(mix).c_str());
    return nullptr;
  }
  if (base->ne[0] != mix->ne[0] || base->nelements() != base->ne[0] || !base->is_contiguous()) {
    ctx.fail("hc_mix: base %s must be one contiguous row of %lld", describe(base).c_str(), (long long)mix->ne[0]);
    return nullptr;
  }
  if (iters < 1 || !(eps >= 0)) {
    ctx.fail("hc_mix: iters (%d) must be >= 1 and eps (%g) >= 0", iters, double(eps));
    return nullptr;
  }
  tensor* r = detail::new_node(ctx, op_kind::HC_MIX, dtype::f32, mix->ne, {mix, base});
  if (r) {
    for (int i = 0; i < 3; ++i) r->set_param_f(i, s[i]);
    r->set_param_i(3, iters);
    r->set_param_f(4, eps);
    r->set_param_i(5, int32_t(n));
  }
  return r;
}

tensor* sinkhorn(context& ctx, tensor* a, int iters, float eps) {
  if (!have({a})) return nullptr;
  if (!need_f32(ctx, "sinkhorn", a)) return nullptr;
  if (a->ne[0] != a->ne[1] || a->ne[0] < 1 || iters < 1 || !(eps >= 0)) {
    ctx.fail("sinkhorn: %s must hold square matrices in dims 0 and 1, iters (%d) >= 1, eps (%g) >= 0",
             describe(a).c_str(), iters, double(eps));
    return nullptr;
  }
  tensor* r = detail::new_node(ctx, op_kind::SINKHORN, dtype::f32, a->ne, {a});
  if (r) {
    r->set_param_i(0, iters);
    r->set_param_f(1, eps);
  }
  return r;
}

// ---- fused ops of the decode graph ----------------------------------------------------------------
tensor* rms_norm_w(context& ctx, tensor* a, tensor* w, float eps, int fp8_block) {
  if (!have({a, w})) return nullptr;
  if (!need_f32(ctx, "rms_norm_w", a) || !check_norm_args(ctx, "rms_norm_w", a, w, eps)) return nullptr;
  if (!check_fp8_block(ctx, "rms_norm_w", fp8_block)) return nullptr;
  tensor* r = detail::new_node(ctx, op_kind::RMS_NORM_W, dtype::f32, a->ne, {a, w});
  if (r) {
    r->set_param_f(0, eps);
    r->set_param_i(1, fp8_block);
  }
  return r;
}

tensor* swiglu(context& ctx, tensor* g, tensor* u, float limit, tensor* wts, int fp8_block) {
  if (!have({g, u})) return nullptr;
  if (!need_f32(ctx, "swiglu gate", g) || !need_f32(ctx, "swiglu up", u)) return nullptr;
  for (int d = 0; d < kMaxDims; ++d)
    if (u->ne[d] != g->ne[d]) {
      ctx.fail("swiglu: up %s and gate %s must have the same shape", describe(u).c_str(), describe(g).c_str());
      return nullptr;
    }
  if (wts && (!need_f32(ctx, "swiglu weights", wts) || wts->ne[0] != 1 || !detail::can_broadcast(wts, g))) {
    if (ctx.ok())
      ctx.fail("swiglu: weights %s must be [1, ...] with each other dim 1 or that of gate %s", describe(wts).c_str(),
               describe(g).c_str());
    return nullptr;
  }
  if (std::isnan(limit)) {
    ctx.fail("swiglu: limit is NaN (a number > 0 clamps, <= 0 does not)");
    return nullptr;
  }
  if (!check_fp8_block(ctx, "swiglu", fp8_block)) return nullptr;
  tensor* r = detail::new_node(ctx, op_kind::SWIGLU, dtype::f32, g->ne, {g, u, wts});
  if (r) {
    r->set_param_f(0, limit);
    r->set_param_i(1, fp8_block);
  }
  return r;
}

namespace {
// The streams X [D, HC, T] of hc_sum / hc_post (op names the caller), or an error.
bool check_streams(context& ctx, const char* op, const tensor* X) {
  if (!need_f32(ctx, op, X)) return false;
  if (X->ne[3] != 1) {
    ctx.fail("%s: streams %s must be [D, HC, T]", op, describe(X).c_str());
    return false;
  }
  return true;
}
}  // namespace

tensor* hc_sum(context& ctx, tensor* X, tensor* pre) {
  if (!have({X, pre})) return nullptr;
  if (!check_streams(ctx, "hc_sum", X) || !need_f32(ctx, "hc_sum pre", pre)) return nullptr;
  const int64_t D = X->ne[0], HC = X->ne[1], T = X->ne[2];
  if (pre->ne[0] != 1 || pre->ne[1] != HC || (pre->ne[2] != T && pre->ne[2] != 1) || pre->ne[3] != 1) {
    ctx.fail("hc_sum: pre %s must be [1, %lld, %lld] (or [1, %lld, 1]) for streams %s", describe(pre).c_str(),
             (long long)HC, (long long)T, (long long)HC, describe(X).c_str());
    return nullptr;
  }
  const int64_t ne[kMaxDims] = {D, T, 1, 1};
  return detail::new_node(ctx, op_kind::HC_SUM, dtype::f32, ne, {X, pre});
}

namespace {
// hc_post's sublayer output f [D, T] and weights w [1+HC, HC, T or 1] for streams X (hc_post, hc_pre).
bool check_post_args(context& ctx, const char* op, const tensor* f, const tensor* X, const tensor* w) {
  const std::string fs = std::string(op) + " f", ws = std::string(op) + " w";
  if (!check_streams(ctx, op, X) || !need_f32(ctx, fs.c_str(), f) || !need_f32(ctx, ws.c_str(), w)) return false;
  const int64_t D = X->ne[0], HC = X->ne[1], T = X->ne[2];
  if (f->ne[0] != D || f->ne[1] != T || f->ne[2] != 1 || f->ne[3] != 1) {
    ctx.fail("%s: sublayer output %s must be [%lld, %lld] for streams %s", op, describe(f).c_str(), (long long)D,
             (long long)T, describe(X).c_str());
    return false;
  }
  if (w->ne[0] != 1 + HC || w->ne[1] != HC || (w->ne[2] != T && w->ne[2] != 1) || w->ne[3] != 1) {
    ctx.fail("%s: weights %s must be [%lld, %lld, %lld] (or [.., .., 1]) for streams %s", op, describe(w).c_str(),
             (long long)(1 + HC), (long long)HC, (long long)T, describe(X).c_str());
    return false;
  }
  return true;
}
}  // namespace

tensor* hc_post(context& ctx, tensor* f, tensor* X, tensor* w) {
  if (!have({f, X, w})) return nullptr;
  if (!check_post_args(ctx, "hc_post", f, X, w)) return nullptr;
  return detail::new_node(ctx, op_kind::HC_POST, dtype::f32, X->ne, {f, X, w});
}

// ---- hc_pre: the fused pre chain ------------------------------------------------------------------
// Op params: f[0..2] scale, i[3] iters, f[4] hc_eps, f[5] rms_eps, i[6] fp8 block, i[7] HC,
// i[8] post (1: sources 4 and 5 are f and w_post). Sources {X, fn, base, norm, f, w_post}.
hc_pre_layout hc_pre_layout_of(int64_t D, int64_t HC, int64_t T, bool post, bool fp8) {
  auto up = [](int64_t n) { return (n + 127) / 128 * 128; };  // regions start on 128 floats
  hc_pre_layout l;
  l.D = D, l.HC = HC, l.T = T, l.M = (2 + HC) * HC, l.post = post, l.fp8 = fp8;
  l.s = 0;
  l.u = post ? up(D * HC * T) : 0;
  l.q = l.u + up(D * T);
  l.w = l.q + (fp8 ? up(D * T) : 0);
  l.total = l.w + up(l.M * T);
  return l;
}

hc_pre_layout hc_pre_layout_of(const tensor* node) {
  const tensor* X = node->src[0];
  return hc_pre_layout_of(X->ne[0], X->ne[1], X->ne[2], node->param_i(8) != 0, node->param_i(6) > 0);
}

tensor* hc_pre(context& ctx, tensor* X, tensor* fn, tensor* base, tensor* norm, const hc_pre_params& p) {
  if (!have({X, fn, base, norm})) return nullptr;
  const bool post = p.f || p.w_post;
  if (post && !have({p.f, p.w_post})) {
    if (ctx.ok()) ctx.fail("hc_pre: hc_post first needs both f and w_post (or neither)");
    return nullptr;
  }
  if (!check_streams(ctx, "hc_pre", X) || !need_f32(ctx, "hc_pre fn", fn) || !need_f32(ctx, "hc_pre base", base))
    return nullptr;
  const int64_t D = X->ne[0], HC = X->ne[1], T = X->ne[2], M = (2 + HC) * HC;
  if (!post && !X->is_contiguous()) {
    ctx.fail("hc_pre: streams %s must be contiguous (flattened to [HC*D, T]) without hc_post", describe(X).c_str());
    return nullptr;
  }
  if (fn->ne[0] != HC * D || fn->ne[1] != M || fn->ne[2] != 1 || fn->ne[3] != 1 || !fn->rows_contiguous()) {
    ctx.fail("hc_pre: fn %s must be [%lld, %lld] with contiguous rows for streams %s", describe(fn).c_str(),
             (long long)(HC * D), (long long)M, describe(X).c_str());
    return nullptr;
  }
  if (base->ne[0] != M || base->nelements() != M || !base->is_contiguous()) {
    ctx.fail("hc_pre: base %s must be one contiguous row of %lld", describe(base).c_str(), (long long)M);
    return nullptr;
  }
  if (!check_norm_args(ctx, "hc_pre", X, norm, p.rms_eps) || !check_fp8_block(ctx, "hc_pre", p.fp8_block))
    return nullptr;
  if (p.iters < 1 || !(p.hc_eps >= 0)) {
    ctx.fail("hc_pre: iters (%d) must be >= 1 and eps (%g) >= 0", p.iters, double(p.hc_eps));
    return nullptr;
  }
  if (post && !check_post_args(ctx, "hc_pre", p.f, X, p.w_post)) return nullptr;
  const hc_pre_layout l = hc_pre_layout_of(D, HC, T, post, p.fp8_block > 0);
  const int64_t ne[kMaxDims] = {l.total, 1, 1, 1};
  tensor* r = detail::new_node(ctx, op_kind::HC_PRE, dtype::f32, ne, {X, fn, base, norm, p.f, p.w_post});
  if (!r) return nullptr;
  for (int i = 0; i < 3; ++i) r->set_param_f(i, p.scale[i]);
  r->set_param_i(3, p.iters);
  r->set_param_f(4, p.hc_eps);
  r->set_param_f(5, p.rms_eps);
  r->set_param_i(6, p.fp8_block);
  r->set_param_i(7, int32_t(HC));
  r->set_param_i(8, post ? 1 : 0);
  return r;
}

}  // namespace v4

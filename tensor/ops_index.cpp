// Indexing and copying ops: get_rows, set_rows, gather, top_k, argsort, route_topk, route_weights,
// concat, cpy, cast, custom.
#include <cstring>

#include "tensor/ops_common.h"

namespace v4 {
using detail::describe;
using detail::have;

tensor* get_rows(context& ctx, tensor* a, tensor* ids) {
  if (!have({a, ids})) return nullptr;
  if (!traits(a->type).to_f32 || !a->rows_contiguous()) {
    ctx.fail("get_rows: %s must be a type convertible to f32, with contiguous rows", describe(a).c_str());
    return nullptr;
  }
  if (!detail::check_scales(ctx, "get_rows", a)) return nullptr;
  if (ids->type != dtype::i32 || ids->ne[2] != 1 || ids->ne[3] != 1 || ids->ne[1] != a->ne[2] || a->ne[3] != 1) {
    ctx.fail("get_rows: ids %s must be i32 [N, B] for rows %s [K, R, B]", describe(ids).c_str(), describe(a).c_str());
    return nullptr;
  }
  const int64_t ne[kMaxDims] = {a->ne[0], ids->ne[0], a->ne[2], 1};
  return detail::new_node(ctx, op_kind::GET_ROWS, dtype::f32, ne, {a, ids});
}

tensor* set_rows(context& ctx, tensor* dst, tensor* src, tensor* ids) {
  if (!have({dst, src, ids})) return nullptr;
  if (src->type != dtype::f32 || !traits(dst->type).from_f32 || !dst->rows_contiguous()) {
    ctx.fail("set_rows: src %s must be f32 and dst %s a type written from f32 with contiguous rows",
             describe(src).c_str(), describe(dst).c_str());
    return nullptr;
  }
  if (traits(dst->type).scaled &&
      (!detail::check_scales(ctx, "set_rows", dst) || dst->scale_block[1] != 1 || !dst->scales->is_contiguous())) {
    if (ctx.ok())
      ctx.fail("set_rows: scaled dst %s needs per-row scale blocks (scale_block {b, 1}) in contiguous scales",
               describe(dst).c_str());
    return nullptr;
  }
  if ((ids->type != dtype::i32 && ids->type != dtype::i64) || ids->ne[2] != 1 || ids->ne[3] != 1) {
    ctx.fail("set_rows: ids %s must be i32 or i64 [N, B]", describe(ids).c_str());
    return nullptr;
  }
  if (src->ne[0] != dst->ne[0] || src->ne[2] != dst->ne[2] || src->ne[3] != 1 || dst->ne[3] != 1 ||
      ids->ne[0] != src->ne[1] || ids->ne[1] != src->ne[2]) {
    ctx.fail("set_rows: src %s, dst %s and ids %s do not fit ([K, N, B], [K, R, B], [N, B])", describe(src).c_str(),
             describe(dst).c_str(), describe(ids).c_str());
    return nullptr;
  }
  return detail::new_alias(ctx, op_kind::SET_ROWS, dst, dst->ne, dst->nb, 0, {dst, src, ids});
}

tensor* gather(context& ctx, tensor* a, tensor* idx) {
  if (!have({a, idx})) return nullptr;
  if (a->type != dtype::f32 || idx->type != dtype::i32) {
    ctx.fail("gather: a %s must be f32 and idx %s i32", describe(a).c_str(), describe(idx).c_str());
    return nullptr;
  }
  if (idx->ne[1] != a->ne[1] || idx->ne[2] != a->ne[2] || idx->ne[3] != a->ne[3]) {
    ctx.fail("gather: idx %s must have the rows of %s", describe(idx).c_str(), describe(a).c_str());
    return nullptr;
  }
  return detail::new_node(ctx, op_kind::GATHER, dtype::f32, idx->ne, {a, idx});
}

tensor* rows_mask(context& ctx, tensor* pos, int64_t rows, int ratio) {
  if (!have({pos})) return nullptr;
  if (pos->type != dtype::i32 || pos->ne[1] * pos->ne[2] * pos->ne[3] != 1 || rows < 1 || ratio < 1) {
    ctx.fail("rows_mask: pos %s must be i32 [T], rows = %lld and ratio = %d at least 1", describe(pos).c_str(),
             (long long)rows, ratio);
    return nullptr;
  }
  const int64_t ne[kMaxDims] = {rows, pos->ne[0], 1, 1};
  tensor* r = detail::new_node(ctx, op_kind::ROWS_MASK, dtype::f32, ne, {pos});
  if (r) r->set_param_i(0, ratio);
  return r;
}

tensor* top_k(context& ctx, tensor* a, int k) {
  if (!have({a})) return nullptr;
  if (a->type != dtype::f32 || k < 1 || k > a->ne[0]) {
    ctx.fail("top_k: k = %d must be in [1, %lld] and %s f32", k, (long long)a->ne[0], describe(a).c_str());
    return nullptr;
  }
  const int64_t ne[kMaxDims] = {k, a->ne[1], a->ne[2], a->ne[3]};
  tensor* r = detail::new_node(ctx, op_kind::TOP_K, dtype::i32, ne, {a});
  if (r) r->set_param_i(0, k);
  return r;
}

tensor* argsort(context& ctx, tensor* a, bool descending) {
  if (!have({a})) return nullptr;
  if (a->type != dtype::f32) {
    ctx.fail("argsort: %s must be f32", describe(a).c_str());
    return nullptr;
  }
  tensor* r = detail::new_node(ctx, op_kind::ARGSORT, dtype::i32, a->ne, {a});
  if (r) r->set_param_i(0, descending);
  return r;
}

tensor* route_topk(context& ctx, tensor* logits, tensor* bias, int k) {
  if (!have({logits})) return nullptr;
  const int64_t E = logits->ne[0];
  if (logits->type != dtype::f32 || k < 1 || k > E) {
    ctx.fail("route_topk: k = %d must be in [1, %lld] and logits %s f32", k, (long long)E, describe(logits).c_str());
    return nullptr;
  }
  if (bias && (bias->type != dtype::f32 || bias->ne[0] != E || bias->nelements() != E)) {
    ctx.fail("route_topk: bias %s must be f32 [%lld], one per expert of logits %s", describe(bias).c_str(),
             (long long)E, describe(logits).c_str());
    return nullptr;
  }
  const int64_t ne[kMaxDims] = {k, logits->ne[1], logits->ne[2], logits->ne[3]};
  tensor* r = detail::new_node(ctx, op_kind::ROUTE_TOPK, dtype::i32, ne, {logits, bias});
  if (r) r->set_param_i(0, k);
  return r;
}

tensor* route_weights(context& ctx, tensor* logits, tensor* ids, bool normalize, float scale) {
  if (!have({logits, ids})) return nullptr;
  if (logits->type != dtype::f32 || ids->type != dtype::i32) {
    ctx.fail("route_weights: logits %s must be f32 and ids %s i32", describe(logits).c_str(), describe(ids).c_str());
    return nullptr;
  }
  if (ids->ne[1] != logits->ne[1] || ids->ne[2] != logits->ne[2] || ids->ne[3] != logits->ne[3]) {
    ctx.fail("route_weights: ids %s must have the rows (tokens) of logits %s", describe(ids).c_str(),
             describe(logits).c_str());
    return nullptr;
  }
  tensor* r = detail::new_node(ctx, op_kind::ROUTE_WEIGHTS, dtype::f32, ids->ne, {logits, ids});
  if (r) {
    r->set_param_i(0, normalize);
    r->set_param_f(1, scale);
  }
  return r;
}

tensor* concat(context& ctx, tensor* a, tensor* b, int dim) {
  if (!have({a, b})) return nullptr;
  bool ok = a->type == b->type && dim >= 0 && dim < kMaxDims && traits(a->type).block_size == 1;
  for (int i = 0; ok && i < kMaxDims; ++i) ok = i == dim || a->ne[i] == b->ne[i];
  if (!ok) {
    ctx.fail("concat: %s and %s do not concatenate along dim %d", describe(a).c_str(), describe(b).c_str(), dim);
    return nullptr;
  }
  int64_t ne[kMaxDims] = {a->ne[0], a->ne[1], a->ne[2], a->ne[3]};
  ne[dim] += b->ne[dim];
  tensor* r = detail::new_node(ctx, op_kind::CONCAT, a->type, ne, {a, b});
  if (r) r->set_param_i(0, dim);
  return r;
}

tensor* cpy(context& ctx, tensor* a, tensor* dst) {
  if (!have({a, dst})) return nullptr;
  if (a->nelements() != dst->nelements()) {
    ctx.fail("cpy: %s and %s hold different element counts", describe(a).c_str(), describe(dst).c_str());
    return nullptr;
  }
  const bool raw = a->type == dst->type;  // same type: bytes copied as they are
  if (!raw && (!traits(a->type).to_f32 || !traits(dst->type).from_f32 || traits(a->type).block_size != 1 ||
               traits(dst->type).block_size != 1 || traits(a->type).scaled || traits(dst->type).scaled)) {
    ctx.fail("cpy: no conversion from %s to %s", describe(a).c_str(), describe(dst).c_str());
    return nullptr;
  }
  if (raw && traits(a->type).block_size != 1 && !(a->same_shape(*dst) && a->rows_contiguous() && dst->rows_contiguous())) {
    ctx.fail("cpy: block-type copy %s -> %s needs equal shapes", describe(a).c_str(), describe(dst).c_str());
    return nullptr;
  }
  return detail::new_alias(ctx, op_kind::CPY, dst, dst->ne, dst->nb, 0, {a, dst});
}

tensor* cast(context& ctx, tensor* a, dtype t) {
  if (!have({a})) return nullptr;
  tensor* dst = ctx.new_tensor(t, kMaxDims, a->ne);
  if (!dst) return nullptr;
  tensor* r = cpy(ctx, a, dst);
  if (!r) return nullptr;
  // A cast owns its memory: turn the alias into a plain node writing into itself.
  r->view_src = nullptr;
  r->view_offs = 0;
  r->src[1] = nullptr;
  set_contiguous_strides(r);
  return r;
}

tensor* custom(context& ctx, dtype t, std::initializer_list<int64_t> ne, std::initializer_list<tensor*> srcs,
               const custom_params& p) {
  for (tensor* s : srcs)
    if (!s) return nullptr;
  if (!p.fn || srcs.size() > size_t(kMaxSrc) || ne.size() < 1 || ne.size() > size_t(kMaxDims)) {
    ctx.fail("custom: needs a function, at most %d sources and 1-4 dims", kMaxSrc);
    return nullptr;
  }
  tensor* r = ctx.new_tensor(t, int(ne.size()), ne.begin());
  if (!r) return nullptr;
  r->op = op_kind::CUSTOM;
  int i = 0;
  for (tensor* s : srcs) r->src[i++] = s;
  static_assert(sizeof(custom_fn) <= 8 && sizeof(void*) <= 8);
  std::memcpy(&r->op_params[0], &p.fn, sizeof(p.fn));
  std::memcpy(&r->op_params[2], &p.user, sizeof(p.user));
  r->op_params[4] = p.max_threads;
  return r;
}

custom_params params::custom_of(const tensor* t) {
  custom_params p;
  std::memcpy(&p.fn, &t->op_params[0], sizeof(p.fn));
  std::memcpy(&p.user, &t->op_params[2], sizeof(p.user));
  p.max_threads = t->op_params[4];
  return p;
}

}  // namespace v4

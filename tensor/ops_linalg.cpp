// matmul and the expert ("grouped") matmul.
#include "tensor/ops_common.h"

namespace v4 {
using detail::describe;
using detail::have;

tensor* matmul(context& ctx, tensor* w, tensor* x) {
  if (!have({w, x})) return nullptr;
  if (x->type != dtype::f32 || !x->rows_contiguous()) {
    ctx.fail("matmul: x %s must be f32 with contiguous rows", describe(x).c_str());
    return nullptr;
  }
  if (traits(w->type).is_int || !traits(w->type).to_f32) {
    ctx.fail("matmul: weight type of %s is not a number format matmul reads", describe(w).c_str());
    return nullptr;
  }
  if (!w->rows_contiguous()) {
    ctx.fail("matmul: weight %s must have contiguous rows", describe(w).c_str());
    return nullptr;
  }
  if (!detail::check_scales(ctx, "matmul", w)) return nullptr;
  if (w->ne[0] != x->ne[0]) {
    ctx.fail("matmul: K differs: weight %s vs x %s", describe(w).c_str(), describe(x).c_str());
    return nullptr;
  }
  if (x->ne[2] % w->ne[2] != 0 || x->ne[3] % w->ne[3] != 0) {
    ctx.fail("matmul: batch dims of x %s are not multiples of the weight's %s", describe(x).c_str(),
             describe(w).c_str());
    return nullptr;
  }
  const int64_t ne[kMaxDims] = {w->ne[1], x->ne[1], x->ne[2], x->ne[3]};
  return detail::new_node(ctx, op_kind::MATMUL, dtype::f32, ne, {w, x});
}

tensor* matmul_id(context& ctx, tensor* w, tensor* x, tensor* ids) {
  if (!have({w, x, ids})) return nullptr;
  if (x->type != dtype::f32 || !x->rows_contiguous()) {
    ctx.fail("matmul_id: x %s must be f32 with contiguous rows", describe(x).c_str());
    return nullptr;
  }
  if (traits(w->type).is_int || !traits(w->type).to_f32 || !w->rows_contiguous() || w->ne[3] != 1) {
    ctx.fail("matmul_id: experts %s must be a [K, M, E] number-format tensor with contiguous rows",
             describe(w).c_str());
    return nullptr;
  }
  if (!detail::check_scales(ctx, "matmul_id", w)) return nullptr;
  if (ids->type != dtype::i32 || ids->ne[2] != 1 || ids->ne[3] != 1) {
    ctx.fail("matmul_id: ids %s must be i32 [n_used, N]", describe(ids).c_str());
    return nullptr;
  }
  const int64_t n_used = ids->ne[0], n_tok = ids->ne[1];
  if (w->ne[0] != x->ne[0] || x->ne[2] != n_tok || x->ne[3] != 1 || (x->ne[1] != 1 && x->ne[1] != n_used)) {
    ctx.fail("matmul_id: x %s must be [K=%lld, 1 or %lld, %lld] for experts %s and ids %s", describe(x).c_str(),
             (long long)w->ne[0], (long long)n_used, (long long)n_tok, describe(w).c_str(), describe(ids).c_str());
    return nullptr;
  }
  const int64_t ne[kMaxDims] = {w->ne[1], n_used, n_tok, 1};
  return detail::new_node(ctx, op_kind::MATMUL_ID, dtype::f32, ne, {w, x, ids});
}

}  // namespace v4

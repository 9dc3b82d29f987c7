// The op registry tables and the shared node helpers.
#include <cstdio>
#include <string>

#include "tensor/ops_common.h"

namespace v4 {

namespace {
struct op_info {
  const char* name;
  int min_src, max_src;
};
constexpr op_info kOps[] = {
#define X(e, name, min_src, max_src) {name, min_src, max_src},
#include "tensor/ops.def"
#undef X
};
static_assert(sizeof(kOps) / sizeof(kOps[0]) == size_t(op_kind::COUNT));
}  // namespace

const char* op_name(op_kind op) {
  const int i = int(op);
  return i >= 0 && i < int(op_kind::COUNT) ? kOps[i].name : "?";
}

bool op_is_view(op_kind op) { return op == op_kind::VIEW || op == op_kind::RESHAPE || op == op_kind::PERMUTE; }

namespace detail {

tensor* new_node(context& ctx, op_kind op, dtype t, const int64_t ne[kMaxDims], std::initializer_list<tensor*> srcs) {
  tensor* r = ctx.new_tensor(t, kMaxDims, ne);
  if (!r) return nullptr;
  r->op = op;
  int i = 0;
  for (tensor* s : srcs) r->src[i++] = s;
  return r;
}

tensor* new_alias(context& ctx, op_kind op, tensor* a, const int64_t ne[kMaxDims], const size_t nb[kMaxDims],
                  size_t offset, std::initializer_list<tensor*> srcs) {
  tensor* r = ctx.new_tensor(a->type, kMaxDims, ne);
  if (!r) return nullptr;
  for (int i = 0; i < kMaxDims; ++i) r->nb[i] = nb[i];
  r->op = op;
  int i = 0;
  for (tensor* s : srcs) r->src[i++] = s;
  // Aliases always point at the tensor that owns the memory, with the accumulated offset.
  r->view_src = a->base();
  r->view_offs = a->view_offs + offset;
  r->scales = a->scales;
  r->scale_block[0] = a->scale_block[0];
  r->scale_block[1] = a->scale_block[1];
  return r;
}

std::string describe(const tensor* t) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "%s[%lld, %lld, %lld, %lld] %s", t->name[0] ? t->name : "", (long long)t->ne[0],
                (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3], type_name(t->type));
  return buf;
}

bool can_broadcast(const tensor* b, const tensor* a) {
  for (int i = 0; i < kMaxDims; ++i)
    if (b->ne[i] != a->ne[i] && b->ne[i] != 1) return false;
  return true;
}

bool check_scales(context& ctx, const char* op, const tensor* t) {
  if (!traits(t->type).scaled) return true;
  const tensor* s = t->scales;
  const int64_t bk = t->scale_block[0], bm = t->scale_block[1];
  if (!s || s->type != dtype::e8m0 || bk <= 0 || bm <= 0 || s->ne[0] != (t->ne[0] + bk - 1) / bk ||
      s->ne[1] != (t->ne[1] + bm - 1) / bm || s->ne[2] != t->ne[2] || s->ne[3] != t->ne[3] ||
      !s->rows_contiguous() || (t->type == dtype::mxfp4 && bk != 32) || bk % 32 != 0) {
    ctx.fail("%s: %s needs e8m0 scales of shape [ceil(ne0/%lld), ceil(ne1/%lld), ne2, ne3]%s%s", op,
             describe(t).c_str(), (long long)bk, (long long)bm, s ? ", got " : " (none attached)",
             s ? describe(s).c_str() : "");
    return false;
  }
  return true;
}

}  // namespace detail
}  // namespace v4

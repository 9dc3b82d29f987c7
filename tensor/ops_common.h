// Helpers shared by the op constructors (private to tensor/).
#pragma once

#include "tensor/ops.h"

namespace v4::detail {

// A new f32 (or type t) node shaped like `shape` with op and sources set.
tensor* new_node(context& ctx, op_kind op, dtype t, const int64_t ne[kMaxDims],
                 std::initializer_list<tensor*> srcs);
// An alias of a (a view or an in-place result): same memory, given shape and strides.
tensor* new_alias(context& ctx, op_kind op, tensor* a, const int64_t ne[kMaxDims], const size_t nb[kMaxDims],
                  size_t offset, std::initializer_list<tensor*> srcs);

// Shape text for messages: "[4096, 7, 1, 1] f32".
std::string describe(const tensor* t);

// Returns false (no new error) when any source is null: an earlier op already failed.
inline bool have(std::initializer_list<const tensor*> ts) {
  for (const tensor* t : ts)
    if (!t) return false;
  return true;
}

bool can_broadcast(const tensor* b, const tensor* a);  // b.ne[i] in {a.ne[i], 1}

// For scaled types (type_traits::scaled): t carries an e8m0 scales tensor whose shape matches
// t's shape and scale_block (see tensor.h). Records an error naming `op` otherwise.
bool check_scales(context& ctx, const char* op, const tensor* t);

}  // namespace v4::detail

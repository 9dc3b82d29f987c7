// The CPU backend's kernel table: one function per op of tensor/ops.def, declared from the
// registry itself, so an op without a CPU kernel fails to link (the CPU supports every op).
#pragma once

#include "tensor/ops.h"

namespace v4::cpu {

struct exec {
  int n_threads = 1;
};

using kernel_fn = void (*)(const exec& ex, tensor* dst);

#define X(e, name, min_src, max_src) void kernel_##e(const exec& ex, tensor* dst);
#include "tensor/ops.def"
#undef X

kernel_fn kernel_for(op_kind op);

}  // namespace v4::cpu

// Quantization round-trips (QAT simulation): fp8_roundtrip, fp4_roundtrip (act_quant_fp8 is an
// fp8_roundtrip with block 128, inline in ops.h).
#include <cstdint>

#include "tensor/ops_common.h"

namespace v4 {
using detail::describe;
using detail::have;

namespace {

// Amax floors of the official kernels (DeepSeek-V4 inference/kernel.py): act_quant_kernel
// `T.max(amax, 1e-4)`, fp4_quant_kernel `T.max(amax, 6 * (2**-126))`. quant/fp8.h and quant/mxfp4.h
// hold the same constants for the kernels; kept here so tensor/ does not depend on quant/.
constexpr float kFp8Floor = 1e-4f;
constexpr float kFp4Floor = 6.0f * 0x1p-126f;

tensor* roundtrip(context& ctx, op_kind op, tensor* a, int block, int64_t n, float floor) {
  if (!have({a})) return nullptr;
  if (a->type != dtype::f32) {
    ctx.fail("%s: %s must be f32 (cast() it first)", op_name(op), describe(a).c_str());
    return nullptr;
  }
  if (block < 1) {
    ctx.fail("%s: block %d must be >= 1", op_name(op), block);
    return nullptr;
  }
  if (n < 0 || n > a->ne[0] || a->ne[0] > INT32_MAX) {
    ctx.fail("%s: n = %lld must be in [0, %lld] (dim 0 of %s; 0 = all)", op_name(op), (long long)n,
             (long long)a->ne[0], describe(a).c_str());
    return nullptr;
  }
  tensor* r = detail::new_node(ctx, op, dtype::f32, a->ne, {a});
  if (!r) return nullptr;
  r->set_param_i(0, block);
  r->set_param_i(1, int32_t(n == 0 ? a->ne[0] : n));
  r->set_param_f(2, floor);
  return r;
}

}  // namespace

tensor* fp8_roundtrip(context& ctx, tensor* a, int block, int64_t n) {
  return roundtrip(ctx, op_kind::FP8_ROUNDTRIP, a, block, n, kFp8Floor);
}

tensor* fp4_roundtrip(context& ctx, tensor* a, int block, int64_t n) {
  return roundtrip(ctx, op_kind::FP4_ROUNDTRIP, a, block, n, kFp4Floor);
}

int fp8_rounded_block(const tensor* a) {
  switch (a->op) {
    case op_kind::FP8_ROUNDTRIP: return a->param_i(1) == a->ne[0] ? a->param_i(0) : 0;
    case op_kind::RMS_NORM_W:
    case op_kind::SWIGLU: return a->param_i(1);
    case op_kind::NORM_ROPE: return a->param_i(10) == a->ne[0] ? a->param_i(9) : 0;
    default: return 0;
  }
}

int fp8_rounded_block(const tensor* a, size_t offs, size_t bytes) {
  if (a->op != op_kind::HC_PRE) {
    const int block = fp8_rounded_block(a);
    return block > 0 && a->is_contiguous() && a->ne[0] % block == 0 ? block : 0;
  }
  const hc_pre_layout l = hc_pre_layout_of(a);
  const int block = a->param_i(6);
  const size_t q0 = size_t(l.q) * sizeof(float), q1 = size_t(l.w) * sizeof(float);
  if (!l.fp8 || l.D % block != 0 || l.q % block != 0 || offs < q0 || offs + bytes > q1) return 0;
  return block;
}

}  // namespace v4

// Quantization round-trip kernels (FP8_ROUNDTRIP, FP4_ROUNDTRIP): the row functions of quant/.
// Sources may be strided; results are contiguous f32.
#include <cstring>
#include <vector>

#include "backends/cpu/ops/common.h"
#include "quant/fp8.h"
#include "quant/mxfp4.h"

namespace v4::cpu {

namespace {

// Calls f(x, y, n) on each row: x the source row (gathered when dim 0 is strided), y the result row.
template <typename F>
void rows(const exec& ex, tensor* dst, F&& f) {
  const tensor* a = dst->src[0];
  const int64_t n = dst->ne[0];
  parallel_for(ex, dst->nrows(), n * 8, [&](int64_t r) {
    const row_index i = split_row(dst, r);
    const char* p = at(a, 0, i.i1, i.i2, i.i3);
    float* y = frow(dst, r);
    if (a->nb[0] == sizeof(float)) {
      f(reinterpret_cast<const float*>(p), y, n);
    } else {
      thread_local std::vector<float> tmp;
      tmp.resize(size_t(n));
      for (int64_t k = 0; k < n; ++k) std::memcpy(&tmp[size_t(k)], p + k * a->nb[0], sizeof(float));
      f(tmp.data(), y, n);
    }
  });
}

}  // namespace

void kernel_FP8_ROUNDTRIP(const exec& ex, tensor* dst) {
  const int block = dst->param_i(0);
  const int64_t nq = dst->param_i(1);
  const float amax_floor = dst->param_f(2);
  rows(ex, dst, [&](const float* x, float* y, int64_t n) {
    quant::fp8_roundtrip_row(x, y, nq, block, amax_floor);
    if (n > nq) std::memcpy(y + nq, x + nq, size_t(n - nq) * sizeof(float));
  });
}

void kernel_FP4_ROUNDTRIP(const exec& ex, tensor* dst) {
  const int block = dst->param_i(0);
  const int64_t nq = dst->param_i(1);
  const float amax_floor = dst->param_f(2);
  rows(ex, dst, [&](const float* x, float* y, int64_t n) {
    quant::fp4_roundtrip_row(x, y, nq, block, amax_floor);
    if (n > nq) std::memcpy(y + nq, x + nq, size_t(n - nq) * sizeof(float));
  });
}

}  // namespace v4::cpu

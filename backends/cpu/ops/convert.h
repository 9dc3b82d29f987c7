// Row conversions between storage types and f32 (vectorised for f16/bf16, traits otherwise).
#pragma once

#include "backends/cpu/ops/common.h"

namespace v4::cpu {

inline void row_to_f32(dtype t, const void* src, float* dst, int64_t n) {
  const vec::table& v = vec::best();
  switch (t) {
    case dtype::f32: std::memcpy(dst, src, size_t(n) * sizeof(float)); return;
    case dtype::f16: v.f16_to_f32(static_cast<const uint16_t*>(src), dst, n); return;
    case dtype::bf16: v.bf16_to_f32(static_cast<const uint16_t*>(src), dst, n); return;
    default: traits(t).to_f32(src, dst, n);
  }
}

inline void row_from_f32(dtype t, const float* src, void* dst, int64_t n) {
  const vec::table& v = vec::best();
  switch (t) {
    case dtype::f32: std::memcpy(dst, src, size_t(n) * sizeof(float)); return;
    case dtype::f16: v.f32_to_f16(src, static_cast<uint16_t*>(dst), n); return;
    case dtype::bf16: v.f32_to_bf16(src, static_cast<uint16_t*>(dst), n); return;
    default: traits(t).from_f32(src, dst, n);
  }
}

}  // namespace v4::cpu

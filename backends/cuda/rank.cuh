// The ranking of top_k (tensor/ops.h) as 64-bit keys, shared by top_k / argsort (ops_select.cu)
// and route_topk (ops_route.cu) so that both pick the same indices.
//
// Every element becomes one key whose descending order is the order tensor/ops.h asks for: the
// high 32 bits rank the value (larger first; NaN below every number; +0 and -0 equal), the low 32
// bits are ~index (the lower index first among equal values). The keys of one row are distinct.
#pragma once

#include <cstdint>

namespace v4::cuda {

// Rank of a value, larger ranks first; real values get keys >= 2, so key 0 is free as padding.
__device__ inline uint32_t value_rank(float x) {
  if (x != x) return 1u;  // NaN: below every number
  if (x == 0.0f) x = 0.0f;  // -0 ties with +0
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
// Ascending orders rank -x the same way (NaN still last).
__device__ inline uint64_t make_key(float x, int64_t index, bool descending) {
  return (uint64_t(value_rank(descending ? x : -x)) << 32) | uint64_t(~uint32_t(index));
}
__device__ inline int32_t key_index(uint64_t key) { return int32_t(~uint32_t(key)); }

}  // namespace v4::cuda

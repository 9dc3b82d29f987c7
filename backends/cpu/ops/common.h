// Helpers for CPU kernels: row addressing and OpenMP work splitting.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include <omp.h>

#include "backends/cpu/ops/kernels.h"
#include "backends/cpu/vec.h"

namespace v4::cpu {

// Rows are the dim-0 vectors; row r of t sits at (i1, i2, i3) = (r % ne1, r / ne1 % ne2, r / (ne1*ne2)).
struct row_index {
  int64_t i1, i2, i3;
};
inline row_index split_row(const tensor* t, int64_t r) {
  return {r % t->ne[1], (r / t->ne[1]) % t->ne[2], r / (t->ne[1] * t->ne[2])};
}
inline char* at(const tensor* t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
  return static_cast<char*>(t->data) + i0 * t->nb[0] + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
}
inline char* row(const tensor* t, int64_t r) {
  const row_index i = split_row(t, r);
  return at(t, 0, i.i1, i.i2, i.i3);
}
inline float* frow(const tensor* t, int64_t r) { return reinterpret_cast<float*>(row(t, r)); }
// The n f32 values of a dim-0 vector starting at p with element stride nb0 bytes, contiguous:
// p itself when packed, else gathered into tmp (a caller's buffer, reused across calls).
inline const float* packed_f32(const char* p, int64_t nb0, int64_t n, std::vector<float>& tmp) {
  if (nb0 == int64_t(sizeof(float))) return reinterpret_cast<const float*>(p);
  tmp.resize(size_t(n));
  for (int64_t k = 0; k < n; ++k) std::memcpy(&tmp[size_t(k)], p + k * nb0, sizeof(float));
  return tmp.data();
}

// Threads worth using for `work` elementary operations (tiny ops stay on one thread).
inline int threads_for(const exec& ex, int64_t work) {
  constexpr int64_t kMinWorkPerThread = 16384;
  const int64_t n = work / kMinWorkPerThread;
  return int(n < 1 ? 1 : n < ex.n_threads ? n : ex.n_threads);
}

// Calls f(r) for every r in [0, n), rows split evenly over the threads.
template <typename F>
void parallel_for(const exec& ex, int64_t n, int64_t work_per_item, F&& f) {
  const int nt = threads_for(ex, n * work_per_item);
  if (nt <= 1) {
    for (int64_t r = 0; r < n; ++r) f(r);
    return;
  }
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < n; ++r) f(r);
}

}  // namespace v4::cpu

// Private to the CPU matmul: per-ISA entry points (one *_run per arch file) and the small
// helpers every arch file shares (thread split, scratch memory).
//
// The helpers below have internal linkage on purpose. This header is included by files built
// with different -m flags (matmul_avx512.cpp gets -mavx512f ...). An inline function with
// external linkage instantiated in several of them is merged by the linker into ONE copy, which
// may be the AVX-512 one, and then crashes the scalar path on an AVX2-only host. For the same
// reason the arch files use no STL containers or algorithms (their out-of-line template code is
// merged the same way); scratch memory comes from mm_scratch(), defined in generic matmul.cpp.
#pragma once

#include <omp.h>
#if defined(__AVX512F__)
// GCC 12 warns about the deliberately undefined vectors inside its own AVX-512 intrinsics
// (_mm512_undefined_ps and friends; GCC bug 105593, fixed in GCC 13). The AVX-512 arch files
// get <immintrin.h> from here, with those two warnings off for the header's own lines.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include <cstddef>
#include <cstdint>

#include "backends/cpu/matmul.h"

namespace v4::cpu::mm_arch {

// Entry points. Each one computes the whole problem (M, N >= 1, K >= 0) with at most n_threads
// OpenMP threads; the caller (matmul.cpp) has checked the host and the weight type.
#if defined(__x86_64__)
void avx2_run(const mm_problem& p, int n_threads);         // f32 / f16 / bf16, exact
void avx512_run(const mm_problem& p, int n_threads);       // f32 / f16 / bf16, exact
void avx512bf16_run(const mm_problem& p, int n_threads);   // bf16 only, x rounded to bf16
void amx_run(const mm_problem& p, int n_threads);          // bf16 only, x rounded to bf16
#endif
#if defined(__aarch64__)
void neon_run(const mm_problem& p, int n_threads);         // f32 / f16 / bf16, exact
#endif

// Scratch memory, 64-byte aligned, owned by the calling thread and reused across calls (grown
// on demand, never shrunk). Slot kShared is taken by the thread that calls run() before it
// opens its parallel region (data all threads read); slot kPrivate by each worker inside it.
// Returns nullptr when the allocation fails.
enum scratch_slot { kShared = 0, kPrivate = 1 };
void* mm_scratch(scratch_slot slot, size_t bytes);

namespace {

inline int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return div_up(a, b) * b; }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Threads worth using for this much work: each thread should get at least ~64K multiply-adds,
// otherwise opening the parallel region (a few microseconds) costs more than it saves. Never
// more than asked for.
inline int useful_threads(const mm_problem& p, int n_threads) {
  const int64_t macs = p.M * p.N * max64(p.K, 1);
  const int64_t by_work = max64(1, macs / (1 << 16));
  return int(min64(max64(1, n_threads), by_work));
}

// body(tid, nth) on nth threads of one OpenMP team (inline when nth == 1). nth is the team size
// OpenMP actually gave (it can be smaller than asked when called from a nested region).
template <class F>
inline void parallel(int n_threads, F&& body) {
  if (n_threads <= 1) {
    body(0, 1);
    return;
  }
#pragma omp parallel num_threads(n_threads)
  body(omp_get_thread_num(), omp_get_num_threads());
}

// Weight rows [0, M) handed out in chunks from a shared counter (decode): chunks of whole tiles,
// at least chunk_bytes of weights, at least 4 per thread, so a thread the OS deschedules (a shared
// host) leaves its share to the others instead of holding the whole call up. Each output is still
// computed by one thread in a fixed order: results do not depend on the thread count.
class row_chunks {
 public:
  row_chunks(int64_t M, size_t w_stride, int nth, int64_t tile, int64_t chunk_bytes) : M_(M) {
    const int64_t by_bytes = round_up(div_up(chunk_bytes, max64(1, int64_t(w_stride))), tile);
    chunk_ = max64(tile, min64(by_bytes, round_up(div_up(M, int64_t(nth) * 4), tile)));
  }
  // The next chunk [*m0, *m1), or false when all are taken (any thread, any time).
  bool take(int64_t* m0, int64_t* m1) {
    int64_t c;
#pragma omp atomic capture
    c = next_++;
    *m0 = c * chunk_;
    *m1 = min64(M_, *m0 + chunk_);
    return *m0 < M_;
  }

 private:
  int64_t M_, chunk_ = 0, next_ = 0;
};

// Thread tid's share [*b, *e) of [0, n), in whole units of `align` (the last share takes the
// remainder). Shares differ by at most one unit.
inline void split(int64_t n, int64_t align, int tid, int nth, int64_t* b, int64_t* e) {
  const int64_t units = div_up(n, align);
  const int64_t q = units / nth, r = units % nth;
  const int64_t ub = tid * q + min64(tid, r);
  const int64_t ue = ub + q + (tid < r ? 1 : 0);
  *b = min64(n, ub * align);
  *e = min64(n, ue * align);
}

// Splits nth threads into a tm x tn grid over (M units, N units) with the smallest largest
// share; ties go to more threads over M (each thread then streams different weights).
inline void grid(int64_t m_units, int64_t n_units, int nth, int* tm, int* tn) {
  int64_t best = -1;
  for (int d = nth; d >= 1; --d) {
    if (nth % d) continue;
    const int64_t share = div_up(m_units, d) * div_up(n_units, nth / d);
    if (best < 0 || share < best) {
      best = share;
      *tm = d;
      *tn = nth / d;
    }
  }
}

// y = 0 for K == 0 (an empty sum); every kernel calls this first.
inline bool handle_empty(const mm_problem& p) {
  if (p.M <= 0 || p.N <= 0) return true;
  if (p.K > 0) return false;
  for (int64_t n = 0; n < p.N; ++n) {
    float* y = reinterpret_cast<float*>(reinterpret_cast<char*>(p.y) + n * p.y_stride);
    for (int64_t m = 0; m < p.M; ++m) y[m] = 0.0f;
  }
  return true;
}

inline const char* row_ptr(const void* base, size_t stride, int64_t i) {
  return static_cast<const char*>(base) + size_t(i) * stride;
}
inline const float* xrow(const mm_problem& p, int64_t n) {
  return reinterpret_cast<const float*>(row_ptr(p.x, p.x_stride, n));
}
inline float* yrow(const mm_problem& p, int64_t n) {
  return reinterpret_cast<float*>(reinterpret_cast<char*>(p.y) + size_t(n) * p.y_stride);
}

// The part of p for weight rows [m0, m1) and x rows [n0, n1).
inline mm_problem sub_problem(const mm_problem& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  mm_problem s = p;
  s.w = row_ptr(p.w, p.w_stride, m0);
  s.x = xrow(p, n0);
  s.y = yrow(p, n0) + m0;
  s.M = m1 - m0;
  s.N = n1 - n0;
  return s;
}

}  // namespace

// ---- helpers for the files built with AVX-512 (avx512, avx512bf16, amx) ----------------------
#if defined(__AVX512F__)
namespace {

inline __mmask16 first_lanes(int64_t n) { return __mmask16((1u << n) - 1); }  // n in [0, 16]
inline __mmask32 first_lanes32(int64_t n) { return n >= 32 ? ~__mmask32(0) : __mmask32((1u << n) - 1); }

// In-register transpose of a 16 x 16 block of 32-bit elements: lane j of r[i] goes to lane i
// of r[j]. (unpack pairs, shuffle quads, then two rounds of 128-bit lane shuffles)
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0x88);
    t[4 + i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0xDD);
    t[8 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0x88);
    t[12 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0xDD);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
    r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xDD);
    r[4 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0x88);
    r[12 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0xDD);
  }
}

#if defined(__AVX512BF16__)
// x[k .. k+32) rounded to bf16 (round to nearest even; vcvtne2ps2bf16 also flushes f32
// subnormals to zero), as one zmm of 32 bf16 = 16 pairs (k, k+1). Elements at or past K are 0.
inline __m512 load_x_bf16x32(const float* x, int64_t k, int64_t K) {
  const int64_t n = K - k;
  const __m512 lo = _mm512_maskz_loadu_ps(first_lanes(min64(16, n)), x + k);
  const __m512 hi = _mm512_maskz_loadu_ps(first_lanes(max64(0, min64(16, n - 16))), x + k + 16);
  return reinterpret_cast<__m512>(_mm512_cvtne2ps_pbh(hi, lo));
}
#endif

}  // namespace
#endif  // __AVX512F__

}  // namespace v4::cpu::mm_arch

// Selection and reordering: gather, top_k, argsort.
//
// Ranking: every element becomes one 64-bit key (rank.cuh) whose descending order is the order
// tensor/ops.h asks for; ascending argsort ranks -x the same way (NaN still last). The keys of one
// row are all distinct, so every result is the unique sorted order, whatever the algorithm.
//
// Kernels (one block per row or row segment, the keys in shared memory):
//   * n <= cap (cap = 8192 keys, 64 KiB, where the GPU gives a block that much shared memory,
//     else 4096): the row's keys are loaded once; argsort (and top_k with k > n/2) sorts them
//     (bitonic: strides >= 32 through shared memory, smaller ones by warp shuffles); top_k with k <= n/2 finds the k-th key by radix select (passes of 8 bits over
//     shared memory, skipping bits all remaining keys share, stopping when the digit's bucket
//     holds exactly the keys still needed), keeps the keys at or above it, and sorts only those k.
//   * top_k with n > cap and k <= cap/2 (the indexer: up to 128K scores per query, k = 512): rows
//     are cut into segments of cap keys, each segment's top k kept (unsorted, padded with key 0,
//     which ranks below every real key) in scratch memory by its own block, until one segment
//     per row remains, which gives the sorted result: a row of 128K scores with k = 512 takes 16
//     blocks, then one (two launches).
//   * otherwise (argsort of n > cap, or top_k with n > cap and k > cap/2): a bitonic sort of each
//     row's keys in scratch memory, one launch per merge step (correct, slow; the model never
//     does this).
#include <algorithm>
#include <cstdint>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/rank.cuh"

namespace v4::cuda {
namespace {

// Threads per block: many for the big segments (loads in flight), few for short rows (every
// pass of the select and every step of the sort ends in a barrier of all the block's warps).
inline int threads_for(int64_t m) { return m > 2048 ? 1024 : 256; }

__device__ inline void row_coords(const tview& a, int64_t r, int64_t* i1, int64_t* i2, int64_t* i3) {
  *i1 = r % a.ne[1];
  *i2 = (r / a.ne[1]) % a.ne[2];
  *i3 = r / (a.ne[1] * a.ne[2]);
}

__device__ inline uint32_t next_pow2(uint32_t n) {
  uint32_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// Sorts keys[0, n2) (n2 a power of two) in decreasing order. All threads of the block call it.
// Merge steps with a stride of 32 or more go through shared memory (a barrier each); the rest
// of each merge (strides 16 .. 1, pairs inside runs of 32 keys) is done by one warp per run with
// shuffles, one barrier for all of them.
__device__ void bitonic_desc(uint64_t* keys, uint32_t n2) {
  const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  for (uint32_t size = 2; size <= n2; size <<= 1) {
    uint32_t stride = size >> 1;
    for (; stride >= 32 || (n2 < 64 && stride > 0); stride >>= 1) {
      for (uint32_t i = threadIdx.x; i < n2 / 2; i += blockDim.x) {
        const uint32_t lo = 2 * i - (i & (stride - 1)), hi = lo + stride;  // i = q*stride + r -> 2q*stride + r
        const bool up = (lo & size) != 0;  // this pair's half ends ascending (the last merge: none)
        const uint64_t x = keys[lo], y = keys[hi];
        if (up ? x > y : x < y) {
          keys[lo] = y;
          keys[hi] = x;
        }
      }
      __syncthreads();
    }
    if (stride == 0) continue;
    for (uint32_t base = warp * 32; base < n2; base += n_warps * 32) {
      const uint32_t idx = base + lane;
      const bool up = (idx & size) != 0;
      uint64_t v = keys[idx];
      for (uint32_t st = stride; st > 0; st >>= 1) {
        const uint64_t o = __shfl_xor_sync(0xffffffffu, v, st);
        const bool keep_max = ((lane & st) == 0) != up;  // a descending pair's lower index keeps the larger
        v = keep_max ? (v > o ? v : o) : (v < o ? v : o);
      }
      keys[idx] = v;
    }
    __syncthreads();
  }
}

// Radix select over keys[0, m) in shared memory: the keys at or above the k-th largest are those
// with (key & *mask) >= *prefix on return (exactly k of them: keys are distinct). hist: 256 words.
// Each pass first finds the bits on which the keys still in play agree (AND / OR over them): those
// join the prefix, and the pass's 8-bit digit starts at the highest bit where they differ. So no
// pass is spent on bits every candidate shares (e.g. the high index bits of many tied values).
__device__ void radix_select(const uint64_t* keys, uint32_t m, uint32_t k, uint32_t* hist, uint64_t* prefix,
                             uint64_t* mask) {
  __shared__ unsigned long long s_prefix, s_mask, s_and[32], s_or[32];  // AND / OR per warp
  __shared__ uint32_t s_need, s_done;
  if (threadIdx.x == 0) {
    s_prefix = 0;
    s_mask = 0;
    s_need = k;
    s_done = 0;
  }
  const int lane = threadIdx.x % 32;
  const int n_warps = blockDim.x / 32;
  for (int pass = 0; pass < 9; ++pass) {
    for (uint32_t i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    const uint64_t pre0 = s_prefix, msk0 = s_mask;
    unsigned long long all = ~0ull, any = 0;
    for (uint32_t i = threadIdx.x; i < m; i += blockDim.x) {
      const uint64_t key = keys[i];
      if ((key & msk0) == pre0) {
        all &= key;
        any |= key;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      all &= __shfl_xor_sync(0xffffffffu, all, o);
      any |= __shfl_xor_sync(0xffffffffu, any, o);
    }
    if (lane == 0) {
      s_and[threadIdx.x / 32] = all;
      s_or[threadIdx.x / 32] = any;
    }
    __syncthreads();
    all = ~0ull;
    any = 0;
    for (int w = 0; w < n_warps; ++w) {
      all &= s_and[w];
      any |= s_or[w];
    }
    const uint64_t diff = all ^ any;
    if (diff == 0) {  // one key left in play: it is the k-th
      if (threadIdx.x == 0) {
        s_prefix = all;
        s_mask = ~0ull;
      }
      __syncthreads();
      break;
    }
    const int high = 63 - __clzll((long long)diff);
    const uint64_t fixed = high == 63 ? 0 : ~((uint64_t(2) << high) - 1);  // the bits above `high`
    const uint64_t pre = pre0 | (all & fixed), msk = msk0 | fixed;
    const int shift = high >= 7 ? high - 7 : 0;
    for (uint32_t i = threadIdx.x; i < m; i += blockDim.x) {
      const uint64_t key = keys[i];
      if ((key & msk) == pre) atomicAdd(&hist[uint32_t(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      // Lane l holds the counts of digits 255-8l .. 248-8l; a scan from the top finds the digit
      // whose bucket holds the need-th key.
      uint32_t c[8], tot = 0;
      for (int j = 0; j < 8; ++j) tot += c[j] = hist[255 - 8 * lane - j];
      const uint32_t need = s_need;
      __syncwarp();  // every lane has read s_need before one of them replaces it
      uint32_t incl = tot;
      for (int o = 1; o < 32; o <<= 1) {
        const uint32_t v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
      }
      const uint32_t excl = incl - tot;
      if (excl < need && need <= incl) {
        uint32_t above = excl;
        for (int j = 0; j < 8; ++j) {
          if (above + c[j] >= need) {
            const uint64_t d = uint64_t(255 - 8 * lane - j);
            s_prefix = pre | (d << shift);
            s_mask = msk | (uint64_t(255) << shift);
            s_need = need - above;
            s_done = (c[j] == need - above) ? 1u : 0u;  // the whole bucket is taken: stop here
            break;
          }
          above += c[j];
        }
      }
    }
    __syncthreads();
    if (s_done) break;
  }
  *prefix = s_prefix;
  *mask = s_mask;
}

// The keys of row r's positions [p0, p0 + m): from the f32 row itself (level 0) or from a
// previous level's candidate list (keys already made).
struct key_source {
  tview a;              // level 0
  const uint64_t* cand;  // later levels: [per_row, rows]
  int64_t per_row;       // positions per row
  bool descending;
  // Row r's start (level 0: its f32 values; later levels: its candidates), found once per block.
  __device__ const char* row(int64_t r) const {
    if (cand) return reinterpret_cast<const char*>(cand + r * per_row);
    int64_t i1, i2, i3;
    row_coords(a, r, &i1, &i2, &i3);
    return v4::cuda::at(a, 0, i1, i2, i3);
  }
  __device__ uint64_t at_pos(const char* row, int64_t p) const {
    if (cand) return reinterpret_cast<const uint64_t*>(row)[p];
    return make_key(*reinterpret_cast<const float*>(row + p * a.nb[0]), p, descending);
  }
};

// One block per (row, segment): loads the segment's keys, keeps its top k (k >= m: all of them),
// and either writes them to out_keys (unsorted, padded with 0 up to k) or, when out_idx is set,
// sorts them and writes their indices to row r of out_idx.
__global__ void select_kernel(key_source src, int64_t seg, int64_t n_seg, uint32_t k, bool sort_all, uint64_t* out_keys,
                              tview out_idx) {
  pdl_wait();
  extern __shared__ uint64_t smem[];
  __shared__ uint32_t hist[256];
  __shared__ uint32_t n_taken;
  const int64_t r = blockIdx.x, s = blockIdx.y;
  const int64_t p0 = s * seg;
  const int64_t left = src.per_row - p0;
  const uint32_t m = uint32_t(left < seg ? left : seg);
  uint64_t* keys = smem;
  const bool keep_all = k >= m || sort_all;
  const uint32_t n_keys2 = keep_all ? next_pow2(m) : m;
  // Several loads in flight per thread (one at a time, each would wait for memory).
  constexpr uint32_t kBatch = 8;
  const char* row = src.row(r);
  for (uint32_t i0 = threadIdx.x; i0 < n_keys2; i0 += kBatch * blockDim.x) {
    uint64_t v[kBatch];
#pragma unroll
    for (uint32_t b = 0; b < kBatch; ++b) {
      const uint32_t i = i0 + b * blockDim.x;
      v[b] = i < m ? src.at_pos(row, p0 + i) : 0;
    }
#pragma unroll
    for (uint32_t b = 0; b < kBatch; ++b) {
      const uint32_t i = i0 + b * blockDim.x;
      if (i < n_keys2) keys[i] = v[b];
    }
  }
  __syncthreads();

  uint64_t* kept = keys;  // keep_all: every key, already in place
  uint32_t n_kept = m;
  if (!keep_all) {
    uint64_t prefix, mask;
    radix_select(keys, m, k, hist, &prefix, &mask);
    kept = smem + m;  // room for next_pow2(k) keys after the m loaded ones
    if (threadIdx.x == 0) n_taken = 0;
    __syncthreads();
    // One shared-memory atomic per warp (k of them on one counter would serialise).
    const unsigned lane = threadIdx.x % 32;
    for (uint32_t base = 0; base < m; base += blockDim.x) {
      const uint32_t i = base + threadIdx.x;
      const bool take = i < m && (keys[i] & mask) >= prefix;
      const unsigned ballot = __ballot_sync(0xffffffffu, take);
      uint32_t first = 0;
      if (lane == 0 && ballot) first = atomicAdd(&n_taken, uint32_t(__popc(ballot)));
      first = __shfl_sync(0xffffffffu, first, 0);
      if (take) kept[first + __popc(ballot & ((1u << lane) - 1u))] = keys[i];
    }
    __syncthreads();
    n_kept = k;
  }
  const uint32_t n_out = k < n_kept ? k : n_kept;
  if (out_idx.data == nullptr) {  // a candidate list for the next level: order does not matter
    uint64_t* out = out_keys + (r * n_seg + s) * int64_t(k);
    for (uint32_t i = threadIdx.x; i < k; i += blockDim.x) out[i] = i < n_out ? kept[i] : 0;
    return;
  }
  const uint32_t n2 = next_pow2(n_kept);
  for (uint32_t i = n_kept + threadIdx.x; i < n2; i += blockDim.x) kept[i] = 0;
  __syncthreads();
  bitonic_desc(kept, n2);
  int64_t i1, i2, i3;
  row_coords(out_idx, r, &i1, &i2, &i3);
  for (uint32_t i = threadIdx.x; i < n_out; i += blockDim.x)
    *reinterpret_cast<int32_t*>(v4::cuda::at(out_idx, i, i1, i2, i3)) = key_index(kept[i]);
}

// The global-memory fallback: keys[r, 0..n2) filled, sorted by one launch per bitonic step.
__global__ void fill_keys_kernel(tview a, bool descending, int64_t n2, int64_t total, uint64_t* keys) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / n2, p = i % n2;
    int64_t i1, i2, i3;
    row_coords(a, r, &i1, &i2, &i3);
    keys[i] = p < a.ne[0] ? make_key(*reinterpret_cast<const float*>(v4::cuda::at(a, p, i1, i2, i3)), p, descending) : 0;
  }
}
__global__ void bitonic_step_kernel(uint64_t* keys, int64_t n2, int64_t size, int64_t stride, int64_t pairs) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pairs; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / (n2 / 2), q = i % (n2 / 2);
    const int64_t lo = 2 * q - (q & (stride - 1)), hi = lo + stride;  // q = j*stride + r -> 2j*stride + r
    const bool up = (lo & size) != 0;
    uint64_t* row = keys + r * n2;
    const uint64_t x = row[lo], y = row[hi];
    if (up ? x > y : x < y) {
      row[lo] = y;
      row[hi] = x;
    }
  }
}
__global__ void write_idx_kernel(const uint64_t* keys, int64_t n2, tview y, int64_t total) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / y.ne[0], j = i % y.ne[0];
    int64_t i1, i2, i3;
    row_coords(y, r, &i1, &i2, &i3);
    *reinterpret_cast<int32_t*>(v4::cuda::at(y, j, i1, i2, i3)) = key_index(keys[r * n2 + j]);
  }
}

// y[j, r] = a[idx[j, r], r].
__global__ void gather_kernel(tview y, tview a, tview idx, int64_t n) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t c[4];
    unravel(i, y.ne, c);
    const int32_t k = *reinterpret_cast<const int32_t*>(v4::cuda::at(idx, c));
    *reinterpret_cast<float*>(v4::cuda::at(y, c)) = *reinterpret_cast<const float*>(v4::cuda::at(a, k, c[1], c[2], c[3]));
  }
}

// y [rows, T]: 0 where row i is complete at token t's position, else -inf (tensor/ops.h).
__global__ void rows_mask_kernel(tview y, tview pos, int64_t ratio, int64_t n) {
  pdl_wait();
  const int64_t rows = y.ne[0];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i % rows, t = i / rows;
    const int64_t visible = (int64_t(*reinterpret_cast<const int32_t*>(v4::cuda::at(pos, t, 0, 0, 0))) + 1) / ratio;
    *reinterpret_cast<float*>(v4::cuda::at(y, r, t, 0, 0)) = r < visible ? 0.0f : -INFINITY;
  }
}

// Keys per block in shared memory: 8192 (64 KiB, + up to 32 KiB for the kept half) where the GPU
// allows a block that much, else 4096.
int64_t segment_cap() {
  static const int64_t cap = [] {
    int dev = 0, optin = 0;
    cudaGetDevice(&dev);
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
      cudaGetLastError();
      optin = 48 << 10;
    }
    const int64_t c = optin >= (96 << 10) + 4096 ? 8192 : 4096;
    cudaFuncSetAttribute(select_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(c * 8 + c * 4));
    return c;
  }();
  return cap;
}

uint32_t pow2_at_least(int64_t n) {
  uint32_t p = 1;
  while (int64_t(p) < n) p <<= 1;
  return p;
}

bool sort_global(cudaStream_t s, tensor* dst, bool descending, std::string* error) {
  const tview a = view_of(dst->src[0]), y = view_of(dst);
  const int64_t rows = dst->src[0]->nrows(), n2 = pow2_at_least(a.ne[0]);
  auto* keys = static_cast<uint64_t*>(scratch(s, 0, size_t(rows * n2) * 8, error));
  if (!keys) return false;
  launch(fill_keys_kernel, grid_for(rows * n2), kBlock, 0, s, a, descending, n2, rows * n2, keys);
  for (int64_t size = 2; size <= n2; size <<= 1)
    for (int64_t stride = size / 2; stride > 0; stride /= 2)
      launch(bitonic_step_kernel, grid_for(rows * n2 / 2), kBlock, 0, s, keys, n2, size, stride, rows * n2 / 2);
  launch(write_idx_kernel, grid_for(dst->nelements()), kBlock, 0, s, keys, n2, y, dst->nelements());
  return launched(op_name(dst->op), error);
}

// Sorted indices of the k first keys of each row (k = n: argsort).
bool rank_rows(cudaStream_t s, tensor* dst, int64_t k, bool descending, std::string* error) {
  const tensor* a = dst->src[0];
  const int64_t n = a->ne[0], rows = a->nrows(), cap = segment_cap();
  if (rows == 0 || k == 0) return true;
  const tview y = view_of(dst);
  key_source src{view_of(a), nullptr, n, descending};
  if (n <= cap) {
    const bool sort_all = k == n || 2 * k > n;
    const size_t shm = size_t(sort_all ? pow2_at_least(n) : n + pow2_at_least(k)) * 8;
    launch(select_kernel, dim3(unsigned(rows), 1), threads_for(n), shm, s, src, n, 1, uint32_t(k), sort_all, nullptr, y);
    return launched(op_name(dst->op), error);
  }
  if (2 * k > cap) return sort_global(s, dst, descending, error);
  // Levels of segment selection until one segment per row remains.
  uint64_t* buf[2] = {nullptr, nullptr};
  int level = 0;
  int64_t m = n;
  while (m > cap) {
    const int64_t n_seg = (m + cap - 1) / cap;
    uint64_t*& out = buf[level % 2];
    out = static_cast<uint64_t*>(scratch(s, 1 + level % 2, size_t(rows * n_seg * k) * 8, error));
    if (!out) return false;
    const size_t shm = size_t(cap + pow2_at_least(k)) * 8;
    launch(select_kernel, dim3(unsigned(rows), unsigned(n_seg)), threads_for(cap), shm, s, src, cap, n_seg, uint32_t(k), false, out,
                                                                              tview{});
    if (!launched(op_name(dst->op), error)) return false;
    m = n_seg * k;
    src = key_source{tview{}, out, m, descending};
    ++level;
  }
  const size_t shm = size_t(m + pow2_at_least(k)) * 8;
  launch(select_kernel, dim3(unsigned(rows), 1), threads_for(m), shm, s, src, m, 1, uint32_t(k), false, nullptr, y);
  return launched(op_name(dst->op), error);
}

}  // namespace

bool launch_gather(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), a = view_of(dst->src[0]), idx = view_of(dst->src[1]);
  const int64_t n = n_elements(y);
  if (n == 0) return true;
  launch(gather_kernel, grid_for(n), kBlock, 0, s, y, a, idx, n);
  return launched("gather", error);
}

bool launch_rows_mask(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), pos = view_of(dst->src[0]);
  const int64_t n = n_elements(y);
  if (n == 0) return true;
  launch(rows_mask_kernel, grid_for(n), kBlock, 0, s, y, pos, int64_t(dst->param_i(0)), n);
  return launched("rows_mask", error);
}

bool launch_top_k(cudaStream_t s, tensor* dst, std::string* error) {
  return rank_rows(s, dst, dst->param_i(0), true, error);
}

bool launch_argsort(cudaStream_t s, tensor* dst, std::string* error) {
  return rank_rows(s, dst, dst->src[0]->ne[0], dst->param_i(0) != 0, error);
}

}  // namespace v4::cuda

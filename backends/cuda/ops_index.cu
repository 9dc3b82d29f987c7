// Indexing and copies: get_rows, set_rows (plain f32/f16/bf16 destinations), concat, cpy/cast.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"
#include "tensor/backend.h"

namespace v4::cuda {
namespace {

// Copies one element of `size` bytes (the plain types: 1, 2, 4 or 8).
__device__ inline void copy_elem(char* d, const char* s, int size) {
  switch (size) {
    case 1: *d = *s; break;
    case 2: *reinterpret_cast<uint16_t*>(d) = *reinterpret_cast<const uint16_t*>(s); break;
    case 4: *reinterpret_cast<uint32_t*>(d) = *reinterpret_cast<const uint32_t*>(s); break;
    default: *reinterpret_cast<uint64_t*>(d) = *reinterpret_cast<const uint64_t*>(s); break;
  }
}

// y[k, n, b] = a[k, ids[n, b], b], converted to f32.
__global__ void get_rows_kernel(tview y, tview a, tview ids, int64_t n) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t idx[4];
    unravel(i, y.ne, idx);
    const int64_t row = load_index(at(ids, idx[1], idx[2], 0, 0), ids.type);
    *reinterpret_cast<float*>(at(y, idx)) = load_f(at(a, idx[0], row, idx[2], 0), a.type);
  }
}

// dst[k, ids[n, b], b] = src[k, n, b]. One thread per (k, b) walks n in order, so with duplicate
// ids the last n wins, as tensor/ops.h requires.
__global__ void set_rows_kernel(tview d, tview src, tview ids, int64_t n) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = i % src.ne[0], b = i / src.ne[0];
    for (int64_t r = 0; r < src.ne[1]; ++r) {
      const int64_t row = load_index(at(ids, r, b, 0, 0), ids.type);
      store_f(at(d, k, row, b, 0), d.type, *reinterpret_cast<const float*>(at(src, k, r, b, 0)));
    }
  }
}

__global__ void concat_kernel(tview y, tview a, tview b, int dim, int size, int64_t n) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t idx[4];
    unravel(i, y.ne, idx);
    char* out = at(y, idx);
    if (idx[dim] < a.ne[dim]) {
      copy_elem(out, at(a, idx), size);
    } else {
      idx[dim] -= a.ne[dim];
      copy_elem(out, at(b, idx), size);
    }
  }
}

// Element i of a (in a's logical order) into element i of y (in y's logical order): converted
// through f32 between float types, bytes as they are for equal types.
__global__ void cpy_kernel(tview y, tview a, bool raw, int size, int64_t n) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t ia[4], iy[4];
    unravel(i, a.ne, ia);
    unravel(i, y.ne, iy);
    if (raw) copy_elem(at(y, iy), at(a, ia), size);
    else store_f(at(y, iy), y.type, load_f(at(a, ia), a.type));
  }
}

}  // namespace

bool launch_get_rows(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), a = view_of(dst->src[0]), ids = view_of(dst->src[1]);
  const int64_t n = n_elements(y);
  launch(get_rows_kernel, grid_for(n), kBlock, 0, s, y, a, ids, n);
  return launched("get_rows", error);
}

bool launch_set_rows(cudaStream_t s, tensor* dst, std::string* error) {
  // dst is an alias of src[0] (same memory and strides): write through it.
  const tview d = view_of(dst), src = view_of(dst->src[1]), ids = view_of(dst->src[2]);
  const int64_t n = src.ne[0] * src.ne[2];
  if (n == 0 || src.ne[1] == 0) return true;
  launch(set_rows_kernel, grid_for(n), kBlock, 0, s, d, src, ids, n);
  return launched("set_rows", error);
}

bool launch_concat(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), a = view_of(dst->src[0]), b = view_of(dst->src[1]);
  const int64_t n = n_elements(y);
  launch(concat_kernel, grid_for(n), kBlock, 0, s, y, a, b, dst->param_i(0), int(traits(dst->type).block_bytes), n);
  return launched("concat", error);
}

bool launch_cpy(cudaStream_t s, tensor* dst, std::string* error) {
  // A cpy result aliases its destination (dst's memory and strides); a cast owns its memory.
  const tensor* a = dst->src[0];
  const tview y = view_of(dst), av = view_of(a);
  const int64_t n = n_elements(av);
  const bool raw = a->type == dst->type;
  launch(cpy_kernel, grid_for(n), kBlock, 0, s, y, av, raw, int(traits(a->type).block_bytes), n);
  return launched("cpy", error);
}

}  // namespace v4::cuda

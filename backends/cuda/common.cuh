// Shared helpers of the CUDA kernels: a plain tensor descriptor passed to kernels by value,
// index arithmetic over 4 strided dims, f32/f16/bf16 loads and stores, launch sizes.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>

#include "tensor/tensor.h"

namespace v4::cuda {

// Type codes kernels switch on (the values of dtype, as plain ints).
constexpr int kF32 = int(dtype::f32);
constexpr int kF16 = int(dtype::f16);
constexpr int kBF16 = int(dtype::bf16);
constexpr int kI32 = int(dtype::i32);
constexpr int kI64 = int(dtype::i64);

// What a kernel needs of a tensor: its device address, shape, byte strides and type.
struct tview {
  char* data;
  int64_t ne[4];
  int64_t nb[4];
  int type;
};

inline tview view_of(const tensor* t) {
  tview v{};
  v.data = static_cast<char*>(t->data);
  for (int d = 0; d < 4; ++d) {
    v.ne[d] = t->ne[d];
    v.nb[d] = int64_t(t->nb[d]);
  }
  v.type = int(t->type);
  return v;
}

// A scaled tensor's e8m0 scales are not a source of the nodes that read it, so the kernels'
// memory checks do not see them: this one does (false and an error naming op and tensor).
inline bool scales_readable(const tensor* t, const char* op, std::string* error) {
  cudaPointerAttributes attr{};
  if (t->scales && t->scales->data && cudaPointerGetAttributes(&attr, t->scales->data) == cudaSuccess &&
      attr.type != cudaMemoryTypeUnregistered)
    return true;
  cudaGetLastError();
  *error = std::string("CUDA: ") + op + ": the scales of '" + t->name +
           "' are not in memory this GPU can read: keep a scaled tensor and its scales in the same buffer";
  return false;
}

// Whether environment variable `name` is set to exactly `value` (the backend's switches, docs/CUDA.md
// "Switches"; callers read it once, into a function-local static).
inline bool env_is(const char* name, const char* value) {
  const char* env = std::getenv(name);
  return env && std::string(env) == value;
}

inline int64_t n_elements(const tview& v) { return v.ne[0] * v.ne[1] * v.ne[2] * v.ne[3]; }

// Logical index i (i0 fastest) -> (i0, i1, i2, i3) over ne.
__device__ inline void unravel(int64_t i, const int64_t* ne, int64_t* idx) {
  idx[0] = i % ne[0];
  i /= ne[0];
  idx[1] = i % ne[1];
  i /= ne[1];
  idx[2] = i % ne[2];
  idx[3] = i / ne[2];
}

__device__ inline char* at(const tview& v, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
  return v.data + i0 * v.nb[0] + i1 * v.nb[1] + i2 * v.nb[2] + i3 * v.nb[3];
}
__device__ inline char* at(const tview& v, const int64_t* idx) { return at(v, idx[0], idx[1], idx[2], idx[3]); }

// The broadcast position of idx in a source whose dims are equal to the result's or 1.
__device__ inline char* at_bcast(const tview& v, const int64_t* idx) {
  return at(v, v.ne[0] == 1 ? 0 : idx[0], v.ne[1] == 1 ? 0 : idx[1], v.ne[2] == 1 ? 0 : idx[2],
            v.ne[3] == 1 ? 0 : idx[3]);
}

// f32 / f16 / bf16 (or i32, for get_rows) element at p as float (other types are never passed:
// supports_op filters).
__device__ inline float load_f(const char* p, int type) {
  if (type == kI32) return float(*reinterpret_cast<const int32_t*>(p));
  if (type == kF16) return __half2float(*reinterpret_cast<const __half*>(p));
  if (type == kBF16) return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(p));
  return *reinterpret_cast<const float*>(p);
}
// Round to nearest even (NaN stays NaN), as tensor.h's f32_to_f16 / f32_to_bf16.
__device__ inline void store_f(char* p, int type, float v) {
  if (type == kF16) *reinterpret_cast<__half*>(p) = __float2half_rn(v);
  else if (type == kBF16) *reinterpret_cast<__nv_bfloat16*>(p) = __float2bfloat16_rn(v);
  else *reinterpret_cast<float*>(p) = v;
}
__device__ inline int64_t load_index(const char* p, int type) {
  return type == kI64 ? *reinterpret_cast<const int64_t*>(p) : int64_t(*reinterpret_cast<const int32_t*>(p));
}

// A grid-stride launch over n items: enough blocks to fill the GPU, never more than needed.
constexpr int kBlock = 256;
inline unsigned grid_for(int64_t n, int block = kBlock) {
  const int64_t blocks = (n + block - 1) / block;
  return unsigned(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

// sigmoid in double through u = exp(-|x|): no overflow, as the CPU's scalar path (the sigmoid
// op, and hc_mix).
__device__ inline double sigmoid_d(double x) {
  const double u = ::exp(-::fabs(x));
  return (x >= 0 ? 1.0 : u) / (1.0 + u);
}

// Sum and max over one warp (all 32 lanes active).
__device__ inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// ---- Programmatic dependent launch (PDL, sm_90 and newer) ---------------------------------------
// Every kernel is launched with launch() below: on a GPU that has PDL, the next kernel in the
// stream (or the captured graph) is scheduled while the previous one still runs, and its blocks
// wait in pdl_wait() until the previous grid has finished and its writes are visible. That hides
// the launch latency between the ~200 small dependent kernels of a decode step. The contract:
// EVERY kernel launched through launch() calls pdl_wait() before it reads or writes global memory
// (its first statement). After the wait, pdl_wait() lets the next kernel launch: its blocks take
// the SM slots this grid leaves free and wait in turn, so at most two grids are resident. On older
// GPUs, or launched without the attribute, both instructions are no-ops.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// What a kernel may do BEFORE pdl_wait(): read memory no kernel of the graph writes. Weights are
// such memory (uploaded before any graph runs, never written by a kernel), so the decode GEMVs
// (ops_matmul.cu, ops_matmul_small.cu) compute their weight rows' addresses (from kernel
// parameters only), start loading their first chunks into registers and prefetch more of their
// rows into L2 with the two instructions below, and only then wait: the weight stream starts
// while the previous kernel is still running instead of a launch and a DRAM round trip after it.
// x, the expert ids (matmul_id), outputs and scratch are read or written only after the wait.
// The trigger (launch_dependents) stays right after the wait, for every kernel: triggering before
// the wait would let the kernel after this one start while the one before still runs, and so on
// down the graph, each grid's waiting blocks holding SM slots the running grid's later waves need.
//
// `bytes` bytes from p into L2 (16-byte aligned, a multiple of 16): one instruction for a whole
// run of a row (sm_90's bulk copy unit splits it); nothing before sm_90.
__device__ __forceinline__ void prefetch_l2_bulk(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}
// The cache line holding p into L2 (any address inside an allocation).
__device__ __forceinline__ void prefetch_l2_line(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p) : "memory");
}

// Whether launch() asks for PDL: the GPUs have compute capability >= 9.0 and V4_CUDA_PDL is not 0
// (set once by the device, cuda_device.cu).
bool pdl_enabled();
void set_pdl_enabled(bool on);

// kernel<<<grid, block, smem, s>>>(args...) in thread-block clusters of cluster_x blocks along x
// (sm_90; 1: no clusters), with the PDL attribute when pdl_enabled(). Errors are left for
// launched() (cudaGetLastError) as with <<<>>>.
template <typename... KArgs, typename... Args>
inline void launch_clustered(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                             unsigned cluster_x, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (cluster_x > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster_x;
    attr[n].val.clusterDim.y = 1;
    attr[n].val.clusterDim.z = 1;
    ++n;
  }
  if (pdl_enabled()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  (void)cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

// The same without clusters: every kernel launch of the backend.
template <typename... KArgs, typename... Args>
inline void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args&&... args) {
  launch_clustered(kernel, grid, block, smem, s, 1u, std::forward<Args>(args)...);
}

// Records a launch error (if any) in *error with the op's name; true when the launch was fine.
inline bool launched(const char* op, std::string* error) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return true;
  if (error) *error = std::string("CUDA: launching ") + op + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e);
  return false;
}

}  // namespace v4::cuda

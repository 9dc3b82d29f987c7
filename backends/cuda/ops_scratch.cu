// Scratch device memory for kernels that need room outside the graph (top_k's candidate lists,
// attn_mqa's per-chunk partial results): one growing allocation per (stream, slot), kept for the
// life of the process. Growing waits for the stream first, so a kernel still reading the old
// allocation is never pulled from under it. New memory is zeroed (attn_mqa's chunk counters rely
// on starting at zero; its kernel leaves them at zero again).
#include <map>
#include <mutex>
#include <utility>

#include "backends/cuda/kernels.h"

namespace v4::cuda {

void* scratch(cudaStream_t s, int slot, size_t bytes, std::string* error) {
  struct block {
    void* p = nullptr;
    size_t n = 0;
  };
  static std::mutex mu;
  static std::map<std::pair<cudaStream_t, int>, block> blocks;
  std::lock_guard<std::mutex> lock(mu);
  block& b = blocks[{s, slot}];
  if (b.n >= bytes && b.p) return b.p;
  const size_t n = bytes < (size_t(1) << 20) ? (size_t(1) << 20) : bytes + bytes / 4;
  if (b.p) {
    cudaStreamSynchronize(s);
    cudaFree(b.p);
    b = block{};
  }
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, n);
  if (e == cudaSuccess) e = cudaMemsetAsync(p, 0, n, s);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (p) cudaFree(p);
    if (error)
      *error = "CUDA: cannot allocate " + std::to_string(n >> 20) + " MiB of kernel scratch (" + cudaGetErrorString(e) +
               "): free GPU memory (smaller context or fewer layers on the GPU)";
    return nullptr;
  }
  b.p = p;
  b.n = n;
  return p;
}

}  // namespace v4::cuda

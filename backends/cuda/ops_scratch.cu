// Scratch device memory for kernels that need room outside the graph (top_k's candidate lists,
// attn_mqa's per-chunk partial results): one growing allocation per (stream, slot), kept for the
// life of the process. Growing waits for the stream first, so a kernel still reading the old
// allocation is never pulled from under it. New memory is zeroed. Inside a CUDA graph capture the
// zeroing becomes a node of the graph and an outgrown block is freed later (no waiting is allowed
// there); every growth bumps scratch_generation() so captured graphs know their pointers changed.
#include <atomic>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "backends/cuda/kernels.h"

namespace v4::cuda {

namespace {
std::atomic<uint64_t> g_generation{0};
}  // namespace

uint64_t scratch_generation() { return g_generation.load(); }

void* scratch(cudaStream_t s, int slot, size_t bytes, std::string* error) {
  struct block {
    void* p = nullptr;
    size_t n = 0;
  };
  static std::mutex mu;
  static std::map<std::pair<cudaStream_t, int>, block> blocks;
  static std::vector<void*> retired;  // outgrown while capturing: freed at the next chance
  std::lock_guard<std::mutex> lock(mu);
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &capturing) != cudaSuccess) cudaGetLastError();
  const bool in_capture = capturing != cudaStreamCaptureStatusNone;
  if (!in_capture && !retired.empty()) {
    cudaDeviceSynchronize();
    for (void* p : retired) cudaFree(p);
    retired.clear();
  }
  block& b = blocks[{s, slot}];
  if (b.n >= bytes && b.p) return b.p;
  const size_t n = bytes < (size_t(1) << 20) ? (size_t(1) << 20) : bytes + bytes / 4;
  if (b.p) {
    // A stream being captured into a CUDA graph cannot be waited for: keep the old block until
    // the next call outside a capture (graphs captured with it are re-captured: the generation).
    if (in_capture) {
      retired.push_back(b.p);
    } else {
      cudaStreamSynchronize(s);
      cudaFree(b.p);
    }
    b = block{};
  }
  g_generation.fetch_add(1);
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

#include "backends/cuda/cuda_probe.h"

#include <cuda_runtime.h>

namespace v4::cuda {
namespace {

bool ok(cudaError_t e, std::string* error) {
  if (e == cudaSuccess) return true;
  if (error) *error = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  return false;
}

__global__ void saxpy_kernel(float a, const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

}  // namespace

int device_count(std::string* error) {
  int n = 0;
  if (!ok(cudaGetDeviceCount(&n), error)) return -1;
  return n;
}

bool saxpy(float a, const float* x, float* y, int n, std::string* error) {
  if (n <= 0) return true;
  const size_t bytes = size_t(n) * sizeof(float);
  float* dx = nullptr;
  float* dy = nullptr;
  bool good = ok(cudaMalloc(&dx, bytes), error) && ok(cudaMalloc(&dy, bytes), error) &&
              ok(cudaMemcpy(dx, x, bytes, cudaMemcpyHostToDevice), error) &&
              ok(cudaMemcpy(dy, y, bytes, cudaMemcpyHostToDevice), error);
  if (good) {
    const int block = 256;
    saxpy_kernel<<<(n + block - 1) / block, block>>>(a, dx, dy, n);
    good = ok(cudaGetLastError(), error) && ok(cudaDeviceSynchronize(), error) &&
           ok(cudaMemcpy(y, dy, bytes, cudaMemcpyDeviceToHost), error);
  }
  cudaFree(dx);
  cudaFree(dy);
  return good;
}

}  // namespace v4::cuda

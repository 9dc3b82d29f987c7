// Shared by the GPU tests of tests/cuda: find CUDA0 or skip with the reason, and random inputs.
// Header-only (each test file is its own binary).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "backends/backends.h"
#include "backends/cuda/cuda.h"
#include "tensor/backend.h"

namespace v4::cuda_test {

// CUDA0 when a usable GPU is registered, else nullptr.
inline device* gpu_or_null() {
  backends::init();
  return find_device("CUDA0");
}

// Why there is no GPU (the CUDA runtime's reason, or "none registered").
inline std::string why_no_gpu() {
  std::string why;
  cuda::cuda_device(0, &why);
  return why.empty() ? "none registered" : why;
}

// n floats uniform in [-1, 1), reproducible from the seed.
inline std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

}  // namespace v4::cuda_test

// In a TEST body: declares `device* d` = CUDA0, or skips the test with the reason.
#define REQUIRE_GPU(d)                                                        \
  device* d = ::v4::cuda_test::gpu_or_null();                                 \
  if (!d) GTEST_SKIP() << "no usable CUDA GPU (" << ::v4::cuda_test::why_no_gpu() << ")"

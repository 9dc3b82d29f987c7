// Proves that CUDA code is compiled, linked and (where a GPU exists) runs. Without a usable
// device it exits 77, which CTest reports as "Skipped" (SKIP_RETURN_CODE in tests/CMakeLists.txt).
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backends/cuda/cuda_probe.h"

int main() {
  std::string err;
  const int devices = v4::cuda::device_count(&err);
  if (devices <= 0) {
    std::printf("no CUDA device: skipped (%s)\n", devices < 0 ? err.c_str() : "device count 0");
    return 77;
  }
  std::printf("CUDA devices: %d\n", devices);

  // Odd length so the last block is partial; values exact in float.
  const int n = 1000003;
  const float a = 3.0f;
  std::vector<float> x(n), y(n);
  for (int i = 0; i < n; ++i) {
    x[i] = float(i % 1024);
    y[i] = float(i % 7) - 3.0f;
  }
  std::vector<float> expect(n);
  for (int i = 0; i < n; ++i) expect[i] = a * x[i] + y[i];

  if (!v4::cuda::saxpy(a, x.data(), y.data(), n, &err)) {
    std::printf("FAIL: saxpy kernel: %s\n", err.c_str());
    return 1;
  }
  int bad = 0;
  for (int i = 0; i < n; ++i) {
    if (y[i] != expect[i]) {
      if (bad < 5) std::printf("FAIL: y[%d] = %g, expected %g\n", i, y[i], expect[i]);
      ++bad;
    }
  }
  std::printf("saxpy n=%d mismatches=%d\n", n, bad);
  return bad == 0 ? 0 : 1;
}

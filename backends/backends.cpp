#include "backends/backends.h"

#include <mutex>

#include "backends/cpu/cpu.h"
#include "quant/quant.h"
#ifdef V4_HAVE_CUDA
#include "backends/cuda/cuda.h"
#endif

namespace v4::backends {

void init() {
  static std::once_flag once;
  std::call_once(once, [] {
    quant::register_types();
    // Accelerators first (Vulkan: a later issue), the CPU last: the scheduler's priority order.
#ifdef V4_HAVE_CUDA
    // Only when the runtime finds a usable GPU (cudaGetDeviceCount > 0); without a driver or GPU
    // (CI, this machine) nothing is registered and everything runs on the CPU as before.
    if (device* gpu = cuda::cuda_device(0)) register_device(gpu);
#endif
    register_device(cpu::cpu_device());
  });
}

}  // namespace v4::backends

#include "backends/backends.h"

#include <mutex>

#include "backends/cpu/cpu.h"
#include "quant/quant.h"

namespace v4::backends {

void init() {
  static std::once_flag once;
  std::call_once(once, [] {
    quant::register_types();
    // Accelerators first (CUDA, Vulkan: later issues), the CPU last: the scheduler's priority order.
    register_device(cpu::cpu_device());
  });
}

}  // namespace v4::backends

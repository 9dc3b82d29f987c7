// v4 info: what this build can run on this machine.
#include <cstdio>

#include "backends/cpu/cpu.h"
#include "tensor/backend.h"
#include "tools/commands.h"

namespace v4::cli {

static void add_info(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("info", "Print devices, CPU features and the kernels this build uses");
  cmd->callback([] {
    std::printf("v4 0.1.0\n");
    for (device* d : devices()) {
      size_t free = 0, total = 0;
      d->memory(&free, &total);
      std::printf("device %-6s %s; memory %.1f GiB free of %.1f GiB\n", d->name(), d->description().c_str(),
                  free / 1073741824.0, total / 1073741824.0);
    }
    std::printf("CPU kernel levels:");
    for (cpu::isa l : {cpu::isa::scalar, cpu::isa::avx2, cpu::isa::avx512, cpu::isa::neon})
      if (cpu::isa_available(l)) std::printf(" %s", cpu::isa_name(l));
    std::printf("\n");
  });
}

V4_COMMAND(add_info, 10);

}  // namespace v4::cli

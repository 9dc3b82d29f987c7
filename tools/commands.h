// Subcommands of the `v4` tool. Each file under tools/ adds its own subcommands to the app.
#pragma once

#include <CLI/CLI.hpp>

namespace v4::cli {

void add_info(CLI::App& app);             // tools/info.cpp:         v4 info
void add_bench_ops(CLI::App& bench);      // tools/bench_ops.cpp:    v4 bench ops
void add_bench_matmul(CLI::App& bench);   // tools/bench_matmul.cpp: v4 bench matmul
void add_bench_peak(CLI::App& bench);     // tools/bench_matmul.cpp: v4 bench peak (FLOP/s and DRAM GB/s)
void add_inspect(CLI::App& app);          // tools/inspect.cpp:      v4 inspect FILE [--verify] [--json]

}  // namespace v4::cli

// Subcommands of the `v4` tool. Each file under tools/ registers its own subcommands with
// V4_COMMAND, so adding a command touches no shared file:
//
//   static void add_convert(CLI::App& app) { ... app.add_subcommand("convert", ...) ... }
//   V4_COMMAND(add_convert, 20);
//
// `order` sorts the commands in `v4 --help` (10 info/inspect, 20 convert/quantize,
// 30 tokenizer, 40 run/logits/perplexity, 50 serve, 90 bench). Commands under `v4 bench`
// register with V4_BENCH_COMMAND and receive the `bench` subcommand.
#pragma once

#include <CLI/CLI.hpp>

namespace v4::cli {

using add_fn = void (*)(CLI::App& app);

struct command_registrar {
  command_registrar(add_fn fn, int order, bool bench);
};

// Adds every registered command to app (bench commands under a `bench` subcommand).
void add_all_commands(CLI::App& app);

// DRAM read bandwidth in GB/s on `threads` threads (0: all cores), as `v4 bench peak` measures it
// (tools/bench_matmul.cpp; 2.25 GiB buffer, best of 5). -1 when the buffer cannot be allocated.
double measure_dram_read_gbps(int threads);

}  // namespace v4::cli

#define V4_CMD_CAT2(a, b) a##b
#define V4_CMD_CAT(a, b) V4_CMD_CAT2(a, b)
#define V4_COMMAND(fn, order) \
  static const ::v4::cli::command_registrar V4_CMD_CAT(v4_command_, __LINE__)(fn, order, false)
#define V4_BENCH_COMMAND(fn, order) \
  static const ::v4::cli::command_registrar V4_CMD_CAT(v4_command_, __LINE__)(fn, order, true)

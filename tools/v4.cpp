// The `v4` command-line tool: one binary, one subcommand per job.
#include <cstdio>

#include "backends/backends.h"
#include "tools/commands.h"

int main(int argc, char** argv) {
  v4::backends::init();
  CLI::App app{"v4: DeepSeek-V4 inference runtime"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "v4 0.1.0");

  v4::cli::add_info(app);
  v4::cli::add_inspect(app);
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks (ops, matmul, hardware peaks)");
  bench->require_subcommand(1);
  v4::cli::add_bench_ops(*bench);
  v4::cli::add_bench_matmul(*bench);
  v4::cli::add_bench_peak(*bench);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}

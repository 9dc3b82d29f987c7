// The `v4` command-line tool: one binary, one subcommand per job. The subcommands register
// themselves (tools/commands.h); this file only parses and dispatches.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <vector>

#include "backends/backends.h"
#include "tools/commands.h"

namespace v4::cli {
namespace {
struct registered {
  add_fn fn;
  int order;
  bool bench;
  int seq;
};
std::vector<registered>& registry() {
  static std::vector<registered> r;  // filled by static initializers, before main
  return r;
}
}  // namespace

command_registrar::command_registrar(add_fn fn, int order, bool bench) {
  registry().push_back({fn, order, bench, static_cast<int>(registry().size())});
}

void add_all_commands(CLI::App& app) {
  std::vector<registered> cmds = registry();
  std::sort(cmds.begin(), cmds.end(), [](const registered& a, const registered& b) {
    return a.order != b.order ? a.order < b.order : a.seq < b.seq;
  });
  CLI::App* bench = nullptr;
  for (const registered& c : cmds) {
    if (!c.bench) {
      c.fn(app);
      continue;
    }
    if (!bench) {
      bench = app.add_subcommand("bench", "Benchmarks (ops, matmul, model, tokenizer, hardware peaks)");
      bench->require_subcommand(1);
    }
    c.fn(*bench);
  }
}

}  // namespace v4::cli

// OpenMP threads that spin at barriers collapse when another process takes a core (measured on a
// 2-core machine under load: 2-thread decode at 7 tokens/s instead of 240). Passive waiting costs
// little when the machine is idle and avoids that, so the CLI runs with OMP_WAIT_POLICY=passive
// unless the user chose a policy. libgomp reads its environment when it is loaded, before main,
// hence the one re-exec (guarded by V4_OMP_SET, and skipped if exec fails).
static void ensure_passive_omp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT") || std::getenv("V4_OMP_SET")) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  setenv("V4_OMP_SET", "1", 1);
  execv("/proc/self/exe", argv);
}

// llama.cpp's multi-letter single-dash flags, which CLI11 cannot declare (its single-dash names
// are one letter): rewritten to their long forms before parsing.
static void rewrite_llama_flags(int argc, char** argv) {
  static char ngl[] = "--n-gpu-layers", ot[] = "--override-tensor";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "-ngl") == 0) argv[i] = ngl;
    else if (std::strcmp(argv[i], "-ot") == 0) argv[i] = ot;
  }
}

int main(int argc, char** argv) {
  ensure_passive_omp(argv);
  rewrite_llama_flags(argc, argv);
  v4::backends::init();
  CLI::App app{"v4: DeepSeek-V4 inference runtime"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "v4 0.1.0");
  v4::cli::add_all_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}

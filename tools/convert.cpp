// v4 convert CHECKPOINT_DIR -o FILE [--type T] [--threads N] [--force]: a Hugging Face style
// checkpoint directory -> one v4 model file (model/convert.h; docs/CONVERT.md).
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "model/convert.h"
#include "tools/commands.h"

namespace v4::cli {

namespace {

// Shared by convert and quantize: a progress bar on a TTY, a plain line per 10% otherwise.
struct progress_printer {
  bool tty = isatty(fileno(stderr)) != 0;
  int last_decile = -1;
  double last_draw = -1;
  void operator()(const model::convert_progress& p) {
    if (tty) {
      if (p.seconds - last_draw < 0.1 && p.bytes_done < p.bytes_total) return;
      last_draw = p.seconds;
      std::fprintf(stderr, "\r\033[K%s", model::progress_line(p).c_str());
      if (p.bytes_done >= p.bytes_total) std::fprintf(stderr, "\n");
      return;
    }
    const int decile = p.bytes_total ? int(10 * p.bytes_done / p.bytes_total) : 10;
    if (decile == last_decile) return;
    last_decile = decile;
    std::fprintf(stderr, "%s\n", model::progress_line(p).c_str());
  }
};

}  // namespace

std::function<void(const model::convert_progress&)> make_progress_printer() {
  auto pp = std::make_shared<progress_printer>();
  return [pp](const model::convert_progress& p) { (*pp)(p); };
}

void print_summary(const char* what, const std::string& out, const model::convert_stats& st) {
  std::printf("%s: wrote %s: %zu tensors, %.2f MiB (file %.2f MiB) in %.3f s, %.0f MB/s\n", what, out.c_str(),
              st.tensors, st.bytes_out / 1048576.0, st.file_size / 1048576.0, st.seconds,
              st.seconds > 0 ? st.bytes_out / st.seconds / 1e6 : 0.0);
  for (const auto& [type, t] : st.per_type)
    std::printf("  %-9s %6" PRIu64 " tensors %12.2f MiB\n", type.c_str(), t.tensors, t.bytes / 1048576.0);
}

int default_threads() { return int(std::max(1u, std::thread::hardware_concurrency())); }

static void add_convert(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("convert", "Convert a Hugging Face style checkpoint directory to a v4 model file");
  struct args {
    std::string dir, out, type = "native";
    int threads = default_threads();
    bool force = false;
  };
  auto a = std::make_shared<args>();
  cmd->add_option("checkpoint", a->dir, "directory with config.json, *.safetensors (+ index), tokenizer.json")->required();
  cmd->add_option("-o,--output", a->out, "output model file")->required();
  cmd->add_option("--type", a->type,
                  "native (as stored: FP8/MXFP4 kept bit-exactly), f32, bf16, f16, q8_0, q4_k, q3_k, q2_k, fp8_e4m3, mxfp4");
  cmd->add_option("--threads", a->threads, "quantization threads")->check(CLI::Range(1, 1024));
  cmd->add_flag("--force", a->force, "overwrite an existing output file");
  cmd->callback([a] {
    model::convert_options o;
    o.type = a->type;
    o.threads = a->threads;
    o.force = a->force;
    o.progress = make_progress_printer();
    o.note = [](const std::string& m) { std::fprintf(stderr, "v4 convert: note: %s\n", m.c_str()); };
    model::convert_stats st;
    std::string err;
    if (!model::convert_checkpoint(a->dir, a->out, o, &st, &err)) {
      std::fprintf(stderr, "\nv4 convert: error: %s\n", err.c_str());
      throw CLI::RuntimeError(1);
    }
    print_summary("v4 convert", a->out, st);
  });
}

V4_COMMAND(add_convert, 20);

}  // namespace v4::cli

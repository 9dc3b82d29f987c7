// v4 quantize IN.v4 OUT.v4 --type T [--rule REGEX=TYPE ...] [--threads N] [--force]: re-quantize
// an existing model file's matmul weights (model/convert.h; docs/CONVERT.md).
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/convert.h"
#include "tools/commands.h"

namespace v4::cli {

// Defined in tools/convert.cpp.
std::function<void(const model::convert_progress&)> make_progress_printer();
void print_summary(const char* what, const std::string& out, const model::convert_stats& st);
int default_threads();

static void add_quantize(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("quantize", "Re-quantize a v4 model file's matmul weights into a new file");
  struct args {
    std::string in, out, type;
    std::vector<std::string> rules;
    int threads = default_threads();
    bool force = false;
  };
  auto a = std::make_shared<args>();
  cmd->add_option("input", a->in, "input model file")->required();
  cmd->add_option("output", a->out, "output model file")->required();
  cmd->add_option("--type", a->type, "f32, bf16, f16, q8_0, q4_k, q3_k, q2_k, fp8_e4m3, mxfp4")->required();
  cmd->add_option("--rule", a->rules, "REGEX=TYPE: tensors whose name matches get TYPE (or keep); first match wins");
  cmd->add_option("--threads", a->threads, "quantization threads")->check(CLI::Range(1, 1024));
  cmd->add_flag("--force", a->force, "overwrite an existing output file");
  cmd->callback([a] {
    model::quantize_options o;
    o.type = a->type;
    o.threads = a->threads;
    o.force = a->force;
    std::string err;
    for (const std::string& r : a->rules) {
      model::quantize_rule rule;
      if (!model::parse_quantize_rule(r, &rule, &err)) {
        std::fprintf(stderr, "v4 quantize: error: %s\n", err.c_str());
        throw CLI::RuntimeError(1);
      }
      o.rules.push_back(rule);
    }
    o.progress = make_progress_printer();
    o.note = [](const std::string& m) { std::fprintf(stderr, "v4 quantize: note: %s\n", m.c_str()); };
    model::convert_stats st;
    if (!model::quantize_model(a->in, a->out, o, &st, &err)) {
      std::fprintf(stderr, "\nv4 quantize: error: %s\n", err.c_str());
      throw CLI::RuntimeError(1);
    }
    print_summary("v4 quantize", a->out, st);
  });
}

V4_COMMAND(add_quantize, 21);

}  // namespace v4::cli

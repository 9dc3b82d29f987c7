// v4 chat: an interactive conversation in the V4 chat format, through the C API.
//
// Each turn re-renders the whole conversation (model/chat_format.h rules, e.g. earlier reasoning
// dropped in thinking mode), tokenizes it, and evaluates only what the context does not already
// hold (the longest common prefix with the tokens evaluated so far); the rest is reused.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/v4.h"
#include "tools/capi.h"
#include "tools/commands.h"
#include "tools/offload.h"

namespace v4::cli {
namespace {

struct chat_opts {
  std::string model, system, qat = "on";
  int64_t n_ctx = 4096;
  int n_predict = 512, threads = 0;
  float temp = 0.8f, top_p = 0.95f, min_p = 0.05f;
  uint64_t seed = 0;
  bool thinking = false;
  offload off;
};

int run_chat(const chat_opts& o) {
  v4_model* m = nullptr;
  v4_model_params mp = v4_model_default_params();
  std::string overrides;
  o.off.to_params(&mp, &overrides);
  if (v4_model_load(o.model.c_str(), &mp, &m) != V4_OK) {
    std::fprintf(stderr, "error: cannot load '%s': %s\n", o.model.c_str(), v4_last_error());
    return 1;
  }
  o.off.note_if_unused(!v4_model_offloaded(m));
  if (!v4_model_has_tokenizer(m)) {
    std::fprintf(stderr, "error: %s has no tokenizer: chat needs one (re-convert with tokenizer.json)\n",
                 o.model.c_str());
    v4_model_free(m);
    return 1;
  }
  v4_context_params cp = v4_context_default_params();
  cp.n_ctx = o.n_ctx;
  cp.n_threads = o.threads;
  cp.qat = o.qat == "on";
  v4_context* c = nullptr;
  v4_sampler_params sp = v4_sampler_default_params();
  sp.temperature = o.temp;
  sp.top_p = o.top_p;
  sp.min_p = o.min_p;
  sp.seed = o.seed;
  v4_sampler* s = nullptr;
  if (v4_context_create(m, &cp, &c) != V4_OK || v4_sampler_create(&sp, &s) != V4_OK) {
    std::fprintf(stderr, "error: %s\n", v4_last_error());
    v4_context_free(c);
    v4_model_free(m);
    return 1;
  }
  std::fprintf(stderr, "%s\nType a message; /reset starts over, /exit (or end of input) quits.\n", v4_model_desc(m));

  nlohmann::json messages = nlohmann::json::array();
  if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
  std::vector<int32_t> held;  // the tokens the context holds, in order
  const int32_t eos = v4_model_eos(m);
  std::string line;
  int rc = 0;
  while (std::fprintf(stderr, "> "), std::getline(std::cin, line)) {
    if (line == "/exit") break;
    if (line == "/reset") {
      messages = nlohmann::json::array();
      if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
      held.clear();
      v4_context_reset(c);
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    std::string prompt;
    if (!capi_chat_format(messages.dump(), o.thinking, &prompt)) {
      std::fprintf(stderr, "error: %s\n", v4_last_error());
      rc = 1;
      break;
    }
    std::vector<int32_t> ids;
    if (!capi_tokenize(m, prompt, true, &ids)) {
      std::fprintf(stderr, "error: %s\n", v4_last_error());
      rc = 1;
      break;
    }
    // Reuse the common prefix; re-evaluate from the first difference.
    size_t keep = 0;
    while (keep < held.size() && keep < ids.size() && held[keep] == ids[keep]) ++keep;
    if (keep < held.size() || keep == ids.size()) {  // history changed (or nothing new): start over
      v4_context_reset(c);
      held.clear();
      keep = 0;
    }
    if (int64_t(ids.size()) + o.n_predict > o.n_ctx) {
      std::fprintf(stderr, "error: the conversation (%zu tokens) no longer fits the context (%lld); /reset\n",
                   ids.size(), (long long)o.n_ctx);
      messages.erase(messages.end() - 1);
      continue;
    }
    if (v4_eval(c, ids.data() + keep, ids.size() - keep, 0) != V4_OK) {
      std::fprintf(stderr, "error: %s\n", v4_last_error());
      rc = 1;
      break;
    }
    held = ids;
    std::string reply;
    for (int i = 0; i < o.n_predict; ++i) {
      int32_t tok;
      if (v4_sample(s, c, &tok) != V4_OK) break;
      if (tok == eos) {
        held.push_back(tok);  // the rendered history ends each assistant turn with EOS
        if (v4_eval(c, &tok, 1, 0) != V4_OK) held.clear();
        break;
      }
      char piece[256];
      size_t pn = 0;
      if (v4_token_piece(m, tok, piece, sizeof piece, &pn) == V4_OK) {
        std::fwrite(piece, 1, pn, stdout);
        std::fflush(stdout);
        reply.append(piece, pn);
      }
      held.push_back(tok);
      if (v4_eval(c, &tok, 1, 0) != V4_OK) {
        std::fprintf(stderr, "\nerror: %s\n", v4_last_error());
        rc = 1;
        break;
      }
    }
    std::printf("\n");
    std::fflush(stdout);
    if (rc) break;
    messages.push_back({{"role", "assistant"}, {"content", reply}});
  }
  v4_sampler_free(s);
  v4_context_free(c);
  v4_model_free(m);
  return rc;
}

void add_chat(CLI::App& app) {
  auto o = std::make_shared<chat_opts>();
  CLI::App* cmd = app.add_subcommand("chat", "Interactive conversation in the V4 chat format (reads stdin)");
  cmd->add_option("-m,--model", o->model, "Model file (.v4 with a tokenizer)")->required();
  cmd->add_option("--system", o->system, "System prompt");
  cmd->add_flag("--think", o->thinking, "Thinking mode (answers start with <think>)");
  cmd->add_option("-c,--ctx", o->n_ctx, "Context size in tokens")->check(CLI::Range(int64_t(16), int64_t(1) << 26));
  cmd->add_option("-n,--n-predict", o->n_predict, "Most tokens per reply")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--temp", o->temp, "Temperature (0: greedy)")->check(CLI::Range(0.0f, 100.0f));
  cmd->add_option("--top-p", o->top_p, "Top-p (1: off)")->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--min-p", o->min_p, "Min-p (0: off)")->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("-s,--seed", o->seed, "Sampling seed");
  cmd->add_option("-t,--threads", o->threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  o->off.add_flags(cmd);
  cmd->add_option("--qat", o->qat, "Official QAT numerics (on) or as transformers (off)")
      ->check(CLI::IsMember({"on", "off"}));
  cmd->callback([o] {
    const int rc = run_chat(*o);
    if (rc) throw CLI::RuntimeError(rc);
  });
}

}  // namespace

V4_COMMAND(add_chat, 43);

}  // namespace v4::cli

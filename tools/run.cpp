// v4 run, v4 logits, v4 perplexity: generation and evaluation through the public C API only.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/v4.h"
#include "tools/capi.h"
#include "tools/commands.h"
#include "tools/offload.h"

namespace v4::cli {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int die(const char* what) {
  std::fprintf(stderr, "error: %s: %s\n", what, v4_last_error());
  return 1;
}

// Options shared by the three commands.
struct common {
  std::string model;
  std::string qat = "on";
  int64_t n_ctx = 4096;
  int64_t n_batch = 256;
  int threads = 0;
  bool quiet = false;
  offload off;
};

void add_common(CLI::App* cmd, common& c) {
  cmd->add_option("-m,--model", c.model, "Model file (.v4, from v4 convert)")->required();
  cmd->add_option("--qat", c.qat, "Official QAT numerics (on) or as transformers (off)")
      ->check(CLI::IsMember({"on", "off"}));
  cmd->add_option("-c,--ctx", c.n_ctx, "Context size in tokens")->check(CLI::Range(int64_t(1), int64_t(1) << 26));
  cmd->add_option("-b,--batch", c.n_batch, "Tokens per prefill graph")->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("-t,--threads", c.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  c.off.add_flags(cmd);
}

struct loaded {
  v4_model* model = nullptr;
  v4_context* ctx = nullptr;
  double load_s = 0;
  ~loaded() {
    v4_context_free(ctx);
    v4_model_free(model);
  }
};

bool open_model(const common& c, loaded* L) {
  const double t0 = now_s();
  v4_model_params mp = v4_model_default_params();
  std::string overrides;
  c.off.to_params(&mp, &overrides);
  if (v4_model_load(c.model.c_str(), &mp, &L->model) != V4_OK) {
    std::fprintf(stderr, "error: cannot load '%s': %s\n", c.model.c_str(), v4_last_error());
    return false;
  }
  v4_context_params cp = v4_context_default_params();
  cp.n_ctx = c.n_ctx;
  cp.n_batch = c.n_batch;
  cp.n_threads = c.threads;
  cp.qat = c.qat == "on";
  if (v4_context_create(L->model, &cp, &L->ctx) != V4_OK) {
    std::fprintf(stderr, "error: cannot create a context: %s\n", v4_last_error());
    return false;
  }
  L->load_s = now_s() - t0;
  c.off.note_if_unused(!v4_model_offloaded(L->model));
  if (!c.quiet)
    std::fprintf(stderr, "loaded %s (%s) in %.2f s; weights: %s; state %.1f MiB for %lld tokens\n", c.model.c_str(),
                 v4_model_desc(L->model), L->load_s, v4_model_placement(L->model),
                 v4_context_state_bytes(L->ctx) / 1048576.0, (long long)c.n_ctx);
  return true;
}

// "1,2,3" or "1 2 3" -> ids.
bool parse_ids(const std::string& s, std::vector<int32_t>* ids) {
  std::string t = s;
  for (char& ch : t)
    if (ch == ',') ch = ' ';
  std::istringstream in(t);
  std::string w;
  while (in >> w) {
    char* end = nullptr;
    const long v = std::strtol(w.c_str(), &end, 10);
    if (!end || *end || v < INT32_MIN || v > INT32_MAX) {
      std::fprintf(stderr, "error: '%s' is not a token id\n", w.c_str());
      return false;
    }
    ids->push_back(int32_t(v));
  }
  return true;
}

bool tokenize(v4_model* m, const std::string& text, bool special, std::vector<int32_t>* ids) {
  if (capi_tokenize(m, text, special, ids)) return true;
  std::fprintf(stderr, "error: %s\n", v4_last_error());
  return false;
}

// Emits only complete UTF-8: bytes of a character split across tokens wait for the rest.
class utf8_out {
 public:
  void put(const char* p, size_t n) {
    buf_.append(p, n);
    size_t ok = complete_prefix();
    std::fwrite(buf_.data(), 1, ok, stdout);
    std::fflush(stdout);
    buf_.erase(0, ok);
  }
  void flush() {
    std::fwrite(buf_.data(), 1, buf_.size(), stdout);
    buf_.clear();
    std::fflush(stdout);
  }

 private:
  size_t complete_prefix() {
    // Walk back over at most 3 continuation bytes to see whether the last character is whole.
    const size_t n = buf_.size();
    size_t i = n;
    int back = 0;
    while (i > 0 && back < 4 && (static_cast<unsigned char>(buf_[i - 1]) & 0xC0) == 0x80) --i, ++back;
    if (i == 0) return back >= 4 ? n : 0;
    const unsigned char lead = static_cast<unsigned char>(buf_[i - 1]);
    const int need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
    if (need > back && lead >= 0xC0 && lead < 0xF8) return i - 1;  // incomplete: hold it
    return n;
  }
  std::string buf_;
};

// ---- v4 run ------------------------------------------------------------------------------------
struct run_opts {
  common c;
  std::string prompt, tokens;
  int n_predict = 128;
  float temp = 0.8f, top_p = 0.95f, min_p = 0.05f, repeat_penalty = 1.0f;
  int top_k = 40;
  uint64_t seed = 0;
  bool special = false;
  bool ignore_eos = false;
  bool chat = false, thinking = false;
  std::string system;
  std::vector<std::string> stops;
};

int cmd_run(run_opts& o) {
  loaded L;
  if (!open_model(o.c, &L)) return 1;
  std::vector<int32_t> prompt;
  if (!o.tokens.empty()) {
    if (!parse_ids(o.tokens, &prompt)) return 1;
  } else {
    if (!v4_model_has_tokenizer(L.model)) {
      std::fprintf(stderr, "error: %s has no tokenizer: pass the prompt as ids with --tokens 1,2,3 "
                           "(or re-convert the checkpoint with its tokenizer.json)\n", o.c.model.c_str());
      return 1;
    }
    std::string text = o.prompt;
    bool special = o.special;
    if (o.chat) {  // one user turn (and a system prompt) in the V4 chat format
      nlohmann::json conv = nlohmann::json::array();
      if (!o.system.empty()) conv.push_back({{"role", "system"}, {"content", o.system}});
      conv.push_back({{"role", "user"}, {"content", o.prompt}});
      if (!capi_chat_format(conv.dump(), o.thinking, &text)) return die("chat format");
      special = true;
    }
    if (!tokenize(L.model, text, special, &prompt)) return 1;
    const int32_t bos = v4_model_bos(L.model);
    if (bos >= 0 && (prompt.empty() || prompt[0] != bos)) prompt.insert(prompt.begin(), bos);
  }
  if (prompt.empty()) {
    std::fprintf(stderr, "error: empty prompt\n");
    return 1;
  }
  v4_sampler_params sp = v4_sampler_default_params();
  sp.temperature = o.temp;
  sp.top_k = o.top_k;
  sp.top_p = o.top_p;
  sp.min_p = o.min_p;
  sp.repeat_penalty = o.repeat_penalty;
  sp.seed = o.seed;
  v4_sampler* smp = nullptr;
  if (v4_sampler_create(&sp, &smp) != V4_OK) return die("sampler");

  const bool text = v4_model_has_tokenizer(L.model);
  utf8_out out;
  if (text) {
    std::vector<char> buf(prompt.size() * 16 + 64);
    size_t n = 0;
    if (v4_detokenize(L.model, prompt.data(), prompt.size(), 1, buf.data(), buf.size(), &n) == V4_OK)
      out.put(buf.data(), n);
  }
  const double t0 = now_s();
  if (v4_eval(L.ctx, prompt.data(), prompt.size(), 0) != V4_OK) {
    v4_sampler_free(smp);
    return die("prompt");
  }
  const double t1 = now_s();
  std::string generated;
  int n_gen = 0;
  const int32_t eos = v4_model_eos(L.model);
  for (; n_gen < o.n_predict; ++n_gen) {
    int32_t tok = -1;
    if (v4_sample(smp, L.ctx, &tok) != V4_OK) break;
    if (tok == eos && !o.ignore_eos) break;
    if (text) {
      char piece[256];
      size_t n = 0;
      if (v4_token_piece(L.model, tok, piece, sizeof(piece), &n) == V4_OK) {
        out.put(piece, n);
        generated.append(piece, n);
      }
    } else {
      std::printf("%d ", tok);
      std::fflush(stdout);
    }
    bool stop = false;
    for (const std::string& s : o.stops)
      if (!s.empty() && generated.size() >= s.size() && generated.compare(generated.size() - s.size(), s.size(), s) == 0)
        stop = true;
    if (stop || v4_n_past(L.ctx) >= o.c.n_ctx) {  // (the context is full: nothing more fits)
      ++n_gen;
      break;
    }
    if (v4_eval(L.ctx, &tok, 1, 0) != V4_OK) {
      v4_sampler_free(smp);
      out.flush();
      return die("decode");
    }
  }
  const double t2 = now_s();
  out.flush();
  std::printf("\n");
  std::fflush(stdout);
  v4_sampler_free(smp);
  std::fprintf(stderr, "load %.2f s | prompt %zu tokens, %.1f tokens/s | generation %d tokens, %.1f tokens/s\n",
               L.load_s, prompt.size(), prompt.size() / std::max(t1 - t0, 1e-9), n_gen,
               n_gen / std::max(t2 - t1, 1e-9));
  return 0;
}

// ---- v4 logits ---------------------------------------------------------------------------------
// --dump: each intermediate goes to OUT.NAME.f32 (float32, innermost dim first), one line each.
struct dumper {
  std::string base;
  static void write(const char* name, const int64_t ne[4], const float* data, int64_t p0, void* user) {
    const dumper* d = static_cast<const dumper*>(user);
    const std::string path = d->base + "." + name + ".f32";
    FILE* f = std::fopen(path.c_str(), p0 == 0 ? "wb" : "ab");
    if (!f) {
      std::fprintf(stderr, "warning: cannot write %s\n", path.c_str());
      return;
    }
    const size_t n = size_t(ne[0] * ne[1] * ne[2] * ne[3]);
    std::fwrite(data, sizeof(float), n, f);
    std::fclose(f);
    std::fprintf(stderr, "dump %s [%lld, %lld, %lld, %lld] at position %lld -> %s\n", name, (long long)ne[0],
                 (long long)ne[1], (long long)ne[2], (long long)ne[3], (long long)p0, path.c_str());
  }
};

int cmd_logits(common& c, const std::string& tokens, const std::string& out_path,
               const std::vector<std::string>& dump) {
  c.quiet = true;
  std::vector<int32_t> ids;
  if (!parse_ids(tokens, &ids)) return 1;
  if (ids.empty()) {
    std::fprintf(stderr, "error: --tokens is empty\n");
    return 1;
  }
  if (int64_t(ids.size()) > c.n_ctx) c.n_ctx = int64_t(ids.size());
  loaded L;
  if (!open_model(c, &L)) return 1;
  dumper d{out_path};
  std::vector<const char*> prefixes;
  for (const std::string& p : dump) prefixes.push_back(p.c_str());
  if (!prefixes.empty() && v4_context_set_dump(L.ctx, prefixes.data(), prefixes.size(), &dumper::write, &d) != V4_OK)
    return die("dump");
  if (v4_eval(L.ctx, ids.data(), ids.size(), 1) != V4_OK) return die("eval");
  const size_t nv = size_t(v4_model_n_vocab(L.model));
  FILE* f = std::fopen(out_path.c_str(), "wb");
  if (!f) {
    std::fprintf(stderr, "error: cannot write '%s': %s\n", out_path.c_str(), std::strerror(errno));
    return 1;
  }
  for (size_t i = 0; i < ids.size(); ++i) std::fwrite(v4_get_logits(L.ctx, int64_t(i)), sizeof(float), nv, f);
  if (std::fclose(f) != 0) {
    std::fprintf(stderr, "error: writing '%s' failed\n", out_path.c_str());
    return 1;
  }
  std::fprintf(stderr, "wrote %zu x %zu float32 logits to %s\n", ids.size(), nv, out_path.c_str());
  return 0;
}

// ---- v4 perplexity -----------------------------------------------------------------------------
// Protocol (tools/train/eval_ppl.py's, and llama.cpp's in spirit): the text is tokenized as a
// whole (no BOS) and cut into consecutive non-overlapping windows of --ctx tokens; a shorter tail
// is dropped (unless the text is shorter than one window: then it is the only window). Each window
// starts a fresh sequence; every token but the first of each window is scored.
// PPL = exp(mean negative log-likelihood).
int cmd_perplexity(common& c, const std::string& file, int64_t max_windows) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "error: cannot read '%s'\n", file.c_str());
    return 1;
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  loaded L;
  const int64_t window = c.n_ctx;
  if (!open_model(c, &L)) return 1;
  std::vector<int32_t> ids;
  if (!v4_model_has_tokenizer(L.model)) {
    std::fprintf(stderr, "error: %s has no tokenizer; perplexity needs text\n", c.model.c_str());
    return 1;
  }
  if (!tokenize(L.model, text, false, &ids)) return 1;
  if (ids.size() < 2) {
    std::fprintf(stderr, "error: '%s' has fewer than 2 tokens\n", file.c_str());
    return 1;
  }
  const size_t nv = size_t(v4_model_n_vocab(L.model));
  double nll = 0;
  int64_t scored = 0, windows = 0;
  const double t0 = now_s();
  for (size_t w0 = 0; w0 + 1 < ids.size(); w0 += size_t(window)) {
    if (max_windows > 0 && windows >= max_windows) break;
    const size_t n = std::min(size_t(window), ids.size() - w0);
    if (n < 2 || (n < size_t(window) && windows > 0)) break;  // the shorter tail
    v4_context_reset(L.ctx);
    if (v4_eval(L.ctx, ids.data() + w0, n, 1) != V4_OK) return die("eval");
    for (size_t i = 0; i + 1 < n; ++i) {
      const float* l = v4_get_logits(L.ctx, int64_t(i));
      double mx = l[0];
      for (size_t v = 1; v < nv; ++v) mx = std::max(mx, double(l[v]));
      double z = 0;
      for (size_t v = 0; v < nv; ++v) z += std::exp(double(l[v]) - mx);
      nll += (std::log(z) + mx) - double(l[ids[w0 + i + 1]]);
      ++scored;
    }
    ++windows;
    std::fprintf(stderr, "\rwindow %lld: ppl %.4f after %lld tokens", (long long)windows, std::exp(nll / scored),
                 (long long)scored);
  }
  const double dt = now_s() - t0;
  std::fprintf(stderr, "\n");
  std::printf("perplexity %.4f over %lld tokens (%lld windows of %lld, %.1f tokens/s)\n", std::exp(nll / scored),
              (long long)scored, (long long)windows, (long long)window, (scored + windows) / std::max(dt, 1e-9));
  return 0;
}

void add_run(CLI::App& app) {
  auto o = std::make_shared<run_opts>();
  CLI::App* cmd = app.add_subcommand("run", "Generate text from a prompt");
  add_common(cmd, o->c);
  cmd->add_option("-p,--prompt", o->prompt, "Prompt text");
  cmd->add_option("--tokens", o->tokens, "Prompt as token ids (1,2,3) instead of text");
  cmd->add_option("-n,--n-predict", o->n_predict, "Tokens to generate")->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--temp", o->temp, "Temperature (0: greedy)")->check(CLI::Range(0.0f, 100.0f));
  cmd->add_option("--top-k", o->top_k, "Top-k (0: off)")->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--top-p", o->top_p, "Top-p (1: off)")->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--min-p", o->min_p, "Min-p (0: off)")->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--repeat-penalty", o->repeat_penalty, "Repetition penalty (1: off)")->check(CLI::Range(0.01f, 100.0f));
  cmd->add_option("-s,--seed", o->seed, "Sampling seed");
  cmd->add_option("--stop", o->stops, "Stop when the output ends with this text (repeatable)");
  cmd->add_flag("--special", o->special, "Parse special-token text in the prompt");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating after the end-of-sequence token");
  cmd->add_flag("--chat", o->chat, "Wrap the prompt as one user turn in the V4 chat format");
  cmd->add_flag("--think", o->thinking, "With --chat: thinking mode (the answer starts with <think>)");
  cmd->add_option("--system", o->system, "With --chat: a system prompt");
  cmd->callback([o] {
    if (o->prompt.empty() && o->tokens.empty()) throw CLI::ValidationError("give --prompt TEXT or --tokens IDS");
    const int rc = cmd_run(*o);
    if (rc) throw CLI::RuntimeError(rc);
  });
}

void add_logits(CLI::App& app) {
  auto c = std::make_shared<common>();
  auto tokens = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto dump = std::make_shared<std::vector<std::string>>();
  CLI::App* cmd = app.add_subcommand("logits", "Write the float32 logits [tokens x vocab] of one prefill");
  add_common(cmd, *c);
  cmd->add_option("--tokens", *tokens, "Token ids: 1,2,3")->required();
  cmd->add_option("-o,--output", *out, "Output file (float32 little-endian)")->required();
  cmd->add_option("--dump", *dump,
                  "Also write intermediates whose name starts with this (L3.attn_out, L0., final_norm; "
                  "docs/MODEL.md) to OUTPUT.NAME.f32 (repeatable)");
  cmd->callback([c, tokens, out, dump] {
    const int rc = cmd_logits(*c, *tokens, *out, *dump);
    if (rc) throw CLI::RuntimeError(rc);
  });
}

void add_perplexity(CLI::App& app) {
  auto c = std::make_shared<common>();
  auto file = std::make_shared<std::string>();
  auto max_windows = std::make_shared<int64_t>(0);
  CLI::App* cmd = app.add_subcommand("perplexity", "Perplexity of a model on a text file");
  add_common(cmd, *c);
  c->n_ctx = 512;
  cmd->add_option("-f,--file", *file, "Text file")->required();
  cmd->add_option("--windows", *max_windows, "Stop after this many windows (0: all)");
  cmd->callback([c, file, max_windows] {
    const int rc = cmd_perplexity(*c, *file, *max_windows);
    if (rc) throw CLI::RuntimeError(rc);
  });
}

}  // namespace

V4_COMMAND(add_run, 40);
V4_COMMAND(add_logits, 41);
V4_COMMAND(add_perplexity, 42);

}  // namespace v4::cli

// v4 tokenize / detokenize / chat-format, and v4 bench tokenizer.
//
//   v4 tokenize (-m FILE | --tokenizer tokenizer.json) [--special] < text      ids, space-separated
//   v4 detokenize (-m FILE | --tokenizer tokenizer.json) < ids                 text
//   v4 chat-format (-m | --tokenizer) [--thinking] [--ids] < conversation.json the V4 prompt
//   v4 bench tokenizer --tokenizer F --file TEXT [--reps N] [--json]          encode MB/s
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "model/chat_format.h"
#include "model/tokenizer.h"
#include "model/v4file.h"
#include "tools/commands.h"

namespace v4::cli {

namespace {

struct source {
  std::string model_path, tokenizer_path, config_path;
};

void add_source_options(CLI::App* cmd, source* s) {
  auto* m = cmd->add_option("-m,--model", s->model_path, "v4 model file (its tokenizer.* metadata)");
  auto* t = cmd->add_option("--tokenizer", s->tokenizer_path, "Hugging Face tokenizer.json");
  cmd->add_option("--tokenizer-config", s->config_path,
                  "tokenizer_config.json (default: the one next to tokenizer.json, if any)");
  m->excludes(t);
}

bool read_whole(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

std::string read_stdin() {
  std::ostringstream ss;
  ss << std::cin.rdbuf();
  return ss.str();
}

// The tokenizer named by -m or --tokenizer; nullptr after printing the error.
std::unique_ptr<model::tokenizer> load(const source& s) {
  std::string err;
  std::unique_ptr<model::tokenizer> t;
  if (!s.model_path.empty()) {
    auto f = model::model_file::open(s.model_path, &err);
    if (f) t = model::tokenizer::from_file(*f, &err);
    if (!t) std::fprintf(stderr, "error: %s: %s\n", s.model_path.c_str(), err.c_str());
    return t;
  }
  if (s.tokenizer_path.empty()) {
    std::fprintf(stderr, "error: give a model file (-m FILE) or a tokenizer.json (--tokenizer FILE)\n");
    return nullptr;
  }
  std::string json, config;
  if (!read_whole(s.tokenizer_path, &json)) {
    std::fprintf(stderr, "error: cannot read %s\n", s.tokenizer_path.c_str());
    return nullptr;
  }
  std::string config_path = s.config_path;
  if (config_path.empty()) {
    const size_t slash = s.tokenizer_path.find_last_of('/');
    config_path = (slash == std::string::npos ? std::string() : s.tokenizer_path.substr(0, slash + 1)) +
                  "tokenizer_config.json";
    if (!read_whole(config_path, &config)) config.clear();  // optional
  } else if (!read_whole(config_path, &config)) {
    std::fprintf(stderr, "error: cannot read %s\n", config_path.c_str());
    return nullptr;
  }
  t = model::tokenizer::from_hf_json(json, config, &err);
  if (!t) std::fprintf(stderr, "error: %s: %s\n", s.tokenizer_path.c_str(), err.c_str());
  return t;
}

void print_ids(const std::vector<int32_t>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
  std::printf("%s\n", line.c_str());
}

int run_tokenize(const source& s, bool special) {
  auto t = load(s);
  if (!t) return 1;
  const std::string text = read_stdin();
  std::vector<int32_t> ids;
  std::string err;
  if (!t->encode(text, special, &ids, &err)) {
    std::fprintf(stderr, "error: %s\n", err.c_str());
    return 1;
  }
  print_ids(ids);
  return 0;
}

int run_detokenize(const source& s, bool skip_special) {
  auto t = load(s);
  if (!t) return 1;
  std::istringstream in(read_stdin());
  std::vector<int32_t> ids;
  std::string word;
  while (in >> word) {
    char* end = nullptr;
    const long v = std::strtol(word.c_str(), &end, 10);
    if (*end != '\0' || v < 0 || v >= t->n_vocab()) {
      std::fprintf(stderr, "error: '%s' is not a token id (0..%d)\n", word.c_str(), t->n_vocab() - 1);
      return 1;
    }
    ids.push_back(int32_t(v));
  }
  const std::string text = t->decode(ids, skip_special);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

int run_chat_format(const source& s, const model::chat_options& opt, bool as_ids) {
  const std::string conv = read_stdin();
  std::string prompt, err;
  if (!model::render_chat_json(conv, opt, &prompt, &err)) {
    std::fprintf(stderr, "error: conversation: %s\n", err.c_str());
    return 1;
  }
  if (!as_ids) {
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
    std::printf("\n");
    return 0;
  }
  auto t = load(s);
  if (!t) return 1;
  std::vector<int32_t> ids;
  if (!t->encode(prompt, true, &ids, &err)) {
    std::fprintf(stderr, "error: %s\n", err.c_str());
    return 1;
  }
  print_ids(ids);
  return 0;
}

int run_bench(const source& s, const std::string& file, int reps, bool as_json) {
  auto t = load(s);
  if (!t) return 1;
  std::string text;
  if (!read_whole(file, &text)) {
    std::fprintf(stderr, "error: cannot read %s\n", file.c_str());
    return 1;
  }
  using clock = std::chrono::steady_clock;
  std::vector<int32_t> ids;
  std::string err;
  double first = 0, best = 1e30;
  for (int r = 0; r < reps; ++r) {
    ids.clear();
    const auto t0 = clock::now();
    if (!t->encode(text, true, &ids, &err)) {
      std::fprintf(stderr, "error: %s\n", err.c_str());
      return 1;
    }
    const double sec = std::chrono::duration<double>(clock::now() - t0).count();
    if (r == 0) first = sec;
    best = std::min(best, sec);
  }
  const auto t0 = clock::now();
  const std::string back = t->decode(ids);
  const double dec = std::chrono::duration<double>(clock::now() - t0).count();
  const double mb = text.size() / 1e6;
  if (as_json) {
    nlohmann::json j = {{"bytes", text.size()},          {"tokens", ids.size()},
                        {"encode_first_mb_s", mb / first}, {"encode_best_mb_s", mb / best},
                        {"tokens_per_s", ids.size() / best}, {"decode_mb_s", mb / std::max(dec, 1e-9)},
                        {"round_trip", back == text}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s: %.2f MB, %zu tokens (%.2f bytes/token)\n", file.c_str(), mb, ids.size(),
                text.size() / double(std::max<size_t>(ids.size(), 1)));
    std::printf("encode, one thread: first pass %.1f MB/s (cold BPE cache), best of %d %.1f MB/s (%.2f M tokens/s)\n",
                mb / first, reps, mb / best, ids.size() / best / 1e6);
    std::printf("decode: %.1f MB/s; decode(encode(text)) == text: %s\n", mb / std::max(dec, 1e-9),
                back == text ? "yes" : "NO");
  }
  return back == text ? 0 : 1;
}

void add_tokenizer_commands(CLI::App& app) {
  {
    auto s = std::make_shared<source>();
    auto special = std::make_shared<bool>(false);
    CLI::App* cmd = app.add_subcommand("tokenize", "Text on stdin -> token ids (space-separated)");
    add_source_options(cmd, s.get());
    cmd->add_flag("--special", *special, "parse special tokens in the text (default: they are plain text)");
    cmd->callback([s, special] {
      if (const int rc = run_tokenize(*s, *special); rc != 0) throw CLI::RuntimeError(rc);
    });
  }
  {
    auto s = std::make_shared<source>();
    auto skip = std::make_shared<bool>(false);
    CLI::App* cmd = app.add_subcommand("detokenize", "Token ids on stdin -> text");
    add_source_options(cmd, s.get());
    cmd->add_flag("--skip-special", *skip, "leave out special tokens");
    cmd->callback([s, skip] {
      if (const int rc = run_detokenize(*s, *skip); rc != 0) throw CLI::RuntimeError(rc);
    });
  }
  {
    auto s = std::make_shared<source>();
    auto opt = std::make_shared<model::chat_options>();
    auto ids = std::make_shared<bool>(false);
    auto effort = std::make_shared<std::string>();
    CLI::App* cmd = app.add_subcommand(
        "chat-format", "A JSON conversation on stdin -> the DeepSeek-V4 prompt (official encoding_dsv4 rules)");
    add_source_options(cmd, s.get());
    cmd->add_flag("--thinking", opt->thinking, "thinking mode (<think>); default: chat mode");
    cmd->add_option("--reasoning-effort", *effort, "max or high (thinking mode)")->check(CLI::IsMember({"max", "high"}));
    cmd->add_flag("--ids", *ids, "print token ids instead of text (needs -m or --tokenizer)");
    cmd->callback([s, opt, ids, effort] {
      opt->reasoning_effort = *effort;
      if (const int rc = run_chat_format(*s, *opt, *ids); rc != 0) throw CLI::RuntimeError(rc);
    });
  }
}

void add_bench_tokenizer(CLI::App& bench) {
  auto s = std::make_shared<source>();
  auto file = std::make_shared<std::string>();
  auto reps = std::make_shared<int>(5);
  auto as_json = std::make_shared<bool>(false);
  CLI::App* cmd = bench.add_subcommand("tokenizer", "Tokenizer encode/decode throughput on a text file (one thread)");
  add_source_options(cmd, s.get());
  cmd->add_option("--file", *file, "text file to encode")->required();
  cmd->add_option("--reps", *reps, "encode passes (the best is reported)")->check(CLI::Range(1, 1000));
  cmd->add_flag("--json", *as_json, "one JSON object");
  cmd->callback([s, file, reps, as_json] {
    if (const int rc = run_bench(*s, *file, *reps, *as_json); rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace

V4_COMMAND(add_tokenizer_commands, 30);
V4_BENCH_COMMAND(add_bench_tokenizer, 90);

}  // namespace v4::cli

// v4 bench model -m FILE [-p PROMPT_TOKENS] [-n GEN_TOKENS] [-t THREADS] [--ctx N] [--json]
//
// End-to-end speed of a model file: one prefill of p random token ids (prompt tokens/s), then n
// single-token decode steps (generation tokens/s), peak RSS and the session state. Decode is
// bandwidth-bound, so it also prints the weight bytes one decode token reads and the rate that
// implies, next to the DRAM read bandwidth measured in the same run (the measurement behind
// `v4 bench peak`). docs/BENCH.md has the method and measured results.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/cpu/cpu.h"
#ifdef V4_HAVE_CUDA
#include "backends/cuda/cuda.h"
#endif
#include "model/model.h"
#include "model/session.h"
#include "tools/commands.h"
#include "tools/offload.h"

namespace v4::cli {

namespace {

struct bench_options {
  std::string model;
  int64_t n_prompt = 512;
  int64_t n_gen = 64;
  int64_t n_ctx = 0;  // 0: depth + n_prompt + n_gen
  int64_t n_batch = 0;  // tokens per prefill graph; 0: the session's default
  int64_t depth = 0;  // tokens of context made up before the prefill (random state)
  int threads = 0;
  uint64_t seed = 1;
  bool json = false;
  bool profile = false;
  offload off;
};

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }
bool contains(const std::string& s, const char* p) { return s.find(p) != std::string::npos; }

// Weight bytes one decode token reads, from the file's tensor table (scales included): every
// tensor of the main layers (attention, compressors, indexer, router, shared expert, norms, mHC)
// with the routed experts counted for n_experts_used of n_experts, plus the head and the final
// norm/mHC. Not counted: the embedding (one row per token), tid2eid (one row), MTP layers (the
// runtime does not run them).
struct active_bytes {
  uint64_t total = 0, head = 0, experts = 0, rest = 0;  // experts: the routed share only
  uint64_t on_cpu = 0;                                   // of total, read from host memory
};

active_bytes count_active_bytes(const model::model& m) {
  const model::hparams& hp = m.hp();
  const double expert_share = double(hp.n_experts_used) / double(hp.n_experts);
  active_bytes a;
  std::unordered_map<std::string, std::string> scales_owner;
  for (const model::tensor_entry& t : m.file().tensors())
    if (t.scales) scales_owner[t.scales->d.name] = t.d.name;
  for (const model::tensor_entry& t : m.file().tensors()) {
    const std::string& n = t.d.name;
    if (starts_with(n, "embed.") || starts_with(n, "mtp.") || contains(n, "tid2eid")) continue;
    uint64_t bytes = t.size;
    if (contains(n, ".ffn.experts.")) a.experts += bytes = uint64_t(double(t.size) * expert_share);
    else if (starts_with(n, "head.")) a.head += bytes;
    else a.rest += bytes;
    // Scales are entries of their own; they live with their weight.
    auto owner = scales_owner.find(n);
    const device* d = m.weight_device(owner != scales_owner.end() ? owner->second : n);
    if (!d || d->kind() == device_kind::cpu) a.on_cpu += bytes;
  }
  a.total = a.head + a.experts + a.rest;
  return a;
}

uint64_t peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return uint64_t(ru.ru_maxrss) * 1024;  // Linux: kilobytes
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

nlohmann::json v4_placement_json(const model::model& m) {
  nlohmann::json j = nlohmann::json::array();
  for (const model::placed_bytes& pb : m.placed())
    if (pb.n_tensors) j.push_back({{"device", pb.dev->name()}, {"bytes", pb.bytes}, {"tensors", pb.n_tensors}});
  return j;
}

// Device-to-device copy rate of an accelerator, (bytes read + bytes written) / time, over 1 GiB
// buffers (beyond any cache), best of 5 after a warm-up. 0 when the memory cannot be had.
double measure_copy_gbps(device* d) {
  const size_t bytes = size_t(1) << 30;
  std::string err;
  std::unique_ptr<buffer> a = d->default_buffer_type()->alloc(bytes, &err), b = d->default_buffer_type()->alloc(bytes, &err);
  if (!a || !b) return 0;
  context ctx;
  tensor* ta = ctx.new_tensor(dtype::f32, {int64_t(bytes / 4)});
  tensor* tb = ctx.new_tensor(dtype::f32, {int64_t(bytes / 4)});
  bind_tensor(ta, a.get(), 0);
  bind_tensor(tb, b.get(), 0);
  a->clear(1);
  std::unique_ptr<stream> s = d->new_stream();
  double best = 1e30;
  for (int rep = 0; rep < 6; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    if (!s->copy(ta, tb, &err)) return 0;
    s->synchronize();
    if (rep > 0) best = std::min(best, seconds_since(t0));
  }
  return 2.0 * double(bytes) / best / 1e9;
}

// Random token ids in [0, vocab) (splitmix64): the speed does not depend on the text.
std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> t(size_t(std::max<int64_t>(n, 0)));
  uint64_t s = seed;
  for (int32_t& id : t) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    id = int32_t((z ^ (z >> 31)) % uint64_t(vocab));
  }
  return t;
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "v4 bench model: error: %s\n", what.c_str());
  throw CLI::RuntimeError(1);
}

// The ops that took most of each profiled device's time (--profile): ms = seconds * scale, calls
// divided by per_calls (per decode step, or 1 for the whole prefill).
void print_top_ops(const std::vector<device*>& devs, const std::vector<op_profile>& profiles, const char* what,
                   double scale, double per_calls) {
  for (size_t d = 0; d < devs.size() && d < profiles.size(); ++d) {
    const op_profile& op = profiles[d];
    std::vector<int> order;
    for (int k = 0; k < int(op_kind::COUNT); ++k)
      if (op.calls[k]) order.push_back(k);
    if (order.empty()) continue;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return op.seconds[a] > op.seconds[b]; });
    std::printf("  %-6s %s ", devs[d]->name(), what);
    for (size_t i = 0; i < order.size() && i < 10; ++i)
      std::printf("%s%s %.3f ms (%.0f)", i ? ", " : "", op_name(op_kind(order[i])), op.seconds[order[i]] * scale,
                  double(op.calls[order[i]]) / per_calls);
    std::printf("\n");
  }
}

void run_bench_model(const bench_options& o) {
  std::string err;
  const auto t_load = std::chrono::steady_clock::now();
  model::load_options lo;
  lo.place = o.off.to_options();
  std::unique_ptr<model::model> m = model::model::load(o.model, lo, &err);
  if (!m) fail("cannot load '" + o.model + "': " + err);
  const double load_s = seconds_since(t_load);
  o.off.note_if_unused(m->accelerator() == nullptr);
  const model::hparams& hp = m->hp();

  const int threads = o.threads > 0 ? o.threads : cpu::default_threads();
  model::session_options so;
  so.n_ctx = o.n_ctx > 0 ? o.n_ctx : o.depth + o.n_prompt + o.n_gen;
  so.n_threads = threads;
  if (o.n_batch > 0) so.n_batch = o.n_batch;
  if (o.depth + o.n_prompt + o.n_gen > so.n_ctx)
    fail("--ctx " + std::to_string(so.n_ctx) + " is smaller than -d + -p + -n = " +
         std::to_string(o.depth + o.n_prompt + o.n_gen));
  std::unique_ptr<model::session> s = model::session::create(*m, so, &err);
  if (!s) fail("cannot create a session: " + err);

  if (o.depth > 0 && !s->fill_random(o.depth, o.seed, &err)) fail(err);
  const std::vector<int32_t> tokens = random_tokens(o.n_prompt + o.n_gen, hp.vocab_size, o.seed);
  std::vector<float> logits;
  if (!o.json)
    std::fprintf(stderr, "v4 bench model: %s: %s%lld prompt tokens, then %lld decode steps...\n", o.model.c_str(),
                 o.depth ? ("after a random context of " + std::to_string(o.depth) + " tokens, ").c_str() : "",
                 (long long)o.n_prompt, (long long)o.n_gen);

  double prompt_s = 0, gen_s = 0;
  std::vector<op_profile> prefill_ops;  // --profile: the prefill's ops, before the decode's
  model::session::eval_stats prefill_es;  // where the prefill's time went (host and devices)
  sched_stats prefill_ss;
  if (o.n_prompt > 0) {
    s->reset_stats();
    if (o.profile) s->set_op_profiling(true);
    const auto t0 = std::chrono::steady_clock::now();
    if (!s->eval(tokens.data(), o.n_prompt, false, &logits, &err)) fail("prefill: " + err);
    prompt_s = seconds_since(t0);
    prefill_es = s->stats();
    prefill_ss = s->scheduler_stats();
    if (o.profile) prefill_ops = s->op_profiles();
  }
  s->reset_stats();  // the step breakdown below: the decode steps only
  if (o.profile) s->set_op_profiling(true);
  {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < o.n_gen; ++i)
      if (!s->eval(&tokens[size_t(o.n_prompt + i)], 1, false, &logits, &err))
        fail("decode step " + std::to_string(i) + ": " + err);
    gen_s = seconds_since(t0);
  }
  // Before the DRAM measurement, whose 2.25 GiB buffer would count too.
  const uint64_t rss = peak_rss_bytes();
  const active_bytes ab = count_active_bytes(*m);
  const double prompt_tps = prompt_s > 0 ? double(o.n_prompt) / prompt_s : 0;
  const double gen_tps = gen_s > 0 ? double(o.n_gen) / gen_s : 0;
  const double gen_gbps = double(ab.total) * gen_tps / 1e9;
  const double dram_measured = measure_dram_read_gbps(threads);  // -1: no memory for the buffer
  const bool have_dram = dram_measured > 0;
  const double dram_gbps = have_dram ? dram_measured : 0;
  // Offload: the accelerator's share of the active bytes, and its copy bandwidth measured now.
  const device* accel = m->accelerator();
  const uint64_t on_accel = ab.total - ab.on_cpu;
  const double accel_gbps = accel ? measure_copy_gbps(const_cast<device*>(accel)) : 0;
  // Roofline: every active byte read once at its memory's measured rate, the devices one after
  // the other (as the scheduler runs them today).
  double roof_s = 0;
  if (have_dram) roof_s += double(ab.on_cpu) / (dram_gbps * 1e9);
  if (accel_gbps > 0) roof_s += double(on_accel) / (accel_gbps * 1e9);
  const double roof_tps = roof_s > 0 ? 1.0 / roof_s : 0;

  const model::session::eval_stats& es = s->stats();
  const sched_stats& ss = s->scheduler_stats();
  const double per = o.n_gen > 0 ? 1e3 / double(o.n_gen) : 0;  // ms per decode step
  nlohmann::json prof = {{"build_ms", es.build_s * per},  {"plan_ms", ss.plan_s * per},
                         {"alloc_ms", ss.alloc_s * per},  {"copy_ms", ss.copy_s * per},
                         {"read_ms", es.read_s * per},    {"replans", ss.plans},
                         {"splits_per_step", o.n_gen ? double(ss.splits) / double(o.n_gen) : 0},
                         {"copies_per_step", o.n_gen ? double(ss.copies) / double(o.n_gen) : 0},
                         {"nodes_per_step", o.n_gen ? double(ss.nodes) / double(o.n_gen) : 0}};
  for (size_t d = 0; d < s->devices().size(); ++d) {
    prof["compute_ms"][s->devices()[d]->name()] = ss.compute_s[d] * per;
    if (d < s->op_profiles().size())  // ms per decode step by op, where the device's stream times ops
      for (int k = 0; k < int(op_kind::COUNT); ++k)
        if (s->op_profiles()[d].calls[k])
          prof["op_ms"][s->devices()[d]->name()][op_name(op_kind(k))] = s->op_profiles()[d].seconds[k] * per;
  }
  if (o.json) {
    nlohmann::json j = {{"model", o.model},
                        {"n_prompt", o.n_prompt},
                        {"n_gen", o.n_gen},
                        {"n_ctx", so.n_ctx},
                        {"n_batch", so.n_batch},
                        {"depth", o.depth},
                        {"threads", threads},
                        {"load_s", load_s},
                        {"prompt_tps", prompt_tps},
                        {"gen_tps", gen_tps},
                        {"peak_rss_bytes", rss},
                        {"state_bytes", s->state_bytes()},
                        {"active_bytes_per_token", ab.total},
                        {"gen_gbps", gen_gbps},
                        {"dram_gbps", have_dram ? nlohmann::json(dram_gbps) : nlohmann::json(nullptr)},
                        {"weights", v4_placement_json(*m)},
                        {"active_bytes_on_cpu", ab.on_cpu},
                        {"accelerator", accel ? nlohmann::json(accel->name()) : nlohmann::json(nullptr)},
                        {"accel_copy_gbps", accel ? nlohmann::json(accel_gbps) : nlohmann::json(nullptr)},
                        {"roofline_tps", roof_tps}};
    if (o.profile) {
      for (size_t d = 0; d < s->devices().size() && d < prefill_ops.size(); ++d)
        for (int k = 0; k < int(op_kind::COUNT); ++k)
          if (prefill_ops[d].calls[k])
            prof["prefill_op_ms"][s->devices()[d]->name()][op_name(op_kind(k))] = prefill_ops[d].seconds[k] * 1e3;
      j["profile"] = prof;
    }
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  const double MiB = 1048576.0;
  std::printf("v4 bench model: %s, %d threads\n", o.model.c_str(), threads);
  std::printf("  model          %lld layers, hidden %lld, %lld experts (top %lld), vocab %lld; loaded in %.2f s\n",
              (long long)hp.n_layers, (long long)hp.hidden_size, (long long)hp.n_experts, (long long)hp.n_experts_used,
              (long long)hp.vocab_size, load_s);
  std::printf("  prompt         %6lld tokens  %9.2f tokens/s  (%.2f s, chunks of %lld)\n", (long long)o.n_prompt, prompt_tps, prompt_s,
              (long long)so.n_batch);
  if (o.n_prompt > 0) {
    std::printf("  prefill split  %9.1f ms: build graphs %.1f, plan %.1f, allocate %.1f, copies %.1f, read results %.1f",
                1e3 * prompt_s, 1e3 * prefill_es.build_s, 1e3 * prefill_ss.plan_s, 1e3 * prefill_ss.alloc_s,
                1e3 * prefill_ss.copy_s, 1e3 * prefill_es.read_s);
    for (size_t d = 0; d < s->devices().size() && d < prefill_ss.compute_s.size(); ++d)
      std::printf(", compute %s %.1f", s->devices()[d]->name(), 1e3 * prefill_ss.compute_s[d]);
    std::printf(" (%lld chunks)\n", (long long)prefill_es.chunks);
  }
  std::printf("  generation     %6lld tokens  %9.2f tokens/s  (%.2f s)\n", (long long)o.n_gen, gen_tps, gen_s);
  std::printf("  peak RSS       %9.1f MiB (weights are mapped: the pages touched count)\n", rss / MiB);
  std::printf("  session state  %9.1f MiB for %lld positions%s\n", s->state_bytes() / MiB, (long long)so.n_ctx,
              o.depth ? (", decoding at depth " + std::to_string(o.depth + o.n_prompt)).c_str() : "");
  std::printf("  active weights %9.1f MiB per decode token (head %.1f, routed experts %.1f, rest %.1f)\n",
              ab.total / MiB, ab.head / MiB, ab.experts / MiB, ab.rest / MiB);
  if (accel) {
    std::printf("  placement      %9.1f MiB of them on %s (copy %.0f GB/s measured now), %.1f MiB on the CPU "
                "(DRAM read %.2f GB/s)\n", on_accel / MiB, accel->name(), accel_gbps, ab.on_cpu / MiB, dram_gbps);
    std::printf("  roofline       %9.2f tokens/s (each active byte read once at its memory's rate); generation at "
                "%.0f%% of it\n", roof_tps, roof_tps > 0 ? 100 * gen_tps / roof_tps : 0.0);
  } else if (have_dram)
    std::printf("  bandwidth      %9.2f GB/s implied by generation, DRAM read %.2f GB/s (%.0f%%)\n", gen_gbps, dram_gbps,
                dram_gbps > 0 ? 100 * gen_gbps / dram_gbps : 0.0);
  else
    std::printf("  bandwidth      %9.2f GB/s implied by generation; DRAM read: not measured in this build "
                "(see `v4 bench peak`)\n", gen_gbps);
  if (o.n_gen > 0) {
    std::printf("  decode step    %9.3f ms: build graph %.3f, plan %.3f (%lld replans), allocate %.3f, copies %.3f, "
                "read results %.3f", 1e3 * gen_s / double(o.n_gen), es.build_s * per, ss.plan_s * per,
                (long long)ss.plans, ss.alloc_s * per, ss.copy_s * per, es.read_s * per);
    for (size_t d = 0; d < s->devices().size(); ++d)
      std::printf(", compute %s %.3f", s->devices()[d]->name(), ss.compute_s[d] * per);
    std::printf("\n                 per step: %.1f splits, %.1f copies, %.0f nodes\n",
                double(ss.splits) / double(o.n_gen), double(ss.copies) / double(o.n_gen),
                double(ss.nodes) / double(o.n_gen));
#ifdef V4_HAVE_CUDA
    const cuda::graph_counts gc = cuda::graph_stats();
    if (accel && !o.profile)
      std::printf("                 CUDA graphs since start: %lld node-by-node runs, %lld captures, %lld replays\n",
                  (long long)gc.eager, (long long)gc.captured, (long long)gc.replayed);
#endif
    print_top_ops(s->devices(), s->op_profiles(), "ops    ", per, double(o.n_gen));
  }
  // The prefill's ops, in ms for the whole prompt (--profile).
  print_top_ops(s->devices(), prefill_ops, "prefill", 1e3, 1.0);
}

}  // namespace

static void add_bench_model(CLI::App& bench) {
  auto o = std::make_shared<bench_options>();
  CLI::App* cmd = bench.add_subcommand("model", "Prompt and generation tokens/s of a model file (random token ids)");
  cmd->add_option("-m,--model", o->model, "Model file (.v4)")->required();
  cmd->add_option("-p,--prompt", o->n_prompt, "Prompt tokens (one prefill)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 24))
      ->capture_default_str();
  cmd->add_option("-n,--gen", o->n_gen, "Generated tokens (single-token decode steps)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 24))
      ->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  cmd->add_option("--ctx", o->n_ctx, "Context size (default: prompt + generated tokens)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 26));
  cmd->add_option("-d,--depth", o->depth,
                  "Context tokens before the prompt, made up as random state instead of a prefill (decode "
                  "cost at long context; the logits are meaningless)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 26));
  cmd->add_option("-b,--batch", o->n_batch,
                  "Tokens per prefill graph (default: the session's, 256); larger chunks read the routed "
                  "experts' weights fewer times per prompt, and need more memory for activations")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  cmd->add_option("--seed", o->seed, "Seed of the random token ids")->capture_default_str();
  o->off.add_flags(cmd);
  cmd->add_flag("--profile", o->profile,
                "Also time each op (per device: ms per decode step, and ms for the whole prefill); the step's breakdown into graph "
                "building, planning, allocation, copies and compute per device is always printed. On a "
                "GPU, timing each op turns CUDA graphs off");
  cmd->add_flag("--json", o->json,
                "Print one JSON object (prompt_tps, gen_tps, peak_rss_bytes, active_bytes_per_token, gen_gbps, "
                "dram_gbps, ...)");
  cmd->callback([o] { run_bench_model(*o); });
}

V4_BENCH_COMMAND(add_bench_model, 93);

}  // namespace v4::cli

// v4 bench ops: per-op throughput of the CPU backend through the full graph path
// (graph build once, allocation planned once, compute repeated).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/cpu/cpu.h"
#include "tensor/alloc.h"
#include "tensor/ops.h"
#include "tools/commands.h"

namespace v4::cli {

namespace {

struct bench_case {
  std::string name;
  std::string shape;
  double bytes;  // bytes read + written per run (memory traffic the op cannot avoid)
  double flops;  // floating-point operations per run (0: not a compute op)
  std::function<tensor*(context&)> build;
};

// Leaf filled with random values in [lo, hi) (or indices below `ids_below` for integer types).
tensor* leaf(context& ctx, dtype t, std::initializer_list<int64_t> ne, std::vector<std::vector<char>>& store,
             float lo = -1.0f, float hi = 1.0f, int ids_below = 0) {
  tensor* x = ctx.new_tensor(t, ne);
  const size_t n = size_t(x->nelements());
  store.emplace_back(row_size(t, x->ne[0]) * size_t(x->nrows()) + 64);
  char* p = store.back().data();
  p += (64 - reinterpret_cast<uintptr_t>(p) % 64) % 64;
  x->data = p;
  std::mt19937 rng(1234);
  if (t == dtype::i32) {
    std::uniform_int_distribution<int32_t> d(0, std::max(ids_below, 1) - 1);
    for (size_t i = 0; i < n; ++i) reinterpret_cast<int32_t*>(p)[i] = d(rng);
  } else {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (float& f : v) f = d(rng);
    traits(t).from_f32(v.data(), p, int64_t(n));
  }
  x->flags |= kFlagWeight;
  return x;
}

std::vector<bench_case> cases(int64_t n_elem, std::vector<std::vector<char>>& store) {
  const int64_t row = 4096, rows = std::max<int64_t>(1, n_elem / row);
  const double f = 4.0, el = double(row * rows);
  const std::string rs = "[" + std::to_string(row) + ", " + std::to_string(rows) + "]";
  std::vector<bench_case> c;
  auto a = [row, rows, &store](context& ctx) { return leaf(ctx, dtype::f32, {row, rows}, store); };
  c.push_back({"add", rs, 3 * f * el, el, [=](context& ctx) { return add(ctx, a(ctx), a(ctx)); }});
  c.push_back({"mul (row broadcast)", rs, 2 * f * el, el,
               [=, &store](context& ctx) { return mul(ctx, a(ctx), leaf(ctx, dtype::f32, {row, 1}, store)); }});
  c.push_back({"scale", rs, 2 * f * el, 2 * el, [=](context& ctx) { return scale(ctx, a(ctx), 0.5f, 1.0f); }});
  c.push_back({"silu", rs, 2 * f * el, 0, [=](context& ctx) { return silu(ctx, a(ctx)); }});
  c.push_back({"exp", rs, 2 * f * el, 0, [=](context& ctx) { return v4::exp(ctx, a(ctx)); }});
  c.push_back({"rms_norm", rs, 2 * f * el, 3 * el, [=](context& ctx) { return rms_norm(ctx, a(ctx), 1e-6f); }});
  c.push_back({"softmax", rs, 2 * f * el, 0, [=](context& ctx) { return softmax(ctx, a(ctx)); }});
  c.push_back({"sum (dim 0)", rs, f * el, el, [=](context& ctx) { return sum(ctx, a(ctx), 0); }});
  c.push_back({"cast f32->bf16", rs, 6 * el, 0, [=](context& ctx) { return cast(ctx, a(ctx), dtype::bf16); }});
  c.push_back({"get_rows bf16", "[4096, 4096 of 32768]", 6.0 * 4096 * 4096, 0, [&store](context& ctx) {
                 return get_rows(ctx, leaf(ctx, dtype::bf16, {4096, 32768}, store),
                                 leaf(ctx, dtype::i32, {4096}, store, 0, 0, 32768));
               }});
  const int64_t tok = std::max<int64_t>(1, rows / 64);
  c.push_back({"rope (512-d, 64 heads, last 64 rotated)", "[512, 64, " + std::to_string(tok) + "]",
               2 * f * 512 * 64 * tok, 0, [=, &store](context& ctx) {
                 tensor* x = leaf(ctx, dtype::f32, {512, 64, tok}, store);
                 tensor* pos = leaf(ctx, dtype::i32, {tok}, store, 0, 0, 100000);
                 rope_params p{.n_rot = 64, .base = 160000.0f, .yarn_factor = 16.0f, .yarn_orig_ctx = 65536.0f};
                 return rope(ctx, x, pos, p);
               }});
  const int64_t hrows = std::max<int64_t>(1, n_elem / 128);
  c.push_back({"hadamard 128", "[128, " + std::to_string(hrows) + "]", 2 * f * 128 * hrows, 7.0 * 128 * hrows,
               [=, &store](context& ctx) {
                 return hadamard(ctx, leaf(ctx, dtype::f32, {128, hrows}, store), 0.08838834764f);
               }});
  c.push_back({"top_k 512 of 16384", "[16384, 64]", f * 16384 * 64, 0, [&store](context& ctx) {
                 return top_k(ctx, leaf(ctx, dtype::f32, {16384, 64}, store), 512);
               }});
  for (dtype wt : {dtype::f32, dtype::bf16}) {
    const double wb = double(row_size(wt, 4096)) * 4096;
    const std::string tn = type_name(wt);
    c.push_back({"matmul " + tn + " decode", "w [4096, 4096], x [4096, 1]", wb,
                 2.0 * 4096 * 4096, [wt, &store](context& ctx) {
                   return matmul(ctx, leaf(ctx, wt, {4096, 4096}, store), leaf(ctx, dtype::f32, {4096, 1}, store));
                 }});
    c.push_back({"matmul " + tn + " prefill", "w [4096, 4096], x [4096, 512]", wb,
                 2.0 * 4096 * 4096 * 512, [wt, &store](context& ctx) {
                   return matmul(ctx, leaf(ctx, wt, {4096, 4096}, store), leaf(ctx, dtype::f32, {4096, 512}, store));
                 }});
  }
  c.push_back({"matmul_id bf16 (64 experts, top-6, 32 tokens)", "w [1024, 512, 64], x [1024, 1, 32]",
               2.0 * 1024 * 512 * 64, 2.0 * 1024 * 512 * 6 * 32, [&store](context& ctx) {
                 return matmul_id(ctx, leaf(ctx, dtype::bf16, {1024, 512, 64}, store),
                                  leaf(ctx, dtype::f32, {1024, 1, 32}, store),
                                  leaf(ctx, dtype::i32, {6, 32}, store, 0, 0, 64));
               }});
  return c;
}

}  // namespace

static void add_bench_ops(CLI::App& bench) {
  struct opts {
    bool quick = false, json = false;
    int threads = 0, reps = 5;
    std::string filter;
  };
  auto o = std::make_shared<opts>();
  CLI::App* cmd = bench.add_subcommand("ops", "Per-op throughput of the CPU backend (GB/s and GFLOP/s)");
  cmd->add_flag("--quick", o->quick, "Small (cache-resident) sizes: a fast smoke run");
  cmd->add_option("--threads,-t", o->threads, "Threads (default: all cores)");
  cmd->add_option("--reps", o->reps, "Timed repetitions per op (median reported)")->check(CLI::Range(1, 1000));
  cmd->add_option("--filter", o->filter, "Only ops whose name contains this text");
  cmd->add_flag("--json", o->json, "Print one JSON array instead of a table");
  cmd->callback([o] {
    const int nt = o->threads > 0 ? o->threads : cpu::default_threads();
    const int64_t n_elem = o->quick ? (int64_t(1) << 20) : (int64_t(1) << 26);  // f32 elements per main tensor
    device* dev = cpu::cpu_device();
    std::vector<std::vector<char>> store;
    nlohmann::json out = nlohmann::json::array();
    if (!o->json)
      std::printf("v4 bench ops: %s; using %d threads, %s sizes\n%-46s %-32s %10s %9s %10s\n", dev->description().c_str(), nt,
                  o->quick ? "quick (cache-resident)" : "large (>= 256 MiB per tensor)", "op", "shape", "ms", "GB/s",
                  "GFLOP/s");
    for (bench_case& bc : cases(n_elem, store)) {
      if (!o->filter.empty() && bc.name.find(o->filter) == std::string::npos) continue;
      context ctx;
      tensor* y = bc.build(ctx);
      graph g;
      std::string err;
      if (!build_graph(ctx, {y}, &g)) {
        std::fprintf(stderr, "%s: %s\n", bc.name.c_str(), ctx.error().c_str());
        continue;
      }
      graph_allocator alloc(dev->default_buffer_type());
      auto st = dev->new_stream();
      st->set_n_threads(nt);
      if (!alloc.allocate(g, &err) || !st->compute(g, &err)) {  // also the warm-up run
        std::fprintf(stderr, "%s: %s\n", bc.name.c_str(), err.c_str());
        continue;
      }
      std::vector<double> times;
      for (int r = 0; r < o->reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        st->compute(g, &err);
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(times.begin(), times.end());
      const double t = times[times.size() / 2];
      const double gbps = bc.bytes / t / 1e9, gflops = bc.flops / t / 1e9;
      if (o->json)
        out.push_back({{"op", bc.name}, {"shape", bc.shape}, {"seconds", t}, {"gbps", gbps}, {"gflops", gflops}});
      else
        std::printf("%-46s %-32s %10.3f %9.2f %10.2f\n", bc.name.c_str(), bc.shape.c_str(), t * 1e3, gbps, gflops);
      store.clear();
    }
    if (o->json) std::printf("%s\n", out.dump(2).c_str());
  });
}

V4_BENCH_COMMAND(add_bench_ops, 90);

}  // namespace v4::cli

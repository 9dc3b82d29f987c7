// The graph allocator: no two live tensors share bytes, the peak is reported and tight enough,
// plans are reused for repeated graphs, and results equal an allocation without reuse.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <unordered_map>

#include "backends/cpu/cpu.h"
#include "tensor/alloc.h"
#include "tensor/ops.h"

namespace v4 {
namespace {

struct random_graph {
  context ctx;
  std::vector<float> input_data;
  tensor* input = nullptr;
  std::vector<tensor*> outputs;
};

// A random DAG of elementwise and reduction ops over rows of different lengths, with fan-out,
// views and dead ends, so that lifetimes interleave.
void make_random_graph(random_graph& rg, uint32_t seed) {
  std::mt19937 rng(seed);
  context& ctx = rg.ctx;
  const int64_t n0 = 1 + rng() % 67, n1 = 1 + rng() % 9;
  rg.input = ctx.new_tensor(dtype::f32, {n0, n1});
  rg.input->flags |= kFlagInput;
  std::vector<tensor*> pool{rg.input};
  const int n_ops = 8 + rng() % 40;
  for (int i = 0; i < n_ops; ++i) {
    tensor* a = pool[rng() % pool.size()];
    tensor* b = pool[rng() % pool.size()];
    tensor* r = nullptr;
    switch (rng() % 7) {
      case 0: r = a->same_shape(*b) ? add(ctx, a, b) : add(ctx, a, a); break;
      case 1: r = a->same_shape(*b) ? mul(ctx, a, b) : mul(ctx, a, a); break;
      case 2: r = silu(ctx, a); break;
      case 3: r = scale(ctx, a, 0.5f, 0.25f); break;
      case 4: r = concat(ctx, a, a, 0); break;  // grows: sizes vary
      case 5: r = cont(ctx, transpose(ctx, a)); break;
      case 6: r = softmax(ctx, a); break;
    }
    ASSERT_NE(r, nullptr) << ctx.error();
    r->set_name("n%d", i);
    pool.push_back(r);
  }
  rg.outputs = {pool.back(), pool[pool.size() / 2]};
  rg.input_data.resize(size_t(rg.input->nelements()));
  std::uniform_real_distribution<float> d(-1, 1);
  for (float& v : rg.input_data) v = d(rng);
}

// Live interval [first, last] in node indices for every tensor the plan placed.
TEST(Allocator, LiveTensorsNeverOverlap) {
  for (uint32_t seed = 1; seed <= 200; ++seed) {
    random_graph rg;
    make_random_graph(rg, seed);
    graph g;
    ASSERT_TRUE(build_graph(rg.ctx, rg.outputs, &g));
    const alloc_plan plan = plan_graph(g, 64);
    const size_t n = g.nodes.size();
    std::unordered_map<const tensor*, size_t> idx;
    for (size_t i = 0; i < n; ++i) idx[g.nodes[i]] = i;
    std::vector<int64_t> first(n + g.leafs.size()), last(n + g.leafs.size());
    for (size_t i = 0; i < n; ++i) {
      first[i] = int64_t(i);
      last[i] = (g.nodes[i]->flags & kFlagOutput) ? int64_t(n) : int64_t(i);
    }
    for (size_t j = 0; j < g.leafs.size(); ++j) {
      first[n + j] = -1;
      last[n + j] = int64_t(n);
    }
    for (size_t i = 0; i < n; ++i)
      for (const tensor* s : g.nodes[i]->src) {
        if (!s) continue;
        const tensor* b = s->base();
        auto it = idx.find(b);
        const size_t slot = it != idx.end() ? it->second
                                            : n + size_t(std::find(g.leafs.begin(), g.leafs.end(), b) - g.leafs.begin());
        last[slot] = std::max(last[slot], int64_t(i));
      }
    size_t max_live = 0;
    for (size_t a = 0; a < plan.offsets.size(); ++a) {
      if (plan.offsets[a] == SIZE_MAX) continue;
      const tensor* ta = a < n ? g.nodes[a] : g.leafs[a - n];
      const size_t sa = ta->nbytes();
      ASSERT_LE(plan.offsets[a] + sa, plan.peak);
      for (size_t b = a + 1; b < plan.offsets.size(); ++b) {
        if (plan.offsets[b] == SIZE_MAX) continue;
        const tensor* tb = b < n ? g.nodes[b] : g.leafs[b - n];
        const bool live_together = first[a] <= last[b] && first[b] <= last[a];
        const bool bytes_overlap =
            plan.offsets[a] < plan.offsets[b] + tb->nbytes() && plan.offsets[b] < plan.offsets[a] + sa;
        ASSERT_FALSE(live_together && bytes_overlap)
            << "seed " << seed << ": " << ta->name << " and " << tb->name << " overlap while both live";
      }
    }
    // Peak is at least the largest single moment's live bytes and at most everything at once.
    size_t total = 0;
    for (size_t s = 0; s < plan.offsets.size(); ++s)
      if (plan.offsets[s] != SIZE_MAX) total += (s < n ? g.nodes[s] : g.leafs[s - n])->nbytes() + 64;
    for (int64_t t = 0; t < int64_t(n); ++t) {
      size_t live = 0;
      for (size_t s = 0; s < plan.offsets.size(); ++s)
        if (plan.offsets[s] != SIZE_MAX && first[s] <= t && t <= last[s])
          live += (s < n ? g.nodes[s] : g.leafs[s - n])->nbytes();
      max_live = std::max(max_live, live);
    }
    EXPECT_GE(plan.peak, max_live);
    EXPECT_LE(plan.peak, total);
  }
}

// Reuse must not change results: the same graph computed with the planned (shared) memory and
// with every tensor in memory of its own gives identical bits.
TEST(Allocator, ReuseGivesTheSameResults) {
  device* dev = cpu::cpu_device();
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    std::vector<std::vector<float>> results[2];
    for (int mode = 0; mode < 2; ++mode) {
      random_graph rg;
      make_random_graph(rg, seed);
      graph g;
      ASSERT_TRUE(build_graph(rg.ctx, rg.outputs, &g));
      std::string err;
      graph_allocator alloc(dev->default_buffer_type());
      std::vector<std::vector<float>> own;
      if (mode == 1) {  // no reuse: private memory for every node and the input
        for (tensor* t : g.nodes)
          if (!t->view_src) {
            own.emplace_back(size_t(t->nelements()) + 1);
            t->data = own.back().data();
          }
        own.emplace_back(rg.input_data.size());
        rg.input->data = own.back().data();
        resolve_views(g);
      } else {
        ASSERT_TRUE(alloc.allocate(g, &err)) << err;
      }
      std::copy(rg.input_data.begin(), rg.input_data.end(), static_cast<float*>(rg.input->data));
      auto st = dev->new_stream();
      ASSERT_TRUE(st->compute(g, &err)) << err;
      for (tensor* o : rg.outputs) {
        const float* p = static_cast<const float*>(o->data);
        results[mode].emplace_back(p, p + o->nelements());
      }
    }
    ASSERT_EQ(results[0], results[1]) << "seed " << seed;
  }
}

TEST(Allocator, PlanIsReusedForRepeatedGraphs) {
  device* dev = cpu::cpu_device();
  graph_allocator alloc(dev->default_buffer_type());
  std::string err;
  size_t peak = 0;
  for (int step = 0; step < 5; ++step) {  // a new context per step, as a decode loop builds them
    random_graph rg;
    make_random_graph(rg, 7);
    graph g;
    ASSERT_TRUE(build_graph(rg.ctx, rg.outputs, &g));
    ASSERT_TRUE(alloc.allocate(g, &err)) << err;
    if (step == 0) peak = alloc.peak_bytes();
    EXPECT_EQ(alloc.peak_bytes(), peak);
  }
  EXPECT_EQ(alloc.n_plans_made(), 1);
  random_graph other;
  make_random_graph(other, 8);
  graph g;
  ASSERT_TRUE(build_graph(other.ctx, other.outputs, &g));
  ASSERT_TRUE(alloc.allocate(g, &err));
  EXPECT_EQ(alloc.n_plans_made(), 2);
}

TEST(Allocator, ChainReusesMemory) {
  // x -> 16 unary ops in a chain: only two intermediates are ever live, plus the input.
  context ctx;
  tensor* x = ctx.new_tensor(dtype::f32, {1024});
  x->flags |= kFlagInput;
  tensor* y = x;
  for (int i = 0; i < 16; ++i) y = scale(ctx, y, 1.0f, 1.0f);
  graph g;
  ASSERT_TRUE(build_graph(ctx, {y}, &g));
  const alloc_plan plan = plan_graph(g, 64);
  EXPECT_EQ(plan.peak, 3 * 4096u);
}

TEST(Allocator, LeafWithoutDataIsAnError) {
  context ctx;
  tensor* w = ctx.new_tensor(dtype::f32, {8, 8});
  w->set_name("blk.0.w");
  tensor* x = ctx.new_tensor(dtype::f32, {8});
  x->flags |= kFlagInput;
  graph g;
  ASSERT_TRUE(build_graph(ctx, {matmul(ctx, w, x)}, &g));
  graph_allocator alloc(cpu::cpu_device()->default_buffer_type());
  std::string err;
  EXPECT_FALSE(alloc.allocate(g, &err));
  EXPECT_NE(err.find("blk.0.w"), std::string::npos) << err;
}

}  // namespace
}  // namespace v4

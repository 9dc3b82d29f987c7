// The MoE router's fused ops against the chains they replace, on the CPU: route_topk must choose
// exactly the experts of top_k(add(sqrt(softplus(logits)), bias), k), and route_weights must give
// the bits of scale(div(w, sum(w, 0)), s) on w = gather(sqrt(softplus(logits)), ids), at every ISA
// level the host runs. The model's golden tests run on the CPU and depend on these bits.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/backends.h"
#include "backends/cpu/cpu.h"
#include "tensor/alloc.h"
#include "tensor/graph.h"
#include "tensor/ops.h"

namespace v4 {
namespace {

const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

struct router_case {
  std::string name;
  int64_t E, T;
  int k;
  std::vector<float> logits;  // [E, T]
  std::vector<float> bias;    // [E] or empty
  bool normalize;
  float scale;
  bool transposed;            // logits seen through a permuted view of a [T, E] leaf
};

// The chain of ops the model used before the fused ops (model/forward.cpp, moe()).
tensor* chain_weights(context& ctx, tensor* s, tensor* ids, bool normalize, float scale) {
  tensor* w = gather(ctx, s, ids);
  if (normalize) w = div(ctx, w, sum(ctx, w, 0));
  return v4::scale(ctx, w, scale);
}

// Bits of two f32 or i32 tensors of n elements, equal element by element.
void expect_same_bits(const tensor* got, const tensor* want, const std::string& what) {
  const int64_t n = want->nelements();
  ASSERT_EQ(got->nelements(), n) << what;
  const auto* g = static_cast<const uint32_t*>(got->data);
  const auto* w = static_cast<const uint32_t*>(want->data);
  int bad = 0;
  for (int64_t i = 0; i < n; ++i)
    if (g[i] != w[i] && ++bad <= 5) {
      float gf, wf;
      std::memcpy(&gf, &g[i], 4);
      std::memcpy(&wf, &w[i], 4);
      ADD_FAILURE() << what << " element " << i << ": fused 0x" << std::hex << g[i] << " (" << gf << " / " << std::dec
                    << int32_t(g[i]) << "), chain 0x" << std::hex << w[i] << " (" << wf << " / " << std::dec
                    << int32_t(w[i]) << ")";
    }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << n << " elements differ";
}

// Runs both forms of one case on the CPU, at the current ISA cap, and compares them.
void check_case(const router_case& c, const std::string& where) {
  SCOPED_TRACE(c.name + " on " + where);
  context ctx;
  std::vector<float> leaf(c.logits);
  tensor* logits;
  if (c.transposed) {  // leaf [T, E] holding logits[e, t] at (t, e)
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t e = 0; e < c.E; ++e) leaf[size_t(e * c.T + t)] = c.logits[size_t(t * c.E + e)];
    tensor* m = ctx.new_tensor(dtype::f32, {c.T, c.E});
    m->data = leaf.data();
    logits = permute(ctx, m, 1, 0, 2, 3);
  } else {
    logits = ctx.new_tensor(dtype::f32, {c.E, c.T});
    logits->data = leaf.data();
  }
  std::vector<float> bias_data(c.bias);
  tensor* bias = nullptr;
  if (!c.bias.empty()) {
    bias = ctx.new_tensor(dtype::f32, {c.E});
    bias->data = bias_data.data();
  }
  // Hash routing: ids given, duplicates allowed.
  std::vector<int32_t> hash_ids(size_t(c.k * c.T));
  std::mt19937 rng(7);
  for (int32_t& v : hash_ids) v = int32_t(rng() % uint32_t(c.E));
  tensor* given = ctx.new_tensor(dtype::i32, {c.k, c.T});
  given->data = hash_ids.data();

  tensor* s = sqrt(ctx, softplus(ctx, logits));
  tensor* chain_ids = top_k(ctx, bias ? add(ctx, s, bias) : s, c.k);
  tensor* chain_w = chain_weights(ctx, s, chain_ids, c.normalize, c.scale);
  tensor* chain_hash_w = chain_weights(ctx, s, given, c.normalize, c.scale);
  tensor* ids = route_topk(ctx, logits, bias, c.k);
  tensor* w = route_weights(ctx, logits, ids, c.normalize, c.scale);
  tensor* hash_w = route_weights(ctx, logits, given, c.normalize, c.scale);
  ASSERT_TRUE(ctx.ok()) << ctx.error();

  graph g;
  ASSERT_TRUE(build_graph(ctx, {chain_ids, chain_w, chain_hash_w, ids, w, hash_w}, &g)) << ctx.error();
  graph_allocator alloc(cpu::cpu_device()->default_buffer_type());
  std::string err;
  ASSERT_TRUE(alloc.allocate(g, &err)) << err;
  ASSERT_TRUE(cpu::cpu_device()->new_stream()->compute(g, &err)) << err;
  expect_same_bits(ids, chain_ids, "route_topk");
  expect_same_bits(w, chain_w, "route_weights");
  expect_same_bits(hash_w, chain_hash_w, "route_weights (given ids)");
}

std::vector<float> random_logits(int64_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<router_case> cases() {
  std::vector<router_case> cs;
  // The model's shapes: V4-Flash (256 experts, top 6, routed_scale 1.5) and Pro (384, 2.5), decode
  // and a few prefill rows, with the selection bias.
  cs.push_back({"flash_256x1", 256, 1, 6, random_logits(256, -6, 6, 1), random_logits(256, -0.3f, 0.3f, 2), true, 1.5f, false});
  cs.push_back({"flash_256x9", 256, 9, 6, random_logits(256 * 9, -6, 6, 3), random_logits(256, -0.3f, 0.3f, 4), true, 1.5f, false});
  cs.push_back({"pro_384x3", 384, 3, 6, random_logits(384 * 3, -6, 6, 5), random_logits(384, -0.3f, 0.3f, 6), true, 2.5f, false});
  // Rows that end in a partial vector (SIMD tails), no bias, no normalization, k = E.
  cs.push_back({"tail_37x4_plain", 37, 4, 5, random_logits(37 * 4, -8, 8, 7), {}, false, 2.5f, false});
  cs.push_back({"all_13x3", 13, 3, 13, random_logits(13 * 3, -3, 3, 8), random_logits(13, -1, 1, 9), true, 1.0f, false});
  // Strided logits rows (the chain's ops and the fused ones read the same view).
  cs.push_back({"transposed_70x5", 70, 5, 8, random_logits(70 * 5, -6, 6, 10), random_logits(70, -0.3f, 0.3f, 11), true, 1.5f, true});
  {  // Exact ties: integer logits, biases from two values (equal scores go to the lower expert).
    router_case c{"ties_64x6", 64, 6, 10, {}, {}, true, 1.5f, false};
    std::mt19937 rng(12);
    for (int i = 0; i < 64 * 6; ++i) c.logits.push_back(float(rng() % 4));
    for (int i = 0; i < 64; ++i) c.bias.push_back((rng() & 1) ? 0.5f : 0.0f);
    cs.push_back(c);
  }
  {  // Adversarial values: past softplus's threshold, huge, tiny, signed zeros, subnormals, the
     // extremes of f32; the same value at many experts.
    const std::vector<float> vals = {1e30f, -1e30f, 100, -100, 25, 20, 20.000002f, 19.999998f, -20, 1e-30f, -1e-30f, 0.0f,
                                     -0.0f, FLT_MAX, -FLT_MAX, 1e-40f, -88.7f, 88.8f};
    router_case c{"adversarial_64x5", 64, 5, 24, {}, {}, true, 1.5f, false};
    std::mt19937 rng(13);
    for (int i = 0; i < 64 * 5; ++i) c.logits.push_back(vals[rng() % vals.size()]);
    c.bias = random_logits(64, -0.1f, 0.1f, 14);
    cs.push_back(c);
    c.name = "adversarial_64x5_nobias_plain";
    c.bias.clear();
    c.normalize = false;
    cs.push_back(c);
  }
  {  // Specials: NaN (ranked last), +inf (first; weights inf, normalized NaN), -inf (score 0).
    router_case c{"specials_96x4", 96, 4, 12, random_logits(96 * 4, -10, 10, 15), random_logits(96, -0.5f, 0.5f, 16), true,
                  1.5f, false};
    std::mt19937 rng(17);
    for (float& x : c.logits) {
      const uint32_t r = rng() % 20;
      if (r == 0) x = kNaN;
      else if (r == 1) x = kInf;
      else if (r == 2 || r == 3) x = -kInf;
    }
    // Row 1 all -inf (every weight 0: normalized 0/0 = NaN); row 2 all NaN.
    for (int64_t e = 0; e < 96; ++e) {
      c.logits[size_t(96 + e)] = -kInf;
      c.logits[size_t(2 * 96 + e)] = kNaN;
    }
    cs.push_back(c);
    c.name = "specials_96x4_plain";
    c.normalize = false;
    cs.push_back(c);
  }
  return cs;
}

TEST(RouteBits, FusedRouterMatchesTheChainOnTheCpu) {
  backends::init();
  const cpu::isa saved = cpu::isa_limit();
  int levels = 0;
  for (cpu::isa level : {cpu::isa::scalar, cpu::isa::avx2, cpu::isa::avx512, cpu::isa::neon}) {
    if (!cpu::isa_available(level)) continue;
    ++levels;
    cpu::set_isa_limit(level);
    for (const router_case& c : cases()) check_case(c, std::string("CPU_") + cpu::isa_name(level));
  }
  cpu::set_isa_limit(saved);
  EXPECT_GE(levels, 1);
}

}  // namespace
}  // namespace v4

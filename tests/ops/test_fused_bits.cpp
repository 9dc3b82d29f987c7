// The fused ops that fold an FP8 round trip or a RoPE into their producer give, on the CPU, the
// bits of the unfused chains they replace (the model's goldens run on the CPU and must not move):
//   rms_norm_w(a, w, eps, 128)                 == fp8_roundtrip(rms_norm_w(a, w, eps), 128)
//   swiglu(g, u, limit, wts, 128)              == fp8_roundtrip(swiglu(g, u, limit, wts), 128)
//   norm_rope(a, w, pos, p, eps, block, n)     == fp8_roundtrip(rope(rms_norm_w(a, w, eps), pos, p), block, n)
//   norm_rope(a, nullptr, pos, p, eps)         == rope(rms_norm(a, eps), pos, p)
//   attn_mqa / attn_sparse(..., {pos, p})      == rope(permute(attn_mqa / attn_sparse(...), 0, 2, 1, 3), pos, p)
// on random rows, zeros, huge outliers, specials (NaN, +-inf), rows that are no multiple of the
// block, strided sources, T = 1 and T > 1. Both graphs run in one CPU computation; the results
// are compared bit for bit (NaN payloads included).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
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

// Host data of the leaves (kept alive while the graph runs).
struct leaves {
  std::vector<std::vector<float>> f;
  std::vector<std::vector<int32_t>> i;
  std::vector<std::vector<uint8_t>> b;  // raw bytes (bf16 rows, fp8 codes, e8m0 scales)
};

enum class fill { random, zeros, outliers, specials };

// A leaf f32 [ne] on the host, values by kind (scale sets the random range).
tensor* leaf_f32(context& ctx, leaves& L, std::initializer_list<int64_t> ne, fill kind, std::mt19937& rng,
                 float scale = 3.0f) {
  tensor* t = ctx.new_tensor(dtype::f32, ne);
  std::vector<float> v(size_t(t->nelements()));
  std::uniform_real_distribution<float> d(-scale, scale), coin(0.0f, 1.0f);
  for (float& x : v) {
    x = kind == fill::zeros ? 0.0f : d(rng);
    if (kind == fill::outliers && coin(rng) < 0.01f) x = (coin(rng) < 0.5f ? -1 : 1) * 3e5f * (1 + coin(rng));
    if (kind == fill::specials && coin(rng) < 0.03f) x = coin(rng) < 0.3f ? kNaN : coin(rng) < 0.5f ? kInf : -kInf;
  }
  L.f.push_back(std::move(v));
  t->data = L.f.back().data();
  return t;
}
tensor* positions(context& ctx, leaves& L, int64_t T, int32_t max_pos, std::mt19937& rng) {
  tensor* t = ctx.new_tensor(dtype::i32, {T});
  std::vector<int32_t> v(static_cast<size_t>(T));
  for (int32_t& p : v) p = int32_t(rng() % uint32_t(max_pos + 1));
  L.i.push_back(std::move(v));
  t->data = L.i.back().data();
  return t;
}

// Computes both results in one CPU graph and compares their bits.
void expect_same_bits(context& ctx, tensor* chain, tensor* fused, const std::string& what, bool differ = false) {
  ASSERT_TRUE(ctx.ok()) << what << ": " << ctx.error();
  ASSERT_NE(chain, nullptr);
  ASSERT_NE(fused, nullptr);
  ASSERT_EQ(chain->nelements(), fused->nelements()) << what;
  chain->flags |= kFlagOutput;
  fused->flags |= kFlagOutput;
  graph g;
  ASSERT_TRUE(build_graph(ctx, {chain, fused}, &g)) << what << ": " << ctx.error();
  graph_allocator alloc(cpu::cpu_device()->default_buffer_type());
  std::string err;
  ASSERT_TRUE(alloc.allocate(g, &err)) << what << ": " << err;
  ASSERT_TRUE(cpu::cpu_device()->new_stream()->compute(g, &err)) << what << ": " << err;
  const size_t n = size_t(fused->nelements());
  std::vector<uint32_t> a(n), b(n);
  chain->buf->get(chain, a.data(), 0, n * 4);  // both contiguous f32
  fused->buf->get(fused, b.data(), 0, n * 4);
  size_t bad = 0, first = n;
  for (size_t k = 0; k < n; ++k)
    if (a[k] != b[k] && ++bad == 1) first = k;
  if (differ) {  // the check's own check: results that must not match
    EXPECT_GT(bad, 0u) << what << ": expected different bits";
    return;
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << n << " elements differ; first at " << first;
}

// The test must be able to fail: the chain without its round trip differs from the fused result.
TEST(FusedBits, DetectsAMissingRoundTrip) {
  backends::init();
  std::mt19937 rng(7);
  context ctx;
  leaves L;
  tensor* a = leaf_f32(ctx, L, {1024, 2}, fill::random, rng);
  tensor* w = leaf_f32(ctx, L, {1024}, fill::random, rng, 2.0f);
  tensor* chain = rms_norm_w(ctx, a, w, 1e-6f);  // no rounding
  tensor* fused = rms_norm_w(ctx, a, w, 1e-6f, 128);
  chain->flags |= kFlagOutput;
  fused->flags |= kFlagOutput;
  graph g;
  ASSERT_TRUE(build_graph(ctx, {chain, fused}, &g));
  graph_allocator alloc(cpu::cpu_device()->default_buffer_type());
  std::string err;
  ASSERT_TRUE(alloc.allocate(g, &err)) << err;
  ASSERT_TRUE(cpu::cpu_device()->new_stream()->compute(g, &err)) << err;
  std::vector<float> x(2048), y(2048);
  chain->buf->get(chain, x.data(), 0, x.size() * 4);
  fused->buf->get(fused, y.data(), 0, y.size() * 4);
  EXPECT_NE(std::memcmp(x.data(), y.data(), x.size() * 4), 0);
}

TEST(FusedBits, RmsNormWeightedThenFp8) {
  backends::init();
  std::mt19937 rng(11);
  struct cfg {
    int64_t n, rows;
    fill kind;
    bool strided;  // the source seen through a transposed view
    int block;
  };
  for (const cfg& c : {cfg{1024, 1, fill::random, false, 128}, cfg{1024, 7, fill::random, false, 128},
                       cfg{96, 3, fill::random, false, 128}, cfg{32, 2, fill::random, false, 128},
                       cfg{300, 4, fill::outliers, false, 128}, cfg{256, 2, fill::zeros, false, 128},
                       cfg{200, 3, fill::specials, false, 128}, cfg{130, 5, fill::random, true, 128},
                       cfg{33, 6, fill::random, true, 16}}) {
    context ctx;
    leaves L;
    tensor* a = c.strided ? transpose(ctx, leaf_f32(ctx, L, {c.rows, c.n}, c.kind, rng))
                          : leaf_f32(ctx, L, {c.n, c.rows}, c.kind, rng);
    tensor* w = leaf_f32(ctx, L, {c.n}, fill::random, rng, 2.0f);
    tensor* chain = fp8_roundtrip(ctx, rms_norm_w(ctx, a, w, 1e-6f), c.block);
    tensor* fused = rms_norm_w(ctx, a, w, 1e-6f, c.block);
    expect_same_bits(ctx, chain, fused,
                     "rms_norm_w " + std::to_string(c.n) + "x" + std::to_string(c.rows) + " fill " +
                         std::to_string(int(c.kind)) + (c.strided ? " strided" : ""));
  }
}

TEST(FusedBits, SwigluThenFp8) {
  backends::init();
  std::mt19937 rng(13);
  struct cfg {
    int64_t I, k, T;
    float limit;
    bool wts;
    fill kind;
    bool strided;
  };
  for (const cfg& c : {cfg{2048, 6, 1, 10.0f, true, fill::random, false}, cfg{2048, 6, 3, 10.0f, true, fill::random, false},
                       cfg{2048, 1, 2, 0.0f, false, fill::random, false}, cfg{64, 2, 3, 10.0f, true, fill::random, false},
                       cfg{32, 1, 4, 0.0f, false, fill::random, false}, cfg{512, 2, 1, 0.0f, false, fill::outliers, false},
                       cfg{256, 2, 2, 10.0f, true, fill::zeros, false}, cfg{300, 3, 2, 7.0f, true, fill::specials, false},
                       cfg{130, 2, 2, 10.0f, true, fill::random, true}}) {
    context ctx;
    leaves L;
    auto src = [&](float scale) {
      return c.strided ? permute(ctx, leaf_f32(ctx, L, {c.k, c.I, c.T}, c.kind, rng, scale), 1, 0, 2, 3)
                       : leaf_f32(ctx, L, {c.I, c.k, c.T}, c.kind, rng, scale);
    };
    tensor* g = src(14.0f);
    tensor* u = src(14.0f);
    tensor* w = c.wts ? leaf_f32(ctx, L, {1, c.k, c.T}, fill::random, rng, 1.0f) : nullptr;
    tensor* chain = fp8_roundtrip(ctx, swiglu(ctx, g, u, c.limit, w), 128);
    tensor* fused = swiglu(ctx, g, u, c.limit, w, 128);
    expect_same_bits(ctx, chain, fused,
                     "swiglu " + std::to_string(c.I) + "x" + std::to_string(c.k) + "x" + std::to_string(c.T) + " fill " +
                         std::to_string(int(c.kind)) + (c.strided ? " strided" : ""));
  }
}

rope_params rope_p(int n_rot, bool interleaved, bool inverse, bool yarn) {
  rope_params p;
  p.n_rot = n_rot;
  p.interleaved = interleaved;
  p.inverse = inverse;
  if (yarn) {  // V4's compressed layers
    p.base = 160000.0f;
    p.yarn_factor = 16.0f;
    p.yarn_orig_ctx = 65536.0f;
    p.yarn_beta_fast = 32.0f;
    p.yarn_beta_slow = 1.0f;
  }
  return p;
}

TEST(FusedBits, NormRopeMatchesTheChain) {
  backends::init();
  std::mt19937 rng(17);
  struct cfg {
    int64_t D, H, T, B;
    int n_rot;
    bool interleaved, inverse, yarn, weight;
    int block;
    int64_t n;  // fp8 n (0: the whole row)
    fill kind;
    bool strided;  // the source seen with dims 1 and 2 swapped in memory
  };
  const cfg cases[] = {
      {512, 64, 1, 1, 64, true, false, false, false, 0, 0, fill::random, false},   // V4 q, decode
      {512, 16, 3, 1, 64, true, false, true, false, 0, 0, fill::random, false},    // q, prefill, YaRN
      {512, 1, 1, 1, 64, true, false, true, true, 64, 448, fill::random, false},   // V4 kv, decode
      {512, 1, 6, 1, 64, true, false, false, true, 64, 448, fill::random, false},  // kv, prefill
      {512, 1, 4, 1, 64, true, false, true, true, 64, 448, fill::outliers, false},
      {512, 2, 2, 1, 64, true, false, false, true, 64, 448, fill::zeros, false},
      {512, 2, 2, 1, 64, true, false, false, true, 64, 448, fill::specials, false},
      {64, 4, 3, 1, 16, true, false, false, false, 0, 0, fill::random, false},     // the tiny / golden heads
      {64, 1, 3, 1, 16, true, false, false, true, 64, 48, fill::random, false},
      {48, 3, 4, 2, 32, false, true, false, true, 16, 0, fill::random, true},      // halves, inverse, 4-d, strided
      {40, 7, 3, 1, 16, true, true, true, false, 12, 0, fill::random, true},
      {192, 2, 5, 1, 64, false, false, true, true, 128, 150, fill::outliers, true},
  };
  for (const cfg& c : cases) {
    context ctx;
    leaves L;
    tensor* a = c.strided ? permute(ctx, leaf_f32(ctx, L, {c.D, c.T, c.H, c.B}, c.kind, rng), 0, 2, 1, 3)
                          : leaf_f32(ctx, L, {c.D, c.H, c.T, c.B}, c.kind, rng);
    tensor* w = c.weight ? leaf_f32(ctx, L, {c.D}, fill::random, rng, 2.0f) : nullptr;
    tensor* pos = positions(ctx, L, c.T, c.yarn ? 65535 : 4000, rng);
    const rope_params p = rope_p(c.n_rot, c.interleaved, c.inverse, c.yarn);
    tensor* chain = rope(ctx, w ? rms_norm_w(ctx, a, w, 1e-6f) : rms_norm(ctx, a, 1e-6f), pos, p);
    if (c.block > 0) chain = fp8_roundtrip(ctx, chain, c.block, c.n);
    tensor* fused = norm_rope(ctx, a, w, pos, p, 1e-6f, c.block, c.n);
    expect_same_bits(ctx, chain, fused,
                     "norm_rope D" + std::to_string(c.D) + " H" + std::to_string(c.H) + " T" + std::to_string(c.T) +
                         " fill " + std::to_string(int(c.kind)) + (c.strided ? " strided" : ""));
  }
}

// A leaf of raw bytes [ne] of type t (bf16 values, fp8_e4m3 codes, e8m0 scales), by make(k).
tensor* leaf_bytes(context& ctx, leaves& L, dtype t, std::initializer_list<int64_t> ne, size_t elem,
                   const std::function<void(uint8_t*)>& make) {
  tensor* r = ctx.new_tensor(t, ne);
  std::vector<uint8_t> v(size_t(r->nelements()) * elem);
  for (size_t k = 0; k < v.size(); k += elem) make(&v[k]);
  L.b.push_back(std::move(v));
  r->data = L.b.back().data();
  return r;
}

// The attention ops with their output rotation against attention, then rope of the permuted
// result: V4's decode shapes (64 heads of 512, compact fp8 store with a bf16 rest, ids) at T = 1
// and T > 1, attn_mqa over f32 keys (prefill), the tiny model's heads, halves and partial rotations.
TEST(FusedBits, AttnOutRopeMatchesTheChain) {
  backends::init();
  std::mt19937 rng(23);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f), coin(0.0f, 1.0f);
  auto bf16 = [&](uint8_t* b) {  // a random bf16 in (-2, 2): the top half of an f32
    const float x = 2.0f * unit(rng);
    uint32_t u;
    std::memcpy(&u, &x, 4);
    const uint16_t h = uint16_t(u >> 16);
    std::memcpy(b, &h, 2);
  };
  auto mask_leaf = [&](context& ctx, leaves& L, int64_t n, int64_t T) {  // 30% -inf
    tensor* m = leaf_f32(ctx, L, {n, T}, fill::random, rng, 1.0f);
    for (float& x : L.f.back())
      if (coin(rng) < 0.3f) x = -kInf;
    return m;
  };
  struct cfg {
    bool mqa;                  // attn_mqa over W f32 keys; else attn_sparse (ring bf16 [D, W])
    int64_t D, H, T, W, R, k;  // attn_sparse: R store rows (0: none), k ids per token (0: all rows)
    int64_t nq;                // compact store: fp8 dims (0: plain f32 store)
    int n_rot;
    bool interleaved, yarn;
  };
  const cfg cases[] = {
      {false, 512, 64, 1, 128, 96, 48, 448, 64, true, true},  // V4 CSA decode: compact rows by id
      {false, 512, 64, 3, 128, 40, 16, 448, 64, true, false},
      {false, 512, 16, 1, 128, 0, 0, 0, 64, true, true},      // window only
      {true, 512, 8, 5, 70, 0, 0, 0, 64, true, true},         // attn_mqa (prefill, f32 keys)
      {false, 64, 8, 4, 24, 10, 6, 0, 16, true, false},       // the tiny model's heads, plain f32 store
      {false, 40, 3, 2, 9, 12, 5, 32, 8, false, false},       // halves over part of the dims
  };
  for (const cfg& c : cases) {
    for (bool perturb : {false, true}) {
      context ctx;
      leaves L;
      tensor* q = permute(ctx, leaf_f32(ctx, L, {c.D, c.H, c.T}, fill::random, rng, 1.0f), 0, 2, 1, 3);  // [D, T, H]
      tensor* sink = leaf_f32(ctx, L, {c.H}, fill::random, rng, 2.0f);
      tensor* pos = positions(ctx, L, c.T, c.yarn ? 65535 : 4000, rng);
      const rope_params p = rope_p(c.n_rot, c.interleaved, /*inverse=*/true, c.yarn);
      const float scale = 1.0f / std::sqrt(float(c.D));
      const attn_out_rope out{pos, p};
      tensor *plain = nullptr, *fused = nullptr;
      if (c.mqa) {
        tensor* kv = leaf_f32(ctx, L, {c.D, c.W}, fill::random, rng, 1.0f);
        tensor* mask = mask_leaf(ctx, L, c.W, c.T);
        plain = attn_mqa(ctx, q, kv, mask, sink, scale);
        fused = attn_mqa(ctx, q, kv, mask, sink, scale, &out);
      } else {
        sparse_keys k;
        k.ring = leaf_bytes(ctx, L, dtype::bf16, {c.D, c.W}, 2, bf16);
        if (c.R > 0 && c.nq > 0) {
          k.store = leaf_bytes(ctx, L, dtype::fp8_e4m3, {c.nq, c.R}, 1, [&](uint8_t* b) {
            const uint8_t code = uint8_t(rng());
            *b = (code & 0x7F) == 0x7F ? uint8_t(code ^ 1) : code;  // no NaN codes
          });
          k.store->scales = leaf_bytes(ctx, L, dtype::e8m0, {(c.nq + 63) / 64, c.R}, 1,
                                       [&](uint8_t* b) { *b = uint8_t(124 + rng() % 4); });
          k.store->scale_block[0] = 64;
          k.store->scale_block[1] = 1;
          if (c.nq < c.D) k.rest = leaf_bytes(ctx, L, dtype::bf16, {c.D - c.nq, c.R}, 2, bf16);
        } else if (c.R > 0) {
          k.store = leaf_f32(ctx, L, {c.D, c.R}, fill::random, rng, 1.0f);
        }
        const int64_t Rv = c.R;
        if (c.k > 0) {
          k.ids = ctx.new_tensor(dtype::i32, {c.k, c.T});
          std::vector<int32_t> v(size_t(c.k * c.T));
          for (int32_t& x : v) x = int32_t(rng() % uint32_t(Rv + 2)) - 1;  // some outside [0, Rv)
          L.i.push_back(std::move(v));
          k.ids->data = L.i.back().data();
        }
        tensor* mask = mask_leaf(ctx, L, c.W + Rv, c.T);
        plain = attn_sparse(ctx, q, k, mask, sink, scale);
        fused = attn_sparse(ctx, q, k, mask, sink, scale, &out);
      }
      ASSERT_TRUE(ctx.ok()) << ctx.error();
      rope_params pc = p;
      if (perturb) pc.inverse = false;  // the check must be able to fail: the other direction differs
      tensor* chain = rope(ctx, permute(ctx, plain, 0, 2, 1, 3), pos, pc);
      expect_same_bits(ctx, chain, fused,
                       std::string(c.mqa ? "attn_mqa" : "attn_sparse") + " D" +
                           std::to_string(c.D) + " H" + std::to_string(c.H) + " T" + std::to_string(c.T) +
                           (perturb ? " (perturbed chain)" : ""),
                       perturb);
    }
  }
}

}  // namespace
}  // namespace v4

namespace v4 {
namespace {

// hc_pre (tensor/ops.h) against its chain, region by region (each region of the fused node
// copied out by cont(), which moves bits unchanged):
//   S = hc_post(f, X, w_post) (post) or X;  W = hc_mix(matmul(fn, rms_norm(S as [HC*D, T])));
//   u = rms_norm_w(hc_sum(S, W's pre), norm);  q = fp8_roundtrip(u, 128)
// on random streams, zeros, huge outliers and specials, with and without post and q, T = 1 and 3.
TEST(FusedBits, HcPreMatchesTheChain) {
  backends::init();
  std::mt19937 rng(23);
  struct cfg {
    int64_t D, T;
    fill kind;
    bool post;
    int block;
  };
  const cfg cfgs[] = {
      {256, 1, fill::random, true, 128},   {256, 3, fill::random, true, 128},  {256, 3, fill::random, false, 0},
      {256, 1, fill::zeros, true, 128},    {256, 3, fill::zeros, false, 128},  {256, 3, fill::outliers, true, 128},
      {256, 1, fill::outliers, false, 0},  {256, 3, fill::specials, true, 128}, {96, 3, fill::random, true, 32},
      {4096, 1, fill::random, true, 128},
  };
  const float s[3] = {0.37f, 1.5f, 0.8f};
  const float eps = 1e-6f;
  for (const cfg& c : cfgs) {
    const int64_t HC = 4, M = (2 + HC) * HC, D = c.D, T = c.T;
    const std::string what = "D=" + std::to_string(D) + " T=" + std::to_string(T) + " kind=" +
                             std::to_string(int(c.kind)) + (c.post ? " post" : "") + " block=" + std::to_string(c.block);
    context ctx;
    leaves L;
    tensor* X = leaf_f32(ctx, L, {D, HC, T}, c.kind, rng);
    tensor* fn = leaf_f32(ctx, L, {HC * D, M}, fill::random, rng, 2.0f / std::sqrt(float(HC * D)));
    tensor* base = leaf_f32(ctx, L, {M}, fill::random, rng, 1.0f);
    tensor* norm = leaf_f32(ctx, L, {D}, fill::random, rng, 1.5f);
    tensor* f = c.post ? leaf_f32(ctx, L, {D, T}, c.kind, rng) : nullptr;
    tensor* wp = c.post ? leaf_f32(ctx, L, {1 + HC, HC, T}, fill::random, rng, 2.0f) : nullptr;
    // The chain, as the model built it before the fusion (model/forward.cpp).
    tensor* S = c.post ? hc_post(ctx, f, X, wp) : X;
    tensor* mix = matmul(ctx, fn, rms_norm(ctx, reshape(ctx, S, {HC * D, T}), eps));
    tensor* W = hc_mix(ctx, mix, base, s, 20, eps);
    tensor* pre = view_3d(ctx, W, 1, HC, T, sizeof(float), W->nb[1], 0);
    tensor* u = rms_norm_w(ctx, hc_sum(ctx, S, pre), norm, eps);
    tensor* q = c.block ? fp8_roundtrip(ctx, u, c.block) : nullptr;
    // The fused node and its regions.
    hc_pre_params p;
    for (int i = 0; i < 3; ++i) p.scale[i] = s[i];
    p.iters = 20, p.hc_eps = eps, p.rms_eps = eps, p.fp8_block = c.block, p.f = f, p.w_post = wp;
    tensor* node = hc_pre(ctx, X, fn, base, norm, p);
    ASSERT_TRUE(ctx.ok()) << what << ": " << ctx.error();
    const hc_pre_layout l = hc_pre_layout_of(node);
    auto region = [&](int64_t at, int64_t n) { return cont(ctx, view_1d(ctx, node, n, size_t(at) * sizeof(float))); };
    std::vector<std::pair<tensor*, tensor*>> pairs = {{u, region(l.u, D * T)}, {W, region(l.w, M * T)}};
    if (c.post) pairs.push_back({S, region(l.s, D * HC * T)});
    if (q) pairs.push_back({q, region(l.q, D * T)});
    std::vector<tensor*> outs;
    for (auto& pr : pairs) {
      pr.first->flags |= kFlagOutput;
      pr.second->flags |= kFlagOutput;
      outs.push_back(pr.first);
      outs.push_back(pr.second);
    }
    graph g;
    ASSERT_TRUE(build_graph(ctx, outs, &g)) << what << ": " << ctx.error();
    graph_allocator alloc(cpu::cpu_device()->default_buffer_type());
    std::string err;
    ASSERT_TRUE(alloc.allocate(g, &err)) << what << ": " << err;
    ASSERT_TRUE(cpu::cpu_device()->new_stream()->compute(g, &err)) << what << ": " << err;
    const char* names[] = {"u", "W", "S", "q"};
    for (size_t i = 0; i < pairs.size(); ++i) {
      tensor *a = pairs[i].first, *b = pairs[i].second;
      const size_t n = size_t(a->nelements());
      ASSERT_EQ(n, size_t(b->nelements())) << what;
      std::vector<uint32_t> x(n), y(n);
      a->buf->get(a, x.data(), 0, n * 4);
      b->buf->get(b, y.data(), 0, n * 4);
      size_t bad = 0, first = n;
      for (size_t k = 0; k < n; ++k)
        if (x[k] != y[k] && ++bad == 1) first = k;
      EXPECT_EQ(bad, 0u) << what << " region " << names[c.post || i < 2 ? i : i + 1] << ": " << bad << " of " << n
                         << " differ; first at " << first;
    }
  }
}

}  // namespace
}  // namespace v4

namespace v4 {
namespace {

// fp8_rounded_block over a byte range (tensor/ops.h): hc_pre's q region and nothing else of it;
// whole-row producers only where their rows are whole runs counted from the start.
TEST(FusedBits, Fp8RoundedRanges) {
  context ctx;
  auto node = [&](int64_t D, int64_t T, bool post, int block) {
    hc_pre_params p;
    p.fp8_block = block;
    if (post) p.f = ctx.new_tensor(dtype::f32, {D, T}), p.w_post = ctx.new_tensor(dtype::f32, {5, 4, T});
    return hc_pre(ctx, ctx.new_tensor(dtype::f32, {D, 4, T}), ctx.new_tensor(dtype::f32, {4 * D, 24}),
                  ctx.new_tensor(dtype::f32, {24}), ctx.new_tensor(dtype::f32, {D}), p);
  };
  const size_t f = sizeof(float);
  tensor* a = node(256, 2, true, 128);
  ASSERT_TRUE(ctx.ok()) << ctx.error();
  const hc_pre_layout l = hc_pre_layout_of(a);
  EXPECT_EQ(fp8_rounded_block(a), 0);                                         // not all of it
  EXPECT_EQ(fp8_rounded_block(a, size_t(l.q) * f, size_t(256 * 2) * f), 128);  // q
  EXPECT_EQ(fp8_rounded_block(a, size_t(l.q + 256) * f, 256 * f), 128);       // q's second token
  EXPECT_EQ(fp8_rounded_block(a, size_t(l.u) * f, 256 * f), 0);               // u: not rounded
  EXPECT_EQ(fp8_rounded_block(a, size_t(l.q) * f, size_t(l.w - l.q + 1) * f), 0);  // into W
  EXPECT_EQ(fp8_rounded_block(node(256, 1, false, 0), 0, 256 * f), 0);        // no q
  EXPECT_EQ(fp8_rounded_block(node(96, 1, false, 128), size_t(hc_pre_layout_of(96, 4, 1, false, true).q) * f, 96 * f),
            0);  // D not a multiple of the block: q's rows are not whole runs counted from the start
  tensor* r = rms_norm_w(ctx, ctx.new_tensor(dtype::f32, {256, 2}), ctx.new_tensor(dtype::f32, {256}), 1e-6f, 128);
  EXPECT_EQ(fp8_rounded_block(r, 256 * f, 256 * f), 128);
  tensor* r300 = rms_norm_w(ctx, ctx.new_tensor(dtype::f32, {300, 2}), ctx.new_tensor(dtype::f32, {300}), 1e-6f, 128);
  EXPECT_EQ(fp8_rounded_block(r300), 128);
  EXPECT_EQ(fp8_rounded_block(r300, 300 * f, 300 * f), 0);  // rows of 300: runs restart at each row
}

}  // namespace
}  // namespace v4

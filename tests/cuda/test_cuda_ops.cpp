// CUDA kernels of the "other ops" (docs/CUDA.md) at the model's real sizes, which the op harness
// (tests/ops, small shapes with float64 bounds) does not reach: top_k over the indexer's up to
// 128K scores per query (the segmented path), argsort / top_k falling back to the global sort,
// attn_mqa at V4-Flash's decode and prefill shapes (the chunked, combined path), attn_sparse at
// its decode shapes over compact rows (and the unfused chain it replaces), rope of q and of
// the attention output (permuted) at decode and prefill shapes, and get_rows of the stored
// fp8_e4m3 / mxfp4 / q8_0 rows. Each result is compared with the CPU backend's (exact for the
// integer and decoded results, a small bound for attention and rope), and the time per call is
// printed (not asserted). Without a usable GPU every test skips.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backends/backends.h"
#include "cuda/cuda_test.h"
#include "backends/cpu/cpu.h"
#include "backends/cuda/cuda.h"
#include "quant/fp8.h"
#include "quant/mxfp4.h"
#include "quant/q8_0.h"
#include "tensor/alloc.h"
#include "tensor/ops.h"

namespace v4 {
namespace {

// A leaf's type, shape and bytes (scaled types: with their e8m0 scales and blocks).
struct leaf_spec {
  dtype type = dtype::f32;
  std::vector<int64_t> ne;
  std::vector<uint8_t> bytes;
  std::vector<int64_t> scale_ne;  // empty: no scales
  std::vector<uint8_t> scale_bytes;
  int scale_block[2] = {0, 0};
};

leaf_spec f32_leaf(std::vector<int64_t> ne, const std::vector<float>& v) {
  leaf_spec l;
  l.ne = std::move(ne);
  l.bytes.resize(v.size() * 4);
  std::memcpy(l.bytes.data(), v.data(), l.bytes.size());
  return l;
}
leaf_spec i32_leaf(std::vector<int64_t> ne, const std::vector<int32_t>& v) {
  leaf_spec l;
  l.type = dtype::i32;
  l.ne = std::move(ne);
  l.bytes.resize(v.size() * 4);
  std::memcpy(l.bytes.data(), v.data(), l.bytes.size());
  return l;
}

tensor* make_tensor(context& ctx, dtype t, const std::vector<int64_t>& ne) {
  return ctx.new_tensor(t, int(ne.size()), ne.data());
}

// One op (repeated `copies` times as independent outputs, for timing) on device d, leaves in its
// default buffer type. Returns the first copy's result bytes and the median seconds per copy.
using op_builder = std::function<tensor*(context&, const std::vector<tensor*>&)>;
struct op_run {
  std::vector<uint8_t> out;
  double seconds = 0;
};
// V4_CUDA_OPS_REPS=n (e.g. 1 under a profiler) runs each timed op n times, one copy.
op_run run_op(device* d, const std::vector<leaf_spec>& specs, const op_builder& build, int copies = 1, int reps = 1) {
  if (reps > 1 && std::getenv("V4_CUDA_OPS_REPS")) {
    reps = std::max(1, std::atoi(std::getenv("V4_CUDA_OPS_REPS")));
    copies = 1;
  }
  op_run r;
  context ctx;
  std::string err;
  std::vector<std::unique_ptr<buffer>> bufs;
  buffer_type* bt = d->default_buffer_type();
  auto place = [&](tensor* t, const void* data) {
    bufs.push_back(bt->alloc(t->nbytes(), &err));
    EXPECT_TRUE(bufs.back()) << err;
    bind_tensor(t, bufs.back().get(), 0);
    if (data) bufs.back()->set(t, data, 0, t->nbytes());
  };
  std::vector<tensor*> leaves;
  for (const leaf_spec& s : specs) {
    tensor* t = make_tensor(ctx, s.type, s.ne);
    if (!s.scale_ne.empty()) {
      t->scales = make_tensor(ctx, dtype::e8m0, s.scale_ne);
      t->scale_block[0] = s.scale_block[0];
      t->scale_block[1] = s.scale_block[1];
      place(t->scales, s.scale_bytes.data());
    }
    place(t, s.bytes.data());
    leaves.push_back(t);
  }
  std::vector<tensor*> outs;
  for (int c = 0; c < copies; ++c) {
    tensor* y = build(ctx, leaves);
    EXPECT_TRUE(y) << ctx.error();
    if (!y) return r;
    place(y, nullptr);
    outs.push_back(y);
  }
  graph g;
  EXPECT_TRUE(build_graph(ctx, outs, &g));
  graph_allocator alloc(bt);  // intermediates of a chain of ops (one op: nothing to place)
  EXPECT_TRUE(alloc.allocate(g, &err)) << err;
  std::unique_ptr<stream> s = d->new_stream();
  std::vector<double> secs;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(s->compute(g, &err)) << err;
    const auto t1 = std::chrono::steady_clock::now();
    secs.push_back(std::chrono::duration<double>(t1 - t0).count() / copies);
  }
  std::sort(secs.begin(), secs.end());
  r.seconds = secs[secs.size() / 2];
  r.out.resize(outs[0]->nbytes());
  outs[0]->buf->get(outs[0], r.out.data(), 0, r.out.size());
  return r;
}

template <typename T>
std::vector<T> as(const std::vector<uint8_t>& b) {
  std::vector<T> v(b.size() / sizeof(T));
  std::memcpy(v.data(), b.data(), v.size() * sizeof(T));
  return v;
}

// Largest |got - want|; one failure (the first offending element) when any difference exceeds tol
// (NaN included) or the sizes differ.
double compare_within(const std::vector<float>& got, const std::vector<float>& want, double tol) {
  EXPECT_EQ(got.size(), want.size());
  double worst = 0;
  size_t bad = got.size();
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    const double d = std::fabs(double(got[i]) - want[i]);
    worst = std::max(worst, d);
    if (!(d <= tol) && bad == got.size()) bad = i;
  }
  if (bad < got.size()) ADD_FAILURE() << "element " << bad << ": " << got[bad] << " vs " << want[bad] << " (tolerance " << tol << ")";
  return worst;
}

// Indexer-like scores: sums of ReLUs, so many exact zeros (ties), a few -inf (causal mask).
std::vector<float> indexer_scores(int64_t n, int64_t rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-2, 3);
  std::vector<float> v(size_t(n * rows));
  for (size_t i = 0; i < v.size(); ++i) {
    const float x = d(rng);
    v[i] = x < 0 ? 0.0f : x;
    if (i % 97 == 5) v[i] = -std::numeric_limits<float>::infinity();
    if (i % 211 == 7) v[i] = -0.0f;
  }
  return v;
}

TEST(CudaOps, TopKIndexerSizes) {
  REQUIRE_GPU(gpu);
  device* cpu = cpu::cpu_device();
  struct shape {
    int64_t n, rows, k;
  };
  // Decode (one query) at contexts 4K, 64K, 512K with ratio 4; a prefill-like batch of queries;
  // the MoE gate (256 experts, top 6); k beyond half a segment (the global-sort fallback).
  for (const shape& sh : {shape{1024, 1, 512}, shape{16384, 1, 512}, shape{131072, 1, 512}, shape{16384, 64, 512},
                          shape{256, 64, 6}, shape{20000, 2, 6000}}) {
    SCOPED_TRACE("n " + std::to_string(sh.n) + " rows " + std::to_string(sh.rows) + " k " + std::to_string(sh.k));
    const std::vector<leaf_spec> in{f32_leaf({sh.n, sh.rows}, indexer_scores(sh.n, sh.rows, uint32_t(sh.n + sh.rows)))};
    const int k = int(sh.k);
    auto b = [k](context& c, const std::vector<tensor*>& l) { return top_k(c, l[0], k); };
    const op_run want = run_op(cpu, in, b);
    const op_run got = run_op(gpu, in, b, 10, 21);
    ASSERT_EQ(as<int32_t>(got.out), as<int32_t>(want.out));
    std::printf("top_k n=%lld rows=%lld k=%lld: %.1f us per call\n", (long long)sh.n, (long long)sh.rows, (long long)sh.k,
                got.seconds * 1e6);
  }
}

TEST(CudaOps, ArgsortLargeRows) {
  REQUIRE_GPU(gpu);
  device* cpu = cpu::cpu_device();
  for (bool desc : {false, true}) {
    const std::vector<leaf_spec> in{f32_leaf({20000, 2}, indexer_scores(20000, 2, 11))};
    auto b = [desc](context& c, const std::vector<tensor*>& l) { return argsort(c, l[0], desc); };
    ASSERT_EQ(as<int32_t>(run_op(gpu, in, b).out), as<int32_t>(run_op(cpu, in, b).out)) << "descending " << desc;
  }
}

// attn_mqa at V4-Flash's shapes: 64 heads of 512, window 128 + top-512 selected rows at decode;
// an HCA layer at 512K context (4096 compressed rows); a 128-token prefill chunk over window +
// chunk + 1024 compressed rows. Mask: some -inf.
TEST(CudaOps, AttnMqaModelShapes) {
  REQUIRE_GPU(gpu);
  device* cpu = cpu::cpu_device();
  struct shape {
    int64_t D, T, H, NK;
    const char* what;
  };
  // Decode: a CSA layer (128 window + 512 selected rows), an HCA layer at 512K context (128 +
  // 4096 rows: more tiles per chunk), 2 tokens (MTP-like); prefill: one chunk (chunks == 1).
  for (const shape& sh : {shape{512, 1, 64, 640, "decode"}, shape{512, 1, 64, 128 + 4096, "decode HCA 512K"},
                          shape{512, 2, 64, 640, "decode 2 tokens"}, shape{512, 128, 64, 128 + 128 + 1024, "prefill"}}) {
    SCOPED_TRACE(sh.what);
    std::mt19937 rng(uint32_t(sh.NK));
    std::uniform_real_distribution<float> d(-2, 2);
    std::vector<float> q(size_t(sh.D * sh.T * sh.H)), kv(size_t(sh.D * sh.NK)), mask(size_t(sh.NK * sh.T)),
        sink(size_t(sh.H));
    for (float& x : q) x = d(rng);
    for (float& x : kv) x = d(rng);
    for (float& x : sink) x = d(rng);
    for (size_t i = 0; i < mask.size(); ++i) mask[i] = i % 5 == 3 ? -std::numeric_limits<float>::infinity() : 0.0f;
    const std::vector<leaf_spec> in{f32_leaf({sh.D, sh.T, sh.H}, q), f32_leaf({sh.D, sh.NK}, kv),
                                    f32_leaf({sh.NK, sh.T}, mask), f32_leaf({sh.H}, sink)};
    const float scale = 1.0f / std::sqrt(float(sh.D));
    auto b = [scale](context& c, const std::vector<tensor*>& l) { return attn_mqa(c, l[0], l[1], l[2], l[3], scale); };
    const std::vector<float> want = as<float>(run_op(cpu, in, b).out);
    const op_run got = run_op(gpu, in, b, sh.T == 1 ? 10 : 2, 11);
    const std::vector<float> g = as<float>(got.out);
    // Outputs are convex combinations of rows in [-2, 2]: both devices within a few f32 ulps
    // of 2 times the logits' error; 2e-5 absolute is far above that and far below a wrong row.
    const double worst = compare_within(g, want, 2e-5);
    std::printf("attn_mqa %s D=%lld T=%lld H=%lld NK=%lld: %.1f us per call (max |gpu - cpu| %.2g)\n", sh.what,
                (long long)sh.D, (long long)sh.T, (long long)sh.H, (long long)sh.NK, got.seconds * 1e6, worst);
  }
}

// attn_sparse at V4-Flash's decode shapes, keys as the model stores them with QAT: a bf16 ring of
// 128 slots, compact rows (448 fp8_e4m3 dims with e8m0 scales per 64 + 64 bf16 dims); a CSA layer
// at 64K context (top 512 of 16384 rows) and an HCA layer at 64K (all 512 rows). Compared with the
// CPU (the bound of AttnMqaModelShapes: the same rows, in [-3.75, 3.75]); timed against the
// unfused chain it replaces (cast, 2 get_rows, 2 concats of the keys, gather + concat of the
// mask, attn_mqa).
TEST(CudaOps, AttnSparseModelShapes) {
  REQUIRE_GPU(gpu);
  device* cpu = cpu::cpu_device();
  constexpr int64_t D = 512, H = 64, W = 128, NQ = 448, K = 512;
  struct shape {
    int64_t Rv;
    bool ids;
    const char* what;
  };
  for (const shape& sh : {shape{16384, true, "CSA 64K (top 512 of 16384)"}, shape{512, false, "HCA 64K (512 rows)"}}) {
    SCOPED_TRACE(sh.what);
    std::mt19937 rng(uint32_t(sh.Rv));
    std::uniform_real_distribution<float> d(-2, 2);
    auto bf16_leaf = [&](std::vector<int64_t> ne) {
      leaf_spec l;
      l.type = dtype::bf16;
      l.ne = std::move(ne);
      l.bytes.resize(size_t(l.ne[0] * l.ne[1]) * 2);
      for (size_t i = 0; i < l.bytes.size(); i += 2) {
        uint32_t u;
        const float x = d(rng);
        std::memcpy(&u, &x, 4);
        l.bytes[i] = uint8_t(u >> 16);
        l.bytes[i + 1] = uint8_t(u >> 24);
      }
      return l;
    };
    std::vector<float> q(size_t(D * H)), mask(size_t(W + sh.Rv), 0.0f), sink(static_cast<size_t>(H));
    for (float& x : q) x = d(rng);
    for (float& x : sink) x = d(rng);
    for (int64_t j = 0; j < W; j += 7) mask[size_t(j)] = -std::numeric_limits<float>::infinity();
    // fp8 codes of magnitude 2^-6 .. 3.75 (exponent fields 1..8), scales 2^-1 or 1.
    leaf_spec store;
    store.type = dtype::fp8_e4m3;
    store.ne = {NQ, sh.Rv};
    store.bytes.resize(size_t(NQ * sh.Rv));
    for (uint8_t& c : store.bytes) c = uint8_t((rng() & 0x80) | ((1 + rng() % 8) << 3) | (rng() & 7));
    store.scale_ne = {NQ / 64, sh.Rv};
    store.scale_bytes.resize(size_t(NQ / 64 * sh.Rv));
    for (uint8_t& e : store.scale_bytes) e = uint8_t(126 + rng() % 2);
    store.scale_block[0] = 64;
    store.scale_block[1] = 1;
    std::vector<int32_t> ids(static_cast<size_t>(K));
    for (int32_t& i : ids) i = int32_t(rng() % uint32_t(sh.Rv));
    std::vector<leaf_spec> in{f32_leaf({D, 1, H}, q),    bf16_leaf({D, W}), f32_leaf({W + sh.Rv, 1}, mask),
                              f32_leaf({H}, sink), store,            bf16_leaf({D - NQ, sh.Rv})};
    if (sh.ids) in.push_back(i32_leaf({K, 1}, ids));
    const float scale = 1.0f / std::sqrt(float(D));
    auto fused = [&](context& c, const std::vector<tensor*>& l) {
      const sparse_keys k{.ring = l[1], .store = l[4], .rest = l[5], .ids = sh.ids ? l[6] : nullptr};
      return attn_sparse(c, l[0], k, l[2], l[3], scale);
    };
    // The chain, as the model built it: leaves 7 and 8 are the window and row masks.
    auto chain = [&](context& c, const std::vector<tensor*>& l) {
      tensor* comp = concat(c, get_rows(c, l[4], l[6]), get_rows(c, l[5], l[6]), 0);
      tensor* keys = concat(c, cast(c, l[1], dtype::f32), comp, 1);
      return attn_mqa(c, l[0], keys, concat(c, l[7], gather(c, l[8], l[6]), 0), l[3], scale);
    };
    const std::vector<float> want = as<float>(run_op(cpu, in, fused).out);
    const op_run got = run_op(gpu, in, fused, 10, 11);
    const std::vector<float> g = as<float>(got.out);
    const double worst = compare_within(g, want, 2e-5);
    std::printf("attn_sparse %s: %.1f us per call (max |gpu - cpu| %.2g)\n", sh.what, got.seconds * 1e6, worst);
    if (sh.ids) {  // the chain it replaces (the HCA chain reads all rows through an iota: not built here)
      in.push_back(f32_leaf({W, 1}, std::vector<float>(mask.begin(), mask.begin() + W)));
      in.push_back(f32_leaf({sh.Rv, 1}, std::vector<float>(mask.begin() + W, mask.end())));
      const op_run old = run_op(gpu, in, chain, 10, 11);
      const std::vector<float> o = as<float>(old.out);
      double diff = 0;
      for (size_t i = 0; i < o.size(); ++i) diff = std::max(diff, std::fabs(double(o[i]) - g[i]));
      std::printf("  unfused chain (cast, get_rows x2, concat x3, gather, attn_mqa): %.1f us per call "
                  "(max |chain - fused| %.2g)\n", old.seconds * 1e6, diff);
    }
  }
}

// rope at V4-Flash's shapes: q [512, 64 heads, T] with the last 64 dims rotated (interleaved,
// YaRN as the CSA/HCA layers: base 160000, factor 16, original context 65536), at positions past
// 64K; and the inverse rotation of the attention output through a permuted view ([512, T, 64]
// read as [512, 64, T]: the strided path). Compared with the CPU within 1e-5 absolute (|x| <= 2:
// a few f32 ulps; both compute the angles in double). An FNV-1a hash of the GPU's bytes is
// printed so that two builds of the kernel can be checked for identical bits.
TEST(CudaOps, RopeModelShapes) {
  REQUIRE_GPU(gpu);
  device* cpu = cpu::cpu_device();
  struct shape {
    int64_t T;
    bool inverse;
    const char* what;
  };
  for (const shape& sh : {shape{1, false, "q decode"}, shape{128, false, "q prefill"}, shape{1, true, "inverse, permuted, decode"},
                          shape{128, true, "inverse, permuted, prefill"}}) {
    SCOPED_TRACE(sh.what);
    const int64_t D = 512, H = 64;
    std::mt19937 rng(uint32_t(sh.T + sh.inverse));
    std::uniform_real_distribution<float> d(-2, 2);
    std::vector<float> x(size_t(D * H * sh.T));
    for (float& v : x) v = d(rng);
    std::vector<int32_t> positions(size_t(sh.T));
    for (int64_t t = 0; t < sh.T; ++t) positions[size_t(t)] = int32_t(70001 + 37 * t);
    rope_params rp;
    rp.n_rot = 64;
    rp.interleaved = true;
    rp.inverse = sh.inverse;
    rp.base = 160000.0f;
    rp.yarn_factor = 16.0f;
    rp.yarn_orig_ctx = 65536.0f;
    rp.yarn_beta_fast = 32.0f;
    rp.yarn_beta_slow = 1.0f;
    const bool permuted = sh.inverse;
    const std::vector<leaf_spec> in{f32_leaf(permuted ? std::vector<int64_t>{D, sh.T, H} : std::vector<int64_t>{D, H, sh.T}, x),
                                    i32_leaf({sh.T}, positions)};
    auto b = [rp, permuted](context& c, const std::vector<tensor*>& l) {
      return rope(c, permuted ? permute(c, l[0], 0, 2, 1, 3) : l[0], l[1], rp);
    };
    const std::vector<float> want = as<float>(run_op(cpu, in, b).out);
    const op_run got = run_op(gpu, in, b, 10, 21);
    const std::vector<float> g = as<float>(got.out);
    const double worst = compare_within(g, want, 1e-5);
    uint64_t hash = 1469598103934665603ull;
    for (uint8_t byte : got.out) hash = (hash ^ byte) * 1099511628211ull;
    std::printf("rope %s D=%lld H=%lld T=%lld: %.1f us per call (max |gpu - cpu| %.2g, bits %016llx)\n", sh.what,
                (long long)D, (long long)H, (long long)sh.T, got.seconds * 1e6, worst, (unsigned long long)hash);
  }
}

// get_rows of the compact caches (fp8_e4m3 per 64 with the RoPE dims elsewhere: 448 dims;
// mxfp4 per 32: the indexer's 128) and of a q8_0 embedding: bit-identical to the CPU.
TEST(CudaOps, GetRowsStoredTypes) {
  REQUIRE_GPU(gpu);
  device* cpu = cpu::cpu_device();
  const int64_t R = 40;
  const std::vector<int32_t> ids{3, 0, 39, 3, 17, 22, 5};
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> d(-30, 30);
  auto rows_of = [&](int64_t K) {
    std::vector<float> x(size_t(K * R));
    for (float& v : x) v = d(rng) * (std::uniform_int_distribution<int>(0, 3)(rng) == 0 ? 1e-3f : 1.0f);
    return x;
  };
  std::vector<leaf_spec> cases;
  {
    const int64_t K = 448;
    const std::vector<float> x = rows_of(K);
    leaf_spec l;
    l.type = dtype::fp8_e4m3;
    l.ne = {K, R};
    l.bytes.resize(size_t(K * R));
    l.scale_ne = {K / 64, R};
    l.scale_bytes.resize(size_t(K / 64 * R));
    l.scale_block[0] = 64;
    l.scale_block[1] = 1;
    quant::quantize_fp8_blocks(x.data(), R, K, 64, 1, l.bytes.data(), l.scale_bytes.data());
    cases.push_back(l);
  }
  {
    const int64_t K = 128;
    const std::vector<float> x = rows_of(K);
    leaf_spec l;
    l.type = dtype::mxfp4;
    l.ne = {K, R};
    l.bytes.resize(size_t(K / 2 * R));
    l.scale_ne = {K / 32, R};
    l.scale_bytes.resize(size_t(K / 32 * R));
    l.scale_block[0] = 32;
    l.scale_block[1] = 1;
    for (int64_t r = 0; r < R; ++r)
      quant::quantize_row_mxfp4(x.data() + r * K, l.bytes.data() + r * K / 2, l.scale_bytes.data() + r * K / 32, K);
    cases.push_back(l);
  }
  {
    const int64_t K = 256;
    const std::vector<float> x = rows_of(K);
    leaf_spec l;
    l.type = dtype::q8_0;
    l.ne = {K, R};
    l.bytes.resize(size_t(K / 32 * 34 * R));
    for (int64_t r = 0; r < R; ++r) quant::quantize_row_q8_0(x.data() + r * K, l.bytes.data() + r * K / 32 * 34, K);
    cases.push_back(l);
  }
  for (const leaf_spec& l : cases) {
    SCOPED_TRACE(type_name(l.type));
    const std::vector<leaf_spec> in{l, i32_leaf({int64_t(ids.size())}, ids)};
    auto b = [](context& c, const std::vector<tensor*>& t) { return get_rows(c, t[0], t[1]); };
    const op_run want = run_op(cpu, in, b), got = run_op(gpu, in, b);
    ASSERT_EQ(got.out.size(), want.out.size());
    EXPECT_EQ(std::memcmp(got.out.data(), want.out.data(), got.out.size()), 0);
  }
}

}  // namespace
}  // namespace v4

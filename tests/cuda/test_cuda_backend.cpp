// The CUDA device through the backend interface: registration, buffers, the stream's refusal of
// unsupported nodes and memory it cannot read, and the scheduler splitting one graph between
// CUDA0 and the CPU. The op kernels themselves are checked by the op harness (tests/ops), which
// runs every case on CUDA0 when it is registered. Without a usable GPU every test here skips.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/backends.h"
#include "cuda/cuda_test.h"
#include "backends/cpu/cpu.h"
#include "backends/cuda/cuda.h"
#include "tensor/ops.h"
#include "tensor/sched.h"

namespace v4 {
namespace {

using cuda_test::random_floats;

TEST(CudaBackend, RegisteredBeforeTheCpu) {
  REQUIRE_GPU(gpu);
  const std::vector<device*> all = devices();
  ASSERT_GE(all.size(), 2u);
  EXPECT_EQ(all.front(), gpu);
  EXPECT_EQ(all.back(), cpu::cpu_device());
  EXPECT_EQ(gpu->kind(), device_kind::gpu);
  size_t free = 0, total = 0;
  gpu->memory(&free, &total);
  EXPECT_GT(total, 0u);
  EXPECT_LE(free, total);
  std::printf("CUDA0: %s\n", gpu->description().c_str());
}

TEST(CudaBackend, BuffersRoundTrip) {
  REQUIRE_GPU(gpu);
  for (buffer_type* bt : {gpu->default_buffer_type(), cuda::pinned_buffer_type(gpu)}) {
    ASSERT_NE(bt, nullptr);
    SCOPED_TRACE(bt->name());
    EXPECT_TRUE(gpu->can_read(bt));
    EXPECT_EQ(cpu::cpu_device()->can_read(bt), bt->is_host());
    std::string err;
    std::unique_ptr<buffer> b = bt->alloc(1000, &err);
    ASSERT_TRUE(b) << err;
    context ctx;
    tensor* t = ctx.new_tensor(dtype::f32, {250});
    bind_tensor(t, b.get(), 0);
    b->clear(0x7f);
    std::vector<uint8_t> bytes(1000);
    b->get(t, bytes.data(), 0, 1000);
    for (uint8_t x : bytes) ASSERT_EQ(x, 0x7f);
    const std::vector<float> v = random_floats(250, 3);
    b->set(t, v.data(), 0, 1000);
    std::vector<float> back(250);
    b->get(t, back.data(), 0, 1000);
    EXPECT_EQ(std::memcmp(back.data(), v.data(), 1000), 0);
    float part[3] = {};
    b->get(t, part, 40, 12);  // floats 10..12
    EXPECT_EQ(part[0], v[10]);
    EXPECT_EQ(part[2], v[12]);
  }
  std::string err;
  EXPECT_FALSE(gpu->default_buffer_type()->alloc(size_t(1) << 62, &err));
  EXPECT_NE(err.find("cannot allocate"), std::string::npos) << err;
}

// A CPU-only node for the tests (custom ops have no CUDA kernel): dst = 2 * src, split by thread.
void twice(tensor* dst, const tensor* const* src, int, int ith, int nth, void*) {
  const int64_t n = dst->nelements();
  const float* a = static_cast<const float*>(src[0]->data);
  float* y = static_cast<float*>(dst->data);
  for (int64_t i = n * ith / nth; i < n * (ith + 1) / nth; ++i) y[i] = 2.0f * a[i];
}

TEST(CudaBackend, StreamRefusesUnsupportedNodesAndHostMemory) {
  REQUIRE_GPU(gpu);
  context ctx;
  std::string err;
  tensor* a = ctx.new_tensor(dtype::f32, {8, 2});
  a->set_name("a");
  std::unique_ptr<buffer> b = gpu->default_buffer_type()->alloc(4096, &err);
  ASSERT_TRUE(b) << err;
  bind_tensor(a, b.get(), 0);
  custom_params cp;
  cp.fn = twice;
  tensor* h = custom(ctx, dtype::f32, {8, 2}, {a}, cp);  // custom nodes run on the CPU only
  h->set_name("h");
  bind_tensor(h, b.get(), 256);
  EXPECT_FALSE(gpu->supports_op(h));
  graph g;
  ASSERT_TRUE(build_graph(ctx, {h}, &g));
  std::unique_ptr<stream> s = gpu->new_stream();
  EXPECT_FALSE(s->compute(g, &err));
  EXPECT_NE(err.find("not supported"), std::string::npos) << err;

  // A supported node whose source sits in plain host memory: a clear error, no crash.
  context ctx2;
  std::unique_ptr<buffer> hb = cpu::cpu_device()->default_buffer_type()->alloc(4096, &err);
  tensor* x = ctx2.new_tensor(dtype::f32, {8, 2});
  x->set_name("x");
  bind_tensor(x, hb.get(), 0);
  tensor* y = scale(ctx2, x, 2.0f);
  y->set_name("y");
  bind_tensor(y, b.get(), 0);
  graph g2;
  ASSERT_TRUE(build_graph(ctx2, {y}, &g2));
  err.clear();
  EXPECT_FALSE(s->compute(g2, &err));
  EXPECT_NE(err.find("cannot read"), std::string::npos) << err;
}

// One graph over CUDA0 and the CPU. Weights live in GPU memory, the inputs in host memory:
//   y1 = W1 x            CUDA (weight)          h = custom(y1)     CPU (custom nodes are CPU-only)
//   g  = silu(h)         CUDA (follows h, then moves to its consumer's device: sched.h rule d)
//   y2 = W2 g            CUDA (weight)
//   n  = rms_norm(y2)    CUDA (follows)         ids = argsort(v)   CUDA (first device supporting it)
//   e  = get_rows(E, ids) CUDA (weight)         out = concat(n, e) CUDA
// The same graph on the CPU alone is the reference.
struct mixed_graph {
  context ctx;
  tensor *x, *v, *w1, *w2, *emb;
  tensor *y1, *h, *g, *y2, *n, *ids, *e, *out;
  std::vector<std::unique_ptr<buffer>> bufs;

  tensor* leaf(buffer_type* bt, dtype t, std::initializer_list<int64_t> ne, const char* name, const void* data,
               uint32_t flags) {
    tensor* l = ctx.new_tensor(t, ne);
    l->set_name("%s", name);
    l->flags |= flags;
    std::string err;
    bufs.push_back(bt->alloc(l->nbytes(), &err));
    bind_tensor(l, bufs.back().get(), 0);
    bufs.back()->set(l, data, 0, l->nbytes());
    return l;
  }

  void build(buffer_type* weights, buffer_type* host) {
    const std::vector<float> xv = random_floats(16 * 4, 1), vv = random_floats(6, 2);
    const std::vector<float> w1v = random_floats(16 * 32, 3), w2v = random_floats(32 * 8, 4);
    std::vector<uint16_t> ev(8 * 6);
    const std::vector<float> ef = random_floats(ev.size(), 5);
    for (size_t i = 0; i < ev.size(); ++i) ev[i] = f32_to_bf16(ef[i]);
    x = leaf(host, dtype::f32, {16, 4}, "x", xv.data(), 0);
    v = leaf(host, dtype::f32, {6}, "v", vv.data(), 0);
    w1 = leaf(weights, dtype::f32, {16, 32}, "w1", w1v.data(), kFlagWeight);
    w2 = leaf(weights, dtype::f32, {32, 8}, "w2", w2v.data(), kFlagWeight);
    emb = leaf(weights, dtype::bf16, {8, 6}, "emb", ev.data(), kFlagWeight);
    y1 = matmul(ctx, w1, x);
    custom_params cp;
    cp.fn = twice;
    h = custom(ctx, dtype::f32, {32, 4}, {y1}, cp);
    g = silu(ctx, h);
    y2 = matmul(ctx, w2, g);
    n = rms_norm(ctx, y2, 1e-6f);
    ids = argsort(ctx, v);
    e = get_rows(ctx, emb, ids);
    out = concat(ctx, n, e, 1);
    ASSERT_TRUE(ctx.ok()) << ctx.error();
    out->set_name("out");
  }
};

TEST(CudaBackend, SchedulerSendsUnsupportedOpsToTheCpu) {
  REQUIRE_GPU(gpu);
  device* cpu = cpu::cpu_device();
  std::string err;

  mixed_graph ref;
  ref.build(cpu->default_buffer_type(), cpu->default_buffer_type());
  graph gref;
  ASSERT_TRUE(build_graph(ref.ctx, {ref.out}, &gref));
  scheduler cpu_only({cpu});
  ASSERT_TRUE(cpu_only.compute(gref, &err)) << err;
  std::vector<float> expect(size_t(ref.out->nelements()));
  ref.out->buf->get(ref.out, expect.data(), 0, expect.size() * 4);

  mixed_graph m;
  m.build(gpu->default_buffer_type(), cpu->default_buffer_type());
  graph g;
  ASSERT_TRUE(build_graph(m.ctx, {m.out}, &g));
  scheduler sched({gpu, cpu});
  ASSERT_TRUE(sched.plan(g, &err)) << err;
  EXPECT_EQ(sched.device_of(m.y1), gpu);
  EXPECT_EQ(sched.device_of(m.h), cpu);
  EXPECT_EQ(sched.device_of(m.g), gpu);
  EXPECT_EQ(sched.device_of(m.y2), gpu);
  EXPECT_EQ(sched.device_of(m.n), gpu);
  EXPECT_EQ(sched.device_of(m.ids), gpu);
  EXPECT_EQ(sched.device_of(m.e), gpu);
  EXPECT_EQ(sched.device_of(m.out), gpu);
  bool saw_gpu = false, saw_cpu = false;
  for (const sched_split& sp : sched.splits()) {
    saw_gpu |= sp.dev == gpu;
    saw_cpu |= sp.dev == cpu;
  }
  EXPECT_TRUE(saw_gpu && saw_cpu);
  EXPECT_GE(sched.n_copies(), 3);  // x to the GPU, y1 to the CPU, h and v to the GPU

  for (int step = 0; step < 2; ++step) {  // twice: the second run reuses the plan
    ASSERT_TRUE(sched.compute(g, &err)) << err;
    ASSERT_FALSE(m.out->buf->is_host());
    std::vector<float> got(expect.size());
    m.out->buf->get(m.out, got.data(), 0, got.size() * 4);
    for (size_t i = 0; i < got.size(); ++i) {
      // Only the summation order of the two f32 matmuls differs between the devices.
      const double tol = 1e-5 + 1e-4 * std::fabs(expect[i]);
      ASSERT_NEAR(got[i], expect[i], tol) << "element " << i << " (step " << step << ")";
    }
  }
}

// The small-shape matmul kernels (matmul_small.cuh): small_k (K <= 32, many outputs: mHC's post
// mix), split_row (few long weight rows: mHC's pre mix at decode) and split_tall (the same with
// N > 16: prefill; partial tiles, unaligned K), f32, f16 and bf16 weights, aligned and not,
// against float64 with the exact kernels' bound (K + 2)·u·Σ|w x| (x is not rounded).
TEST(CudaBackend, SmallShapeMatmulsMatchFloat64) {
  REQUIRE_GPU(gpu);
  struct shape {
    dtype t;
    int64_t K, M, N;
  } shapes[] = {{dtype::f32, 5, 4, 4096},    {dtype::f32, 32, 33, 100},  {dtype::bf16, 7, 16, 200},
                {dtype::f32, 16384, 24, 1},  {dtype::f32, 16384, 4, 3},  {dtype::f32, 1027, 9, 2},
                {dtype::bf16, 4096, 64, 1},  {dtype::f32, 16384, 24, 256}, {dtype::f32, 16384, 4, 37},
                {dtype::f32, 1027, 9, 20},  {dtype::f16, 2048, 13, 17}};
  for (const shape& sh : shapes) {
    SCOPED_TRACE(std::string(type_name(sh.t)) + " K" + std::to_string(sh.K) + " M" + std::to_string(sh.M) + " N" +
                 std::to_string(sh.N));
    const std::vector<float> wf = random_floats(size_t(sh.K * sh.M), uint32_t(sh.K + sh.M));
    const std::vector<float> xf = random_floats(size_t(sh.K * sh.N), uint32_t(sh.N + 7));
    std::vector<uint16_t> wb(wf.size());
    std::vector<double> wd(wf.size());
    for (size_t i = 0; i < wf.size(); ++i) {
      wb[i] = sh.t == dtype::f16 ? f32_to_f16(wf[i]) : f32_to_bf16(wf[i]);
      wd[i] = sh.t == dtype::bf16 ? double(bf16_to_f32(wb[i])) : sh.t == dtype::f16 ? double(f16_to_f32(wb[i])) : double(wf[i]);
    }
    context ctx;
    std::string err;
    tensor* w = ctx.new_tensor(sh.t, {sh.K, sh.M});
    tensor* x = ctx.new_tensor(dtype::f32, {sh.K, sh.N});
    std::unique_ptr<buffer> wbuf = gpu->default_buffer_type()->alloc(w->nbytes(), &err);
    std::unique_ptr<buffer> xbuf = gpu->default_buffer_type()->alloc(x->nbytes(), &err);
    ASSERT_TRUE(wbuf && xbuf) << err;
    bind_tensor(w, wbuf.get(), 0);
    bind_tensor(x, xbuf.get(), 0);
    wbuf->set(w, sh.t == dtype::f32 ? static_cast<const void*>(wf.data()) : wb.data(), 0, w->nbytes());
    xbuf->set(x, xf.data(), 0, x->nbytes());
    tensor* y = matmul(ctx, w, x);
    ASSERT_TRUE(y) << ctx.error();
    std::unique_ptr<buffer> ybuf = gpu->default_buffer_type()->alloc(y->nbytes(), &err);
    ASSERT_TRUE(ybuf) << err;
    bind_tensor(y, ybuf.get(), 0);
    graph g;
    ASSERT_TRUE(build_graph(ctx, {y}, &g));
    ASSERT_TRUE(gpu->new_stream()->compute(g, &err)) << err;
    std::vector<float> got(size_t(sh.M * sh.N));
    ybuf->get(y, got.data(), 0, got.size() * 4);
    for (int64_t n = 0; n < sh.N; ++n)
      for (int64_t m = 0; m < sh.M; ++m) {
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < sh.K; ++k) {
          const double p = wd[size_t(m * sh.K + k)] * double(xf[size_t(n * sh.K + k)]);
          ref += p;
          mag += std::fabs(p);
        }
        const double bound = double(sh.K + 2) * std::ldexp(1.0, -24) * mag + 1e-30;
        ASSERT_LE(std::fabs(got[size_t(n * sh.M + m)] - ref), bound) << "row " << n << " output " << m;
      }
  }
}

// CUDA graphs (cuda_device.cu): a graph computed again on the same memory is replayed, one with
// other shapes or pointers is captured anew. Every step gets new input values and is compared with
// the CPU, so a replay that read stale inputs or a capture that missed a kernel fails; the
// process-wide counters prove the replay and capture paths ran (unless V4_CUDA_GRAPHS=0).
TEST(CudaBackend, GraphReplayFollowsNewInputsAndShapes) {
  REQUIRE_GPU(gpu);
  device* cpu = cpu::cpu_device();
  const std::vector<float> wv = random_floats(64 * 48, 7);
  std::string err;
  std::unique_ptr<buffer> wgpu = gpu->default_buffer_type()->alloc(wv.size() * 4, &err);
  ASSERT_TRUE(wgpu) << err;
  const cuda::graph_counts before = cuda::graph_stats();
  scheduler sched({gpu, cpu});
  scheduler cpu_only({cpu});
  graph g, gref;  // the same graph objects every step, as a session's decode loop
  const int rows_per_step[] = {1, 1, 1, 1, 3, 3, 3, 1, 2, 2};
  for (int step = 0; step < 10; ++step) {
    const int rows = rows_per_step[step];
    const std::vector<float> xv = random_floats(size_t(64 * rows), uint32_t(100 + step));
    auto build = [&](context& ctx, graph* out_g, tensor** x, tensor** out, buffer* wbuf, bool gpu_side) -> tensor* {
      tensor* w = ctx.new_tensor(dtype::f32, {64, 48});
      w->flags |= kFlagWeight;
      if (gpu_side) {
        bind_tensor(w, wbuf, 0);
        wbuf->set(w, wv.data(), 0, w->nbytes());
      }
      *x = ctx.new_tensor(dtype::f32, {64, rows});
      (*x)->flags |= kFlagInput;
      tensor* y = rms_norm(ctx, silu(ctx, matmul(ctx, w, *x)), 1e-6f);
      *out = add(ctx, y, scale(ctx, y, 0.5f));
      *out_g = graph{};
      EXPECT_TRUE(build_graph(ctx, {*out}, out_g));
      return w;
    };
    context ctx, cref;
    tensor *x = nullptr, *out = nullptr, *xr = nullptr, *outr = nullptr;
    build(ctx, &g, &x, &out, wgpu.get(), true);
    tensor* wr = build(cref, &gref, &xr, &outr, nullptr, false);
    std::vector<float> wcopy = wv;
    wr->data = wcopy.data();  // CPU weights: plain host memory
    ASSERT_TRUE(sched.plan(g, &err)) << err;
    ASSERT_TRUE(sched.compute(g, &err)) << err;  // allocates x
    std::memcpy(x->data, xv.data(), xv.size() * 4);
    ASSERT_TRUE(sched.compute(g, &err)) << err;
    ASSERT_TRUE(sched.compute(g, &err)) << err;  // a third time: a replay where the key holds
    ASSERT_TRUE(cpu_only.compute(gref, &err)) << err;
    std::memcpy(xr->data, xv.data(), xv.size() * 4);
    ASSERT_TRUE(cpu_only.compute(gref, &err)) << err;
    std::vector<float> got(size_t(out->nelements())), expect(got.size());
    out->buf->get(out, got.data(), 0, got.size() * 4);
    std::memcpy(expect.data(), outr->data, expect.size() * 4);
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], expect[i], 1e-5 + 1e-4 * std::fabs(expect[i])) << "element " << i << ", step " << step;
  }
  const cuda::graph_counts after = cuda::graph_stats();
  const char* env = std::getenv("V4_CUDA_GRAPHS");
  if (env && std::string(env) == "0") GTEST_SKIP() << "V4_CUDA_GRAPHS=0: the results matched node by node";
  EXPECT_GT(after.replayed, before.replayed);
  EXPECT_GT(after.captured, before.captured);
  std::printf("graphs: %lld eager, %lld captured, %lld replayed\n", (long long)(after.eager - before.eager),
              (long long)(after.captured - before.captured), (long long)(after.replayed - before.replayed));
}

// Programmatic dependent launch (common.cuh): a kernel's blocks may start while the previous
// kernel still runs, and wait in pdl_wait() for its results. A chain of 200 dependent adds (each
// adds 1 to the previous result: exact in f32) over 1M elements (several waves of blocks), run
// node by node, captured and replayed, must give x + 200 exactly with PDL on and off: a kernel
// that read its input before the one before it finished would count fewer.
TEST(CudaBackend, DependentKernelChainsWithAndWithoutPdl) {
  REQUIRE_GPU(gpu);
  const bool available = cuda::pdl_enabled();
  constexpr int64_t n = 1 << 20;
  constexpr int kChain = 200;
  std::vector<float> xv(n), ones(n, 1.0f);
  for (int64_t i = 0; i < n; ++i) xv[size_t(i)] = float(i % 1000);
  for (int pdl = 0; pdl < 2; ++pdl) {
    cuda::set_pdl_enabled(pdl == 1 && available);
    scheduler sched({gpu, cpu::cpu_device()});
    context ctx;
    tensor* x = ctx.new_tensor(dtype::f32, {n});
    tensor* one = ctx.new_tensor(dtype::f32, {n});
    x->flags |= kFlagInput;
    one->flags |= kFlagInput;
    tensor* y = x;
    for (int i = 0; i < kChain; ++i) y = add(ctx, y, one);
    graph g;
    ASSERT_TRUE(build_graph(ctx, {y}, &g));
    std::string err;
    for (int run = 0; run < 3; ++run) {  // node by node, then captured, then replayed
      ASSERT_TRUE(sched.compute(g, &err)) << err;  // (the first run also allocates x and one)
      std::memcpy(x->data, xv.data(), size_t(n) * 4);
      std::memcpy(one->data, ones.data(), size_t(n) * 4);
      ASSERT_TRUE(sched.compute(g, &err)) << err;
      std::vector<float> got(static_cast<size_t>(n));
      y->buf->get(y, got.data(), 0, got.size() * 4);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(got[size_t(i)], xv[size_t(i)] + float(kChain)) << "element " << i << ", PDL " << pdl << ", run " << run;
    }
  }
  cuda::set_pdl_enabled(available);
  if (!available) GTEST_SKIP() << "this GPU has no programmatic dependent launch (or V4_CUDA_PDL=0): checked without it";
}

// Decode- and prefill-shaped bf16 matmuls on CUDA0: a few outputs checked against float64, and
// the time per product printed (median of 20 after 3 warm-ups, compute() included, which waits
// for the kernel) as weight bandwidth and arithmetic rate: the baseline of the plain kernel.
TEST(CudaBackend, MatmulTiming) {
  REQUIRE_GPU(gpu);
  const int64_t K = 4096, M = 16384;
  std::vector<uint16_t> wv(size_t(K * M));
  {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> d(-1, 1);
    for (uint16_t& w : wv) w = f32_to_bf16(d(rng));
  }
  for (int64_t N : {int64_t(1), int64_t(64)}) {
    context ctx;
    std::string err;
    tensor* w = ctx.new_tensor(dtype::bf16, {K, M});
    tensor* x = ctx.new_tensor(dtype::f32, {K, N});
    tensor* y = matmul(ctx, w, x);
    ASSERT_TRUE(y) << ctx.error();
    std::unique_ptr<buffer> bw = gpu->default_buffer_type()->alloc(w->nbytes(), &err);
    std::unique_ptr<buffer> bx = gpu->default_buffer_type()->alloc(x->nbytes(), &err);
    std::unique_ptr<buffer> by = gpu->default_buffer_type()->alloc(y->nbytes(), &err);
    ASSERT_TRUE(bw && bx && by) << err;
    bind_tensor(w, bw.get(), 0);
    bind_tensor(x, bx.get(), 0);
    bind_tensor(y, by.get(), 0);
    const std::vector<float> xv = random_floats(size_t(K * N), 8);
    bw->set(w, wv.data(), 0, w->nbytes());
    bx->set(x, xv.data(), 0, x->nbytes());
    graph g;
    ASSERT_TRUE(build_graph(ctx, {y}, &g));
    std::unique_ptr<stream> s = gpu->new_stream();
    std::vector<double> secs;
    for (int rep = 0; rep < 23; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      ASSERT_TRUE(s->compute(g, &err)) << err;
      const auto t1 = std::chrono::steady_clock::now();
      if (rep >= 3) secs.push_back(std::chrono::duration<double>(t1 - t0).count());
    }
    std::sort(secs.begin(), secs.end());
    const double t = secs[secs.size() / 2];
    std::vector<float> got(size_t(M * N));
    by->get(y, got.data(), 0, y->nbytes());
    for (int64_t n = 0; n < N; n += 13)
      for (int64_t m = 0; m < M; m += 997) {
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < K; ++k) {
          const double p = double(bf16_to_f32(wv[size_t(m * K + k)])) * xv[size_t(n * K + k)];
          ref += p;
          mag += std::fabs(p);
        }
        ASSERT_NEAR(got[size_t(n * M + m)], ref, double(K + 2) * 0x1p-24 * mag) << "m " << m << " n " << n;
      }
    std::printf("matmul bf16 K=%lld M=%lld N=%lld: %.1f us, %.0f GB/s of weights, %.0f GFLOP/s\n", (long long)K,
                (long long)M, (long long)N, t * 1e6, double(w->nbytes()) / t * 1e-9, 2.0 * K * M * N / t * 1e-9);
  }
}

}  // namespace
}  // namespace v4

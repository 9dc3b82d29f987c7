// Ops on scaled weight types through the graph: the e8m0 scales attached to a tensor reach the
// kernels (matmul, matmul_id per expert, get_rows), and missing or misshapen scales are refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/backends.h"
#include "backends/cpu/cpu.h"
#include "quant/quant.h"
#include "tensor/alloc.h"
#include "tensor/ops.h"

namespace v4 {
namespace {

struct scaled_weight {
  std::vector<uint8_t> q, s;
  std::vector<float> deq;  // dequantized by quant/ (the reference)
};

// A [K, M, E] weight of type t (fp8 with {128,128} or {32,32} blocks, or mxfp4) with scales.
tensor* make_weight(context& ctx, dtype t, int64_t K, int64_t M, int64_t E, int bk, int bm, scaled_weight& sw,
                    uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  tensor* w = ctx.new_tensor(t, {K, M, E});
  const int64_t sk = (K + bk - 1) / bk, sm = (M + bm - 1) / bm;
  tensor* s = ctx.new_tensor(dtype::e8m0, {sk, sm, E});
  sw.q.resize(row_size(t, K) * size_t(M * E));
  sw.s.resize(size_t(sk * sm * E));
  sw.deq.resize(size_t(K * M * E));
  for (int64_t e = 0; e < E; ++e) {
    std::vector<float> x(size_t(K * M));
    for (float& v : x) v = d(rng) * (1 + (rng() % 4));
    uint8_t* q = sw.q.data() + row_size(t, K) * size_t(M * e);
    uint8_t* sc = sw.s.data() + size_t(sk * sm * e);
    if (t == dtype::mxfp4) {
      for (int64_t m = 0; m < M; ++m) quant::quantize_row_mxfp4(&x[m * K], q + row_size(t, K) * m, sc + sk * m, K);
      for (int64_t m = 0; m < M; ++m)
        quant::dequantize_row_mxfp4(q + row_size(t, K) * m, sc + sk * m, &sw.deq[(e * M + m) * K], K);
    } else {
      quant::quantize_fp8_blocks(x.data(), M, K, bk, bm, q, sc);
      quant::dequantize_fp8_blocks(q, sc, M, K, bk, bm, &sw.deq[e * M * K]);
    }
  }
  w->data = sw.q.data();
  s->data = sw.s.data();
  w->scales = s;
  w->scale_block[0] = bk;
  w->scale_block[1] = bm;
  w->flags |= kFlagWeight;
  return w;
}

std::unique_ptr<graph_allocator> run(context& ctx, tensor* out) {
  graph g;
  EXPECT_TRUE(build_graph(ctx, {out}, &g)) << ctx.error();
  auto alloc = std::make_unique<graph_allocator>(cpu::cpu_device()->default_buffer_type());
  std::string err;
  EXPECT_TRUE(alloc->allocate(g, &err)) << err;
  EXPECT_TRUE(cpu::cpu_device()->new_stream()->compute(g, &err)) << err;
  return alloc;
}

// |y - ref| <= (2^-8 + 2K 2^-24) sum|w x|: kernels may round x to bf16 (mm_variant::x_rounding);
// int8 variants are not picked for fp8/mxfp4.
void expect_close(const float* y, const std::vector<double>& ref, const std::vector<double>& mag, int64_t K) {
  for (size_t i = 0; i < ref.size(); ++i)
    ASSERT_LE(std::fabs(y[i] - ref[i]), (std::ldexp(1.0, -8) + 2.0 * K * std::ldexp(1.0, -24)) * mag[i] + 1e-30)
        << "output " << i;
}

TEST(ScaledOps, MatmulAppliesScales) {
  backends::init();
  struct cfg {
    dtype t;
    int64_t K, M;
    int bk, bm;
  } cfgs[] = {{dtype::mxfp4, 256, 40, 32, 1}, {dtype::fp8_e4m3, 384, 200, 128, 128}, {dtype::fp8_e4m3, 96, 70, 32, 32}};
  for (const cfg& c : cfgs) {
    context ctx;
    scaled_weight sw;
    tensor* w = make_weight(ctx, c.t, c.K, c.M, 1, c.bk, c.bm, sw, 1);
    const int64_t N = 5;
    std::vector<float> xd(size_t(N * c.K));
    std::mt19937 rng(2);
    std::uniform_real_distribution<float> d(-1, 1);
    for (float& v : xd) v = d(rng);
    tensor* x = ctx.new_tensor(dtype::f32, {c.K, N});
    x->data = xd.data();
    tensor* y = matmul(ctx, w, x);
    ASSERT_NE(y, nullptr) << ctx.error();
    auto mem = run(ctx, y);
    std::vector<double> ref(size_t(N * c.M)), mag(ref.size());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t m = 0; m < c.M; ++m)
        for (int64_t k = 0; k < c.K; ++k) {
          const double p = double(sw.deq[m * c.K + k]) * xd[n * c.K + k];
          ref[n * c.M + m] += p;
          mag[n * c.M + m] += std::fabs(p);
        }
    expect_close(static_cast<const float*>(y->data), ref, mag, c.K);
  }
}

TEST(ScaledOps, MatmulIdUsesEachExpertsScales) {
  backends::init();
  context ctx;
  scaled_weight sw;
  const int64_t K = 128, M = 48, E = 5, n_used = 3, T = 4;
  tensor* w = make_weight(ctx, dtype::mxfp4, K, M, E, 32, 1, sw, 3);
  std::vector<float> xd(size_t(K * T));
  for (size_t i = 0; i < xd.size(); ++i) xd[i] = std::sin(0.37 * double(i));
  std::vector<int32_t> idd = {4, 0, 2, 1, 1, 3, 0, 4, 2, 3, 3, 3};  // [n_used, T], repeats included
  tensor* x = ctx.new_tensor(dtype::f32, {K, 1, T});
  x->data = xd.data();
  tensor* ids = ctx.new_tensor(dtype::i32, {n_used, T});
  ids->data = idd.data();
  tensor* y = matmul_id(ctx, w, x, ids);
  ASSERT_NE(y, nullptr) << ctx.error();
  auto mem = run(ctx, y);
  std::vector<double> ref(size_t(M * n_used * T)), mag(ref.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < n_used; ++i) {
      const int64_t e = idd[size_t(i + n_used * t)];
      for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) {
          const double p = double(sw.deq[(e * M + m) * K + k]) * xd[t * K + k];
          ref[(t * n_used + i) * M + m] += p;
          mag[(t * n_used + i) * M + m] += std::fabs(p);
        }
    }
  expect_close(static_cast<const float*>(y->data), ref, mag, K);
}

// Decode with fewer selected experts than threads: the CPU cuts each expert's rows into pieces
// for the threads (ops/matmul.cpp, run_split_experts). Pieces must start on scale rows (fp8
// {128,128}: 128; {32,3}: lcm with 16 = 48) and the result must not depend on the thread count:
// bit-identical to one thread, which multiplies each expert whole. Also within the float64 bound.
TEST(ScaledOps, MatmulIdDecodeSplitAcrossThreadsMatchesOneThread) {
  backends::init();
  struct cfg {
    dtype t;
    int64_t K, M;
    int bk, bm;
  } cfgs[] = {{dtype::mxfp4, 256, 300, 32, 1}, {dtype::fp8_e4m3, 256, 640, 128, 128}, {dtype::fp8_e4m3, 96, 333, 32, 3}};
  for (const cfg& c : cfgs) {
    SCOPED_TRACE(std::string(type_name(c.t)) + " M=" + std::to_string(c.M));
    context ctx;
    scaled_weight sw;
    const int64_t E = 8, n_used = 2;
    tensor* w = make_weight(ctx, c.t, c.K, c.M, E, c.bk, c.bm, sw, 9);
    std::vector<float> xd(size_t(c.K));
    for (size_t i = 0; i < xd.size(); ++i) xd[i] = float(std::cos(0.11 * double(i)));
    std::vector<int32_t> idd = {5, 2};
    tensor* x = ctx.new_tensor(dtype::f32, {c.K, 1, 1});
    x->data = xd.data();
    tensor* ids = ctx.new_tensor(dtype::i32, {n_used, 1});
    ids->data = idd.data();
    tensor* y = matmul_id(ctx, w, x, ids);
    ASSERT_NE(y, nullptr) << ctx.error();
    graph g;
    ASSERT_TRUE(build_graph(ctx, {y}, &g)) << ctx.error();
    graph_allocator alloc(cpu::cpu_device()->default_buffer_type());
    std::string err;
    ASSERT_TRUE(alloc.allocate(g, &err)) << err;
    std::vector<float> one, many;
    for (int threads : {1, 7}) {
      auto st = cpu::cpu_device()->new_stream();
      st->set_n_threads(threads);
      ASSERT_TRUE(st->compute(g, &err)) << err;
      const float* yp = static_cast<const float*>(y->data);
      (threads == 1 ? one : many).assign(yp, yp + c.M * n_used);
    }
    for (size_t i = 0; i < one.size(); ++i) ASSERT_EQ(std::memcmp(&one[i], &many[i], 4), 0) << "output " << i;
    std::vector<double> ref(size_t(c.M * n_used)), mag(ref.size());
    for (int64_t i = 0; i < n_used; ++i)
      for (int64_t m = 0; m < c.M; ++m)
        for (int64_t k = 0; k < c.K; ++k) {
          const double p = double(sw.deq[(idd[size_t(i)] * c.M + m) * c.K + k]) * xd[size_t(k)];
          ref[size_t(i * c.M + m)] += p;
          mag[size_t(i * c.M + m)] += std::fabs(p);
        }
    expect_close(many.data(), ref, mag, c.K);
  }
}

TEST(ScaledOps, GetRowsDequantizes) {
  backends::init();
  for (dtype t : {dtype::mxfp4, dtype::fp8_e4m3}) {
    context ctx;
    scaled_weight sw;
    const int64_t K = 256, R = 300;
    tensor* w = make_weight(ctx, t, K, R, 1, t == dtype::mxfp4 ? 32 : 128, t == dtype::mxfp4 ? 1 : 128, sw, 4);
    std::vector<int32_t> idd = {0, 299, 128, 127, 5};
    tensor* ids = ctx.new_tensor(dtype::i32, {5});
    ids->data = idd.data();
    tensor* y = get_rows(ctx, w, ids);
    ASSERT_NE(y, nullptr) << ctx.error();
    auto mem = run(ctx, y);
    const float* yd = static_cast<const float*>(y->data);
    for (size_t n = 0; n < idd.size(); ++n)
      for (int64_t k = 0; k < K; ++k) ASSERT_EQ(yd[n * K + k], sw.deq[idd[n] * K + k]) << type_name(t) << " row " << idd[n];
  }
}

TEST(ScaledOps, SetRowsQuantizesOnWriteLosslesslyAfterRoundTrip) {
  // set_rows into fp8 (per-row blocks of 64) and mxfp4 (32): reading the rows back gives exactly
  // fp8_roundtrip / fp4_roundtrip of what was written (so a QAT-rounded row is stored losslessly),
  // rows not written keep their bytes, duplicate ids: the last wins. Data: normal values, zeros,
  // tiny and huge magnitudes, a last partial block.
  backends::init();
  for (dtype t : {dtype::fp8_e4m3, dtype::mxfp4}) {
    const int bk = t == dtype::mxfp4 ? 32 : 64;
    const int64_t K = 200, R = 6, N = 4;  // 200 = 3 blocks of 64 + 8 (fp8), 6 groups of 32 + 8 (mxfp4)
    context ctx;
    std::vector<uint8_t> qd(row_size(t, K) * R, 0x5A), sd(size_t((K + bk - 1) / bk * R), 0x3C);
    tensor* dst = ctx.new_tensor(t, {K, R});
    tensor* sc = ctx.new_tensor(dtype::e8m0, {(K + bk - 1) / bk, R});
    dst->data = qd.data();
    sc->data = sd.data();
    dst->scales = sc;
    dst->scale_block[0] = bk;
    dst->scale_block[1] = 1;
    std::mt19937 rng(5);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> src(size_t(K * N));
    for (int64_t i = 0; i < K * N; ++i) {
      const int64_t blk = (i % K) / bk;
      src[size_t(i)] = blk == 0 ? d(rng) : blk == 1 ? 0.0f : blk == 2 ? d(rng) * 1e-30f : d(rng) * 1e4f;
    }
    std::vector<int32_t> idv = {4, 1, 4, 0};  // row 4 twice: the last (n = 2) wins
    tensor* x = ctx.new_tensor(dtype::f32, {K, N});
    x->data = src.data();
    tensor* ids = ctx.new_tensor(dtype::i32, {N});
    ids->data = idv.data();
    tensor* written = set_rows(ctx, dst, x, ids);
    ASSERT_NE(written, nullptr) << ctx.error();
    std::vector<int32_t> all = {0, 1, 4, 2};
    tensor* ids2 = ctx.new_tensor(dtype::i32, {4});
    ids2->data = all.data();
    tensor* back = get_rows(ctx, written, ids2);
    ASSERT_NE(back, nullptr) << ctx.error();
    const std::vector<uint8_t> before_row2(qd.begin() + long(row_size(t, K) * 2), qd.begin() + long(row_size(t, K) * 3));
    auto mem = run(ctx, back);
    const float* y = static_cast<const float*>(back->data);
    const int src_of[3] = {3, 1, 2};  // rows 0, 1, 4 came from src columns 3, 1, 2
    for (int j = 0; j < 3; ++j) {
      std::vector<float> ref(static_cast<size_t>(K));
      if (t == dtype::mxfp4)
        quant::fp4_roundtrip_row(&src[size_t(src_of[j] * K)], ref.data(), K, 32);
      else
        quant::fp8_roundtrip_row(&src[size_t(src_of[j] * K)], ref.data(), K, 64);
      for (int64_t k = 0; k < K; ++k) ASSERT_EQ(y[j * K + k], ref[size_t(k)]) << type_name(t) << " row " << all[j] << " k " << k;
    }
    EXPECT_TRUE(std::equal(before_row2.begin(), before_row2.end(), qd.begin() + long(row_size(t, K) * 2)))
        << "row 2 was never written";
  }
  // Blocks spanning rows are refused (a row-wise write cannot own them).
  context ctx;
  tensor* dst = ctx.new_tensor(dtype::fp8_e4m3, {128, 128});
  dst->scales = ctx.new_tensor(dtype::e8m0, {1, 1});
  dst->scale_block[0] = 128;
  dst->scale_block[1] = 128;
  EXPECT_EQ(set_rows(ctx, dst, ctx.new_tensor(dtype::f32, {128, 1}), ctx.new_tensor(dtype::i32, {1})), nullptr);
  EXPECT_NE(ctx.error().find("per-row scale blocks"), std::string::npos) << ctx.error();
}

TEST(ScaledOps, MissingOrMisshapenScalesAreRefused) {
  backends::init();
  context ctx;
  tensor* w = ctx.new_tensor(dtype::fp8_e4m3, {256, 64});
  tensor* x = ctx.new_tensor(dtype::f32, {256, 1});
  EXPECT_EQ(matmul(ctx, w, x), nullptr);
  EXPECT_NE(ctx.error().find("scales"), std::string::npos) << ctx.error();
  context ctx2;
  w = ctx2.new_tensor(dtype::mxfp4, {256, 64});
  x = ctx2.new_tensor(dtype::f32, {256, 1});
  w->scales = ctx2.new_tensor(dtype::e8m0, {4, 64});  // needs 256/32 = 8 per row
  w->scale_block[0] = 32;
  w->scale_block[1] = 1;
  EXPECT_EQ(matmul(ctx2, w, x), nullptr);
  EXPECT_NE(ctx2.error().find("e8m0 scales of shape"), std::string::npos) << ctx2.error();
}

}  // namespace
}  // namespace v4

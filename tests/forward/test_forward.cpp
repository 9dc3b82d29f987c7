// The V4 forward pass against Hugging Face transformers (tests/forward/make_goldens.py): as is
// (--qat off) and with the official QAT round trips hooked in (our default); and against itself: any split of a sequence into prefill chunks and decode steps must give the
// logits of one pass.
//
// Tolerances (f32 everywhere, --qat off for the transformers comparison):
//  * vs transformers: max |ours - ref| <= 1e-4 * max |ref| over all positions and the vocabulary.
//    Both sides compute in f32 with different summation orders (blocked SIMD matmuls, a batched
//    mHC matmul, a different softmax ordering), so ~1e-6 relative per op, compounded over 4
//    layers x 2 sublayers x 20 Sinkhorn rounds stays well under 1e-4.
//  * split vs one pass, f32 cache: the same bound: the matmul kernels pick other blockings
//    (decode vs panel paths) for other row counts, so results are not bit-identical, only
//    f32-close. With a bf16 cache, those 1e-7 differences can flip a bf16 rounding of a key
//    element (one bf16 step, 2^-8 relative): the bound is then one bf16 half-step, 2^-9 ~ 2e-3.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "model/convert.h"
#include "forward/converted.h"
#include "model/model.h"
#include "model/session.h"

namespace v4::model {
namespace {

const std::string kData = V4_TEST_DATA_DIR "/forward";

std::vector<int32_t> read_tokens(const std::string& path) {
  std::ifstream f(path);
  std::vector<int32_t> v;
  int32_t x;
  while (f >> x) v.push_back(x);
  return v;
}

std::vector<float> read_f32(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}


struct compare_result {
  double max_abs = 0, max_ref = 0;
  int64_t worst = -1;  // element index of max_abs
  int64_t first = -1;  // first element index off by more than 1e-4 of max |ref|
  double rel() const { return max_ref > 0 ? max_abs / max_ref : max_abs; }
};

compare_result compare(const std::vector<float>& a, const std::vector<float>& ref) {
  compare_result r;
  for (size_t i = 0; i < ref.size() && i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - double(ref[i]));
    if (d > r.max_abs) r.max_abs = d, r.worst = int64_t(i);
    r.max_ref = std::max(r.max_ref, std::fabs(double(ref[i])));
  }
  for (size_t i = 0; i < ref.size() && i < a.size(); ++i)
    if (std::fabs(double(a[i]) - double(ref[i])) > 1e-4 * r.max_ref) {
      r.first = int64_t(i);
      break;
    }
  if (a.size() != ref.size()) r.max_abs = INFINITY;
  return r;
}

// On the CPU, also where a GPU is present: these goldens and tolerances are the CPU backend's
// (on the H200 the native FP8 model's split-vs-one-pass check fails: the GPU's tensor-core
// prefill rounds x to bf16 where its decode does not, and FP8 QAT amplifies that; the GPU is held
// to the CPU by Offload.CudaMatchesCpu instead, with its own bound).
std::unique_ptr<model> load(const std::string& name) {
  const std::string path = converted(name);
  if (path.empty()) return nullptr;
  std::string err;
  load_options lo;
  lo.place.n_gpu_layers = 0;
  auto m = model::load(path, lo, &err);
  EXPECT_TRUE(m) << err;
  return m;
}

// Runs tokens through a fresh session in pieces of the given sizes (the last repeats).
std::vector<float> run_split(const model& m, const std::vector<int32_t>& tokens, std::vector<int64_t> pieces,
                             bool qat, int64_t n_batch = 512, dtype cache = dtype::f32, bool compact = true) {
  session_options so;
  so.n_ctx = 1024;
  so.compact_rows = compact;
  so.n_batch = n_batch;
  so.qat = qat;
  so.cache_type = cache;
  so.n_threads = 1;  // ctest runs suites in parallel on few cores: no OpenMP oversubscription
  std::string err;
  auto s = session::create(m, so, &err);
  EXPECT_TRUE(s) << err;
  std::vector<float> all, part;
  size_t i = 0, p = 0;
  while (i < tokens.size()) {
    const int64_t n = std::min<int64_t>(pieces[std::min(p, pieces.size() - 1)], int64_t(tokens.size() - i));
    ++p;
    EXPECT_TRUE(s->eval(tokens.data() + i, n, true, &part, &err)) << err;
    all.insert(all.end(), part.begin(), part.end());
    i += size_t(n);
  }
  return all;
}

TEST(Forward, MatchesTransformers) {
  auto m = load("tiny");
  ASSERT_TRUE(m);
  const auto tokens = read_tokens(kData + "/tiny/tokens.txt");
  const auto ref = read_f32(kData + "/tiny/logits.f32");
  ASSERT_EQ(ref.size(), tokens.size() * size_t(m->hp().vocab_size));
  const auto ours = run_split(*m, tokens, {int64_t(tokens.size())}, /*qat=*/false);
  const compare_result r = compare(ours, ref);
  std::printf("tiny vs transformers: max |diff| %.3g, max |ref| %.3g, relative %.3g\n", r.max_abs, r.max_ref, r.rel());
  EXPECT_LE(r.rel(), 1e-4);
}

TEST(Forward, SplitsMatchOnePass) {
  auto m = load("tiny");
  ASSERT_TRUE(m);
  const auto tokens = read_tokens(kData + "/tiny/tokens.txt");
  for (bool qat : {false, true}) {
   for (dtype cache : {dtype::f32, dtype::bf16}) {
    const auto one = run_split(*m, tokens, {int64_t(tokens.size())}, qat, 512, cache);
    struct split {
      const char* name;
      std::vector<int64_t> pieces;
      int64_t n_batch;
    };
    // Decode the first 140 tokens one by one (window wrap at 128, CSA rows every 4, the first
    // HCA row at 127), then prefill the rest in one piece.
    std::vector<int64_t> decode_then_prefill(140, 1);
    decode_then_prefill.push_back(int64_t(tokens.size()));
    std::vector<split> splits{split{"chunks of 7", {int64_t(tokens.size())}, 7},
                              split{"prefill 130, decode 20, prefill", {130, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                                                        1, 1, 1, 1, 1, 1, 1, 512}, 512},
                              split{"prefill 5, 128, then 3s", {5, 128, 3}, 512},
                              split{"decode 140, then prefill", decode_then_prefill, 512}};
    if (cache != dtype::f32) splits.resize(2);  // the cache type does not change the state logic
    for (const split& sp : splits) {
      const auto got = run_split(*m, tokens, sp.pieces, qat, sp.n_batch, cache);
      const compare_result r = compare(got, one);
      EXPECT_LE(r.rel(), cache == dtype::f32 ? 1e-4 : 2e-3) << sp.name << (qat ? " (qat on" : " (qat off") << ", " << type_name(cache) << " cache)" << ": max |diff| " << r.max_abs
                                   << " at position " << r.worst / m->hp().vocab_size
                                   << ", first off at position " << r.first / m->hp().vocab_size;
    }
   }
  }
}

// A prefill chunk is cut shorter where the indexer's scores would exceed max_score_bytes
// (session::prefill_chunk), and the shorter chunks give the logits of one pass.
TEST(Forward, ChunksShortenForTheIndexerScores) {
  auto m = load("tiny");
  ASSERT_TRUE(m);
  const auto tokens = read_tokens(kData + "/tiny/tokens.txt");
  const int64_t n = int64_t(tokens.size()), IH = m->hp().index_n_heads;
  ASSERT_GT(IH, 0);
  session_options so;
  so.qat = false;
  so.cache_type = dtype::f32;
  so.n_threads = 1;
  so.n_batch = 512;
  so.max_score_bytes = 4096;
  std::string err;
  auto s = session::create(*m, so, &err);
  ASSERT_TRUE(s) << err;
  auto score_bytes = [&](int64_t p0, int64_t c) { return (p0 + c) / 4 * IH * c * 4; };
  for (int64_t p0 : {int64_t(0), int64_t(100)}) {
    const int64_t c = s->prefill_chunk(p0, n);
    EXPECT_GE(c, 1);
    EXPECT_LT(c, n) << "the budget must cut this chunk";
    EXPECT_LE(score_bytes(p0, c), so.max_score_bytes) << "p0 " << p0 << ", chunk " << c;
  }
  EXPECT_EQ(s->prefill_chunk(0, 1), 1);
  std::vector<float> got;
  ASSERT_TRUE(s->eval(tokens.data(), n, true, &got, &err)) << err;
  const auto one = run_split(*m, tokens, {n}, /*qat=*/false, 512, dtype::f32);
  const compare_result r = compare(got, one);
  EXPECT_LE(r.rel(), 1e-4) << "max |diff| " << r.max_abs << " at position " << r.worst / m->hp().vocab_size;
  so.max_score_bytes = 0;
  EXPECT_FALSE(session::create(*m, so, &err));
  EXPECT_NE(err.find("max_score_bytes"), std::string::npos) << err;
}

TEST(Forward, Bf16CacheStaysClose) {
  // The default bf16 cache rounds the RoPE dims of every key (8 significant bits; the FP8-rounded
  // dims are exact). That rounding can change the indexer's choices, so this is a sanity check,
  // not a precision claim (precision is checked above with the f32 cache): the greedy token must
  // agree at >= 95% of positions and the logits stay within 5% of max |logit|.
  auto m = load("tiny");
  ASSERT_TRUE(m);
  const auto tokens = read_tokens(kData + "/tiny/tokens.txt");
  const auto f32 = run_split(*m, tokens, {int64_t(tokens.size())}, true, 512, dtype::f32);
  const auto bf16 = run_split(*m, tokens, {int64_t(tokens.size())}, true, 512, dtype::bf16);
  const compare_result r = compare(bf16, f32);
  const size_t V = size_t(m->hp().vocab_size);
  size_t same = 0;
  for (size_t t = 0; t < tokens.size(); ++t) {
    auto argmax = [&](const std::vector<float>& l) {
      return std::max_element(l.begin() + long(t * V), l.begin() + long((t + 1) * V)) - l.begin();
    };
    same += argmax(f32) == argmax(bf16);
  }
  std::printf("bf16 vs f32 cache: max |diff| %.3g, relative %.3g, greedy token equal at %zu/%zu positions\n",
              r.max_abs, r.rel(), same, tokens.size());
  EXPECT_GT(r.max_abs, 0.0);
  EXPECT_LE(r.rel(), 5e-2);
  EXPECT_GE(same, tokens.size() * 95 / 100);
}

TEST(Forward, MatchesOfficialQatNumerics) {
  // Our default numerics against transformers + the official QAT round trips (KV FP8, indexer
  // Hadamard + FP4) added as hooks in make_goldens.py. The round trips move the logits by up to
  // ~1 here (they change the indexer's choices), so this is a strong check that they sit in
  // the right places with the right blocks and rounding.
  auto m = load("tiny");
  ASSERT_TRUE(m);
  const auto tokens = read_tokens(kData + "/tiny/tokens.txt");
  const auto ref = read_f32(kData + "/tiny/logits_qat.f32");
  const auto plain = read_f32(kData + "/tiny/logits.f32");
  const auto ours = run_split(*m, tokens, {int64_t(tokens.size())}, /*qat=*/true);
  const compare_result r = compare(ours, ref);
  std::printf("tiny (qat on) vs transformers + official QAT: max |diff| %.3g, relative %.3g; "
              "the QAT round trips themselves move the logits by %.3g\n",
              r.max_abs, r.rel(), compare(plain, ref).max_abs);
  EXPECT_LE(r.rel(), 1e-4) << "first off at position " << r.first / m->hp().vocab_size;
  EXPECT_GT(compare(plain, ref).rel(), 1e-2);  // the golden does exercise the round trips
}

// Greedy-token agreement and per-position error between two logit sets of T positions.
struct agreement {
  size_t same_argmax = 0, positions = 0;
  double max_rel = 0;          // max over positions of max |diff| / max |ref|
  int64_t first_over = -1;     // first position whose error exceeds 1e-4
};
agreement agree(const std::vector<float>& a, const std::vector<float>& ref, size_t V) {
  agreement g;
  g.positions = ref.size() / V;
  double max_ref = 0;
  for (float v : ref) max_ref = std::max(max_ref, double(std::fabs(v)));
  for (size_t t = 0; t < g.positions; ++t) {
    const auto a0 = a.begin() + long(t * V), r0 = ref.begin() + long(t * V);
    g.same_argmax += std::max_element(a0, a0 + long(V)) - a0 == std::max_element(r0, r0 + long(V)) - r0;
    double e = 0;
    for (size_t v = 0; v < V; ++v) e = std::max(e, std::fabs(double(a0[long(v)]) - double(r0[long(v)])));
    e /= max_ref;
    g.max_rel = std::max(g.max_rel, e);
    if (e > 1e-4 && g.first_over < 0) g.first_over = int64_t(t);
  }
  return g;
}

TEST(Forward, NativeFp8Mxfp4MatchesOfficialNumerics) {
  // An official-format checkpoint (FP8 e4m3 with 128x128 e8m0 scales, MXFP4 experts) converted
  // natively: scaled matmuls, FP8 activation quantization in front of them (not wo_a), grouped
  // expert matmuls on MXFP4, QAT round trips. Golden: transformers on the dequantized weights
  // with the official numerics hooked in (make_goldens.py, make_native).
  //
  // Why not 1e-4 everywhere: with FP8 activation quantization the model is discontinuous. Two
  // correct f32 implementations differ by ~1e-7 (summation order); when such a difference
  // straddles an e4m3 rounding boundary, one activation element moves by a whole e4m3 step
  // (2^-3 relative), which shifts everything downstream by ~1e-3 and makes further flips likely:
  // results diverge by a few % after some positions. Our own prefill and decode paths diverge the
  // same way (checked below). So: the first positions, before any flip, must agree to 1e-4;
  // afterwards the greedy token must agree at >= 90% of positions and every logit stay within
  // 10% of max |logit|. Exactness of each piece is proven at the op level (tests/ops, tests/cpu);
  // selection flips are kept out of this model (every expert used, index_topk above the row
  // count) and the selection itself is checked exactly by the f32 model above.
  auto m = load("tiny-fp8");
  ASSERT_TRUE(m);
  const tensor_entry* e = m->file().find("layers.0.attn.wq_a.weight");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->d.type, dtype::fp8_e4m3);
  e = m->file().find("layers.1.ffn.experts.w1.weight");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->d.type, dtype::mxfp4);
  const size_t V = size_t(m->hp().vocab_size);
  const auto tokens = read_tokens(kData + "/tiny-fp8/tokens.txt");
  const auto ref = read_f32(kData + "/tiny-fp8/logits_qat.f32");
  const auto ours = run_split(*m, tokens, {int64_t(tokens.size())}, /*qat=*/true);
  const agreement g = agree(ours, ref, V);
  std::printf("tiny-fp8 (native, qat on) vs official numerics: first position over 1e-4: %lld, greedy equal %zu/%zu, "
              "max relative %.3g\n", (long long)g.first_over, g.same_argmax, g.positions, g.max_rel);
  EXPECT_TRUE(g.first_over < 0 || g.first_over >= 3) << "diverges from the start: not a rounding flip";
  EXPECT_GE(g.same_argmax * 10, g.positions * 9);
  EXPECT_LE(g.max_rel, 0.1);

  const auto split = run_split(*m, tokens, {50, 1, 7}, /*qat=*/true);
  const agreement s = agree(split, ours, V);
  std::printf("tiny-fp8 split vs one pass: first position over 1e-4: %lld, greedy equal %zu/%zu, max relative %.3g\n",
              (long long)s.first_over, s.same_argmax, s.positions, s.max_rel);
  EXPECT_TRUE(s.first_over < 0 || s.first_over >= 3);
  EXPECT_GE(s.same_argmax * 10, s.positions * 9);
  EXPECT_LE(s.max_rel, 0.1);
}

TEST(Forward, DumpedIntermediatesMatchTransformers) {
  // --dump hands out named intermediates; three of them against transformers' module outputs
  // (tests/forward/make_goldens.py: inter.*.f32), same bound as the logits.
  auto m = load("tiny");
  ASSERT_TRUE(m);
  const auto tokens = read_tokens(kData + "/tiny/tokens.txt");
  session_options so;
  so.n_ctx = 1024;
  so.n_batch = 512;
  so.qat = false;
  so.cache_type = dtype::f32;
  so.n_threads = 1;
  std::map<std::string, std::vector<float>> got;
  so.dump = {"final_norm", "L2.attn_out", "L3.ffn_out"};
  so.dump_fn = [&](const char* name, const int64_t* ne, const float* data, int64_t) {
    got[name].assign(data, data + ne[0] * ne[1] * ne[2] * ne[3]);
  };
  std::string err;
  auto s = session::create(*m, so, &err);
  ASSERT_TRUE(s) << err;
  ASSERT_TRUE(s->eval(tokens.data(), int64_t(tokens.size()), false, nullptr, &err)) << err;
  ASSERT_EQ(got.size(), 3u);
  for (const auto& [name, v] : got) {
    const auto ref = read_f32(kData + "/tiny/inter." + name + ".f32");
    const compare_result r = compare(v, ref);
    std::printf("dump %s vs transformers: relative %.3g\n", name.c_str(), r.rel());
    EXPECT_LE(r.rel(), 1e-4) << name;
  }
}

TEST(Forward, CompactRowsAreLosslessAndSmall) {
  // QAT on: compressed rows stored as fp8 (+ the RoPE dims) and indexer keys as mxfp4 give the
  // same logits, bit for bit, as f32 rows (they store the round trips' outputs exactly).
  auto m = load("tiny");
  ASSERT_TRUE(m);
  const auto tokens = read_tokens(kData + "/tiny/tokens.txt");
  auto run = [&](bool compact, std::vector<int64_t> pieces) {
    return run_split(*m, tokens, std::move(pieces), /*qat=*/true, 512, dtype::f32, compact);
  };
  EXPECT_EQ(compare(run(true, {300}), run(false, {300})).max_abs, 0.0);
  EXPECT_EQ(compare(run(true, {150, 1}), run(false, {150, 1})).max_abs, 0.0);  // decode gathers

  // State growth per token: measured from two context sizes, and the formula.
  session_options so;
  std::string err;
  so.n_ctx = 1024;
  auto a = session::create(*m, so, &err);
  so.n_ctx = 1024 + 4096;
  auto b = session::create(*m, so, &err);
  ASSERT_TRUE(a && b) << err;
  const double measured = double(b->state_bytes() - a->state_bytes()) / 4096.0;
  // tiny: 2 CSA layers x (64 fp8 + 1 scale + 64 bf16 RoPE dims = 193 B per 4 tokens, + 64 B mxfp4
  // + 4 scales per 4 tokens) + 1 HCA layer x 193 B per 128 tokens = 132.01 B/token
  const double expect = 2 * (193.0 + 68.0) / 4 + 193.0 / 128;
  EXPECT_NEAR(a->state_bytes_per_token(), expect, 1e-9);
  EXPECT_NEAR(measured, expect, 2.0);  // + 64-byte alignment of each tensor
  // V4-Flash dims: 21 CSA + 20 HCA layers.
  hparams flash = m->hp();
  flash.n_layers = 41;
  flash.head_dim = 512;
  flash.rope_dims = 64;
  flash.index_head_dim = 128;
  flash.compress_ratios.clear();
  for (int i = 0; i < 41; ++i) flash.compress_ratios.push_back(i % 2 == 0 ? 4 : 128);
  session_options d;
  const double compact = session::bytes_per_token(flash, d);
  d.compact_rows = false;
  const double bf16 = session::bytes_per_token(flash, d);
  std::printf("V4-Flash state per token: %.1f B compact (QAT on), %.1f B bf16 rows\n", compact, bf16);
  EXPECT_NEAR(compact, 21 * (583.0 + 68.0) / 4 + 20 * 583.0 / 128, 1e-6);
  EXPECT_NEAR(bf16, 3440.0 * 2, 1e-6);
}

TEST(Forward, FillRandomMakesUpContext) {
  // Benchmarks decode at depth without the prefill: the state must then behave as n tokens deep.
  auto m = load("tiny");
  ASSERT_TRUE(m);
  session_options so;
  so.n_ctx = 1024;
  so.n_threads = 1;
  std::string err;
  auto s = session::create(*m, so, &err);
  ASSERT_TRUE(s) << err;
  EXPECT_FALSE(s->fill_random(1025, 1, &err));
  EXPECT_NE(err.find("do not fit the context size 1024"), std::string::npos) << err;
  ASSERT_TRUE(s->fill_random(1000, 1, &err)) << err;
  EXPECT_EQ(s->n_past(), 1000);
  const int32_t tok[3] = {5, 17, 200};
  std::vector<float> deep, fresh;
  ASSERT_TRUE(s->eval(tok, 3, true, &deep, &err)) << err;
  for (float v : deep) ASSERT_TRUE(std::isfinite(v));
  const std::vector<int32_t> many(22, 5);
  EXPECT_FALSE(s->eval(many.data(), 22, false, nullptr, &err));  // 1003 + 22 > 1024: the context is full
  s->reset();
  ASSERT_TRUE(s->eval(tok, 3, true, &fresh, &err)) << err;
  EXPECT_NE(deep, fresh);  // the made-up context is attended to
}

TEST(Forward, RejectsBadTokensAndOverflow) {
  auto m = load("tiny");
  ASSERT_TRUE(m);
  session_options so;
  so.n_ctx = 8;
  std::string err;
  auto s = session::create(*m, so, &err);
  ASSERT_TRUE(s) << err;
  std::vector<float> logits;
  const int32_t bad[] = {1, 2, int32_t(m->hp().vocab_size)};
  EXPECT_FALSE(s->eval(bad, 3, false, &logits, &err));
  EXPECT_NE(err.find("outside the vocabulary"), std::string::npos) << err;
  EXPECT_EQ(s->n_past(), 0);
  const int32_t many[9] = {};
  EXPECT_FALSE(s->eval(many, 9, false, &logits, &err));
  EXPECT_NE(err.find("context size"), std::string::npos) << err;
}

}  // namespace
}  // namespace v4::model

// Partial offload (model/placement.h) on a mock accelerator (tests/common/mock_accel.h: memory of
// its own that the CPU may not read, the CPU's kernels, a few ops missing so graphs split).
// Every placement must give the logits of a CPU-only run. The mock runs the very same kernels on
// the same data, so the logits must be bit-identical: a missed copy, stale state or a wrong
// placement shows as a difference. On a machine with a GPU, the same placements on CUDA0 are
// checked against the CPU with the bound (1e-3 of max |logit|).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include "backends/backends.h"
#include "backends/cpu/cpu.h"
#include "common/mock_accel.h"
#include "model/convert.h"
#include "forward/converted.h"
#include "model/model.h"
#include "model/session.h"

namespace v4::model {
namespace {


// ---- the mock accelerator ------------------------------------------------------------------------
// Lacks the selection and mixing ops, so every layer crosses to the CPU and back.
bool mock_supports(const tensor* t) {
  switch (t->op) {
    case op_kind::TOP_K:
    case op_kind::ARGSORT:
    case op_kind::SINKHORN:
    case op_kind::HADAMARD:
    case op_kind::CUSTOM: return false;
    default: return true;
  }
}

// Registers the mock for the lifetime of the object (other tests must not see it).
struct mock_registered {
  test::mock_device dev{"MOCK0", mock_supports};
  mock_registered() {
    backends::init();
    register_device(&dev);
  }
  ~mock_registered() { unregister_device(&dev); }
};

// ---- helpers -------------------------------------------------------------------------------------

// Prefill 40 tokens, then 6 decode steps; all logits.
std::vector<float> run(const model& m, bool qat, bool compact) {
  session_options so;
  so.n_ctx = 256;
  so.n_batch = 16;  // several chunks: state written by one graph is read by the next
  so.qat = qat;
  so.compact_rows = compact;
  so.cache_type = dtype::f32;
  so.n_threads = 1;
  std::string err;
  auto s = session::create(m, so, &err);
  EXPECT_TRUE(s) << err;
  if (!s) return {};
  std::vector<int32_t> tokens;
  for (int i = 0; i < 46; ++i) tokens.push_back(int32_t((i * 37 + 11) % m.hp().vocab_size));
  std::vector<float> all, part;
  EXPECT_TRUE(s->eval(tokens.data(), 40, true, &part, &err)) << err;
  all = part;
  for (int i = 40; i < 46; ++i) {
    EXPECT_TRUE(s->eval(tokens.data() + i, 1, true, &part, &err)) << err;
    all.insert(all.end(), part.begin(), part.end());
  }
  // reset() must clear accelerator state too: the first chunk again gives the same logits.
  s->reset();
  EXPECT_TRUE(s->eval(tokens.data(), 16, true, &part, &err)) << err;
  for (size_t i = 0; i < part.size() && i < all.size(); ++i)
    if (part[i] != all[i]) {
      ADD_FAILURE() << "after reset, logit " << i << " differs";
      break;
    }
  return all;
}

std::unique_ptr<model> load_with(const std::string& path, const placement_options& p, std::string* err) {
  load_options lo;
  lo.place = p;
  return model::load(path, lo, err);
}

size_t bytes_on(const model& m, const device* d) {
  for (const placed_bytes& pb : m.placed())
    if (pb.dev == d) return pb.bytes;
  return 0;
}

struct placement_case {
  const char* name;
  placement_options p;
  // expected device of layers (true: accelerator) and of the head
  std::vector<bool> layer_on_accel;
  bool head_on_accel;
};

std::vector<placement_case> cases(int64_t n_layers) {
  std::vector<placement_case> cs;
  placement_options all;
  cs.push_back({"all layers", all, std::vector<bool>(size_t(n_layers), true), true});
  placement_options last2;
  last2.n_gpu_layers = 2;
  std::vector<bool> l2(size_t(n_layers), false);
  for (int64_t i = n_layers - 2; i < n_layers; ++i) l2[size_t(i)] = true;
  cs.push_back({"-ngl 2", last2, l2, false});
  placement_options cpu_moe;
  cpu_moe.n_cpu_moe = -1;
  cs.push_back({"--cpu-moe", cpu_moe, std::vector<bool>(size_t(n_layers), true), true});
  placement_options ot;
  ot.overrides = {"^layers\\.1\\.=CPU", "ffn\\.shared_experts=CPU"};
  std::vector<bool> l_ot(size_t(n_layers), true);
  l_ot[1] = false;
  cs.push_back({"-ot layers.1 and shared experts on the CPU", ot, l_ot, true});
  return cs;
}

void check_placements(const std::string& model_name, bool qat, bool compact, device* accel, double rel_bound) {
  const std::string path = converted(model_name);
  ASSERT_FALSE(path.empty());
  std::string err;
  placement_options none;
  none.n_gpu_layers = 0;
  auto ref_model = load_with(path, none, &err);
  ASSERT_TRUE(ref_model) << err;
  EXPECT_EQ(ref_model->accelerator(), nullptr);
  const std::vector<float> ref = run(*ref_model, qat, compact);
  ASSERT_FALSE(ref.empty());
  double max_ref = 0;
  for (float v : ref) max_ref = std::max(max_ref, double(std::fabs(v)));
  const int64_t L = ref_model->hp().n_layers;

  for (const placement_case& c : cases(L)) {
    SCOPED_TRACE(c.name);
    placement_options p = c.p;
    p.accelerator = accel->name();
    auto m = load_with(path, p, &err);
    ASSERT_TRUE(m) << err;
    ASSERT_EQ(m->accelerator(), accel);
    for (int64_t il = 0; il < L; ++il)
      EXPECT_EQ(m->layer_device(il) == accel, c.layer_on_accel[size_t(il)]) << "layer " << il;
    EXPECT_EQ(m->head->buf->type()->dev() == accel, c.head_on_accel);
    EXPECT_EQ(m->embed->buf->type()->dev(), cpu::cpu_device());  // the embedding stays on the CPU
    EXPECT_TRUE(m->layers[0].hc_attn_scale->buf->is_host());       // read on the host by the builder
    if (c.p.n_cpu_moe < 0) {
      for (const layer_weights& lw : m->layers) EXPECT_EQ(lw.w1->buf->type()->dev(), cpu::cpu_device());
    }
    EXPECT_GT(bytes_on(*m, accel), 0u);
    const std::vector<float> got = run(*m, qat, compact);
    ASSERT_EQ(got.size(), ref.size());
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double d = std::fabs(double(got[i]) - double(ref[i]));
      if (!(d <= worst)) worst = d, at = i;
    }
    EXPECT_LE(worst, rel_bound * max_ref) << "logit " << at << ": " << got[at] << " vs CPU " << ref[at];
  }
}

TEST(Offload, MockAcceleratorMatchesCpuBitForBit) {
  mock_registered mock;
  check_placements("tiny", /*qat=*/true, /*compact=*/true, &mock.dev, 0.0);
  EXPECT_GT(mock.dev.nodes_run, 0);
}

TEST(Offload, MockAcceleratorNativeFp8Model) {
  mock_registered mock;
  check_placements("tiny-fp8", /*qat=*/true, /*compact=*/true, &mock.dev, 0.0);
}

TEST(Offload, BadPlacementsAreRefused) {
  mock_registered mock;
  const std::string path = converted("tiny");
  ASSERT_FALSE(path.empty());
  struct bad {
    std::vector<std::string> ot;
    std::string accel;
    const char* expect;
  };
  const bad bads[] = {
      {{"no-equals-sign"}, "", "is not REGEX=DEVICE"},
      {{"=CPU"}, "", "is not REGEX=DEVICE"},
      {{"experts="}, "", "is not REGEX=DEVICE"},
      {{"experts=CUDA7"}, "", "device 'CUDA7' is not available"},
      {{"(unclosed=CPU"}, "", "bad regular expression"},
      {{}, "VULKAN3", "device 'VULKAN3' is not available"},
  };
  for (const bad& b : bads) {
    placement_options p;
    p.overrides = b.ot;
    p.accelerator = b.accel;
    std::string err;
    auto m = load_with(path, p, &err);
    EXPECT_FALSE(m);
    EXPECT_NE(err.find(b.expect), std::string::npos) << err;
  }
}

TEST(Offload, SplitOverridesList) {
  EXPECT_EQ(split_overrides("a=CPU,b\\.c=CUDA0"), (std::vector<std::string>{"a=CPU", "b\\.c=CUDA0"}));
  EXPECT_EQ(split_overrides(""), std::vector<std::string>{});
  EXPECT_EQ(split_overrides(",x=CPU,"), std::vector<std::string>{"x=CPU"});
}

// ---- combined weights (layer_weights::fused) -------------------------------------------------------

// Each combined weight of layer il as its members' names without "layers.N." and ".weight",
// joined by '+', in row order; the list sorted.
std::vector<std::string> fused_lists(const model& m, int64_t il) {
  std::vector<std::string> out;
  const std::string prefix = "layers." + std::to_string(il) + ".";
  for (const fused_weight& f : m.layers[size_t(il)].fused) {
    std::string s;
    for (const tensor* t : f.members) {
      std::string n = t->name;
      if (n.compare(0, prefix.size(), prefix) == 0) n = n.substr(prefix.size());
      if (n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0) n.resize(n.size() - 7);
      s += (s.empty() ? "" : "+") + n;
    }
    out.push_back(s);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Every member aliases its rows of the combined weight (of each expert), and those rows hold the
// file's bytes (weights and scales): the layout is checked through the buffers, not the kernels.
void check_fused_layout(const model& m) {
  for (const layer_weights& L : m.layers)
    for (const fused_weight& f : L.fused) {
      ASSERT_EQ(f.members.size(), f.row0.size());
      int64_t rows = 0;
      for (size_t i = 0; i < f.members.size(); ++i) {
        const tensor* t = f.members[i];
        SCOPED_TRACE(t->name);
        EXPECT_EQ(f.row0[i], rows);
        rows += t->ne[1];
        EXPECT_EQ(t->buf, f.w->buf);
        EXPECT_EQ(static_cast<const char*>(t->data), static_cast<const char*>(f.w->data) + f.row0[i] * int64_t(f.w->nb[1]));
        auto same_bytes = [&](const tensor* part, const tensor* whole, const std::string& name) {
          const tensor_entry* e = m.file().find(name);
          ASSERT_TRUE(e) << name;
          const size_t expert = size_t(part->ne[1]) * part->nb[1];  // one expert's rows
          std::vector<uint8_t> got(expert);
          for (int64_t x = 0; x < part->ne[2]; ++x) {
            part->buf->get(part, got.data(), size_t(x) * part->nb[2], expert);
            EXPECT_EQ(std::memcmp(got.data(), e->data + size_t(x) * expert, expert), 0) << name << " expert " << x;
            if (part->ne[2] > 1) EXPECT_EQ(part->nb[2], whole->nb[2]);
          }
        };
        same_bytes(t, f.w, t->name);
        if (t->scales) same_bytes(t->scales, f.w->scales, t->scales->name);
      }
      EXPECT_EQ(rows, f.w->ne[1]);
      EXPECT_EQ(f.w->ne[2], f.members[0]->ne[2]);
    }
}

// The combined weights the tiny models get with every layer on the accelerator, and the logits
// of a CPU-only run. `bound` relative to max |logit|: 0 on the mock (below), the 1e-3 on
// CUDA0.
void check_fused(const std::string& model_name, device* accel, bool qat, double bound,
                 const std::vector<std::vector<std::string>>& expect) {
  const std::string path = converted(model_name);
  ASSERT_FALSE(path.empty());
  std::string err;
  placement_options none;
  none.n_gpu_layers = 0;
  auto cpu = load_with(path, none, &err);
  ASSERT_TRUE(cpu) << err;
  for (const layer_weights& L : cpu->layers) EXPECT_TRUE(L.fused.empty());  // the CPU reads the file mapping
  placement_options all;
  all.accelerator = accel->name();
  auto m = load_with(path, all, &err);
  ASSERT_TRUE(m) << err;
  ASSERT_EQ(int64_t(expect.size()), m->hp().n_layers);
  for (int64_t il = 0; il < m->hp().n_layers; ++il) EXPECT_EQ(fused_lists(*m, il), expect[size_t(il)]) << "layer " << il;
  check_fused_layout(*m);
  const std::vector<float> ref = run(*cpu, qat, /*compact=*/true), got = run(*m, qat, /*compact=*/true);
  ASSERT_EQ(got.size(), ref.size());
  double max_ref = 0, worst = 0;
  for (float v : ref) max_ref = std::max(max_ref, double(std::fabs(v)));
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - double(ref[i])));
  EXPECT_LE(worst, bound * max_ref) << "max |logit| " << max_ref;
}

// tiny: every projection f32, so all that read one input combine: attention's seven (CSA), four
// (HCA) or two (window only), the shared expert's two, the routed experts' two ([K, 2I, E]).
std::vector<std::vector<std::string>> tiny_fused() {
  const std::string sw = "ffn.shared_experts.w1+ffn.shared_experts.w3", rw = "ffn.experts.w1+ffn.experts.w3";
  const std::string qkv = "attn.wq_a+attn.wkv", comp = "+attn.compressor.wkv+attn.compressor.wgate";
  const std::string idx = "+attn.indexer.compressor.wkv+attn.indexer.compressor.wgate+attn.indexer.weights_proj";
  return {{qkv, rw, sw}, {qkv + comp + idx, rw, sw}, {qkv + comp, rw, sw}, {qkv + comp + idx, rw, sw}};
}

// Bit for bit on the mock: it runs the CPU's kernels, whose every matmul output is one dot product
// over K in an order that depends neither on M nor on the row's place (no CPU path splits K;
// tiles group rows only), so the combined matmul gives each member's rows exactly, and every
// consumer reads them through strided views with the same values.
TEST(Offload, MockAcceleratorCombinesProjections) {
  mock_registered mock;
  check_fused("tiny", &mock.dev, /*qat=*/true, 0.0, tiny_fused());
  // tiny-fp8: wq_a (32 rows), wkv and the shared expert are fp8 with 128 x 128 scale blocks: wkv
  // and sw3 would start inside a block, so they stay apart; the f32 compressor / indexer weights
  // combine, and so do the mxfp4 experts (scales per 32 of a row).
  const std::string rw = "ffn.experts.w1+ffn.experts.w3";
  const std::string comp = "attn.compressor.wkv+attn.compressor.wgate";
  const std::string idx = "+attn.indexer.compressor.wkv+attn.indexer.compressor.wgate+attn.indexer.weights_proj";
  check_fused("tiny-fp8", &mock.dev, /*qat=*/true, 0.0, {{rw}, {comp + idx, rw}, {comp, rw}, {comp + idx, rw}});
}

// Members on different devices are not combined: wkv on the CPU leaves wq_a to the compressor's
// weights; the shared expert on the CPU (mapped) is not combined at all.
TEST(Offload, MockAcceleratorCombinesOnlyWhatSharesADevice) {
  mock_registered mock;
  const std::string path = converted("tiny");
  ASSERT_FALSE(path.empty());
  placement_options p;
  p.accelerator = mock.dev.name();
  p.overrides = {"attn\\.wkv=CPU", "ffn\\.shared_experts=CPU"};
  std::string err;
  auto m = load_with(path, p, &err);
  ASSERT_TRUE(m) << err;
  const std::string rw = "ffn.experts.w1+ffn.experts.w3", comp = "+attn.compressor.wkv+attn.compressor.wgate";
  const std::string idx = "+attn.indexer.compressor.wkv+attn.indexer.compressor.wgate+attn.indexer.weights_proj";
  EXPECT_EQ(fused_lists(*m, 0), (std::vector<std::string>{rw}));
  EXPECT_EQ(fused_lists(*m, 1), (std::vector<std::string>{"attn.wq_a" + comp + idx, rw}));
  EXPECT_EQ(fused_lists(*m, 2), (std::vector<std::string>{"attn.wq_a" + comp, rw}));
  check_fused_layout(*m);
}

// The same on the GPU (skips without one): the combined weights exist, and the logits stay within
// the bound of the CPU's (the GPU sums in other orders, and its kernel choice depends on M,
// e.g. how many K slices a decode GEMV takes). QAT off, as CudaMatchesCpu (FP8 round trips are
// discontinuous).
TEST(Offload, CudaCombinesProjections) {
  backends::init();
  device* gpu = find_device("CUDA0");
  if (!gpu) GTEST_SKIP() << "no CUDA0 device here (no GPU or a build without V4_CUDA)";
  check_fused("tiny", gpu, /*qat=*/false, 1e-3, tiny_fused());
}

TEST(Offload, CudaMatchesCpu) {
  backends::init();
  device* gpu = find_device("CUDA0");
  if (!gpu) GTEST_SKIP() << "no CUDA0 device here (no GPU or a build without V4_CUDA)";
  // Bound: the GPU's kernels sum in other orders (and may round x to bf16 in tensor-core
  // matmuls); the bound for f32/bf16 paths is 1e-3 of max |logit|. QAT off: the FP8
  // round trips are discontinuous (an order change can flip one e4m3 step, docs/MODEL.md).
  check_placements("tiny", /*qat=*/false, /*compact=*/false, gpu, 1e-3);
}

}  // namespace
}  // namespace v4::model

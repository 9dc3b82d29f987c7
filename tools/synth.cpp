// v4 synth -o FILE [--preset flash|pro|tiny] [--layers N] [--experts E] [--vocab N] [--mtp N]
//          [--seed S] [--force]
//
// Writes a model file with the real DeepSeek-V4 shapes and hyper-parameters but few layers and
// random weights, in the formats of the official checkpoint as `v4 convert` stores them natively:
// FP8 e4m3 with 128x128 e8m0 scales for the attention projections, the indexer's wq_b, the shared
// experts and the MTP e/h_proj; MXFP4 (e8m0 per 32) for the stacked routed experts; bf16 for
// embed/head, norms, router and compressor projections; f32 for hc_*, sinks, ape and the router
// bias; i32 tid2eid. The tensor list and metadata come from expected_tensors() and
// hparams_write(), so the file is what a conversion would give. It exists to benchmark (and
// test) the runtime at full width without the 150 GB checkpoint (docs/BENCH.md).
//
// Values are a counter-based hash of (seed, tensor, element index), so any chunking of the
// stream gives the same bytes, and only one 4 MiB chunk is in memory at a time. Each matmul
// weight has std ~ 1/sqrt(fan_in) (fan_in = ne[0]), which keeps every matmul output O(1).
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/convert.h"
#include "model/hparams.h"
#include "model/names.h"
#include "model/v4file.h"
#include "quant/quant.h"
#include "tools/commands.h"

namespace v4::cli {

// Defined in tools/convert.cpp.
std::function<void(const model::convert_progress&)> make_progress_printer();
void print_summary(const char* what, const std::string& out, const model::convert_stats& st);

namespace {

using model::expected_tensor;
using model::hparams;
using model::tensor_desc;

// ---- configuration ------------------------------------------------------------------------------

struct synth_options {
  std::string out, preset = "flash";
  int64_t layers = -1;   // -1: the preset's default
  int64_t experts = -1;  // -1: the preset's n_routed_experts
  int64_t vocab = -1;    // -1: the preset's vocabulary
  int64_t mtp = 0;
  uint64_t seed = 1;
  bool force = false;
};

// The real V4-Flash config (research §1.1), everything but the layer count.
hparams flash_hparams() {
  hparams h;
  h.name = "synthetic DeepSeek-V4-Flash";
  h.vocab_size = 129280;
  h.hidden_size = 4096;
  h.n_heads = 64;
  h.head_dim = 512;
  h.rope_dims = 64;
  h.q_lora_rank = 1024;
  h.o_lora_rank = 1024;
  h.o_groups = 8;
  h.moe_inter = 2048;
  h.n_experts = 256;
  h.n_shared_experts = 1;
  h.n_experts_used = 6;
  h.routed_scale = 1.5f;
  h.score_func = "sqrtsoftplus";
  h.norm_topk_prob = true;
  h.swiglu_limit = 10.0f;
  h.rms_eps = 1e-6f;
  h.hc_mult = 4;
  h.hc_sinkhorn_iters = 20;
  h.hc_eps = 1e-6f;
  h.window = 128;
  h.rope_theta = 10000.0f;
  h.compress_rope_theta = 160000.0f;
  h.rope_factor = 16.0f;
  h.rope_orig_ctx = 65536;
  h.rope_beta_fast = 32.0f;
  h.rope_beta_slow = 1.0f;
  h.max_position = 1048576;
  h.index_n_heads = 64;
  h.index_head_dim = 128;
  h.index_topk = 512;
  h.bos_id = 0;
  h.eos_id = 1;
  h.tie_embeddings = false;
  h.expert_dtype = "fp4";
  return h;
}

// V4-Pro: Flash with the differences of research §1.2 (index_topk 1024 as the S2 config).
hparams pro_hparams() {
  hparams h = flash_hparams();
  h.name = "synthetic DeepSeek-V4-Pro";
  h.hidden_size = 7168;
  h.n_heads = 128;
  h.q_lora_rank = 1536;
  h.o_groups = 16;
  h.moe_inter = 3072;
  h.n_experts = 384;
  h.routed_scale = 2.5f;
  h.index_topk = 1024;
  return h;
}

// Small enough for a test (a few MB), with every layer kind: sliding-only, CSA with indexer,
// HCA; hash-routed and learned-router MoE; FP8 dims that are not multiples of the 128 block.
hparams tiny_hparams() {
  hparams h = flash_hparams();
  h.name = "synthetic DeepSeek-V4 tiny";
  h.vocab_size = 256;
  h.hidden_size = 256;
  h.n_heads = 4;
  h.head_dim = 64;
  h.rope_dims = 16;
  h.q_lora_rank = 96;
  h.o_lora_rank = 32;
  h.o_groups = 2;
  h.moe_inter = 64;
  h.n_experts = 8;
  h.n_experts_used = 2;
  h.window = 8;
  h.rope_orig_ctx = 64;
  h.rope_factor = 4.0f;
  h.max_position = 4096;
  h.index_n_heads = 2;
  h.index_head_dim = 32;
  h.index_topk = 4;
  return h;
}

// Layer schedule. flash/pro: alternate CSA and HCA ([4, 128, 4, ...]: the two kinds that make up
// all but two of the real layers). tiny: a sliding-only layer first, then CSA/HCA. Layer 0 is
// hash-routed (tid2eid) unless it is the only layer, which then uses the learned router.
void set_layers(const std::string& preset, int64_t n, hparams* h) {
  h->n_layers = n;
  h->compress_ratios.clear();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = preset == "tiny" ? i - 1 : i;  // tiny: layer 0 sliding-only
    h->compress_ratios.push_back(k < 0 ? 0 : (k % 2 == 0 ? 4 : 128));
  }
  h->n_hash_layers = n == 1 ? 0 : 1;
}

bool make_hparams(const synth_options& o, hparams* out, std::string* error) {
  hparams h = o.preset == "pro" ? pro_hparams() : o.preset == "tiny" ? tiny_hparams() : flash_hparams();
  const int64_t default_layers = o.preset == "tiny" ? 3 : 2;
  set_layers(o.preset, o.layers > 0 ? o.layers : default_layers, &h);
  if (o.experts > 0) {
    if (o.experts < h.n_experts_used) {
      *error = "--experts " + std::to_string(o.experts) + " is fewer than the " + std::to_string(h.n_experts_used) +
               " experts each token uses (num_experts_per_tok of the " + o.preset + " preset)";
      return false;
    }
    h.n_experts = o.experts;
  }
  if (o.vocab > 0) {
    if (o.vocab < 2) {
      *error = "--vocab " + std::to_string(o.vocab) + " must be at least 2 (bos 0 and eos 1)";
      return false;
    }
    h.vocab_size = o.vocab;
  }
  h.n_mtp_layers = o.mtp;
  h.mtp_compress_ratios.assign(size_t(o.mtp), 0);  // the real MTP layer is sliding-only
  char name[160];
  std::snprintf(name, sizeof name, "%s (%lld layers, %lld experts, random weights, seed %llu)", h.name.c_str(),
                (long long)h.n_layers, (long long)h.n_experts, (unsigned long long)o.seed);
  h.name = name;
  if (!h.validate(error)) {
    *error = "the " + o.preset + " preset with these options is not a valid config: " + *error;
    return false;
  }
  *out = h;
  return true;
}

// ---- random values ------------------------------------------------------------------------------

uint64_t mix64(uint64_t z) {  // splitmix64's finalizer
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// The i-th 64-bit random word of a stream (splitmix64 in counter mode).
inline uint64_t hash_at(uint64_t seed, uint64_t i) { return mix64(seed + (i + 1) * 0x9E3779B97F4A7C15ull); }

uint64_t name_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 0x100000001B3ull;
  return mix64(seed ^ h);
}

// Approximately N(0, 1) from 64 random bits: the sum of four 16-bit uniforms (Irwin-Hall),
// centred and scaled to unit variance. Bounded by +-3.46, which is what we want here.
inline float normalish(uint64_t r) {
  float s = 0;
  for (int k = 0; k < 4; ++k) s += float((r >> (16 * k)) & 0xFFFF) * (1.0f / 65536.0f);
  return (s - 2.0f) * 1.7320508f;
}

// The p-quantile of N(0, 1), by bisection on erf (only used to build the tables below).
double normal_quantile(double p) {
  double lo = -10, hi = 10;
  for (int i = 0; i < 100; ++i) {
    const double mid = 0.5 * (lo + hi);
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

// A byte -> code table whose decoded values follow a normal shape, and their standard deviation.
// FP8: the 256 quantiles of N(0, 1) as e4m3 codes. MXFP4: each nibble one of the 16 quantiles of
// N(0, 2) on the e2m1 grid (so the codes use most of the grid), two per byte.
struct code_table {
  std::array<uint8_t, 256> code{};
  double std = 1;
};

const code_table& fp8_table() {
  static const code_table t = [] {
    code_table c;
    double ss = 0;
    for (int i = 0; i < 256; ++i) {
      c.code[size_t(i)] = quant::e4m3_from_f32(float(normal_quantile((i + 0.5) / 256)));
      const double v = quant::e4m3_to_f32(c.code[size_t(i)]);
      ss += v * v;
    }
    c.std = std::sqrt(ss / 256);
    return c;
  }();
  return t;
}

const code_table& mxfp4_table() {
  static const code_table t = [] {
    uint8_t nib[16];
    double ss = 0;
    for (int i = 0; i < 16; ++i) {
      nib[i] = quant::e2m1_from_f32(float(2.0 * normal_quantile((i + 0.5) / 16)));
      const double v = quant::e2m1_to_f32(nib[i]);
      ss += v * v;
    }
    code_table c;
    for (int b = 0; b < 256; ++b) c.code[size_t(b)] = uint8_t(nib[b & 15] | (nib[b >> 4] << 4));
    c.std = std::sqrt(ss / 16);
    return c;
  }();
  return t;
}

// Fills bytes [off, off + n) of a stream of `es`-byte elements; f(index, out) writes element
// `index` (es bytes). Elements cut by the chunk boundary go through a small buffer.
template <class F>
void fill_elements(uint64_t off, uint8_t* dst, size_t n, size_t es, F&& f) {
  uint8_t tmp[16];
  uint64_t b = off;
  const uint64_t end = off + n;
  while (b < end) {
    const uint64_t e = b / es, in = b % es;
    if (in == 0 && end - b >= es) {
      f(e, dst + (b - off));
      b += es;
      continue;
    }
    f(e, tmp);
    const uint64_t take = std::min<uint64_t>(es - in, end - b);
    std::memcpy(dst + (b - off), tmp + in, size_t(take));
    b += take;
  }
}

// ---- what each tensor holds ---------------------------------------------------------------------

enum class storage { f32, bf16, fp8, mxfp4, ids };

struct tensor_plan {
  expected_tensor t;
  storage kind = storage::f32;
  float mean = 0, std = 1;  // the values (for fp8/mxfp4: the dequantized weight's std)
};

bool ends_with(const std::string& s, const char* p) {
  const size_t n = std::strlen(p);
  return s.size() >= n && s.compare(s.size() - n, n, p) == 0;
}
bool contains(const std::string& s, const char* p) { return s.find(p) != std::string::npos; }

// Storage as in the official checkpoint (research §2.1) and value distribution (as the forward
// goldens' randomise(): O(1) activations everywhere).
tensor_plan plan_of(const expected_tensor& t) {
  tensor_plan p;
  p.t = t;
  const std::string& n = t.name;
  const float fan_in_std = 1.0f / std::sqrt(float(t.ne[0]));
  if (t.role == model::tensor_role::ids) {
    p.kind = storage::ids;
  } else if (t.role == model::tensor_role::weight) {
    if (contains(n, "ffn.experts.")) p.kind = storage::mxfp4;
    else if (n == "embed.weight" || n == "head.weight") p.kind = storage::bf16;
    else p.kind = storage::fp8;
    p.std = n == "embed.weight" ? 1.0f : fan_in_std;
  } else if (ends_with(n, "norm.weight")) {  // every RMSNorm weight (bf16)
    p.kind = storage::bf16;
    p.mean = 1.0f;
    p.std = 0.1f;
  } else if (contains(n, "hc_")) {  // hc_{attn,ffn,head}_{fn,base,scale}: f32
    p.kind = storage::f32;
    if (ends_with(n, "_fn")) p.std = fan_in_std;
    else if (ends_with(n, "_base")) p.std = 0.5f;
    else {  // _scale: positive
      p.mean = 1.0f;
      p.std = 0.25f;
    }
  } else if (ends_with(n, "attn_sink")) {
    p.kind = storage::f32;
  } else if (ends_with(n, ".ape")) {
    p.kind = storage::f32;
    p.std = 0.5f;
  } else if (ends_with(n, "gate.bias")) {
    p.kind = storage::f32;
    p.std = 0.3f;
  } else {  // router weight, compressor wkv/wgate, indexer weights_proj: bf16 matrices
    p.kind = storage::bf16;
    p.std = fan_in_std;
  }
  return p;
}

// The e8m0 exponent k that brings a code table of standard deviation table_std to `std`.
int scale_exponent(double std, double table_std) {
  return int(std::lround(std::log2(std / table_std)));
}

struct writer_state {
  model::file_writer* w = nullptr;
  model::convert_progress prog;
  model::convert_stats* stats = nullptr;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  std::function<void(const model::convert_progress&)> progress;
};

bool add_tensor(writer_state& s, const tensor_desc& d, const model::file_writer::producer& produce,
                std::string* error) {
  uint64_t bytes = 0;
  if (!model::tensor_nbytes(d, &bytes, error)) return false;
  s.prog.tensor = d.name;
  const bool ok = s.w->add_tensor(d, [&](uint64_t off, void* dst, size_t n) {
    if (!produce(off, dst, n)) return false;
    s.prog.bytes_done += n;
    s.prog.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - s.t0).count();
    if (s.progress) s.progress(s.prog);
    return true;
  });
  if (!ok) {
    *error = s.w->error();
    return false;
  }
  model::type_total& tt = s.stats->per_type[type_name(d.type)];
  ++tt.tensors;
  tt.bytes += bytes;
  s.stats->bytes_out += bytes;
  ++s.stats->tensors;
  ++s.prog.tensor_index;
  return true;
}

// The descriptors a plan writes: the tensor, and for fp8/mxfp4 its e8m0 scales after it.
void descs_of(const tensor_plan& p, tensor_desc* d, tensor_desc* scales) {
  d->name = p.t.name;
  d->n_dims = p.t.n_dims;
  for (int i = 0; i < 4; ++i) d->ne[i] = p.t.ne[i];
  switch (p.kind) {
    case storage::f32: d->type = dtype::f32; break;
    case storage::bf16: d->type = dtype::bf16; break;
    case storage::ids: d->type = dtype::i32; break;
    case storage::fp8:
      d->type = dtype::fp8_e4m3;
      d->scale_block[0] = 128;
      d->scale_block[1] = 128;
      break;
    case storage::mxfp4:
      d->type = dtype::mxfp4;
      d->scale_block[0] = quant::kMxfp4Block;
      d->scale_block[1] = 1;
      break;
  }
  if (p.kind != storage::fp8 && p.kind != storage::mxfp4) return;
  d->scales = model::scales_name(d->name);
  *scales = tensor_desc();
  scales->name = d->scales;
  scales->type = dtype::e8m0;
  scales->n_dims = d->n_dims;
  for (int i = 0; i < 4; ++i) scales->ne[i] = d->ne[i];
  scales->ne[0] = (d->ne[0] + d->scale_block[0] - 1) / d->scale_block[0];
  scales->ne[1] = (d->ne[1] + d->scale_block[1] - 1) / d->scale_block[1];
}

// tid2eid row of a token: n_used distinct expert ids.
void tid2eid_row(uint64_t seed, uint64_t token, int64_t n_used, int64_t n_experts, int32_t* row) {
  uint64_t draw = token << 10;  // up to 1024 draws per token (rejections are rare: n_used << E)
  for (int64_t j = 0; j < n_used; ++j) {
    for (;;) {
      const int32_t id = int32_t(hash_at(seed, draw++) % uint64_t(n_experts));
      if (std::find(row, row + j, id) == row + j) {
        row[j] = id;
        break;
      }
    }
  }
}

bool write_plan(writer_state& s, const tensor_plan& p, const hparams& hp, uint64_t seed, std::string* error) {
  tensor_desc d, sd;
  descs_of(p, &d, &sd);
  const uint64_t ts = name_seed(seed, p.t.name);
  model::file_writer::producer produce;
  switch (p.kind) {
    case storage::f32:
    case storage::bf16: {
      const bool f32 = p.kind == storage::f32;
      const float mean = p.mean, std = p.std;
      produce = [=](uint64_t off, void* dst, size_t n) {
        fill_elements(off, static_cast<uint8_t*>(dst), n, f32 ? 4 : 2, [&](uint64_t i, uint8_t* out) {
          const float v = mean + std * normalish(hash_at(ts, i));
          if (f32) std::memcpy(out, &v, 4);
          else {
            const uint16_t b = f32_to_bf16(v);
            std::memcpy(out, &b, 2);
          }
        });
        return true;
      };
      break;
    }
    case storage::fp8:
    case storage::mxfp4: {
      const code_table& table = p.kind == storage::fp8 ? fp8_table() : mxfp4_table();
      produce = [ts, &table](uint64_t off, void* dst, size_t n) {
        fill_elements(off, static_cast<uint8_t*>(dst), n, 8, [&](uint64_t i, uint8_t* out) {
          const uint64_t r = hash_at(ts, i);
          for (int k = 0; k < 8; ++k) out[k] = table.code[(r >> (8 * k)) & 0xFF];
        });
        return true;
      };
      break;
    }
    case storage::ids: {
      const int64_t n_used = hp.n_experts_used, n_exp = hp.n_experts;
      produce = [=](uint64_t off, void* dst, size_t n) {
        std::vector<int32_t> row(static_cast<size_t>(n_used));
        fill_elements(off, static_cast<uint8_t*>(dst), n, 4, [&](uint64_t i, uint8_t* out) {
          tid2eid_row(ts, i / uint64_t(n_used), n_used, n_exp, row.data());
          std::memcpy(out, &row[size_t(i % uint64_t(n_used))], 4);
        });
        return true;
      };
      break;
    }
  }
  if (!add_tensor(s, d, produce, error)) return false;
  if (d.scales.empty()) return true;
  // One scale for the whole tensor: std(table) * 2^k ~ p.std.
  const double table_std = p.kind == storage::fp8 ? fp8_table().std : mxfp4_table().std;
  const uint8_t code = quant::e8m0_from_exp(scale_exponent(p.std, table_std));
  return add_tensor(s, sd, [code](uint64_t, void* dst, size_t n) {
    std::memset(dst, code, n);
    return true;
  }, error);
}

uint64_t plan_bytes(const tensor_plan& p) {
  tensor_desc d, sd;
  descs_of(p, &d, &sd);
  uint64_t a = 0, b = 0;
  std::string e;
  model::tensor_nbytes(d, &a, &e);
  if (!d.scales.empty()) model::tensor_nbytes(sd, &b, &e);
  return a + b;
}

std::string gib(uint64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", b / 1073741824.0);
  return buf;
}

// The directory of a path, for the free-space check.
std::string dir_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

bool synthesize(const synth_options& o, model::convert_stats* stats, std::string* error) {
  hparams hp;
  if (!make_hparams(o, &hp, error)) return false;
  std::vector<tensor_plan> plans;
  uint64_t total = 0;
  for (const expected_tensor& t : model::expected_tensors(hp)) {
    plans.push_back(plan_of(t));
    total += plan_bytes(plans.back());
  }

  struct stat st {};
  if (::stat(o.out.c_str(), &st) == 0 && !o.force) {
    *error = o.out + ": already exists (use --force to overwrite)";
    return false;
  }
  struct statvfs vfs {};
  if (::statvfs(dir_of(o.out).c_str(), &vfs) == 0) {
    const uint64_t free_bytes = uint64_t(vfs.f_bavail) * vfs.f_frsize;
    if (free_bytes < total + (uint64_t(64) << 20)) {
      *error = o.out + ": needs " + gib(total) + " but only " + gib(free_bytes) + " are free on " + dir_of(o.out) +
               " (use --experts, --vocab or --layers for a smaller file)";
      return false;
    }
  }

  const std::string tmp = o.out + ".tmp";
  model::file_writer w;
  auto fail = [&](const std::string& e) {
    *error = e;
    std::remove(tmp.c_str());
    return false;
  };
  if (!w.open(tmp)) return fail(w.error());
  if (!model::hparams_write(hp, w, error)) return fail(*error);

  writer_state s;
  s.w = &w;
  s.stats = stats;
  s.progress = make_progress_printer();
  s.prog.bytes_total = total;
  for (const tensor_plan& p : plans) s.prog.n_tensors += p.kind == storage::fp8 || p.kind == storage::mxfp4 ? 2 : 1;
  for (const tensor_plan& p : plans)
    if (!write_plan(s, p, hp, o.seed, error)) return fail(*error);
  if (!w.finish()) return fail(w.error());
  if (std::rename(tmp.c_str(), o.out.c_str()) != 0)
    return fail(o.out + ": cannot rename " + tmp + ": " + std::strerror(errno));
  stats->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - s.t0).count();
  if (::stat(o.out.c_str(), &st) == 0) stats->file_size = uint64_t(st.st_size);
  return true;
}

}  // namespace

static void add_synth(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "synth", "Write a model file with real DeepSeek-V4 shapes, few layers and random weights (for benchmarks)");
  auto o = std::make_shared<synth_options>();
  cmd->add_option("-o,--output", o->out, "output model file")->required();
  cmd->add_option("--preset", o->preset, "flash (V4-Flash shapes), pro (V4-Pro) or tiny (small, every layer kind)")
      ->check(CLI::IsMember({"flash", "pro", "tiny"}))
      ->capture_default_str();
  cmd->add_option("--layers", o->layers, "main layers (default 2: CSA + HCA; tiny: 3 with a sliding-only layer)")
      ->check(CLI::Range(int64_t(1), int64_t(1000)));
  cmd->add_option("--experts", o->experts, "routed experts per layer (default: the preset's, 256 for flash)")
      ->check(CLI::Range(int64_t(1), int64_t(65536)));
  cmd->add_option("--vocab", o->vocab, "vocabulary size (default: the preset's, 129280 for flash/pro)")
      ->check(CLI::Range(int64_t(2), int64_t(1) << 24));
  cmd->add_option("--mtp", o->mtp, "MTP layers (the runtime does not use them)")
      ->check(CLI::Range(int64_t(0), int64_t(4)))
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "random seed")->capture_default_str();
  cmd->add_flag("--force", o->force, "overwrite an existing output file");
  cmd->callback([o] {
    model::convert_stats st;
    std::string err;
    if (!synthesize(*o, &st, &err)) {
      std::fprintf(stderr, "\nv4 synth: error: %s\n", err.c_str());
      throw CLI::RuntimeError(1);
    }
    print_summary("v4 synth", o->out, st);
  });
}

V4_COMMAND(add_synth, 25);

}  // namespace v4::cli

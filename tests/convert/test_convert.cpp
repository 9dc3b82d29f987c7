// v4 convert / v4 quantize: round trips of the three test checkpoints against Python's view of
// them (expected.json from make_checkpoints.py), lossy types within their bounds, and every
// error path the brief names (each message names the file and the tensor or key).
#include <cmath>

#include "helpers.h"
#include "model/convert.h"
#include "model/hparams.h"
#include "model/safetensors.h"
#include "model/v4file.h"
#include "quant/quant.h"

namespace v4::model::testing {
namespace {

std::unique_ptr<model_file> convert_to(const std::string& dir, const std::string& out, const std::string& type,
                                       int threads = 2) {
  convert_options o;
  o.type = type;
  o.threads = threads;
  o.force = true;
  std::string err;
  if (!convert_checkpoint(dir, out, o, nullptr, &err)) {
    ADD_FAILURE() << "convert " << dir << " --type " << type << ": " << err;
    return nullptr;
  }
  auto f = model_file::open(out, &err);
  EXPECT_TRUE(f) << err;
  if (f) {
    EXPECT_TRUE(f->verify(&err)) << err;
  }
  return f;
}

std::string convert_error(const std::string& dir, const std::string& out, const std::string& type = "native") {
  convert_options o;
  o.type = type;
  std::string err;
  EXPECT_FALSE(convert_checkpoint(dir, out, o, nullptr, &err)) << "converted " << dir;
  EXPECT_FALSE(fs::exists(out)) << "an output was left behind";
  EXPECT_FALSE(fs::exists(out + ".tmp")) << "a temporary file was left behind";
  return err;
}

std::vector<int64_t> ne_of(const tensor_entry& t) { return std::vector<int64_t>(t.d.ne, t.d.ne + t.d.n_dims); }

// The values of a tensor as f32 (scaled types times their e8m0 block scale); `scale_of` gets the
// scale of each element (1 for unscaled types).
std::vector<float> values(const tensor_entry& t, std::vector<float>* scale_of = nullptr) {
  const int64_t ne0 = t.d.ne[0], ne1 = t.d.ne[1], rows = t.d.ne[1] * t.d.ne[2] * t.d.ne[3];
  const size_t rs = row_size(t.d.type, ne0);
  std::vector<float> y(size_t(ne0 * rows));
  if (scale_of) scale_of->assign(y.size(), 1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    float* yr = y.data() + r * ne0;
    traits(t.d.type).to_f32(t.data + uint64_t(r) * rs, yr, ne0);
    if (!t.scales) continue;
    const int64_t bk = t.d.scale_block[0], br = t.d.scale_block[1];
    const int64_t scols = (ne0 + bk - 1) / bk, srows = (ne1 + br - 1) / br;
    const uint8_t* srow = t.scales->data + ((r / ne1) * srows + (r % ne1) / br) * scols;
    for (int64_t k = 0; k < ne0; ++k) {
      const float s = quant::e8m0_to_f32(srow[k / bk]);
      yr[k] *= s;
      if (scale_of) (*scale_of)[size_t(r * ne0 + k)] = s;
    }
  }
  return y;
}

// Native: every tensor has Python's type, shape and bytes.
void check_native(const model_file& f, const json& want) {
  EXPECT_EQ(f.tensors().size(), want.size());
  for (auto it = want.begin(); it != want.end(); ++it) {
    const tensor_entry* t = f.find(it.key());
    ASSERT_TRUE(t) << "missing " << it.key();
    EXPECT_EQ(type_name(t->d.type), (*it)["type"].get<std::string>()) << it.key();
    EXPECT_EQ(ne_of(*t), (*it)["ne"].get<std::vector<int64_t>>()) << it.key();
    EXPECT_EQ(hex64(fnv1a(t->data, size_t(t->size))), (*it)["native_fnv"].get<std::string>()) << it.key();
  }
}

// --type f32: weights are Python's dequantized values bit for bit; params keep their bytes.
void check_f32(const model_file& f, const json& want) {
  for (auto it = want.begin(); it != want.end(); ++it) {
    if ((*it)["type"] == "e8m0") {
      EXPECT_FALSE(f.find(it.key())) << it.key() << ": scales of a dequantized weight";
      continue;
    }
    const tensor_entry* t = f.find(it.key());
    ASSERT_TRUE(t) << "missing " << it.key();
    EXPECT_EQ(ne_of(*t), (*it)["ne"].get<std::vector<int64_t>>()) << it.key();
    const std::string key = type_name(t->d.type) == (*it)["type"] ? "native_fnv" : "f32_fnv";
    if (key == "f32_fnv") {
      ASSERT_EQ(t->d.type, dtype::f32) << it.key();
    }
    EXPECT_EQ(hex64(fnv1a(t->data, size_t(t->size))), (*it)[key].get<std::string>()) << it.key() << " (" << key << ")";
  }
}

// Every tensor of `got` against the verified f32 file: params bit-exact, weights in the bound
// of the type they were given.
void check_lossy(const model_file& got, const model_file& ref, const std::string& requested) {
  int requested_seen = 0;
  for (const tensor_entry& t : got.tensors()) {
    if (t.d.type == dtype::e8m0) continue;
    const tensor_entry* r = ref.find(t.d.name);
    ASSERT_TRUE(r) << t.d.name;
    ASSERT_EQ(ne_of(t), ne_of(*r)) << t.d.name;
    if (t.d.type == r->d.type) {
      EXPECT_EQ(t.xxh3, r->xxh3) << t.d.name << ": unchanged tensors are copied";
      continue;
    }
    requested_seen += type_name(t.d.type) == requested;
    std::vector<float> s;
    const std::vector<float> x = values(*r), y = values(t, &s);
    const int64_t ne0 = t.d.ne[0];
    double err2 = 0, ref2 = 0;
    size_t bad = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double e = std::fabs(double(y[i]) - double(x[i]));
      err2 += e * e;
      ref2 += double(x[i]) * x[i];
      double bound = 0;
      switch (t.d.type) {
        case dtype::bf16: bound = std::ldexp(std::fabs(x[i]), -8) + 1e-37; break;
        case dtype::f16: bound = std::ldexp(std::fabs(x[i]), -10) + 6e-8; break;
        case dtype::fp8_e4m3: bound = std::ldexp(std::fabs(x[i]), -4) + std::ldexp(double(s[i]), -10); break;
        case dtype::mxfp4: bound = 0.25 * std::max<double>(std::fabs(x[i]), s[i]) * 1.0001; break;
        case dtype::q8_0: {
          const size_t b0 = i / 32 * 32;
          double amax = 0;
          for (size_t k = b0; k < b0 + 32; ++k) amax = std::max(amax, std::fabs(double(x[k])));
          bound = 0.6 * amax / 127 + 4e-6;  // d/2, plus the f16 rounding of d
          break;
        }
        default: bound = INFINITY; break;  // K-quants: RMS bound below
      }
      if (e > bound && bad++ < 3)
        ADD_FAILURE() << t.d.name << " (" << type_name(t.d.type) << ") element " << i << " (row " << i / size_t(ne0)
                      << "): " << y[i] << " vs " << x[i] << ", bound " << bound;
    }
    EXPECT_EQ(bad, 0u) << t.d.name;
    // The K-quants' stated RMSE / RMS bounds on heavy-tailed data (tests/quant/test_blocks.cpp).
    const double nrmse = ref2 > 0 ? std::sqrt(err2 / ref2) : 0;
    if (t.d.type == dtype::q4_k) {
      EXPECT_LT(nrmse, 0.093) << t.d.name;
    }
    if (t.d.type == dtype::q3_k) {
      EXPECT_LT(nrmse, 0.188) << t.d.name;
    }
    if (t.d.type == dtype::q2_k) {
      EXPECT_LT(nrmse, 0.297) << t.d.name;
    }
  }
  EXPECT_GT(requested_seen, 0) << "no tensor got the requested type " << requested;
}

class ConvertRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(ConvertRoundTrip, native_f32_and_lossy_types) {
  scratch s;
  const std::string sub = GetParam();
  const json want = expected(sub)["tensors"];
  auto native = convert_to(data_dir(sub), s.path("native.v4"), "native");
  ASSERT_TRUE(native);
  check_native(*native, want);
  hparams hp;
  std::string err;
  ASSERT_TRUE(hparams_read(*native, &hp, &err)) << err;
  EXPECT_EQ(hp.n_mtp_layers, expected(sub)["n_mtp_layers"].get<int64_t>());

  auto f32 = convert_to(data_dir(sub), s.path("f32.v4"), "f32");
  ASSERT_TRUE(f32);
  check_f32(*f32, want);

  for (const char* t : {"bf16", "f16", "q8_0", "q4_k", "q3_k", "q2_k", "fp8_e4m3", "mxfp4"}) {
    SCOPED_TRACE(t);
    auto f = convert_to(data_dir(sub), s.path(std::string(t) + ".v4"), t, t[0] == 'q' ? 3 : 1);
    ASSERT_TRUE(f);
    check_lossy(*f, *f32, t);
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, ConvertRoundTrip, ::testing::Values("official", "hf", "hf_fused"));

TEST(Convert, fused_and_per_expert_layouts_agree) {
  scratch s;
  auto a = convert_to(data_dir("hf"), s.path("a.v4"), "native");
  auto b = convert_to(data_dir("hf_fused"), s.path("b.v4"), "native");
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  for (const tensor_entry& t : a->tensors()) {
    const tensor_entry* u = b->find(t.d.name);
    ASSERT_TRUE(u) << t.d.name;
    EXPECT_EQ(t.xxh3, u->xxh3) << t.d.name;
  }
}

TEST(Convert, fp8_to_fp8_is_a_copy_and_threads_do_not_change_bytes) {
  scratch s;
  auto native = convert_to(data_dir("official"), s.path("n.v4"), "native");
  auto fp8 = convert_to(data_dir("official"), s.path("f.v4"), "fp8_e4m3", 1);
  auto q1 = convert_to(data_dir("official"), s.path("q1.v4"), "q4_k", 1);
  auto q4 = convert_to(data_dir("official"), s.path("q4.v4"), "q4_k", 4);
  ASSERT_TRUE(native && fp8 && q1 && q4);
  const tensor_entry* a = native->find("layers.0.attn.wq_a.weight");
  const tensor_entry* b = fp8->find("layers.0.attn.wq_a.weight");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->xxh3, b->xxh3);
  EXPECT_EQ(a->scales->xxh3, b->scales->xxh3);
  for (const tensor_entry& t : q1->tensors()) EXPECT_EQ(t.xxh3, q4->find(t.d.name)->xxh3) << t.d.name;
}

// ---- errors --------------------------------------------------------------------------------------

TEST(ConvertErrors, directory_and_config) {
  scratch s;
  const std::string out = s.path("o.v4");
  EXPECT_NE(convert_error(s.path("nope"), out).find("nope: no such checkpoint directory"), std::string::npos);

  std::string d = s.copy_of("official");
  edit_config(d, [](json& c) { c.erase("q_lora_rank"); });
  std::string e = convert_error(d, out);
  EXPECT_NE(e.find("config.json: key 'q_lora_rank': missing"), std::string::npos) << e;
  EXPECT_NE(e.find(d), std::string::npos) << e;

  edit_config(d, [](json& c) {
    c["q_lora_rank"] = 64;
    c["hc_mult"] = 0;
  });
  e = convert_error(d, out);
  EXPECT_NE(e.find("hc_mult = 0 is out of range"), std::string::npos) << e;

  edit_config(d, [](json& c) {
    c["hc_mult"] = 2;
    c["model_type"] = "deepseek_v3";
  });
  EXPECT_NE(convert_error(d, out).find("unknown architecture 'deepseek_v3'"), std::string::npos);

  fs::remove(d + "/config.json");
  EXPECT_NE(convert_error(d, out).find("config.json: missing"), std::string::npos);

  d = s.copy_of("hf");
  fs::remove(d + "/model.safetensors");
  EXPECT_NE(convert_error(d, out).find("no weights"), std::string::npos);

  EXPECT_NE(convert_error(data_dir("hf"), out, "q5_k").find("unknown --type 'q5_k'"), std::string::npos);
}

TEST(ConvertErrors, missing_unexpected_and_misshaped_tensors) {
  scratch s;
  const std::string out = s.path("o.v4");
  const std::string d = s.copy_of("hf");
  const std::string st = d + "/model.safetensors";
  const std::string orig = read_text(st);

  edit_safetensors(st, [](json& h) { h.erase("model.layers.1.attn.wq_a.weight"); });
  std::string e = convert_error(d, out);
  EXPECT_NE(e.find("missing tensor 'layers.1.attn.wq_a.weight'"), std::string::npos) << e;

  write_text(st, orig);
  edit_safetensors(st, [](json& h) {
    const uint64_t end = h["model.norm.weight"]["data_offsets"][1];
    h["model.layers.0.attn.foo.weight"] = {{"dtype", "BF16"}, {"shape", {0}}, {"data_offsets", {end, end}}};
  });
  e = convert_error(d, out);
  EXPECT_NE(e.find("unexpected tensor 'model.layers.0.attn.foo.weight' in " + st), std::string::npos) << e;

  write_text(st, orig);
  edit_safetensors(st, [](json& h) { h["model.layers.1.attn.wo_b.weight"]["shape"] = {256, 64}; });
  e = convert_error(d, out);
  EXPECT_NE(e.find("tensor 'layers.1.attn.wo_b.weight' ('model.layers.1.attn.wo_b.weight' in " + st + "): shape [256, 64]"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("expected logical {256, 64}"), std::string::npos) << e;

  write_text(st, orig);
  edit_safetensors(st, [](json& h) {  // 4 bytes either way: [2] BF16 -> [1] I32
    h["model.layers.2.ffn.gate.bias"]["dtype"] = "I32";
    h["model.layers.2.ffn.gate.bias"]["shape"] = {1};
  });
  e = convert_error(d, out);
  EXPECT_NE(e.find("tensor 'layers.2.ffn.gate.bias'"), std::string::npos) << e;
  EXPECT_NE(e.find("dtype I32 is not supported for a float tensor"), std::string::npos) << e;

  write_text(st, orig);
  edit_safetensors(st, [](json& h) { h["model.layers.2.ffn.gate.bias"]["dtype"] = "F8_E5M2"; });
  e = convert_error(d, out);
  EXPECT_NE(e.find(st + ": tensor 'model.layers.2.ffn.gate.bias': unsupported dtype 'F8_E5M2'"), std::string::npos) << e;
}

TEST(ConvertErrors, official_layout_problems) {
  scratch s;
  const std::string out = s.path("o.v4");
  const std::string d = s.copy_of("official");
  const std::string shard1 = d + "/model-00001-of-00002.safetensors", shard2 = d + "/model-00002-of-00002.safetensors";
  const std::string index = d + "/model.safetensors.index.json";
  const std::string orig1 = read_text(shard1), orig2 = read_text(shard2), orig_index = read_text(index);
  auto drop = [&](const std::string& name) {
    edit_safetensors(shard1, [&](json& h) { h.erase(name); });
    json ix = json::parse(orig_index);
    ix["weight_map"].erase(name);
    write_text(index, ix.dump());
  };
  auto restore = [&] {
    write_text(shard1, orig1);
    write_text(shard2, orig2);
    write_text(index, orig_index);
  };

  drop("layers.0.ffn.experts.2.w3.weight");
  std::string e = convert_error(d, out);
  EXPECT_NE(e.find("missing tensor 'layers.0.ffn.experts.2.w3.weight' (expert 2 of 4)"), std::string::npos) << e;

  restore();
  drop("layers.0.attn.wq_a.scale");
  e = convert_error(d, out);
  EXPECT_NE(e.find("without its scales tensor 'layers.0.attn.wq_a.scale'"), std::string::npos) << e;
  EXPECT_NE(e.find(shard1), std::string::npos) << e;

  // Truncated shard: the reader refuses it, naming the file and a tensor past the end.
  restore();
  fs::resize_file(shard2, fs::file_size(shard2) - 100);
  e = convert_error(d, out);
  EXPECT_NE(e.find(shard2 + ": tensor '"), std::string::npos) << e;
  EXPECT_NE(e.find("beyond the data section"), std::string::npos) << e;

  // The index lists a tensor the shard does not have.
  restore();
  edit_safetensors(shard1, [](json& h) { h.erase("norm.weight"); });
  e = convert_error(d, out);
  EXPECT_NE(e.find("tensor 'norm.weight' (listed in model.safetensors.index.json) is not in the shard"), std::string::npos)
      << e;

  // Wrong FP8 scale shape.
  restore();
  edit_safetensors(shard1, [](json& h) {
    h["layers.0.attn.wq_a.scale"]["shape"] = {2, 1};
  });
  e = convert_error(d, out);
  EXPECT_NE(e.find("tensor 'layers.0.attn.wq_a.weight'"), std::string::npos) << e;
  EXPECT_NE(e.find("have shape [2, 1], expected [1, 2]"), std::string::npos) << e;

  // tid2eid values are checked while writing: the error names the tensor, no file is left.
  restore();
  {
    std::string err;
    auto f = st_file::open(shard1, &err);
    ASSERT_TRUE(f) << err;
    const st_tensor* t = f->find("layers.0.ffn.gate.tid2eid");
    ASSERT_TRUE(t);
    const uint64_t off = t->offset + 8 * 5;
    f.reset();
    std::string b = read_text(shard1);
    const int64_t bad = 9;
    std::memcpy(b.data() + off, &bad, 8);
    write_text(shard1, b);
  }
  e = convert_error(d, out);
  EXPECT_NE(e.find("tensor 'layers.0.ffn.gate.tid2eid'"), std::string::npos) << e;
  EXPECT_NE(e.find("expert id 9 at element 5 is outside [0, 4)"), std::string::npos) << e;

  // A weight beyond the f16 range (scale 2^13, codes up to 448) is an error with --type f16.
  restore();
  {
    std::string err;
    auto f = st_file::open(shard1, &err);
    ASSERT_TRUE(f) << err;
    const uint64_t off = f->find("layers.0.attn.wq_a.scale")->offset;
    f.reset();
    std::string b = read_text(shard1);
    b[off] = char(140);
    write_text(shard1, b);
  }
  e = convert_error(d, out, "f16");
  EXPECT_NE(e.find("tensor 'layers.0.attn.wq_a.weight'"), std::string::npos) << e;
  EXPECT_NE(e.find("exceeds the f16 range"), std::string::npos) << e;
}

TEST(ConvertErrors, existing_output_needs_force) {
  scratch s;
  const std::string out = s.path("o.v4");
  write_text(out, "keep me");
  convert_options o;
  std::string err;
  EXPECT_FALSE(convert_checkpoint(data_dir("hf"), out, o, nullptr, &err));
  EXPECT_NE(err.find("already exists (use --force"), std::string::npos) << err;
  EXPECT_EQ(read_text(out), "keep me");
  o.force = true;
  EXPECT_TRUE(convert_checkpoint(data_dir("hf"), out, o, nullptr, &err)) << err;
}

// ---- quantize ------------------------------------------------------------------------------------

TEST(Quantize, rules_policy_and_metadata) {
  scratch s;
  auto native = convert_to(data_dir("official"), s.path("n.v4"), "native");
  auto f32 = convert_to(data_dir("official"), s.path("f.v4"), "f32");
  ASSERT_TRUE(native && f32);
  quantize_options o;
  o.type = "q4_k";
  o.threads = 2;
  quantize_rule r;
  std::string err;
  ASSERT_TRUE(parse_quantize_rule("ffn\\.experts\\..*=q2_k", &r, &err)) << err;
  o.rules.push_back(r);
  ASSERT_TRUE(parse_quantize_rule("attn\\.wkv=keep", &r, &err)) << err;
  o.rules.push_back(r);
  convert_stats st;
  ASSERT_TRUE(quantize_model(s.path("n.v4"), s.path("q.v4"), o, &st, &err)) << err;
  auto q = model_file::open(s.path("q.v4"), &err);
  ASSERT_TRUE(q) << err;
  EXPECT_EQ(q->find("layers.0.ffn.experts.w1.weight")->d.type, dtype::q2_k);
  EXPECT_EQ(q->find("layers.0.ffn.experts.w2.weight")->d.type, dtype::q8_0);  // ne0 = 32: fallback
  EXPECT_EQ(q->find("layers.0.attn.wq_a.weight")->d.type, dtype::q4_k);
  EXPECT_EQ(q->find("layers.0.attn.wkv.weight")->d.type, dtype::fp8_e4m3);  // keep
  EXPECT_EQ(q->find("layers.0.attn.wkv.weight")->xxh3, native->find("layers.0.attn.wkv.weight")->xxh3);
  EXPECT_EQ(q->find("layers.0.attn_norm.weight")->d.type, dtype::bf16);  // params are not touched
  EXPECT_GT(st.per_type["q2_k"].tensors, 0u);
  check_lossy(*q, *f32, "q2_k");
  // Metadata copied unchanged.
  ASSERT_EQ(q->metadata().size(), native->metadata().size());
  for (size_t i = 0; i < q->metadata().size(); ++i) {
    const auto& [k, v] = q->metadata()[i];
    const auto& [k0, v0] = native->metadata()[i];
    EXPECT_EQ(k, k0);
    EXPECT_EQ(v.type, v0.type) << k;
    ASSERT_EQ(v.size, v0.size) << k;
    EXPECT_EQ(std::memcmp(v.bytes, v0.bytes, size_t(v.size)), 0) << k;
  }
  hparams hp;
  EXPECT_TRUE(hparams_read(*q, &hp, &err)) << err;
}

TEST(Quantize, errors) {
  scratch s;
  quantize_rule r;
  std::string err;
  EXPECT_FALSE(parse_quantize_rule("experts", &r, &err));
  EXPECT_NE(err.find("expected REGEX=TYPE"), std::string::npos);
  EXPECT_FALSE(parse_quantize_rule("experts=q9_z", &r, &err));
  EXPECT_NE(err.find("unknown type 'q9_z'"), std::string::npos);
  EXPECT_FALSE(parse_quantize_rule("([=q8_0", &r, &err));
  EXPECT_NE(err.find("bad regular expression"), std::string::npos);

  quantize_options o;
  o.type = "q4_k";
  EXPECT_FALSE(quantize_model(s.path("missing.v4"), s.path("o.v4"), o, nullptr, &err));
  EXPECT_NE(err.find("missing.v4"), std::string::npos) << err;
  o.type = "native";
  EXPECT_FALSE(quantize_model(s.path("missing.v4"), s.path("o.v4"), o, nullptr, &err));
  EXPECT_NE(err.find("unknown --type 'native'"), std::string::npos) << err;
}

}  // namespace
}  // namespace v4::model::testing

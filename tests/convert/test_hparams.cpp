// hparams: both config.json forms, errors naming the key, the metadata round trip.
#include "helpers.h"
#include "model/hparams.h"
#include "model/names.h"
#include "model/v4file.h"

namespace v4::model::testing {
namespace {

hparams parse_ok(const std::string& text) {
  hparams hp;
  std::string err;
  EXPECT_TRUE(hparams_from_config_json(text, &hp, &err)) << err;
  return hp;
}

std::string parse_error(const json& cfg) {
  hparams hp;
  std::string err;
  EXPECT_FALSE(hparams_from_config_json(cfg.dump(), &hp, &err)) << "accepted " << cfg.dump();
  return err;
}

json official_cfg() { return json::parse(read_text(data_dir("official") + "/config.json")); }
json hf_cfg() { return json::parse(read_text(data_dir("hf") + "/config.json")); }

TEST(Hparams, official_form) {
  const hparams hp = parse_ok(official_cfg().dump());
  EXPECT_EQ(hp.hidden_size, 256);
  EXPECT_EQ(hp.n_layers, 2);
  EXPECT_EQ(hp.compress_ratios, (std::vector<int32_t>{4, 128}));
  EXPECT_EQ(hp.n_mtp_layers, 1);
  EXPECT_EQ(hp.mtp_compress_ratios, (std::vector<int32_t>{0}));
  EXPECT_EQ(hp.n_hash_layers, 1);
  EXPECT_EQ(hp.rope_dims, 16);
  EXPECT_EQ(hp.hc_mult, 2);
  EXPECT_FLOAT_EQ(hp.rope_factor, 4.0f);
  EXPECT_EQ(hp.rope_orig_ctx, 64);
  EXPECT_FLOAT_EQ(hp.compress_rope_theta, 160000.0f);
  EXPECT_EQ(hp.weight_block[0], 128);
  EXPECT_EQ(hp.weight_block[1], 128);
  EXPECT_EQ(hp.expert_dtype, "fp4");
  EXPECT_EQ(hp.score_func, "sqrtsoftplus");
}

// transformers' own DeepseekV4Config output (make_checkpoints.py: save_pretrained).
TEST(Hparams, transformers_form) {
  json c = hf_cfg();
  ASSERT_TRUE(c.contains("layer_types"));
  ASSERT_TRUE(c.contains("rope_parameters"));
  const hparams hp = parse_ok(c.dump());
  EXPECT_EQ(hp.compress_ratios, (std::vector<int32_t>{0, 4, 128}));
  EXPECT_EQ(hp.n_hash_layers, 1);
  EXPECT_EQ(hp.rope_dims, 16);
  EXPECT_FLOAT_EQ(hp.rope_factor, 4.0f);
  EXPECT_EQ(hp.rope_orig_ctx, 64);
  EXPECT_FLOAT_EQ(hp.rope_theta, 10000.0f);
  EXPECT_FLOAT_EQ(hp.compress_rope_theta, 160000.0f);
  EXPECT_EQ(hp.n_mtp_layers, 1);
  EXPECT_EQ(hp.mtp_compress_ratios, (std::vector<int32_t>{0}));
  // Without qk_rope_head_dim, partial_rotary_factor * head_dim.
  c.erase("qk_rope_head_dim");
  EXPECT_EQ(parse_ok(c.dump()).rope_dims, 16);
  // Custom compress rates.
  c["compress_rates"] = {{"compressed_sparse_attention", 4}, {"heavily_compressed_attention", 128}};
  EXPECT_EQ(parse_ok(c.dump()).compress_ratios, (std::vector<int32_t>{0, 4, 128}));
}

TEST(Hparams, errors_name_the_key) {
  json c = official_cfg();
  c.erase("hidden_size");
  EXPECT_NE(parse_error(c).find("key 'hidden_size': missing"), std::string::npos);

  c = official_cfg();
  c["compress_ratios"][1] = 5;
  EXPECT_NE(parse_error(c).find("compress_ratios[1] = 5 is not one of 0"), std::string::npos) << parse_error(c);

  c = official_cfg();
  c["compress_ratios"] = {4};
  EXPECT_NE(parse_error(c).find("key 'compress_ratios': has 1 entries"), std::string::npos);

  c = official_cfg();
  c["model_type"] = "llama";
  EXPECT_NE(parse_error(c).find("unknown architecture 'llama'"), std::string::npos);

  c = official_cfg();
  c["num_attention_heads"] = "two";
  EXPECT_NE(parse_error(c).find("key 'num_attention_heads': expected an integer"), std::string::npos);

  c = official_cfg();
  c["o_groups"] = 3;
  EXPECT_NE(parse_error(c).find("o_groups"), std::string::npos);

  c = official_cfg();
  c["qk_rope_head_dim"] = 32;  // == head_dim: no room for the non-RoPE part
  EXPECT_NE(parse_error(c).find("rope_dims = 32 is out of range"), std::string::npos) << parse_error(c);

  c = official_cfg();
  c["index_head_dim"] = 48;
  EXPECT_NE(parse_error(c).find("power of two"), std::string::npos);

  c = official_cfg();
  c["num_experts_per_tok"] = 9;
  EXPECT_NE(parse_error(c).find("n_experts_used = 9 is out of range [1, 4]"), std::string::npos) << parse_error(c);

  c = official_cfg();
  c["rope_scaling"]["type"] = "longrope";
  EXPECT_NE(parse_error(c).find("'longrope' is not supported"), std::string::npos);

  c = official_cfg();
  c["rms_norm_eps"] = -1;
  EXPECT_NE(parse_error(c).find("rms_eps"), std::string::npos);

  json h = hf_cfg();
  h["mlp_layer_types"] = {"moe", "hash_moe", "moe"};
  EXPECT_NE(parse_error(h).find("hash layers must come first"), std::string::npos);
  h = hf_cfg();
  h["layer_types"][2] = "global_attention";
  EXPECT_NE(parse_error(h).find("layer_types[2]': unknown layer type"), std::string::npos);

  hparams hp;
  std::string err;
  EXPECT_FALSE(hparams_from_config_json("{not json", &hp, &err));
  EXPECT_NE(err.find("bad JSON"), std::string::npos);
}

TEST(Hparams, metadata_round_trip) {
  scratch s;
  const hparams hp = parse_ok(official_cfg().dump());
  file_writer w;
  ASSERT_TRUE(w.open(s.path("m.v4")));
  std::string err;
  ASSERT_TRUE(hparams_write(hp, w, &err)) << err;
  ASSERT_TRUE(w.finish()) << w.error();
  auto f = model_file::open(s.path("m.v4"), &err);
  ASSERT_TRUE(f) << err;
  hparams back;
  ASSERT_TRUE(hparams_read(*f, &back, &err)) << err;
  EXPECT_EQ(back.hidden_size, hp.hidden_size);
  EXPECT_EQ(back.compress_ratios, hp.compress_ratios);
  EXPECT_EQ(back.mtp_compress_ratios, hp.mtp_compress_ratios);
  EXPECT_EQ(back.n_hash_layers, hp.n_hash_layers);
  EXPECT_EQ(back.score_func, hp.score_func);
  EXPECT_EQ(back.rope_factor, hp.rope_factor);
  EXPECT_EQ(back.weight_block[0], hp.weight_block[0]);
  EXPECT_EQ(back.expert_dtype, hp.expert_dtype);
  EXPECT_EQ(back.index_topk, hp.index_topk);
  std::string arch;
  EXPECT_TRUE(f->get_string("general.architecture", &arch, &err));
  EXPECT_EQ(arch, "deepseek_v4");
  // Every documented key is present (docs/FORMAT.md lists them).
  for (const char* k : {"deepseek_v4.vocab_size", "deepseek_v4.rope_dims", "deepseek_v4.compress_ratios",
                        "deepseek_v4.n_mtp_layers", "deepseek_v4.weight_block", "general.name"})
    EXPECT_TRUE(f->find_meta(k)) << k;
}

TEST(Hparams, read_refuses_another_architecture) {
  scratch s;
  file_writer w;
  ASSERT_TRUE(w.open(s.path("m.v4")));
  w.set_string("general.architecture", "llama");
  ASSERT_TRUE(w.finish());
  std::string err;
  auto f = model_file::open(s.path("m.v4"), &err);
  ASSERT_TRUE(f) << err;
  hparams hp;
  EXPECT_FALSE(hparams_read(*f, &hp, &err));
  EXPECT_NE(err.find("architecture 'llama' is not supported"), std::string::npos) << err;
}

TEST(Names, expected_list_and_mapping) {
  const hparams hp = parse_ok(official_cfg().dump());
  const std::vector<expected_tensor> ex = expected_tensors(hp);
  const json want = expected("official")["tensors"];
  size_t non_scale = 0;
  for (auto it = want.begin(); it != want.end(); ++it)
    if ((*it)["type"] != "e8m0") ++non_scale;
  EXPECT_EQ(ex.size(), non_scale);  // Python's list and ours agree (scales come with their weight)
  for (const expected_tensor& e : ex) {
    ASSERT_TRUE(want.contains(e.name)) << e.name;
    const std::vector<int64_t> ne(e.ne, e.ne + e.n_dims);
    EXPECT_EQ(ne, want[e.name]["ne"].get<std::vector<int64_t>>()) << e.name;
  }
  EXPECT_EQ(role_of("layers.3.ffn.experts.w1.weight"), tensor_role::weight);
  EXPECT_EQ(role_of("layers.3.ffn.gate.weight"), tensor_role::param);
  EXPECT_EQ(role_of("layers.0.ffn.gate.tid2eid"), tensor_role::ids);
  EXPECT_EQ(scales_name("layers.0.attn.wq_a.weight"), "layers.0.attn.wq_a.scale");

  struct row {
    const char* in;
    source_name::kind_t kind;
    const char* canonical;
    bool scale;
  };
  const row rows[] = {
      {"layers.0.attn.wq_a.weight", source_name::plain, "layers.0.attn.wq_a.weight", false},
      {"layers.0.attn.wq_a.scale", source_name::plain, "layers.0.attn.wq_a.weight", true},
      {"model.layers.2.self_attn.q_a_proj.weight", source_name::plain, "layers.2.attn.wq_a.weight", false},
      {"model.layers.2.attn.norm.weight", source_name::plain, "layers.2.attn.kv_norm.weight", false},
      {"model.layers.2.attn_hc.scale", source_name::plain, "layers.2.hc_attn_scale", false},
      {"model.layers.1.self_attn.compressor.indexer.scorer.weights_proj.weight", source_name::plain,
       "layers.1.attn.indexer.weights_proj.weight", false},
      {"layers.5.ffn.experts.17.w2.scale", source_name::expert, "layers.5.ffn.experts.w2.weight", true},
      {"model.layers.1.mlp.experts.gate_up_proj", source_name::fused_gate_up, "layers.1.ffn.experts.", false},
      {"model.embed_tokens.weight", source_name::plain, "embed.weight", false},
      {"lm_head.weight", source_name::plain, "head.weight", false},
      {"model.hc_head.hc_fn", source_name::plain, "hc_head_fn", false},
      {"mtp.0.e_proj.scale", source_name::plain, "mtp.0.e_proj.weight", true},
      {"mtp.0.emb.tok_emb.weight", source_name::dropped, "", false},
      {"layers.0.e_proj.weight", source_name::unknown, "", false},  // MTP-only name in a main layer
      {"layers.0.attn.wq_a.bias", source_name::unknown, "", false},
      {"layers.x.attn.wq_a.weight", source_name::unknown, "", false},
  };
  for (const row& r : rows) {
    const source_name sn = map_source_name(r.in);
    EXPECT_EQ(sn.kind, r.kind) << r.in;
    EXPECT_EQ(sn.canonical, r.canonical) << r.in;
    EXPECT_EQ(sn.is_scale, r.scale) << r.in;
  }
}

}  // namespace
}  // namespace v4::model::testing

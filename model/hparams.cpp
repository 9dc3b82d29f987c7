// hparams: config.json (official or transformers form) -> struct -> model-file metadata and back.
#include "model/hparams.h"

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "model/v4file.h"

namespace v4::model {

namespace {

using json = nlohmann::json;

constexpr int64_t kMaxSize = int64_t(1) << 24;  // any single dimension (vocab 129280, D 7168, ...)
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxMtp = 16;

// Reads config keys with one error style: "config.json: key 'x': ...".
struct reader {
  const json& j;
  std::string* error;
  bool ok = true;

  bool fail(const std::string& key, const std::string& m) {
    if (ok && error) *error = "config.json: key '" + key + "': " + m;
    ok = false;
    return false;
  }
  const json* get(const json& obj, const std::string& key) const {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  // Integer (a float with an integral value is accepted, as Python writes 16.0 sometimes).
  bool as_int(const json& v, const std::string& key, int64_t* out) {
    if (v.is_number_integer()) {
      *out = v.get<int64_t>();
      return true;
    }
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) {
        *out = int64_t(d);
        return true;
      }
    }
    return fail(key, "expected an integer, got " + v.dump());
  }
  bool as_float(const json& v, const std::string& key, float* out) {
    if (!v.is_number()) return fail(key, "expected a number, got " + v.dump());
    *out = float(v.get<double>());
    return true;
  }
  void req_int(const std::string& key, int64_t* out) {
    if (!ok) return;
    const json* v = get(j, key);
    if (!v) {
      fail(key, "missing (required)");
      return;
    }
    as_int(*v, key, out);
  }
  void opt_int(const std::string& key, int64_t* out) {
    if (!ok) return;
    if (const json* v = get(j, key)) as_int(*v, key, out);
  }
  void opt_float(const std::string& key, float* out) {
    if (!ok) return;
    if (const json* v = get(j, key)) as_float(*v, key, out);
  }
  void opt_bool(const std::string& key, bool* out) {
    if (!ok) return;
    if (const json* v = get(j, key)) {
      if (!v->is_boolean()) fail(key, "expected true or false, got " + v->dump());
      else *out = v->get<bool>();
    }
  }
  void opt_string(const std::string& key, std::string* out) {
    if (!ok) return;
    if (const json* v = get(j, key)) {
      if (!v->is_string()) fail(key, "expected a string, got " + v->dump());
      else *out = v->get<std::string>();
    }
  }
  // bos/eos: an id or a list of ids (the first is used).
  void opt_token(const std::string& key, int32_t* out) {
    if (!ok) return;
    const json* v = get(j, key);
    if (!v) return;
    const json* x = v->is_array() ? (v->empty() ? nullptr : &(*v)[0]) : v;
    if (!x) return;
    int64_t id = 0;
    if (as_int(*x, key, &id)) {
      if (id < 0 || id > INT32_MAX) fail(key, "token id " + std::to_string(id) + " out of range");
      else *out = int32_t(id);
    }
  }
};

// The RoPE YaRN block, from either `rope_scaling` (official) or `rope_parameters.compress` (transformers).
void read_yarn(reader& r, const json& rs, const std::string& where, hparams* hp) {
  if (!r.ok || !rs.is_object()) {
    if (r.ok && !rs.is_object()) r.fail(where, "expected an object");
    return;
  }
  std::string type = "default";
  if (rs.contains("type") && rs["type"].is_string()) type = rs["type"].get<std::string>();
  if (rs.contains("rope_type") && rs["rope_type"].is_string()) type = rs["rope_type"].get<std::string>();
  if (type == "default" || type == "none") {
    hp->rope_factor = 1.0f;
    return;
  }
  if (type != "yarn") {
    r.fail(where, "rope type '" + type + "' is not supported (DeepSeek-V4 uses 'yarn')");
    return;
  }
  const json* f = r.get(rs, "factor");
  if (!f) {
    r.fail(where + ".factor", "missing (required for yarn)");
    return;
  }
  r.as_float(*f, where + ".factor", &hp->rope_factor);
  if (const json* v = r.get(rs, "original_max_position_embeddings"))
    r.as_int(*v, where + ".original_max_position_embeddings", &hp->rope_orig_ctx);
  else r.fail(where + ".original_max_position_embeddings", "missing (required for yarn)");
  if (const json* v = r.get(rs, "beta_fast")) r.as_float(*v, where + ".beta_fast", &hp->rope_beta_fast);
  if (const json* v = r.get(rs, "beta_slow")) r.as_float(*v, where + ".beta_slow", &hp->rope_beta_slow);
}

bool check(std::string* error, bool cond, const std::string& key, const std::string& msg) {
  if (!cond && error) *error = "hparams: " + key + " " + msg;
  return cond;
}

bool in_range(std::string* error, const char* key, int64_t v, int64_t lo, int64_t hi) {
  return check(error, v >= lo && v <= hi, key,
               "= " + std::to_string(v) + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
}

bool pow2(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

}  // namespace

bool hparams::validate(std::string* error) const {
  if (!check(error, architecture == "deepseek_v4", "architecture",
             "'" + architecture + "' is not supported (this build runs deepseek_v4)"))
    return false;
  if (!in_range(error, "vocab_size", vocab_size, 1, kMaxSize) || !in_range(error, "hidden_size", hidden_size, 1, kMaxSize) ||
      !in_range(error, "n_layers", n_layers, 1, kMaxLayers) || !in_range(error, "n_heads", n_heads, 1, 65536) ||
      !in_range(error, "head_dim", head_dim, 2, 65536) || !in_range(error, "rope_dims", rope_dims, 2, head_dim - 1) ||
      !in_range(error, "q_lora_rank", q_lora_rank, 1, kMaxSize) || !in_range(error, "o_lora_rank", o_lora_rank, 1, kMaxSize) ||
      !in_range(error, "o_groups", o_groups, 1, n_heads) || !in_range(error, "moe_inter", moe_inter, 1, kMaxSize) ||
      !in_range(error, "n_experts", n_experts, 1, 65536) ||
      !in_range(error, "n_experts_used", n_experts_used, 1, n_experts) ||
      !in_range(error, "n_shared_experts", n_shared_experts, 0, 64) ||
      !in_range(error, "n_hash_layers", n_hash_layers, 0, n_layers) || !in_range(error, "hc_mult", hc_mult, 1, 64) ||
      !in_range(error, "hc_sinkhorn_iters", hc_sinkhorn_iters, 1, 1000) || !in_range(error, "window", window, 1, kMaxSize) ||
      !in_range(error, "n_mtp_layers", n_mtp_layers, 0, kMaxMtp) ||
      !in_range(error, "max_position", max_position, 1, int64_t(1) << 40) ||
      !in_range(error, "bos_id", bos_id, 0, vocab_size - 1) || !in_range(error, "eos_id", eos_id, 0, vocab_size - 1))
    return false;
  if (!check(error, head_dim % 2 == 0 && rope_dims % 2 == 0, "head_dim/rope_dims",
             "must both be even (RoPE rotates pairs): head_dim " + std::to_string(head_dim) + ", rope_dims " +
                 std::to_string(rope_dims)))
    return false;
  if (!check(error, n_heads % o_groups == 0, "o_groups",
             std::to_string(o_groups) + " must divide n_heads " + std::to_string(n_heads)))
    return false;
  if (!check(error, (n_heads * head_dim) % o_groups == 0 && n_heads * head_dim <= kMaxSize, "n_heads * head_dim",
             "= " + std::to_string(n_heads * head_dim) + " too large or not divisible by o_groups"))
    return false;
  if (!check(error, score_func == "sqrtsoftplus" || score_func == "softmax" || score_func == "sigmoid", "score_func",
             "'" + score_func + "' is not one of sqrtsoftplus, softmax, sigmoid"))
    return false;
  auto positive = [&](const char* k, float v) {
    return check(error, std::isfinite(v) && v > 0, k, "= " + std::to_string(v) + " must be a positive finite number");
  };
  if (!positive("rms_eps", rms_eps) || !positive("hc_eps", hc_eps) || !positive("rope_theta", rope_theta) ||
      !positive("compress_rope_theta", compress_rope_theta) || !positive("routed_scale", routed_scale))
    return false;
  if (!check(error, std::isfinite(swiglu_limit) && swiglu_limit >= 0, "swiglu_limit", "must be >= 0 (0: no clamp)"))
    return false;
  if (!check(error, std::isfinite(rope_factor) && rope_factor >= 1, "rope_factor",
             "= " + std::to_string(rope_factor) + " must be >= 1"))
    return false;
  if (rope_factor > 1) {
    if (!in_range(error, "rope_orig_ctx", rope_orig_ctx, 1, int64_t(1) << 40)) return false;
    if (!check(error, std::isfinite(rope_beta_fast) && std::isfinite(rope_beta_slow) && rope_beta_fast > rope_beta_slow &&
                          rope_beta_slow > 0,
               "rope_beta_fast/rope_beta_slow", "must satisfy beta_fast > beta_slow > 0"))
      return false;
  }
  if (!check(error, int64_t(compress_ratios.size()) == n_layers, "compress_ratios",
             "has " + std::to_string(compress_ratios.size()) + " entries for " + std::to_string(n_layers) + " layers"))
    return false;
  if (!check(error, int64_t(mtp_compress_ratios.size()) == n_mtp_layers, "mtp_compress_ratios",
             "has " + std::to_string(mtp_compress_ratios.size()) + " entries for " + std::to_string(n_mtp_layers) +
                 " MTP layers"))
    return false;
  bool any_csa = false;
  for (size_t i = 0; i < compress_ratios.size() + mtp_compress_ratios.size(); ++i) {
    const bool mtp = i >= compress_ratios.size();
    const int32_t r = mtp ? mtp_compress_ratios[i - compress_ratios.size()] : compress_ratios[i];
    const std::string key = std::string(mtp ? "mtp_compress_ratios[" : "compress_ratios[") +
                            std::to_string(mtp ? i - compress_ratios.size() : i) + "]";
    if (!check(error, r == 0 || r == 4 || r == 128, key,
               "= " + std::to_string(r) + " is not one of 0 (sliding window), 4 (CSA), 128 (HCA)"))
      return false;
    any_csa |= r == 4;
  }
  if (any_csa) {
    if (!in_range(error, "index_n_heads", index_n_heads, 1, 65536) ||
        !in_range(error, "index_head_dim", index_head_dim, rope_dims, 65536) ||
        !in_range(error, "index_topk", index_topk, 1, kMaxSize))
      return false;
    if (!check(error, pow2(index_head_dim), "index_head_dim",
               "= " + std::to_string(index_head_dim) + " must be a power of two (Hadamard transform)"))
      return false;
  }
  if (!check(error, weight_block[0] >= 1 && weight_block[1] >= 1 && weight_block[0] <= 4096 && weight_block[1] <= 4096,
             "weight_block", "must be two sizes in [1, 4096]"))
    return false;
  return true;
}

bool hparams_from_config_json(const std::string& json_text, hparams* hp, std::string* error) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const std::exception& e) {
    if (error) *error = std::string("config.json: bad JSON: ") + e.what();
    return false;
  }
  if (!j.is_object()) {
    if (error) *error = "config.json: not a JSON object";
    return false;
  }
  reader r{j, error};
  hparams h;
  std::string model_type;
  r.opt_string("model_type", &model_type);
  if (!r.ok) return false;
  if (model_type != "deepseek_v4") {
    if (error)
      *error = "config.json: key 'model_type': unknown architecture '" + model_type +
               "' (v4 convert supports model_type \"deepseek_v4\")";
    return false;
  }
  h.architecture = model_type;
  r.opt_string("_name_or_path", &h.name);

  r.req_int("vocab_size", &h.vocab_size);
  r.req_int("hidden_size", &h.hidden_size);
  r.req_int("num_hidden_layers", &h.n_layers);
  r.req_int("num_attention_heads", &h.n_heads);
  r.req_int("head_dim", &h.head_dim);
  r.req_int("q_lora_rank", &h.q_lora_rank);
  r.req_int("o_lora_rank", &h.o_lora_rank);
  r.req_int("o_groups", &h.o_groups);
  r.req_int("moe_intermediate_size", &h.moe_inter);
  r.req_int("n_routed_experts", &h.n_experts);
  r.req_int("n_shared_experts", &h.n_shared_experts);
  r.req_int("num_experts_per_tok", &h.n_experts_used);
  r.opt_float("routed_scaling_factor", &h.routed_scale);
  r.opt_string("scoring_func", &h.score_func);
  r.opt_bool("norm_topk_prob", &h.norm_topk_prob);
  r.opt_float("swiglu_limit", &h.swiglu_limit);
  r.opt_float("rms_norm_eps", &h.rms_eps);
  r.opt_int("hc_mult", &h.hc_mult);
  r.opt_int("hc_sinkhorn_iters", &h.hc_sinkhorn_iters);
  r.opt_float("hc_eps", &h.hc_eps);
  r.req_int("sliding_window", &h.window);
  r.opt_int("num_nextn_predict_layers", &h.n_mtp_layers);
  r.opt_int("max_position_embeddings", &h.max_position);
  r.req_int("index_n_heads", &h.index_n_heads);
  r.req_int("index_head_dim", &h.index_head_dim);
  r.req_int("index_topk", &h.index_topk);
  r.opt_token("bos_token_id", &h.bos_id);
  r.opt_token("eos_token_id", &h.eos_id);
  r.opt_bool("tie_word_embeddings", &h.tie_embeddings);
  if (!r.ok) return false;

  // RoPE dims: the official `qk_rope_head_dim`, or transformers' `partial_rotary_factor`.
  if (r.get(j, "qk_rope_head_dim")) {
    r.req_int("qk_rope_head_dim", &h.rope_dims);
  } else if (const json* p = r.get(j, "partial_rotary_factor")) {
    float f = 0;
    if (r.as_float(*p, "partial_rotary_factor", &f)) h.rope_dims = int64_t(std::lround(double(f) * double(h.head_dim)));
  } else {
    r.fail("qk_rope_head_dim", "missing (required; or transformers' partial_rotary_factor)");
  }
  if (!r.ok) return false;

  // Layer schedule. Official: compress_ratios (n_layers + n_mtp entries) and num_hash_layers.
  // transformers: layer_types + compress_rates and mlp_layer_types (hash layers must come first).
  if (const json* cr = r.get(j, "compress_ratios")) {
    if (!cr->is_array()) return r.fail("compress_ratios", "expected a list of integers");
    const size_t n = cr->size();
    if (int64_t(n) != h.n_layers && int64_t(n) != h.n_layers + h.n_mtp_layers)
      return r.fail("compress_ratios", "has " + std::to_string(n) + " entries; expected num_hidden_layers (" +
                                           std::to_string(h.n_layers) + ") + num_nextn_predict_layers (" +
                                           std::to_string(h.n_mtp_layers) + ")");
    for (size_t i = 0; i < n; ++i) {
      int64_t v = 0;
      if (!r.as_int((*cr)[i], "compress_ratios[" + std::to_string(i) + "]", &v)) return false;
      if (v < 0 || v > 1 << 20) return r.fail("compress_ratios[" + std::to_string(i) + "]", "out of range");
      (int64_t(i) < h.n_layers ? h.compress_ratios : h.mtp_compress_ratios).push_back(int32_t(v));
    }
    if (h.mtp_compress_ratios.empty()) h.mtp_compress_ratios.assign(size_t(std::max<int64_t>(h.n_mtp_layers, 0)), 0);
  } else if (const json* lt = r.get(j, "layer_types")) {
    if (!lt->is_array()) return r.fail("layer_types", "expected a list of strings");
    int64_t csa = 4, hca = 128;
    if (const json* rates = r.get(j, "compress_rates")) {
      if (!rates->is_object()) return r.fail("compress_rates", "expected an object");
      if (const json* v = r.get(*rates, "compressed_sparse_attention"))
        if (!r.as_int(*v, "compress_rates.compressed_sparse_attention", &csa)) return false;
      if (const json* v = r.get(*rates, "heavily_compressed_attention"))
        if (!r.as_int(*v, "compress_rates.heavily_compressed_attention", &hca)) return false;
    }
    for (size_t i = 0; i < lt->size(); ++i) {
      const json& t = (*lt)[i];
      const std::string key = "layer_types[" + std::to_string(i) + "]";
      if (!t.is_string()) return r.fail(key, "expected a string");
      const std::string s = t.get<std::string>();
      if (s == "sliding_attention") h.compress_ratios.push_back(0);
      else if (s == "compressed_sparse_attention") h.compress_ratios.push_back(int32_t(csa));
      else if (s == "heavily_compressed_attention") h.compress_ratios.push_back(int32_t(hca));
      else return r.fail(key, "unknown layer type '" + s + "'");
    }
    h.mtp_compress_ratios.assign(size_t(std::max<int64_t>(h.n_mtp_layers, 0)), 0);  // MTP: sliding only
  } else {
    return r.fail("compress_ratios", "missing (required; or transformers' layer_types)");
  }

  if (const json* ml = r.get(j, "mlp_layer_types")) {
    if (!ml->is_array()) return r.fail("mlp_layer_types", "expected a list of strings");
    h.n_hash_layers = 0;
    bool routed_seen = false;
    for (size_t i = 0; i < ml->size(); ++i) {
      const std::string key = "mlp_layer_types[" + std::to_string(i) + "]";
      const json& t = (*ml)[i];
      if (!t.is_string()) return r.fail(key, "expected a string");
      const std::string s = t.get<std::string>();
      if (s == "hash_moe") {
        if (routed_seen) return r.fail(key, "hash_moe after a moe layer: hash layers must come first");
        ++h.n_hash_layers;
      } else if (s == "moe") {
        routed_seen = true;
      } else {
        return r.fail(key, "unknown MLP layer type '" + s + "'");
      }
    }
    if (int64_t(ml->size()) != h.n_layers)
      return r.fail("mlp_layer_types", "has " + std::to_string(ml->size()) + " entries for " +
                                           std::to_string(h.n_layers) + " layers");
  } else {
    h.n_hash_layers = 3;  // transformers' and the official default
    r.opt_int("num_hash_layers", &h.n_hash_layers);
  }
  if (!r.ok) return false;

  // RoPE: official rope_theta / compress_rope_theta / rope_scaling; transformers rope_parameters.
  r.opt_float("rope_theta", &h.rope_theta);
  r.opt_float("compress_rope_theta", &h.compress_rope_theta);
  if (const json* rp = r.get(j, "rope_parameters"); rp && rp->is_object() && rp->contains("compress")) {
    if (const json* m = r.get(*rp, "main"); m && m->is_object())
      if (const json* t = r.get(*m, "rope_theta")) r.as_float(*t, "rope_parameters.main.rope_theta", &h.rope_theta);
    const json& c = (*rp)["compress"];
    if (c.is_object())
      if (const json* t = r.get(c, "rope_theta")) r.as_float(*t, "rope_parameters.compress.rope_theta", &h.compress_rope_theta);
    read_yarn(r, c, "rope_parameters.compress", &h);
  } else if (const json* rs = r.get(j, "rope_scaling")) {
    read_yarn(r, *rs, "rope_scaling", &h);
  } else if (rp && rp->is_object()) {
    read_yarn(r, *rp, "rope_parameters", &h);  // flat transformers form before __post_init__
  }
  if (!r.ok) return false;
  if (h.max_position == 0) h.max_position = h.rope_orig_ctx > 0 ? int64_t(double(h.rope_orig_ctx) * h.rope_factor) : 4096;

  // Storage of the source weights (informational).
  std::string expert_dtype;
  r.opt_string("expert_dtype", &expert_dtype);
  if (const json* q = r.get(j, "quantization_config"); q && q->is_object()) {
    if (const json* b = r.get(*q, "weight_block_size")) {
      if (!b->is_array() || b->size() != 2) return r.fail("quantization_config.weight_block_size", "expected [rows, cols]");
      int64_t b0 = 0, b1 = 0;
      if (!r.as_int((*b)[0], "quantization_config.weight_block_size[0]", &b0) ||
          !r.as_int((*b)[1], "quantization_config.weight_block_size[1]", &b1))
        return false;
      if (b0 < 1 || b1 < 1 || b0 > 4096 || b1 > 4096)
        return r.fail("quantization_config.weight_block_size", "sizes must be in [1, 4096]");
      // The config says [out-block, in-block]; our scale_block is {along K (in), along rows (out)}.
      h.weight_block[0] = int32_t(b1);
      h.weight_block[1] = int32_t(b0);
    }
    if (const json* e = r.get(*q, "expert_dtype"); e && e->is_string()) expert_dtype = e->get<std::string>();
  }
  h.expert_dtype = expert_dtype;

  std::string verr;
  if (!h.validate(&verr)) {
    if (error) *error = "config.json: " + verr;
    return false;
  }
  *hp = std::move(h);
  return true;
}

// ---- metadata ----------------------------------------------------------------------------------

namespace {

const std::string kPrefix = "deepseek_v4.";

// One table drives both directions: key suffix, and the field as int64 / float / bool / string.
struct field_ref {
  const char* key;
  int64_t hparams::*i64 = nullptr;
  float hparams::*f32 = nullptr;
  bool hparams::*b = nullptr;
  std::string hparams::*s = nullptr;
  int32_t hparams::*i32 = nullptr;
};

const std::vector<field_ref>& fields() {
  static const std::vector<field_ref> f = {
      {"vocab_size", &hparams::vocab_size},
      {"hidden_size", &hparams::hidden_size},
      {"n_layers", &hparams::n_layers},
      {"n_heads", &hparams::n_heads},
      {"head_dim", &hparams::head_dim},
      {"rope_dims", &hparams::rope_dims},
      {"q_lora_rank", &hparams::q_lora_rank},
      {"o_lora_rank", &hparams::o_lora_rank},
      {"o_groups", &hparams::o_groups},
      {"moe_inter", &hparams::moe_inter},
      {"n_experts", &hparams::n_experts},
      {"n_shared_experts", &hparams::n_shared_experts},
      {"n_experts_used", &hparams::n_experts_used},
      {"n_hash_layers", &hparams::n_hash_layers},
      {"routed_scale", nullptr, &hparams::routed_scale},
      {"score_func", nullptr, nullptr, nullptr, &hparams::score_func},
      {"norm_topk_prob", nullptr, nullptr, &hparams::norm_topk_prob},
      {"swiglu_limit", nullptr, &hparams::swiglu_limit},
      {"rms_eps", nullptr, &hparams::rms_eps},
      {"hc_mult", &hparams::hc_mult},
      {"hc_sinkhorn_iters", &hparams::hc_sinkhorn_iters},
      {"hc_eps", nullptr, &hparams::hc_eps},
      {"window", &hparams::window},
      {"n_mtp_layers", &hparams::n_mtp_layers},
      {"rope_theta", nullptr, &hparams::rope_theta},
      {"compress_rope_theta", nullptr, &hparams::compress_rope_theta},
      {"rope_factor", nullptr, &hparams::rope_factor},
      {"rope_orig_ctx", &hparams::rope_orig_ctx},
      {"rope_beta_fast", nullptr, &hparams::rope_beta_fast},
      {"rope_beta_slow", nullptr, &hparams::rope_beta_slow},
      {"max_position", &hparams::max_position},
      {"index_n_heads", &hparams::index_n_heads},
      {"index_head_dim", &hparams::index_head_dim},
      {"index_topk", &hparams::index_topk},
      {"bos_id", nullptr, nullptr, nullptr, nullptr, &hparams::bos_id},
      {"eos_id", nullptr, nullptr, nullptr, nullptr, &hparams::eos_id},
      {"tie_embeddings", nullptr, nullptr, &hparams::tie_embeddings},
      {"expert_dtype", nullptr, nullptr, nullptr, &hparams::expert_dtype},
  };
  return f;
}

}  // namespace

bool hparams_write(const hparams& hp, file_writer& w, std::string* error) {
  if (!hp.validate(error)) return false;
  bool ok = w.set_string("general.architecture", hp.architecture) && w.set_string("general.name", hp.name);
  for (const field_ref& f : fields()) {
    const std::string k = kPrefix + f.key;
    if (f.i64) ok = ok && w.set_i64(k, hp.*f.i64);
    else if (f.f32) ok = ok && w.set_f32(k, hp.*f.f32);
    else if (f.b) ok = ok && w.set_bool(k, hp.*f.b);
    else if (f.s) ok = ok && w.set_string(k, hp.*f.s);
    else if (f.i32) ok = ok && w.set_i32(k, hp.*f.i32);
  }
  ok = ok && w.set_array(kPrefix + "compress_ratios", meta_type::i32, hp.compress_ratios.data(), hp.compress_ratios.size());
  ok = ok && w.set_array(kPrefix + "mtp_compress_ratios", meta_type::i32, hp.mtp_compress_ratios.data(),
                         hp.mtp_compress_ratios.size());
  ok = ok && w.set_array(kPrefix + "weight_block", meta_type::i32, hp.weight_block, 2);
  if (!ok && error) *error = "writing metadata: " + w.error();
  return ok;
}

bool hparams_read(const model_file& f, hparams* hp, std::string* error) {
  hparams h;
  std::string err;
  if (!f.get_string("general.architecture", &h.architecture, &err)) {
    if (error) *error = "model file: " + err;
    return false;
  }
  if (h.architecture != "deepseek_v4") {
    if (error) *error = "model file: architecture '" + h.architecture + "' is not supported (expected deepseek_v4)";
    return false;
  }
  bool ok = f.get_string("general.name", &h.name, &err);
  for (const field_ref& fr : fields()) {
    if (!ok) break;
    const std::string k = kPrefix + fr.key;
    if (fr.i64) ok = f.get_i64(k, &(h.*fr.i64), &err);
    else if (fr.f32) ok = f.get_f32(k, &(h.*fr.f32), &err);
    else if (fr.b) ok = f.get_bool(k, &(h.*fr.b), &err);
    else if (fr.s) ok = f.get_string(k, &(h.*fr.s), &err);
    else if (fr.i32) ok = f.get_i32(k, &(h.*fr.i32), &err);
  }
  auto get_i32s = [&](const std::string& key, std::vector<int32_t>* out) {
    std::vector<uint8_t> raw;
    uint64_t n = 0;
    if (!f.get_array(key, meta_type::i32, &raw, &n, &err)) return false;
    out->resize(size_t(n));
    if (n) std::memcpy(out->data(), raw.data(), size_t(n) * 4);
    return true;
  };
  std::vector<int32_t> wb;
  ok = ok && get_i32s(kPrefix + "compress_ratios", &h.compress_ratios) &&
       get_i32s(kPrefix + "mtp_compress_ratios", &h.mtp_compress_ratios) && get_i32s(kPrefix + "weight_block", &wb);
  if (ok && wb.size() != 2) {
    ok = false;
    err = "metadata '" + kPrefix + "weight_block' must have 2 elements";
  }
  if (!ok) {
    if (error) *error = "model file: " + err;
    return false;
  }
  h.weight_block[0] = wb[0];
  h.weight_block[1] = wb[1];
  if (!h.validate(&err)) {
    if (error) *error = "model file: " + err;
    return false;
  }
  *hp = std::move(h);
  return true;
}

}  // namespace v4::model

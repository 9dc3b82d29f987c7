// Canonical names, the expected tensor list, and checkpoint-name mapping (see names.h).
#include "model/names.h"

#include <cstring>
#include <map>
#include <set>

namespace v4::model {

namespace {

// Per-layer tensors: canonical suffix (after "layers.L.") and the other names it is saved under.
struct alias_row {
  const char* canonical;
  std::vector<const char*> aliases;
};

const std::vector<alias_row>& layer_aliases() {
  static const std::vector<alias_row> t = {
      {"attn_norm.weight", {"input_layernorm.weight"}},
      {"ffn_norm.weight", {"post_attention_layernorm.weight"}},
      {"hc_attn_fn", {"attn_hc.fn"}},
      {"hc_attn_base", {"attn_hc.base"}},
      {"hc_attn_scale", {"attn_hc.scale"}},
      {"hc_ffn_fn", {"ffn_hc.fn"}},
      {"hc_ffn_base", {"ffn_hc.base"}},
      {"hc_ffn_scale", {"ffn_hc.scale"}},
      {"attn.attn_sink", {"self_attn.sinks"}},
      {"attn.wq_a.weight", {"self_attn.q_a_proj.weight"}},
      {"attn.q_norm.weight", {"self_attn.q_a_norm.weight"}},
      {"attn.wq_b.weight", {"self_attn.q_b_proj.weight"}},
      {"attn.wkv.weight", {"self_attn.kv_proj.weight"}},
      {"attn.kv_norm.weight", {"self_attn.kv_norm.weight", "attn.norm.weight"}},
      {"attn.wo_a.weight", {"self_attn.o_a_proj.weight"}},
      {"attn.wo_b.weight", {"self_attn.o_b_proj.weight"}},
      {"attn.compressor.ape", {"self_attn.compressor.position_bias"}},
      {"attn.compressor.wkv.weight", {"self_attn.compressor.kv_proj.weight"}},
      {"attn.compressor.wgate.weight", {"self_attn.compressor.gate_proj.weight"}},
      {"attn.compressor.norm.weight", {"self_attn.compressor.kv_norm.weight"}},
      {"attn.indexer.wq_b.weight", {"self_attn.compressor.indexer.q_b_proj.weight"}},
      {"attn.indexer.weights_proj.weight", {"self_attn.compressor.indexer.scorer.weights_proj.weight"}},
      {"attn.indexer.compressor.ape", {"self_attn.compressor.indexer.position_bias"}},
      {"attn.indexer.compressor.wkv.weight", {"self_attn.compressor.indexer.kv_proj.weight"}},
      {"attn.indexer.compressor.wgate.weight", {"self_attn.compressor.indexer.gate_proj.weight"}},
      {"attn.indexer.compressor.norm.weight", {"self_attn.compressor.indexer.kv_norm.weight"}},
      {"ffn.gate.weight", {"mlp.gate.weight"}},
      {"ffn.gate.bias", {"mlp.gate.e_score_correction_bias"}},
      {"ffn.gate.tid2eid", {"mlp.gate.tid2eid"}},
      {"ffn.shared_experts.w1.weight", {"mlp.shared_experts.gate_proj.weight"}},
      {"ffn.shared_experts.w2.weight", {"mlp.shared_experts.down_proj.weight"}},
      {"ffn.shared_experts.w3.weight", {"mlp.shared_experts.up_proj.weight"}},
      // MTP layers only (checked against the prefix below)
      {"e_proj.weight", {}},
      {"h_proj.weight", {}},
      {"enorm.weight", {}},
      {"hnorm.weight", {}},
      {"norm.weight", {}},
      {"hc_head_fn", {"hc_head.hc_fn"}},
      {"hc_head_base", {"hc_head.hc_base"}},
      {"hc_head_scale", {"hc_head.hc_scale"}},
  };
  return t;
}

const std::set<std::string>& mtp_only() {
  static const std::set<std::string> s = {"e_proj.weight", "h_proj.weight", "enorm.weight", "hnorm.weight",
                                          "norm.weight",   "hc_head_fn",    "hc_head_base", "hc_head_scale"};
  return s;
}

const std::vector<alias_row>& top_aliases() {
  static const std::vector<alias_row> t = {
      {"embed.weight", {"embed_tokens.weight"}},
      {"head.weight", {"lm_head.weight"}},
      {"norm.weight", {}},
      {"hc_head_fn", {"hc_head.hc_fn"}},
      {"hc_head_base", {"hc_head.hc_base"}},
      {"hc_head_scale", {"hc_head.hc_scale"}},
  };
  return t;
}

// alias or canonical suffix -> canonical suffix
std::map<std::string, std::string> build_map(const std::vector<alias_row>& rows) {
  std::map<std::string, std::string> m;
  for (const alias_row& r : rows) {
    m[r.canonical] = r.canonical;
    for (const char* a : r.aliases) m[a] = r.canonical;
  }
  return m;
}

const std::set<std::string>& weight_suffixes() {
  static const std::set<std::string> s = {
      "attn.wq_a.weight",           "attn.wq_b.weight",           "attn.wkv.weight",
      "attn.wo_a.weight",           "attn.wo_b.weight",           "attn.indexer.wq_b.weight",
      "ffn.experts.w1.weight",      "ffn.experts.w2.weight",      "ffn.experts.w3.weight",
      "ffn.shared_experts.w1.weight", "ffn.shared_experts.w2.weight", "ffn.shared_experts.w3.weight",
      "e_proj.weight",              "h_proj.weight",              "embed.weight",
      "head.weight"};
  return s;
}

bool starts_with(const std::string& s, const char* p) { return s.compare(0, std::strlen(p), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// Splits "layers.12.rest" / "mtp.0.rest" into ("layers.12.", "rest"); top-level names give ("", name).
void split_prefix(const std::string& n, std::string* prefix, std::string* rest, bool* mtp) {
  *mtp = false;
  for (const char* p : {"layers.", "mtp."}) {
    if (!starts_with(n, p)) continue;
    size_t i = std::strlen(p), d = i;
    while (d < n.size() && d - i < 9 && n[d] >= '0' && n[d] <= '9') ++d;
    if (d > i && d < n.size() && n[d] == '.') {
      *prefix = n.substr(0, d + 1);
      *rest = n.substr(d + 1);
      *mtp = p[0] == 'm';
      return;
    }
  }
  prefix->clear();
  *rest = n;
}

// "ffn.experts.7.w1.weight" / "mlp.experts.7.gate_proj.weight" -> (7, "w1", is_scale)
bool parse_expert(const std::string& rest, int64_t* e, std::string* w, bool* is_scale) {
  const char* heads[] = {"ffn.experts.", "mlp.experts."};
  for (const char* h : heads) {
    if (!starts_with(rest, h)) continue;
    size_t i = std::strlen(h), d = i;
    while (d < rest.size() && d - i < 9 && rest[d] >= '0' && rest[d] <= '9') ++d;
    if (d == i || d >= rest.size() || rest[d] != '.') return false;
    const std::string tail = rest.substr(d + 1);
    static const std::map<std::string, std::pair<const char*, bool>> k = {
        {"w1.weight", {"w1", false}},        {"w2.weight", {"w2", false}},       {"w3.weight", {"w3", false}},
        {"w1.scale", {"w1", true}},          {"w2.scale", {"w2", true}},         {"w3.scale", {"w3", true}},
        {"gate_proj.weight", {"w1", false}}, {"down_proj.weight", {"w2", false}}, {"up_proj.weight", {"w3", false}},
    };
    auto it = k.find(tail);
    if (it == k.end()) return false;
    *e = std::stoll(rest.substr(i, d - i));
    *w = it->second.first;
    *is_scale = it->second.second;
    return true;
  }
  return false;
}

}  // namespace

const char* role_name(tensor_role r) {
  switch (r) {
    case tensor_role::weight: return "weight";
    case tensor_role::param: return "param";
    case tensor_role::ids: return "ids";
  }
  return "?";
}

tensor_role role_of(const std::string& canonical) {
  std::string prefix, rest;
  bool mtp = false;
  split_prefix(canonical, &prefix, &rest, &mtp);
  if (rest == "ffn.gate.tid2eid") return tensor_role::ids;
  return weight_suffixes().count(rest) ? tensor_role::weight : tensor_role::param;
}

std::string scales_name(const std::string& weight_name) {
  const std::string suffix = ".weight";
  if (ends_with(weight_name, suffix)) return weight_name.substr(0, weight_name.size() - suffix.size()) + ".scale";
  return weight_name + ".scale";
}

std::vector<expected_tensor> expected_tensors(const hparams& hp) {
  std::vector<expected_tensor> out;
  auto add = [&](const std::string& name, std::initializer_list<int64_t> ne) {
    expected_tensor t;
    t.name = name;
    t.role = role_of(name);
    t.n_dims = int(ne.size());
    int i = 0;
    for (int64_t x : ne) t.ne[i++] = x;
    out.push_back(t);
  };
  const int64_t D = hp.hidden_size, V = hp.vocab_size, H = hp.n_heads, hd = hp.head_dim, hc = hp.hc_mult;
  const int64_t ql = hp.q_lora_rank, og = hp.o_groups, ol = hp.o_lora_rank, E = hp.n_experts, I = hp.moe_inter;
  const int64_t IH = hp.index_n_heads, ID = hp.index_head_dim, hc_mix = (2 + hc) * hc;

  add("embed.weight", {D, V});
  if (!hp.tie_embeddings) add("head.weight", {D, V});
  add("norm.weight", {D});
  add("hc_head_fn", {hc * D, hc});
  add("hc_head_base", {hc});
  add("hc_head_scale", {1});

  auto block = [&](const std::string& p, int32_t ratio, bool hash, bool mtp) {
    if (mtp) {
      add(p + "e_proj.weight", {D, D});
      add(p + "h_proj.weight", {D, D});
      add(p + "enorm.weight", {D});
      add(p + "hnorm.weight", {D});
    }
    add(p + "attn_norm.weight", {D});
    add(p + "ffn_norm.weight", {D});
    for (const char* s : {"attn", "ffn"}) {
      add(p + "hc_" + s + "_fn", {hc * D, hc_mix});
      add(p + "hc_" + s + "_base", {hc_mix});
      add(p + "hc_" + s + "_scale", {3});
    }
    add(p + "attn.attn_sink", {H});
    add(p + "attn.wq_a.weight", {D, ql});
    add(p + "attn.q_norm.weight", {ql});
    add(p + "attn.wq_b.weight", {ql, H * hd});
    add(p + "attn.wkv.weight", {D, hd});
    add(p + "attn.kv_norm.weight", {hd});
    add(p + "attn.wo_a.weight", {H * hd / og, og * ol});
    add(p + "attn.wo_b.weight", {og * ol, D});
    if (ratio != 0) {
      const int64_t c = ratio == 4 ? 2 : 1;  // the ratio-4 compressor overlaps windows: twice the width
      add(p + "attn.compressor.ape", {c * hd, ratio});
      add(p + "attn.compressor.wkv.weight", {D, c * hd});
      add(p + "attn.compressor.wgate.weight", {D, c * hd});
      add(p + "attn.compressor.norm.weight", {hd});
    }
    if (ratio == 4) {
      add(p + "attn.indexer.wq_b.weight", {ql, IH * ID});
      add(p + "attn.indexer.weights_proj.weight", {D, IH});
      add(p + "attn.indexer.compressor.ape", {2 * ID, 4});
      add(p + "attn.indexer.compressor.wkv.weight", {D, 2 * ID});
      add(p + "attn.indexer.compressor.wgate.weight", {D, 2 * ID});
      add(p + "attn.indexer.compressor.norm.weight", {ID});
    }
    add(p + "ffn.gate.weight", {D, E});
    if (hash) add(p + "ffn.gate.tid2eid", {hp.n_experts_used, V});
    else add(p + "ffn.gate.bias", {E});
    add(p + "ffn.experts.w1.weight", {D, I, E});
    add(p + "ffn.experts.w3.weight", {D, I, E});
    add(p + "ffn.experts.w2.weight", {I, D, E});
    if (hp.n_shared_experts > 0) {
      const int64_t IS = I * hp.n_shared_experts;
      add(p + "ffn.shared_experts.w1.weight", {D, IS});
      add(p + "ffn.shared_experts.w3.weight", {D, IS});
      add(p + "ffn.shared_experts.w2.weight", {IS, D});
    }
    if (mtp) {
      add(p + "norm.weight", {D});
      add(p + "hc_head_fn", {hc * D, hc});
      add(p + "hc_head_base", {hc});
      add(p + "hc_head_scale", {1});
    }
  };
  for (int64_t l = 0; l < hp.n_layers; ++l)
    block("layers." + std::to_string(l) + ".", hp.compress_ratio(l), hp.is_hash_layer(l), false);
  for (int64_t m = 0; m < hp.n_mtp_layers; ++m)
    block("mtp." + std::to_string(m) + ".", hp.mtp_compress_ratios[size_t(m)], false, true);
  return out;
}

source_name map_source_name(const std::string& name) {
  static const std::map<std::string, std::string> layer_map = build_map(layer_aliases());
  static const std::map<std::string, std::string> top_map = build_map(top_aliases());
  source_name r;
  std::string n = starts_with(name, "model.") ? name.substr(6) : name;
  std::string prefix, rest;
  bool mtp = false;
  split_prefix(n, &prefix, &rest, &mtp);

  if (prefix.empty()) {
    auto it = top_map.find(rest);
    if (it != top_map.end()) {
      r.kind = source_name::plain;
      r.canonical = it->second;
    } else if (ends_with(rest, ".scale")) {
      auto w = top_map.find(rest.substr(0, rest.size() - 6) + ".weight");
      if (w != top_map.end() && role_of(w->second) == tensor_role::weight) {
        r.kind = source_name::plain;
        r.canonical = w->second;
        r.is_scale = true;
      }
    }
    return r;
  }

  // MTP layers share the embedding and head with the main model (the official convert.py drops them).
  if (mtp && (rest.find("emb") != std::string::npos || ends_with(rest, "head.weight"))) {
    r.kind = source_name::dropped;
    return r;
  }
  std::string w;
  if (parse_expert(rest, &r.expert_index, &w, &r.is_scale)) {
    r.kind = source_name::expert;
    r.canonical = prefix + "ffn.experts." + w + ".weight";
    return r;
  }
  if (rest == "mlp.experts.gate_up_proj" || rest == "ffn.experts.gate_up_proj") {
    r.kind = source_name::fused_gate_up;
    r.canonical = prefix + "ffn.experts.";
    return r;
  }
  if (rest == "mlp.experts.down_proj" || rest == "ffn.experts.down_proj") {
    r.kind = source_name::fused_down;
    r.canonical = prefix + "ffn.experts.w2.weight";
    return r;
  }
  auto known = [&](const std::string& s) -> const std::string* {
    auto it = layer_map.find(s);
    if (it == layer_map.end()) return nullptr;
    if (!mtp && mtp_only().count(it->second)) return nullptr;
    return &it->second;
  };
  if (const std::string* c = known(rest)) {
    r.kind = source_name::plain;
    r.canonical = prefix + *c;
    return r;
  }
  if (ends_with(rest, ".scale")) {
    const std::string* c = known(rest.substr(0, rest.size() - 6) + ".weight");
    if (c && role_of(*c) == tensor_role::weight) {
      r.kind = source_name::plain;
      r.canonical = prefix + *c;
      r.is_scale = true;
    }
  }
  return r;
}

}  // namespace v4::model

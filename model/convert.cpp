// Conversion front ends (see convert.h): a checkpoint directory or a model file -> jobs
// (convert_stream.h), every name, shape and dtype checked before anything is written.
#include "model/convert.h"
#include "model/convert_stream.h"
#include "model/files.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "model/hparams.h"
#include "model/names.h"
#include "model/safetensors.h"
#include "model/v4file.h"
#include "quant/quant.h"

#if __has_include("model/tokenizer.h")
#include "model/tokenizer.h"
#define V4_HAVE_TOKENIZER 1
#endif

namespace v4::model {

using namespace convert_detail;

namespace {

// ---- checkpoint planning -------------------------------------------------------------------------

std::string origin_of(const st_tensor* t) { return "'" + t->name + "' in " + t->file->path(); }

mapping map_of(const st_tensor* t) {
  return t->file->mapped() ? mapping{t->file->base(), t->file->size()} : mapping{};
}

// One source tensor (+ its e8m0 scales) as a view with the logical shape of one matrix.
bool make_source(const std::string& name, tensor_role role, const st_tensor* w, const st_tensor* s,
                 const hparams& hp, tensor_source* out, std::string* error) {
  auto fail = [&](const std::string& m) {
    *error = "tensor '" + name + "' (" + origin_of(w) + "): " + m;
    return false;
  };
  if (w->shape.size() > 4) return fail("has " + std::to_string(w->shape.size()) + " dims");
  tensor_source src;
  src.origin = origin_of(w);
  for (size_t i = 0; i < w->shape.size(); ++i) src.ne[i] = w->shape[w->shape.size() - 1 - i];
  switch (w->dtype) {
    case st_dtype::F32: src.type = dtype::f32; break;
    case st_dtype::BF16: src.type = dtype::bf16; break;
    case st_dtype::F16: src.type = dtype::f16; break;
    case st_dtype::F8_E4M3: src.type = dtype::fp8_e4m3; break;
    case st_dtype::I8:
    case st_dtype::U8:
      if (role != tensor_role::weight || !s)
        return fail(std::string("dtype ") + st_dtype_name(w->dtype) + " is only supported for MXFP4 weights with .scale");
      src.type = dtype::mxfp4;
      src.ne[0] *= 2;  // two e2m1 codes per byte, packed along the input dimension
      break;
    case st_dtype::I64: src.type = dtype::i64; break;
    case st_dtype::I32: src.type = dtype::i32; break;
    case st_dtype::F8_E8M0: return fail("dtype F8_E8M0 (scales) is not supported for this tensor");
  }
  const bool int_src = src.type == dtype::i64 || src.type == dtype::i32;
  if (role == tensor_role::ids && !int_src)
    return fail(std::string("dtype ") + st_dtype_name(w->dtype) + " is not supported for expert ids (need I64 or I32)");
  if (role != tensor_role::ids && int_src)
    return fail(std::string("dtype ") + st_dtype_name(w->dtype) + " is not supported for a float tensor");
  if (src.type == dtype::fp8_e4m3 && role != tensor_role::weight)
    return fail("dtype F8_E4M3 is only supported for matmul weights");
  const bool scaled = src.type == dtype::fp8_e4m3 || src.type == dtype::mxfp4;
  if (scaled) {
    if (!s) return fail(std::string(st_dtype_name(w->dtype)) + " weight without its scales tensor '" + scales_name(name) + "'");
    if (s->dtype != st_dtype::F8_E8M0)
      return fail("scales " + origin_of(s) + " have dtype " + st_dtype_name(s->dtype) + ", need F8_E8M0");
    if (src.type == dtype::fp8_e4m3) {
      src.scale_block[0] = hp.weight_block[0];
      src.scale_block[1] = hp.weight_block[1];
    } else {
      src.scale_block[0] = quant::kMxfp4Block;
      src.scale_block[1] = 1;
    }
    const std::vector<int64_t> want = {(src.ne[1] + src.scale_block[1] - 1) / src.scale_block[1],
                                       (src.ne[0] + src.scale_block[0] - 1) / src.scale_block[0]};
    if (w->shape.size() != 2 || s->shape != want)
      return fail("scales " + origin_of(s) + " have shape " + torch_shape_str(s->shape) + ", expected " +
                  torch_shape_str(want) + " (blocks of " + std::to_string(src.scale_block[1]) + " x " +
                  std::to_string(src.scale_block[0]) + "; quantization_config.weight_block_size)");
    src.scales.add(s->data, s->size, map_of(s));
  } else if (s) {
    return fail("has a scales tensor " + origin_of(s) + " but dtype " + st_dtype_name(w->dtype) + " takes none");
  }
  src.data.add(w->data, w->size, map_of(w));
  *out = std::move(src);
  return true;
}

bool same_ne(const int64_t* a, const int64_t* b) { return std::memcmp(a, b, 4 * sizeof(int64_t)) == 0; }

struct checkpoint_index {
  struct pair {
    const st_tensor* w = nullptr;
    const st_tensor* s = nullptr;
  };
  std::map<std::string, pair> plain;                    // canonical -> weight (+ scale)
  std::map<std::string, std::map<int64_t, pair>> experts;  // stacked canonical -> expert -> tensors
  std::map<std::string, const st_tensor*> gate_up;      // "layers.L.ffn.experts." -> fused [E, 2I, D]
  std::map<std::string, const st_tensor*> down;         // stacked w2 canonical -> fused [E, D, I]
  size_t dropped = 0;
  bool any_mtp = false;
};

bool index_checkpoint(const st_checkpoint& ck, checkpoint_index* ix, std::string* error) {
  for (const auto& [name, t] : ck.tensors()) {
    const source_name sn = map_source_name(name);
    auto dup = [&](const st_tensor* prev) {
      *error = "tensors " + origin_of(prev) + " and " + origin_of(t) + " both map to '" + sn.canonical +
               (sn.is_scale ? "' (scales)" : "'");
      return false;
    };
    if (sn.canonical.compare(0, 4, "mtp.") == 0) ix->any_mtp = true;
    switch (sn.kind) {
      case source_name::unknown:
        *error = "unexpected tensor " + origin_of(t) + ": not a DeepSeek-V4 tensor name";
        return false;
      case source_name::dropped:
        ++ix->dropped;
        break;
      case source_name::plain: {
        const st_tensor*& slot = sn.is_scale ? ix->plain[sn.canonical].s : ix->plain[sn.canonical].w;
        if (slot) return dup(slot);
        slot = t;
        break;
      }
      case source_name::expert: {
        auto& p = ix->experts[sn.canonical][sn.expert_index];
        const st_tensor*& slot = sn.is_scale ? p.s : p.w;
        if (slot) return dup(slot);
        slot = t;
        break;
      }
      case source_name::fused_gate_up:
        ix->gate_up[sn.canonical] = t;
        break;
      case source_name::fused_down:
        ix->down[sn.canonical] = t;
        break;
    }
  }
  return true;
}

// The stacked routed experts of one projection: from per-expert tensors or a fused tensor.
bool plan_experts(const expected_tensor& e, const hparams& hp, checkpoint_index& ix, std::set<const st_tensor*>* used,
                  tensor_source* out, std::string* error) {
  const int64_t E = hp.n_experts;
  const std::string layer = e.name.substr(0, e.name.size() - std::strlen("w1.weight"));  // "...ffn.experts."
  const bool is_w2 = e.name.compare(e.name.size() - 9, 9, "w2.weight") == 0;
  auto per = ix.experts.find(e.name);
  const st_tensor* fused = nullptr;
  if (is_w2) {
    auto it = ix.down.find(e.name);
    if (it != ix.down.end()) fused = it->second;
  } else {
    auto it = ix.gate_up.find(layer);
    if (it != ix.gate_up.end()) fused = it->second;
  }
  if (fused && per != ix.experts.end()) {
    *error = "tensor '" + e.name + "': both per-expert tensors and the fused " + origin_of(fused) + " are present";
    return false;
  }
  if (fused) {
    // transformers: gate_up_proj [E, 2I, D] (gate rows first, then up), down_proj [E, D, I].
    const int64_t D = hp.hidden_size, I = hp.moe_inter;
    const std::vector<int64_t> want = is_w2 ? std::vector<int64_t>{E, D, I} : std::vector<int64_t>{E, 2 * I, D};
    if (fused->shape != want) {
      *error = "tensor '" + e.name + "' (" + origin_of(fused) + "): shape " + torch_shape_str(fused->shape) +
               ", expected " + torch_shape_str(want);
      return false;
    }
    tensor_source src;
    if (!make_source(e.name, tensor_role::weight, fused, nullptr, hp, &src, error)) return false;
    if (!is_plain_float(src.type)) {
      *error = "tensor '" + e.name + "' (" + origin_of(fused) + "): fused experts must be F32, BF16 or F16";
      return false;
    }
    used->insert(fused);
    for (int i = 0; i < 4; ++i) src.ne[i] = e.ne[i];
    if (!is_w2) {
      const uint64_t es = row_size(src.type, D), mat = uint64_t(I) * es;
      const bool up = e.name.compare(e.name.size() - 9, 9, "w3.weight") == 0;
      src.data = byte_source();
      for (int64_t x = 0; x < E; ++x) src.data.add(fused->data + uint64_t(x) * 2 * mat + (up ? mat : 0), mat, map_of(fused));
    }
    *out = std::move(src);
    return true;
  }
  if (per == ix.experts.end()) {
    *error = "missing tensor '" + e.name + "': no routed experts (ffn.experts.{e}." + e.name.substr(e.name.size() - 9) +
             ") in the checkpoint";
    return false;
  }
  tensor_source all;
  for (int64_t x = 0; x < E; ++x) {
    auto it = per->second.find(x);
    const std::string ename = layer + std::to_string(x) + e.name.substr(e.name.size() - 10);
    if (it == per->second.end() || !it->second.w) {
      *error = "missing tensor '" + ename + "' (expert " + std::to_string(x) + " of " + std::to_string(E) + ")";
      return false;
    }
    tensor_source one;
    if (!make_source(ename, tensor_role::weight, it->second.w, it->second.s, hp, &one, error)) return false;
    if (one.ne[0] != e.ne[0] || one.ne[1] != e.ne[1] || one.ne[2] != 1) {
      *error = "tensor '" + ename + "' (" + one.origin + "): logical shape " + shape_str(one.ne, 2) + ", expected " +
               shape_str(e.ne, 2);
      return false;
    }
    if (x == 0) {
      all.type = one.type;
      all.scale_block[0] = one.scale_block[0];
      all.scale_block[1] = one.scale_block[1];
      all.origin = "'" + layer + "*' experts of " + it->second.w->file->path();
    } else if (one.type != all.type) {
      *error = "tensor '" + ename + "' (" + one.origin + "): type " + type_name(one.type) + " differs from expert 0 (" +
               type_name(all.type) + ")";
      return false;
    }
    for (const auto& p : one.data.pieces) all.data.add(p.p, p.n, p.map);
    for (const auto& p : one.scales.pieces) all.scales.add(p.p, p.n, p.map);
    used->insert(it->second.w);
    if (it->second.s) used->insert(it->second.s);
  }
  for (const auto& [x, p] : per->second)
    if (x < 0 || x >= E) {
      const st_tensor* t = p.w ? p.w : p.s;
      *error = "unexpected tensor " + origin_of(t) + ": expert " + std::to_string(x) + " but n_routed_experts = " +
               std::to_string(E);
      return false;
    }
  for (int i = 0; i < 4; ++i) all.ne[i] = e.ne[i];
  *out = std::move(all);
  return true;
}

}  // namespace

bool convert_checkpoint(const std::string& dir, const std::string& out_path, const convert_options& opt,
                        convert_stats* stats, std::string* error) {
  quant::register_types();
  convert_stats local;
  if (!stats) stats = &local;
  *stats = convert_stats();
  auto note = [&](const std::string& m) {
    if (opt.note) opt.note(m);
  };
  if (!valid_type(opt.type, true)) {
    *error = "unknown --type '" + opt.type + "' (one of: " + type_list(true) + ")";
    return false;
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *error = dir + ": no such checkpoint directory";
    return false;
  }
  const std::string cfg_path = dir + "/config.json";
  std::string cfg_text;
  if (!is_regular_file(cfg_path) || !read_whole_file(cfg_path, &cfg_text)) {
    *error = cfg_path + ": missing (a checkpoint directory needs config.json)";
    return false;
  }
  hparams hp;
  std::string err;
  if (!hparams_from_config_json(cfg_text, &hp, &err)) {
    *error = dir + "/" + err;
    return false;
  }
  if (hp.name.empty()) {
    std::string d = dir;
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    const size_t slash = d.find_last_of('/');
    hp.name = slash == std::string::npos ? d : d.substr(slash + 1);
  }
  std::unique_ptr<st_checkpoint> ck = st_checkpoint::open(dir, error);
  if (!ck) return false;

  checkpoint_index ix;
  if (!index_checkpoint(*ck, &ix, error)) return false;
  if (hp.n_mtp_layers > 0 && !ix.any_mtp) {
    note("config.json has " + std::to_string(hp.n_mtp_layers) +
         " MTP layer(s) but the checkpoint has no mtp.* tensors: converting without MTP");
    hp.n_mtp_layers = 0;
    hp.mtp_compress_ratios.clear();
  }

  // Plan every output tensor, checking names, shapes and dtypes before anything is written.
  std::vector<job> jobs;
  std::set<const st_tensor*> used;
  std::map<std::string, int> fallbacks;
  for (const expected_tensor& e : expected_tensors(hp)) {
    tensor_source src;
    const bool stacked = e.name.find(".ffn.experts.w") != std::string::npos;
    if (stacked) {
      if (!plan_experts(e, hp, ix, &used, &src, error)) return false;
    } else {
      auto it = ix.plain.find(e.name);
      if (it == ix.plain.end() || !it->second.w) {
        *error = "missing tensor '" + e.name + "' (expected " + role_name(e.role) + " of shape " +
                 shape_str(e.ne, e.n_dims) + ") in " + dir;
        if (it != ix.plain.end() && it->second.s) *error += " (only its scales " + origin_of(it->second.s) + " are there)";
        return false;
      }
      if (!make_source(e.name, e.role, it->second.w, it->second.s, hp, &src, error)) return false;
      if (!same_ne(src.ne, e.ne)) {
        *error = "tensor '" + e.name + "' (" + src.origin + "): shape " + torch_shape_str(it->second.w->shape) +
                 " (logical " + shape_str(src.ne, 4) + "), expected logical " + shape_str(e.ne, e.n_dims);
        return false;
      }
      used.insert(it->second.w);
      if (it->second.s) used.insert(it->second.s);
    }
    std::string fb;
    dtype target = src.type;
    if (e.role == tensor_role::weight) {
      target = choose_type(e.role, src.type, opt.type, e.ne[0], &fb);
    } else if (e.role == tensor_role::ids) {
      target = dtype::i32;
    } else if (!is_plain_float(src.type)) {
      target = dtype::f32;  // a param stored scaled: dequantize
    }
    if (!fb.empty()) ++fallbacks[fb];
    plan_output(e.name, e.role, e.n_dims, std::move(src), target, hp.weight_block, hp.n_experts, &jobs);
  }
  if (hp.tie_embeddings) {
    auto it = ix.plain.find("head.weight");
    if (it != ix.plain.end()) {
      used.insert(it->second.w);
      if (it->second.s) used.insert(it->second.s);
      note("tie_word_embeddings: head.weight is ignored (the runtime uses embed.weight)");
    }
  }
  for (const auto& [name, t] : ck->tensors()) {
    const source_name sn = map_source_name(name);
    if (sn.kind != source_name::dropped && !used.count(t)) {
      *error = "unexpected tensor " + origin_of(t) + " (maps to '" + sn.canonical + (sn.is_scale ? "' scales" : "'") +
               ", which this config does not use)";
      return false;
    }
  }
  if (ix.dropped) note("dropped " + std::to_string(ix.dropped) + " mtp.* embedding/head tensors (shared with the main model)");
  for (const auto& [what, n] : fallbacks) note("type fallback " + what + ": " + std::to_string(n) + " tensor(s)");

  // Tokenizer (optional).
  std::string tok_json, tok_cfg;
  const bool have_tok = read_whole_file(dir + "/tokenizer.json", &tok_json);
  if (have_tok) read_whole_file(dir + "/tokenizer_config.json", &tok_cfg);
  else note("no tokenizer.json: the model will run on token ids only");
#ifndef V4_HAVE_TOKENIZER
  if (have_tok) note("this build has no tokenizer support yet: tokenizer.json is not stored");
#endif

  auto write_meta = [&](file_writer& w, std::string* e) {
    if (!hparams_write(hp, w, e)) return false;
#ifdef V4_HAVE_TOKENIZER
    if (have_tok && !tokenizer_to_metadata(tok_json, tok_cfg, w, e)) {
      *e = dir + "/tokenizer.json: " + *e;
      return false;
    }
#endif
    return true;
  };
  return write_all(out_path, opt.force, jobs, write_meta, opt.threads, opt.progress, stats, error);
}

// ---- quantize ------------------------------------------------------------------------------------

bool parse_quantize_rule(const std::string& text, quantize_rule* rule, std::string* error) {
  const size_t eq = text.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
    *error = "--rule '" + text + "': expected REGEX=TYPE";
    return false;
  }
  quantize_rule r{text.substr(0, eq), text.substr(eq + 1)};
  if (r.type != "keep" && !valid_type(r.type, false)) {
    *error = "--rule '" + text + "': unknown type '" + r.type + "' (one of: keep, " + type_list(false) + ")";
    return false;
  }
  try {
    std::regex re(r.pattern);
  } catch (const std::regex_error& e) {
    *error = "--rule '" + text + "': bad regular expression: " + e.what();
    return false;
  }
  *rule = r;
  return true;
}

bool quantize_model(const std::string& in_path, const std::string& out_path, const quantize_options& opt,
                    convert_stats* stats, std::string* error) {
  quant::register_types();
  convert_stats local;
  if (!stats) stats = &local;
  *stats = convert_stats();
  if (!valid_type(opt.type, false)) {
    *error = "unknown --type '" + opt.type + "' (one of: " + type_list(false) + ")";
    return false;
  }
  std::vector<std::pair<std::regex, std::string>> rules;
  for (const quantize_rule& r : opt.rules) {
    quantize_rule checked;
    if (!parse_quantize_rule(r.pattern + "=" + r.type, &checked, error)) return false;
    rules.emplace_back(std::regex(r.pattern), r.type);
  }
  if (in_path == out_path) {
    *error = out_path + ": the output must differ from the input";
    return false;
  }
  std::unique_ptr<model_file> f = model_file::open(in_path, error);
  if (!f) return false;
  int32_t fp8_block[2] = {128, 128};
  {
    std::vector<uint8_t> raw;
    uint64_t n = 0;
    std::string ignore;
    if (f->get_array("deepseek_v4.weight_block", meta_type::i32, &raw, &n, &ignore) && n == 2)
      std::memcpy(fp8_block, raw.data(), 8);
    if (fp8_block[0] < 1 || fp8_block[1] < 1) fp8_block[0] = fp8_block[1] = 128;
  }

  // model_file::open maps the whole file; its first tensor's offset finds the mapping's base.
  mapping file_map;
  if (!f->tensors().empty()) {
    const tensor_entry& t0 = f->tensors()[0];
    file_map = {t0.data - t0.offset, f->file_size()};
  }
  std::set<std::string> scale_names;
  for (const tensor_entry& t : f->tensors())
    if (t.scales) scale_names.insert(t.d.scales);

  std::vector<job> jobs;
  std::map<std::string, int> fallbacks;
  for (const tensor_entry& t : f->tensors()) {
    if (scale_names.count(t.d.name)) continue;  // written with its weight
    tensor_source src;
    src.type = t.d.type;
    for (int i = 0; i < 4; ++i) src.ne[i] = t.d.ne[i];
    src.data.add(t.data, t.size, file_map);
    src.origin = "'" + t.d.name + "' in " + in_path;
    if (t.scales) {
      src.scales.add(t.scales->data, t.scales->size, file_map);
      src.scale_block[0] = t.d.scale_block[0];
      src.scale_block[1] = t.d.scale_block[1];
    }
    tensor_role role = role_of(t.d.name);
    const bool convertible = traits(t.d.type).to_f32 && t.d.type != dtype::e8m0 && !traits(t.d.type).is_int;
    if (role == tensor_role::ids || !convertible) {
      job j;  // ids (already i32), integer or e8m0 tensors: copied
      j.out = t.d;
      j.src = std::move(src);
      j.mode = job_mode::copy;
      jobs.push_back(std::move(j));
      continue;
    }
    std::string requested = role == tensor_role::weight ? opt.type : "keep";
    for (const auto& [re, type] : rules)
      if (std::regex_search(t.d.name, re)) {
        requested = type;
        break;
      }
    std::string fb;
    const dtype target = choose_type(tensor_role::weight, t.d.type, requested, t.d.ne[0], &fb);
    if (!fb.empty()) ++fallbacks[fb];
    plan_output(t.d.name, role, t.d.n_dims, std::move(src), target, fp8_block, 0, &jobs);
  }
  for (const auto& [what, n] : fallbacks)
    if (opt.note) opt.note("type fallback " + what + ": " + std::to_string(n) + " tensor(s)");

  // Metadata is copied unchanged (arrays need their 12-byte element head back).
  auto write_meta = [&](file_writer& w, std::string* e) {
    for (const auto& [key, v] : f->metadata()) {
      bool ok;
      if (v.type == meta_type::array) {
        std::vector<uint8_t> raw(12 + size_t(v.size));
        const uint32_t et = uint32_t(v.elem_type);
        std::memcpy(raw.data(), &et, 4);
        std::memcpy(raw.data() + 4, &v.count, 8);
        if (v.size) std::memcpy(raw.data() + 12, v.bytes, size_t(v.size));
        ok = w.set_raw(key, uint32_t(v.type), raw.data(), raw.size());
      } else {
        ok = w.set_raw(key, uint32_t(v.type), v.bytes, v.size);
      }
      if (!ok) {
        *e = w.error();
        return false;
      }
    }
    return true;
  };
  return write_all(out_path, opt.force, jobs, write_meta, opt.threads, opt.progress, stats, error);
}

}  // namespace v4::model

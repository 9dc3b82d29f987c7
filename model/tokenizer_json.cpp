// Reading a Hugging Face tokenizer.json (+ tokenizer_config.json) into a tokenizer_spec. Only what
// byte-level BPE tokenizers use is accepted; any other component is refused by name.
#include <nlohmann/json.hpp>

#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"

namespace v4::model {

namespace {

using json = nlohmann::json;

// ByteLevel(use_regex = true) splits with GPT-2's pattern before mapping bytes.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string type_of(const json& j) {
  if (!j.is_object()) return "(not an object)";
  const auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : "(no type)";
}

bool json_true(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

// A literal string as a regex (Split with {"String": ...}).
std::string regex_quote(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}-/#").find(c) != std::string_view::npos) r += '\\';
    r += c;
  }
  return r;
}

bool parse_normalizer(const json& n, std::string* error) {
  if (n.is_null()) return true;
  if (type_of(n) == "Sequence") {
    const auto it = n.find("normalizers");
    if (it == n.end() || !it->is_array()) return *error = "tokenizer.json: normalizer Sequence without a 'normalizers' list", false;
    for (const json& c : *it)
      if (!parse_normalizer(c, error)) return false;
    return true;
  }
  *error = "tokenizer.json: normalizer '" + type_of(n) +
           "' is not supported (byte-level BPE tokenizers use none or an empty Sequence)";
  return false;
}

bool parse_pre_tokenizer(const json& p, tokenizer_spec* spec, bool* byte_level, std::string* error) {
  const std::string type = type_of(p);
  if (type == "Sequence") {
    const auto it = p.find("pretokenizers");
    if (it == p.end() || !it->is_array()) return *error = "tokenizer.json: pre_tokenizer Sequence without 'pretokenizers'", false;
    for (const json& c : *it) {
      if (*byte_level)
        return *error = "tokenizer.json: pre_tokenizer '" + type_of(c) + "' after ByteLevel is not supported", false;
      if (!parse_pre_tokenizer(c, spec, byte_level, error)) return false;
    }
    return true;
  }
  if (type == "Split") {
    const std::string behavior = p.value("behavior", "");
    if (behavior != "Isolated")
      return *error = "tokenizer.json: pre_tokenizer Split with behavior '" + behavior + "' is not supported (only Isolated)", false;
    if (json_true(p, "invert")) return *error = "tokenizer.json: pre_tokenizer Split with invert = true is not supported", false;
    const auto pat = p.find("pattern");
    if (pat == p.end() || !pat->is_object()) return *error = "tokenizer.json: pre_tokenizer Split without a pattern", false;
    if (pat->contains("Regex") && (*pat)["Regex"].is_string()) {
      spec->pre_regexes.push_back((*pat)["Regex"].get<std::string>());
    } else if (pat->contains("String") && (*pat)["String"].is_string()) {
      spec->pre_regexes.push_back(regex_quote((*pat)["String"].get<std::string>()));
    } else {
      return *error = "tokenizer.json: pre_tokenizer Split pattern is neither {\"Regex\": ...} nor {\"String\": ...}", false;
    }
    return true;
  }
  if (type == "ByteLevel") {
    if (json_true(p, "add_prefix_space"))
      return *error = "tokenizer.json: pre_tokenizer ByteLevel with add_prefix_space = true is not supported", false;
    const auto ur = p.find("use_regex");
    if (ur == p.end() || (ur->is_boolean() && ur->get<bool>())) spec->pre_regexes.push_back(kGpt2Pattern);
    *byte_level = true;
    return true;
  }
  *error = "tokenizer.json: pre_tokenizer '" + type + "' is not supported (supported: Sequence, Split, ByteLevel)";
  return false;
}

// bos/eos in tokenizer_config.json: a string or an AddedToken object {"content": ...}.
std::string config_token(const json& cfg, const char* key) {
  const auto it = cfg.find(key);
  if (it == cfg.end()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  return {};
}

}  // namespace

bool tokenizer_spec_from_hf_json(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                                 tokenizer_spec* spec, std::string* error) {
  std::string err;
  if (!error) error = &err;
  const json j = json::parse(tokenizer_json.begin(), tokenizer_json.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return *error = "tokenizer.json: not valid JSON (truncated or not a tokenizer.json?)", false;

  const json& model = j.contains("model") ? j["model"] : json();
  if (type_of(model) != "BPE")
    return *error = "tokenizer.json: model type '" + type_of(model) + "' is not supported (only BPE)", false;
  if (json_true(model, "byte_fallback")) return *error = "tokenizer.json: BPE byte_fallback is not supported", false;
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"] != 0 && model["dropout"] != 1)
    return *error = "tokenizer.json: BPE dropout is not supported", false;
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(k) && model[k].is_string() && !model[k].get<std::string>().empty())
      return *error = std::string("tokenizer.json: BPE ") + k + " is not supported", false;
  spec->ignore_merges = json_true(model, "ignore_merges");

  // vocab: text -> id; ids may leave holes (filled by added tokens or unused).
  const auto vocab = model.find("vocab");
  if (vocab == model.end() || !vocab->is_object() || vocab->empty())
    return *error = "tokenizer.json: model.vocab is missing or empty", false;
  int64_t max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() >= INT32_MAX)
      return *error = "tokenizer.json: model.vocab['" + it.key() + "'] is not a valid id", false;
    max_id = std::max(max_id, it.value().get<int64_t>());
  }
  const json added = j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"] : json::array();
  for (const json& a : added) {
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
        !a["content"].is_string() || a["id"].get<int64_t>() < 0 || a["id"].get<int64_t>() >= INT32_MAX)
      return *error = "tokenizer.json: added_tokens entry " + a.dump().substr(0, 120) + " lacks a valid id/content", false;
    max_id = std::max(max_id, a["id"].get<int64_t>());
  }
  const size_t n = size_t(max_id + 1);
  if (n > size_t(vocab->size() + added.size()) * 4 + 1024)
    return *error = "tokenizer.json: ids up to " + std::to_string(max_id) + " for " +
                    std::to_string(vocab->size() + added.size()) + " tokens: the id space is mostly empty", false;
  spec->tokens.assign(n, {});
  spec->flags.assign(n, 0);
  string_map<int32_t> vocab_ids;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const int32_t id = int32_t(it.value().get<int64_t>());
    if (spec->flags[id])
      return *error = "tokenizer.json: model.vocab ids '" + it.key() + "' and '" + spec->tokens[id] + "' are both " +
                      std::to_string(id), false;
    spec->tokens[id] = it.key();
    spec->flags[id] = tokenizer_spec::in_vocab;
    vocab_ids.emplace(it.key(), id);
  }
  for (const json& a : added) {
    const int32_t id = int32_t(a["id"].get<int64_t>());
    const std::string content = a["content"].get<std::string>();
    for (const char* k : {"lstrip", "rstrip", "single_word"})
      if (json_true(a, k))
        return *error = "tokenizer.json: added token '" + content + "' has " + k + " = true, which is not supported", false;
    if (spec->flags[id] & tokenizer_spec::added)
      return *error = "tokenizer.json: two added tokens have id " + std::to_string(id), false;
    if ((spec->flags[id] & tokenizer_spec::in_vocab) && spec->tokens[id] != content)
      return *error = "tokenizer.json: added token '" + content + "' has id " + std::to_string(id) +
                      ", which the vocab gives to '" + spec->tokens[id] + "'", false;
    spec->tokens[id] = content;
    spec->flags[id] |= tokenizer_spec::added;
    if (json_true(a, "special")) spec->flags[id] |= tokenizer_spec::special;
    if (json_true(a, "normalized")) spec->flags[id] |= tokenizer_spec::normalized;
  }

  // merges: "left right" strings (older files) or [left, right] pairs (tokenizers >= 0.20).
  const auto merges = model.find("merges");
  if (merges == model.end() || !merges->is_array()) return *error = "tokenizer.json: model.merges is missing", false;
  spec->merges.reserve(merges->size() * 2);
  for (size_t r = 0; r < merges->size(); ++r) {
    const json& m = (*merges)[r];
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        return *error = "tokenizer.json: merge " + std::to_string(r) + " '" + s + "' is not 'left right'", false;
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>(), b = m[1].get<std::string>();
    } else {
      return *error = "tokenizer.json: merge " + std::to_string(r) + " is neither a string nor a pair", false;
    }
    for (const std::string* x : {&a, &b}) {
      const auto it = vocab_ids.find(*x);
      if (it == vocab_ids.end())
        return *error = "tokenizer.json: merge " + std::to_string(r) + " ('" + a + "' + '" + b + "') uses '" + *x +
                        "', which is not in model.vocab", false;
      spec->merges.push_back(it->second);
    }
  }

  if (!parse_normalizer(j.contains("normalizer") ? j["normalizer"] : json(), error)) return false;
  bool byte_level = false;
  if (!j.contains("pre_tokenizer") || j["pre_tokenizer"].is_null())
    return *error = "tokenizer.json: no pre_tokenizer: only byte-level BPE (ByteLevel pre-tokenizer) is supported", false;
  if (!parse_pre_tokenizer(j["pre_tokenizer"], spec, &byte_level, error)) return false;
  if (!byte_level) return *error = "tokenizer.json: the pre_tokenizer has no ByteLevel step: only byte-level BPE is supported", false;
  const json& dec = j.contains("decoder") ? j["decoder"] : json();
  if (type_of(dec) != "ByteLevel")
    return *error = "tokenizer.json: decoder '" + type_of(dec) + "' is not supported (only ByteLevel)", false;
  if (j.contains("post_processor") && !j["post_processor"].is_null()) {
    const std::string pp = type_of(j["post_processor"]);
    // encode() never adds special tokens (HF add_special_tokens = False), so a post-processor
    // that only adds them or fixes offsets changes nothing here.
    if (pp != "ByteLevel" && pp != "TemplateProcessing")
      return *error = "tokenizer.json: post_processor '" + pp + "' is not supported", false;
  }

  spec->bos_id = spec->eos_id = -1;
  if (!tokenizer_config_json.empty()) {
    const json cfg = json::parse(tokenizer_config_json.begin(), tokenizer_config_json.end(), nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object()) return *error = "tokenizer_config.json: not valid JSON", false;
    for (auto [key, out] : {std::pair{"bos_token", &spec->bos_id}, std::pair{"eos_token", &spec->eos_id}}) {
      const std::string text = config_token(cfg, key);
      if (text.empty()) continue;
      int32_t id = -1;
      for (size_t i = 0; i < n && id < 0; ++i)
        if (spec->flags[i] && spec->tokens[i] == text) id = int32_t(i);
      if (id < 0) return *error = std::string("tokenizer_config.json: ") + key + " '" + text + "' is not a token", false;
      *out = id;
    }
    if (cfg.contains("chat_template")) {
      const json& ct = cfg["chat_template"];
      if (ct.is_string()) spec->chat_template = ct.get<std::string>();
      else if (!ct.is_null()) return *error = "tokenizer_config.json: chat_template is not a string (named templates are not supported)", false;
    }
  }
  return true;
}

std::unique_ptr<tokenizer> tokenizer::from_hf_json(std::string_view tokenizer_json,
                                                   std::string_view tokenizer_config_json, std::string* error) {
  tokenizer_spec spec;
  if (!tokenizer_spec_from_hf_json(tokenizer_json, tokenizer_config_json, &spec, error)) return nullptr;
  return from_spec(std::move(spec), error);
}

}  // namespace v4::model

// The tokenizer in a model file: the tokenizer.* metadata keys (docs/TOKENIZER.md) are the
// fields of tokenizer_spec, written by `v4 convert` and read back (then validated by from_spec).
#include <cstring>

#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"
#include "model/v4file.h"

namespace v4::model {

namespace {

constexpr const char* kModelKind = "bpe_byte_level";

bool write_spec(const tokenizer_spec& s, file_writer& w, std::string* error) {
  const bool ok = w.set_string("tokenizer.model", kModelKind) &&
                  w.set_array_strings("tokenizer.tokens", s.tokens) &&
                  w.set_array("tokenizer.token_flags", meta_type::u8, s.flags.data(), s.flags.size()) &&
                  w.set_array("tokenizer.merges", meta_type::i32, s.merges.data(), s.merges.size()) &&
                  w.set_array_strings("tokenizer.pre_regexes", s.pre_regexes) &&
                  w.set_bool("tokenizer.ignore_merges", s.ignore_merges) &&
                  w.set_i32("tokenizer.bos_id", s.bos_id) && w.set_i32("tokenizer.eos_id", s.eos_id) &&
                  w.set_string("tokenizer.chat_template", s.chat_template);
  if (!ok && error) *error = "writing the tokenizer metadata: " + w.error();
  return ok;
}

}  // namespace

bool tokenizer_to_metadata(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                           file_writer& w, std::string* error) {
  tokenizer_spec spec;
  if (!tokenizer_spec_from_hf_json(tokenizer_json, tokenizer_config_json, &spec, error)) return false;
  // Build it once so that a tokenizer that would not load (bad regex, bad merge) is refused at
  // conversion time, not when the model file is opened.
  if (!tokenizer::from_spec(spec, error)) return false;
  return write_spec(spec, w, error);
}

std::unique_ptr<tokenizer> tokenizer::from_file(const model_file& f, std::string* error) {
  std::string err;
  if (!error) error = &err;
  if (!f.find_meta("tokenizer.tokens")) {
    *error = "no tokenizer in this model file: convert with tokenizer.json present";
    return nullptr;
  }
  auto fail = [&](const std::string& what) -> std::unique_ptr<tokenizer> {
    *error = "model file tokenizer metadata: " + what;
    return nullptr;
  };
  tokenizer_spec s;
  std::string kind;
  if (!f.get_string("tokenizer.model", &kind, error)) return fail(*error);
  if (kind != kModelKind) return fail("tokenizer.model '" + kind + "' is not supported (this reader knows '" + kModelKind + "')");
  if (!f.get_array_strings("tokenizer.tokens", &s.tokens, error)) return fail(*error);
  std::vector<uint8_t> raw;
  uint64_t count = 0;
  if (!f.get_array("tokenizer.token_flags", meta_type::u8, &raw, &count, error)) return fail(*error);
  s.flags.assign(raw.begin(), raw.begin() + count);
  if (!f.get_array("tokenizer.merges", meta_type::i32, &raw, &count, error)) return fail(*error);
  s.merges.resize(count);
  if (count) std::memcpy(s.merges.data(), raw.data(), count * sizeof(int32_t));
  if (!f.get_array_strings("tokenizer.pre_regexes", &s.pre_regexes, error)) return fail(*error);
  if (!f.get_bool("tokenizer.ignore_merges", &s.ignore_merges, error)) return fail(*error);
  if (!f.get_i32("tokenizer.bos_id", &s.bos_id, error)) return fail(*error);
  if (!f.get_i32("tokenizer.eos_id", &s.eos_id, error)) return fail(*error);
  if (!f.get_string("tokenizer.chat_template", &s.chat_template, error)) return fail(*error);
  auto t = from_spec(std::move(s), error);
  if (!t) return fail(*error);
  return t;
}

}  // namespace v4::model

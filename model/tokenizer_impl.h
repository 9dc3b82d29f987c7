// Internal to model/tokenizer*.cpp: the loaded tokenizer's tables and the byte-level alphabet.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model/tokenizer.h"

struct pcre2_real_code_8;

namespace v4::model {

// GPT-2's byte-level alphabet: every byte is one printable code point (33..126, 161..172 and
// 174..255 stand for themselves, the other 68 bytes are U+0100.. in byte order).
uint32_t byte_to_codepoint(uint8_t b);
// The bytes a byte-level token text stands for; false if a character is outside the alphabet.
bool byte_level_decode(std::string_view text, std::string* bytes);
// Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 if the bytes there are invalid
// or incomplete.
size_t utf8_sequence_length(const unsigned char* s, size_t n);

struct string_hash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using string_map = std::unordered_map<std::string, V, string_hash, std::equal_to<>>;

// Added tokens, matched leftmost-longest (HF uses Aho-Corasick with that match kind).
struct token_trie {
  struct match {
    size_t begin = 0, end = 0;
    int32_t id = -1;
  };
  void add(std::string_view text, int32_t id);
  bool empty() const { return ids_.size() <= 1; }
  // The longest token starting at s[at], if any.
  bool longest_at(std::string_view s, size_t at, match* m) const;

 private:
  std::unordered_map<uint64_t, int32_t> next_;  // (node << 8 | byte) -> node
  std::vector<int32_t> ids_ = {-1};             // node -> token id ending there, or -1
  bool first_[256] = {};
};

struct merge_rule {
  int32_t rank = 0;
  int32_t result = 0;
};

// tokenizer.json (+ tokenizer_config.json, may be empty) -> spec; false and *error on anything
// that is malformed or not supported (tokenizer_json.cpp).
bool tokenizer_spec_from_hf_json(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                                 tokenizer_spec* spec, std::string* error);

struct tokenizer_impl {
  tokenizer_spec spec;
  std::vector<std::string> bytes;        // id -> the bytes the token stands for
  string_map<int32_t> text_to_id;        // token text -> id
  string_map<int32_t> vocab_bytes;       // BPE vocab: bytes -> id (for ignore_merges)
  int32_t byte_id[256] = {};             // the BPE token of each single byte
  std::unordered_map<uint64_t, merge_rule> merges;  // (left << 32 | right) -> rule
  std::vector<pcre2_real_code_8*> regexes;
  token_trie raw_trie, normalized_trie;  // added tokens: not normalized / normalized
  uint64_t serial = 0;                   // identifies this tokenizer in per-thread state

  ~tokenizer_impl();
};

}  // namespace v4::model

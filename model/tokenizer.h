// The DeepSeek-V4 tokenizer: byte-level BPE exactly as Hugging Face `tokenizers` runs a
// `tokenizer.json` of that kind (DeepSeek-V3/V4, or a ByteLevel BPE trained with `tokenizers`).
// docs/TOKENIZER.md describes the pipeline, the metadata keys and our rules for invalid UTF-8.
//
//   text --added tokens (leftmost-longest)--> pieces --Split regexes (PCRE2)--> words
//        --bytes--> BPE merges by rank (cached) --> ids
//
// encode(text, parse_special = false) is HF's `encode_special_tokens = True`: special added
// tokens are plain text, non-special added tokens are still matched (as HF does). Invalid UTF-8
// never reaches the regexes: each invalid byte is a word of its own (so decode(encode(x)) == x
// for any bytes). The object is immutable after loading; encode/decode are thread-safe (each
// thread has its own regex match data and BPE cache).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace v4::model {

class file_writer;
class model_file;
struct tokenizer_impl;

// What a tokenizer is, independent of where it came from (tokenizer.json or a model file); the
// tokenizer.* metadata keys store exactly these fields (docs/TOKENIZER.md).
struct tokenizer_spec {
  enum flag : uint8_t {
    in_vocab = 1,    // a token of the BPE model's vocab (merges may produce or use it)
    added = 2,       // an added token: matched in the text before pre-tokenization
    special = 4,     // added and special (parse_special = false leaves it as text)
    normalized = 8,  // added, matched after normalization (a second pass, as HF)
  };
  static constexpr uint8_t kAllFlags = in_vocab | added | special | normalized;

  std::vector<std::string> tokens;       // by id, as written in tokenizer.json; "" = unused id
  std::vector<uint8_t> flags;            // by id: flag bits (0 = unused id)
  std::vector<int32_t> merges;           // (left id, right id) pairs in rank order
  std::vector<std::string> pre_regexes;  // Split(Isolated) patterns, applied in order
  bool ignore_merges = false;            // BPE: a word that is itself a token skips the merges
  int32_t bos_id = -1, eos_id = -1;
  std::string chat_template;
};

class tokenizer {
 public:
  ~tokenizer();
  tokenizer(const tokenizer&) = delete;
  tokenizer& operator=(const tokenizer&) = delete;

  // From the text of a HF tokenizer.json (and optionally tokenizer_config.json, for bos/eos and
  // the chat template). nullptr and *error naming the key or component that is wrong.
  static std::unique_ptr<tokenizer> from_hf_json(std::string_view tokenizer_json,
                                                 std::string_view tokenizer_config_json,
                                                 std::string* error);
  // From the tokenizer.* metadata of a model file (docs/TOKENIZER.md), fully validated.
  static std::unique_ptr<tokenizer> from_file(const model_file& f, std::string* error);
  // From a spec (both loaders end here; validates everything).
  static std::unique_ptr<tokenizer> from_spec(tokenizer_spec spec, std::string* error);

  // Appends the ids of text to *ids. False only for internal failures (a regex engine error),
  // with *error; any byte string is valid input.
  bool encode(std::string_view text, bool parse_special, std::vector<int32_t>* ids,
              std::string* error) const;
  // The bytes of the tokens, concatenated (may be invalid UTF-8 if the ids are). Ids out of
  // range or unused are skipped; skip_special drops special added tokens.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // The bytes one token stands for ("" for an id out of range or unused).
  std::string_view token_bytes(int32_t id) const;

  // Streaming decode: push ids one by one, get back only complete UTF-8. Bytes that can never
  // become valid UTF-8 come out as U+FFFD; flush() ends the stream (an incomplete tail -> U+FFFD).
  class stream_decoder {
   public:
    explicit stream_decoder(const tokenizer& t, bool skip_special = false)
        : tok_(t), skip_special_(skip_special) {}
    std::string push(int32_t id);
    std::string flush();

   private:
    const tokenizer& tok_;
    bool skip_special_;
    std::string pending_;  // at most 3 bytes of an incomplete UTF-8 sequence
  };

  int32_t n_vocab() const;  // 1 + the largest id
  int32_t bos_id() const;   // -1 when the files name none
  int32_t eos_id() const;
  bool is_special(int32_t id) const;
  // The token as written in tokenizer.json (byte-level characters for BPE tokens); "" if none.
  std::string token_text(int32_t id) const;
  int32_t token_id(std::string_view text) const;  // -1 if no token has this text
  const std::string& chat_template() const;        // tokenizer_config.json's, "" if none
  const tokenizer_spec& spec() const;

 private:
  tokenizer();
  std::unique_ptr<tokenizer_impl> impl_;
};

// Writes the tokenizer.* metadata keys for a model file (used by `v4 convert`).
bool tokenizer_to_metadata(std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                           file_writer& w, std::string* error);

}  // namespace v4::model

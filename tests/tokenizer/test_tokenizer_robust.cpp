// Malformed tokenizer files, arbitrary bytes, streaming decode, and the model-file round trip.
#include <unistd.h>

#include <cstdio>
#include <random>

#include "model/v4file.h"
#include "tests/tokenizer/tok_data.h"

namespace v4::model::testing {
namespace {

using json = nlohmann::ordered_json;

std::string small_json() { return read_data("small_bpe.json"); }

// from_hf_json must fail with an error containing `needle`.
void expect_load_error(const std::string& tokenizer_json, const std::string& needle, const std::string& config = "") {
  std::string error;
  EXPECT_FALSE(tokenizer::from_hf_json(tokenizer_json, config, &error)) << needle;
  EXPECT_NE(error.find(needle), std::string::npos) << "error was: " << error;
}

TEST(TokenizerRobust, MalformedJsonGivesClearErrors) {
  const std::string good = small_json();
  ASSERT_FALSE(good.empty());
  std::string error;
  ASSERT_TRUE(tokenizer::from_hf_json(good, "", &error)) << error;

  expect_load_error(good.substr(0, good.size() / 2), "not valid JSON");
  expect_load_error("", "not valid JSON");

  json j = json::parse(good);
  auto edited = [&](auto&& f) {
    json k = j;
    f(k);
    return k.dump();
  };
  expect_load_error(edited([](json& k) { k["model"].erase("vocab"); }), "model.vocab is missing");
  expect_load_error(edited([](json& k) { k["model"]["vocab"] = json::object(); }), "model.vocab is missing or empty");
  expect_load_error(edited([](json& k) { k["model"]["type"] = "Unigram"; }), "model type 'Unigram' is not supported");
  expect_load_error(edited([](json& k) { k["model"]["merges"].push_back(json::array({"Ġ", "zzzunknown"})); }),
                    "'zzzunknown', which is not in model.vocab");
  expect_load_error(edited([](json& k) { k["model"]["merges"].push_back("onlyone"); }), "is not 'left right'");
  expect_load_error(edited([](json& k) { k["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "[a-"; }),
                    "does not compile");
  expect_load_error(edited([](json& k) { k["normalizer"] = {{"type", "NFKC"}}; }), "normalizer 'NFKC' is not supported");
  expect_load_error(edited([](json& k) { k["decoder"] = {{"type", "WordPiece"}}; }), "decoder 'WordPiece' is not supported");
  expect_load_error(edited([](json& k) { k["pre_tokenizer"] = {{"type", "Whitespace"}}; }),
                    "pre_tokenizer 'Whitespace' is not supported");
  expect_load_error(edited([](json& k) { k["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; }),
                    "behavior 'Removed'");
  expect_load_error(edited([](json& k) { k["added_tokens"][0]["lstrip"] = true; }), "lstrip = true");
  expect_load_error(edited([](json& k) { k["added_tokens"][0]["id"] = 5; }), "which the vocab gives to");
  expect_load_error(edited([](json& k) { k["model"]["vocab"]["Ā"] = 999999; }), "id space is mostly empty");
  expect_load_error(edited([](json& k) { k["model"]["vocab"].erase("Ġ"); }), "uses 'Ġ', which is not in model.vocab");
  expect_load_error(edited([](json& k) { k["model"]["vocab"].erase("Ā"); }), "no token for byte 0x00");
  // A merge whose result is missing from the vocab.
  expect_load_error(edited([](json& k) { k["model"]["merges"].push_back(json::array({"Ā", "ā"})); }),
                    "the merged token is not in the vocab");
  expect_load_error(good, "bos_token 'nope' is not a token", R"({"bos_token": "nope"})");
  expect_load_error(good, "tokenizer_config.json: not valid JSON", "{");
}

TEST(TokenizerRobust, ArbitraryBytesRoundTrip) {
  const tokenizer* t = v4_tokenizer();
  ASSERT_TRUE(t);
  std::mt19937_64 rng(42);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) {
      // Bias toward UTF-8 lead/continuation bytes and tokens' first bytes.
      const uint64_t r = rng();
      c = char(r % 4 == 0 ? 0x80 + (r >> 8) % 64 : r % 4 == 1 ? 0xC0 + (r >> 8) % 64 : (r >> 8) % 256);
    }
    if (iter % 5 == 0) s += "<｜User｜>\xE4\xBD<think>\xFF";
    for (bool special : {true, false}) {
      const std::vector<int32_t> ids = encode(*t, s, special);
      ASSERT_EQ(t->decode(ids), s) << "iteration " << iter;
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t->n_vocab());
    }
  }
  // Invalid bytes are isolated: the valid text around them encodes as it would alone.
  const std::vector<int32_t> hello = encode(*t, "Hello"), hello_ff = encode(*t, "Hello\xFF");
  ASSERT_EQ(hello_ff.size(), hello.size() + 1);
  EXPECT_TRUE(std::equal(hello.begin(), hello.end(), hello_ff.begin()));
  EXPECT_EQ(t->token_bytes(hello_ff.back()), "\xFF");
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = s[i];
    size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = cp << 6 | (s[i + k] & 0x3F);
    }
    const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

TEST(TokenizerRobust, StreamDecoderEmitsOnlyCompleteUtf8) {
  const tokenizer* t = v4_tokenizer();
  ASSERT_TRUE(t);
  // Valid text: streaming reproduces it exactly, whatever the token boundaries.
  const std::string text = "Emoji 👨‍👩‍👧‍👦 and 中文 and العربية: ∑ x² ✓ <｜User｜>";
  const std::vector<int32_t> ids = encode(*t, text);
  tokenizer::stream_decoder sd(*t);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = sd.push(id);
    EXPECT_TRUE(valid_utf8(piece)) << "after id " << id;
    out += piece;
  }
  out += sd.flush();
  EXPECT_EQ(out, text);
  // Byte tokens split a character: nothing comes out until it is complete.
  const int32_t e4 = encode(*t, "\xE4")[0], bd = encode(*t, "\xBD")[0], a0 = encode(*t, "\xA0")[0];
  tokenizer::stream_decoder s2(*t);
  EXPECT_EQ(s2.push(e4), "");
  EXPECT_EQ(s2.push(bd), "");
  EXPECT_EQ(s2.push(a0), "你");
  // Random ids: every piece is valid UTF-8, and broken bytes come out as U+FFFD.
  std::mt19937 rng(7);
  tokenizer::stream_decoder s3(*t);
  for (int i = 0; i < 20000; ++i) {
    const int32_t id = int32_t(rng() % 300);  // mostly single bytes and short tokens
    const std::string piece = s3.push(id);
    ASSERT_TRUE(valid_utf8(piece)) << "after id " << id;
  }
  EXPECT_TRUE(valid_utf8(s3.flush()));
  tokenizer::stream_decoder s4(*t);
  EXPECT_EQ(s4.push(encode(*t, "\xFF")[0]), "\xEF\xBF\xBD");
  EXPECT_EQ(s4.push(e4), "");
  EXPECT_EQ(s4.flush(), "\xEF\xBF\xBD");
  // skip_special leaves special tokens out.
  tokenizer::stream_decoder s5(*t, true);
  EXPECT_EQ(s5.push(0), "");
  EXPECT_EQ(s5.push(128821), "<think>");
}

std::string temp_file(const std::string& stem) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir && *dir ? dir : "/tmp") + "/v4tok_test_" + stem + "_" + std::to_string(::getpid()) + ".v4";
}

TEST(TokenizerModelFile, RoundTripGivesIdenticalIds) {
  const tokenizer* t = v4_tokenizer();
  ASSERT_TRUE(t);
  const std::string path = temp_file("roundtrip");
  {
    file_writer w;
    ASSERT_TRUE(w.open(path)) << w.error();
    std::string error;
    ASSERT_TRUE(tokenizer_to_metadata(v4_json(), v4_config(), w, &error)) << error;
    ASSERT_TRUE(w.finish()) << w.error();
  }
  std::string error;
  auto f = model_file::open(path, &error);
  ASSERT_TRUE(f) << error;
  auto t2 = tokenizer::from_file(*f, &error);
  ASSERT_TRUE(t2) << error;
  std::remove(path.c_str());
  EXPECT_EQ(t2->n_vocab(), t->n_vocab());
  EXPECT_EQ(t2->bos_id(), 0);
  EXPECT_EQ(t2->eos_id(), 1);
  const auto corpus = read_goldens("corpus_v4.jsonl.zst");
  ASSERT_GE(corpus.size(), 10000u);
  size_t bad = 0;
  for (const golden& g : corpus) {
    bad += encode(*t2, g.text, true) != g.ids || encode(*t2, g.text, false) != g.ids_nospecial;
  }
  EXPECT_EQ(bad, 0u);
}

TEST(TokenizerModelFile, MissingAndCorruptMetadata) {
  const std::string path = temp_file("bad");
  auto write = [&](auto&& fill) {
    file_writer w;
    EXPECT_TRUE(w.open(path)) << w.error();
    fill(w);
    EXPECT_TRUE(w.finish()) << w.error();
  };
  std::string error;
  write([](file_writer& w) { w.set_u32("v4.n_layers", 1); });
  auto f = model_file::open(path, &error);
  ASSERT_TRUE(f) << error;
  EXPECT_FALSE(tokenizer::from_file(*f, &error));
  EXPECT_EQ(error, "no tokenizer in this model file: convert with tokenizer.json present");

  // A valid spec written by hand, then broken one field at a time.
  std::string json_error;
  auto small = tokenizer::from_hf_json(small_json(), "", &json_error);
  ASSERT_TRUE(small) << json_error;
  const tokenizer_spec good = small->spec();
  auto write_spec = [&](const tokenizer_spec& s, const char* kind) {
    write([&](file_writer& w) {
      w.set_string("tokenizer.model", kind);
      w.set_array_strings("tokenizer.tokens", s.tokens);
      w.set_array("tokenizer.token_flags", meta_type::u8, s.flags.data(), s.flags.size());
      w.set_array("tokenizer.merges", meta_type::i32, s.merges.data(), s.merges.size());
      w.set_array_strings("tokenizer.pre_regexes", s.pre_regexes);
      w.set_bool("tokenizer.ignore_merges", s.ignore_merges);
      w.set_i32("tokenizer.bos_id", s.bos_id);
      w.set_i32("tokenizer.eos_id", s.eos_id);
      w.set_string("tokenizer.chat_template", s.chat_template);
    });
  };
  auto expect_error = [&](const tokenizer_spec& s, const std::string& needle, const char* kind = "bpe_byte_level") {
    write_spec(s, kind);
    std::string e;
    auto file = model_file::open(path, &e);
    ASSERT_TRUE(file) << e;
    EXPECT_FALSE(tokenizer::from_file(*file, &e)) << needle;
    EXPECT_NE(e.find(needle), std::string::npos) << "error was: " << e;
  };
  write_spec(good, "bpe_byte_level");
  f = model_file::open(path, &error);
  ASSERT_TRUE(f && tokenizer::from_file(*f, &error)) << error;

  expect_error(good, "tokenizer.model 'sentencepiece' is not supported", "sentencepiece");
  tokenizer_spec s = good;
  s.merges[5] = 100000;
  expect_error(s, "merge 2: id 100000 is not a BPE vocab token");
  s = good;
  s.tokens[300] = s.tokens[301];
  expect_error(s, "duplicate token");
  s = good;
  s.pre_regexes[0] = "(unclosed";
  expect_error(s, "does not compile");
  s = good;
  s.flags.pop_back();
  expect_error(s, "token flags for");
  s = good;
  s.eos_id = 123456;
  expect_error(s, "bos/eos id 123456 is not a token");
  s = good;
  s.flags[7] = 0x80;
  expect_error(s, "unknown flag bits");
  s = good;
  s.merges.push_back(s.merges[0]);
  s.merges.push_back(s.merges[1]);
  expect_error(s, "duplicate merge");
  std::remove(path.c_str());
}

}  // namespace
}  // namespace v4::model::testing

#include <thread>

namespace v4::model::testing {
namespace {

// encode is const and keeps per-thread state: threads encoding at once get the same ids.
TEST(TokenizerRobust, ConcurrentEncodeMatches) {
  const tokenizer* t = v4_tokenizer();
  ASSERT_TRUE(t);
  const auto corpus = read_goldens("corpus_v4.jsonl.zst");
  ASSERT_GE(corpus.size(), 2000u);
  std::vector<size_t> bad(4, 0);
  std::vector<std::thread> threads;
  for (size_t k = 0; k < bad.size(); ++k)
    threads.emplace_back([&, k] {
      for (size_t i = k; i < 2000; i += 2) {
        std::vector<int32_t> ids;
        std::string error;
        if (!t->encode(corpus[i].text, true, &ids, &error) || ids != corpus[i].ids) ++bad[k];
      }
    });
  for (auto& th : threads) th.join();
  for (size_t k = 0; k < bad.size(); ++k) EXPECT_EQ(bad[k], 0u) << "thread " << k;
}

}  // namespace
}  // namespace v4::model::testing

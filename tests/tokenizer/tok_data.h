// Shared by the tokenizer tests: committed test data (zstd-compressed goldens) and the loaded
// tokenizers, each read once per test binary.
#pragma once

#include <gtest/gtest.h>
#include <zstd.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace v4::model::testing {

inline std::string data_path(const std::string& name) { return std::string(V4_TEST_DATA_DIR) + "/tokenizer/" + name; }

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A file, decompressed when its name ends in .zst ("" if missing or damaged: the test then fails).
inline std::string read_data(const std::string& name) {
  const std::string raw = read_file(data_path(name));
  if (name.size() < 4 || name.substr(name.size() - 4) != ".zst") return raw;
  const unsigned long long n = ZSTD_getFrameContentSize(raw.data(), raw.size());
  if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN) return {};
  std::string out(n, '\0');
  const size_t got = ZSTD_decompress(out.data(), out.size(), raw.data(), raw.size());
  if (ZSTD_isError(got) || got != n) return {};
  return out;
}

struct golden {
  std::string text;
  std::vector<int32_t> ids, ids_nospecial;  // ids_nospecial: encode with parse_special = false
};

inline std::vector<golden> read_goldens(const std::string& name) {
  std::vector<golden> out;
  const std::string all = read_data(name);
  size_t p = 0;
  while (p < all.size()) {
    size_t e = all.find('\n', p);
    if (e == std::string::npos) e = all.size();
    const auto j = nlohmann::json::parse(all.substr(p, e - p));
    golden g{j["text"].get<std::string>(), j["ids"].get<std::vector<int32_t>>(), {}};
    g.ids_nospecial = j.contains("ids_nospecial") ? j["ids_nospecial"].get<std::vector<int32_t>>() : g.ids;
    out.push_back(std::move(g));
    p = e + 1;
  }
  return out;
}

inline const std::string& v4_json() {
  static const std::string s = read_data("v4_tokenizer.json.zst");
  return s;
}
inline const std::string& v4_config() {
  static const std::string s = read_data("v4_tokenizer_config.json");
  return s;
}

// The official DeepSeek-V4 tokenizer (nullptr and a failed assertion if it does not load).
inline const tokenizer* v4_tokenizer() {
  static std::string error;
  static const std::unique_ptr<tokenizer> t = tokenizer::from_hf_json(v4_json(), v4_config(), &error);
  EXPECT_TRUE(t) << error;
  return t.get();
}

inline std::vector<int32_t> encode(const tokenizer& t, std::string_view s, bool parse_special = true) {
  std::vector<int32_t> ids;
  std::string error;
  EXPECT_TRUE(t.encode(s, parse_special, &ids, &error)) << error;
  return ids;
}

inline std::string show(const std::vector<int32_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace v4::model::testing

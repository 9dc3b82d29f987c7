// Shared by the convert tests: test data paths, a scratch directory, checkpoint mutation
// (rewrite a safetensors header or config.json), FNV-1a (the hash make_checkpoints.py writes).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace v4::model::testing {

namespace fs = std::filesystem;
using json = nlohmann::json;

inline std::string data_dir(const std::string& sub) { return std::string(V4_TEST_DATA_DIR) + "/convert/" + sub; }

inline uint64_t fnv1a(const void* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  const uint8_t* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}
inline std::string hex64(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
inline void write_text(const std::string& path, const std::string& s) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(s.data(), std::streamsize(s.size()));
}

// A fresh scratch directory per test, removed at the end.
class scratch {
 public:
  scratch() {
    const char* t = std::getenv("TMPDIR");
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string id = std::string(info->test_suite_name()) + "_" + info->name();
    for (char& c : id)
      if (c == '/') c = '_';  // parameterized tests: "Suite/Test/0"
    dir_ = std::string(t && *t ? t : "/tmp") + "/v4conv_" + id + "_" + std::to_string(::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  ~scratch() { fs::remove_all(dir_); }
  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  // A copy of a test checkpoint that a test may change.
  std::string copy_of(const std::string& sub) const {
    const std::string d = path(sub);
    fs::copy(data_dir(sub), d, fs::copy_options::recursive);
    for (const auto& e : fs::directory_iterator(d))
      fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
    return d;
  }

 private:
  std::string dir_;
};

// Parses a safetensors file's header, lets `edit` change it, and writes the file back with the
// same data section (offsets are relative to the data, so they stay valid).
inline void edit_safetensors(const std::string& path, const std::function<void(json&)>& edit) {
  const std::string b = read_text(path);
  uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  json h = json::parse(b.substr(8, size_t(n)));
  edit(h);
  std::string hs = h.dump();
  while (hs.size() % 8) hs += ' ';
  const uint64_t m = hs.size();
  std::string out(reinterpret_cast<const char*>(&m), 8);
  write_text(path, out + hs + b.substr(size_t(8 + n)));
}

inline void edit_config(const std::string& dir, const std::function<void(json&)>& edit) {
  json c = json::parse(read_text(dir + "/config.json"));
  edit(c);
  write_text(dir + "/config.json", c.dump(2));
}

inline json expected(const std::string& sub) { return json::parse(read_text(data_dir(sub) + "/expected.json")); }

}  // namespace v4::model::testing

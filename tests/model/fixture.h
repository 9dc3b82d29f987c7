// Shared by the model-file tests: a small valid file image and the byte positions of its fields.
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "model/v4file.h"

// The largest single operator-new request since the last reset (test_v4file_corrupt.cpp
// replaces the global operator new of the test executable to count it).
size_t v4_test_max_new(bool reset);

namespace v4::model::testing {

inline std::string temp_path(const std::string& stem) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir && *dir ? dir : "/tmp") + "/v4file_test_" + stem + "_" + std::to_string(::getpid()) + ".v4";
}

inline std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

template <typename T>
T rd(const std::vector<uint8_t>& b, uint64_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}
template <typename T>
void wr(std::vector<uint8_t>& b, uint64_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof v);
}

// Header field offsets (docs/FORMAT.md).
constexpr uint64_t kHdrVersion = 8, kHdrFlags = 12, kHdrAlign = 16, kHdrMetaOff = 24, kHdrMetaSize = 32,
                   kHdrDataOff = 40, kHdrDataSize = 48, kHdrTableOff = 56, kHdrTableSize = 64, kHdrFileSize = 72;

// Byte positions of one tensor-table entry's fields.
struct entry_pos {
  uint64_t start, name, type_id, type_name, n_dims, ne, offset, size, xxh3, scale_block, scales;
  std::string name_str;
};

inline std::vector<entry_pos> table_entries(const std::vector<uint8_t>& b) {
  std::vector<entry_pos> out;
  uint64_t p = rd<uint64_t>(b, kHdrTableOff);
  const uint64_t n = rd<uint64_t>(b, p);
  p += 8;
  for (uint64_t i = 0; i < n; ++i) {
    entry_pos e{};
    e.start = p;
    e.name = p;
    const uint32_t nl = rd<uint32_t>(b, p);
    e.name_str.assign(reinterpret_cast<const char*>(b.data() + p + 4), nl);
    p += 4 + nl;
    e.type_id = p;
    p += 4;
    e.type_name = p;
    p += 4 + rd<uint32_t>(b, p);
    e.n_dims = p;
    p += 4;
    e.ne = p;
    p += 32;
    e.offset = p;
    p += 8;
    e.size = p;
    p += 8;
    e.xxh3 = p;
    p += 8;
    e.scale_block = p;
    p += 8;
    e.scales = p;
    p += 4 + rd<uint32_t>(b, p);
    out.push_back(e);
  }
  return out;
}

// A small file of every kind of tensor the format has: plain, integer, scaled with 2-D and 1-D
// scale blocks. Tensor order: t0.f32, t1.b16, t2.i32, t3.fp8, t3.fp8.scale, t4.fp4, t4.fp4.scale.
inline std::vector<uint8_t> small_file(uint32_t alignment = 64) {
  const std::string path = temp_path("small");
  file_writer w;
  EXPECT_TRUE(w.open(path, alignment)) << w.error();
  w.set_string("general.name", "tiny");
  w.set_u32("v4.n_layers", 2);
  const int32_t a[3] = {1, -2, 3};
  w.set_array("v4.a", meta_type::i32, a, 3);
  w.set_array_strings("tok.s", {"a", "bc"});
  w.set_blob("tok.json", "{\"x\":1}", 7);
  auto add = [&](const char* name, dtype t, std::vector<int64_t> ne, const char* scales = "", int b0 = 0, int b1 = 0) {
    tensor_desc d;
    d.name = name;
    d.type = t;
    d.n_dims = int(ne.size());
    for (size_t i = 0; i < ne.size(); ++i) d.ne[i] = ne[i];
    d.scales = scales;
    d.scale_block[0] = b0;
    d.scale_block[1] = b1;
    uint64_t n = 0;
    std::string err;
    EXPECT_TRUE(tensor_nbytes(d, &n, &err)) << err;
    std::vector<uint8_t> data(n);
    for (uint64_t i = 0; i < n; ++i) data[i] = uint8_t(i * 131 + name[1] * 7 + 1);
    if (t == dtype::e8m0)
      for (auto& x : data) x = uint8_t(120 + x % 10);
    EXPECT_TRUE(w.add_tensor(d, data.data())) << w.error();
  };
  add("t0.f32", dtype::f32, {8, 2});
  add("t1.b16", dtype::bf16, {32, 2});
  add("t2.i32", dtype::i32, {4});
  add("t3.fp8", dtype::fp8_e4m3, {128, 3}, "t3.fp8.scale", 128, 128);
  add("t3.fp8.scale", dtype::e8m0, {1, 1});
  add("t4.fp4", dtype::mxfp4, {64, 2}, "t4.fp4.scale", 32, 1);
  add("t4.fp4.scale", dtype::e8m0, {2, 2});
  EXPECT_TRUE(w.finish()) << w.error();
  std::vector<uint8_t> b = read_all(path);
  std::remove(path.c_str());
  return b;
}

}  // namespace v4::model::testing

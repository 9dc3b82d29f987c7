// The model file: round trip through the streaming writer and the mmap reader, typed metadata,
// skipping of unknown value types, writer-side errors, and hand-made malformed files whose
// error messages must name the problem.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "model/v4file.h"
#include "tests/model/fixture.h"

namespace v4::model {
namespace {

using namespace v4::model::testing;

struct src_tensor {
  tensor_desc d;
  std::vector<uint8_t> bytes;
};

src_tensor make(const char* name, dtype t, std::vector<int64_t> ne, uint32_t seed, const char* scales = "",
                int b0 = 0, int b1 = 0) {
  src_tensor s;
  s.d.name = name;
  s.d.type = t;
  s.d.n_dims = int(ne.size());
  for (size_t i = 0; i < ne.size(); ++i) s.d.ne[i] = ne[i];
  s.d.scales = scales;
  s.d.scale_block[0] = b0;
  s.d.scale_block[1] = b1;
  uint64_t n = 0;
  std::string err;
  EXPECT_TRUE(tensor_nbytes(s.d, &n, &err)) << err;
  s.bytes.resize(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : s.bytes) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    b = uint8_t(x);
  }
  return s;
}

TEST(V4File, RoundTripEveryValueTypeAndDtype) {
  const std::string path = temp_path("roundtrip");
  std::vector<src_tensor> ts;
  ts.push_back(make("tok_embd.weight", dtype::f32, {7, 3}, 1));
  ts.push_back(make("layers.0.attn_norm.weight", dtype::bf16, {16, 2, 3}, 2));
  ts.push_back(make("layers.0.tid2eid", dtype::i32, {5}, 3));
  ts.push_back(make("layers.1.wq_a.weight", dtype::fp8_e4m3, {256, 130}, 4, "layers.1.wq_a.scale", 128, 128));
  ts.push_back(make("layers.1.wq_a.scale", dtype::e8m0, {2, 2}, 5));
  ts.push_back(make("layers.1.ffn.experts.0.w1.weight", dtype::mxfp4, {64, 3, 2}, 6, "layers.1.ffn.experts.0.w1.scale", 32, 1));
  ts.push_back(make("layers.1.ffn.experts.0.w1.scale", dtype::e8m0, {2, 3, 2}, 7));
  // Larger than the writer's 4 MiB chunk, produced by a callback in pieces.
  src_tensor big = make("layers.2.big", dtype::i8, {(int64_t(9) << 20) + 3}, 8);

  const std::string blob("tok\0json\xff", 9);
  const uint8_t u8s[3] = {1, 2, 255};
  const int32_t i32s[2] = {-1, 7};
  const uint32_t u32s[2] = {3, 4};
  const int64_t i64s[2] = {-5, 1ll << 50};
  const uint64_t u64s[1] = {42};
  const float f32s[3] = {0.5f, -1.f, 3.f};
  const double f64s[2] = {1e-300, 2.5};
  const uint8_t bools[2] = {1, 0};
  const uint8_t future[5] = {9, 8, 7, 6, 5};
  auto write_meta = [&](file_writer& w) {
    ASSERT_TRUE(w.set_u8("k.u8", 200));
    ASSERT_TRUE(w.set_i32("k.i32", -123456));
    ASSERT_TRUE(w.set_u32("k.u32", 4000000000u));
    ASSERT_TRUE(w.set_i64("k.i64", -(int64_t(1) << 40)));
    ASSERT_TRUE(w.set_u64("k.u64", ~uint64_t(0)));
    ASSERT_TRUE(w.set_f32("k.f32", 1.5e-3f));
    ASSERT_TRUE(w.set_f64("k.f64", -2.25e100));
    ASSERT_TRUE(w.set_bool("k.bool", true));
    ASSERT_TRUE(w.set_string("k.string", "chat template {{ x }}"));
    ASSERT_TRUE(w.set_string("k.empty", ""));
    ASSERT_TRUE(w.set_blob("k.blob", blob.data(), blob.size()));
    ASSERT_TRUE(w.set_array("a.u8", meta_type::u8, u8s, 3));
    ASSERT_TRUE(w.set_array("a.i32", meta_type::i32, i32s, 2));
    ASSERT_TRUE(w.set_array("a.u32", meta_type::u32, u32s, 2));
    ASSERT_TRUE(w.set_array("a.i64", meta_type::i64, i64s, 2));
    ASSERT_TRUE(w.set_array("a.u64", meta_type::u64, u64s, 1));
    ASSERT_TRUE(w.set_array("a.f32", meta_type::f32, f32s, 3));
    ASSERT_TRUE(w.set_array("a.f64", meta_type::f64, f64s, 2));
    ASSERT_TRUE(w.set_array("a.bool", meta_type::boolean, bools, 2));
    ASSERT_TRUE(w.set_array("a.empty", meta_type::i32, nullptr, 0));
    ASSERT_TRUE(w.set_array_strings("a.string", {"<s>", "", "h\xc3\xa9llo"}));
    // A "future" writer: value types this reader does not know, between known keys.
    ASSERT_TRUE(w.set_raw("future.thing", 77, future, 5));
    ASSERT_TRUE(w.set_raw("future.empty", 0xffffffffu, nullptr, 0));
    ASSERT_TRUE(w.set_u32("after.future", 99));
  };

  // A writer used wrongly (metadata after a tensor) refuses to finish a file.
  const std::string bad_path = path + ".bad";
  {
    file_writer w;
    ASSERT_TRUE(w.open(bad_path, 128)) << w.error();
    write_meta(w);
    for (const src_tensor& t : ts) ASSERT_TRUE(w.add_tensor(t.d, t.bytes.data())) << w.error();
    int calls = 0;
    ASSERT_TRUE(w.add_tensor(big.d, [&](uint64_t off, void* dst, size_t n) {
      ++calls;
      std::memcpy(dst, big.bytes.data() + off, n);
      return true;
    })) << w.error();
    EXPECT_EQ(calls, 3);  // 4 + 4 + 1 MiB
    EXPECT_FALSE(w.set_u32("too.late", 1));
    EXPECT_NE(w.error().find("before the first tensor"), std::string::npos) << w.error();
    EXPECT_FALSE(w.finish());
  }
  std::remove(bad_path.c_str());

  file_writer w2;
  ASSERT_TRUE(w2.open(path, 128));
  write_meta(w2);
  for (const src_tensor& t : ts) ASSERT_TRUE(w2.add_tensor(t.d, t.bytes.data())) << w2.error();
  // Streaming is bounded: no allocation near the tensor's size (9 MiB), only the 4 MiB chunk.
  v4_test_max_new(true);
  ASSERT_TRUE(w2.add_tensor(big.d, [&](uint64_t off, void* dst, size_t n) {
    std::memcpy(dst, big.bytes.data() + off, n);
    return true;
  })) << w2.error();
  EXPECT_LE(v4_test_max_new(false), size_t(4) << 20);
  ts.push_back(std::move(big));
  ASSERT_TRUE(w2.finish()) << w2.error();

  std::string err;
  std::unique_ptr<model_file> f = model_file::open(path, &err);
  ASSERT_TRUE(f) << err;
  EXPECT_EQ(f->version(), 1u);
  EXPECT_EQ(f->alignment(), 128u);

  // Metadata: every type back, typed getters refuse other types.
  uint8_t u8 = 0;
  int32_t i32 = 0;
  uint32_t u32 = 0;
  int64_t i64 = 0;
  uint64_t u64 = 0;
  float f32 = 0;
  double f64 = 0;
  bool b = false;
  std::string s;
  std::string_view bv;
  ASSERT_TRUE(f->get_u8("k.u8", &u8, &err) && u8 == 200);
  ASSERT_TRUE(f->get_i32("k.i32", &i32, &err) && i32 == -123456);
  ASSERT_TRUE(f->get_u32("k.u32", &u32, &err) && u32 == 4000000000u);
  ASSERT_TRUE(f->get_i64("k.i64", &i64, &err) && i64 == -(int64_t(1) << 40));
  ASSERT_TRUE(f->get_u64("k.u64", &u64, &err) && u64 == ~uint64_t(0));
  ASSERT_TRUE(f->get_f32("k.f32", &f32, &err) && f32 == 1.5e-3f);
  ASSERT_TRUE(f->get_f64("k.f64", &f64, &err) && f64 == -2.25e100);
  ASSERT_TRUE(f->get_bool("k.bool", &b, &err) && b);
  ASSERT_TRUE(f->get_string("k.string", &s, &err) && s == "chat template {{ x }}");
  ASSERT_TRUE(f->get_string("k.empty", &s, &err) && s.empty());
  ASSERT_TRUE(f->get_blob("k.blob", &bv, &err) && bv == blob);
  ASSERT_TRUE(f->get_u32("after.future", &u32, &err) && u32 == 99);
  std::vector<uint8_t> raw;
  uint64_t count = 0;
  auto arr = [&](const char* key, meta_type t, const void* want, uint64_t n, size_t es) {
    ASSERT_TRUE(f->get_array(key, t, &raw, &count, &err)) << err;
    ASSERT_EQ(count, n) << key;
    ASSERT_EQ(raw.size(), n * es) << key;
    if (n) {
      EXPECT_EQ(std::memcmp(raw.data(), want, n * es), 0) << key;
    }
  };
  arr("a.u8", meta_type::u8, u8s, 3, 1);
  arr("a.i32", meta_type::i32, i32s, 2, 4);
  arr("a.u32", meta_type::u32, u32s, 2, 4);
  arr("a.i64", meta_type::i64, i64s, 2, 8);
  arr("a.u64", meta_type::u64, u64s, 1, 8);
  arr("a.f32", meta_type::f32, f32s, 3, 4);
  arr("a.f64", meta_type::f64, f64s, 2, 8);
  arr("a.bool", meta_type::boolean, bools, 2, 1);
  arr("a.empty", meta_type::i32, nullptr, 0, 4);
  std::vector<std::string> strs;
  ASSERT_TRUE(f->get_array_strings("a.string", &strs, &err));
  EXPECT_EQ(strs, (std::vector<std::string>{"<s>", "", "h\xc3\xa9llo"}));

  EXPECT_FALSE(f->get_u32("k.i32", &u32, &err));
  EXPECT_NE(err.find("'k.i32' is i32, expected u32"), std::string::npos) << err;
  EXPECT_FALSE(f->get_string("no.such.key", &s, &err));
  EXPECT_NE(err.find("'no.such.key' is missing"), std::string::npos) << err;
  EXPECT_FALSE(f->get_array("a.i32", meta_type::f32, &raw, &count, &err));
  EXPECT_NE(err.find("array of i32, expected f32"), std::string::npos) << err;

  // Unknown value types are skipped by length and kept, typed as stored.
  const meta_value* fut = f->find_meta("future.thing");
  ASSERT_TRUE(fut);
  EXPECT_EQ(uint32_t(fut->type), 77u);
  EXPECT_EQ(fut->size, 5u);
  EXPECT_EQ(std::memcmp(fut->bytes, future, 5), 0);
  EXPECT_FALSE(f->get_u8("future.thing", &u8, &err));
  EXPECT_EQ(f->metadata().size(), 24u);
  EXPECT_EQ(f->metadata().front().first, "k.u8");
  EXPECT_EQ(f->metadata().back().first, "after.future");

  // Tensors: every byte identical, aligned, scales linked.
  ASSERT_EQ(f->tensors().size(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    const tensor_entry& e = f->tensors()[i];
    SCOPED_TRACE(ts[i].d.name);
    EXPECT_EQ(e.d.name, ts[i].d.name);
    EXPECT_EQ(e.d.type, ts[i].d.type);
    EXPECT_EQ(e.d.n_dims, ts[i].d.n_dims);
    EXPECT_EQ(std::memcmp(e.d.ne, ts[i].d.ne, sizeof e.d.ne), 0);
    ASSERT_EQ(e.size, ts[i].bytes.size());
    EXPECT_EQ(std::memcmp(e.data, ts[i].bytes.data(), e.size), 0);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(e.data) % 128, 0u);
    EXPECT_EQ(f->find(e.d.name), &e);
    EXPECT_EQ(e.d.scales, ts[i].d.scales);
    if (!ts[i].d.scales.empty()) {
      ASSERT_TRUE(e.scales);
      EXPECT_EQ(e.scales, f->find(ts[i].d.scales));
      EXPECT_EQ(e.d.scale_block[0], ts[i].d.scale_block[0]);
      EXPECT_EQ(e.d.scale_block[1], ts[i].d.scale_block[1]);
    } else {
      EXPECT_FALSE(e.scales);
    }
  }
  EXPECT_FALSE(f->find("nope"));

  verify_stats st;
  uint64_t last = 0;
  ASSERT_TRUE(f->verify(&err, &st, [&](uint64_t done, uint64_t total) {
    EXPECT_GE(done, last);
    EXPECT_LE(done, total);
    last = done;
  })) << err;
  uint64_t total = 0;
  for (const src_tensor& t : ts) total += t.bytes.size();
  EXPECT_EQ(st.bytes, total);
  EXPECT_EQ(last, total);
  f.reset();
  std::remove(path.c_str());
}

TEST(V4File, EmptyFileHasNoTensors) {
  const std::string path = temp_path("empty");
  file_writer w;
  ASSERT_TRUE(w.open(path));
  ASSERT_TRUE(w.finish()) << w.error();
  std::string err;
  auto f = model_file::open(path, &err);
  ASSERT_TRUE(f) << err;
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_TRUE(f->metadata().empty());
  EXPECT_TRUE(f->verify(&err));
  std::remove(path.c_str());
}

TEST(V4File, WriterRefusesBadInput) {
  const std::string path = temp_path("writer_errors");
  auto expect_fail = [&](auto&& body, const char* needle) {
    file_writer w;
    ASSERT_TRUE(w.open(path));
    const bool ok = body(w);
    EXPECT_FALSE(ok && w.finish()) << needle;
    EXPECT_NE(w.error().find(needle), std::string::npos) << w.error();
  };
  std::vector<uint8_t> buf(1 << 12);
  auto td = [](const char* name, dtype t, int64_t ne0, int64_t ne1, const char* scales = "", int b0 = 0, int b1 = 0) {
    tensor_desc d;
    d.name = name;
    d.type = t;
    d.n_dims = 2;
    d.ne[0] = ne0;
    d.ne[1] = ne1;
    d.scales = scales;
    d.scale_block[0] = b0;
    d.scale_block[1] = b1;
    return d;
  };
  expect_fail([&](file_writer& w) { return w.set_u8("k", 1) && w.set_u8("k", 2); }, "duplicate key");
  expect_fail([&](file_writer& w) { return w.set_u8("", 1); }, "metadata key of length 0");
  expect_fail([&](file_writer& w) {
    return w.add_tensor(td("a", dtype::f32, 4, 1), buf.data()) && w.add_tensor(td("a", dtype::f32, 4, 1), buf.data());
  }, "duplicate name");
  expect_fail([&](file_writer& w) { return w.add_tensor(td("x", dtype::mxfp4, 3, 1, "s", 32, 1), buf.data()); },
              "not a multiple of the block size 2");
  expect_fail([&](file_writer& w) { return w.add_tensor(td("x", dtype::fp8_e4m3, 128, 1), buf.data()); },
              "needs a scales tensor");
  expect_fail([&](file_writer& w) { return w.add_tensor(td("x", dtype::f32, 4, 1, "s", 1, 1), buf.data()); },
              "takes no scales");
  expect_fail([&](file_writer& w) { return w.add_tensor(td("x", dtype::fp8_e4m3, 128, 1, "x.s", 128, 128), buf.data()); },
              "scales tensor 'x.s' was never written");
  expect_fail([&](file_writer& w) {
    return w.add_tensor(td("x", dtype::fp8_e4m3, 256, 1, "x.s", 128, 128), buf.data()) &&
           w.add_tensor(td("x.s", dtype::e8m0, 1, 1), buf.data());
  }, "must be e8m0 of shape [2, 1, 1, 1]");
  expect_fail([&](file_writer& w) {
    return w.add_tensor(td("x", dtype::f32, 4, 1), [](uint64_t, void*, size_t) { return false; });
  }, "producer failed");
  file_writer w;
  EXPECT_FALSE(w.open(path, 48));
  EXPECT_NE(w.error().find("power of two"), std::string::npos);
  std::remove(path.c_str());
}

// ---- hand-made malformed files: the message names the problem ---------------------------------

std::string load_error(const std::vector<uint8_t>& img) {
  std::string err;
  auto f = model_file::from_memory(img.data(), img.size(), &err);
  if (f) return "(loaded)";
  return err;
}

class V4FileErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    img = small_file();
    ents = table_entries(img);
    ASSERT_EQ(ents.size(), 7u);
    ASSERT_EQ(load_error(img), "(loaded)");
  }
  void expect(const std::vector<uint8_t>& b, const std::string& needle) {
    const std::string e = load_error(b);
    EXPECT_NE(e.find(needle), std::string::npos) << "error: " << e << "\nexpected: " << needle;
    EXPECT_NE(e.find("(at byte "), std::string::npos) << e;
  }
  std::vector<uint8_t> img;
  std::vector<entry_pos> ents;
};

TEST_F(V4FileErrors, WrongMagic) {
  auto b = img;
  b[3] = 'X';
  expect(b, "wrong magic");
  expect(std::vector<uint8_t>(b.begin(), b.begin() + 10), "shorter than the 80-byte header");
}

TEST_F(V4FileErrors, Version) {
  auto b = img;
  wr<uint32_t>(b, kHdrVersion, 2);
  expect(b, "unsupported version 2");
  b = img;
  wr<uint32_t>(b, kHdrFlags, 1);
  expect(b, "unsupported flags");
}

TEST_F(V4FileErrors, Truncated) {
  auto b = img;
  b.erase(b.end() - 10, b.end());
  expect(b, "truncated");
  // A table section that ends inside its last entry.
  b = img;
  wr<uint64_t>(b, kHdrTableSize, rd<uint64_t>(b, kHdrTableSize) - 10);
  expect(b, "tensor table truncated");
  // Sections beyond the end, and u64 overflow of offset + size.
  b = img;
  wr<uint64_t>(b, kHdrTableSize, ~uint64_t(0) - 8);
  expect(b, "table section");
  expect(b, "beyond the end of the file");
  b = img;
  wr<uint64_t>(b, kHdrMetaOff, ~uint64_t(0) - 3);
  expect(b, "metadata section");
}

TEST_F(V4FileErrors, AbsurdCounts) {
  auto b = img;
  wr<uint64_t>(b, rd<uint64_t>(b, kHdrTableOff), uint64_t(1) << 60);
  expect(b, "absurd tensor count 1152921504606846976");
  b = img;
  wr<uint64_t>(b, rd<uint64_t>(b, kHdrMetaOff), uint64_t(1) << 60);
  expect(b, "absurd entry count");
  // A string length far beyond its section.
  b = img;
  wr<uint32_t>(b, ents[2].name, 0x7fffffffu);
  expect(b, "tensor name length 2147483647 exceeds the limit");
  b = img;
  wr<uint32_t>(b, ents[2].name, 900);
  expect(b, "tensor table truncated");
}

TEST_F(V4FileErrors, Overlap) {
  auto b = img;
  wr<uint64_t>(b, ents[1].offset, rd<uint64_t>(b, ents[0].offset));
  expect(b, "overlap");
}

TEST_F(V4FileErrors, Misaligned) {
  auto b = img;
  wr<uint64_t>(b, ents[2].offset, rd<uint64_t>(b, ents[2].offset) + 4);
  expect(b, "misaligned data");
  b = img;
  wr<uint64_t>(b, ents[2].offset, ~uint64_t(0) - 2);  // offset + size overflows
  expect(b, "beyond the data section");
}

TEST_F(V4FileErrors, BadShape) {
  auto b = img;
  wr<int64_t>(b, ents[5].ne, 63);  // mxfp4: ne0 must be even
  expect(b, "not a multiple of the block size 2 of mxfp4");
  b = img;
  wr<int64_t>(b, ents[0].ne + 8, 3);  // f32 [8, 3] but 64 bytes stored
  expect(b, "byte size 64 != 96");
  b = img;
  wr<int64_t>(b, ents[0].ne, int64_t(1) << 40);
  wr<int64_t>(b, ents[0].ne + 8, int64_t(1) << 40);
  expect(b, "element count overflows");
  b = img;
  wr<uint32_t>(b, ents[0].n_dims, 9);
  expect(b, "n_dims 9 not in 1..4");
}

TEST_F(V4FileErrors, UnknownType) {
  auto b = img;
  ASSERT_EQ(rd<uint32_t>(b, ents[1].type_name), 4u);  // "bf16"
  std::memcpy(b.data() + ents[1].type_name + 4, "q9_z", 4);
  wr<int32_t>(b, ents[1].type_id, 42);
  expect(b, "unknown type 'q9_z' (id 42)");
  b = img;
  wr<int32_t>(b, ents[1].type_id, int32_t(dtype::f16));
  expect(b, "does not match type name 'bf16'");
}

TEST_F(V4FileErrors, DuplicateName) {
  auto b = img;
  ASSERT_EQ(ents[1].name_str.size(), ents[0].name_str.size());
  std::memcpy(b.data() + ents[1].name + 4, ents[0].name_str.data(), ents[0].name_str.size());
  expect(b, "duplicate tensor name");
}

TEST_F(V4FileErrors, ScalesReference) {
  auto b = img;
  b[ents[3].scales + 4 + 3] ^= 1;  // "t3.fp8.scale" -> another name
  expect(b, "is missing");
  b = img;
  wr<int32_t>(b, ents[3].scale_block, 64);  // needs [2, 1] scales, the file has [1, 1]
  expect(b, "needs [2, 1, 1, 1]");
  b = img;
  wr<int32_t>(b, ents[3].scale_block, 0);
  expect(b, "needs a scales tensor and scale_block >= 1");
}

TEST_F(V4FileErrors, Checksum) {
  auto b = img;
  const uint64_t off = rd<uint64_t>(b, kHdrDataOff) + rd<uint64_t>(b, ents[3].offset) + 17;
  b[off] ^= 0x40;
  std::string err;
  auto f = model_file::from_memory(b.data(), b.size(), &err);
  ASSERT_TRUE(f) << err;  // data damage is found by verify(), not by open
  EXPECT_FALSE(f->verify(&err));
  EXPECT_NE(err.find("tensor 't3.fp8': checksum mismatch"), std::string::npos) << err;
}

TEST_F(V4FileErrors, MetadataValues) {
  // The u32 after "v4.n_layers": claim 3 bytes for a u32 value.
  auto b = img;
  const uint64_t m = rd<uint64_t>(b, kHdrMetaOff) + 8;
  const uint64_t e1 = m + 4 + rd<uint32_t>(b, m) + 4 + 8 + rd<uint64_t>(b, m + 4 + rd<uint32_t>(b, m) + 4);
  const uint32_t kl = rd<uint32_t>(b, e1);
  ASSERT_EQ(std::string(reinterpret_cast<const char*>(b.data() + e1 + 4), kl), "v4.n_layers");
  wr<uint64_t>(b, e1 + 4 + kl + 4, 3);
  expect(b, "metadata 'v4.n_layers': u32 value of 3 bytes");
  b = img;
  wr<uint64_t>(b, e1 + 4 + kl + 4, uint64_t(1) << 62);
  expect(b, "metadata truncated: value needs");
}

TEST(V4File, OpenTruncatedFilesThroughMmap) {
  const std::vector<uint8_t> img = small_file();
  const std::string path = temp_path("trunc");
  for (size_t n : {size_t(0), size_t(1), size_t(79), size_t(80), size_t(200), size_t(4096), img.size() / 2,
                   img.size() - 1}) {
    {
      std::FILE* f = std::fopen(path.c_str(), "wb");
      ASSERT_TRUE(f);
      if (n) {
        ASSERT_EQ(std::fwrite(img.data(), 1, n, f), n);
      }
      std::fclose(f);
    }
    std::string err;
    EXPECT_FALSE(model_file::open(path, &err)) << n;
    EXPECT_NE(err.find("truncated"), std::string::npos) << n << ": " << err;
    EXPECT_EQ(err.rfind(path, 0), 0u) << "the message starts with the path: " << err;
  }
  std::remove(path.c_str());
}

TEST(V4File, OpenReportsMissingAndNonFiles) {
  std::string err;
  EXPECT_FALSE(model_file::open("/nonexistent/model.v4", &err));
  EXPECT_NE(err.find("cannot open"), std::string::npos) << err;
  EXPECT_FALSE(model_file::open("/tmp", &err));
  EXPECT_NE(err.find("not a regular file"), std::string::npos) << err;
}

}  // namespace
}  // namespace v4::model

// The safetensors reader: a valid file, every kind of lying header, a mutation loop, sharded
// checkpoint directories.
#include <random>

#include "helpers.h"
#include "model/safetensors.h"

namespace v4::model::testing {
namespace {

// An image with three tensors: a [2, 3] F32, a [4] BF16, an [2, 2] I64.
std::string image(json* header_out = nullptr) {
  json h;
  h["__metadata__"] = {{"format", "pt"}};
  h["a"] = {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}};
  h["b"] = {{"dtype", "BF16"}, {"shape", {4}}, {"data_offsets", {24, 32}}};
  h["c"] = {{"dtype", "I64"}, {"shape", {2, 2}}, {"data_offsets", {32, 64}}};
  if (header_out) *header_out = h;
  std::string hs = h.dump();
  const uint64_t n = hs.size();
  std::string data(64, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char(i * 7 + 1);
  return std::string(reinterpret_cast<const char*>(&n), 8) + hs + data;
}

std::string with_header(const json& h, size_t data_bytes = 64) {
  const std::string hs = h.dump();
  const uint64_t n = hs.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + hs + std::string(data_bytes, '\x11');
}

std::string open_error(const std::string& img) {
  std::string err;
  auto f = st_file::from_memory(img.data(), img.size(), "mem.safetensors", &err);
  EXPECT_FALSE(f) << "accepted a bad image";
  EXPECT_NE(err.find("mem.safetensors"), std::string::npos) << "the error must name the file: " << err;
  return err;
}

TEST(Safetensors, reads_a_valid_file) {
  const std::string img = image();
  std::string err;
  auto f = st_file::from_memory(img.data(), img.size(), "mem.safetensors", &err);
  ASSERT_TRUE(f) << err;
  ASSERT_EQ(f->tensors().size(), 3u);
  const st_tensor* a = f->find("a");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->dtype, st_dtype::F32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->size, 24u);
  const st_tensor* c = f->find("c");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->offset, img.size() - 32);
  EXPECT_EQ(c->data, reinterpret_cast<const uint8_t*>(img.data()) + c->offset);
  EXPECT_EQ(f->find("__metadata__"), nullptr);
}

TEST(Safetensors, header_longer_than_the_file) {
  std::string img = image();
  const uint64_t huge = uint64_t(1) << 60;
  std::memcpy(img.data(), &huge, 8);
  EXPECT_NE(open_error(img).find("truncated or corrupt: the header claims"), std::string::npos);
  EXPECT_NE(open_error(img.substr(0, 5)).find("not a safetensors file"), std::string::npos);
}

TEST(Safetensors, bad_json) {
  std::string img = image();
  img[9] = '#';
  EXPECT_NE(open_error(img).find("bad JSON header"), std::string::npos);
}

TEST(Safetensors, offset_beyond_eof) {
  json h;
  image(&h);
  h["c"]["data_offsets"] = {32, 72};
  h["c"]["shape"] = {5};
  const std::string e = open_error(with_header(h));
  EXPECT_NE(e.find("tensor 'c'"), std::string::npos) << e;
  EXPECT_NE(e.find("beyond the data section"), std::string::npos) << e;
}

TEST(Safetensors, overlapping_tensors) {
  json h;
  image(&h);
  h["b"]["data_offsets"] = {16, 24};
  const std::string e = open_error(with_header(h));
  EXPECT_NE(e.find("overlap"), std::string::npos) << e;
  EXPECT_NE(e.find("'a'"), std::string::npos) << e;
}

TEST(Safetensors, unknown_dtype_names_the_tensor) {
  json h;
  image(&h);
  h["b"]["dtype"] = "F8_E5M2";
  const std::string e = open_error(with_header(h));
  EXPECT_NE(e.find("tensor 'b': unsupported dtype 'F8_E5M2'"), std::string::npos) << e;
}

TEST(Safetensors, shape_and_size_disagree) {
  json h;
  image(&h);
  h["a"]["shape"] = {3, 3};
  EXPECT_NE(open_error(with_header(h)).find("shape x dtype needs 36 bytes, data_offsets span 24"), std::string::npos);
  h["a"]["shape"] = {uint64_t(1) << 40, uint64_t(1) << 40};
  EXPECT_NE(open_error(with_header(h)).find("shape overflows"), std::string::npos);
  h["a"]["shape"] = {-1, 3};
  EXPECT_NE(open_error(with_header(h)).find("non-negative"), std::string::npos);
  h["a"]["shape"] = "x";
  EXPECT_NE(open_error(with_header(h)).find("'shape'"), std::string::npos);
}

TEST(Safetensors, header_must_be_an_object_of_objects) {
  EXPECT_NE(open_error(with_header(json::array({1, 2}))).find("not an object"), std::string::npos);
  json h;
  image(&h);
  h["a"] = 5;
  EXPECT_NE(open_error(with_header(h)).find("tensor 'a': header entry is not an object"), std::string::npos);
  image(&h);
  h["a"]["data_offsets"] = {24, 0};
  EXPECT_NE(open_error(with_header(h)).find("end before they begin"), std::string::npos);
}

// Random byte changes in the length field and the header must give a clean error or a file whose
// tensors all lie inside the image: never a crash (the suite also runs under ASan/UBSan).
TEST(Safetensors, header_mutations_never_crash) {
  const std::string base = image();
  uint64_t hlen = 0;
  std::memcpy(&hlen, base.data(), 8);
  std::mt19937 rng(42);
  int accepted = 0, rejected = 0;
  for (int it = 0; it < 600; ++it) {
    std::string img = base;
    const int n_changes = 1 + int(rng() % 3);
    for (int c = 0; c < n_changes; ++c) {
      const size_t pos = rng() % (8 + hlen);
      switch (rng() % 3) {
        case 0: img[pos] = char(rng()); break;
        case 1: img[pos] = char(img[pos] ^ (1 << (rng() % 8))); break;
        default: img[pos] = "0123456789[]{}\",:-e"[rng() % 19]; break;
      }
    }
    if (it % 50 == 49) img.resize(rng() % img.size());  // truncations too
    std::string err;
    auto f = st_file::from_memory(img.data(), img.size(), "m.safetensors", &err);
    if (!f) {
      ++rejected;
      EXPECT_FALSE(err.empty());
      continue;
    }
    ++accepted;
    for (const st_tensor& t : f->tensors()) {
      ASSERT_LE(t.offset, img.size());
      ASSERT_LE(t.size, img.size() - t.offset);
      if (t.size) {
        volatile uint8_t sink = t.data[0] ^ t.data[t.size - 1];  // touch both ends
        (void)sink;
      }
    }
  }
  EXPECT_GT(rejected, 300);  // most mutations break the JSON or the offsets
  EXPECT_GT(accepted, 0);    // some land in values that stay valid (e.g. inside a name)
}

TEST(Safetensors, sharded_checkpoint_errors_name_the_index) {
  scratch s;
  const std::string d = s.copy_of("official");
  // A shard the index names is missing.
  fs::remove(d + "/model-00002-of-00002.safetensors");
  std::string err;
  EXPECT_FALSE(st_checkpoint::open(d, &err));
  EXPECT_NE(err.find("shard 'model-00002-of-00002.safetensors' is missing"), std::string::npos) << err;
  // An index entry that points outside the directory.
  write_text(d + "/model.safetensors.index.json", R"({"weight_map": {"x": "../x.safetensors"}})");
  EXPECT_FALSE(st_checkpoint::open(d, &err));
  EXPECT_NE(err.find("is not a file name in the directory"), std::string::npos) << err;
  write_text(d + "/model.safetensors.index.json", "{oops");
  EXPECT_FALSE(st_checkpoint::open(d, &err));
  EXPECT_NE(err.find("model.safetensors.index.json: bad JSON"), std::string::npos) << err;
}

TEST(Safetensors, reads_the_sharded_test_checkpoint) {
  std::string err;
  auto ck = st_checkpoint::open(data_dir("official"), &err);
  ASSERT_TRUE(ck) << err;
  EXPECT_EQ(ck->files().size(), 2u);
  const json idx = json::parse(read_text(data_dir("official") + "/model.safetensors.index.json"));
  EXPECT_EQ(ck->tensors().size(), idx["weight_map"].size());
  const st_tensor* t = ck->find("layers.0.ffn.experts.3.w2.weight");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->dtype, st_dtype::I8);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{256, 16}));
}

}  // namespace
}  // namespace v4::model::testing

// The corruption test: truncations at every offset, flips of every header/metadata/table byte,
// and thousands of seeded random mutations of a small valid file. Each variant must either load
// (and then every pointer lies inside the image, and verify() runs) or return an error; never
// crash, hang or allocate absurdly. Each variant is parsed from a heap copy of exactly its size,
// so ASan reports any read past the end. Built into the ASan+UBSan tree too (make test).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <random>

#include "model/v4file.h"
#include "tests/model/fixture.h"

// The largest single operator-new request of the process: the reader must never size an
// allocation by a count it has not checked against the bytes that back it.
namespace {
std::atomic<size_t> g_max_new{0};
void* counted_new(size_t n) {
  size_t m = g_max_new.load(std::memory_order_relaxed);
  while (n > m && !g_max_new.compare_exchange_weak(m, n, std::memory_order_relaxed)) {
  }
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
}  // namespace
void* operator new(size_t n) { return counted_new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

size_t v4_test_max_new(bool reset) {  // declared in fixture.h
  return reset ? g_max_new.exchange(0) : g_max_new.load();
}

namespace v4::model {
namespace {

using namespace v4::model::testing;

constexpr size_t kMaxAlloc = size_t(16) << 20;
constexpr int kMutations = 20000;

// The unmutated file, for the verify() property below (set by the fixture).
const model_file* g_original = nullptr;

// Loads a variant; checks the invariants of a successful load. Returns true when it loaded.
// When verify() passes, every tensor whose extent and checksum are the original's must hold the
// original bytes: i.e. verify() finds any damage to the data it vouches for.
bool check_variant(const std::vector<uint8_t>& img, bool* verified = nullptr) {
  std::vector<uint8_t> exact(img);  // a heap block of exactly img.size() bytes
  std::string err;
  std::unique_ptr<model_file> f = model_file::from_memory(exact.data(), exact.size(), &err);
  if (!f) {
    EXPECT_FALSE(err.empty());
    return false;
  }
  const uint8_t* lo = exact.data();
  const uint8_t* hi = lo + exact.size();
  for (const tensor_entry& e : f->tensors()) {
    EXPECT_TRUE(e.data >= lo && e.size <= uint64_t(hi - e.data)) << e.d.name;
    if (e.scales) {
      EXPECT_EQ(e.scales->d.type, dtype::e8m0);
    }
  }
  for (const auto& [k, v] : f->metadata()) EXPECT_TRUE(v.bytes >= lo && v.size <= uint64_t(hi - v.bytes)) << k;
  const bool ok = f->verify(&err);
  if (verified) *verified = ok;
  if (ok && g_original) {
    for (const tensor_entry& e : f->tensors()) {
      const tensor_entry* o = g_original->find(e.d.name);
      if (o && o->offset == e.offset && o->size == e.size && o->xxh3 == e.xxh3) {
        EXPECT_EQ(std::memcmp(o->data, e.data, e.size), 0) << e.d.name << ": damaged data passed verify()";
      }
    }
  }
  return true;
}

class V4FileCorrupt : public ::testing::Test {
 protected:
  void SetUp() override {
    img = small_file();
    meta_end = rd<uint64_t>(img, kHdrMetaOff) + rd<uint64_t>(img, kHdrMetaSize);
    data_off = rd<uint64_t>(img, kHdrDataOff);
    table_off = rd<uint64_t>(img, kHdrTableOff);
    ASSERT_EQ(table_off + rd<uint64_t>(img, kHdrTableSize), img.size());
    bool ok = false;
    ASSERT_TRUE(check_variant(img, &ok));
    ASSERT_TRUE(ok);
    std::string err;
    original = model_file::from_memory(img.data(), img.size(), &err);
    ASSERT_TRUE(original) << err;
    g_original = original.get();
    for (const entry_pos& e : table_entries(img))
      extents.emplace_back(data_off + rd<uint64_t>(img, e.offset), rd<uint64_t>(img, e.size));
    v4_test_max_new(true);
  }
  void TearDown() override {
    g_original = nullptr;
    EXPECT_LT(v4_test_max_new(false), kMaxAlloc) << "an allocation sized by file contents";
  }
  bool in_tensor(uint64_t off) const {
    for (auto [o, n] : extents)
      if (off >= o && off < o + n) return true;
    return false;
  }
  std::vector<uint8_t> img;
  std::unique_ptr<model_file> original;
  uint64_t meta_end = 0, data_off = 0, table_off = 0;
  std::vector<std::pair<uint64_t, uint64_t>> extents;
};

TEST_F(V4FileCorrupt, TruncatedAtEveryOffset) {
  for (size_t n = 0; n < img.size(); ++n) {
    std::vector<uint8_t> b(img.begin(), img.begin() + n);
    EXPECT_FALSE(check_variant(b)) << "a file truncated to " << n << " of " << img.size() << " bytes loaded";
  }
  // Also with the header's file size patched to match, so the section checks must catch it.
  int loaded = 0;
  for (size_t n = kHeaderSize; n < img.size(); ++n) {
    std::vector<uint8_t> b(img.begin(), img.begin() + n);
    wr<uint64_t>(b, kHdrFileSize, n);
    loaded += check_variant(b);
  }
  EXPECT_EQ(loaded, 0);
}

TEST_F(V4FileCorrupt, EveryHeaderMetadataAndTableByteFlipped) {
  int loaded = 0, variants = 0;
  auto flip_range = [&](uint64_t from, uint64_t to) {
    for (uint64_t off = from; off < to; ++off)
      for (uint8_t x : {0x01, 0x80, 0xff}) {
        std::vector<uint8_t> b(img);
        b[off] ^= x;
        loaded += check_variant(b);
        ++variants;
      }
  };
  flip_range(0, meta_end);
  flip_range(table_off, img.size());
  // Most flips must be caught by validation; some (a checksum byte, a metadata value) load.
  EXPECT_LT(loaded, variants / 2) << loaded << " of " << variants;

  // Data bytes: the file still loads; verify() finds every flip inside a tensor.
  std::mt19937_64 rng(1234);
  for (int i = 0; i < 300; ++i) {
    const uint64_t off = data_off + rng() % (table_off - data_off);
    std::vector<uint8_t> b(img);
    b[off] ^= uint8_t(1 + rng() % 255);
    bool ok = false;
    ASSERT_TRUE(check_variant(b, &ok)) << "data byte " << off;
    EXPECT_EQ(ok, !in_tensor(off)) << "data byte " << off;
  }
}

// Every length, count, offset, size and shape field, set to each boundary value.
TEST_F(V4FileCorrupt, EveryFieldSetToBoundaryValues) {
  const uint64_t values[] = {0, 1, 63, 64, 65, 4095, 0x7fffffff, 0x80000000, 0xffffffff, uint64_t(1) << 32,
                             uint64_t(1) << 62, uint64_t(1) << 63, ~uint64_t(0), ~uint64_t(0) - 63, img.size(),
                             img.size() + 1, table_off, data_off};
  struct field {
    uint64_t off;
    int width;
  };
  std::vector<field> fields;
  for (uint64_t off = 8; off < kHeaderSize; off += (off < 24 ? 4 : 8)) fields.push_back({off, off < 24 ? 4 : 8});
  const uint64_t meta_off = rd<uint64_t>(img, kHdrMetaOff);
  fields.push_back({meta_off, 8});
  fields.push_back({meta_off + 8, 4});  // first key length
  fields.push_back({table_off, 8});
  for (const entry_pos& e : table_entries(img)) {
    for (uint64_t o : {e.name, e.type_id, e.type_name, e.n_dims, e.scales}) fields.push_back({o, 4});
    for (int k = 0; k < 4; ++k) fields.push_back({e.ne + 8 * uint64_t(k), 8});
    for (uint64_t o : {e.offset, e.size, e.xxh3}) fields.push_back({o, 8});
    fields.push_back({e.scale_block, 4});
    fields.push_back({e.scale_block + 4, 4});
  }
  int loaded = 0, variants = 0;
  for (const field& f : fields)
    for (uint64_t v : values) {
      std::vector<uint8_t> b(img);
      std::memcpy(b.data() + f.off, &v, size_t(f.width));
      loaded += check_variant(b);
      ++variants;
    }
  EXPECT_LT(loaded, variants / 4) << loaded << " of " << variants;
}

TEST_F(V4FileCorrupt, SeededRandomMutations) {
  std::mt19937_64 rng(20260428);
  const uint64_t interesting[] = {0,          1,          7,           63,          64,         4096,
                                  0x7fffffff, 0xffffffff, uint64_t(1) << 32, uint64_t(1) << 60, ~uint64_t(0),
                                  ~uint64_t(0) - 7, uint64_t(1) << 63, img.size(), img.size() - 1, table_off};
  int loaded = 0;
  for (int iter = 0; iter < kMutations; ++iter) {
    std::vector<uint8_t> b(img);
    const int n_mut = 1 + int(rng() % 6);
    for (int m = 0; m < n_mut && !b.empty(); ++m) {
      // Bias towards the structured parts: header, metadata, table.
      uint64_t off;
      switch (rng() % 4) {
        case 0: off = rng() % std::min<uint64_t>(b.size(), kHeaderSize); break;
        case 1: off = rng() % std::min<uint64_t>(b.size(), meta_end); break;
        case 2: off = table_off < b.size() ? table_off + rng() % (b.size() - table_off) : rng() % b.size(); break;
        default: off = rng() % b.size(); break;
      }
      switch (rng() % 5) {
        case 0: b[off] = uint8_t(rng()); break;
        case 1: b[off] ^= uint8_t(1u << (rng() % 8)); break;
        case 2: {  // an interesting u32/u64 over a length, count, offset or size field
          const uint64_t v = interesting[rng() % std::size(interesting)];
          const size_t w = rng() % 2 ? 8 : 4;
          if (off + w <= b.size()) std::memcpy(b.data() + off, &v, w);
          break;
        }
        case 3: b.resize(size_t(rng() % (b.size() + 1))); break;
        default: {  // duplicate a run of bytes from elsewhere (names, entries)
          const uint64_t src = rng() % b.size(), len = 1 + rng() % 32;
          for (uint64_t i = 0; i < len && off + i < b.size() && src + i < b.size(); ++i) b[off + i] = b[src + i];
          break;
        }
      }
    }
    loaded += check_variant(b);
  }
  std::printf("[          ] %d of %d mutated files loaded (verify() ran on those)\n", loaded, kMutations);
}

}  // namespace
}  // namespace v4::model

// safetensors reader: mmap + a fully validated header (see safetensors.h).
#include "model/safetensors.h"
#include "model/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace v4::model {

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeader = 100ull << 20;  // real headers are < 10 MB; refuse absurd claims
constexpr int kMaxRank = 8;

struct dtype_row {
  st_dtype t;
  const char* name;
  size_t size;
};
constexpr dtype_row kDtypes[] = {
    {st_dtype::F8_E4M3, "F8_E4M3", 1}, {st_dtype::F8_E8M0, "F8_E8M0", 1}, {st_dtype::I8, "I8", 1},
    {st_dtype::U8, "U8", 1},           {st_dtype::BF16, "BF16", 2},       {st_dtype::F16, "F16", 2},
    {st_dtype::F32, "F32", 4},         {st_dtype::I64, "I64", 8},         {st_dtype::I32, "I32", 4},
};

}  // namespace

const char* st_dtype_name(st_dtype t) {
  for (const dtype_row& r : kDtypes)
    if (r.t == t) return r.name;
  return "?";
}
size_t st_dtype_size(st_dtype t) {
  for (const dtype_row& r : kDtypes)
    if (r.t == t) return r.size;
  return 0;
}
bool st_dtype_from_name(const std::string& s, st_dtype* out) {
  for (const dtype_row& r : kDtypes)
    if (s == r.name) {
      *out = r.t;
      return true;
    }
  return false;
}

int64_t st_tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

st_file::~st_file() {
  if (map_) ::munmap(map_, size_);
}

std::unique_ptr<st_file> st_file::open(const std::string& path, std::string* error) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = path + ": cannot open: " + std::strerror(errno);
    return nullptr;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    *error = path + ": not a regular file";
    return nullptr;
  }
  std::unique_ptr<st_file> f(new st_file());
  f->path_ = path;
  f->size_ = uint64_t(st.st_size);
  if (f->size_ > 0) {
    void* m = ::mmap(nullptr, f->size_, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      *error = path + ": mmap failed: " + std::strerror(errno);
      return nullptr;
    }
    f->map_ = m;
    f->base_ = static_cast<const uint8_t*>(m);
    ::madvise(m, f->size_, MADV_SEQUENTIAL);  // streamed once, front to back per tensor
  }
  ::close(fd);
  if (!f->parse(error)) return nullptr;
  return f;
}

std::unique_ptr<st_file> st_file::from_memory(const void* data, size_t n, const std::string& path,
                                              std::string* error) {
  std::unique_ptr<st_file> f(new st_file());
  f->path_ = path;
  f->base_ = static_cast<const uint8_t*>(data);
  f->size_ = n;
  if (!f->parse(error)) return nullptr;
  return f;
}

const st_tensor* st_file::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

bool st_file::parse(std::string* error) {
  auto fail = [&](const std::string& m) {
    *error = path_ + ": " + m;
    return false;
  };
  if (size_ < 8) return fail("not a safetensors file: " + std::to_string(size_) + " bytes, the header length alone needs 8");
  uint64_t hlen = 0;
  std::memcpy(&hlen, base_, 8);  // little-endian hosts only (as the rest of v4.cpp)
  if (hlen > size_ - 8)
    return fail("truncated or corrupt: the header claims " + std::to_string(hlen) + " bytes, the file has " +
                std::to_string(size_ - 8) + " after the length field");
  if (hlen > kMaxHeader) return fail("header of " + std::to_string(hlen) + " bytes is larger than the 100 MB limit");
  const uint64_t data_start = 8 + hlen;
  const uint64_t data_size = size_ - data_start;

  json h;
  try {
    h = json::parse(reinterpret_cast<const char*>(base_ + 8), reinterpret_cast<const char*>(base_ + data_start));
  } catch (const std::exception& e) {
    return fail(std::string("bad JSON header: ") + e.what());
  }
  if (!h.is_object()) return fail("bad header: the JSON is not an object");

  struct extent {
    uint64_t begin, end;
    size_t i;
  };
  std::vector<extent> extents;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object() && !it->is_null()) return fail("bad header: __metadata__ is not an object");
      continue;
    }
    auto bad = [&](const std::string& m) { return fail("tensor '" + name + "': " + m); };
    const json& v = *it;
    if (name.empty() || name.size() > 1024) return fail("bad header: a tensor name of " + std::to_string(name.size()) + " bytes");
    if (!v.is_object()) return bad("header entry is not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto of = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) return bad("missing or non-string 'dtype'");
    if (sh == v.end() || !sh->is_array()) return bad("missing or non-array 'shape'");
    if (of == v.end() || !of->is_array() || of->size() != 2) return bad("'data_offsets' must be [begin, end]");
    st_tensor t;
    t.name = name;
    if (!st_dtype_from_name(dt->get<std::string>(), &t.dtype))
      return bad("unsupported dtype '" + dt->get<std::string>() +
                 "' (known: F8_E4M3, F8_E8M0, I8, U8, BF16, F16, F32, I64, I32)");
    if (sh->size() > size_t(kMaxRank)) return bad("shape has " + std::to_string(sh->size()) + " dims");
    uint64_t elems = 1;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned()) return bad("shape entries must be non-negative integers");
      const uint64_t x = d.get<uint64_t>();
      if (x > (uint64_t(1) << 62) || (x != 0 && elems > (uint64_t(1) << 62) / x)) return bad("shape overflows");
      elems *= x;
      t.shape.push_back(int64_t(x));
    }
    for (const json& o : *of)
      if (!o.is_number_unsigned()) return bad("data_offsets must be non-negative integers");
    const uint64_t b = (*of)[0].get<uint64_t>(), e = (*of)[1].get<uint64_t>();
    if (b > e) return bad("data_offsets [" + std::to_string(b) + ", " + std::to_string(e) + "] end before they begin");
    if (e > data_size)
      return bad("data_offsets end " + std::to_string(e) + " is beyond the data section of " + std::to_string(data_size) +
                 " bytes (file truncated?)");
    const uint64_t want = elems * st_dtype_size(t.dtype);
    if (want != e - b)
      return bad("shape x dtype needs " + std::to_string(want) + " bytes, data_offsets span " + std::to_string(e - b));
    t.offset = data_start + b;
    t.size = e - b;
    t.data = base_ + t.offset;
    extents.push_back({b, e, tensors_.size()});
    tensors_.push_back(std::move(t));
  }
  // Sorted by start, each non-empty extent must begin at or after the furthest end seen so far.
  std::sort(extents.begin(), extents.end(), [](const extent& a, const extent& b) { return a.begin < b.begin; });
  const extent* far = nullptr;
  for (const extent& c : extents) {
    if (c.end == c.begin) continue;
    if (far && c.begin < far->end)
      return fail("tensors '" + tensors_[far->i].name + "' and '" + tensors_[c.i].name + "' overlap (data at " +
                  std::to_string(c.begin) + " starts before " + std::to_string(far->end) + ")");
    if (!far || c.end > far->end) far = &c;
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    tensors_[i].file = this;
    index_.emplace(tensors_[i].name, i);
  }
  return true;
}

const st_tensor* st_checkpoint::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

uint64_t st_checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& [k, t] : tensors_) n += t->size;
  return n;
}

std::unique_ptr<st_checkpoint> st_checkpoint::open(const std::string& dir, std::string* error) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *error = dir + ": no such checkpoint directory";
    return nullptr;
  }
  std::vector<std::string> shards;
  std::map<std::string, std::string> weight_map;  // tensor -> shard, when an index exists
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (is_regular_file(index_path)) {
    std::string text;
    if (!read_whole_file(index_path, &text)) {
      *error = index_path + ": cannot read";
      return nullptr;
    }
    json j;
    try {
      j = json::parse(text);
    } catch (const std::exception& e) {
      *error = index_path + ": bad JSON: " + e.what();
      return nullptr;
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      *error = index_path + ": no 'weight_map' object";
      return nullptr;
    }
    std::set<std::string> seen;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it->is_string()) {
        *error = index_path + ": weight_map['" + it.key() + "'] is not a file name";
        return nullptr;
      }
      const std::string f = it->get<std::string>();
      if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..") {
        *error = index_path + ": weight_map['" + it.key() + "'] = '" + f + "' is not a file name in the directory";
        return nullptr;
      }
      weight_map[it.key()] = f;
      if (seen.insert(f).second) shards.push_back(f);
    }
  } else {
    DIR* d = ::opendir(dir.c_str());
    if (d) {
      while (dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0) shards.push_back(n);
      }
      ::closedir(d);
    }
    std::sort(shards.begin(), shards.end());
  }
  if (shards.empty()) {
    *error = dir + ": no weights: neither model.safetensors.index.json nor any *.safetensors file";
    return nullptr;
  }

  std::unique_ptr<st_checkpoint> c(new st_checkpoint());
  for (const std::string& s : shards) {
    const std::string p = dir + "/" + s;
    if (!is_regular_file(p)) {
      *error = index_path + ": shard '" + s + "' is missing from " + dir;
      return nullptr;
    }
    std::unique_ptr<st_file> f = st_file::open(p, error);
    if (!f) return nullptr;
    for (const st_tensor& t : f->tensors()) {
      auto [it, fresh] = c->tensors_.emplace(t.name, &t);
      if (!fresh) {
        *error = "tensor '" + t.name + "' is in both " + it->second->file->path() + " and " + p;
        return nullptr;
      }
      if (!weight_map.empty()) {
        auto w = weight_map.find(t.name);
        if (w != weight_map.end() && w->second != s) {
          *error = index_path + ": tensor '" + t.name + "' is listed in '" + w->second + "' but found in '" + s + "'";
          return nullptr;
        }
      }
    }
    c->files_.push_back(std::move(f));
  }
  for (const auto& [name, shard] : weight_map)
    if (!c->tensors_.count(name)) {
      *error = dir + "/" + shard + ": tensor '" + name + "' (listed in model.safetensors.index.json) is not in the shard";
      return nullptr;
    }
  return c;
}

}  // namespace v4::model

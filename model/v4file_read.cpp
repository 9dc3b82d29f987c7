// model_file: maps and validates a v4 model file (docs/FORMAT.md). Every read of file bytes goes
// through `cursor`, which checks bounds first; counts from the file are only trusted after they
// are checked against the bytes that remain, so no allocation is ever sized by the file alone.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "model/v4file.h"
#include "quant/quant.h"

namespace v4::model {

namespace {

std::string at(uint64_t off) { return " (at byte " + std::to_string(off) + ")"; }

// Bounds-checked little-endian reads over [pos, end) of the file image.
struct cursor {
  const uint8_t* base;
  uint64_t pos, end;
  const char* section;
  std::string* error;

  bool fail(const std::string& m) {
    if (error) *error = m + at(pos);
    return false;
  }
  bool need(uint64_t n, const char* what) {
    if (n > end - pos)
      return fail(std::string(section) + " truncated: " + what + " needs " + std::to_string(n) + " bytes, " +
                  std::to_string(end - pos) + " left in the section");
    return true;
  }
  template <typename T>
  bool get(T* v, const char* what) {
    if (!need(sizeof(T), what)) return false;
    std::memcpy(v, base + pos, sizeof(T));
    pos += sizeof(T);
    return true;
  }
  // u32 length + bytes, length at most max_len.
  bool str(std::string* s, const char* what, uint32_t max_len) {
    uint32_t n = 0;
    const uint64_t start = pos;
    if (!get(&n, what)) return false;
    if (n > max_len) {
      pos = start;
      return fail(std::string(section) + ": " + what + " length " + std::to_string(n) + " exceeds the limit " +
                  std::to_string(max_len));
    }
    if (!need(n, what)) return false;
    s->assign(reinterpret_cast<const char*>(base + pos), n);
    pos += n;
    return true;
  }
};

size_t fixed_size(meta_type t) {
  switch (t) {
    case meta_type::u8: case meta_type::boolean: return 1;
    case meta_type::i32: case meta_type::u32: case meta_type::f32: return 4;
    case meta_type::i64: case meta_type::u64: case meta_type::f64: return 8;
    default: return 0;
  }
}

// [off, off + size) inside [0, limit), without u64 overflow.
bool in_range(uint64_t off, uint64_t size, uint64_t limit) { return off <= limit && size <= limit - off; }

}  // namespace

model_file::~model_file() {
  if (map_) munmap(map_, size_t(size_));
}

std::unique_ptr<model_file> model_file::open(const std::string& path, std::string* error) {
  quant::register_types();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (error) *error = path + ": cannot open: " + std::strerror(errno);
    return nullptr;
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    if (error) *error = path + ": not a regular file";
    ::close(fd);
    return nullptr;
  }
  std::unique_ptr<model_file> f(new model_file());
  f->size_ = uint64_t(st.st_size);
  if (f->size_ > 0) {
    void* p = mmap(nullptr, size_t(f->size_), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      if (error) *error = path + ": mmap failed: " + std::strerror(errno);
      ::close(fd);
      return nullptr;
    }
    f->map_ = p;
    f->base_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping stays valid
  std::string e;
  if (!f->parse(&e)) {
    if (error) *error = path + ": " + e;
    return nullptr;
  }
  return f;
}

std::unique_ptr<model_file> model_file::from_memory(const void* data, size_t n, std::string* error) {
  quant::register_types();
  std::unique_ptr<model_file> f(new model_file());
  f->base_ = static_cast<const uint8_t*>(data);
  f->size_ = n;
  if (!f->parse(error)) return nullptr;
  return f;
}

bool model_file::parse(std::string* error) {
  auto fail = [&](const std::string& m, uint64_t off) {
    if (error) *error = m + at(off);
    return false;
  };
  if (size_ < kHeaderSize)
    return fail("file truncated: " + std::to_string(size_) + " bytes, shorter than the " +
                std::to_string(kHeaderSize) + "-byte header", size_);
  if (std::memcmp(base_, kFileMagic, 8) != 0) return fail("wrong magic: not a v4 model file", 0);
  cursor c{base_, 8, kHeaderSize, "header", error};
  uint32_t flags = 0, reserved = 0;
  uint64_t file_size = 0;
  c.get(&version_, "version");
  c.get(&flags, "flags");
  c.get(&alignment_, "alignment");
  c.get(&reserved, "reserved");
  c.get(&meta_off_, "");
  c.get(&meta_size_, "");
  c.get(&data_off_, "");
  c.get(&data_size_, "");
  c.get(&table_off_, "");
  c.get(&table_size_, "");
  c.get(&file_size, "");
  if (version_ != kFileVersion)
    return fail("unsupported version " + std::to_string(version_) + " (this reader knows version " +
                std::to_string(kFileVersion) + ")", 8);
  if (flags != 0) return fail("unsupported flags " + std::to_string(flags) + " (version 1 defines none)", 12);
  if (alignment_ < 64 || alignment_ > kMaxAlignment || (alignment_ & (alignment_ - 1)))
    return fail("bad alignment " + std::to_string(alignment_) + ": must be a power of two in [64, 1 MiB]", 16);
  if (reserved != 0) return fail("reserved header field is not zero", 20);
  if (file_size != size_)
    return fail("file " + std::string(file_size > size_ ? "truncated" : "has trailing bytes") + ": header says " +
                std::to_string(file_size) + " bytes, the file has " + std::to_string(size_), 72);
  struct sec {
    const char* name;
    uint64_t off, size, field;
  } secs[3] = {{"metadata", meta_off_, meta_size_, 24}, {"data", data_off_, data_size_, 40},
               {"table", table_off_, table_size_, 56}};
  for (const sec& s : secs) {
    if (s.off < kHeaderSize) return fail(std::string(s.name) + " section offset " + std::to_string(s.off) + " overlaps the header", s.field);
    if (!in_range(s.off, s.size, size_))
      return fail(std::string(s.name) + " section [" + std::to_string(s.off) + ", +" + std::to_string(s.size) +
                  ") extends beyond the end of the file (" + std::to_string(size_) + " bytes): truncated or corrupt", s.field);
  }
  for (int i = 0; i < 3; ++i)
    for (int j = i + 1; j < 3; ++j)
      if (secs[i].off < secs[j].off + secs[j].size && secs[j].off < secs[i].off + secs[i].size)
        return fail(std::string(secs[i].name) + " and " + secs[j].name + " sections overlap", secs[j].field);
  if (data_off_ % alignment_ != 0)
    return fail("misaligned data section: offset " + std::to_string(data_off_) + " is not a multiple of " +
                std::to_string(alignment_), 40);
  return parse_meta(error) && parse_table(error);
}

bool model_file::parse_meta(std::string* error) {
  cursor c{base_, meta_off_, meta_off_ + meta_size_, "metadata", error};
  uint64_t count = 0;
  if (!c.get(&count, "entry count")) return false;
  constexpr uint64_t kMinEntry = 4 + 1 + 4 + 8;  // key length, a 1-byte key, type, value length
  if (count > (c.end - c.pos) / kMinEntry)
    return c.fail("metadata: absurd entry count " + std::to_string(count) + " for a section of " +
                  std::to_string(meta_size_) + " bytes");
  meta_.reserve(size_t(std::min<uint64_t>(count, 4096)));  // grows only with parsed entries
  for (uint64_t i = 0; i < count; ++i) {
    std::string key;
    const uint64_t key_pos = c.pos;
    uint32_t type = 0;
    uint64_t len = 0;
    if (!c.str(&key, "key", kMaxNameLen) || !c.get(&type, "value type") || !c.get(&len, "value length")) return false;
    if (key.empty()) return c.fail("metadata: empty key");
    if (!c.need(len, "value")) return false;
    meta_value v;
    v.type = meta_type(type);
    v.bytes = base_ + c.pos;
    v.size = len;
    v.offset = c.pos;
    v.count = 1;
    const meta_type t = meta_type(type);
    const size_t fs = fixed_size(t);
    auto bad = [&](const std::string& m) {
      if (error) *error = "metadata '" + key + "': " + m + at(v.offset);
      return false;
    };
    if (fs) {
      if (len != fs) return bad(std::string(meta_type_name(t)) + " value of " + std::to_string(len) + " bytes");
      if (t == meta_type::boolean && v.bytes[0] > 1) return bad("bool value " + std::to_string(v.bytes[0]));
    } else if (t == meta_type::string || t == meta_type::blob) {
      v.count = len;
    } else if (t == meta_type::array) {
      if (len < 12) return bad("array value of " + std::to_string(len) + " bytes, shorter than its 12-byte head");
      uint32_t et = 0;
      std::memcpy(&et, v.bytes, 4);
      std::memcpy(&v.count, v.bytes + 4, 8);
      v.elem_type = meta_type(et);
      v.bytes += 12;
      v.size -= 12;
      const size_t es = fixed_size(v.elem_type);
      if (es) {
        if (v.count > v.size / es || v.count * es != v.size)
          return bad("array of " + std::to_string(v.count) + " " + meta_type_name(v.elem_type) + " does not fill its " +
                     std::to_string(v.size) + " bytes");
      } else if (v.elem_type == meta_type::string) {
        if (v.count > v.size / 8) return bad("array of " + std::to_string(v.count) + " strings cannot fit in " + std::to_string(v.size) + " bytes");
        uint64_t p = 0;
        for (uint64_t k = 0; k < v.count; ++k) {
          uint64_t n = 0;
          if (v.size - p < 8) return bad("string " + std::to_string(k) + " of the array is truncated");
          std::memcpy(&n, v.bytes + p, 8);
          p += 8;
          if (n > v.size - p) return bad("string " + std::to_string(k) + " of the array extends beyond the value");
          p += n;
        }
        if (p != v.size) return bad("string array has trailing bytes");
      } else {
        return bad("array of unsupported element type " + std::to_string(et));
      }
    }
    // Any other type id: unknown to this reader, kept as raw bytes and skipped by its length.
    c.pos += len;
    if (!meta_index_.emplace(key, meta_.size()).second) {
      if (error) *error = "metadata: duplicate key '" + key + "'" + at(key_pos);
      return false;
    }
    meta_.emplace_back(std::move(key), v);
  }
  if (c.pos != c.end) return c.fail("metadata: " + std::to_string(c.end - c.pos) + " trailing bytes after the last entry");
  return true;
}

bool model_file::parse_table(std::string* error) {
  cursor c{base_, table_off_, table_off_ + table_size_, "tensor table", error};
  uint64_t count = 0;
  if (!c.get(&count, "tensor count")) return false;
  constexpr uint64_t kMinEntry = 4 + 1 + 4 + 4 + 4 + 32 + 24 + 8 + 4;
  if (count > (c.end - c.pos) / kMinEntry)
    return c.fail("tensor table: absurd tensor count " + std::to_string(count) + " for a section of " +
                  std::to_string(table_size_) + " bytes");
  tensors_.reserve(size_t(std::min<uint64_t>(count, 65536)));  // grows only with parsed entries
  std::vector<uint64_t> entry_pos;
  for (uint64_t i = 0; i < count; ++i) {
    tensor_entry e;
    tensor_desc& d = e.d;
    const uint64_t pos = c.pos;
    int32_t type_id = 0;
    uint32_t n_dims = 0;
    std::string tname;
    if (!c.str(&d.name, "tensor name", kMaxNameLen) || !c.get(&type_id, "type id") ||
        !c.str(&tname, "type name", kMaxNameLen) || !c.get(&n_dims, "n_dims"))
      return false;
    for (int k = 0; k < kMaxDims; ++k)
      if (!c.get(&d.ne[k], "shape")) return false;
    uint64_t rel = 0;
    if (!c.get(&rel, "data offset") || !c.get(&e.size, "data size") || !c.get(&e.xxh3, "checksum") ||
        !c.get(&d.scale_block[0], "scale block") || !c.get(&d.scale_block[1], "scale block") ||
        !c.str(&d.scales, "scales name", kMaxNameLen))
      return false;
    auto bad = [&](const std::string& m) {
      if (error) *error = "tensor " + std::to_string(i) + " '" + d.name + "': " + m + at(pos);
      return false;
    };
    if (d.name.empty()) return bad("empty name");
    dtype t{};
    const bool id_ok = type_id >= 0 && type_id < int32_t(dtype::count) && type_registered(dtype(type_id));
    if (!type_from_name(tname, &t)) {
      std::string shown = tname.substr(0, 64);
      for (char& ch : shown)
        if (ch < 32 || ch > 126) ch = '?';
      return bad("unknown type '" + shown + "' (id " + std::to_string(type_id) + "): this reader cannot load it");
    }
    if (!id_ok || int32_t(t) != type_id)
      return bad("type id " + std::to_string(type_id) + " does not match type name '" + tname + "'");
    d.type = t;
    if (n_dims < 1 || n_dims > uint32_t(kMaxDims)) return bad("n_dims " + std::to_string(n_dims) + " not in 1..4");
    d.n_dims = int(n_dims);
    uint64_t want = 0;
    std::string shape_err;
    if (!tensor_nbytes(d, &want, &shape_err)) {
      if (error) *error = shape_err + at(pos);  // "tensor 'name': bad shape: ..."
      return false;
    }
    if (e.size != want)
      return bad("bad shape: byte size " + std::to_string(e.size) + " != " + std::to_string(want) +
                 " (row_size * rows for " + type_name(t) + ")");
    if (!in_range(rel, e.size, data_size_))
      return bad("data [" + std::to_string(rel) + ", +" + std::to_string(e.size) + ") extends beyond the data section of " +
                 std::to_string(data_size_) + " bytes");
    e.offset = data_off_ + rel;
    if (e.offset % alignment_ != 0)
      return bad("misaligned data: offset " + std::to_string(e.offset) + " is not a multiple of " + std::to_string(alignment_));
    const bool scaled = traits(t).scaled;
    if (scaled && (d.scales.empty() || d.scale_block[0] < 1 || d.scale_block[1] < 1))
      return bad(std::string("type ") + type_name(t) + " needs a scales tensor and scale_block >= 1");
    if (!scaled && (!d.scales.empty() || d.scale_block[0] != 0 || d.scale_block[1] != 0))
      return bad(std::string("type ") + type_name(t) + " takes no scales tensor");
    e.data = base_ + e.offset;
    if (!index_.emplace(d.name, tensors_.size()).second) return bad("duplicate tensor name");
    tensors_.push_back(std::move(e));
    entry_pos.push_back(pos);
  }
  if (c.pos != c.end) return c.fail("tensor table: " + std::to_string(c.end - c.pos) + " trailing bytes after the last entry");

  // Overlaps: sort extents by offset; empty tensors overlap nothing.
  std::vector<size_t> order(tensors_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
  const tensor_entry* prev = nullptr;
  for (size_t i : order) {
    const tensor_entry& e = tensors_[i];
    if (e.size == 0) continue;
    if (prev && e.offset < prev->offset + prev->size) {
      if (error)
        *error = "tensors '" + prev->d.name + "' and '" + e.d.name + "' overlap: data at " + std::to_string(e.offset) +
                 " starts before " + std::to_string(prev->offset + prev->size) + at(entry_pos[i]);
      return false;
    }
    prev = &e;
  }

  // Scales references: an e8m0 tensor of shape {ceil(ne0/b0), ceil(ne1/b1), ne2, ne3}.
  for (size_t i = 0; i < tensors_.size(); ++i) {
    tensor_entry& e = tensors_[i];
    if (e.d.scales.empty()) continue;
    auto bad = [&](const std::string& m) {
      if (error) *error = "tensor '" + e.d.name + "': " + m + at(entry_pos[i]);
      return false;
    };
    auto it = index_.find(e.d.scales);
    if (it == index_.end()) return bad("scales tensor '" + e.d.scales + "' is missing");
    const tensor_entry& s = tensors_[it->second];
    const int64_t want[4] = {(e.d.ne[0] + e.d.scale_block[0] - 1) / e.d.scale_block[0],
                             (e.d.ne[1] + e.d.scale_block[1] - 1) / e.d.scale_block[1], e.d.ne[2], e.d.ne[3]};
    if (s.d.type != dtype::e8m0) return bad("scales tensor '" + s.d.name + "' is " + type_name(s.d.type) + ", not e8m0");
    if (std::memcmp(s.d.ne, want, sizeof want) != 0)
      return bad("scales tensor '" + s.d.name + "' has shape [" + std::to_string(s.d.ne[0]) + ", " +
                 std::to_string(s.d.ne[1]) + ", " + std::to_string(s.d.ne[2]) + ", " + std::to_string(s.d.ne[3]) +
                 "], the scale block {" + std::to_string(e.d.scale_block[0]) + ", " + std::to_string(e.d.scale_block[1]) +
                 "} needs [" + std::to_string(want[0]) + ", " + std::to_string(want[1]) + ", " + std::to_string(want[2]) +
                 ", " + std::to_string(want[3]) + "]");
    e.scales = &s;
  }
  return true;
}

const meta_value* model_file::find_meta(const std::string& key) const {
  auto it = meta_index_.find(key);
  return it == meta_index_.end() ? nullptr : &meta_[it->second].second;
}

namespace {

const meta_value* typed(const model_file& f, const std::string& key, meta_type t, std::string* error) {
  const meta_value* v = f.find_meta(key);
  if (!v) {
    if (error) *error = "metadata key '" + key + "' is missing";
    return nullptr;
  }
  if (v->type != t) {
    if (error)
      *error = "metadata key '" + key + "' is " + meta_type_name(v->type) + ", expected " + meta_type_name(t);
    return nullptr;
  }
  return v;
}

template <typename T>
bool get_scalar(const model_file& f, const std::string& key, meta_type t, T* out, std::string* error) {
  const meta_value* v = typed(f, key, t, error);
  if (!v) return false;
  std::memcpy(out, v->bytes, sizeof(T));
  return true;
}

}  // namespace

bool model_file::get_u8(const std::string& k, uint8_t* v, std::string* e) const { return get_scalar(*this, k, meta_type::u8, v, e); }
bool model_file::get_i32(const std::string& k, int32_t* v, std::string* e) const { return get_scalar(*this, k, meta_type::i32, v, e); }
bool model_file::get_u32(const std::string& k, uint32_t* v, std::string* e) const { return get_scalar(*this, k, meta_type::u32, v, e); }
bool model_file::get_i64(const std::string& k, int64_t* v, std::string* e) const { return get_scalar(*this, k, meta_type::i64, v, e); }
bool model_file::get_u64(const std::string& k, uint64_t* v, std::string* e) const { return get_scalar(*this, k, meta_type::u64, v, e); }
bool model_file::get_f32(const std::string& k, float* v, std::string* e) const { return get_scalar(*this, k, meta_type::f32, v, e); }
bool model_file::get_f64(const std::string& k, double* v, std::string* e) const { return get_scalar(*this, k, meta_type::f64, v, e); }
bool model_file::get_bool(const std::string& k, bool* v, std::string* e) const {
  const meta_value* m = typed(*this, k, meta_type::boolean, e);
  if (!m) return false;
  *v = m->bytes[0] != 0;
  return true;
}
bool model_file::get_string(const std::string& k, std::string* v, std::string* e) const {
  const meta_value* m = typed(*this, k, meta_type::string, e);
  if (!m) return false;
  v->assign(reinterpret_cast<const char*>(m->bytes), size_t(m->size));
  return true;
}
bool model_file::get_blob(const std::string& k, std::string_view* v, std::string* e) const {
  const meta_value* m = typed(*this, k, meta_type::blob, e);
  if (!m) return false;
  *v = std::string_view(reinterpret_cast<const char*>(m->bytes), size_t(m->size));
  return true;
}

bool model_file::get_array(const std::string& k, meta_type elem, std::vector<uint8_t>* raw, uint64_t* count,
                           std::string* e) const {
  const meta_value* m = typed(*this, k, meta_type::array, e);
  if (!m) return false;
  if (m->elem_type != elem || !fixed_size(elem)) {
    if (e) *e = "metadata key '" + k + "' is an array of " + meta_type_name(m->elem_type) + ", expected " + meta_type_name(elem);
    return false;
  }
  raw->assign(m->bytes, m->bytes + m->size);
  *count = m->count;
  return true;
}

bool model_file::get_array_strings(const std::string& k, std::vector<std::string>* v, std::string* e) const {
  const meta_value* m = typed(*this, k, meta_type::array, e);
  if (!m) return false;
  if (m->elem_type != meta_type::string) {
    if (e) *e = "metadata key '" + k + "' is an array of " + meta_type_name(m->elem_type) + ", expected string";
    return false;
  }
  v->clear();
  uint64_t p = 0;
  for (uint64_t i = 0; i < m->count; ++i) {  // validated by parse_meta
    uint64_t n = 0;
    std::memcpy(&n, m->bytes + p, 8);
    v->emplace_back(reinterpret_cast<const char*>(m->bytes + p + 8), size_t(n));
    p += 8 + n;
  }
  return true;
}

const tensor_entry* model_file::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

bool model_file::verify(std::string* error, verify_stats* stats,
                        const std::function<void(uint64_t, uint64_t)>& progress) const {
  constexpr uint64_t kStep = uint64_t(256) << 20;
  uint64_t total = 0, done = 0;
  for (const tensor_entry& e : tensors_) total += e.size;
  const auto t0 = std::chrono::steady_clock::now();
  bool ok = true;
  for (const tensor_entry& e : tensors_) {
    XXH64_hash_t h;
    if (e.size <= kStep) {
      h = XXH3_64bits(e.data, size_t(e.size));
    } else {
      XXH3_state_t* st = XXH3_createState();
      if (!st) {
        if (error) *error = "verify: out of memory";
        return false;
      }
      XXH3_64bits_reset(st);
      for (uint64_t off = 0; off < e.size; off += kStep) {
        const uint64_t n = std::min(kStep, e.size - off);
        XXH3_64bits_update(st, e.data + off, size_t(n));
        if (progress) progress(done + off + n, total);
      }
      h = XXH3_64bits_digest(st);
      XXH3_freeState(st);
    }
    done += e.size;
    if (progress) progress(done, total);
    if (h != e.xxh3) {
      if (error) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "checksum mismatch: xxh3 %016llx, the table says %016llx",
                      (unsigned long long)h, (unsigned long long)e.xxh3);
        *error = "tensor '" + e.d.name + "': " + buf + at(e.offset);
      }
      ok = false;
      break;
    }
  }
  if (stats) {
    stats->bytes = done;
    stats->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return ok;
}

}  // namespace v4::model

// file_writer: the streaming writer of the v4 model file (docs/FORMAT.md).
#include <xxhash.h>

#include <cstdarg>
#include <cstring>
#include <limits>

#include "model/v4file.h"
#include "quant/quant.h"

namespace v4::model {

namespace {

constexpr size_t kChunk = size_t(4) << 20;  // producer chunk: bounded memory per tensor

void put(std::vector<uint8_t>& b, const void* p, size_t n) {
  const uint8_t* s = static_cast<const uint8_t*>(p);
  b.insert(b.end(), s, s + n);
}
template <typename T>
void put_le(std::vector<uint8_t>& b, T v) {  // the format is little-endian; so is every target
  static_assert(std::is_trivially_copyable_v<T>);
  put(b, &v, sizeof v);
}
void put_str32(std::vector<uint8_t>& b, const std::string& s) {
  put_le<uint32_t>(b, uint32_t(s.size()));
  put(b, s.data(), s.size());
}

size_t fixed_size(meta_type t) {
  switch (t) {
    case meta_type::u8: case meta_type::boolean: return 1;
    case meta_type::i32: case meta_type::u32: case meta_type::f32: return 4;
    case meta_type::i64: case meta_type::u64: case meta_type::f64: return 8;
    default: return 0;
  }
}

}  // namespace

const char* meta_type_name(meta_type t) {
  switch (t) {
    case meta_type::u8: return "u8";
    case meta_type::i32: return "i32";
    case meta_type::u32: return "u32";
    case meta_type::i64: return "i64";
    case meta_type::u64: return "u64";
    case meta_type::f32: return "f32";
    case meta_type::f64: return "f64";
    case meta_type::boolean: return "bool";
    case meta_type::string: return "string";
    case meta_type::blob: return "blob";
    case meta_type::array: return "array";
  }
  return "unknown";
}

bool tensor_nbytes(const tensor_desc& d, uint64_t* nbytes, std::string* error) {
  auto fail = [&](const std::string& m) {
    if (error) *error = "tensor '" + d.name + "': " + m;
    return false;
  };
  quant::register_types();  // idempotent: tensor_nbytes may be the first call into this library
  if (!type_registered(d.type)) return fail("unknown type id " + std::to_string(int(d.type)));
  if (d.n_dims < 1 || d.n_dims > kMaxDims) return fail("n_dims " + std::to_string(d.n_dims) + " not in 1..4");
  uint64_t n = 1;
  for (int i = 0; i < kMaxDims; ++i) {
    if (d.ne[i] < 0 || (i >= d.n_dims && d.ne[i] != 1))
      return fail("bad shape: ne[" + std::to_string(i) + "] = " + std::to_string(d.ne[i]));
    if (d.ne[i] != 0 && n > (uint64_t(1) << 62) / uint64_t(d.ne[i]))
      return fail("bad shape: element count overflows");
    n *= uint64_t(d.ne[i]);
  }
  const type_traits& tr = traits(d.type);
  if (d.ne[0] % tr.block_size != 0)
    return fail("bad shape: ne[0] = " + std::to_string(d.ne[0]) + " is not a multiple of the block size " +
                std::to_string(tr.block_size) + " of " + tr.name);
  const uint64_t blocks = n / uint64_t(tr.block_size);
  if (blocks != 0 && tr.block_bytes > std::numeric_limits<uint64_t>::max() / 2 / blocks)
    return fail("bad shape: byte size overflows");
  *nbytes = blocks * tr.block_bytes;
  return true;
}

file_writer::file_writer() { quant::register_types(); }

file_writer::~file_writer() {
  if (f_) std::fclose(f_);
}

bool file_writer::fail(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (error_.empty()) error_ = buf;
  return false;
}

bool file_writer::open(const std::string& path, uint32_t alignment) {
  if (f_) return fail("%s: writer already open", path.c_str());
  if (alignment < 64 || alignment > kMaxAlignment || (alignment & (alignment - 1)))
    return fail("alignment %u: must be a power of two in [64, %u]", alignment, kMaxAlignment);
  f_ = std::fopen(path.c_str(), "wb");
  if (!f_) return fail("%s: cannot create: %s", path.c_str(), std::strerror(errno));
  path_ = path;
  alignment_ = alignment;
  const uint8_t zeros[kHeaderSize] = {};
  return write(zeros, sizeof zeros);  // the real header is written by finish()
}

bool file_writer::write(const void* p, size_t n) {
  if (!f_) return fail("writer is not open");
  if (n && std::fwrite(p, 1, n, f_) != n) return fail("%s: write failed: %s", path_.c_str(), std::strerror(errno));
  pos_ += n;
  return true;
}

bool file_writer::pad_to(uint64_t align) {
  static const uint8_t zeros[4096] = {};
  while (pos_ % align) {
    const uint64_t n = std::min<uint64_t>(align - pos_ % align, sizeof zeros);
    if (!write(zeros, size_t(n))) return false;
  }
  return true;
}

bool file_writer::put_meta(const std::string& key, uint32_t type, const void* value, uint64_t n) {
  if (!f_ || finished_) return fail("metadata '%s': writer is not open", key.c_str());
  if (data_started_) return fail("metadata '%s': metadata must come before the first tensor", key.c_str());
  if (key.empty() || key.size() > kMaxNameLen) return fail("metadata key of length %zu: must be 1..%u bytes", key.size(), kMaxNameLen);
  if (!meta_keys_.emplace(key, 0).second) return fail("metadata '%s': duplicate key", key.c_str());
  put_str32(meta_, key);
  put_le<uint32_t>(meta_, type);
  put_le<uint64_t>(meta_, n);
  put(meta_, value, size_t(n));
  ++n_meta_;
  return true;
}

bool file_writer::set_u8(const std::string& k, uint8_t v) { return put_meta(k, uint32_t(meta_type::u8), &v, 1); }
bool file_writer::set_i32(const std::string& k, int32_t v) { return put_meta(k, uint32_t(meta_type::i32), &v, 4); }
bool file_writer::set_u32(const std::string& k, uint32_t v) { return put_meta(k, uint32_t(meta_type::u32), &v, 4); }
bool file_writer::set_i64(const std::string& k, int64_t v) { return put_meta(k, uint32_t(meta_type::i64), &v, 8); }
bool file_writer::set_u64(const std::string& k, uint64_t v) { return put_meta(k, uint32_t(meta_type::u64), &v, 8); }
bool file_writer::set_f32(const std::string& k, float v) { return put_meta(k, uint32_t(meta_type::f32), &v, 4); }
bool file_writer::set_f64(const std::string& k, double v) { return put_meta(k, uint32_t(meta_type::f64), &v, 8); }
bool file_writer::set_bool(const std::string& k, bool v) {
  const uint8_t b = v ? 1 : 0;
  return put_meta(k, uint32_t(meta_type::boolean), &b, 1);
}
bool file_writer::set_string(const std::string& k, std::string_view v) {
  return put_meta(k, uint32_t(meta_type::string), v.data(), v.size());
}
bool file_writer::set_blob(const std::string& k, const void* data, size_t n) {
  return put_meta(k, uint32_t(meta_type::blob), data, n);
}
bool file_writer::set_raw(const std::string& k, uint32_t type, const void* value, uint64_t n) {
  return put_meta(k, type, value, n);
}

bool file_writer::set_array(const std::string& k, meta_type elem, const void* elems, uint64_t count) {
  const size_t es = fixed_size(elem);
  if (!es) return fail("metadata '%s': arrays of %s need set_array_strings or are not allowed", k.c_str(), meta_type_name(elem));
  std::vector<uint8_t> v;
  put_le<uint32_t>(v, uint32_t(elem));
  put_le<uint64_t>(v, count);
  put(v, elems, size_t(count * es));
  return put_meta(k, uint32_t(meta_type::array), v.data(), v.size());
}

bool file_writer::set_array_strings(const std::string& k, const std::vector<std::string>& s) {
  std::vector<uint8_t> v;
  put_le<uint32_t>(v, uint32_t(meta_type::string));
  put_le<uint64_t>(v, s.size());
  for (const std::string& e : s) {
    put_le<uint64_t>(v, e.size());
    put(v, e.data(), e.size());
  }
  return put_meta(k, uint32_t(meta_type::array), v.data(), v.size());
}

bool file_writer::begin_data() {
  if (data_started_) return true;
  std::vector<uint8_t> head;
  put_le<uint64_t>(head, n_meta_);
  meta_offset_ = pos_;
  if (!write(head.data(), head.size()) || !write(meta_.data(), meta_.size())) return false;
  meta_size_ = pos_ - meta_offset_;
  std::vector<uint8_t>().swap(meta_);
  if (!pad_to(std::max<uint64_t>(kDataSectionAlign, alignment_))) return false;
  data_offset_ = pos_;
  data_started_ = true;
  return true;
}

bool file_writer::add_tensor(const tensor_desc& d, const void* data) {
  uint64_t n = 0;
  if (!tensor_nbytes(d, &n, &error_)) return false;
  if (!data && n) return fail("tensor '%s': no data", d.name.c_str());
  return add_tensor(d, [data](uint64_t off, void* dst, size_t len) {
    std::memcpy(dst, static_cast<const uint8_t*>(data) + off, len);
    return true;
  });
}

bool file_writer::add_tensor(const tensor_desc& d, const producer& produce) {
  if (!f_ || finished_) return fail("tensor '%s': writer is not open", d.name.c_str());
  if (d.name.empty() || d.name.size() > kMaxNameLen)
    return fail("tensor name of length %zu: must be 1..%u bytes", d.name.size(), kMaxNameLen);
  if (index_.count(d.name)) return fail("tensor '%s': duplicate name", d.name.c_str());
  uint64_t n = 0;
  if (!tensor_nbytes(d, &n, &error_)) return false;
  const bool scaled = traits(d.type).scaled;
  if (scaled && (d.scales.empty() || d.scale_block[0] < 1 || d.scale_block[1] < 1))
    return fail("tensor '%s': type %s needs a scales tensor and scale_block >= 1", d.name.c_str(), type_name(d.type));
  if (!scaled && (!d.scales.empty() || d.scale_block[0] || d.scale_block[1]))
    return fail("tensor '%s': type %s takes no scales", d.name.c_str(), type_name(d.type));
  if (!begin_data() || !pad_to(alignment_)) return false;

  entry e;
  e.d = d;
  e.offset = pos_ - data_offset_;
  e.size = n;
  XXH3_state_t* st = XXH3_createState();
  if (!st) return fail("out of memory");
  XXH3_64bits_reset(st);
  if (chunk_.empty()) chunk_.resize(kChunk);
  bool ok = true;
  for (uint64_t off = 0; ok && off < n;) {
    const size_t len = size_t(std::min<uint64_t>(kChunk, n - off));
    if (!produce(off, chunk_.data(), len)) {
      ok = fail("tensor '%s': the data producer failed at byte %llu", d.name.c_str(), (unsigned long long)off);
      break;
    }
    XXH3_64bits_update(st, chunk_.data(), len);
    ok = write(chunk_.data(), len);
    off += len;
  }
  e.xxh3 = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  if (!ok) return false;
  index_.emplace(d.name, table_.size());
  table_.push_back(std::move(e));
  return true;
}

bool file_writer::finish() {
  if (!f_ || finished_) return fail("finish: writer is not open");
  if (!error_.empty()) return false;  // a failed call left the file unusable
  if (!begin_data()) return false;
  const uint64_t data_size = pos_ - data_offset_;

  // Every scales reference names an e8m0 tensor of the shape the block implies.
  for (const entry& e : table_) {
    if (e.d.scales.empty()) continue;
    auto it = index_.find(e.d.scales);
    if (it == index_.end())
      return fail("tensor '%s': scales tensor '%s' was never written", e.d.name.c_str(), e.d.scales.c_str());
    const tensor_desc& s = table_[it->second].d;
    const int64_t want[4] = {(e.d.ne[0] + e.d.scale_block[0] - 1) / e.d.scale_block[0],
                             (e.d.ne[1] + e.d.scale_block[1] - 1) / e.d.scale_block[1], e.d.ne[2], e.d.ne[3]};
    if (s.type != dtype::e8m0 || std::memcmp(s.ne, want, sizeof want) != 0)
      return fail("tensor '%s': scales tensor '%s' must be e8m0 of shape [%lld, %lld, %lld, %lld]", e.d.name.c_str(),
                  e.d.scales.c_str(), (long long)want[0], (long long)want[1], (long long)want[2], (long long)want[3]);
  }

  std::vector<uint8_t> t;
  put_le<uint64_t>(t, table_.size());
  for (const entry& e : table_) {
    put_str32(t, e.d.name);
    put_le<int32_t>(t, int32_t(e.d.type));
    put_str32(t, type_name(e.d.type));
    put_le<uint32_t>(t, uint32_t(e.d.n_dims));
    for (int i = 0; i < kMaxDims; ++i) put_le<int64_t>(t, e.d.ne[i]);
    put_le<uint64_t>(t, e.offset);
    put_le<uint64_t>(t, e.size);
    put_le<uint64_t>(t, e.xxh3);
    put_le<int32_t>(t, e.d.scale_block[0]);
    put_le<int32_t>(t, e.d.scale_block[1]);
    put_str32(t, e.d.scales);
  }
  const uint64_t table_offset = pos_;
  if (!write(t.data(), t.size())) return false;

  std::vector<uint8_t> h;
  put(h, kFileMagic, 8);
  put_le<uint32_t>(h, kFileVersion);
  put_le<uint32_t>(h, 0);  // flags
  put_le<uint32_t>(h, alignment_);
  put_le<uint32_t>(h, 0);  // reserved
  put_le<uint64_t>(h, meta_offset_);
  put_le<uint64_t>(h, meta_size_);
  put_le<uint64_t>(h, data_offset_);
  put_le<uint64_t>(h, data_size);
  put_le<uint64_t>(h, table_offset);
  put_le<uint64_t>(h, t.size());
  put_le<uint64_t>(h, pos_);  // file size
  if (std::fseek(f_, 0, SEEK_SET) != 0 || std::fwrite(h.data(), 1, h.size(), f_) != h.size())
    return fail("%s: cannot write the header: %s", path_.c_str(), std::strerror(errno));
  const bool closed = std::fclose(f_) == 0;
  f_ = nullptr;
  finished_ = true;
  if (!closed) return fail("%s: close failed: %s", path_.c_str(), std::strerror(errno));
  return true;
}

}  // namespace v4::model

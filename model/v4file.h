// The v4 model file: one file per model (docs/FORMAT.md is the byte-exact specification).
//
//   header (80 B) | metadata section | pad to 4096 | data section (tensors, each aligned) | table
//
// Writing is streamed: metadata first, then tensors one by one (from memory or from a chunk
// callback), and the tensor table plus the final header at finish(); only the table is held
// in RAM. Reading maps the file read-only and validates every section, string, shape, offset
// and scales reference before any pointer is handed out. Nothing here aborts or throws on a bad
// file: every failure is an error string naming the problem and its byte offset.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tensor/tensor.h"

namespace v4::model {

constexpr char kFileMagic[8] = {'V', '4', 'C', 'P', 'P', 'M', 'D', 'L'};
constexpr uint32_t kFileVersion = 1;
constexpr uint64_t kHeaderSize = 80;
constexpr uint64_t kDataSectionAlign = 4096;  // the data section starts on a page boundary
constexpr uint32_t kDefaultAlignment = 64;    // each tensor: a cache line / one AVX-512 vector
constexpr uint32_t kMaxAlignment = 1u << 20;
constexpr uint32_t kMaxNameLen = 1024;        // tensor names, dtype names, metadata keys

// Metadata value types (u32 on disk). Arrays hold elements of one of the types u8..string.
enum class meta_type : uint32_t {
  u8 = 1, i32 = 2, u32 = 3, i64 = 4, u64 = 5, f32 = 6, f64 = 7, boolean = 8,
  string = 9, blob = 10, array = 11,
};
const char* meta_type_name(meta_type t);  // "u8", ..., "array"; "unknown" for other values

// One metadata value as stored in the mapped file (bytes point into the mapping).
struct meta_value {
  meta_type type{};
  meta_type elem_type{};      // arrays only
  uint64_t count = 0;         // arrays: number of elements; strings/blobs: bytes; scalars: 1
  const uint8_t* bytes = nullptr;  // the value bytes (arrays: the elements, after the 12-byte head)
  uint64_t size = 0;          // bytes at `bytes`
  uint64_t offset = 0;        // file offset of the value bytes (for messages)
};

// What the writer is told about a tensor, and what the reader reports.
struct tensor_desc {
  std::string name;
  dtype type = dtype::f32;
  int n_dims = 1;
  int64_t ne[kMaxDims] = {1, 1, 1, 1};  // innermost first, as tensor.h
  std::string scales;                   // scaled types: the name of the e8m0 scales tensor
  int32_t scale_block[2] = {0, 0};      // scaled types: elements along dim 0, rows along dim 1
};

// Bytes of a tensor of this type and shape, or an error (ne0 not a multiple of the block size,
// unregistered type, overflow). Shared by the writer and the reader.
bool tensor_nbytes(const tensor_desc& d, uint64_t* nbytes, std::string* error);

// ---- writer ---------------------------------------------------------------------------------
class file_writer {
 public:
  // Produces the bytes [offset, offset + n) of a tensor into dst; false = abort the write.
  using producer = std::function<bool(uint64_t offset, void* dst, size_t n)>;

  file_writer();
  ~file_writer();
  file_writer(const file_writer&) = delete;
  file_writer& operator=(const file_writer&) = delete;

  // alignment: of each tensor's data, a power of two in [64, 1 MiB].
  bool open(const std::string& path, uint32_t alignment = kDefaultAlignment);

  // Metadata: only before the first tensor. Keys are unique, non-empty.
  bool set_u8(const std::string& key, uint8_t v);
  bool set_i32(const std::string& key, int32_t v);
  bool set_u32(const std::string& key, uint32_t v);
  bool set_i64(const std::string& key, int64_t v);
  bool set_u64(const std::string& key, uint64_t v);
  bool set_f32(const std::string& key, float v);
  bool set_f64(const std::string& key, double v);
  bool set_bool(const std::string& key, bool v);
  bool set_string(const std::string& key, std::string_view v);
  bool set_blob(const std::string& key, const void* data, size_t n);
  // Arrays of fixed-size elements (elem u8..boolean): `count` packed little-endian elements.
  bool set_array(const std::string& key, meta_type elem, const void* elems, uint64_t count);
  bool set_array_strings(const std::string& key, const std::vector<std::string>& v);
  // Any type id with raw value bytes: for tools and tests ("a future writer").
  bool set_raw(const std::string& key, uint32_t type, const void* value, uint64_t n);

  // Tensors, streamed. The data is checksummed (xxh3-64) while it is written.
  bool add_tensor(const tensor_desc& d, const void* data);
  bool add_tensor(const tensor_desc& d, const producer& produce);

  // Writes the table, then the header. Checks every scales reference. The file is incomplete
  // (invalid) until finish() returns true.
  bool finish();

  const std::string& error() const { return error_; }

 private:
  bool fail(const char* fmt, ...);
  bool put_meta(const std::string& key, uint32_t type, const void* value, uint64_t n);
  bool begin_data();
  bool write(const void* p, size_t n);
  bool pad_to(uint64_t align);

  struct entry {
    tensor_desc d;
    uint64_t offset = 0, size = 0, xxh3 = 0;
  };
  FILE* f_ = nullptr;
  std::string path_, error_;
  uint32_t alignment_ = kDefaultAlignment;
  uint64_t pos_ = 0;
  uint64_t n_meta_ = 0;
  std::vector<uint8_t> meta_;                 // serialized entries, written at the first tensor
  std::unordered_map<std::string, int> meta_keys_;
  bool data_started_ = false, finished_ = false;
  uint64_t meta_offset_ = 0, meta_size_ = 0, data_offset_ = 0;
  std::vector<entry> table_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<uint8_t> chunk_;
};

// ---- reader ---------------------------------------------------------------------------------
struct tensor_entry {
  tensor_desc d;
  uint64_t offset = 0;  // absolute file offset of the data
  uint64_t size = 0;    // bytes
  uint64_t xxh3 = 0;    // xxh3-64 of the bytes
  const uint8_t* data = nullptr;           // into the mapping
  const tensor_entry* scales = nullptr;    // scaled types: the e8m0 scales tensor
};

struct verify_stats {
  uint64_t bytes = 0;
  double seconds = 0;
  double bytes_per_second() const { return seconds > 0 ? bytes / seconds : 0; }
};

class model_file {
 public:
  ~model_file();
  model_file(const model_file&) = delete;
  model_file& operator=(const model_file&) = delete;

  // Maps the file read-only and validates it. nullptr and *error on any problem.
  static std::unique_ptr<model_file> open(const std::string& path, std::string* error);
  // Validates a file image in memory (not copied: it must outlive the result). For tests/tools.
  static std::unique_ptr<model_file> from_memory(const void* data, size_t n, std::string* error);

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t file_size() const { return size_; }
  const uint8_t* data() const { return base_; }  // the whole mapped (or in-memory) image

  // Metadata, in file order. Unknown value types are kept (type as stored) and skippable.
  const std::vector<std::pair<std::string, meta_value>>& metadata() const { return meta_; }
  const meta_value* find_meta(const std::string& key) const;
  // Typed getters: false and *error when the key is missing or holds another type.
  bool get_u8(const std::string& key, uint8_t* v, std::string* error) const;
  bool get_i32(const std::string& key, int32_t* v, std::string* error) const;
  bool get_u32(const std::string& key, uint32_t* v, std::string* error) const;
  bool get_i64(const std::string& key, int64_t* v, std::string* error) const;
  bool get_u64(const std::string& key, uint64_t* v, std::string* error) const;
  bool get_f32(const std::string& key, float* v, std::string* error) const;
  bool get_f64(const std::string& key, double* v, std::string* error) const;
  bool get_bool(const std::string& key, bool* v, std::string* error) const;
  bool get_string(const std::string& key, std::string* v, std::string* error) const;
  bool get_blob(const std::string& key, std::string_view* v, std::string* error) const;  // no copy
  // Arrays: elements of a fixed-size type copied out, or the strings of a string array.
  bool get_array(const std::string& key, meta_type elem, std::vector<uint8_t>* raw, uint64_t* count,
                 std::string* error) const;
  bool get_array_strings(const std::string& key, std::vector<std::string>* v, std::string* error) const;

  // Tensors, in table order.
  const std::vector<tensor_entry>& tensors() const { return tensors_; }
  const tensor_entry* find(const std::string& name) const;

  // Recomputes every checksum. progress(bytes_done, bytes_total) is called between tensors and
  // every 256 MiB. False and *error (naming the first damaged tensor) on a mismatch.
  bool verify(std::string* error, verify_stats* stats = nullptr,
              const std::function<void(uint64_t, uint64_t)>& progress = {}) const;

 private:
  model_file() = default;
  bool parse(std::string* error);
  bool parse_meta(std::string* error);
  bool parse_table(std::string* error);

  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  void* map_ = nullptr;  // non-null when this object owns an mmap of size_ bytes
  uint32_t version_ = 0, alignment_ = 0;
  uint64_t meta_off_ = 0, meta_size_ = 0, table_off_ = 0, table_size_ = 0, data_off_ = 0, data_size_ = 0;
  std::vector<std::pair<std::string, meta_value>> meta_;
  std::unordered_map<std::string, size_t> meta_index_;
  std::vector<tensor_entry> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace v4::model

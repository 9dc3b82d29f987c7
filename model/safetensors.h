// Read-only access to Hugging Face `.safetensors` files and sharded checkpoint directories.
//
// File layout: u64 little-endian header length N, N bytes of JSON
//   { "__metadata__": {str: str}, "<name>": {"dtype": "BF16", "shape": [out, in],
//     "data_offsets": [begin, end]}, ... }
// then the data section; offsets are relative to its start (8 + N). Shapes are PyTorch order
// (outermost first, row-major).
//
// Everything is validated at open, before a pointer is handed out: header length against the
// file size (and a 100 MB cap, so a lying header never causes a huge allocation), JSON syntax,
// known dtype, shape x dtype size == byte length (overflow-checked), offsets inside the data
// section, and no two tensors overlapping. Errors name the file and the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace v4::model {

enum class st_dtype { F8_E4M3, F8_E8M0, I8, U8, BF16, F16, F32, I64, I32 };

const char* st_dtype_name(st_dtype t);
size_t st_dtype_size(st_dtype t);
bool st_dtype_from_name(const std::string& s, st_dtype* out);

class st_file;

struct st_tensor {
  std::string name;
  st_dtype dtype = st_dtype::F32;
  std::vector<int64_t> shape;  // PyTorch order: outermost first
  uint64_t offset = 0;         // absolute file offset of the data
  uint64_t size = 0;           // bytes
  const uint8_t* data = nullptr;
  const st_file* file = nullptr;
  int64_t numel() const;
};

class st_file {
 public:
  ~st_file();
  st_file(const st_file&) = delete;
  st_file& operator=(const st_file&) = delete;

  // Maps the file read-only and validates its header. nullptr and *error on any problem.
  static std::unique_ptr<st_file> open(const std::string& path, std::string* error);
  // Validates an in-memory image (not copied; must outlive the result). `path` names it in errors.
  static std::unique_ptr<st_file> from_memory(const void* data, size_t n, const std::string& path,
                                              std::string* error);

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  const std::vector<st_tensor>& tensors() const { return tensors_; }
  const st_tensor* find(const std::string& name) const;

  // The whole file's bytes; mapped() is false for from_memory images (never madvise those).
  const uint8_t* base() const { return base_; }
  bool mapped() const { return map_ != nullptr; }

 private:
  st_file() = default;
  bool parse(std::string* error);

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  void* map_ = nullptr;
  std::vector<st_tensor> tensors_;
  std::map<std::string, size_t> index_;
};

// A checkpoint directory: `model.safetensors.index.json` (weight_map: name -> shard file), or
// without it every `*.safetensors` file in the directory. Tensor names are unique across shards.
class st_checkpoint {
 public:
  static std::unique_ptr<st_checkpoint> open(const std::string& dir, std::string* error);

  const std::vector<std::unique_ptr<st_file>>& files() const { return files_; }
  // Every tensor by name (pointers into files()).
  const std::map<std::string, const st_tensor*>& tensors() const { return tensors_; }
  const st_tensor* find(const std::string& name) const;
  uint64_t total_bytes() const;

 private:
  std::vector<std::unique_ptr<st_file>> files_;
  std::map<std::string, const st_tensor*> tensors_;
};

}  // namespace v4::model

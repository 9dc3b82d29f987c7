// Internals of the conversion engine shared by model/convert.cpp (planning a checkpoint or a
// model file) and model/convert_stream.cpp (streaming jobs into a file_writer). Not a public
// API: use model/convert.h.
//
//   plan:   every output tensor becomes a job: a source view (pieces of mapped source tensors,
//           concatenated: experts are stacked, fused gate_up is split), a mode (copy bytes,
//           ids i64 -> i32, or requantize rows through f32) and the output description.
//   write:  jobs are streamed through file_writer::add_tensor(desc, producer); requantization
//           works on batches of row groups (one row, or one FP8 block row) on N threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "model/convert.h"
#include "model/names.h"
#include "model/v4file.h"

namespace v4::model::convert_detail {

// A read-only mmap of a whole source file (base == nullptr: memory that is not a file mapping,
// whose pages must never be dropped).
struct mapping {
  const uint8_t* base = nullptr;
  uint64_t size = 0;
};

// Drops the mapped pages of [p, p + n) from this process; they stay in the page cache, and a
// later access maps them again. Keeps the resident set bounded while a large model is streamed.
void drop_pages(const mapping& m, const uint8_t* p, uint64_t n);

// The bytes of one output tensor: a concatenation of pieces of mapped source tensors.
struct byte_source {
  struct piece {
    const uint8_t* p;
    uint64_t n;
    mapping map;
  };
  std::vector<piece> pieces;
  std::vector<uint64_t> starts;
  uint64_t size = 0;
  mutable uint64_t released = 0;

  void add(const uint8_t* p, uint64_t n, mapping m) {
    pieces.push_back({p, n, m});
    starts.push_back(size);
    size += n;
  }
  size_t piece_at(uint64_t off) const {
    return size_t(std::upper_bound(starts.begin(), starts.end(), off) - starts.begin()) - 1;
  }
  // Pointer to [off, off + n) when it lies in one piece, else nullptr.
  const uint8_t* direct(uint64_t off, uint64_t n) const {
    if (pieces.empty()) return nullptr;
    const size_t i = piece_at(off);
    return off - starts[i] + n <= pieces[i].n ? pieces[i].p + (off - starts[i]) : nullptr;
  }
  void read(uint64_t off, void* dst, uint64_t n) const {
    uint8_t* d = static_cast<uint8_t*>(dst);
    while (n > 0) {
      const size_t i = piece_at(off);
      const uint64_t in = off - starts[i];
      const uint64_t k = std::min<uint64_t>(n, pieces[i].n - in);
      std::memcpy(d, pieces[i].p + in, size_t(k));
      d += k;
      off += k;
      n -= k;
    }
  }
  // Drops the pages of [released, end) once consumed: a multi-GiB stacked expert tensor then
  // costs a few MiB of resident memory, not its size.
  void release_upto(uint64_t end) const {
    if (end <= released || pieces.empty()) return;
    for (size_t i = piece_at(released); i < pieces.size() && starts[i] < end; ++i) {
      const uint64_t b = std::max(released, starts[i]) - starts[i];
      const uint64_t e = std::min(end, starts[i] + pieces[i].n) - starts[i];
      if (e > b) drop_pages(pieces[i].map, pieces[i].p + b, e - b);
    }
    released = end;
  }
  // After a tensor: drop every mapped page of the files it read. Whole files, because the
  // kernel's fault-around also maps neighbouring pages (other tensors') on each fault.
  void release() const {
    const uint8_t* last = nullptr;
    for (const piece& p : pieces)
      if (p.map.base && p.map.base != last) {
        drop_pages(p.map, p.map.base, p.map.size);
        last = p.map.base;
      }
  }
};

struct tensor_source {
  dtype type = dtype::f32;  // element type in our terms (i64 only for ids)
  int64_t ne[4] = {1, 1, 1, 1};
  byte_source data;
  byte_source scales;       // scaled types: e8m0 codes, one row of ceil(ne0/bk) per block row
  int32_t scale_block[2] = {0, 0};
  std::string origin;       // "'<source name>' in <file>" for messages
};

enum class job_mode { copy, ids, requant, scales_copy };

struct job {
  tensor_desc out;
  tensor_source src;
  job_mode mode = job_mode::copy;
  int64_t n_experts = 0;  // ids: values must lie in [0, n_experts)
};

std::string shape_str(const int64_t* ne, int n);               // "{4096, 1024}"
std::string torch_shape_str(const std::vector<int64_t>& shape);  // "[1024, 4096]"
std::string human(uint64_t bytes);                               // "1.50 GiB"
bool is_plain_float(dtype t);

// The output type of a tensor of role `role` stored as `src` when `requested` is asked for
// ("native"/"keep" = as stored); on a fallback (docs/CONVERT.md), `fallback` says which and why.
dtype choose_type(tensor_role role, dtype src, const std::string& requested, int64_t ne0, std::string* fallback);

// Appends the job(s) that write `name` (ne from src) as `target`: a copy when nothing changes
// (scaled types: the weight, then its scales), ids -> i32, or a requantization.
void plan_output(const std::string& name, tensor_role role, int n_dims, tensor_source src, dtype target,
                 const int32_t fp8_block[2], int64_t n_experts, std::vector<job>* jobs);

// Writes `out_path` (through out_path.tmp, renamed on success): metadata by write_meta, then
// every job in order.
bool write_all(const std::string& out_path, bool force, const std::vector<job>& jobs,
               const std::function<bool(file_writer&, std::string*)>& write_meta, int threads,
               const std::function<void(const convert_progress&)>& progress, convert_stats* stats,
               std::string* error);

// --type names: quantize_type_names(), plus "native" when allowed.
bool valid_type(const std::string& t, bool allow_native);
std::string type_list(bool with_native);

}  // namespace v4::model::convert_detail

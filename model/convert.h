// The streaming conversion engine behind `v4 convert` and `v4 quantize`.
//
// convert_checkpoint: a Hugging Face style checkpoint directory (config.json, *.safetensors,
//   optional model.safetensors.index.json and tokenizer.json) -> one v4 model file. The whole
//   checkpoint is checked against expected_tensors() (names.h) before anything is written;
//   tensors are then streamed one by one from the mapped shards (a chunk at a time, pages
//   released after each tensor), so the resident set stays bounded whatever the model size.
// quantize_model: a v4 model file -> another, re-quantizing per the same policy, metadata copied.
//
// Type policy (docs/CONVERT.md): role `weight` tensors (names.h) take the requested type;
// `param` tensors keep their stored float type; `ids` become i32. A type that cannot hold a
// row (K-quants need ne0 % 256 == 0, q8_0 ne0 % 32 == 0) falls back: q*_k -> q8_0 -> bf16.
// `native` (convert) keeps FP8/MXFP4 bytes and scales bit-exactly. Output is written to
// OUT.tmp and renamed on success; an existing OUT is refused unless `force`.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace v4::model {

struct convert_progress {
  uint64_t bytes_done = 0, bytes_total = 0;  // output bytes
  size_t tensor_index = 0, n_tensors = 0;
  std::string tensor;                         // the tensor being written
  double seconds = 0;
};

struct type_total {
  uint64_t tensors = 0, bytes = 0;
};

struct convert_stats {
  uint64_t bytes_in = 0;    // source bytes read
  uint64_t bytes_out = 0;   // tensor data written
  uint64_t file_size = 0;
  size_t tensors = 0;
  double seconds = 0;
  std::map<std::string, type_total> per_type;  // output type name -> totals
};

struct convert_options {
  std::string type = "native";  // native | f32 | bf16 | f16 | q8_0 | q4_k | q3_k | q2_k | fp8_e4m3 | mxfp4
  int threads = 1;
  bool force = false;           // overwrite an existing output
  std::function<void(const convert_progress&)> progress;  // after every chunk (writer thread)
  std::function<void(const std::string&)> note;           // informational lines
};

bool convert_checkpoint(const std::string& dir, const std::string& out_path, const convert_options& opt,
                        convert_stats* stats, std::string* error);

// `--rule REGEX=TYPE`: tensors whose name matches REGEX (std::regex_search, ECMAScript) get TYPE
// (a type name or `keep`); the first matching rule wins; rules may also target `param` tensors.
struct quantize_rule {
  std::string pattern;
  std::string type;
};
bool parse_quantize_rule(const std::string& text, quantize_rule* rule, std::string* error);

struct quantize_options {
  std::string type;                  // f32 | bf16 | f16 | q8_0 | q4_k | q3_k | q2_k | fp8_e4m3 | mxfp4
  std::vector<quantize_rule> rules;
  int threads = 1;
  bool force = false;
  std::function<void(const convert_progress&)> progress;
  std::function<void(const std::string&)> note;
};

bool quantize_model(const std::string& in_path, const std::string& out_path, const quantize_options& opt,
                    convert_stats* stats, std::string* error);

// "42.0% 1.10 GiB / 2.60 GiB  850 MB/s  ETA 12 s  [17/230] layers.3.ffn.experts.w1.weight"
std::string progress_line(const convert_progress& p);

// The target types --type accepts (convert also accepts "native").
const std::vector<std::string>& quantize_type_names();

}  // namespace v4::model

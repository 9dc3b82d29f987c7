// A loaded DeepSeek-V4 model: hyper-parameters plus every weight bound as a tensor.
//
// Matmul weights stay where the file put them (a read-only mmap, any type the matmul kernels
// take: f32, bf16, f16, fp8_e4m3/mxfp4 with their e8m0 scales, q8_0, K-quants). The small
// parameters the elementwise ops read (norm weights, mHC fn/base/scale, sinks, compressor ape,
// router bias) are converted to f32 once at load time into a model-owned buffer, since
// elementwise ops take f32 only. Tensor names are the canonical ones of docs/FORMAT.md.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/hparams.h"
#include "model/placement.h"
#include "model/v4file.h"
#include "tensor/backend.h"
#include "tensor/tensor.h"

namespace v4::model {

// A compressor (CSA: ratio 4 with overlapping windows, c = 2; HCA: ratio 128, c = 1), used by
// the attention (width head_dim) and by the CSA indexer (width index_head_dim).
struct compressor_weights {
  tensor* ape = nullptr;     // f32 [c*width, ratio]: per-slot score bias
  tensor* wkv = nullptr;     // [D, c*width]
  tensor* wgate = nullptr;   // [D, c*width]
  tensor* norm = nullptr;    // f32 [width]
};

// Projections that read the same input, laid out as one weight when the placement copies them to
// an accelerator (model_load.cpp: place_weights), so that one matmul computes them all:
// w [K, sum of M_i] (routed experts: [K, sum of M_i, E], each expert's member rows one after
// another), scales likewise; member i is rows [row0[i], row0[i] + M_i) of it (of each expert).
// The members stay valid tensors: they alias their rows of w (routed experts: strided over E).
// Never on the CPU: the file mapping keeps weights apart there.
struct fused_weight {
  tensor* w = nullptr;
  std::vector<const tensor*> members;  // in row order
  std::vector<int64_t> row0;           // first row of each member
};

struct layer_weights {
  int32_t ratio = 0;  // 0 sliding window only, 4 CSA, 128 HCA
  bool hash = false;  // routes by tid2eid

  tensor* attn_norm = nullptr;  // f32 [D]
  tensor* ffn_norm = nullptr;   // f32 [D]
  tensor* hc_attn_fn = nullptr, *hc_attn_base = nullptr, *hc_attn_scale = nullptr;  // f32
  tensor* hc_ffn_fn = nullptr, *hc_ffn_base = nullptr, *hc_ffn_scale = nullptr;     // f32

  // attention
  tensor* sink = nullptr;       // f32 [H]
  tensor* wq_a = nullptr;       // [D, q_lora]
  tensor* q_norm = nullptr;     // f32 [q_lora]
  tensor* wq_b = nullptr;       // [q_lora, H*head_dim]
  tensor* wkv = nullptr;        // [D, head_dim]
  tensor* kv_norm = nullptr;    // f32 [head_dim]
  tensor* wo_a = nullptr;       // [H*head_dim/G, G*o_lora]
  tensor* wo_b = nullptr;       // [G*o_lora, D]
  compressor_weights comp;      // ratio 4 or 128
  // CSA indexer
  tensor* idx_wq_b = nullptr;       // [q_lora, IH*ID]
  tensor* idx_weights = nullptr;    // [D, IH]
  compressor_weights idx_comp;      // ratio 4, width ID

  // MoE
  tensor* gate = nullptr;       // [D, E] router
  tensor* gate_bias = nullptr;  // f32 [E] (learned-router layers)
  const int32_t* tid2eid = nullptr;  // [V][n_used] (hash layers; host memory)
  tensor* w1 = nullptr, *w3 = nullptr;  // [D, I, E]
  tensor* w2 = nullptr;                 // [I, D, E]
  tensor* sw1 = nullptr, *sw3 = nullptr;  // shared expert [D, I*n_shared]
  tensor* sw2 = nullptr;                  // [I*n_shared, D]

  // Combined weights (fused_weight), made by place_weights from each set of projections reading
  // one input, grouped by device, type, K and scale block (a member whose first row would cut a
  // scale block stays alone): attention's x feeds wq_a, wkv, the compressor's wkv / wgate and the
  // indexer's compressor wkv / wgate and weights_proj; the FFN's x feeds sw1, sw3 and w1, w3.
  // Empty when nothing is combined (every weight on the CPU, or no two members compatible).
  std::vector<fused_weight> fused;
};

struct load_options {
  // progress(done, total) in [0, 1] units of work; return false to cancel the load.
  std::function<bool(uint64_t done, uint64_t total)> progress;
  bool verify = false;  // recompute every tensor checksum first
  // Which device holds each weight (placement.h). With no accelerator registered (or
  // n_gpu_layers = 0 and no overrides) everything stays in the file mapping on the CPU.
  placement_options place;
};

// Bytes of weights per device after loading (for the load report).
struct placed_bytes {
  const device* dev;
  size_t bytes;
  int n_tensors;
};

class model {
 public:
  ~model();
  // Opens, validates and binds a model file. nullptr and *error (naming the tensor or key) on
  // any problem: missing or misshaped tensor, unsupported type, a config we cannot run.
  static std::unique_ptr<model> load(const std::string& path, const load_options& opt, std::string* error);
  // Same, from an already opened file (takes ownership).
  static std::unique_ptr<model> from_file(std::unique_ptr<model_file> file, const load_options& opt,
                                          std::string* error);

  const hparams& hp() const { return hp_; }
  const model_file& file() const { return *file_; }
  // Weight bytes per device (the CPU first; it includes the mapped weights it reads in place).
  const std::vector<placed_bytes>& placed() const { return placed_; }
  // The device that holds layer il's attention weights (its state goes there too).
  device* layer_device(int64_t il) const;
  // The accelerator any weight went to (nullptr: CPU only).
  device* accelerator() const { return accel_; }
  // The device holding the weight of this canonical name (nullptr: no such weight).
  const device* weight_device(const std::string& name) const;
  // The combined weight that holds this weight's rows (layer_weights::fused) and the first of
  // them, or {nullptr, 0} when w is not combined.
  struct fused_rows {
    tensor* w = nullptr;
    int64_t row0 = 0;
  };
  fused_rows fused_of(const tensor* w) const;

  tensor* embed = nullptr;      // [D, V] (any type get_rows reads)
  tensor* head = nullptr;       // [D, V]
  tensor* norm = nullptr;       // f32 [D]
  tensor* hc_head_fn = nullptr, *hc_head_base = nullptr, *hc_head_scale = nullptr;  // f32
  std::vector<layer_weights> layers;

 private:
  model() = default;
  bool bind(const load_options& opt, std::string* error);
  bool place_weights(const placement& pl, const load_options& opt, uint64_t units, std::string* error);

  hparams hp_;
  std::unique_ptr<model_file> file_;
  context ctx_;                        // owns the weight tensors
  std::unique_ptr<buffer> mapped_;     // the file mapping, as a CPU buffer
  std::unique_ptr<buffer> converted_;  // small parameters converted to f32
  std::vector<tensor*> weights_;       // every bound weight (scales reached through ->scales)
  std::vector<std::unique_ptr<buffer>> device_bufs_;  // weights copied to accelerators
  std::vector<placed_bytes> placed_;
  std::vector<std::pair<std::string, const device*>> weight_dev_;  // sorted by name
  std::vector<std::pair<const tensor*, fused_rows>> fused_index_;  // member -> combined, sorted
  device* accel_ = nullptr;
};

}  // namespace v4::model

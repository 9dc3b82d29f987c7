// DeepSeek-V4 hyper-parameters: one struct, filled from a checkpoint's config.json (either form:
// the official one with `compress_ratios` / `rope_scaling`, or transformers' with `layer_types`,
// `mlp_layer_types`, `rope_parameters`) by `v4 convert`, stored in the model file's metadata,
// and read back by the runtime. Field names follow the official config (research §1.1); the
// metadata keys are "deepseek_v4.<field>" (docs/FORMAT.md lists them).
//
// validate() is the single place that says which configs we can run: every consumer (convert,
// the graph builder, the C API) calls it and reports its message as is.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace v4::model {

class file_writer;
class model_file;

struct hparams {
  std::string architecture = "deepseek_v4";  // general.architecture
  std::string name;                          // general.name (free text, may be empty)

  // sizes
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;        // D
  int64_t n_layers = 0;           // num_hidden_layers (main stack, without MTP)
  int64_t n_heads = 0;            // num_attention_heads
  int64_t head_dim = 0;           // 512 in the real models (K = V latent width)
  int64_t rope_dims = 0;          // qk_rope_head_dim: RoPE on the LAST rope_dims dims of a head
  int64_t q_lora_rank = 0;
  int64_t o_lora_rank = 0;
  int64_t o_groups = 0;

  // MoE
  int64_t moe_inter = 0;          // moe_intermediate_size
  int64_t n_experts = 0;          // n_routed_experts
  int64_t n_shared_experts = 0;
  int64_t n_experts_used = 0;     // num_experts_per_tok
  int64_t n_hash_layers = 0;      // layers [0, n_hash_layers) route by tid2eid
  float routed_scale = 1.0f;      // routed_scaling_factor
  std::string score_func = "sqrtsoftplus";
  bool norm_topk_prob = true;
  float swiglu_limit = 0.0f;      // 0: no clamp

  // norms and hyper-connections
  float rms_eps = 1e-6f;
  int64_t hc_mult = 4;
  int64_t hc_sinkhorn_iters = 20;
  float hc_eps = 1e-6f;

  // attention layout: compress_ratios[L] in {0 (sliding window only), 4 (CSA), 128 (HCA)}
  int64_t window = 128;                  // sliding_window
  std::vector<int32_t> compress_ratios;  // n_layers entries (main stack)
  int64_t n_mtp_layers = 0;              // num_nextn_predict_layers
  std::vector<int32_t> mtp_compress_ratios;  // n_mtp_layers entries (the tail of the official list)

  // RoPE: sliding-only layers use rope_theta without YaRN; CSA/HCA layers compress_rope_theta
  // with YaRN (rope_factor > 1).
  float rope_theta = 10000.0f;
  float compress_rope_theta = 160000.0f;
  float rope_factor = 1.0f;              // rope_scaling.factor (yarn)
  int64_t rope_orig_ctx = 0;             // rope_scaling.original_max_position_embeddings
  float rope_beta_fast = 32.0f;
  float rope_beta_slow = 1.0f;
  int64_t max_position = 0;              // max_position_embeddings

  // lightning indexer (CSA layers)
  int64_t index_n_heads = 0;
  int64_t index_head_dim = 0;
  int64_t index_topk = 0;

  // tokens
  int32_t bos_id = 0;
  int32_t eos_id = 1;
  bool tie_embeddings = false;

  // how the source checkpoint stored its weights (informational; the tensor table is the truth)
  int32_t weight_block[2] = {128, 128};  // FP8 scale block (V4: 128x128, V4.1: 32x32)
  std::string expert_dtype;              // "fp4", "fp8" or "" (as the config said)

  bool is_hash_layer(int64_t layer) const { return layer < n_hash_layers; }
  int32_t compress_ratio(int64_t layer) const { return compress_ratios[static_cast<size_t>(layer)]; }

  // Every limit we rely on (positive sizes, head_dim > rope_dims and both even, hidden_size
  // divisible as the projections need, ratios in {0,4,128}, index_head_dim a power of two, topk
  // counts in range, ...). False with a message naming the key and the value otherwise.
  bool validate(std::string* error) const;
};

// config.json text (either form) -> hparams. False and *error naming the key on a missing or
// out-of-range key or an unknown architecture. Calls validate().
bool hparams_from_config_json(const std::string& json_text, hparams* hp, std::string* error);

// Metadata: write every field ("general.architecture", "general.name", "deepseek_v4.<field>").
bool hparams_write(const hparams& hp, file_writer& w, std::string* error);
// Read back (and validate). A file of another architecture gives a clear error.
bool hparams_read(const model_file& f, hparams* hp, std::string* error);

}  // namespace v4::model

// Canonical tensor names of a v4 model file (the runtime binds exactly these; docs/FORMAT.md
// lists them), the full expected list for a config, and the mapping from checkpoint names.
//
// Accepted checkpoint names (map_source_name):
//   * official DeepSeek names ("layers.3.attn.wq_a.weight", per-expert "layers.3.ffn.experts.7.w1.weight",
//     FP8/MXFP4 scales "<base>.scale"), optionally under a "model." prefix;
//   * transformers' module names ("model.layers.3.self_attn.q_a_proj.weight", fused
//     "model.layers.3.mlp.experts.gate_up_proj" [E, 2I, D] and "mlp.experts.down_proj" [E, D, I]);
//   * the names transformers >= 5.x writes back with save_pretrained (official names under
//     "model.", except "model.embed_tokens.weight", "model.hc_head.hc_fn", and "attn.norm.weight"
//     for attn.kv_norm: its reverse renaming maps every "kv_norm" to "norm").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/hparams.h"

namespace v4::model {

// What the converter and quantizer may do with a tensor.
enum class tensor_role {
  weight,  // a big matmul weight: attention projections, experts, shared experts, e/h_proj,
           // embed/head. Requantized by --type; may be stored FP8 / MXFP4 with scales.
  param,   // norms, hc_*, ape, attn_sink, router weight and bias, compressor and indexer
           // projections: kept in the float type they are stored in.
  ids,     // ffn.gate.tid2eid: integer expert ids, stored as i32.
};
const char* role_name(tensor_role r);

// The role of a canonical name (by its last components).
tensor_role role_of(const std::string& canonical);

struct expected_tensor {
  std::string name;
  tensor_role role = tensor_role::param;
  int n_dims = 1;
  int64_t ne[4] = {1, 1, 1, 1};  // logical shape, innermost first
};

// Every tensor the runtime needs for hp, in file order (top, layers, mtp).
std::vector<expected_tensor> expected_tensors(const hparams& hp);

// "layers.0.attn.wq_a.weight" -> "layers.0.attn.wq_a.scale" (the e8m0 scales of a scaled weight).
std::string scales_name(const std::string& weight_name);

// A checkpoint tensor name, classified.
struct source_name {
  enum kind_t {
    plain,          // canonical: one source tensor -> one output tensor (or its .scale)
    expert,         // one expert's w1/w2/w3 (or .scale): canonical = the stacked name
    fused_gate_up,  // transformers' experts.gate_up_proj: canonical = the layer prefix + "ffn.experts."
    fused_down,     // transformers' experts.down_proj
    dropped,        // mtp.*emb*, mtp.*head.weight: shared with the main model, not stored
    unknown,
  } kind = unknown;
  std::string canonical;  // the output tensor's name (for .scale sources: the weight's name)
  bool is_scale = false;  // a ".scale" (e8m0) tensor of the weight `canonical`
  int64_t expert_index = -1;  // kind == expert
};
source_name map_source_name(const std::string& name);

}  // namespace v4::model

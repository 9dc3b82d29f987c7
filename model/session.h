// A decoding session: one sequence's state on top of a loaded model, and evaluation of tokens.
//
// State per layer (research §3.10), all in a session-owned buffer:
//   every layer   raw-window ring: the last `window` (128) K=V rows, slot = position mod window
//   CSA / HCA     compressor pending tokens: the (kv, score) of the last c*ratio tokens, slot =
//                 position mod (c*ratio), score initialised to -inf (c = 2 overlapping for CSA)
//                 compressed rows [head_dim, n_ctx/ratio]
//   CSA           the indexer's own compressor pending tokens and compressed keys [ID, n_ctx/4]
// eval() runs the tokens in chunks of n_batch; any split of a sequence into eval calls and
// chunks gives the same logits as one pass (tests/forward checks it).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "tensor/sched.h"

namespace v4::model {

struct session_options {
  int64_t n_ctx = 4096;    // most positions this session can hold
  int64_t n_batch = 256;   // tokens per graph (prefill chunk), at most (prefill_chunk)
  // Memory the lightning indexer's scores of one CSA layer may take in a prefill chunk (f32
  // [compressed rows, index heads x T]): a chunk is cut shorter where n_batch tokens would need
  // more (at 512K tokens of context and 256-token chunks they would be 8.6 GB).
  int64_t max_score_bytes = int64_t(2) << 30;
  int n_threads = 0;       // 0: all cores
  bool qat = true;         // official numerics: activation FP8 before FP8/FP4 matmuls, KV FP8
                           // round-trip, indexer Hadamard + FP4 round-trip. Off: as transformers.
  // Storage of the raw-window ring and the compressed rows: bf16 (as the official cache; with
  // QAT on, the FP8/FP4-rounded dims are exact in bf16) or f32 (bit-faithful to an f32
  // reference). A chunk's own K=V rows are rounded to this type too, so every split of a
  // sequence sees the same keys. The compressors' pending state is always f32.
  dtype cache_type = dtype::bf16;
  // With QAT on, store compressed rows in the formats the QAT rounds them to (losslessly): main
  // rows' non-RoPE dims fp8_e4m3 + e8m0 per 64, RoPE dims in cache_type; indexer keys mxfp4.
  // At V4-Flash dims that is ~3.5 KB of state per token instead of 6.9 KB (bf16) or 13.8 KB (f32).
  bool compact_rows = true;
  // Named intermediates to hand to dump_fn after each chunk: name prefixes such as "L3.attn_out",
  // "L0." (everything of layer 0) or "final_norm". Names: L<i>.{attn_in, q, kv, comp_rows,
  // index_rows, index_score, attn_out, streams_mid, ffn_in, ffn_out, streams}, hc_head, final_norm.
  // Shapes are innermost first (e.g. [D, T]); p0 is the chunk's first position.
  std::vector<std::string> dump;
  std::function<void(const char* name, const int64_t* ne, const float* data, int64_t p0)> dump_fn;
};

class session {
 public:
  ~session();
  static std::unique_ptr<session> create(const model& m, const session_options& opt, std::string* error);

  // Evaluates n tokens at positions n_past() .. n_past()+n-1. logits (if non-null) receives
  // vocab floats per token when all_logits, else for the last token only.
  bool eval(const int32_t* tokens, int64_t n, bool all_logits, std::vector<float>* logits, std::string* error);

  int64_t n_past() const { return n_past_; }
  // Tokens of the next prefill chunk at position p0 with `left` tokens to go: n_batch (and left),
  // fewer where the indexer's scores would exceed max_score_bytes (at least 1).
  int64_t prefill_chunk(int64_t p0, int64_t left) const;
  // Sets (or clears, with an empty list) the intermediates to dump: see session_options::dump.
  void set_dump(std::vector<std::string> prefixes, decltype(session_options::dump_fn) fn) {
    opt_.dump = std::move(prefixes);
    opt_.dump_fn = std::move(fn);
  }
  const session_options& options() const { return opt_; }
  // Forget the sequence (state back to empty).
  void reset();
  // Benchmarks only: make the state look as if n tokens had been evaluated (n_past() == n), with
  // random but valid values in the window ring and in every compressed-row store, without
  // computing them, so decode at long context can be timed without its prefill. The logits that
  // follow are meaningless. false + *error when n is outside [0, n_ctx].
  bool fill_random(int64_t n, uint64_t seed, std::string* error);
  // Where evaluation time goes (for profiling; `v4 bench model --profile`), since the last
  // reset_stats(): graph building on the host, reading results back, and the scheduler's part.
  struct eval_stats {
    int64_t chunks = 0;
    double build_s = 0;  // building the chunk's graph and its inputs
    double read_s = 0;   // copying logits and dumps out
  };
  const eval_stats& stats() const { return stats_; }
  const sched_stats& scheduler_stats() const { return sched_->stats(); }
  const std::vector<device*>& devices() const { return sched_->devices(); }
  void set_op_profiling(bool on) { sched_->set_op_profiling(on); }
  const std::vector<op_profile>& op_profiles() const { return sched_->op_profiles(); }
  void reset_stats() {
    stats_ = eval_stats{};
    sched_->reset_stats();
  }

  // Bytes of per-sequence state: fixed part (rings, pending tokens) and per-token growth.
  size_t state_bytes() const;
  double state_bytes_per_token() const;
  // Growth of the state per token of context for a config (compressed rows and indexer keys; the
  // raw window and the compressors' pending tokens are fixed). V4-Flash, QAT on, compact rows,
  // bf16 cache: 3508.8 B (the production layout of the research notes, ~3.5 KB).
  static double bytes_per_token(const hparams& hp, const session_options& opt);

  struct layer_state;  // model/forward.cpp

 private:
  session(const model& m, const session_options& opt);
  bool eval_chunk(const int32_t* tokens, int64_t n, bool all_logits, std::vector<float>* logits, std::string* error);

  const model& m_;
  session_options opt_;
  int64_t n_past_ = 0;
  context sctx_;                      // state tensors
  std::vector<std::unique_ptr<buffer>> state_bufs_;  // one per device holding layers
  std::vector<layer_state> layers_;
  std::vector<int64_t> ring_pos_;     // position held by each window slot (-1: empty)
  std::unique_ptr<scheduler> sched_;
  eval_stats stats_;
};

}  // namespace v4::model

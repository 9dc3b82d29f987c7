// The DeepSeek-V4 forward pass, top to bottom, as one graph per chunk of tokens.
//
// Spec: research/deepseek-v4-real.md §3 (the official inference/model.py). Layouts follow
// tensor.h (ne[0] innermost): a token's hidden vector is a column [D, T]; the 4 mHC streams are
// [D, HC, T] (stream-major flatten = the official x.flatten(-2)); attention scores are
// [n_keys, T, H] so that softmax's mask [n_keys, T] and sink [H] line up (tensor/ops.h).
//
//   embed -> 4 streams -> per layer: hc_pre -> attn_norm -> attention -> hc_post
//                                    hc_pre -> ffn_norm  -> MoE       -> hc_post
//         -> hc_head -> norm -> head
//
// Attention keys of one chunk: [ring (window slots) | the chunk's own K=V rows | compressed rows].
// Which of them a query sees is a mask built on the host from positions (window, causality);
// the CSA indexer's top-k selection is scattered into that mask inside the graph (prefill), or
// decode (one query) attends over [window | the selected rows] as the caches store them
// (attn_sparse: no dequantized copy of the keys, no gathered mask).
// State is read before it is written: cache writes are extra graph outputs listed after the
// logits, so they come last in the node order (tensor/graph.h builds depth-first, in order).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <tuple>
#include <unordered_map>

#include "backends/cpu/cpu.h"
#include "model/session.h"
#include "tensor/graph.h"
#include "tensor/ops.h"

namespace v4::model {

// Compressed rows [width, max_rows], stored one of two ways:
//   plain    cache_type (bf16 or f32) rows;
//   compact  (QAT on) the dims the QAT rounds, in the format it rounds them to: main rows'
//            non-RoPE dims as fp8_e4m3 with an e8m0 scale per 64 + the RoPE dims in cache_type;
//            indexer keys entirely as mxfp4 (e8m0 per 32). Lossless: the stored values are the
//            round trip's outputs (set_rows quantizes with the same scales).
struct row_store {
  tensor* plain = nullptr;  // [width, max_rows] cache_type
  tensor* q = nullptr;      // [nq, max_rows] fp8_e4m3 / mxfp4, with ->scales (compact)
  tensor* rest = nullptr;   // [width - nq, max_rows] cache_type, or nullptr (compact)
  int64_t width = 0;
};

// Rows a store holds (its capacity).
int64_t store_rows(const row_store& st) { return st.plain ? st.plain->ne[1] : st.q->ne[1]; }
// Decode reads compressed rows in multiples of this many (attention(): stable graph shapes).
constexpr int64_t kRowPad = 64;

struct session::layer_state {
  tensor* ring = nullptr;  // cache_type [HD, W]
  // compressor (ratio 4 or 128)
  tensor* pend_kv = nullptr, *pend_score = nullptr;  // f32 [c*HD, c*ratio]
  row_store rows;                                    // [HD, max_rows]
  // CSA indexer
  tensor* ipend_kv = nullptr, *ipend_score = nullptr;  // f32 [2*ID, 8]
  row_store irows;                                     // [ID, max_rows]
};

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

float host_f32(const tensor* t, int i) { return static_cast<const float*>(t->data)[i]; }

// Inputs of one chunk: tensors whose host data is known while the graph is built; they get
// one buffer and are filled right after building.
class inputs {
 public:
  explicit inputs(context& ctx) : ctx_(ctx) {}
  tensor* i32(std::vector<int32_t> v, std::initializer_list<int64_t> ne, const char* name) {
    tensor* t = ctx_.new_tensor(dtype::i32, ne);
    t->set_name("%s", name);
    items_.push_back({t, std::move(v), {}});
    return t;
  }
  tensor* f32(std::vector<float> v, std::initializer_list<int64_t> ne, const char* name) {
    tensor* t = ctx_.new_tensor(dtype::f32, ne);
    t->set_name("%s", name);
    items_.push_back({t, {}, std::move(v)});
    return t;
  }
  bool upload(std::unique_ptr<buffer>* buf, std::string* error) {
    size_t bytes = 0;
    for (auto& it : items_) bytes += (it.t->nbytes() + 63) / 64 * 64;
    *buf = cpu::cpu_device()->default_buffer_type()->alloc(bytes ? bytes : 64, error);
    if (!*buf) return false;
    size_t off = 0;
    for (auto& it : items_) {
      bind_tensor(it.t, buf->get(), off);
      off += (it.t->nbytes() + 63) / 64 * 64;
      if (!it.vi.empty()) std::memcpy(it.t->data, it.vi.data(), it.vi.size() * 4);
      if (!it.vf.empty()) std::memcpy(it.t->data, it.vf.data(), it.vf.size() * 4);
    }
    return true;
  }

 private:
  struct item {
    tensor* t;
    std::vector<int32_t> vi;
    std::vector<float> vf;
  };
  context& ctx_;
  std::vector<item> items_;
};

// Everything the layer functions share while one chunk's graph is built.
struct builder {
  builder(context& c, const model& mm, const hparams& h, const session_options& o, inputs& i)
      : ctx(c), m(mm), hp(h), opt(o), in(i) {}
  context& ctx;
  const model& m;
  const hparams& hp;
  const session_options& opt;
  inputs& in;
  int64_t p0 = 0, T = 0;        // first position, tokens in the chunk
  tensor* pos = nullptr;        // i32 [T]
  std::map<std::pair<int32_t, int64_t>, tensor*> rows_masks;  // (ratio, rows) -> rows_mask (prefill)
  std::map<std::pair<int32_t, int64_t>, tensor*> attn_masks;  // (ratio, rows) -> decode's host mask
  tensor* win_mask = nullptr;   // f32 [W + T, T], or [W, 1] when ring_first
  std::vector<float> win_mask_host;  // ring_first: win_mask's values (attention() extends them)
  // Decode without dumps: the token's K=V row is written into the ring first and the attention
  // reads the W ring slots alone (the slot it replaces holds position p0 - W, outside the window),
  // instead of rounding the row to the cache type, reading the ring and concatenating the two.
  bool ring_first = false;
  std::vector<tensor*> writes;  // cache writes (outputs after the logits)
  std::vector<tensor*> dumps;   // named intermediates the caller asked for (--dump)

  // Names an intermediate "L<layer>.<what>" (or "<what>" for layer -1) and, when it matches a
  // requested dump prefix, keeps it (an output: its memory is not reused) for the dump callback.
  tensor* named(tensor* t, const char* what, int64_t layer) {
    if (!t) return t;
    if (layer >= 0) t->set_name("L%lld.%s", (long long)layer, what);
    else t->set_name("%s", what);
    for (const std::string& p : opt.dump)
      if (std::strncmp(t->name, p.c_str(), p.size()) == 0) {
        if (t->view_src) t = cont(ctx, t), t->set_name("%s", p.c_str());
        t->flags |= kFlagOutput;
        dumps.push_back(t);
        break;
      }
    return t;
  }

  // ---- small helpers ----------------------------------------------------------------------
  bool scaled_weight(const tensor* w) const { return w->type == dtype::fp8_e4m3 || w->type == dtype::mxfp4; }

  // y = x @ w.T; with QAT the activation is rounded to FP8 (block 128) first, as the official
  // linear() does in front of every FP8/FP4 GEMM.
  // A weight laid out inside a combined one (model.h: fused_weight; on an accelerator) is one
  // view of the combined matmul, made once per input and shared by its members: its rows of
  // y, a strided view when T > 1 (every consumer of a projection takes strided rows).
  tensor* linear(tensor* x, tensor* w) {
    if (opt.qat && scaled_weight(w)) x = act_quant(x);
    if (const model::fused_rows f = m.fused_of(w); f.w) return member_rows(fused_product(f.w, x, nullptr), w, f.row0);
    return matmul(ctx, w, x);
  }
  tensor* linear_id(tensor* x, tensor* w, tensor* ids) {
    if (opt.qat && scaled_weight(w)) x = act_quant(x);
    if (const model::fused_rows f = m.fused_of(w); f.w) return member_rows(fused_product(f.w, x, ids), w, f.row0);
    return matmul_id(ctx, w, x, ids);
  }
  // The combined weight's product with x (matmul_id with ids), one node per (weight, x, ids).
  std::map<std::tuple<const tensor*, const tensor*, const tensor*>, tensor*> fused_products;
  tensor* fused_product(tensor* w, tensor* x, tensor* ids) {
    tensor*& y = fused_products[{w, x, ids}];
    if (!y) y = ids ? matmul_id(ctx, w, x, ids) : matmul(ctx, w, x);
    return y;
  }
  // Rows [row0, row0 + M) of y [sum M, ...] (up to 3 dims), M = w's output rows.
  tensor* member_rows(tensor* y, const tensor* w, int64_t row0) {
    if (!y) return nullptr;
    return view_3d(ctx, y, w->ne[1], y->ne[1], y->ne[2], y->nb[1], y->nb[2], size_t(row0) * sizeof(float));
  }
  // A projection's output y [M, T] as [n, M / n, T] (heads): a view, since y's rows may be strided
  // (a combined weight's member rows); reshape() takes contiguous tensors only.
  tensor* split_rows(tensor* y, int64_t n) {
    if (!y) return nullptr;
    return view_3d(ctx, y, n, y->ne[0] / n, y->ne[1], size_t(n) * sizeof(float), y->nb[1], 0);
  }
  // The FP8 activation quantization of x, made once per tensor: several projections read the
  // same input (the attention's x feeds up to seven), and one node serves them all. x whose
  // producer already wrote the rounded values (already_rounded) is its own quantization.
  std::unordered_map<const tensor*, tensor*> act_quantized;
  tensor* act_quant(tensor* x) {
    if (already_rounded(x)) return x;
    tensor*& q = act_quantized[x];
    if (!q) q = act_quant_fp8(ctx, x);
    return q;
  }
  // Whether x holds the activation quantization's values: the node that wrote them rounded its
  // rows with block kActBlock (tensor/ops.h: fp8_rounded_block; the fp8 option of rms_norm_w /
  // swiglu below), read directly or through a view of whole rows from offset 0 (the experts'
  // reshaped input), or through a view whose rows are runs of kActBlock of a range the node
  // rounded in such runs (hc_pre's q region, start_sublayer).
  static bool already_rounded(const tensor* x) {
    const tensor* b = x->view_src;
    if (!b) return fp8_rounded_block(x) == kActBlock;
    if (x->view_offs == 0 && x->ne[0] == b->ne[0] && x->nb[0] == b->nb[0] && x->nb[1] % b->nb[1] == 0)
      return fp8_rounded_block(b) == kActBlock;
    constexpr size_t kRun = kActBlock * sizeof(float);
    if (x->nb[0] != sizeof(float) || x->ne[0] % kActBlock != 0 || x->view_offs % kRun != 0) return false;
    for (int d = 1; d < kMaxDims; ++d)
      if (x->ne[d] > 1 && x->nb[d] % kRun != 0) return false;
    return fp8_rounded_block(b, x->view_offs, x->nbytes()) == kActBlock;
  }
  // The activation quantization's block (official linear(): act_quant(x, 128, "ue8m0")).
  static constexpr int kActBlock = 128;
  // The FP8 block a producer should round its output with when every matmul that reads it is
  // one of `weights` and each of those quantizes its input (QAT and an fp8 / mxfp4 weight): the
  // activation quantization then happens inside the producer (one node fewer). 0 otherwise: the
  // producer writes plain values (some reader needs them, or there is no QAT).
  int act_block_for(std::initializer_list<const tensor*> weights) const {
    if (!opt.qat) return 0;
    for (const tensor* w : weights)
      if (!w || !scaled_weight(w)) return 0;
    return kActBlock;
  }
  // rms_norm(x) * w as one node (tensor/ops.h: rms_norm_w, the bits of the two); fp8_block > 0:
  // with the activation quantization of its readers folded in (already_rounded).
  tensor* norm_w(tensor* x, tensor* w, int fp8_block = 0) { return rms_norm_w(ctx, x, w, hp.rms_eps, fp8_block); }
  // Values as the cache stores them (f32 or rounded through bf16), and cache reads as f32.
  tensor* as_cached(tensor* x) {
    return opt.cache_type == dtype::f32 ? x : cast(ctx, cast(ctx, x, opt.cache_type), dtype::f32);
  }
  tensor* read_cache(tensor* c) { return c->type == dtype::f32 ? cont(ctx, c) : cast(ctx, c, dtype::f32); }

  rope_params rope_for(int32_t ratio, bool inverse = false) const {
    rope_params p;
    p.n_rot = int(hp.rope_dims);
    p.interleaved = true;
    p.inverse = inverse;
    if (ratio == 0) {
      p.base = hp.rope_theta;
    } else {
      p.base = hp.compress_rope_theta;
      p.yarn_factor = hp.rope_factor;
      p.yarn_orig_ctx = float(hp.rope_orig_ctx);
      p.yarn_beta_fast = hp.rope_beta_fast;
      p.yarn_beta_slow = hp.rope_beta_slow;
    }
    return p;
  }

  // A row range [r0, r0+n) of a 2-D weight, with its scales when it has some.
  // w [K, n*G] as G matrices [K, n, G] (with its scales), or nullptr when a scale block would
  // straddle two of them.
  tensor* weight_groups(tensor* w, int64_t n, int64_t G) {
    if (w->ne[1] != n * G || w->ne[2] != 1 || w->ne[3] != 1) return nullptr;
    if (w->scales && (n % w->scale_block[1] != 0)) return nullptr;
    tensor* v = view_3d(ctx, w, w->ne[0], n, G, w->nb[1], size_t(n) * w->nb[1], 0);
    if (v && w->scales) {
      tensor* s = w->scales;
      const int64_t sn = n / w->scale_block[1];
      v->scales = view_3d(ctx, s, s->ne[0], sn, G, s->nb[1], size_t(sn) * s->nb[1], 0);
    }
    return v;
  }
  tensor* weight_rows(tensor* w, int64_t r0, int64_t n) {
    tensor* v = view_2d(ctx, w, w->ne[0], n, w->nb[1], size_t(r0) * w->nb[1]);
    if (v && w->scales) {
      const int64_t bm = w->scale_block[1];
      if (r0 % bm != 0 && r0 / bm != (r0 + n - 1) / bm) {
        ctx.fail("%s: rows [%lld, %lld) cut its %lld-row scale blocks", w->name, (long long)r0, (long long)(r0 + n),
                 (long long)bm);
        return nullptr;
      }
      tensor* s = w->scales;
      v->scales = view_2d(ctx, s, s->ne[0], (n + bm - 1) / bm, s->nb[1], size_t(r0 / bm) * s->nb[1]);
    }
    return v;
  }

  // ---- mHC ----------------------------------------------------------------------------------
  struct hc_out {
    tensor* u;  // [D, T] the sublayer input
    tensor* w;  // [1+HC, HC, T]: row k = (post[k], comb[k][0..HC-1]), hc_post's weights
  };

  hc_out hc_pre(tensor* X, tensor* fn, tensor* base, tensor* scl) {
    const int64_t HC = hp.hc_mult, D = hp.hidden_size;
    tensor* flat = reshape(ctx, X, {HC * D, T});
    tensor* mix = matmul(ctx, fn, rms_norm(ctx, flat, hp.rms_eps));  // [(2+HC)*HC, T]
    // pre, post and the Sinkhorn-normalised comb in one op (tensor/ops.h: hc_mix), laid out as
    // [pre (HC) | (post[k], comb[k][.]) for each k].
    const float s[3] = {host_f32(scl, 0), host_f32(scl, 1), host_f32(scl, 2)};
    tensor* hm = hc_mix(ctx, mix, base, s, int(hp.hc_sinkhorn_iters), hp.hc_eps);
    if (!hm) return {nullptr, nullptr};  // the context holds the error
    const size_t f = sizeof(float);
    tensor* pre = view_3d(ctx, hm, 1, HC, T, f, hm->nb[1], 0);                        // [1, HC, T]
    tensor* w = view_3d(ctx, hm, 1 + HC, HC, T, (1 + HC) * f, hm->nb[1], HC * f);    // [1+HC, HC, T]
    return {hc_sum(ctx, X, pre), w};                                                  // u: [D, T]
  }

  // Y[k] = post[k] * f + sum_j comb[j][k] * X[j], one fused node (tensor/ops.h: hc_post) reading
  // w = [post ; comb] [1+HC, HC, T] straight from hc_mix's output.
  tensor* hc_post(tensor* f, tensor* X, const hc_out& h) { return v4::hc_post(ctx, f, X, h.w); }

  // The start of a sublayer: the streams after the previous sublayer's hc_post (f its output and
  // prev its weights; f = nullptr: none, X as it is) and the sublayer's input, rms_norm_w(hc_pre's
  // u, norm). One node (tensor/ops.h: hc_pre) when fn is f32 and HC = 4 (what its CUDA kernels
  // take; on the CPU it gives the chain's bits); else hc_post, hc_pre, norm_w as nodes.
  // fp8_block > 0: the node also writes the input's activation quantization, recorded as x's in
  // act_quantized (the fp8 / mxfp4 projections read it; the bf16 ones read x).
  struct sublayer_start {
    tensor* X;  // [D, HC, T] the streams
    tensor* x;  // [D, T] the sublayer's input
    hc_out h;   // h.w: this sublayer's hc_post weights
  };
  sublayer_start start_sublayer(tensor* X, tensor* f, const hc_out& prev, tensor* fn, tensor* base, tensor* scl,
                                tensor* norm, int fp8_block) {
    const int64_t HC = hp.hc_mult, D = hp.hidden_size;
    // V4_FUSED_HC_PRE=0 keeps the chain (to measure what the fusion buys; the same bits on the CPU).
    static const bool fuse = [] {
      const char* env = std::getenv("V4_FUSED_HC_PRE");
      return !(env && std::strcmp(env, "0") == 0);
    }();
    if (!fuse || fn->type != dtype::f32 || HC != 4) {
      if (f) X = hc_post(f, X, prev);
      const hc_out h = hc_pre(X, fn, base, scl);
      return {X, h.u ? norm_w(h.u, norm) : nullptr, h};
    }
    hc_pre_params p;
    for (int i = 0; i < 3; ++i) p.scale[i] = host_f32(scl, i);
    p.iters = int(hp.hc_sinkhorn_iters);
    p.hc_eps = hp.hc_eps;
    p.rms_eps = hp.rms_eps;
    p.fp8_block = fp8_block;
    p.f = f;
    p.w_post = f ? prev.w : nullptr;
    tensor* node = v4::hc_pre(ctx, X, fn, base, norm, p);
    if (!node) return {nullptr, nullptr, {nullptr, nullptr}};  // the context holds the error
    const hc_pre_layout l = hc_pre_layout_of(node);
    const size_t fs = sizeof(float);
    if (f) X = view_3d(ctx, node, D, HC, T, D * fs, D * HC * fs, size_t(l.s) * fs);
    tensor* x = view_2d(ctx, node, D, T, D * fs, size_t(l.u) * fs);
    if (l.fp8) act_quantized[x] = view_2d(ctx, node, D, T, D * fs, size_t(l.q) * fs);
    tensor* w = view_3d(ctx, node, 1 + HC, HC, T, (1 + HC) * fs, size_t(l.M) * fs, size_t(l.w + HC) * fs);
    return {X, x, {nullptr, w}};
  }

  tensor* hc_head(tensor* X) {
    const int64_t HC = hp.hc_mult, D = hp.hidden_size;
    tensor* mix = matmul(ctx, m.hc_head_fn, rms_norm(ctx, reshape(ctx, X, {HC * D, T}), hp.rms_eps));
    tensor* pre = scale(ctx, sigmoid(ctx, add(ctx, scale(ctx, mix, host_f32(m.hc_head_scale, 0)), m.hc_head_base)),
                        1.0f, hp.hc_eps);
    return hc_sum(ctx, X, reshape(ctx, pre, {1, HC, T}));  // [D, T]
  }

  // The last n columns of a [ne0, T] tensor (a view; the tensor itself when n == T).
  tensor* last_cols(tensor* a, int64_t n) {
    const int64_t T_a = a->ne[1];
    return n == T_a ? a : view_2d(ctx, a, a->ne[0], n, a->nb[1], size_t(T_a - n) * a->nb[1]);
  }

  // ---- compressed-row stores ------------------------------------------------------------------
  // Writes r [width, n] at rows ids; returns the store as seen after the write (aliases).
  row_store write_rows(const row_store& st, tensor* r, tensor* ids) {
    row_store out = st;
    if (st.plain) {
      out.plain = set_rows(ctx, st.plain, r, ids);
      writes.push_back(out.plain);  // also when this chunk does not read the rows
      return out;
    }
    const int64_t nq = st.q->ne[0], n = r->ne[1];
    out.q = set_rows(ctx, st.q, view_2d(ctx, r, nq, n, r->nb[1], 0), ids);
    writes.push_back(out.q);
    if (st.rest) {
      out.rest = set_rows(ctx, st.rest, view_2d(ctx, r, st.width - nq, n, r->nb[1], size_t(nq) * sizeof(float)), ids);
      writes.push_back(out.rest);
    }
    return out;
  }
  // Rows [0, R) as f32 [width, R].
  tensor* read_rows(const row_store& st, int64_t R) {
    if (st.plain) return read_cache(view_2d(ctx, st.plain, st.width, R, st.plain->nb[1], 0));
    std::vector<int32_t> iota(static_cast<size_t>(R));
    for (int64_t i = 0; i < R; ++i) iota[size_t(i)] = int32_t(i);
    return gather_rows(st, in.i32(iota, {R}, "row_iota"));
  }
  // Rows ids (i32 [k] or [k, 1]) as f32 [width, k].
  tensor* gather_rows(const row_store& st, tensor* ids) {
    const int64_t k = ids->ne[0];
    tensor* flat = reshape(ctx, ids, {k, 1});
    if (st.plain) return reshape(ctx, get_rows(ctx, st.plain, flat), {st.width, k});
    tensor* y = reshape(ctx, get_rows(ctx, st.q, flat), {st.q->ne[0], k});
    if (st.rest) y = concat(ctx, y, reshape(ctx, get_rows(ctx, st.rest, flat), {st.rest->ne[0], k}), 0);
    return y;
  }

  // ---- compressor ---------------------------------------------------------------------------
  // Emits the rows whose window closes inside this chunk into `rows` and returns the number of
  // rows so far, R = (p0+T)/ratio; written_ is then the store as seen after the write, to read
  // (read_rows, gather_rows) after it.
  // kind_qat: 0 none, 1 main KV (FP8 round-trip of the non-RoPE dims), 2 indexer keys
  // (Hadamard + FP4 round-trip).
  int64_t compress(tensor* x, const compressor_weights& w, int64_t ratio, int64_t width, tensor* pend_kv,
                   tensor* pend_score, const row_store& rows, int kind_qat) {
    const int64_t c = ratio == 4 ? 2 : 1, cw = c * width, span = c * ratio;
    const int64_t b0 = p0 / ratio, b1 = (p0 + T) / ratio, nb = b1 - b0;
    const size_t f = sizeof(float);

    tensor* a = linear(x, w.wkv);    // [cw, T]
    tensor* z = linear(x, w.wgate);  // [cw, T]
    std::vector<int32_t> slot(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) slot[size_t(t)] = int32_t((p0 + t) % ratio);
    tensor* score = add(ctx, z, get_rows(ctx, w.ape, in.i32(slot, {T}, "comp_slot")));

    int64_t result = 0;
    if (nb > 0) {
      // The tokens of the closed windows, plus (CSA) the window before the first: positions
      // s0 .. b1*ratio-1. Those before p0 come from the pending ring.
      const int64_t s0 = (b0 - (c - 1)) * ratio, n_prev = p0 - s0, n_use = b1 * ratio - p0;
      tensor* seq_kv = view_2d(ctx, a, cw, n_use, a->nb[1], 0);
      tensor* seq_sc = view_2d(ctx, score, cw, n_use, score->nb[1], 0);
      if (n_prev > 0) {
        std::vector<int32_t> prev(static_cast<size_t>(n_prev));
        for (int64_t i = 0; i < n_prev; ++i) prev[size_t(i)] = int32_t(((s0 + i) % span + span) % span);
        tensor* ids = in.i32(prev, {n_prev}, "comp_prev");
        seq_kv = concat(ctx, get_rows(ctx, pend_kv, ids), cont(ctx, seq_kv), 1);
        seq_sc = concat(ctx, get_rows(ctx, pend_score, ids), cont(ctx, seq_sc), 1);
      } else {
        seq_kv = cont(ctx, seq_kv);
        seq_sc = cont(ctx, seq_sc);
      }
      // Slots per row: HCA the ratio tokens of its window; CSA the A halves (channels
      // [0, width)) of the previous window's tokens then the B halves of its own.
      const size_t rs = seq_kv->nb[1];
      auto slots = [&](tensor* s) {
        if (c == 1) return reshape(ctx, s, {width, ratio, nb});
        tensor* A = view_3d(ctx, s, width, ratio, nb, rs, ratio * rs, 0);
        tensor* B = view_3d(ctx, s, width, ratio, nb, rs, ratio * rs, ratio * rs + width * f);
        return concat(ctx, A, B, 1);  // [width, 2*ratio, nb]
      };
      tensor* kv_s = cont(ctx, permute(ctx, slots(seq_kv), 1, 0, 2, 3));  // [slots, width, nb]
      tensor* sc_s = cont(ctx, permute(ctx, slots(seq_sc), 1, 0, 2, 3));
      tensor* pooled = sum(ctx, mul(ctx, softmax(ctx, sc_s), kv_s), 0);  // [1, width, nb]
      pooled = norm_w(reshape(ctx, pooled, {width, nb}), w.norm);
      std::vector<int32_t> rpos(static_cast<size_t>(nb)), rid(static_cast<size_t>(nb));
      for (int64_t i = 0; i < nb; ++i) {
        rpos[size_t(i)] = int32_t((b0 + i) * ratio);
        rid[size_t(i)] = int32_t(b0 + i);
      }
      tensor* r = rope(ctx, reshape(ctx, pooled, {width, 1, nb}), in.i32(rpos, {nb}, "row_pos"), rope_for(int32_t(ratio)));
      r = named(reshape(ctx, r, {width, nb}), kind_qat == 2 ? "index_rows" : "comp_rows", layer_);
      if (opt.qat && kind_qat == 1) r = fp8_roundtrip(ctx, r, 64, width - hp.rope_dims);
      if (opt.qat && kind_qat == 2) r = fp4_roundtrip(ctx, hadamard(ctx, r, 1.0f / std::sqrt(float(width))), 32);
      written_ = write_rows(rows, r, in.i32(rid, {nb}, "row_id"));
      result = b1;
    } else if (b1 > 0) {
      written_ = rows;
      result = b1;
    }
    // The pending ring keeps every token's (kv, score); written after all reads of this chunk.
    // Of a chunk longer than the ring only its last `span` tokens remain there: only they are
    // written (the same ring as writing all, later tokens replacing earlier ones).
    const int64_t keep = std::min(T, span);
    std::vector<int32_t> pend_slot(static_cast<size_t>(keep));
    for (int64_t t = T - keep; t < T; ++t) pend_slot[size_t(t - (T - keep))] = int32_t((p0 + t) % span);
    tensor* ids = in.i32(pend_slot, {keep}, "pend_slot");
    writes.push_back(set_rows(ctx, pend_kv, last_cols(a, keep), ids));
    writes.push_back(set_rows(ctx, pend_score, last_cols(score, keep), ids));
    return result;
  }

  // ---- attention ----------------------------------------------------------------------------
  int64_t layer_ = 0;   // the layer being built (for names)
  row_store written_;   // the last compress()'s row store, after its write

  tensor* attention(tensor* x, const layer_weights& L, session::layer_state& S) {
    const int64_t H = hp.n_heads, HD = hp.head_dim, W = hp.window, G = hp.o_groups;
    const rope_params rp = rope_for(L.ratio);

    // qr feeds wq_b and (CSA layers) the indexer's idx_wq_b only: with QAT the norm writes their
    // FP8 activation quantization itself.
    const int qr_block = L.ratio == 4 ? act_block_for({L.wq_b, L.idx_wq_b}) : act_block_for({L.wq_b});
    tensor* qr = norm_w(linear(x, L.wq_a), L.q_norm, qr_block);               // [q_lora, T]
    // Per-head unweighted norm then rope, one node (tensor/ops.h: norm_rope).
    tensor* q = norm_rope(ctx, split_rows(linear(qr, L.wq_b), HD), nullptr, pos, rp, hp.rms_eps);
    // kv_norm, rope and (QAT) the FP8 round trip of the non-RoPE dims (official: act_quant(kv[...,
    // :-rd], 64, "ue8m0")), one node.
    tensor* kv = split_rows(linear(x, L.wkv), HD);  // [HD, 1, T]
    kv = norm_rope(ctx, kv, L.kv_norm, pos, rp, hp.rms_eps, opt.qat ? 64 : 0, opt.qat ? HD - hp.rope_dims : 0);
    kv = reshape(ctx, kv, {HD, T});
    std::vector<int32_t> slot(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) slot[size_t(t)] = int32_t((p0 + t) % W);
    tensor* ring_ids = in.i32(slot, {T}, "ring_slot");
    tensor* keys = nullptr;  // [HD, W + T] (not ring_first)
    sparse_keys sk;          // ring_first: the keys read as the caches store them (attn_sparse)
    if (ring_first) {
      sk.ring = set_rows(ctx, S.ring, kv, ring_ids);  // stored in the cache type
      writes.push_back(sk.ring);
    } else {
      kv = named(as_cached(kv), "kv", layer_);
      keys = concat(ctx, read_cache(S.ring), kv, 1);
    }
    named(q, "q", layer_);
    tensor* mask = win_mask;
    bool sparse_prefill = false;  // keys: [window | chunk] as sk.ring, the selected rows by id
    if (L.ratio != 0) {
      const int64_t R = compress(x, L.comp, L.ratio, HD, S.pend_kv, S.pend_score, S.rows, 1);
      const row_store stored = written_;
      if (R > 0) {
        // Decode reads Rv >= R rows, R rounded up to kRowPad (the rows past R masked): the
        // graph keeps its shapes for kRowPad rows (256 tokens of CSA, 8192 of HCA), so the
        // scheduler's plans and a GPU's captured graphs are reused instead of rebuilt as R grows.
        // The masked rows weigh exactly 0 (exp(-inf)), and they are finite (zeroed at reset, or
        // older rows), so results are those of reading R rows.
        int64_t Rv = R;
        if (T == 1) {
          int64_t cap = store_rows(stored);
          if (L.ratio == 4) cap = std::min(cap, store_rows(S.irows));
          Rv = std::max(R, std::min(cap, (R + kRowPad - 1) / kRowPad * kRowPad));
        }
        tensor* cmask = nullptr;  // [Rv, T]: row i visible to token t when i < (p0 + t + 1) / ratio
        if (ring_first) {
          // One host mask [window slots | rows 0 .. Rv-1] for attn_sparse, shared by the layers of
          // one ratio (the same values: at 512K tokens of context 128K floats per CSA layer); the
          // indexer reads its row part through a view.
          tensor*& shared = attn_masks[{L.ratio, Rv}];
          if (!shared) {
            std::vector<float> both = win_mask_host;
            both.reserve(size_t(W + Rv));
            for (int64_t i = 0; i < Rv; ++i) both.push_back(i < (p0 + 1) / L.ratio ? 0.0f : kNegInf);
            shared = in.f32(std::move(both), {W + Rv, 1}, "attn_mask");
          }
          mask = shared;
          cmask = view_2d(ctx, mask, Rv, 1, mask->nb[1], size_t(W) * sizeof(float));
        } else {
          // Computed where attention runs (a host input would be Rv x T values per layer), once
          // per ratio and chunk: the CSA layers share theirs, the HCA layers theirs.
          tensor*& shared = rows_masks[{L.ratio, Rv}];
          if (!shared) shared = rows_mask(ctx, pos, Rv, int(L.ratio));
          cmask = shared;
        }
        tensor* comp = nullptr;  // [HD, R] or [HD, k]
        tensor* top = L.ratio == 4 ? indexer_top(x, qr, L, S, cmask) : nullptr;
        if (ring_first) {
          // Decode: attn_sparse reads the selected rows (cost independent of the context
          // length), or all Rv (HCA, or no more rows than the selection), where they are stored;
          // their mask by row id (picks past the visible rows, when fewer exist, stay -inf).
          sk.store = stored.plain ? stored.plain : stored.q;
          sk.rest = stored.plain ? nullptr : stored.rest;
          sk.ids = top;
        } else if (top && T == 1) {
          // Decode with dumps: gather the selected rows and their causal mask.
          comp = gather_rows(stored, top);
          cmask = gather(ctx, cmask, top);
        } else if (top) {
          // Prefill: every query reads its own selection. attn_sparse takes the window and this
          // chunk's keys as its "ring" and the selected rows by id where they are stored, masked
          // by causality alone: per query W + T + k keys instead of W + T + R with a mask that
          // holds -inf for all but k of the R rows (the cost of a dense-masked attention grew
          // with the context: 442 of 2,030 ms for a 4K prompt after 60K tokens, H200).
          sk.ring = keys;
          sk.store = stored.plain ? stored.plain : stored.q;
          sk.rest = stored.plain ? nullptr : stored.rest;
          sk.ids = top;
          mask = concat(ctx, mask, cmask, 0);
          sparse_prefill = true;
        }
        if (!ring_first && !sparse_prefill) {
          if (!comp) comp = read_rows(stored, Rv);
          keys = concat(ctx, keys, comp, 1);
          mask = concat(ctx, mask, cmask, 0);
        }
      } else if (L.ratio == 4) {
        indexer_top(x, qr, L, S, nullptr);  // keeps the indexer's compressor state current
      }
    }
    // Otherwise writing this chunk's K=V rows into the ring happens after every read.
    // (Of a chunk longer than the window only its last W tokens remain in the ring: only they are
    // written.)
    if (!ring_first) {
      const int64_t keep = std::min(T, W);
      std::vector<int32_t> tail(slot.end() - keep, slot.end());
      writes.push_back(set_rows(ctx, S.ring, last_cols(kv, keep), keep == T ? ring_ids : in.i32(tail, {keep}, "ring_slot")));
    }

    // One fused op: scores against [window | chunk | compressed rows], softmax with the sink,
    // and the weighted sum of the same rows (K = V); at decode (ring_first) over the rows as
    // stored, without a dequantized copy of the keys (attn_sparse: the same bits on the CPU), and
    // at a CSA prefill with a selection over [window | chunk] and the selected rows.
    // q is read through a permuted view (attn_mqa takes strided rows): no copy. The output's
    // inverse RoPE is the op's output rotation (tensor/ops.h: attn_out_rope), which also lays it
    // out [HD, H, T]: no rope node.
    tensor* qt = permute(ctx, q, 0, 2, 1, 3);  // [HD, T, H]
    const float sm_scale = 1.0f / std::sqrt(float(HD));
    const attn_out_rope unrope{pos, rope_for(L.ratio, /*inverse=*/true)};
    tensor* o = ring_first || sparse_prefill ? attn_sparse(ctx, qt, sk, mask, L.sink, sm_scale, &unrope)
                                             : attn_mqa(ctx, qt, keys, mask, L.sink, sm_scale, &unrope);  // [HD, H, T]
    o = reshape(ctx, o, {HD * H, T});

    // Grouped low-rank output: group g = heads [g*H/G, (g+1)*H/G) through its rows of wo_a.
    // One batched matmul over the groups (weights [gin, gout, G], x [gin, T, G]) instead of a
    // copy, a matmul and a concatenation per group: the same products, 21 fewer nodes per layer.
    const int64_t gin = HD * H / G, gout = hp.o_lora_rank;
    if (tensor* w3 = weight_groups(L.wo_a, gout, G)) {
      tensor* x3 = view_3d(ctx, o, gin, T, G, o->nb[1], size_t(gin) * sizeof(float), 0);  // [gin, T, G]
      tensor* y3 = matmul(ctx, w3, x3);                                                    // [gout, T, G]
      tensor* y = permute(ctx, y3, 0, 2, 1, 3);  // [gout, G, T]
      if (opt.qat && scaled_weight(L.wo_b)) {
        // The activation quantization reads the permuted view and writes it contiguous: no copy.
        // Its blocks of 128 are the flattened row's when none spans two groups.
        y = gout % 128 == 0 ? act_quant(y) : act_quant(reshape(ctx, cont(ctx, y), {gout * G, T}));
      } else {
        y = cont(ctx, y);
      }
      return matmul(ctx, L.wo_b, reshape(ctx, y, {gout * G, T}));
    }
    tensor* z = nullptr;
    for (int64_t g = 0; g < G; ++g) {
      tensor* og = view_2d(ctx, o, gin, T, o->nb[1], size_t(g * gin) * sizeof(float));
      // No activation quantization here: the official convert.py dequantizes wo_a to BF16.
      tensor* zg = matmul(ctx, weight_rows(L.wo_a, g * gout, gout), cont(ctx, og));
      z = z ? concat(ctx, z, zg, 0) : zg;
    }
    return linear(z, L.wo_b);
  }

  // The lightning indexer: scores every visible compressed row for each query and returns the
  // rows of the top index_topk, i32 [k, T] (ties to the lower row), or nullptr when there are no
  // more rows than that (then every visible row is selected: the plain causal mask).
  tensor* indexer_top(tensor* x, tensor* qr, const layer_weights& L, session::layer_state& S, tensor* cmask) {
    const int64_t IH = hp.index_n_heads, ID = hp.index_head_dim;
    const int64_t R = compress(x, L.idx_comp, 4, ID, S.ipend_kv, S.ipend_score, S.irows, 2);
    if (!cmask || R == 0) return nullptr;
    if (R <= hp.index_topk) return nullptr;
    const int64_t Rv = cmask->ne[0];  // rows scored: R, or (decode) R padded as attention() reads them

    tensor* q = split_rows(linear(qr, L.idx_wq_b), ID);  // [ID, IH, T]
    q = rope(ctx, q, pos, rope_for(4));
    if (opt.qat) q = fp4_roundtrip(ctx, hadamard(ctx, q, 1.0f / std::sqrt(float(ID))), 32);
    tensor* wts = scale(ctx, linear(x, L.idx_weights), 1.0f / std::sqrt(float(ID) * float(IH)));  // [IH, T]
    // Compact keys (mxfp4) are the matmul's weight as stored: no dequantized copy. Exact: q is
    // FP4-rounded with power-of-two scales, so the kernel's bf16 rounding of x changes nothing.
    tensor* keys = written_.q ? weight_rows(written_.q, 0, Rv) : read_rows(written_, Rv);
    tensor* s = relu(ctx, matmul(ctx, keys, reshape(ctx, q, {ID, IH * T})));                    // [Rv, IH*T]
    // The heads' weighted sum: the same weighted sum over dim 1 as mHC's (hc_sum, one node).
    s = add(ctx, hc_sum(ctx, reshape(ctx, s, {Rv, IH, T}), reshape(ctx, wts, {1, IH, T})), cmask);
    named(s, "index_score", layer_);
    return top_k(ctx, s, int(hp.index_topk));  // [k, T]
  }

  // ---- MoE ----------------------------------------------------------------------------------
  tensor* moe(tensor* x, const layer_weights& L, const int32_t* tokens) {
    const int64_t D = hp.hidden_size, k = hp.n_experts_used;
    tensor* logits = linear(x, L.gate);                       // [E, T]
    // The router, s = sqrt(softplus(logits)) ("sqrtsoftplus"), as two fused ops (tensor/ops.h).
    tensor* ids;
    if (L.hash) {
      std::vector<int32_t> v(static_cast<size_t>(k * T));
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < k; ++j) v[size_t(t * k + j)] = L.tid2eid[size_t(tokens[t]) * size_t(k) + size_t(j)];
      ids = in.i32(v, {k, T}, "hash_ids");
    } else {
      ids = route_topk(ctx, logits, L.gate_bias, int(k));  // top k of s + bias: bias only for the choice
    }
    // s[ids] (/ its sum with norm_topk_prob) * routed_scale
    tensor* wts = route_weights(ctx, logits, ids, hp.norm_topk_prob, hp.routed_scale);  // [k, T]

    // The experts' input: with QAT, x's one activation quantization (shared with the shared
    // expert's), reshaped (the same rows, so the same blocks of 128).
    const int xe_block = act_block_for({L.w1, L.w3});
    tensor* xe = reshape(ctx, xe_block ? act_quant(x) : x, {D, 1, T});
    tensor* g = linear_id(xe, L.w1, ids);                     // [I, k, T]
    tensor* u = linear_id(xe, L.w3, ids);
    // silu(min(g, limit)) * clamp(u, -limit, limit) * wts in one node (no clamps for limit <= 0),
    // with w2's activation quantization (QAT) written by it.
    const int h_block = act_block_for({L.w2});
    tensor* h = swiglu(ctx, g, u, hp.swiglu_limit, reshape(ctx, wts, {1, k, T}), h_block);
    tensor* y = linear_id(h, L.w2, ids);                      // [D, k, T]
    y = reshape(ctx, sum(ctx, y, 1), {D, T});
    if (L.sw1) {  // shared expert: no clamp (official)
      const int sh_block = act_block_for({L.sw2});
      tensor* sh = swiglu(ctx, linear(x, L.sw1), linear(x, L.sw3), 0.0f, nullptr, sh_block);
      y = add(ctx, y, linear(sh, L.sw2));
    }
    return y;
  }
};

}  // namespace

// ---- session ----------------------------------------------------------------------------------

session::session(const model& m, const session_options& opt) : m_(m), opt_(opt) {}
session::~session() = default;

std::unique_ptr<session> session::create(const model& m, const session_options& opt, std::string* error) {
  const hparams& hp = m.hp();
  if (opt.n_ctx < 1 || opt.n_batch < 1 || opt.max_score_bytes < 1) {
    *error = "session: n_ctx, n_batch and max_score_bytes must be positive";
    return nullptr;
  }
  std::unique_ptr<session> s(new session(m, opt));
  const int64_t HD = hp.head_dim, ID = hp.index_head_dim, W = hp.window;
  s->layers_.resize(size_t(hp.n_layers));
  std::vector<tensor*> all;
  if (opt.cache_type != dtype::f32 && opt.cache_type != dtype::bf16 && opt.cache_type != dtype::f16) {
    *error = std::string("session: cache type ") + type_name(opt.cache_type) + " is not supported (f32, bf16, f16)";
    return nullptr;
  }
  std::vector<device*> all_dev;  // the device of each state tensor: its layer's device
  auto mk = [&](int64_t ne0, int64_t ne1, const char* name, int64_t il, dtype type = dtype::f32) {
    tensor* t = s->sctx_.new_tensor(type, {ne0, ne1});
    t->set_name("%s.%lld", name, (long long)il);
    all.push_back(t);
    all_dev.push_back(m.layer_device(il));
    return t;
  };
  const bool compact = opt.qat && opt.compact_rows;
  for (int64_t il = 0; il < hp.n_layers; ++il) {
    layer_state& L = s->layers_[size_t(il)];
    const int32_t ratio = hp.compress_ratio(il);
    const dtype ct = opt.cache_type;
    L.ring = mk(HD, W, "ring", il, ct);
    // A row store: plain, or compact (QAT on): nq dims in qtype with e8m0 scales per `block`.
    auto store = [&](int64_t width, int64_t n_rows, const char* name, dtype qtype, int64_t nq, int block) {
      row_store st;
      st.width = width;
      if (!compact) {
        st.plain = mk(width, n_rows, name, il, ct);
        return st;
      }
      st.q = mk(nq, n_rows, name, il, qtype);
      st.q->scales = mk((nq + block - 1) / block, n_rows, "scales", il, dtype::e8m0);
      st.q->scale_block[0] = block;
      st.q->scale_block[1] = 1;
      if (width > nq) st.rest = mk(width - nq, n_rows, "rope", il, ct);
      return st;
    };
    if (ratio != 0) {
      const int64_t c = ratio == 4 ? 2 : 1;
      L.pend_kv = mk(c * HD, c * ratio, "pend_kv", il);
      L.pend_score = mk(c * HD, c * ratio, "pend_score", il);
      L.rows = store(HD, opt.n_ctx / ratio + 1, "rows", dtype::fp8_e4m3, HD - hp.rope_dims, 64);
    }
    if (ratio == 4) {
      L.ipend_kv = mk(2 * ID, 8, "ipend_kv", il);
      L.ipend_score = mk(2 * ID, 8, "ipend_score", il);
      L.irows = store(ID, opt.n_ctx / 4 + 1, "irows", dtype::mxfp4, ID, 32);
    }
  }
  // State lives with its layer: one buffer per device.
  std::vector<device*> devs;
  for (device* d : all_dev)
    if (std::find(devs.begin(), devs.end(), d) == devs.end()) devs.push_back(d);
  auto span = [](const tensor* t) { return (t->nbytes() + 255) / 256 * 256; };
  for (device* d : devs) {
    size_t bytes = 0;
    for (size_t i = 0; i < all.size(); ++i)
      if (all_dev[i] == d) bytes += span(all[i]);
    std::string err;
    std::unique_ptr<buffer> buf = d->default_buffer_type()->alloc(bytes ? bytes : 256, &err);
    if (!buf) {
      *error = "session: cannot allocate " + std::to_string(bytes >> 20) + " MiB of state on " + d->name() + ": " +
               err + " (lower n_ctx)";
      return nullptr;
    }
    size_t off = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      if (all_dev[i] != d) continue;
      bind_tensor(all[i], buf.get(), off);
      off += span(all[i]);
    }
    s->state_bufs_.push_back(std::move(buf));
  }
  // Devices in priority order: the accelerator holding weights (if any), then the CPU.
  std::vector<device*> sched_devs;
  if (m.accelerator()) sched_devs.push_back(m.accelerator());
  sched_devs.push_back(cpu::cpu_device());
  s->sched_ = std::make_unique<scheduler>(sched_devs, opt.n_threads);
  s->reset();
  return s;
}

void session::reset() {
  n_past_ = 0;
  ring_pos_.assign(size_t(m_.hp().window), -1);
  for (auto& buf : state_bufs_) buf->clear(0);
  for (layer_state& L : layers_) {
    for (tensor* t : {L.pend_score, L.ipend_score}) {  // scores start at -inf (no pending token)
      if (!t) continue;
      const std::vector<float> neg(size_t(t->nelements()), kNegInf);
      t->buf->set(t, neg.data(), 0, t->nbytes());
    }
  }
}

bool session::fill_random(int64_t n, uint64_t seed, std::string* error) {
  if (n < 0 || n > opt_.n_ctx) {
    *error = "fill_random: " + std::to_string(n) + " tokens do not fit the context size " + std::to_string(opt_.n_ctx);
    return false;
  }
  reset();
  uint64_t st = seed;
  auto next = [&st] {  // splitmix64
    uint64_t z = (st += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  // Random valid contents by type: floats in [-1, 1), e4m3 codes without NaN, any e2m1 pair,
  // e8m0 scales near 1 (2^-3 .. 2^3).
  auto fill = [&](tensor* t) {
    if (!t) return;
    std::vector<uint8_t> bytes(t->nbytes());
    const type_traits& tr = traits(t->type);
    if (tr.is_float) {
      std::vector<float> f(size_t(t->nelements()));
      for (float& v : f) v = float(double(next() >> 11) * 0x1p-52 - 1.0);
      tr.from_f32(f.data(), bytes.data(), t->nelements());
    } else {
      for (uint8_t& b : bytes) {
        b = uint8_t(next());
        if (t->type == dtype::fp8_e4m3 && (b & 0x7f) == 0x7f) b ^= 1;
        if (t->type == dtype::e8m0) b = uint8_t(124 + b % 7);
      }
    }
    t->buf->set(t, bytes.data(), 0, bytes.size());
  };
  for (layer_state& L : layers_) {
    fill(L.ring);
    for (const row_store* rs : {&L.rows, &L.irows}) {
      fill(rs->plain);
      fill(rs->q);
      if (rs->q) fill(rs->q->scales);
      fill(rs->rest);
    }
  }
  const int64_t W = m_.hp().window;
  for (int64_t p = std::max<int64_t>(0, n - W); p < n; ++p) ring_pos_[size_t(p % W)] = p;
  n_past_ = n;
  return true;
}

size_t session::state_bytes() const {
  size_t n = 0;
  for (const auto& buf : state_bufs_) n += buf->size();
  return n;
}

double session::bytes_per_token(const hparams& hp, const session_options& opt) {
  const bool compact = opt.qat && opt.compact_rows;
  const double cache = double(row_size(opt.cache_type, 1));
  // One stored compressed row of `width` dims, nq of them quantized (compact) with blocks of `block`.
  auto row_bytes = [&](int64_t width, int64_t nq, dtype qtype, int64_t block) {
    if (!compact) return double(width) * cache;
    return double(row_size(qtype, nq)) + double((nq + block - 1) / block) + double(width - nq) * cache;
  };
  double per = 0;
  for (int64_t il = 0; il < hp.n_layers; ++il) {
    const int32_t r = hp.compress_ratio(il);
    if (r) per += row_bytes(hp.head_dim, hp.head_dim - hp.rope_dims, dtype::fp8_e4m3, 64) / r;
    if (r == 4) per += row_bytes(hp.index_head_dim, hp.index_head_dim, dtype::mxfp4, 32) / 4;
  }
  return per;
}

double session::state_bytes_per_token() const { return bytes_per_token(m_.hp(), opt_); }

bool session::eval(const int32_t* tokens, int64_t n, bool all_logits, std::vector<float>* logits, std::string* error) {
  const hparams& hp = m_.hp();
  if (n <= 0) {
    *error = "eval: no tokens";
    return false;
  }
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= hp.vocab_size) {
      *error = "eval: token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
               " is outside the vocabulary [0, " + std::to_string(hp.vocab_size) + ")";
      return false;
    }
  }
  if (n_past_ + n > opt_.n_ctx) {
    *error = "eval: " + std::to_string(n_past_ + n) + " positions exceed the context size " +
             std::to_string(opt_.n_ctx) + " (raise n_ctx)";
    return false;
  }
  if (logits) logits->clear();
  // One chunk (every decode step): its logits go straight into the caller's vector (no second
  // buffer allocated, filled and copied each token).
  if (prefill_chunk(n_past_, n) == n) return eval_chunk(tokens, n, all_logits, logits, error);
  std::vector<float> part;
  for (int64_t i = 0, c = 0; i < n; i += c) {
    c = prefill_chunk(n_past_, n - i);  // (n_past_ advances with each chunk)
    const bool want = all_logits || i + c == n;
    if (!eval_chunk(tokens + i, c, all_logits, want && logits ? &part : nullptr, error)) return false;
    if (want && logits) logits->insert(logits->end(), part.begin(), part.end());
  }
  return true;
}

int64_t session::prefill_chunk(int64_t p0, int64_t left) const {
  const hparams& hp = m_.hp();
  int64_t c = std::min(opt_.n_batch, left);
  bool csa = false;
  for (int32_t r : hp.compress_ratios) csa |= r == 4;
  if (!csa || hp.index_n_heads <= 0 || c <= 1) return std::max<int64_t>(c, 1);
  // Scores of a chunk of c tokens: ((p0 + c) / 4) rows x (heads x c) floats.
  auto bytes = [&](int64_t t) { return double((p0 + t) / 4) * double(hp.index_n_heads) * double(t) * 4.0; };
  while (c > 1 && bytes(c) > double(opt_.max_score_bytes)) c = std::max<int64_t>(1, c / 2);
  return c;
}

bool session::eval_chunk(const int32_t* tokens, int64_t T, bool all_logits, std::vector<float>* logits,
                         std::string* error) {
  const hparams& hp = m_.hp();
  const int64_t D = hp.hidden_size, HC = hp.hc_mult, W = hp.window, p0 = n_past_;
  const auto t_build = std::chrono::steady_clock::now();
  context ctx;
  inputs in(ctx);
  builder b(ctx, m_, hp, opt_, in);
  b.p0 = p0;
  b.T = T;

  std::vector<int32_t> tok(tokens, tokens + T), posv(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) posv[size_t(t)] = int32_t(p0 + t);
  b.pos = in.i32(posv, {T}, "pos");
  // Window mask: keys [ring slots | chunk tokens]; visible when key_pos in (t - W, t].
  b.ring_first = T == 1 && opt_.dump.empty();
  if (b.ring_first) {  // keys: the ring slots after this token's write (builder::ring_first)
    std::vector<float> wm(static_cast<size_t>(W), kNegInf);
    for (int64_t s = 0; s < W; ++s) {
      const int64_t kp = s == p0 % W ? p0 : ring_pos_[size_t(s)];
      if (kp >= 0 && kp <= p0 && kp > p0 - W) wm[size_t(s)] = 0.0f;
    }
    b.win_mask_host = wm;
    b.win_mask = in.f32(std::move(wm), {W, 1}, "win_mask");
  } else {
    std::vector<float> wm(static_cast<size_t>((W + T) * T), kNegInf);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t qp = p0 + t;
      float* row = &wm[size_t(t * (W + T))];
      for (int64_t s = 0; s < W; ++s) {
        const int64_t kp = ring_pos_[size_t(s)];
        if (kp >= 0 && kp <= qp && kp > qp - W) row[s] = 0.0f;
      }
      for (int64_t j = 0; j <= t; ++j)
        if (p0 + j > qp - W) row[W + j] = 0.0f;
    }
    b.win_mask = in.f32(std::move(wm), {W + T, T}, "win_mask");
  }

  tensor* x = get_rows(ctx, m_.embed, in.i32(tok, {T}, "tokens"));  // [D, T]
  tensor* x1 = reshape(ctx, x, {D, 1, T});
  tensor* X = x1;
  for (int64_t i = 1; i < HC; ++i) X = concat(ctx, X, x1, 1);  // [D, HC, T]

  // Each sublayer's hc_post is applied by the next sublayer's start (builder::start_sublayer), the
  // last one's by itself before hc_head: f and h are the sublayer output and weights pending.
  tensor* f = nullptr;
  builder::hc_out h{nullptr, nullptr};
  for (int64_t il = 0; il < hp.n_layers; ++il) {
    const layer_weights& L = m_.layers[size_t(il)];
    layer_state& S = layers_[size_t(il)];
    b.layer_ = il;
    auto a = b.start_sublayer(X, f, h, L.hc_attn_fn, L.hc_attn_base, L.hc_attn_scale, L.attn_norm,
                              b.act_block_for({L.wq_a, L.wkv}) ? builder::kActBlock : 0);
    if (f) X = b.named(a.X, "streams", il - 1);
    tensor* attn_in = b.named(a.x, "attn_in", il);
    f = b.named(b.attention(attn_in, L, S), "attn_out", il);
    auto m = b.start_sublayer(X, f, a.h, L.hc_ffn_fn, L.hc_ffn_base, L.hc_ffn_scale, L.ffn_norm,
                              b.act_block_for({L.sw1, L.sw3}) ? builder::kActBlock : 0);
    X = b.named(m.X, "streams_mid", il);
    tensor* ffn_in = b.named(m.x, "ffn_in", il);
    f = b.named(b.moe(ffn_in, L, tokens), "ffn_out", il);
    h = m.h;
  }
  if (f) X = b.named(b.hc_post(f, X, h), "streams", hp.n_layers - 1);
  tensor* y = b.named(b.norm_w(b.named(b.hc_head(X), "hc_head", -1), m_.norm), "final_norm", -1);  // [D, T]
  if (!all_logits) y = cont(ctx, view_2d(ctx, y, D, 1, y->nb[1], size_t(T - 1) * y->nb[1]));
  tensor* out = matmul(ctx, m_.head, y);        // [V, T or 1]
  out->flags |= kFlagOutput;

  if (!ctx.ok()) {
    *error = "building the graph: " + ctx.error();
    return false;
  }
  std::vector<tensor*> outs{out};
  outs.insert(outs.end(), b.dumps.begin(), b.dumps.end());
  outs.insert(outs.end(), b.writes.begin(), b.writes.end());
  graph g;
  if (!build_graph(ctx, outs, &g)) {
    *error = "building the graph: " + ctx.error();
    return false;
  }
  std::unique_ptr<buffer> inbuf;
  if (!in.upload(&inbuf, error)) return false;
  auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  stats_.chunks += 1;
  stats_.build_s += since(t_build);
  if (!sched_->compute(g, error)) return false;
  const auto t_read = std::chrono::steady_clock::now();

  // Results may be in accelerator memory: read them through their buffers.
  auto read = [](const tensor* t, std::vector<float>* dst) {
    dst->resize(size_t(t->nelements()));
    t->buf->get(t, dst->data(), 0, dst->size() * sizeof(float));
  };
  if (opt_.dump_fn) {
    std::vector<float> host;
    for (tensor* t : b.dumps) {
      read(t, &host);
      opt_.dump_fn(t->name, t->ne, host.data(), p0);
    }
  }
  if (logits) read(out, logits);
  stats_.read_s += since(t_read);
  for (int64_t t = 0; t < T; ++t) ring_pos_[size_t((p0 + t) % W)] = p0 + t;
  n_past_ += T;
  return true;
}

}  // namespace v4::model

// Op constructors. Each validates its sources, infers the result shape, and records a node;
// nothing is computed here. Shapes are written innermost-first, as ne (see tensor.h).
//
// Common rules, unless an op says otherwise:
//  * "f32" results are contiguous f32 tensors.
//  * Elementwise and reduction ops take f32 sources (any strides; rows need not be contiguous).
//    Convert other types first with cast().
//  * Broadcasting (binary ops, masks): b.ne[i] must equal a.ne[i] or be 1; b is repeated.
//  * Index tensors are i32 (set_rows also accepts i64). An out-of-range index is a caller error;
//    kernels clamp nothing and must not be fed one (the model validates token ids first).
//  * On invalid input an op records an error in the context and returns nullptr.
#pragma once

#include "tensor/tensor.h"

namespace v4 {

// ---- views (no compute; the result aliases a) -------------------------------------------------
// Generic strided view: ne[0..n_dims) elements, nb[0..n_dims-1) the byte strides of dims 1..n_dims-1
// (dim 0 is always packed: make a dim-0-strided view with permute), starting offset bytes into
// a's data. The span must lie inside a's.
tensor* view(context& ctx, tensor* a, int n_dims, const int64_t* ne, const size_t* nb, size_t offset);
tensor* view_1d(context& ctx, tensor* a, int64_t ne0, size_t offset);
tensor* view_2d(context& ctx, tensor* a, int64_t ne0, int64_t ne1, size_t nb1, size_t offset);
tensor* view_3d(context& ctx, tensor* a, int64_t ne0, int64_t ne1, int64_t ne2, size_t nb1, size_t nb2,
                size_t offset);
// Same elements, new shape. a must be contiguous; element counts must match.
tensor* reshape(context& ctx, tensor* a, std::initializer_list<int64_t> ne);
// numpy-style: result dim i is a's dim axes[i]. {1,0,2,3} swaps the two innermost dims.
tensor* permute(context& ctx, tensor* a, int ax0, int ax1, int ax2, int ax3);
tensor* transpose(context& ctx, tensor* a);  // permute(a, 1, 0, 2, 3)

// ---- elementwise -------------------------------------------------------------------------------
// a, b f32 (b broadcast to a) -> f32 shaped like a.
tensor* add(context& ctx, tensor* a, tensor* b);  // a + b
tensor* sub(context& ctx, tensor* a, tensor* b);  // a - b
tensor* mul(context& ctx, tensor* a, tensor* b);  // a * b
tensor* div(context& ctx, tensor* a, tensor* b);  // a / b
// a f32 -> f32:  a*s + b
tensor* scale(context& ctx, tensor* a, float s, float b = 0.0f);
// a f32 -> f32:  min(max(a, lo), hi). lo may be -inf, hi +inf. NaN stays NaN.
tensor* clamp(context& ctx, tensor* a, float lo, float hi);
// a f32 -> f32, elementwise:
tensor* silu(context& ctx, tensor* a);      // a * sigmoid(a)
tensor* sigmoid(context& ctx, tensor* a);   // 1 / (1 + exp(-a))
tensor* softplus(context& ctx, tensor* a);  // log(1 + exp(a)), = a for a > 20 (PyTorch threshold)
tensor* sqrt(context& ctx, tensor* a);      // sqrt(a)
tensor* relu(context& ctx, tensor* a);      // max(a, 0)
tensor* exp(context& ctx, tensor* a);       // exp(a)
// SwiGLU of the MoE experts, fused: g, u f32 [I, ...] of one shape (any strides), wts f32 [1, ...]
// broadcast to it (each dim 1 or g's; any strides) or nullptr -> f32 [I, ...]:
//   y = round(round(silu(min(g, limit)) clamp(u, -limit, limit)) wts)
// silu as silu() above (silu(-inf) = -0, NaN stays NaN); limit <= 0: no clamps; no wts: no last
// product. In that order, the bits of clamp, clamp, silu, mul, mul.
// fp8_block > 0: y is then rounded as fp8_roundtrip(y, fp8_block) (below) does, in the same node
// (the activation quantization of the matmul y feeds, written by its producer): the bits of
// swiglu then fp8_roundtrip. 0: no rounding.
tensor* swiglu(context& ctx, tensor* g, tensor* u, float limit, tensor* wts = nullptr, int fp8_block = 0);

// ---- reductions and normalisation --------------------------------------------------------------
// a f32 -> f32 with ne[dim] = 1:  sum / max over dimension dim (0..3).
tensor* sum(context& ctx, tensor* a, int dim = 0);
tensor* max(context& ctx, tensor* a, int dim = 0);
// a f32 [n, ...] -> f32 [n, ...], per row:  a / sqrt(mean(a^2) + eps). No weight (mul after).
tensor* rms_norm(context& ctx, tensor* a, float eps);
// rms_norm with its weight, fused: a f32 [n, ...] (any strides), w f32 [n] (any stride) -> f32 [n, ...],
// per row: y_i = round(a_i s) w_i, s = 1 / sqrt(mean(a^2) + eps), the product by w rounded once
// more (the bits of rms_norm then mul). fp8_block > 0: each row then rounded as
// fp8_roundtrip(y, fp8_block) does (the bits of rms_norm, mul, fp8_roundtrip); 0: no rounding.
tensor* rms_norm_w(context& ctx, tensor* a, tensor* w, float eps, int fp8_block = 0);

// Softmax over dim 0 of a f32 [n, r1, r2, r3], per row:
//   z_j = a_j * scale + mask[j, i1]          (mask optional: f32 [n, r1] or [n, r1, r2, r3],
//                                             broadcast over dims it has as 1; may hold -inf)
//   p_j = exp(z_j - M) / (sum_j exp(z_j - M) + exp(sink[i2] - M)),  M = max(max_j z_j, sink[i2])
// sink (optional): f32 [r2], one extra logit per index along dim 2 (the head dim in attention
// scores laid out [n_kv, n_q, n_head]); it joins the denominator only (its value is zero).
// A row whose logits are all -inf and has no sink gives all zeros.
struct softmax_params {
  float scale = 1.0f;
  tensor* mask = nullptr;
  tensor* sink = nullptr;
};
tensor* softmax(context& ctx, tensor* a, const softmax_params& p = {});

// Rotary embedding of a f32 [D, H, T, B] at positions pos i32 [T] (same for every h and b).
// Only the LAST n_rot dims of each row rotate: r = D - n_rot is the first rotated dim, and
// pairs are (r+2i, r+2i+1) when interleaved (DeepSeek, GPT-J), or (r+i, r+i+n_rot/2) otherwise
// (NeoX halves), for i in [0, n_rot/2). Pair i turns by angle pos * f_i:
//   f_i = base^(-2i/n_rot);  with YaRN (yarn_factor > 1):
//     corr(c) = n_rot * ln(yarn_orig_ctx / (c * 2*pi)) / (2 * ln(base))
//     lo = max(floor(corr(beta_fast)), 0),  hi = min(ceil(corr(beta_slow)), n_rot - 1)
//     (if lo == hi, hi += 0.001)
//     ramp_i = clamp((i - lo) / (hi - lo), 0, 1);  f_i = f_i / factor * ramp_i + f_i * (1 - ramp_i)
//   No attention-scale (mscale) factor is applied. (x, y) -> (x cos - y sin, x sin + y cos);
//   inverse = true turns by the negative angle (undoes the rotation).
// Dims before r pass through unchanged.
struct rope_params {
  int n_rot = 0;                // even, <= D
  float base = 10000.0f;
  bool interleaved = true;
  bool inverse = false;
  float yarn_factor = 1.0f;     // <= 1: YaRN off
  float yarn_orig_ctx = 0.0f;   // original context length
  float yarn_beta_fast = 32.0f;
  float yarn_beta_slow = 1.0f;
};
tensor* rope(context& ctx, tensor* a, tensor* pos, const rope_params& p);
// Per-head RMSNorm then RoPE (then, optionally, the FP8 round trip), fused: a f32 [D, H, T, B] (any
// strides), w f32 [D] (any stride) or nullptr, pos i32 [T] -> f32 [D, H, T, B] contiguous:
//   y = rope(rms_norm_w(a, w, eps), pos, p)       (w = nullptr: rms_norm(a, eps), no weight)
//   then, fp8_block > 0:  y = fp8_roundtrip(y, fp8_block, fp8_n)   (fp8_n = 0: the whole row)
// with the operations and roundings of those ops, so the bits of the chain; rope's parameters,
// checks and conventions as rope() (inverse and YaRN included).
tensor* norm_rope(context& ctx, tensor* a, tensor* w, tensor* pos, const rope_params& p, float eps,
                  int fp8_block = 0, int64_t fp8_n = 0);

// Walsh-Hadamard transform over dim 0 (n a power of two), Sylvester ordering:
//   y = scale * H_n a,  H_1 = [1],  H_2n = [[H_n, H_n], [H_n, -H_n]].  a f32 -> f32.
tensor* hadamard(context& ctx, tensor* a, float scale);
// mHC's doubly-stochastic mixing matrices (DeepSeek-V4 hc_pre). a f32 [n, n, R...] holds one
// n x n matrix per index of the higher dims, element a[k, j] = the official comb[j][k] (k, the
// output stream, innermost). Per matrix, with sums over k (dim 0, a "row") or j (dim 1, a "column"):
//   C = softmax over k of a, + eps;   C = C / (column sums + eps);
//   then iters - 1 times:  C = C / (row sums + eps);  C = C / (column sums + eps).
// -> f32 [n, n, R...] contiguous. iters >= 1 (V4: hc_sinkhorn_iters = 20, eps = hc_eps = 1e-6).
tensor* sinkhorn(context& ctx, tensor* a, int iters, float eps);
// mHC's mixing weights (DeepSeek-V4 hc_pre), fused. mix f32 [(2+n)*n, R...] with contiguous rows
// (the hc_fn projection of each token), base f32 [(2+n)*n] contiguous (hc_*_base), s[3] the three
// hc_*_scale values, per token:
//   pre[k]  = sigmoid(mix[k] s0 + base[k]) + eps                                    k < n
//   post[k] = 2 sigmoid(mix[n + k] s1 + base[n + k])
//   C       = sinkhorn(A, iters, eps),  A[k, j] = mix[2n + j n + k] s2 + base[2n + j n + k]
// with the operations and roundings of the unfused ops (scale, add, sigmoid, sinkhorn), so the same
// bits. -> f32 [(2+n)*n, R...] laid out for hc_post: pre (n values), then for each output stream k
// the row (post[k], C[k, 0], ..., C[k, n-1]) of n + 1 values (hc_post's weights).
tensor* hc_mix(context& ctx, tensor* mix, tensor* base, const float s[3], int iters, float eps);
// mHC's sublayer input (DeepSeek-V4 hc_pre's last step), fused: X f32 [D, HC, T] (any strides),
// pre f32 [1, HC, T] or [1, HC, 1] (any strides: hc_mix's output viewed) ->
//   y f32 [D, T],  y[d, t] = sum_j pre[0, j, t] X[d, j, t]
// in this order: y = 0, then for j = 0..HC-1: y = y + round(pre[j] X[d, j]) (each product and sum
// rounded once: the bits of mul then sum over dim 1).
tensor* hc_sum(context& ctx, tensor* X, tensor* pre);
// mHC's stream update after a sublayer (DeepSeek-V4 hc_post), fused: f f32 [D, T] the sublayer's
// output, X f32 [D, HC, T] the streams, w f32 [1+HC, HC, T] or [1+HC, HC, 1] (any strides: the
// (post[k], comb[k][.]) rows of hc_mix's output, viewed) ->
//   Y f32 [D, HC, T],  Y[d, k, t] = w[0, k, t] f[d, t] + sum_j w[1+j, k, t] X[d, j, t]
// in this order (transformers' post * f + comb^T @ X, the matmul accumulating by FMA):
//   S = round(w[1, k] X[d, 0]);  S = fma(w[1+j, k], X[d, j], S) for j = 1..HC-1;  Y = round(w[0, k] f[d]) + S
// (fma: one rounding), so every backend gives the same bits. The order matters beyond the last bit
// with QAT: a changed bit can move an FP8 activation rounding, or an indexer choice, downstream.
tensor* hc_post(context& ctx, tensor* f, tensor* X, tensor* w);
// mHC's pre chain of a sublayer, fused (the decode graph's seven small nodes as one): optionally the
// previous sublayer's hc_post first, then hc_pre (rms_norm of the flattened streams, the hc_fn
// projection, hc_mix, hc_sum), the sublayer's rms_norm_w, and optionally the FP8 round trip of its
// result (the activation quantization of the fp8 / mxfp4 projections that read it). Sources:
// X f32 [D, HC, T] the streams (contiguous without post: hc_pre flattens them), fn f32 [HC*D, M]
// (hc_*_fn, contiguous rows, M = (2+HC)*HC), base f32 [M] contiguous (hc_*_base), norm f32 [D] (the
// sublayer's norm weight); with post: f f32 [D, T] and w_post f32 [1+HC, HC, T] or [1+HC, HC, 1]
// as hc_post's f and w. Per token, in this order, each step the op named and its roundings:
//   S   = post ? hc_post(f, X, w_post) : X                              (the streams after post)
//   mix = matmul(fn, rms_norm(S as [HC*D, T], rms_eps))                 [M, T]
//   W   = hc_mix(mix, base, scale, iters, hc_eps)                       [M, T]
//   u   = rms_norm_w(hc_sum(S, W's pre), norm, rms_eps)                 [D, T]
//   q   = fp8_roundtrip(u, fp8_block)   (fp8_block > 0 only)            [D, T]
// so the bits of that chain of ops on the same backend's CPU kernels. -> f32 [n] contiguous, the
// results packed in regions that each start at a multiple of 128 floats (hc_pre_layout: a builder
// views them): S (post only), u, q (fp8 only), W, zeros between them. Without post the streams
// stay X (not copied).
struct hc_pre_params {
  float scale[3] = {0, 0, 0};  // hc_*_scale: pre, post, comb
  int iters = 20;              // hc_sinkhorn_iters (>= 1)
  float hc_eps = 1e-6f;        // hc_eps (>= 0)
  float rms_eps = 1e-6f;       // rms_eps of both norms (>= 0)
  int fp8_block = 0;           // > 0: also q, u rounded as fp8_roundtrip(u, fp8_block); 0: no q
  tensor* f = nullptr;         // with w_post: the previous sublayer's output (hc_post first)
  tensor* w_post = nullptr;
};
tensor* hc_pre(context& ctx, tensor* X, tensor* fn, tensor* base, tensor* norm, const hc_pre_params& p);
// Where hc_pre's results lie in its output, in floats from its start (each a multiple of 128;
// absent regions have size 0 and offset of the next): S [D, HC, T], u [D, T], q [D, T], W [M, T].
struct hc_pre_layout {
  int64_t D = 0, HC = 0, T = 0, M = 0;
  int64_t s = 0, u = 0, q = 0, w = 0, total = 0;
  bool post = false, fp8 = false;
};
hc_pre_layout hc_pre_layout_of(int64_t D, int64_t HC, int64_t T, bool post, bool fp8);
hc_pre_layout hc_pre_layout_of(const tensor* node);  // of an HC_PRE node

// The output rotation of attn_mqa / attn_sparse (optional; DeepSeek-V4 turns each head's output
// back by its query's position before the output projection): with pos i32 [T] given, the op's
// result is, instead of y f32 [D, T, H],
//   f32 [D, H, T] contiguous = rope(permute(y, 0, 2, 1, 3), pos, p)
// with rope()'s parameters, checks and conventions (inverse and YaRN included) and the operations
// of both ops: the CPU gives the bits of the chain. One node instead of two.
struct attn_out_rope {
  tensor* pos = nullptr;
  rope_params p;
};

// Attention of H query heads over ONE shared set of key = value rows (DeepSeek-V4's MQA latent),
// fused: no score matrix or transposed keys are materialised.
//   q f32 [D, T, H] (rows contiguous), kv f32 [D, NK] (rows contiguous; K = V), mask f32 [NK, T]
//   (optional; may hold -inf), sink f32 [H] (optional):
//   s[j, t, h] = (q[:, t, h] . kv[:, j]) * scale + mask[j, t]
//   p[:, t, h] = softmax over j of s, with exp(sink[h]) in the denominator (as softmax())
//   y[:, t, h] = sum_j p[j, t, h] * kv[:, j]        -> f32 [D, T, H]
// A query with every logit -inf and no sink gets zeros.
// With out (attn_out_rope above): the rotated result, laid out [D, H, T].
tensor* attn_mqa(context& ctx, tensor* q, tensor* kv, tensor* mask, tensor* sink, float scale,
                 const attn_out_rope* out = nullptr);

// The keys of attn_sparse, read where and as they are stored (DeepSeek-V4's KV caches):
//   ring   [D, W] f32 / f16 / bf16: the window slots;
//   store  the compressed rows (optional: nullptr = the window alone), either plain [D, R] f32 /
//          f16 / bf16, or compact fp8_e4m3 [nq, R] with ->scales (e8m0, per-row blocks as
//          get_rows reads them) whose dims nq..D-1 are the rows of
//   rest   [D - nq, R] f32 / f16 / bf16 (compact stores with nq < D only);
//   ids    i32 [k, T]: the store rows each token reads (optional: nullptr = rows 0 .. Rv-1).
// Every tensor has contiguous rows (nb[0] = the element size).
struct sparse_keys {
  tensor* ring = nullptr;
  tensor* store = nullptr;
  tensor* rest = nullptr;
  tensor* ids = nullptr;
};
// Sparse attention (CSA / HCA decode) over [window | store rows], fused: attn_mqa over keys that
// are never assembled in memory. q f32 [D, T, H] (rows contiguous), mask f32 [W + Rv, T] (the
// window slots', then one value per store row 0 .. Rv-1, Rv <= R; may hold -inf), sink f32 [H]
// (optional) ->  f32 [D, T, H]:
//   NK = W + k (with ids) or W + Rv (without; W without a store)
//   key(j, t)  = ring[:, j]                      for j < W
//              = row(i) = store[:, i] as get_rows reads it (fp8: code * scale), then rest[:, i],
//                with i = ids[j - W, t] (or j - W)              for j >= W
//   m(j, t)    = mask[j, t] for j < W,  mask[W + i, t] for j >= W (an id outside [0, Rv): -inf,
//                the row is not read)
//   y[:, t, :] = attn_mqa(q[:, t, :], key(:, t), m(:, t), sink, scale)
// The CPU gives the bits of the unfused chain (cast / get_rows / concat of the keys, gather /
// concat of the mask, attn_mqa). Node sources: q, ring, mask, sink, store, rest, ids (the first
// four in attn_mqa's slots 0, 2, 3); the store's scales travel in store->scales, as for get_rows.
// With out (attn_out_rope) the result is rotated and laid out [D, H, T], as for attn_mqa.
tensor* attn_sparse(context& ctx, tensor* q, const sparse_keys& keys, tensor* mask, tensor* sink, float scale,
                    const attn_out_rope* out = nullptr);

// ---- linear algebra -----------------------------------------------------------------------------
// w [K, M, Bw2, Bw3] (f32, f16, bf16, or a registered block type), x f32 [K, N, B2, B3] with rows
// contiguous, B2 % Bw2 == 0 and B3 % Bw3 == 0 (w is broadcast over batches):
//   y f32 [M, N, B2, B3],  y[m, n, b2, b3] = sum_k w[k, m, b2 / (B2/Bw2), b3 / (B3/Bw3)] * x[k, n, b2, b3]
// Kernels may round x to the weight's precision class (e.g. bf16 for bf16 weights on AVX512-BF16
// and AMX); each backend states its rounding in its kernel table and the op tests bound it.
tensor* matmul(context& ctx, tensor* w, tensor* x);

// Expert ("grouped") matmul. w [K, M, E] experts, x f32 [K, X1, N] with X1 = 1 (the same input
// for every selected expert) or X1 = n_used, ids i32 [n_used, N] expert indices in [0, E):
//   y f32 [M, n_used, N],  y[:, i, n] = w[:, :, ids[i, n]] @ x[:, i % X1, n]
tensor* matmul_id(context& ctx, tensor* w, tensor* x, tensor* ids);

// ---- indexing ------------------------------------------------------------------------------------
// a [K, R, B] (any type with to_f32), ids i32 [N, B] -> f32 [K, N, B]:  y[:, n, b] = a[:, ids[n, b], b]
// (embedding lookup when B = 1).
tensor* get_rows(context& ctx, tensor* a, tensor* ids);
// Writes rows of src f32 [K, N, B] into dst [K, R, B] (dst's type; converted) at ids i32/i64 [N, B]:
//   dst[:, ids[n, b], b] = src[:, n, b]. Returns an alias of dst; the write happens when the
//   returned tensor is computed (cache writes). Duplicate ids: the last n wins.
// A scaled dst (fp8_e4m3 with scale_block {b, 1}, b a multiple of 32; mxfp4 with {32, 1}: one scale
// per block of a row) is quantized on write: each block gets the scale of fp8_roundtrip /
// fp4_roundtrip (below) and its codes, so storing a row those ops produced is lossless.
tensor* set_rows(context& ctx, tensor* dst, tensor* src, tensor* ids);
// Per row r of a f32 [n, R...]: y[j, r] = a[idx[j, r], r]; idx i32 [k, R...] -> f32 [k, R...].
tensor* gather(context& ctx, tensor* a, tensor* idx);
// Per row of a f32 [n, R...] -> i32 [k, R...]: indices of the k largest values in decreasing
// order of value. Ties go to the LOWER index first (the official torch.topk-on-CUDA rule, the
// same on every backend; +0 and -0 tie). NaN ranks below every number, NaNs among themselves by
// index. 1 <= k <= n.
tensor* top_k(context& ctx, tensor* a, int k);
// The causal mask of compressed rows (one row per `ratio` tokens): for positions pos i32 [T],
//   y[i, t] = 0 if row i is complete at token t, i.e. (i + 1) * ratio <= pos[t] + 1, else -inf;
// f32 [rows, T]. Built where attention runs instead of as a [rows, T] host input per layer (at a
// 256-token prefill chunk after 64K tokens of context: 16K x 256 values). rows >= 1, ratio >= 1.
tensor* rows_mask(context& ctx, tensor* pos, int64_t rows, int ratio);
// Per row of a f32 [n, R...] -> i32 [n, R...]: a stable sort permutation (ties keep index order).
tensor* argsort(context& ctx, tensor* a, bool descending = false);
// The MoE router (DeepSeek-V4's "sqrtsoftplus" gate), as two fused ops. logits f32 [E, R...]
// (any strides), one row of expert logits per token; s_e = sqrt(softplus(logits_e)).
//  * route_topk: bias f32 [E] (any stride) or nullptr -> i32 [k, R...]: the experts of the k largest
//    s_e + bias_e (the bias enters the choice only), in top_k's order and tie rule (above). The
//    bits of top_k(add(sqrt(softplus(logits)), bias), k). 1 <= k <= E.
//  * route_weights: ids i32 [k, R...] (any strides; experts in [0, E), from route_topk or given, as
//    hash routing does) -> f32 [k, R...]:  w_j = s_{ids_j};  if normalize: w_j = w_j / sum_j w_j;
//    then w_j = w_j * scale. The bits of scale(div(w, sum(w, 0)), scale) on w = gather(s, ids)
//    (without the div when !normalize). A row whose chosen s are all 0 (logits -inf) gives NaN
//    when normalized, as the chain does.
tensor* route_topk(context& ctx, tensor* logits, tensor* bias, int k);
tensor* route_weights(context& ctx, tensor* logits, tensor* ids, bool normalize, float scale);
// a, b of the same type and equal shapes except along dim -> shape with ne[dim] = a.ne + b.ne.
tensor* concat(context& ctx, tensor* a, tensor* b, int dim);

// ---- copies and conversions -------------------------------------------------------------------------
// Copies a into dst (same number of elements, any layouts; converted to dst's type, elements
// taken in a's logical order). Returns an alias of dst (compute it to perform the write).
tensor* cpy(context& ctx, tensor* a, tensor* dst);
// A new contiguous tensor of type t holding a's elements (also: make a view contiguous). It is a
// CPY node that owns its memory (no separate op).
tensor* cast(context& ctx, tensor* a, dtype t);
inline tensor* cont(context& ctx, tensor* a) { return cast(ctx, a, a->type); }

// ---- escape hatch ---------------------------------------------------------------------------------------
// A node computed by a user function on the CPU. fn runs once per thread, with ith in [0, nth),
// and must split its work by ith itself. The result is a new contiguous tensor of type t.
using custom_fn = void (*)(tensor* dst, const tensor* const* src, int n_src, int ith, int nth, void* user);
struct custom_params {
  custom_fn fn = nullptr;
  void* user = nullptr;
  int max_threads = 0;  // 0: as many as the backend runs
};
tensor* custom(context& ctx, dtype t, std::initializer_list<int64_t> ne, std::initializer_list<tensor*> srcs,
               const custom_params& p);

// Parameter layout of each op in tensor::op_params (kernels read these, constructors write them).
namespace params {
// SCALE: f[0] = s, f[1] = b.    CLAMP: f[0] = lo, f[1] = hi.   SUM/MAX: i[0] = dim.
// RMS_NORM: f[0] = eps.         SOFTMAX: f[0] = scale; src[1] = mask or null, src[2] = sink or null.
// ROPE: i[0] = n_rot, i[1] = interleaved, i[2] = inverse, f[3] = base, f[4] = yarn_factor,
//       f[5] = yarn_orig_ctx, f[6] = beta_fast, f[7] = beta_slow.
// TOP_K: i[0] = k.   ARGSORT: i[0] = descending.   CONCAT: i[0] = dim.   HADAMARD: f[0] = scale.
// SINKHORN: i[0] = iters, f[1] = eps.    ATTN_MQA: f[0] = scale; src = q, kv, mask or null, sink or null,
//           pos or null (the output rotation: its parameters in words 1..8, read by rope_of(t, 1)).
// ATTN_SPARSE: f[0] = scale; src = q, ring, mask, sink, store, rest, ids (each may be null but q,
//           ring, mask), pos or null (the output rotation, words 1..8 as ATTN_MQA).
// HC_MIX: f[0..2] = s, i[3] = iters, f[4] = eps, i[5] = n.
// HC_SUM: src = X, pre.   HC_POST: src = f, X, w.   RMS_NORM_W: f[0] = eps, i[1] = fp8 block (0: off); src = a, w.
// SWIGLU: f[0] = limit, i[1] = fp8 block (0: off); src = g, u, wts or null.
// NORM_ROPE: words 0..7 as ROPE (rope_of reads them), f[8] = eps, i[9] = fp8 block (0: off),
//            i[10] = fp8 n (resolved: 0 < n <= ne0 when the block is on); src = a, pos, w or null.
// ROUTE_TOPK: i[0] = k; src = logits, bias or null.   ROUTE_WEIGHTS: i[0] = normalize, f[1] = scale.
// CUSTOM: the function and user pointers are stored in words 0..3, max_threads in word 4.
custom_params custom_of(const tensor* t);
// The rope parameters stored in words first..first+7 (ROPE, NORM_ROPE: 0; ATTN_MQA, ATTN_SPARSE: 1).
rope_params rope_of(const tensor* t, int first = 0);
}  // namespace params

// ---- quantization round-trips (QAT simulation; the formats are in quant/fp8.h, quant/mxfp4.h) ----
// a f32 [ne0, ...] (any strides) -> f32 [ne0, ...] contiguous. In each row, the first n elements
// (n = 0: all ne0) are cut into runs of `block` consecutive elements (the last run may be shorter);
// elements from n on are copied unchanged. Each run, with amax = max |a_i| over its finite a_i:
//   fp8_roundtrip:  s = 2^ceil(log2(f32(max(amax, 1e-4) * f32(1/448))))
//                   y_i = e4m3(clamp(a_i / s, -448, 448)) * s
//   fp4_roundtrip:  s = 2^ceil(log2(f32(max(amax, 6*2^-126) * f32(1/6))))
//                   y_i = e2m1(clamp(a_i / s, -6, 6)) * s
// e4m3 / e2m1: round to nearest, ties to even, subnormals kept. The products are rounded to f32
// before the ceil(log2) (the official kernels' fast_round_scale), and y is exact in f32 and bf16.
// NaN and +-inf elements pass through unchanged and do not enter amax.
// These are the official DeepSeek-V4 act_quant(x, block, "ue8m0", inplace=True) and
// fp4_act_quant(x, block, inplace=True): KV dims 0..447 use fp8 with block 64, the indexer's
// Hadamard-rotated q and keys fp4 with block 32.
tensor* fp8_roundtrip(context& ctx, tensor* a, int block = 64, int64_t n = 0);
tensor* fp4_roundtrip(context& ctx, tensor* a, int block = 32, int64_t n = 0);
// The activation quantization in front of every FP8/FP4 GEMM (official linear(): act_quant(x, 128,
// "ue8m0")), as a round trip: an FP8_ROUNDTRIP node with block 128 (the official kernel is the same
// act_quant, with the same 1e-4 amax floor, so it is not a separate op).
inline tensor* act_quant_fp8(context& ctx, tensor* a, int block = 128) { return fp8_roundtrip(ctx, a, block); }
// The block of the FP8 round trip (fp8_roundtrip's numerics, over whole rows) that the node a
// wrote its values with: fp8_roundtrip over all of a row, or the fp8 option of rms_norm_w, swiglu
// and norm_rope (over all of a row). 0 when a's op gives no such guarantee. a itself, not its views.
int fp8_rounded_block(const tensor* a);
// The block b with which the bytes [offs, offs + bytes) of a's memory (what a view of a reads) hold
// values rounded in runs of b counted from a's start: a contiguous a whose rows, a multiple of b
// long, a rounded whole (above), or a range inside hc_pre's q region (rows of D, a multiple of b,
// from a multiple of 128 floats). 0 when a gives no such guarantee.
int fp8_rounded_block(const tensor* a, size_t offs, size_t bytes);
// Parameters (tensor::op_params) of FP8_ROUNDTRIP and FP4_ROUNDTRIP: i[0] = block, i[1] = n
// (resolved by the constructor: 0 < n <= ne0), f[2] = amax floor (1e-4 or 6*2^-126).

}  // namespace v4

// Attention: attn_mqa (keys given as one f32 tensor) and attn_sparse (keys read from the KV caches
// as stored: window ring + rows of a compressed-row store, by id). Both run one core, attend(),
// so that attn_sparse gives the bits of get_rows / concat / attn_mqa on the same keys. With the
// output rotation (tensor/ops.h: attn_out_rope) each finished row is turned by rope.cpp's own
// functions, in place: the bits of the rope node it replaces.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/ops/common.h"
#include "backends/cpu/ops/convert.h"
#include "backends/cpu/ops/rope.h"
#include "quant/fp8.h"

namespace v4::cpu {

namespace {

// The output rotation (tensor/ops.h: attn_out_rope), when the node has positions: rope.cpp's
// angles per token and rope_row on each finished output row, in place: the bits of the rope
// node of the unfused chain (it reads the same f32 values with the same functions).
struct out_rotation {
  const tensor* pos = nullptr;  // nullptr: no rotation, y laid out [D, T, H]
  rope_params p;
  std::vector<double> freqs;
  std::vector<float> cs, sn;  // [T][n_rot / 2] of tokens [t0, t1)
  int64_t t0 = 0;

  out_rotation(const tensor* dst, const tensor* position_src, int64_t t_begin, int64_t t_end) : pos(position_src) {
    if (!pos) return;
    p = params::rope_of(dst, 1);
    freqs = rope_freqs(p);
    t0 = t_begin;
    const size_t half = size_t(p.n_rot / 2);
    cs.resize(size_t(t_end - t_begin) * half);
    sn.resize(cs.size());
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int32_t position = *reinterpret_cast<const int32_t*>(at(pos, t, 0, 0, 0));
      rope_angles(p, freqs, position, &cs[size_t(t - t0) * half], &sn[size_t(t - t0) * half]);
    }
  }
  // Output row (t, h): [D, H, T] with the rotation, else [D, T, H].
  float* row(tensor* dst, int64_t t, int64_t h) const {
    return reinterpret_cast<float*>(pos ? at(dst, 0, h, t, 0) : at(dst, 0, t, h, 0));
  }
  void apply(float* y, int64_t D, int64_t t) const {
    if (!pos) return;
    const size_t half = size_t(p.n_rot / 2);
    rope_row(p, reinterpret_cast<const char*>(y), sizeof(float), y, D, &cs[size_t(t - t0) * half],
             &sn[size_t(t - t0) * half]);
  }
};

// One (query, head) per task: scores against every key row, softmax with the sink, then the
// weighted sum of the same rows. f32 throughout; the loops over D are contiguous (vectorised).
// Heads in groups of kGroup: each key row is read once per group while the group's scores are
// made (vector dot products), then each head's softmax (with its sink) over its scores, then the
// weighted sum of rows, accumulated for the whole group row by row. Two passes over the keys,
// as the reference; the dot products and sums may be reordered (tests/ops: attn_mqa's bound).
// Tokens [t0, t1) of dst; key(t, j) -> const float* [D], mask(t, j) -> float (0 without one).
// rot: the output rotation (and where the rows go), made for tokens [t0, t1).
template <class Key, class Mask>
void attend(const exec& ex, tensor* dst, int64_t t0, int64_t t1, int64_t NK, const out_rotation& rot, Key&& key,
            Mask&& mask) {
  const tensor* q = dst->src[0];
  const tensor* sink = dst->src[3];
  const float scale = dst->param_f(0);
  const int64_t D = q->ne[0], T = t1 - t0, H = q->ne[2];
  constexpr int64_t kGroup = 4;
  const int64_t n_groups = (H + kGroup - 1) / kGroup;
  const vec::table& v = vec::best();
  parallel_for(ex, T * n_groups, kGroup * NK * D * 2, [&](int64_t r) {
    const int64_t t = t0 + r % T, h0 = (r / T) * kGroup, G = std::min(kGroup, H - h0);
    thread_local std::vector<float> scores, tmp;
    scores.resize(size_t(kGroup * NK));
    tmp.resize(size_t(D));
    const float* qv[kGroup];
    float* y[kGroup];
    float M[kGroup], sink_logit[kGroup];
    for (int64_t g = 0; g < G; ++g) {
      qv[g] = reinterpret_cast<const float*>(at(q, 0, t, h0 + g, 0));
      y[g] = rot.row(dst, t, h0 + g);
      M[g] = sink_logit[g] = sink ? *reinterpret_cast<const float*>(at(sink, h0 + g, 0, 0, 0)) : -INFINITY;
    }
    for (int64_t j = 0; j < NK; ++j) {
      const float m = mask(t, j);
      if (m == -INFINITY) {  // masked: its score is -inf, its row is neither read nor scored
        for (int64_t g = 0; g < G; ++g) scores[size_t(g * NK + j)] = -INFINITY;
        continue;
      }
      const float* k = key(t, j);
      for (int64_t g = 0; g < G; ++g) {
        const float sc = v.dot(qv[g], k, D) * scale + m;
        scores[size_t(g * NK + j)] = sc;
        M[g] = std::max(M[g], sc);
      }
    }
    float inv[kGroup];
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t d = 0; d < D; ++d) y[g][d] = 0;
      if (M[g] == -INFINITY) {  // nothing visible and no sink: zeros
        inv[g] = 0;
        continue;
      }
      // exp elementwise (the same bits at every position), then the sum in key order, so that
      // masked keys (exp 0) leave it unchanged: a chunk's prefill and its decode steps then
      // differ only where their keys do.
      float* p = &scores[size_t(g * NK)];
      for (int64_t j = 0; j < NK; ++j) p[j] -= M[g];
      v.exp(p, p, NK);
      float sum = sink ? std::exp(sink_logit[g] - M[g]) : 0.0f;
      for (int64_t j = 0; j < NK; ++j) sum += p[j];
      inv[g] = 1.0f / sum;
    }
    for (int64_t j = 0; j < NK; ++j) {
      const float* k = key(t, j);
      for (int64_t g = 0; g < G; ++g) {
        const float w = M[g] == -INFINITY ? 0.0f : scores[size_t(g * NK + j)];
        if (w == 0) continue;
        v.scale(k, w, 0.0f, tmp.data(), D);
        v.add(y[g], tmp.data(), y[g], D);
      }
    }
    for (int64_t g = 0; g < G; ++g) {
      if (inv[g] != 0) v.scale(y[g], inv[g], 0.0f, y[g], D);
      rot.apply(y[g], D, t);  // every row, zeros included (as the rope node)
    }
  });
}

}  // namespace

void kernel_ATTN_MQA(const exec& ex, tensor* dst) {
  const tensor* kv = dst->src[1];
  const tensor* mask = dst->src[2];
  auto key = [&](int64_t, int64_t j) { return reinterpret_cast<const float*>(at(kv, 0, j, 0, 0)); };
  auto mask_at = [&](int64_t t, int64_t j) {
    return mask ? *reinterpret_cast<const float*>(at(mask, j, t, 0, 0)) : 0.0f;
  };
  const int64_t T = dst->src[0]->ne[1];
  const out_rotation rot(dst, dst->src[4], 0, T);
  attend(ex, dst, 0, T, kv->ne[1], rot, key, mask_at);
}

// Token by token: the token's keys are converted into one f32 buffer [D, NK] exactly as the
// unfused chain makes them (cast of the ring, get_rows of the store: row_to_f32 and quant/'s fp8
// dequantizer, the rest's dims after the fp8 ones), then attend() runs on them as attn_mqa does.
// Same values, same order, same code: the chain's bits.
void kernel_ATTN_SPARSE(const exec& ex, tensor* dst) {
  const tensor* ring = dst->src[1];
  const tensor* mask = dst->src[2];
  const tensor* store = dst->src[4];
  const tensor* rest = dst->src[5];
  const tensor* ids = dst->src[6];
  const int64_t D = dst->ne[0], T = dst->src[0]->ne[1], W = ring->ne[1], Rv = mask->ne[0] - W;
  const out_rotation rot(dst, dst->src[7], 0, T);
  const int64_t NK = W + (ids ? ids->ne[0] : Rv);
  // The calling thread's buffers, reached by the workers through these pointers (a thread_local
  // named inside a parallel region would be the worker's own).
  thread_local std::vector<float> key_buf;
  thread_local std::vector<int64_t> row_buf;
  key_buf.resize(size_t(NK * D));
  row_buf.resize(size_t(NK));
  float* const keys = key_buf.data();
  int64_t* const rows = row_buf.data();
  for (int64_t t = 0; t < T; ++t) {
    // rows[j]: the store row of key j (-1: outside [0, Rv), masked and not read); j < W: the slot.
    for (int64_t j = 0; j < NK; ++j) {
      int64_t i = j - W;
      if (j >= W && ids) i = *reinterpret_cast<const int32_t*>(at(ids, j - W, t, 0, 0));
      rows[size_t(j)] = j < W ? j : (i >= 0 && i < Rv ? i : -1);
    }
    // The key of token t's mask value (attend() neither reads nor scores a masked key).
    auto mask_of = [&](int64_t tt, int64_t j) {
      if (j < W) return *reinterpret_cast<const float*>(at(mask, j, tt, 0, 0));
      const int64_t i = rows[size_t(j)];
      return i < 0 ? -INFINITY : *reinterpret_cast<const float*>(at(mask, W + i, tt, 0, 0));
    };
    parallel_for(ex, NK, D, [&](int64_t j) {
      if (mask_of(t, j) == -INFINITY) return;  // not read (at a prefill, most of [window | chunk])
      float* y = &keys[size_t(j * D)];
      const int64_t i = rows[size_t(j)];
      if (j < W) return row_to_f32(ring->type, at(ring, 0, j, 0, 0), y, D);
      const uint8_t* r = reinterpret_cast<const uint8_t*>(at(store, 0, i, 0, 0));
      if (store->type != dtype::fp8_e4m3) return row_to_f32(store->type, r, y, D);
      const int64_t nq = store->ne[0];
      const uint8_t* s = reinterpret_cast<const uint8_t*>(at(store->scales, 0, i / store->scale_block[1], 0, 0));
      quant::dequantize_row_fp8(r, s, store->scale_block[0], y, nq);
      if (nq < D) row_to_f32(rest->type, at(rest, 0, i, 0, 0), y + nq, D - nq);
    });
    attend(ex, dst, t, t + 1, NK, rot, [&](int64_t, int64_t j) { return &keys[size_t(j * D)]; }, mask_of);
  }
}

}  // namespace v4::cpu

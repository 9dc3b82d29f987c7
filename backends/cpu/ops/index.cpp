// Indexing kernels: get_rows, set_rows, gather, top_k, argsort, concat.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "backends/cpu/ops/common.h"
#include "backends/cpu/ops/convert.h"
#include "backends/cpu/ops/rank.h"
#include "quant/quant.h"

namespace v4::cpu {

namespace {
int64_t read_index(const tensor* ids, int64_t i0, int64_t i1) {
  const char* p = at(ids, i0, i1, 0, 0);
  return ids->type == dtype::i64 ? *reinterpret_cast<const int64_t*>(p) : *reinterpret_cast<const int32_t*>(p);
}
}  // namespace

void kernel_GET_ROWS(const exec& ex, tensor* dst) {
  const tensor* a = dst->src[0];
  const tensor* ids = dst->src[1];
  const int64_t K = a->ne[0], N = dst->ne[1];
  parallel_for(ex, dst->nrows(), K, [&](int64_t r) {
    const int64_t n = r % N, b = r / N;
    const int64_t src_row = read_index(ids, n, b);
    const uint8_t* q = reinterpret_cast<const uint8_t*>(at(a, 0, src_row, b, 0));
    if (!traits(a->type).scaled) {
      row_to_f32(a->type, q, frow(dst, r), K);
      return;
    }
    const uint8_t* s = reinterpret_cast<const uint8_t*>(at(a->scales, 0, src_row / a->scale_block[1], b, 0));
    if (a->type == dtype::mxfp4)
      quant::dequantize_row_mxfp4(q, s, frow(dst, r), K);
    else
      quant::dequantize_row_fp8(q, s, a->scale_block[0], frow(dst, r), K);
  });
}

void kernel_SET_ROWS(const exec& ex, tensor* dst) {
  const tensor* src = dst->src[1];
  const tensor* ids = dst->src[2];
  const int64_t K = src->ne[0], N = src->ne[1], B = src->ne[2];
  // Sequential over n so that with duplicate ids the last one wins; parallel over b.
  parallel_for(ex, B, N * K, [&](int64_t b) {
    thread_local std::vector<float> tmp;
    for (int64_t n = 0; n < N; ++n) {
      const float* row_f = packed_f32(at(src, 0, n, b, 0), src->nb[0], K, tmp);
      const int64_t row = read_index(ids, n, b);
      uint8_t* q = reinterpret_cast<uint8_t*>(at(dst, 0, row, b, 0));
      if (!traits(dst->type).scaled) {
        row_from_f32(dst->type, row_f, q, K);
        continue;
      }
      // Quantize on write: the scales of this row live at scales[:, row, b] (per-row blocks).
      uint8_t* sc = reinterpret_cast<uint8_t*>(at(dst->scales, 0, row, b, 0));
      if (dst->type == dtype::mxfp4)
        quant::quantize_row_mxfp4(row_f, q, sc, K);
      else
        quant::quantize_fp8_blocks(row_f, 1, K, dst->scale_block[0], 1, q, sc);
    }
  });
}

void kernel_GATHER(const exec& ex, tensor* dst) {
  const tensor* a = dst->src[0];
  const tensor* idx = dst->src[1];
  parallel_for(ex, dst->nrows(), dst->ne[0], [&](int64_t r) {
    const row_index i = split_row(dst, r);
    float* y = frow(dst, r);
    for (int64_t j = 0; j < dst->ne[0]; ++j) {
      const int32_t k = *reinterpret_cast<const int32_t*>(at(idx, j, i.i1, i.i2, i.i3));
      y[j] = *reinterpret_cast<const float*>(at(a, k, i.i1, i.i2, i.i3));
    }
  });
}

void kernel_ROWS_MASK(const exec& ex, tensor* dst) {
  const tensor* pos = dst->src[0];
  const int64_t ratio = dst->param_i(0), rows = dst->ne[0];
  parallel_for(ex, dst->ne[1], rows, [&](int64_t t) {
    const int64_t visible = (int64_t(*reinterpret_cast<const int32_t*>(at(pos, t, 0, 0, 0))) + 1) / ratio;
    float* y = frow(dst, t);
    for (int64_t i = 0; i < rows; ++i) y[i] = i < visible ? 0.0f : -std::numeric_limits<float>::infinity();
  });
}

namespace {
template <typename Rank>
void rank_rows(const exec& ex, tensor* dst, Rank&& rank) {
  const tensor* a = dst->src[0];
  const int64_t n = a->ne[0];
  parallel_for(ex, dst->nrows(), n * 16, [&](int64_t r) {
    thread_local std::vector<float> vals;
    thread_local std::vector<int32_t> order;
    vals.resize(size_t(n));
    order.resize(size_t(n));
    const row_index i = split_row(dst, r);
    for (int64_t k = 0; k < n; ++k) vals[k] = *reinterpret_cast<const float*>(at(a, k, i.i1, i.i2, i.i3));
    std::iota(order.begin(), order.end(), 0);
    rank(vals.data(), order);
    int32_t* y = reinterpret_cast<int32_t*>(row(dst, r));
    std::copy(order.begin(), order.begin() + dst->ne[0], y);
  });
}
}  // namespace

void kernel_TOP_K(const exec& ex, tensor* dst) {
  const int k = dst->param_i(0);
  rank_rows(ex, dst, [k](const float* v, std::vector<int32_t>& order) { top_k_order(v, int64_t(order.size()), k, order); });
}

void kernel_ARGSORT(const exec& ex, tensor* dst) {
  const bool descending = dst->param_i(0) != 0;
  rank_rows(ex, dst, [descending](const float* v, std::vector<int32_t>& order) {
    if (descending)
      std::stable_sort(order.begin(), order.end(), greater_first{v});
    else  // ascending, NaN last, ties in index order
      std::stable_sort(order.begin(), order.end(), [v](int32_t i, int32_t j) {
        const bool ni = std::isnan(v[i]), nj = std::isnan(v[j]);
        if (ni || nj) return !ni && nj;
        return v[i] < v[j];
      });
  });
}

// Row by row: along dim 0 an output row is a's row then b's; along another dim it is one row of
// a or of b. Each piece is one memcpy when its source elements are packed, else element-wise.
void kernel_CONCAT(const exec& ex, tensor* dst) {
  const tensor* a = dst->src[0];
  const tensor* b = dst->src[1];
  const int dim = dst->param_i(0);
  const size_t es = traits(dst->type).block_bytes;
  auto copy_piece = [es](char* y, const tensor* s, int64_t n, int64_t i1, int64_t i2, int64_t i3) {
    const char* src = at(s, 0, i1, i2, i3);
    if (size_t(s->nb[0]) == es) {
      std::memcpy(y, src, size_t(n) * es);
      return;
    }
    for (int64_t k = 0; k < n; ++k) std::memcpy(y + k * es, src + k * s->nb[0], es);
  };
  parallel_for(ex, dst->nrows(), dst->ne[0], [&](int64_t r) {
    const row_index i = split_row(dst, r);
    char* y = row(dst, r);
    if (dim == 0) {
      copy_piece(y, a, a->ne[0], i.i1, i.i2, i.i3);
      copy_piece(y + a->ne[0] * es, b, b->ne[0], i.i1, i.i2, i.i3);
      return;
    }
    int64_t idx[kMaxDims] = {0, i.i1, i.i2, i.i3};
    const bool first = idx[dim] < a->ne[dim];
    if (!first) idx[dim] -= a->ne[dim];
    copy_piece(y, first ? a : b, dst->ne[0], idx[1], idx[2], idx[3]);
  });
}

}  // namespace v4::cpu

// Copies and conversions (cpy / cast), the custom-op escape hatch, and the no-op view kernels.
#include <vector>

#include "backends/cpu/ops/common.h"
#include "backends/cpu/ops/convert.h"

namespace v4::cpu {

namespace {
float read_f32(const tensor* t, const char* p) {
  float v;
  traits(t->type).to_f32(p, &v, 1);
  return v;
}
}  // namespace

// dst aliases the destination (cpy) or owns its memory (cast); src[0] is the source.
void kernel_CPY(const exec& ex, tensor* dst) {
  const tensor* a = dst->src[0];
  const bool same_type = a->type == dst->type;
  const size_t es = traits(dst->type).block_bytes;
  if (a->ne[0] == dst->ne[0]) {  // rows correspond one to one, in order
    const int64_t n = a->ne[0];
    parallel_for(ex, dst->nrows(), n, [&](int64_t r) {
      thread_local std::vector<float> tmp;
      const row_index ia = split_row(a, r);
      const char* s = at(a, 0, ia.i1, ia.i2, ia.i3);
      char* d = row(dst, r);
      const bool packed = a->rows_contiguous() && dst->rows_contiguous();
      if (same_type && packed) {
        std::memcpy(d, s, row_size(a->type, n));
      } else if (same_type) {
        for (int64_t k = 0; k < n; ++k) std::memcpy(d + k * dst->nb[0], s + k * a->nb[0], es);
      } else if (packed) {
        tmp.resize(size_t(n));
        row_to_f32(a->type, s, tmp.data(), n);
        row_from_f32(dst->type, tmp.data(), d, n);
      } else {
        for (int64_t k = 0; k < n; ++k) {
          const float v = read_f32(a, s + k * a->nb[0]);
          traits(dst->type).from_f32(&v, d + k * dst->nb[0], 1);
        }
      }
    });
    return;
  }
  // General case: element l of a (logical order) goes to element l of dst.
  const int64_t total = a->nelements();
  parallel_for(ex, total, 4, [&](int64_t l) {
    int64_t ia[kMaxDims], id[kMaxDims];
    int64_t ra = l, rd = l;
    for (int d = 0; d < kMaxDims; ++d) {
      ia[d] = ra % a->ne[d];
      ra /= a->ne[d];
      id[d] = rd % dst->ne[d];
      rd /= dst->ne[d];
    }
    const char* s = at(a, ia[0], ia[1], ia[2], ia[3]);
    char* d = at(dst, id[0], id[1], id[2], id[3]);
    if (same_type) {
      std::memcpy(d, s, es);
    } else {
      const float v = read_f32(a, s);
      traits(dst->type).from_f32(&v, d, 1);
    }
  });
}

void kernel_CUSTOM(const exec& ex, tensor* dst) {
  const custom_params p = params::custom_of(dst);
  int n_src = 0;
  while (n_src < kMaxSrc && dst->src[n_src]) ++n_src;
  const int nt = p.max_threads > 0 && p.max_threads < ex.n_threads ? p.max_threads : ex.n_threads;
  const tensor* const* srcs = dst->src;
#pragma omp parallel num_threads(nt)
  p.fn(dst, srcs, n_src, omp_get_thread_num(), omp_get_num_threads(), p.user);
}

// Leaves and views compute nothing: their data is set by the allocator (resolve_views).
void kernel_NONE(const exec&, tensor*) {}
void kernel_VIEW(const exec&, tensor*) {}
void kernel_RESHAPE(const exec&, tensor*) {}
void kernel_PERMUTE(const exec&, tensor*) {}

kernel_fn kernel_for(op_kind op) {
  static constexpr kernel_fn kTable[] = {
#define X(e, name, min_src, max_src) kernel_##e,
#include "tensor/ops.def"
#undef X
  };
  static_assert(sizeof(kTable) / sizeof(kTable[0]) == size_t(op_kind::COUNT));
  return kTable[int(op)];
}

}  // namespace v4::cpu

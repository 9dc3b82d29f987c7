// View ops: view, reshape, permute, transpose. They compute nothing; results alias their source.
#include "tensor/ops_common.h"

namespace v4 {
using detail::describe;
using detail::have;

tensor* view(context& ctx, tensor* a, int n_dims, const int64_t* ne, const size_t* nb, size_t offset) {
  if (!have({a})) return nullptr;
  if (n_dims < 1 || n_dims > kMaxDims) {
    ctx.fail("view: %d dims (1 to %d allowed)", n_dims, kMaxDims);
    return nullptr;
  }
  int64_t rne[kMaxDims] = {1, 1, 1, 1};
  size_t rnb[kMaxDims];
  const type_traits& tr = traits(a->type);
  rnb[0] = tr.block_bytes;
  for (int i = 0; i < n_dims; ++i) rne[i] = ne[i];
  for (int i = 1; i < kMaxDims; ++i) rnb[i] = i < n_dims ? nb[i - 1] : rnb[i - 1] * size_t(rne[i - 1]);
  // nb holds the strides of dims 1..n_dims-1 (dim 0 is packed)
  tensor probe;
  probe.type = a->type;
  for (int i = 0; i < kMaxDims; ++i) {
    probe.ne[i] = rne[i];
    probe.nb[i] = rnb[i];
  }
  if (rne[0] % tr.block_size != 0) {
    ctx.fail("view of %s: dim 0 (%lld) not a multiple of the block size", describe(a).c_str(), (long long)rne[0]);
    return nullptr;
  }
  if (offset + probe.nbytes() > a->nbytes()) {
    ctx.fail("view of %s: offset %zu + %zu bytes exceeds the source's %zu bytes", describe(a).c_str(), offset,
             probe.nbytes(), a->nbytes());
    return nullptr;
  }
  return detail::new_alias(ctx, op_kind::VIEW, a, rne, rnb, offset, {a});
}

tensor* view_1d(context& ctx, tensor* a, int64_t ne0, size_t offset) {
  const int64_t ne[1] = {ne0};
  return view(ctx, a, 1, ne, nullptr, offset);
}

tensor* view_2d(context& ctx, tensor* a, int64_t ne0, int64_t ne1, size_t nb1, size_t offset) {
  const int64_t ne[2] = {ne0, ne1};
  const size_t nb[1] = {nb1};
  return view(ctx, a, 2, ne, nb, offset);
}

tensor* view_3d(context& ctx, tensor* a, int64_t ne0, int64_t ne1, int64_t ne2, size_t nb1, size_t nb2,
                size_t offset) {
  const int64_t ne[3] = {ne0, ne1, ne2};
  const size_t nb[2] = {nb1, nb2};
  return view(ctx, a, 3, ne, nb, offset);
}

tensor* reshape(context& ctx, tensor* a, std::initializer_list<int64_t> ne) {
  if (!have({a})) return nullptr;
  if (ne.size() < 1 || ne.size() > size_t(kMaxDims)) {
    ctx.fail("reshape: %zu dims (1 to %d allowed)", ne.size(), kMaxDims);
    return nullptr;
  }
  int64_t rne[kMaxDims] = {1, 1, 1, 1};
  int64_t n = 1;
  int i = 0;
  for (int64_t v : ne) {
    rne[i++] = v;
    n *= v;
  }
  if (!a->is_contiguous()) {
    ctx.fail("reshape of %s: source is not contiguous (use cont() first)", describe(a).c_str());
    return nullptr;
  }
  if (n != a->nelements() || rne[0] % traits(a->type).block_size != 0) {
    ctx.fail("reshape of %s to [%lld, %lld, %lld, %lld]: element counts differ", describe(a).c_str(),
             (long long)rne[0], (long long)rne[1], (long long)rne[2], (long long)rne[3]);
    return nullptr;
  }
  tensor probe;
  probe.type = a->type;
  for (int d = 0; d < kMaxDims; ++d) probe.ne[d] = rne[d];
  set_contiguous_strides(&probe);
  return detail::new_alias(ctx, op_kind::RESHAPE, a, rne, probe.nb, 0, {a});
}

tensor* permute(context& ctx, tensor* a, int ax0, int ax1, int ax2, int ax3) {
  if (!have({a})) return nullptr;
  const int ax[kMaxDims] = {ax0, ax1, ax2, ax3};
  bool seen[kMaxDims] = {};
  for (int i = 0; i < kMaxDims; ++i) {
    if (ax[i] < 0 || ax[i] >= kMaxDims || seen[ax[i]]) {
      ctx.fail("permute of %s: axes (%d, %d, %d, %d) are not a permutation of 0..3", describe(a).c_str(), ax0, ax1,
               ax2, ax3);
      return nullptr;
    }
    seen[ax[i]] = true;
  }
  if (traits(a->type).block_size != 1 && ax0 != 0) {
    ctx.fail("permute of %s: dim 0 of a block type cannot move", describe(a).c_str());
    return nullptr;
  }
  int64_t rne[kMaxDims];
  size_t rnb[kMaxDims];
  for (int i = 0; i < kMaxDims; ++i) {
    rne[i] = a->ne[ax[i]];
    rnb[i] = a->nb[ax[i]];
  }
  tensor* r = detail::new_alias(ctx, op_kind::PERMUTE, a, rne, rnb, 0, {a});
  if (r)
    for (int i = 0; i < 4; ++i) r->op_params[i] = ax[i];
  return r;
}

tensor* transpose(context& ctx, tensor* a) { return permute(ctx, a, 1, 0, 2, 3); }

}  // namespace v4

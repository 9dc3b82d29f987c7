// The conventions stated at the top of tensor/tensor.h, checked.
#include <gtest/gtest.h>

#include <cmath>

#include <cstring>
#include <vector>

#include "backends/backends.h"
#include "backends/cpu/cpu.h"
#include "tensor/alloc.h"
#include "tensor/ops.h"

namespace v4 {
namespace {

// Runs the graph of `out` on the CPU with the graph allocator; leaves must have data. The
// returned allocator owns the results' memory.
std::unique_ptr<graph_allocator> run_cpu(context& ctx, tensor* out) {
  graph g;
  EXPECT_TRUE(build_graph(ctx, {out}, &g)) << ctx.error();
  device* dev = cpu::cpu_device();
  auto alloc = std::make_unique<graph_allocator>(dev->default_buffer_type());
  std::string err;
  EXPECT_TRUE(alloc->allocate(g, &err)) << err;
  auto st = dev->new_stream();
  EXPECT_TRUE(st->compute(g, &err)) << err;
  return alloc;
}

TEST(Conventions, Ne0IsInnermostAndStridesAreBytes) {
  context ctx;
  tensor* t = ctx.new_tensor(dtype::f32, {5, 3, 2});  // PyTorch shape (2, 3, 5)
  EXPECT_EQ(t->nb[0], 4u);
  EXPECT_EQ(t->nb[1], 20u);
  EXPECT_EQ(t->nb[2], 60u);
  EXPECT_EQ(t->nb[3], 120u);
  EXPECT_EQ(t->nrows(), 6);
  EXPECT_EQ(t->n_dims(), 3);
  EXPECT_TRUE(t->is_contiguous());
  tensor* h = ctx.new_tensor(dtype::bf16, {8, 2});
  EXPECT_EQ(h->nb[1], 16u);
}

TEST(Conventions, MatmulIsXTimesWTransposed) {
  // w: PyTorch Linear weight [out = 3, in = 2]; x: 2 rows of 2 features.
  context ctx;
  tensor* w = ctx.new_tensor(dtype::f32, {2, 3});
  tensor* x = ctx.new_tensor(dtype::f32, {2, 2});
  float wd[6] = {1, 2, 3, 4, 5, 6};  // rows (1,2), (3,4), (5,6)
  float xd[4] = {1, 0, 0, 1};        // rows e0, e1
  w->data = wd;
  x->data = xd;
  tensor* y = matmul(ctx, w, x);
  ASSERT_NE(y, nullptr);
  EXPECT_EQ(y->ne[0], 3);
  EXPECT_EQ(y->ne[1], 2);
  auto mem = run_cpu(ctx, y);
  const float* yd = static_cast<const float*>(y->data);
  // y[n][m] = sum_k w[m][k] x[n][k]: row 0 = w[:, 0] = (1, 3, 5), row 1 = w[:, 1] = (2, 4, 6)
  const float expect[6] = {1, 3, 5, 2, 4, 6};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(yd[i], expect[i]) << i;
}

TEST(Conventions, PermuteIsNumpyTransposeWithoutCopy) {
  context ctx;
  tensor* a = ctx.new_tensor(dtype::f32, {4, 3, 2});
  std::vector<float> d(24);
  for (int i = 0; i < 24; ++i) d[i] = float(i);
  a->data = d.data();
  tensor* p = permute(ctx, a, 2, 0, 1, 3);  // result dim i = a dim axes[i]
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->ne[0], 2);
  EXPECT_EQ(p->ne[1], 4);
  EXPECT_EQ(p->ne[2], 3);
  EXPECT_EQ(p->nb[0], a->nb[2]);
  EXPECT_EQ(p->view_src, a);  // an alias, no new memory
  tensor* c = cont(ctx, p);
  auto mem = run_cpu(ctx, c);
  const float* cd = static_cast<const float*>(c->data);
  // c[i0, i1, i2] = a[i1, i2, i0] = d[i1 + 4*i2 + 12*i0]
  for (int i2 = 0; i2 < 3; ++i2)
    for (int i1 = 0; i1 < 4; ++i1)
      for (int i0 = 0; i0 < 2; ++i0) EXPECT_EQ(cd[i0 + 2 * i1 + 8 * i2], d[i1 + 4 * i2 + 12 * i0]);
}

TEST(Conventions, ViewsAliasWithOffsets) {
  context ctx;
  tensor* a = ctx.new_tensor(dtype::f32, {6, 4});
  std::vector<float> d(24);
  for (int i = 0; i < 24; ++i) d[i] = float(i);
  a->data = d.data();
  tensor* v = view_2d(ctx, a, 3, 2, a->nb[1] * 2, 2 * sizeof(float) + a->nb[1]);  // rows 1 and 3, cols 2..4
  ASSERT_NE(v, nullptr);
  tensor* vv = view_1d(ctx, v, 2, sizeof(float));  // a view of a view: offsets accumulate
  ASSERT_NE(vv, nullptr);
  EXPECT_EQ(vv->view_src, a);
  EXPECT_EQ(vv->view_offs, 3 * sizeof(float) + a->nb[1]);
  tensor* c = cont(ctx, v);
  auto mem = run_cpu(ctx, c);
  const float* cd = static_cast<const float*>(c->data);
  const float expect[6] = {8, 9, 10, 20, 21, 22};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(cd[i], expect[i]);
  // Out-of-range views are refused with a message.
  EXPECT_EQ(view_1d(ctx, a, 25, 0), nullptr);
  EXPECT_NE(ctx.error().find("exceeds"), std::string::npos) << ctx.error();
}

TEST(Conventions, OpErrorsPropagateWithoutAbort) {
  context ctx;
  tensor* a = ctx.new_tensor(dtype::f32, {4, 3});
  tensor* b = ctx.new_tensor(dtype::f32, {5, 3});
  tensor* bad = add(ctx, a, b);
  EXPECT_EQ(bad, nullptr);
  const std::string first = ctx.error();
  EXPECT_NE(first.find("broadcast"), std::string::npos) << first;
  tensor* later = silu(ctx, mul(ctx, bad, a));  // consequences stay quiet
  EXPECT_EQ(later, nullptr);
  EXPECT_EQ(ctx.error(), first);
  graph g;
  EXPECT_FALSE(build_graph(ctx, {later}, &g));
}

TEST(Conventions, ScalarConversionsRoundToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1 + 2^-7: ties to even (1.0)
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);  // 1 + 3*2^-8: tie, rounds up to even
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to inf
  EXPECT_EQ(f32_to_f16(5.960464477539063e-08f), 0x0001);  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x0001), 5.960464477539063e-08f);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  for (uint32_t h = 0; h < 0x10000; ++h) {  // every non-NaN f16 survives f16 -> f32 -> f16
    const float f = f16_to_f32(uint16_t(h));
    if (!std::isnan(f)) {
      ASSERT_EQ(f32_to_f16(f), h) << h;
    }
  }
}

}  // namespace
}  // namespace v4

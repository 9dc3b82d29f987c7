// The scheduler, on a mock accelerator (tests/common/mock_accel.h) that supports only add, mul
// and matmul. Its stream refuses any node that reads memory it cannot read, so a missing copy
// fails the test instead of silently working.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>

#include "backends/cpu/cpu.h"
#include "common/mock_accel.h"
#include "tensor/sched.h"

namespace v4 {
namespace {

bool mock_supports(const tensor* t) {
  return t->op == op_kind::ADD || t->op == op_kind::MUL || t->op == op_kind::MATMUL;
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (float& f : v) f = d(rng);
  return v;
}

// y1 = W1 x (mock: W1 lives there), s = softmax(y1) (CPU: mock lacks it), y2 = s + s (CPU: follows),
// y3 = W1 y2 (mock again), out = y3 * y3 (mock: follows). Expect 3 splits and 3 copies:
// x -> mock, y1 -> CPU, y2 -> mock.
struct two_device_case {
  context ctx;
  tensor *w1 = nullptr, *x = nullptr, *out = nullptr;
  tensor *y1 = nullptr, *s = nullptr, *y3 = nullptr;
  std::unique_ptr<buffer> wbuf;

  void build(buffer_type* weight_bt, const std::vector<float>& w) {
    w1 = ctx.new_tensor(dtype::f32, {16, 16});
    w1->set_name("w1");
    w1->flags |= kFlagWeight;
    std::string err;
    wbuf = weight_bt->alloc(w1->nbytes(), &err);
    bind_tensor(w1, wbuf.get(), 0);
    wbuf->set(w1, w.data(), 0, w1->nbytes());
    x = ctx.new_tensor(dtype::f32, {16, 3});
    x->set_name("x");
    x->flags |= kFlagInput;
    y1 = matmul(ctx, w1, x);
    y1->set_name("y1");
    s = softmax(ctx, y1);
    s->set_name("s");
    tensor* y2 = add(ctx, s, s);
    y2->set_name("y2");
    y3 = matmul(ctx, w1, y2);
    y3->set_name("y3");
    out = mul(ctx, y3, y3);
    out->set_name("out");
  }
};

TEST(Scheduler, SplitsByWeightsAndSupportAndInsertsCopies) {
  test::mock_device mock{"MOCK", mock_supports};
  const std::vector<float> w = random_floats(256, 1), xin = random_floats(48, 2);

  // Reference: everything on the CPU.
  two_device_case ref;
  ref.build(cpu::cpu_device()->default_buffer_type(), w);
  graph gref;
  ASSERT_TRUE(build_graph(ref.ctx, {ref.out}, &gref));
  scheduler cpu_only({cpu::cpu_device()});
  std::string err;
  ASSERT_TRUE(cpu_only.plan(gref, &err)) << err;
  ASSERT_TRUE(cpu_only.compute(gref, &err)) << err;  // allocates x
  std::memcpy(ref.x->data, xin.data(), xin.size() * 4);
  ASSERT_TRUE(cpu_only.compute(gref, &err)) << err;
  EXPECT_EQ(cpu_only.splits().size(), 1u);
  EXPECT_EQ(cpu_only.n_copies(), 0);
  std::vector<float> expect(48);
  std::memcpy(expect.data(), ref.out->data, 48 * 4);

  two_device_case c;
  c.build(mock.default_buffer_type(), w);
  graph g;
  ASSERT_TRUE(build_graph(c.ctx, {c.out}, &g));
  scheduler sched({&mock, cpu::cpu_device()});
  ASSERT_TRUE(sched.plan(g, &err)) << err;
  EXPECT_EQ(sched.device_of(c.y1), &mock);
  EXPECT_EQ(sched.device_of(c.s), cpu::cpu_device());
  EXPECT_EQ(sched.device_of(c.y3), &mock);
  EXPECT_EQ(sched.device_of(c.out), &mock);
  ASSERT_EQ(sched.splits().size(), 3u);
  EXPECT_EQ(sched.splits()[0].dev, &mock);
  EXPECT_EQ(sched.splits()[1].dev, cpu::cpu_device());
  EXPECT_EQ(sched.splits()[2].dev, &mock);
  EXPECT_EQ(sched.n_copies(), 3);

  for (int step = 0; step < 3; ++step) {  // repeated: plans are reused, results stay equal
    ASSERT_TRUE(sched.compute(g, &err)) << err;
    ASSERT_TRUE(c.x->buf->is_host());  // inputs live in host memory
    std::memcpy(c.x->data, xin.data(), xin.size() * 4);
    ASSERT_TRUE(sched.compute(g, &err)) << err;
    std::vector<float> got(48);
    c.out->buf->get(c.out, got.data(), 0, 48 * 4);
    for (int i = 0; i < 48; ++i) ASSERT_FLOAT_EQ(got[i], expect[i]) << i;
    EXPECT_GT(sched.peak_bytes(&mock), 0u);
    EXPECT_GT(sched.peak_bytes(cpu::cpu_device()), 0u);
  }
  // The caller's graph is left as it was built (copies are wired in only while computing).
  EXPECT_EQ(c.s->src[0], c.y1);
}

// Rule d: t = sm + sm and m = t * t only follow the CPU-only softmax; their one consumer is the
// mock's matmul, so they move to the mock (one CPU split fewer work). u = sm + sm feeds both the
// matmul and a CPU softmax: it stays. Results equal a CPU-only run.
TEST(Scheduler, FollowersMoveUpToTheirConsumersDevice) {
  test::mock_device mock{"MOCK", mock_supports};
  const std::vector<float> w = random_floats(256, 3), xin = random_floats(48, 4);
  auto run = [&](std::vector<device*> devs, buffer_type* wbt, std::vector<float>* out,
                 std::vector<device*>* where) {
    context ctx;
    tensor* w1 = ctx.new_tensor(dtype::f32, {16, 16});
    w1->flags |= kFlagWeight;
    std::string err;
    auto wbuf = wbt->alloc(w1->nbytes(), &err);
    bind_tensor(w1, wbuf.get(), 0);
    wbuf->set(w1, w.data(), 0, w1->nbytes());
    tensor* x = ctx.new_tensor(dtype::f32, {16, 3});
    x->flags |= kFlagInput;
    tensor* sm = softmax(ctx, x);
    tensor* t = add(ctx, sm, sm);
    tensor* m = mul(ctx, t, t);
    tensor* u = add(ctx, sm, sm);
    tensor* y = matmul(ctx, w1, add(ctx, m, u));
    tensor* out_t = add(ctx, y, softmax(ctx, u));
    graph g;
    ASSERT_TRUE(build_graph(ctx, {out_t}, &g));
    scheduler sched(std::move(devs));
    ASSERT_TRUE(sched.compute(g, &err)) << err;  // allocates x
    std::memcpy(x->data, xin.data(), xin.size() * 4);
    ASSERT_TRUE(sched.compute(g, &err)) << err;
    out->resize(48);
    out_t->buf->get(out_t, out->data(), 0, 48 * 4);
    *where = {sched.device_of(sm), sched.device_of(t), sched.device_of(m), sched.device_of(u), sched.device_of(y)};
  };
  std::vector<float> expect, got;
  std::vector<device*> where;
  run({cpu::cpu_device()}, cpu::cpu_device()->default_buffer_type(), &expect, &where);
  run({&mock, cpu::cpu_device()}, mock.default_buffer_type(), &got, &where);
  EXPECT_EQ(where[0], cpu::cpu_device());  // softmax: the mock lacks it
  EXPECT_EQ(where[1], &mock);              // t: moved up (its consumer m moved first)
  EXPECT_EQ(where[2], &mock);              // m: moved up to the matmul's device
  EXPECT_EQ(where[3], cpu::cpu_device());  // u: consumers on both devices
  EXPECT_EQ(where[4], &mock);
  ASSERT_EQ(got.size(), expect.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_FLOAT_EQ(got[i], expect[i]) << i;
}

TEST(Scheduler, CpuMustBeLast) {
  test::mock_device mock{"MOCK", mock_supports};
  context ctx;
  tensor* x = ctx.new_tensor(dtype::f32, {4});
  x->flags |= kFlagInput;
  graph g;
  ASSERT_TRUE(build_graph(ctx, {silu(ctx, x)}, &g));
  scheduler bad({cpu::cpu_device(), &mock});
  std::string err;
  EXPECT_FALSE(bad.plan(g, &err));
  EXPECT_NE(err.find("CPU"), std::string::npos);
}

}  // namespace
}  // namespace v4

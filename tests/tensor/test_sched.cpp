// The scheduler, on a mock accelerator: a device with its own (non-host) memory that supports
// only a few ops. Its stream refuses any node that reads memory it cannot read, so a missing
// copy fails the test instead of silently working.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>

#include "backends/cpu/cpu.h"
#include "backends/cpu/ops/kernels.h"
#include "tensor/sched.h"

namespace v4 {
namespace {

class mock_device;

class mock_buffer final : public buffer {
 public:
  mock_buffer(buffer_type* t, size_t n) : type_(t), p_(std::aligned_alloc(64, (n + 63) / 64 * 64)), n_(n) {}
  ~mock_buffer() override { std::free(p_); }
  buffer_type* type() const override { return type_; }
  void* base() const override { return p_; }
  size_t size() const override { return n_; }
  void set(tensor* t, const void* src, size_t off, size_t n) override {
    std::memcpy(static_cast<char*>(t->data) + off, src, n);
  }
  void get(const tensor* t, void* dst, size_t off, size_t n) override {
    std::memcpy(dst, static_cast<const char*>(t->data) + off, n);
  }
  void clear(uint8_t v) override { std::memset(p_, v, n_); }

 private:
  buffer_type* type_;
  void* p_;
  size_t n_;
};

class mock_buffer_type final : public buffer_type {
 public:
  explicit mock_buffer_type(device* d) : d_(d) {}
  const char* name() const override { return "MOCK"; }
  device* dev() const override { return d_; }
  std::unique_ptr<buffer> alloc(size_t size, std::string*) override {
    return std::make_unique<mock_buffer>(this, size);
  }
  bool is_host() const override { return false; }  // the CPU may not read it

 private:
  device* d_;
};

class mock_stream final : public stream {
 public:
  explicit mock_stream(device* d) : d_(d) {}
  device* dev() const override { return d_; }
  bool compute(const graph& g, std::string* error) override;
  int nodes_run = 0;

 private:
  device* d_;
};

class mock_device final : public device {
 public:
  mock_device() : bt_(this) {}
  const char* name() const override { return "MOCK"; }
  std::string description() const override { return "mock accelerator (add, mul, matmul)"; }
  device_kind kind() const override { return device_kind::gpu; }
  void memory(size_t* free, size_t* total) const override { *free = *total = size_t(1) << 30; }
  buffer_type* default_buffer_type() override { return &bt_; }
  std::unique_ptr<stream> new_stream() override { return std::make_unique<mock_stream>(this); }
  bool supports_op(const tensor* t) const override {
    return t->op == op_kind::ADD || t->op == op_kind::MUL || t->op == op_kind::MATMUL;
  }
  bool can_read(const buffer_type* bt) const override { return bt == &bt_; }

 private:
  mock_buffer_type bt_;
};

bool mock_stream::compute(const graph& g, std::string* error) {
  resolve_views(g);
  for (tensor* t : g.nodes) {
    if (!d_->supports_op(t)) {
      *error = std::string("mock: unsupported op ") + op_name(t->op);
      return false;
    }
    for (const tensor* s : t->src)
      if (s && !d_->can_read(s->base()->buf->type())) {
        *error = std::string("mock: '") + t->name + "' reads '" + s->name + "' from memory it cannot read";
        return false;
      }
    if (!d_->can_read(t->buf->type())) {
      *error = std::string("mock: '") + t->name + "' is not in mock memory";
      return false;
    }
    cpu::kernel_for(t->op)(cpu::exec{1}, t);  // the memory is host memory in disguise
    ++nodes_run;
  }
  return true;
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
  mock_device mock;
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

TEST(Scheduler, CpuMustBeLast) {
  mock_device mock;
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

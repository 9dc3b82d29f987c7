// A mock accelerator for scheduler and offload tests: a device with memory of its own (host
// memory in disguise, but declared non-host, so the CPU never reads it directly and the scheduler
// must copy across), computing with the CPU's kernels, and supporting only the ops a predicate
// accepts. Its stream refuses any node that reads memory it cannot read, so a missing copy fails
// a test instead of silently working. Header-only: include it from one test file per binary.
#pragma once

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "backends/cpu/ops/kernels.h"
#include "tensor/backend.h"
#include "tensor/graph.h"

namespace v4::test {

class mock_device final : public device {
 public:
  using supports_fn = bool (*)(const tensor*);
  // name: the registry name (e.g. "MOCK0"); supports: which ops it computes.
  mock_device(const char* name, supports_fn supports) : name_(name), supports_(supports), bt_(this) {}
  const char* name() const override { return name_; }
  std::string description() const override { return "mock accelerator (CPU kernels, own memory)"; }
  device_kind kind() const override { return device_kind::gpu; }
  void memory(size_t* free, size_t* total) const override { *free = *total = size_t(1) << 32; }
  buffer_type* default_buffer_type() override { return &bt_; }
  std::unique_ptr<stream> new_stream() override { return std::make_unique<mock_stream>(this); }
  bool supports_op(const tensor* t) const override { return supports_(t); }
  bool can_read(const buffer_type* bt) const override { return bt == &bt_; }
  int64_t nodes_run = 0;

 private:
  class mock_buffer_type final : public buffer_type {
   public:
    explicit mock_buffer_type(mock_device* d) : d_(d) {}
    const char* name() const override { return d_->name(); }
    device* dev() const override { return d_; }
    std::unique_ptr<buffer> alloc(size_t size, std::string*) override {
      return std::make_unique<memory_buffer>(this, std::aligned_alloc(256, (size + 255) / 256 * 256), size,
                                             /*owned=*/true);
    }
    size_t alignment() const override { return 256; }
    bool is_host() const override { return false; }  // the CPU may not read it

   private:
    mock_device* d_;
  };

  class mock_stream final : public stream {
   public:
    explicit mock_stream(mock_device* d) : d_(d) {}
    device* dev() const override { return d_; }
    bool compute(const graph& g, std::string* error) override {
      resolve_views(g);
      for (tensor* t : g.nodes) {
        if (op_is_view(t->op)) continue;
        if (!d_->supports_op(t)) {
          *error = std::string("mock: unsupported op ") + op_name(t->op);
          return false;
        }
        for (const tensor* s : t->src) {
          if (!s) continue;
          const tensor* b = s->base();
          if (!b->buf || !d_->can_read(b->buf->type())) {
            *error = std::string("mock: '") + t->name + "' reads '" + s->name + "' from memory it cannot read";
            return false;
          }
        }
        if (!t->base()->buf || !d_->can_read(t->base()->buf->type())) {
          *error = std::string("mock: '") + t->name + "' is not in mock memory";
          return false;
        }
        cpu::kernel_for(t->op)(cpu::exec{1}, t);  // the memory is host memory in disguise
        ++d_->nodes_run;
      }
      return true;
    }

   private:
    mock_device* d_;
  };

  const char* name_;
  supports_fn supports_;
  mock_buffer_type bt_;
};

}  // namespace v4::test

// The CPU device: host buffers (64-byte aligned), a stream that runs the kernel table with
// OpenMP threads, and the support declaration.
#include <chrono>
#include <sys/sysinfo.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "backends/cpu/cpu.h"
#include "backends/cpu/matmul.h"
#include "backends/cpu/ops/kernels.h"

namespace v4::cpu {

namespace {

constexpr size_t kAlign = 64;

class host_buffer_type final : public buffer_type {
 public:
  explicit host_buffer_type(device* d) : dev_(d) {}
  const char* name() const override { return "CPU"; }
  device* dev() const override { return dev_; }
  std::unique_ptr<buffer> alloc(size_t size, std::string* error) override {
    const size_t n = (size + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, n ? n : kAlign);
    if (!p) {
      if (error) *error = "CPU: out of memory allocating " + std::to_string(size >> 20) + " MiB";
      return nullptr;
    }
    return std::make_unique<memory_buffer>(this, p, size, /*owned=*/true);
  }
  size_t alignment() const override { return kAlign; }
  bool is_host() const override { return true; }

 private:
  device* dev_;
};

class cpu_stream final : public stream {
 public:
  explicit cpu_stream(device* d) : dev_(d), n_threads_(default_threads()) {}
  device* dev() const override { return dev_; }
  void set_n_threads(int n) override { n_threads_ = n > 0 ? n : default_threads(); }

  bool compute(const graph& g, std::string* error) override {
    resolve_views(g);
    const exec ex{n_threads_};
    for (tensor* t : g.nodes) {
      if (op_is_view(t->op)) continue;
      if (!dev_->supports_op(t)) {
        *error = std::string("CPU: op ") + op_name(t->op) + " on '" + t->name + "' is not supported for type " +
                 type_name(t->src[0] ? t->src[0]->type : t->type);
        return false;
      }
      if (!t->data) {
        *error = std::string("CPU: '") + t->name + "' (" + op_name(t->op) + ") has no memory: allocate the graph first";
        return false;
      }
      if (!profile_) {
        kernel_for(t->op)(ex, t);
        continue;
      }
      const auto t0 = std::chrono::steady_clock::now();
      kernel_for(t->op)(ex, t);
      profile_->seconds[size_t(t->op)] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      profile_->calls[size_t(t->op)] += 1;
    }
    return true;
  }
  bool set_profile(op_profile* p) override {
    profile_ = p;
    return true;
  }

 private:
  device* dev_;
  int n_threads_;
  op_profile* profile_ = nullptr;
};

class cpu_device_impl final : public device {
 public:
  cpu_device_impl() : bt_(this) {}
  const char* name() const override { return "CPU"; }
  std::string description() const override {
    return "CPU (" + features_string() + "), " + std::to_string(default_threads()) + " threads";
  }
  device_kind kind() const override { return device_kind::cpu; }
  void memory(size_t* free, size_t* total) const override {
    struct sysinfo si {};
    sysinfo(&si);
    *free = size_t(si.freeram) * si.mem_unit;
    *total = size_t(si.totalram) * si.mem_unit;
  }
  buffer_type* default_buffer_type() override { return &bt_; }
  std::unique_ptr<stream> new_stream() override { return std::make_unique<cpu_stream>(this); }

  bool supports_op(const tensor* t) const override {
    switch (t->op) {
      case op_kind::MATMUL:
      case op_kind::MATMUL_ID: return matmul_supports(t->src[0]->type);
      default: return true;  // every other op has a kernel for every type its constructor accepts
    }
  }
  bool can_read(const buffer_type* bt) const override { return bt->is_host(); }

 private:
  host_buffer_type bt_;
};

}  // namespace

device* cpu_device() {
  static cpu_device_impl d;
  return &d;
}

std::unique_ptr<buffer> wrap_host_memory(void* p, size_t n) {
  return std::make_unique<memory_buffer>(cpu_device()->default_buffer_type(), p, n, /*owned=*/false);
}

}  // namespace v4::cpu

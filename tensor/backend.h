// The backend interface (modelled on ggml-backend):
//   device       a compute device (the CPU, one GPU): says which ops it supports, owns buffer types
//   buffer_type  a kind of memory (host RAM, device memory, pinned host memory): allocates buffers
//   buffer       a block of memory of one type; tensors point into it
//   stream       an ordered queue of work on one device: computes graphs, copies tensors
// Backends implement these classes; tensor/ and the scheduler only use the interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "tensor/graph.h"
#include "tensor/tensor.h"

namespace v4 {

class device;
class buffer;

class buffer_type {
 public:
  virtual ~buffer_type() = default;
  virtual const char* name() const = 0;
  virtual device* dev() const = 0;
  // nullptr and a message in *error when the memory cannot be had.
  virtual std::unique_ptr<buffer> alloc(size_t size, std::string* error) = 0;
  virtual size_t alignment() const { return 64; }
  // True when the CPU can read and write the memory directly (plain host RAM).
  virtual bool is_host() const = 0;
};

class buffer {
 public:
  virtual ~buffer() = default;
  virtual buffer_type* type() const = 0;
  virtual void* base() const = 0;  // device address space; dereferenceable only if is_host()
  virtual size_t size() const = 0;
  // Host <-> tensor transfers of n bytes at byte offset off within the tensor's data.
  // The tensor must be contiguous for partial transfers (off > 0 or n < nbytes).
  virtual void set(tensor* t, const void* src, size_t off, size_t n) = 0;
  virtual void get(const tensor* t, void* dst, size_t off, size_t n) = 0;
  virtual void clear(uint8_t value) = 0;
  bool is_host() const { return type()->is_host(); }
};

// A buffer over memory this process addresses directly (the CPU backend's RAM, or a test device's
// memory in disguise): transfers are memcpy. Owned memory (from malloc / aligned_alloc) is freed
// with the buffer; memory owned elsewhere (a file mapping) is not.
class memory_buffer final : public buffer {
 public:
  memory_buffer(buffer_type* t, void* p, size_t n, bool owned) : type_(t), p_(p), n_(n), owned_(owned) {}
  ~memory_buffer() override;
  buffer_type* type() const override { return type_; }
  void* base() const override { return p_; }
  size_t size() const override { return n_; }
  void set(tensor* t, const void* src, size_t off, size_t n) override;
  void get(const tensor* t, void* dst, size_t off, size_t n) override;
  void clear(uint8_t v) override;

 private:
  buffer_type* type_;
  void* p_;
  size_t n_;
  bool owned_;
};

// Places t at byte offset `offset` of b (sets t->buf and t->data). Alignment is the caller's job.
void bind_tensor(tensor* t, buffer* b, size_t offset);

enum class device_kind { cpu, gpu, accel };

class stream;

class device {
 public:
  virtual ~device() = default;
  virtual const char* name() const = 0;         // "CPU", "CUDA0", ...
  virtual std::string description() const = 0;  // "Intel Xeon (AVX512 BF16 AMX), 2 threads"
  virtual device_kind kind() const = 0;
  virtual void memory(size_t* free, size_t* total) const = 0;
  virtual buffer_type* default_buffer_type() = 0;
  virtual std::unique_ptr<stream> new_stream() = 0;

  // Whether this device can compute node t with the types and layouts it has. The single place
  // where a backend declares what it lacks; the scheduler routes unsupported nodes elsewhere.
  virtual bool supports_op(const tensor* t) const = 0;
  // Whether kernels on this device can read tensors stored in buffers of type bt directly.
  virtual bool can_read(const buffer_type* bt) const = 0;
};

// Time per op kind, accumulated by streams that support it (stream::set_profile): wall seconds
// and calls. For finding where a graph's time goes; measuring adds a clock read per node.
struct op_profile {
  double seconds[size_t(op_kind::COUNT)] = {};
  int64_t calls[size_t(op_kind::COUNT)] = {};
};

class stream {
 public:
  virtual ~stream() = default;
  virtual device* dev() const = 0;
  // Computes the nodes of g in order. All tensors must be allocated in buffers this device can
  // read. Returns false with a message when a node cannot be computed (unsupported op).
  virtual bool compute(const graph& g, std::string* error) = 0;
  // Copies src into dst (same type and shape, both contiguous), either may live on another
  // device's buffer as long as one side is host memory or this device's memory.
  virtual bool copy(const tensor* src, tensor* dst, std::string* error);
  virtual void synchronize() {}
  virtual void set_n_threads(int /*n*/) {}
  // Start (p) or stop (nullptr) accumulating per-op time into p. False: this stream cannot.
  virtual bool set_profile(op_profile* /*p*/) { return false; }
};

// Registry of the devices built into this binary, in registration order. backends/ registers
// its devices in backends::init(); tensor/ itself knows none.
std::vector<device*> devices();
void register_device(device* d);
void unregister_device(device* d);  // for tests that plug in a mock device for a while
device* find_device(const std::string& name);

}  // namespace v4

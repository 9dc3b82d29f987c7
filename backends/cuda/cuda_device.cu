// The CUDA device (cuda.h): buffers in device memory (cudaMalloc) or pinned host memory
// (cudaMallocHost), a stream over one cudaStream_t, and the op support declaration.
//
// Synchronisation (this slice): buffer set/get/clear are synchronous (they wait for the stream's
// work), and stream::compute waits for its kernels before returning, so a CPU split that reads
// results right after always sees them. Overlapping splits is later work.
#include <cstring>
#include <mutex>
#include <vector>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda.h"
#include "backends/cuda/kernels.h"

namespace v4::cuda {

launcher launcher_for(op_kind op) {
  switch (op) {
    case op_kind::ADD:
    case op_kind::SUB:
    case op_kind::MUL:
    case op_kind::DIV: return launch_binary;
    case op_kind::SCALE:
    case op_kind::CLAMP:
    case op_kind::SILU:
    case op_kind::SIGMOID:
    case op_kind::SOFTPLUS:
    case op_kind::SQRT:
    case op_kind::RELU:
    case op_kind::EXP: return launch_unary;
    case op_kind::SUM:
    case op_kind::MAX: return launch_reduce;
    case op_kind::RMS_NORM: return launch_rms_norm;
    case op_kind::SOFTMAX: return launch_softmax;
    case op_kind::ROPE: return launch_rope;
    case op_kind::MATMUL: return launch_matmul;
    case op_kind::MATMUL_ID: return launch_matmul_id;
    case op_kind::FP8_ROUNDTRIP: return launch_fp8_roundtrip;
    case op_kind::FP4_ROUNDTRIP: return launch_fp4_roundtrip;
    case op_kind::GET_ROWS: return launch_get_rows_any;
    case op_kind::SET_ROWS: return launch_set_rows_any;
    case op_kind::CONCAT: return launch_concat;
    case op_kind::CPY: return launch_cpy;
    case op_kind::GATHER: return launch_gather;
    case op_kind::TOP_K: return launch_top_k;
    case op_kind::ARGSORT: return launch_argsort;
    case op_kind::HADAMARD: return launch_hadamard;
    case op_kind::SINKHORN: return launch_sinkhorn;
    case op_kind::ATTN_MQA: return launch_attn_mqa;
    default: return nullptr;
  }
}

namespace {

constexpr size_t kAlign = 256;  // cudaMalloc gives 256-byte alignment; the allocator keeps it

bool ok(cudaError_t e, const char* what, std::string* error) {
  if (e == cudaSuccess) return true;
  if (error) *error = std::string("CUDA: ") + what + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e);
  return false;
}

bool is_float(dtype t) { return t == dtype::f32 || t == dtype::f16 || t == dtype::bf16; }
// Plain (one element per block, unscaled) types whose bytes kernels can move as they are.
bool is_plain(dtype t) {
  const type_traits& tr = traits(t);
  return tr.block_size == 1 && !tr.scaled &&
         (tr.block_bytes == 1 || tr.block_bytes == 2 || tr.block_bytes == 4 || tr.block_bytes == 8);
}

class cuda_device_impl;

// Device memory. set/get/clear go through the legacy default stream, which waits for work on
// the device's (blocking) stream first: transfers never race kernels.
class device_buffer final : public buffer {
 public:
  device_buffer(buffer_type* t, void* p, size_t n, bool pinned) : type_(t), p_(p), n_(n), pinned_(pinned) {}
  ~device_buffer() override {
    if (pinned_) cudaFreeHost(p_);
    else cudaFree(p_);
  }
  buffer_type* type() const override { return type_; }
  void* base() const override { return p_; }
  size_t size() const override { return n_; }
  void set(tensor* t, const void* src, size_t off, size_t n) override {
    cudaMemcpy(static_cast<char*>(t->data) + off, src, n, cudaMemcpyDefault);
  }
  void get(const tensor* t, void* dst, size_t off, size_t n) override {
    cudaMemcpy(dst, static_cast<const char*>(t->data) + off, n, cudaMemcpyDefault);
  }
  void clear(uint8_t v) override {
    if (pinned_) {
      cudaDeviceSynchronize();
      std::memset(p_, v, n_);
    } else {
      cudaMemset(p_, v, n_);
      cudaDeviceSynchronize();
    }
  }

 private:
  buffer_type* type_;
  void* p_;
  size_t n_;
  bool pinned_;
};

class cuda_buffer_type final : public buffer_type {
 public:
  cuda_buffer_type(device* d, int ordinal, bool pinned, std::string name)
      : dev_(d), ordinal_(ordinal), pinned_(pinned), name_(std::move(name)) {}
  const char* name() const override { return name_.c_str(); }
  device* dev() const override { return dev_; }
  std::unique_ptr<buffer> alloc(size_t size, std::string* error) override {
    const size_t n = (size + kAlign - 1) / kAlign * kAlign;
    void* p = nullptr;
    cudaSetDevice(ordinal_);
    const cudaError_t e = pinned_ ? cudaMallocHost(&p, n ? n : kAlign) : cudaMalloc(&p, n ? n : kAlign);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free allocation error
      if (error)
        *error = name_ + ": cannot allocate " + std::to_string(size >> 20) + " MiB (" + cudaGetErrorString(e) +
                 "): use a smaller model or context, or keep more of it on the CPU";
      return nullptr;
    }
    return std::make_unique<device_buffer>(this, p, size, pinned_);
  }
  size_t alignment() const override { return kAlign; }
  bool is_host() const override { return pinned_; }

 private:
  device* dev_;
  int ordinal_;
  bool pinned_;
  std::string name_;
};

class cuda_stream final : public stream {
 public:
  cuda_stream(device* d, int ordinal) : dev_(d), ordinal_(ordinal) {
    cudaSetDevice(ordinal_);
    if (cudaStreamCreate(&s_) != cudaSuccess) {
      cudaGetLastError();
      s_ = nullptr;  // falls back to the legacy default stream
    }
  }
  ~cuda_stream() override {
    if (s_) cudaStreamDestroy(s_);
  }
  device* dev() const override { return dev_; }

  bool compute(const graph& g, std::string* error) override {
    cudaSetDevice(ordinal_);
    resolve_views(g);
    for (tensor* t : g.nodes) {
      if (op_is_view(t->op)) continue;
      if (!dev_->supports_op(t)) {
        *error = std::string(dev_->name()) + ": op " + op_name(t->op) + " on '" + t->name +
                 "' is not supported for type " + type_name(t->src[0] ? t->src[0]->type : t->type) +
                 " (the scheduler sends such nodes to the CPU)";
        return false;
      }
      if (!readable(t, error)) return false;
      if (!launcher_for(t->op)(s_, t, error)) return false;
    }
    return ok(cudaStreamSynchronize(s_), "computing the graph", error);
  }

  bool copy(const tensor* src, tensor* dst, std::string* error) override {
    const bool src_dev = src->buf && !src->buf->is_host(), dst_dev = dst->buf && !dst->buf->is_host();
    if (!(src_dev && dst_dev)) return stream::copy(src, dst, error);  // through set/get
    if (!src->is_contiguous() || !dst->is_contiguous() || src->type != dst->type || !src->same_shape(*dst)) {
      *error = "copy: tensors must be contiguous with equal type and shape";
      return false;
    }
    return ok(cudaMemcpyAsync(dst->data, src->data, src->nbytes(), cudaMemcpyDefault, s_), "device copy", error) &&
           ok(cudaStreamSynchronize(s_), "device copy", error);
  }

  void synchronize() override { cudaStreamSynchronize(s_); }

 private:
  // Every tensor a kernel touches must be in memory this device reads (its own or pinned).
  bool readable(const tensor* t, std::string* error) const {
    auto check = [&](const tensor* x, const char* role) {
      if (!x) return true;
      if (!x->data || !x->buf) {
        *error = std::string(dev_->name()) + ": '" + x->name + "' (" + role + " of " + op_name(t->op) +
                 ") has no memory: allocate the graph first";
        return false;
      }
      if (!dev_->can_read(x->buf->type())) {
        *error = std::string(dev_->name()) + ": '" + x->name + "' (" + role + " of " + op_name(t->op) + ") is in " +
                 x->buf->type()->name() + " memory, which this GPU cannot read: schedule the graph (tensor/sched.h)";
        return false;
      }
      return true;
    };
    if (!check(t, "result")) return false;
    for (const tensor* s : t->src)
      if (!check(s, "source")) return false;
    return true;
  }

  device* dev_;
  int ordinal_;
  cudaStream_t s_ = nullptr;
};

class cuda_device_impl final : public device {
 public:
  cuda_device_impl(int ordinal, const cudaDeviceProp& prop)
      : ordinal_(ordinal),
        name_("CUDA" + std::to_string(ordinal)),
        desc_(std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
              std::to_string(prop.totalGlobalMem >> 20) + " MiB, " + std::to_string(prop.multiProcessorCount) +
              " SMs)"),
        bt_(this, ordinal, false, name_),
        pinned_(this, ordinal, true, name_ + "_Host") {}

  const char* name() const override { return name_.c_str(); }
  std::string description() const override { return desc_; }
  device_kind kind() const override { return device_kind::gpu; }
  void memory(size_t* free, size_t* total) const override {
    cudaSetDevice(ordinal_);
    if (cudaMemGetInfo(free, total) != cudaSuccess) {
      cudaGetLastError();
      *free = *total = 0;
    }
  }
  buffer_type* default_buffer_type() override { return &bt_; }
  buffer_type* pinned() { return &pinned_; }
  std::unique_ptr<stream> new_stream() override { return std::make_unique<cuda_stream>(this, ordinal_); }

  bool supports_op(const tensor* t) const override {
    const tensor* a = t->src[0];
    switch (t->op) {
      case op_kind::VIEW:
      case op_kind::RESHAPE:
      case op_kind::PERMUTE: return true;  // no compute
      // f32 in, f32 out (the constructors accept nothing else).
      case op_kind::ADD:
      case op_kind::SUB:
      case op_kind::MUL:
      case op_kind::DIV:
      case op_kind::SCALE:
      case op_kind::CLAMP:
      case op_kind::SILU:
      case op_kind::SIGMOID:
      case op_kind::SOFTPLUS:
      case op_kind::SQRT:
      case op_kind::RELU:
      case op_kind::EXP:
      case op_kind::SUM:
      case op_kind::MAX:
      case op_kind::RMS_NORM:
      case op_kind::SOFTMAX:
      case op_kind::ROPE: return true;
      case op_kind::MATMUL:
      case op_kind::MATMUL_ID: return matmul_supported(t);
      case op_kind::FP8_ROUNDTRIP:
      case op_kind::FP4_ROUNDTRIP: return true;
      case op_kind::GET_ROWS: return is_float(a->type) || a->type == dtype::i32 || get_rows_block_supported(a);
      case op_kind::SET_ROWS: return is_float(a->type) || set_rows_scaled_supported(a);
      case op_kind::CONCAT: return is_plain(t->type);
      case op_kind::CPY: return a->type == t->type ? is_plain(t->type) : is_float(a->type) && is_float(t->type);
      case op_kind::GATHER:
      case op_kind::TOP_K:
      case op_kind::ARGSORT:
      case op_kind::SINKHORN: return true;
      case op_kind::HADAMARD: return a->ne[0] <= kMaxHadamard;
      case op_kind::ATTN_MQA: return a->ne[0] <= kMaxAttnDim;
      default: return false;
    }
  }
  bool can_read(const buffer_type* bt) const override { return bt == &bt_ || bt == &pinned_; }

 private:
  int ordinal_;
  std::string name_, desc_;
  cuda_buffer_type bt_, pinned_;
};

}  // namespace

device* cuda_device(int ordinal, std::string* error) {
  static std::mutex mu;
  static std::vector<std::unique_ptr<cuda_device_impl>> made;
  std::lock_guard<std::mutex> lock(mu);
  for (auto& d : made)
    if (std::string(d->name()) == "CUDA" + std::to_string(ordinal)) return d.get();
  int n = 0;
  if (!ok(cudaGetDeviceCount(&n), "no usable CUDA runtime", error)) {
    cudaGetLastError();
    return nullptr;
  }
  if (ordinal < 0 || ordinal >= n) {
    if (error) *error = "CUDA: no GPU " + std::to_string(ordinal) + " (" + std::to_string(n) + " visible)";
    return nullptr;
  }
  cudaDeviceProp prop{};
  if (!ok(cudaGetDeviceProperties(&prop, ordinal), "reading the GPU's properties", error)) return nullptr;
  made.push_back(std::make_unique<cuda_device_impl>(ordinal, prop));
  return made.back().get();
}

buffer_type* pinned_buffer_type(device* d) {
  auto* impl = dynamic_cast<cuda_device_impl*>(d);
  return impl ? impl->pinned() : nullptr;
}

}  // namespace v4::cuda

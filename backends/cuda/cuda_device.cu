// The CUDA device (cuda.h): buffers in device memory (cudaMalloc) or pinned host memory
// (cudaMallocHost), a stream over one cudaStream_t, and the op support declaration.
//
// Synchronisation (this slice): buffer set/get/clear are synchronous (they wait for the stream's
// work), and stream::compute waits for its kernels before returning, so a CPU split that reads
// results right after always sees them. Overlapping splits is later work.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
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
    case op_kind::ROWS_MASK: return launch_rows_mask;
    case op_kind::TOP_K: return launch_top_k;
    case op_kind::ARGSORT: return launch_argsort;
    case op_kind::HADAMARD: return launch_hadamard;
    case op_kind::SINKHORN: return launch_sinkhorn;
    case op_kind::HC_MIX: return launch_hc_mix;
    case op_kind::HC_SUM: return launch_hc_sum;
    case op_kind::HC_POST: return launch_hc_post;
    case op_kind::HC_PRE: return launch_hc_pre;
    case op_kind::RMS_NORM_W: return launch_rms_norm_w;
    case op_kind::SWIGLU: return launch_swiglu;
    case op_kind::NORM_ROPE: return launch_norm_rope;
    case op_kind::ATTN_MQA: return launch_attn_mqa;
    case op_kind::ROUTE_TOPK: return launch_route_topk;
    case op_kind::ROUTE_WEIGHTS: return launch_route_weights;
    case op_kind::ATTN_SPARSE: return launch_attn_sparse;
    default: return nullptr;
  }
}

namespace {

std::atomic<int64_t> n_eager{0}, n_captured{0}, n_replayed{0};

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
    const char* src = static_cast<const char*>(t->data) + off;
    // Device-to-pageable copies run at a few GB/s; a pinned bounce buffer is several times
    // faster for the sizes worth it (a token's logits: 0.5 MiB).
    if (!pinned_ && n >= kBounceMin && n <= kBounceMax) {
      static thread_local struct bounce {
        void* p = nullptr;
        size_t n = 0;
        ~bounce() {
          if (p) cudaFreeHost(p);
        }
      } b;
      if (b.n < n) {
        if (b.p) cudaFreeHost(b.p);
        b.p = nullptr;
        b.n = 0;
        if (cudaMallocHost(&b.p, n) == cudaSuccess) b.n = n;
        else cudaGetLastError();
      }
      if (b.p && cudaMemcpy(b.p, src, n, cudaMemcpyDeviceToHost) == cudaSuccess) {
        std::memcpy(dst, b.p, n);
        return;
      }
      cudaGetLastError();
    }
    cudaMemcpy(dst, src, n, cudaMemcpyDefault);
  }
  static constexpr size_t kBounceMin = size_t(64) << 10, kBounceMax = size_t(64) << 20;
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
    drop_graphs();
    if (stage_) cudaFreeHost(stage_);
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    if (s_) cudaStreamDestroy(s_);
  }
  device* dev() const override { return dev_; }

  bool compute(const graph& g, std::string* error) override {
    cudaSetDevice(ordinal_);
    resolve_views(g);
    bool checked = false;
    if (!profile_ && graphs_enabled()) {
      int done = 0;
      if (!replay(g, &done, &checked, error)) return false;  // checks the nodes unless it replays
      if (done) return sync("computing the graph", error);
    }
    if (!checked && !check_nodes(g, error)) return false;
    n_eager.fetch_add(1);
    if (!launch_all(g, error)) return false;
    if (profile_) mark(nullptr);
    if (!sync("computing the graph", error)) return false;
    if (profile_) collect();
    return true;
  }

  // Per-op time from CUDA events recorded between launches: node i's time is the gap between
  // the events before and after it (launch gaps included, as on the CPU's wall clock).
  bool set_profile(op_profile* p) override {
    profile_ = p;
    return true;
  }

  bool copy(const tensor* src, tensor* dst, std::string* error) override {
    const bool src_dev = src->buf && !src->buf->is_host(), dst_dev = dst->buf && !dst->buf->is_host();
    const bool plain = src->is_contiguous() && dst->is_contiguous() && src->type == dst->type && src->same_shape(*dst);
    if (dst_dev && !src_dev && plain && src->data && src->nbytes() <= kStageMax) {
      // Host -> GPU (a graph's inputs, before its computation): staged in pinned memory and queued
      // on this stream without waiting, instead of one synchronous pageable cudaMemcpy each
      // (~6 us apiece, ~17 per decode step). The kernels that read it are queued after it.
      const size_t n = src->nbytes();
      char* p = stage(n, error);
      if (!p) return false;
      std::memcpy(p, src->data, n);
      return ok(cudaMemcpyAsync(dst->data, p, n, cudaMemcpyHostToDevice, s_), "copying to the GPU", error);
    }
    if (!(src_dev && dst_dev)) return stream::copy(src, dst, error);  // through set/get
    if (!plain) {
      *error = "copy: tensors must be contiguous with equal type and shape";
      return false;
    }
    return ok(cudaMemcpyAsync(dst->data, src->data, src->nbytes(), cudaMemcpyDefault, s_), "device copy", error) &&
           sync("device copy", error);
  }

  void synchronize() override { sync(nullptr, nullptr); }

 private:
  // Every node has a kernel here and reads memory this GPU can read. A graph replayed unchanged
  // (the same key: ops, types, shapes and addresses) passed this when it was captured.
  bool check_nodes(const graph& g, std::string* error) const {
    for (tensor* t : g.nodes) {
      if (op_is_view(t->op)) continue;
      if (!dev_->supports_op(t)) {
        *error = std::string(dev_->name()) + ": op " + op_name(t->op) + " on '" + t->name +
                 "' is not supported for type " + type_name(t->src[0] ? t->src[0]->type : t->type) +
                 " (the scheduler sends such nodes to the CPU)";
        return false;
      }
      if (!readable(t, error)) return false;
    }
    return true;
  }

  // Waits for the stream; the staging memory of the copies queued before is free again.
  bool sync(const char* what, std::string* error) {
    const cudaError_t e = cudaStreamSynchronize(s_);
    staged_ = 0;
    if (!what) return e == cudaSuccess;
    return ok(e, what, error);
  }

  // n bytes of pinned staging memory for a queued host -> GPU copy. Staged copies stay in flight
  // until the next sync(); when the area is full it waits for them and starts over.
  static constexpr size_t kStageMax = size_t(64) << 20;
  char* stage(size_t n, std::string* error) {
    n = (n + 255) / 256 * 256;
    if (staged_ + n > stage_cap_) {
      if (staged_ > 0 && !sync("copying to the GPU", error)) return nullptr;
      if (n > stage_cap_) {
        if (stage_) cudaFreeHost(stage_);
        stage_ = nullptr;
        stage_cap_ = 0;
        const size_t cap = std::max(n, size_t(1) << 20);
        if (!ok(cudaMallocHost(reinterpret_cast<void**>(&stage_), cap), "allocating pinned staging memory", error))
          return nullptr;
        stage_cap_ = cap;
      }
    }
    char* p = stage_ + staged_;
    staged_ += n;
    return p;
  }

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

  bool launch_all(const graph& g, std::string* error) {
    for (tensor* t : g.nodes) {
      if (op_is_view(t->op)) continue;
      if (profile_) mark(t);
      if (!launcher_for(t->op)(s_, t, error)) return false;
    }
    return true;
  }

  // ---- CUDA graphs ---------------------------------------------------------------------------
  // A graph computed again with the same kernels on the same memory (decode steps: the scheduler
  // keeps its plan and the allocator its addresses) is replayed as one cudaGraphLaunch instead of
  // one launch per node. The key hashes everything a launch reads from the host: each node's op,
  // parameters, types, shapes, strides and data pointers, its sources' and scales', and the kernel
  // scratch generation. The first computation of a graph runs eagerly; later ones replay it when
  // the key is unchanged, else capture it anew (updating the previous executable in place when the
  // kernels are the same and only their parameters changed). V4_CUDA_GRAPHS=0 turns this off.
  static bool graphs_enabled() {
    static const bool on = !env_is("V4_CUDA_GRAPHS", "0");
    return on;
  }

  // per_node (optional): each node's own hash, for V4_CUDA_GRAPH_DEBUG.
  static uint64_t graph_key(const graph& g, std::vector<uint64_t>* per_node = nullptr) {
    auto mix = [](uint64_t& h, uint64_t v) {
      h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
      h *= 0xff51afd7ed558ccdull;
    };
    auto mix_tensor = [&](uint64_t& h, const tensor* t) {
      if (!t) return mix(h, 0);
      mix(h, uint64_t(t->type));
      mix(h, reinterpret_cast<uintptr_t>(t->data));
      for (int d = 0; d < kMaxDims; ++d) mix(h, uint64_t(t->ne[d])), mix(h, uint64_t(t->nb[d]));
      mix(h, t->scales ? reinterpret_cast<uintptr_t>(t->scales->data) : 0);
      mix(h, uint64_t(uint32_t(t->scale_block[0])) << 32 | uint32_t(t->scale_block[1]));
    };
    uint64_t key = 0x9e3779b97f4a7c15ull ^ scratch_generation();
    for (const tensor* t : g.nodes) {
      if (op_is_view(t->op)) continue;
      uint64_t h = 0x243f6a8885a308d3ull;
      mix(h, uint64_t(t->op));
      for (int i = 0; i < kMaxOpParams; ++i) mix(h, uint32_t(t->op_params[i]));
      mix_tensor(h, t);
      for (const tensor* src : t->src) mix_tensor(h, src);
      if (per_node) per_node->push_back(h);
      mix(key, h);
    }
    return key;
  }

  struct captured {
    uint64_t key = 0;
    size_t n_nodes = 0;
    cudaGraphExec_t exec = nullptr;   // valid for key when ready
    std::vector<uint64_t> node_keys;  // V4_CUDA_GRAPH_DEBUG only
    bool ready = false;
  };

  // *done = 1 when g ran as a graph launch (the caller waits for it), 0 to run it eagerly;
  // *checked = true once it has checked the nodes (check_nodes).
  bool replay(const graph& g, int* done, bool* checked, std::string* error) {
    *done = 0;
    static const bool debug = std::getenv("V4_CUDA_GRAPH_DEBUG") != nullptr;
    std::vector<uint64_t> per_node;
    const uint64_t key = graph_key(g, debug ? &per_node : nullptr);
    if (cache_.size() > kMaxGraphs && !cache_.count(&g)) drop_graphs();
    captured& c = cache_[&g];
    if (debug) {  // which nodes made the key change since this graph's last computation
      if (c.node_keys.size() == per_node.size() && c.key != key) {
        size_t i = 0;
        for (const tensor* t : g.nodes) {
          if (op_is_view(t->op)) continue;
          if (per_node[i] != c.node_keys[i])
            std::fprintf(stderr, "cuda-graph: node %zu %s '%s' [%lld %lld %lld %lld] changed\n", i, op_name(t->op),
                         t->name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
          ++i;
        }
      }
      c.node_keys = per_node;
    }
    if (c.ready && c.key == key) {
      *done = 1;
      n_replayed.fetch_add(1);
      return ok(cudaGraphLaunch(c.exec, s_), "launching a CUDA graph", error);
    }
    if (!check_nodes(g, error)) return false;
    *checked = true;
    // The same node count as last time: most likely the same kernels with other pointers or
    // parameters (a decode step whose cache views moved), which cudaGraphExecUpdate takes.
    const bool again = c.n_nodes == g.nodes.size();
    c.key = key;
    c.n_nodes = g.nodes.size();
    c.ready = false;
    if (!again) return true;  // first sighting: run eagerly
    if (cudaStreamBeginCapture(s_, cudaStreamCaptureModeRelaxed) != cudaSuccess) {
      cudaGetLastError();
      return true;
    }
    std::string launch_error;
    const bool launched_all = launch_all(g, &launch_error);
    cudaGraph_t cg = nullptr;
    const cudaError_t end = cudaStreamEndCapture(s_, &cg);
    if (!launched_all) {
      if (cg) cudaGraphDestroy(cg);
      cudaGetLastError();
      *error = launch_error;
      return false;
    }
    if (end != cudaSuccess || !cg) {  // something in a launcher could not be captured: eager
      cudaGetLastError();
      return true;
    }
    if (c.exec) {
      cudaGraphExecUpdateResultInfo info{};
      if (cudaGraphExecUpdate(c.exec, cg, &info) != cudaSuccess) {
        cudaGetLastError();
        cudaGraphExecDestroy(c.exec);
        c.exec = nullptr;
      }
    }
    if (!c.exec && cudaGraphInstantiate(&c.exec, cg, 0) != cudaSuccess) {
      cudaGetLastError();
      c.exec = nullptr;
    }
    cudaGraphDestroy(cg);
    if (!c.exec) return true;
    c.key = graph_key(g);  // the capture may have moved scratch memory
    c.ready = true;
    *done = 1;
    n_captured.fetch_add(1);
    return ok(cudaGraphLaunch(c.exec, s_), "launching a CUDA graph", error);
  }

  void drop_graphs() {
    cudaStreamSynchronize(s_);
    for (auto& [g, c] : cache_)
      if (c.exec) cudaGraphExecDestroy(c.exec);
    cache_.clear();
  }

  void mark(const tensor* t) {
    if (marked_ == events_.size()) {
      cudaEvent_t e = nullptr;
      if (cudaEventCreate(&e) != cudaSuccess) {
        cudaGetLastError();
        return;
      }
      events_.push_back(e);
    }
    cudaEventRecord(events_[marked_++], s_);
    timed_.push_back(t);
  }
  void collect() {
    static const bool print_nodes = std::getenv("V4_CUDA_PROFILE_NODES") != nullptr;
    for (size_t i = 0; i + 1 < marked_ && i + 1 < timed_.size(); ++i) {
      float ms = 0;
      if (cudaEventElapsedTime(&ms, events_[i], events_[i + 1]) != cudaSuccess) {
        cudaGetLastError();
        continue;
      }
      const tensor* t = timed_[i];
      profile_->seconds[size_t(t->op)] += ms * 1e-3;
      profile_->calls[size_t(t->op)] += 1;
      if (print_nodes)
        std::fprintf(stderr, "cuda-profile %9.3f us  %-14s %-40s [%lld %lld %lld %lld] %s\n", ms * 1e3, op_name(t->op),
                     t->name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                     (long long)t->ne[3], t->src[0] ? type_name(t->src[0]->type) : "");
    }
    marked_ = 0;
    timed_.clear();
  }

  device* dev_;
  int ordinal_;
  cudaStream_t s_ = nullptr;
  static constexpr size_t kMaxGraphs = 64;  // cached executables per stream (by graph address)
  std::unordered_map<const graph*, captured> cache_;
  op_profile* profile_ = nullptr;
  std::vector<cudaEvent_t> events_;  // reused between graphs
  size_t marked_ = 0;
  std::vector<const tensor*> timed_;
  char* stage_ = nullptr;  // pinned staging memory of queued host -> GPU copies
  size_t stage_cap_ = 0, staged_ = 0;
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
        pinned_(this, ordinal, true, name_ + "_Host"),
        cc_major_(prop.major) {}

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
      case op_kind::ROWS_MASK:
      case op_kind::TOP_K:
      case op_kind::ARGSORT:
      case op_kind::SINKHORN: return true;
      case op_kind::HC_MIX: return t->param_i(5) == 4;  // the 16-lane kernel; other n: the CPU
      case op_kind::HC_SUM:
      case op_kind::RMS_NORM_W:
      case op_kind::SWIGLU:
      case op_kind::NORM_ROPE: return true;  // f32 in, f32 out (the constructors accept nothing else)
      case op_kind::HC_POST: return hc_post_supported(t);
      case op_kind::HC_PRE: return hc_pre_supported(t);
      case op_kind::HADAMARD: return a->ne[0] <= kMaxHadamard;
      case op_kind::ATTN_MQA: return a->ne[0] <= kMaxAttnDim;
      case op_kind::ROUTE_TOPK: return a->ne[0] <= kMaxRouteExperts;
      case op_kind::ROUTE_WEIGHTS: return true;
      case op_kind::ATTN_SPARSE: return attn_sparse_supported(t);
      default: return false;
    }
  }
  bool can_read(const buffer_type* bt) const override { return bt == &bt_ || bt == &pinned_; }
  int cc_major() const { return cc_major_; }

 private:
  int ordinal_;
  std::string name_, desc_;
  cuda_buffer_type bt_, pinned_;
  int cc_major_;
};

std::atomic<bool> pdl_on{false};

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
  // PDL (common.cuh: launch) where every GPU in use has it (sm_90+) and V4_CUDA_PDL is not 0.
  bool pdl = !env_is("V4_CUDA_PDL", "0");
  for (auto& d : made) pdl = pdl && d->cc_major() >= 9;
  set_pdl_enabled(pdl);
  return made.back().get();
}

bool pdl_enabled() { return pdl_on.load(std::memory_order_relaxed); }
void set_pdl_enabled(bool on) { pdl_on.store(on, std::memory_order_relaxed); }

graph_counts graph_stats() { return {n_eager.load(), n_captured.load(), n_replayed.load()}; }

buffer_type* pinned_buffer_type(device* d) {
  auto* impl = dynamic_cast<cuda_device_impl*>(d);
  return impl ? impl->pinned() : nullptr;
}

}  // namespace v4::cuda

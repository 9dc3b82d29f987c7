// v4 tensor library: types, tensors, contexts.
//
// ---------------------------------------------------------------------------------------------
// CONVENTIONS (stated once, here; tests/tensor/test_conventions.cpp checks them)
//
//  * Dimension order: ne[0] is the innermost, fastest-varying dimension. A tensor that PyTorch
//    calls shape (B, T, H, D) is ne = {D, H, T, B} here. Unused dims have ne = 1; a tensor has
//    at most 4 dims.
//  * Strides nb[i] are in BYTES. A contiguous tensor of a plain type has nb[0] = type size and
//    nb[i] = nb[i-1] * ne[i-1]. For block types (several elements per block) nb[0] is the block
//    size in bytes and nb[1] = nb[0] * ne[0] / block_size; dim 0 is never strided for them.
//  * A "row" is one dim-0 vector; nrows = ne[1]*ne[2]*ne[3].
//  * matmul(w, x): w = [K, M] (M rows of length K, i.e. a PyTorch Linear weight [out=M, in=K]),
//    x = [K, N] (N rows), result y = [M, N] f32 with  y[n][m] = sum_k w[m][k] * x[n][k],
//    i.e. PyTorch's  y = x @ w.T.  Both operands are read along K.
//  * Element (i0, i1, i2, i3) lives at  data + i0*nb[0] + i1*nb[1] + i2*nb[2] + i3*nb[3].
//  * Building ops records nodes and computes nothing. Computing happens on a backend
//    (backend.h) after the graph allocator (alloc.h) has placed intermediates.
//  * Errors: constructors never abort on bad shapes. They record the first error in the
//    context and return nullptr; an op given a nullptr source returns nullptr silently, so a
//    whole forward pass can be built and checked once (context::ok / context::error).
// ---------------------------------------------------------------------------------------------
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <string>

namespace v4 {

constexpr int kMaxDims = 4;
constexpr int kMaxSrc = 8;
constexpr int kMaxOpParams = 16;  // 32-bit words of op parameters per node
constexpr int kMaxName = 64;

// ---- types --------------------------------------------------------------------------------
// Plain types first; block-quantized ids are reserved here and described at run time by
// quant/ (register_type). A tensor of an unregistered type cannot be created.
enum class dtype : int32_t {
  f32 = 0,
  f16,
  bf16,
  i8,
  i32,
  i64,
  // reserved for quant/ (next issue): registered at start-up, see quant/quant.h
  e8m0,       // UE8M0 power-of-two scales: value 2^(e - 127), 0xff = NaN (one byte)
  fp8_e4m3,   // e4m3 bytes; UE8M0 block scales travel in tensor::scales (see scale_block)
  mxfp4,      // e2m1, two per byte (low nibble first); UE8M0 scales per 32 in tensor::scales
  q8_0,
  q4_k,
  q3_k,
  q2_k,
  count
};

struct type_traits {
  const char* name = nullptr;   // nullptr = not registered
  int64_t block_size = 1;       // elements per block
  size_t block_bytes = 0;       // bytes per block
  bool is_float = false;        // f32/f16/bf16: plain floating point
  bool is_int = false;          // i8/i32/i64
  // Reference conversions (plain C++; fast paths live in backends). n is a multiple of
  // block_size. nullptr when the type cannot be converted that way.
  void (*to_f32)(const void* src, float* dst, int64_t n) = nullptr;
  void (*from_f32)(const float* src, void* dst, int64_t n) = nullptr;
  // Element values are multiplied by a separate e8m0 scale tensor (tensor::scales); to_f32 and
  // from_f32 then convert the unscaled values.
  bool scaled = false;
};

const type_traits& traits(dtype t);
const char* type_name(dtype t);
bool type_registered(dtype t);
// Parses "f32", "bf16", ... Returns false for unknown or unregistered names.
bool type_from_name(const std::string& name, dtype* out);
// quant/ calls this once per block type at start-up. Plain types are built in.
void register_type(dtype t, const type_traits& tr);
// Bytes of a row of n elements (n a multiple of the block size).
size_t row_size(dtype t, int64_t n);

// Scalar conversions, exact round-to-nearest-even (NaN stays NaN).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

// ---- ops ------------------------------------------------------------------------------------
enum class op_kind : int32_t {
#define X(e, name, min_src, max_src) e,
#include "tensor/ops.def"
#undef X
  COUNT
};
const char* op_name(op_kind op);
bool op_is_view(op_kind op);  // VIEW, RESHAPE, PERMUTE: no compute, the result aliases src[0]
// CPY and SET_ROWS compute, but write into (and return an alias of) their destination.

class buffer;

enum tensor_flags : uint32_t {
  kFlagInput = 1u << 0,   // filled by the caller before each compute; allocated and kept live
  kFlagOutput = 1u << 1,  // read by the caller after compute; never reused by the allocator
  kFlagWeight = 1u << 2,  // a parameter living in a weight buffer
};

// A tensor: a typed, strided view of memory, and (for non-leaves) the op that produces it.
struct tensor {
  dtype type = dtype::f32;
  int64_t ne[kMaxDims] = {1, 1, 1, 1};  // elements per dim, ne[0] innermost
  size_t nb[kMaxDims] = {0, 0, 0, 0};   // stride per dim in bytes

  op_kind op = op_kind::NONE;
  int32_t op_params[kMaxOpParams] = {};
  tensor* src[kMaxSrc] = {};

  tensor* view_src = nullptr;  // for aliases: the tensor whose memory this one reads
  size_t view_offs = 0;        // byte offset into view_src's data

  // Scaled types (fp8_e4m3, mxfp4): element values are multiplied by a separate e8m0 scale
  // tensor, one scale per block of scale_block[0] elements along dim 0 (K) by scale_block[1]
  // rows along dim 1, i.e. scales->ne = {ceil(ne0 / scale_block[0]), ceil(ne1 / scale_block[1]),
  // ne2, ne3}. DeepSeek-V4 FP8: {128, 128}; V4.1: {32, 32}; MXFP4: {32, 1}.
  tensor* scales = nullptr;
  int32_t scale_block[2] = {0, 0};

  buffer* buf = nullptr;       // where data lives (nullptr until allocated)
  void* data = nullptr;
  uint32_t flags = 0;
  char name[kMaxName] = {};

  int64_t nelements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t nrows() const { return ne[1] * ne[2] * ne[3]; }
  int n_dims() const;                  // highest dim with ne > 1, plus one (at least 1)
  size_t nbytes() const;               // bytes spanned by the view (first to last element)
  bool is_contiguous() const;          // rows packed and dims in order, no gaps
  bool rows_contiguous() const;        // dim 0 packed (each row is contiguous)
  bool same_shape(const tensor& o) const;
  tensor* base() { return view_src ? view_src->base() : this; }
  const tensor* base() const { return view_src ? view_src->base() : this; }

  void set_name(const char* fmt, ...);
  // Typed parameter access (parameters are stored as 32-bit words).
  float param_f(int i) const;
  int32_t param_i(int i) const { return op_params[i]; }
  void set_param_f(int i, float v);
  void set_param_i(int i, int32_t v) { op_params[i] = v; }
};

// Owns tensors (stable addresses) and the first error raised while building ops.
class context {
 public:
  context() = default;
  context(const context&) = delete;
  context& operator=(const context&) = delete;

  // A new contiguous tensor, not yet backed by memory. ne gives up to 4 dims, innermost first.
  tensor* new_tensor(dtype t, std::initializer_list<int64_t> ne);
  tensor* new_tensor(dtype t, int n_dims, const int64_t* ne);

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  // Records the first error only; later ones are usually consequences.
  void fail(const char* fmt, ...);
  void clear_error() { error_.clear(); }

  size_t n_tensors() const { return tensors_.size(); }
  tensor* find(const char* name);

 private:
  std::deque<tensor> tensors_;
  std::string error_;
};

// Fills nb[] for a contiguous layout of t->ne and t->type.
void set_contiguous_strides(tensor* t);

}  // namespace v4

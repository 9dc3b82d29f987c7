// The op harness: runs one op (or a small graph ending in one op) on a backend and checks every
// element against a float64 reference written from tensor/ops.h (ops/reference.h).
//
// HOW A BACKEND PLUGS IN
//   1. Register its device in backends::init() (backends/backends.cpp). all_targets() makes one
//      target per registered device, so every case below runs on it with no change here.
//   2. If the device has kernel variants worth checking separately (the CPU's ISA levels), or a
//      matmul that rounds x before multiplying (bf16, f16, tf32 tensor cores), describe them in
//      device_targets() in harness.cpp: one target per variant, an enter/leave pair selecting it,
//      and the matmul x-rounding it declares. Unknown devices get the conservative default.
//   3. Ops it lacks are declared in its supports_op(). On a target with must_support_all (the CPU,
//      which the scheduler relies on for everything) an unsupported case fails; elsewhere it is
//      counted and reported as skipped.
//
// WHAT ONE CASE DOES (run_case)
//   a context; every input a leaf in its own buffer from dev->default_buffer_type(), with
//   kGuardBytes of a known pattern before and after its span, gaps (padding of strided layouts)
//   filled with random bytes; the input handed to the op may be a view of that leaf (permuted,
//   row-padded, at an offset); the op's result gets its own guarded buffer pre-filled with NaN
//   bytes. Inputs are filled through buffer::set and read back through buffer::get, and the
//   reference is computed from the values read back. Then: stream::compute, read back, compare
//   (exact or per-element bound), check every guard, check that inputs are unchanged, and for
//   ops writing into an input (cpy, set_rows) that no byte of its leaf outside the view changed.
//
// LIBRARY CONVENTIONS RELIED ON (stated where tensor/ops.h leaves a choice)
//   view(ctx, a, n_dims, ne, nb, offset): nb holds the strides of dims 1..n_dims-1 (dim 0 packed),
//   as view_2d / view_3d; dim-0-strided inputs are made with permute(). Aliases point at the base
//   tensor (view_src) with an accumulated byte offset; build_graph gives them data.
//   cast() is a CPY node computing into a new tensor (no CAST op): its cases use ref_cast.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ops/reference.h"
#include "tensor/backend.h"
#include "tensor/graph.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"

namespace v4::optest {

constexpr size_t kGuardBytes = 256;

// ---- targets: a device, optionally restricted to one kernel variant --------------------------------
struct target {
  std::string name;  // GoogleTest-safe: "CPU_avx512"
  device* dev = nullptr;
  std::function<void()> enter, leave;  // select / restore the variant (e.g. the CPU ISA cap)
  // Rounding the device applies to x in matmul with weights of wtype, as ref_in::mm_x_rounding
  // encodes it (0: none; > 0 relative per element; < 0 int8 per block of that many elements).
  std::function<double(dtype wtype, int64_t M, int64_t N, int64_t K)> mm_x_rounding;
  bool must_support_all = false;
};
const std::vector<target>& all_targets();

// ---- inputs ------------------------------------------------------------------------------------------
// How an input's elements sit in its leaf's memory. The op sees a tensor of the logical shape.
struct layout {
  int perm[4] = {0, 1, 2, 3};  // logical dim i is memory dim perm[i]: the input is permute(mem, perm)
  bool pad = false;            // memory strides padded (row stride > row, gaps between planes), via view()
  int64_t offset = 0;          // elements before the first one (with pad)
  const char* name = "cont";
};
layout cont();
layout transposed();            // dims 0 and 1 swapped in memory: dim 0 is strided
layout permuted_0213();         // dims 1 and 2 swapped in memory: rows contiguous, planes out of order
layout padded(int64_t offset = 3);  // row stride > row, gaps between planes, offset into the leaf
layout padded_transposed();     // both

// Produces the logical values (i0 fastest) of an input; the harness rounds them to the type.
using filler = std::function<void(std::vector<double>& v, const int64_t* ne, std::mt19937_64& rng)>;
filler uniform(double lo, double hi);
filler ints(int64_t lo, int64_t hi);          // uniform integers in [lo, hi]
filler values(std::vector<double> list);      // list repeated over the tensor
filler ties(int n_distinct);                  // integers in [0, n_distinct): many exact ties

struct input {
  dtype type = dtype::f32;
  int64_t ne[4] = {1, 1, 1, 1};
  layout lay;
  filler fill;
  // Scaled weight types (fp8_e4m3, mxfp4): the input holding this one's e8m0 scales and the scale
  // block {along dim 0, along dim 1} (tensor.h: tensor::scales). The harness attaches them to the
  // tensor the op sees before build, and the values the reference sees are the scaled ones.
  int scales_input = -1;
  int32_t scale_block[2] = {0, 0};
};
input in(dtype t, std::initializer_list<int64_t> ne, filler f, layout l = cont());
// Quantized weights. Block types (mxfp4, q8_0, q4_k, q3_k, q2_k) take the filler's values through
// quant/'s reference row quantizer (mxfp4: unscaled e2m1 codes) and are read back with quant/'s
// reference dequantizer; layouts cont() or padded() (rows one block longer, whole blocks only). fp8_e4m3 and e8m0 are element types
// (round_to / encode / decode in reference.h) and take any layout.
input qin(dtype t, std::initializer_list<int64_t> ne, filler f, int scales_input = -1, int32_t sb_k = 0, int32_t sb_m = 0,
          layout l = cont());
bool is_block_quant(dtype t);  // mxfp4, q8_0, q4_k, q3_k, q2_k

// ---- cases ---------------------------------------------------------------------------------------------
using build_fn = std::function<tensor*(context&, const std::vector<tensor*>& in, const op_args& a)>;

struct op_case {
  op_kind op = op_kind::NONE;  // the op of the result node
  std::string name;            // unique within the op, printed on failure
  std::vector<input> inputs;
  op_args args;
  build_fn build;              // makes the result from the input tensors
  // Replaces the table reference for composite graphs (e.g. inverse rope after rope).
  std::function<void(const ref_in&, ref_out*)> ref_override;
  // Result aliases input `writes_input` (cpy, set_rows): its leaf is compared outside the view.
  int writes_input = -1;
  // Extra check after compute (e.g. which threads a custom op ran on); non-empty = failure.
  std::function<std::string()> post_check;
};

// All cases, grouped by op (test_ops.cpp).
const std::vector<op_case>& all_cases();
std::vector<op_kind> ops_with_cases();

// ---- running ---------------------------------------------------------------------------------------------
// One guarded allocation holding tensor t at offset kGuardBytes.
struct placed {
  std::unique_ptr<buffer> buf;
  tensor* t = nullptr;
  tensor* guard_lo = nullptr;  // i8 tensors over the two guard regions
  tensor* guard_hi = nullptr;
};

struct run_state {
  context* ctx = nullptr;
  tensor* result = nullptr;
  std::vector<placed>* allocs = nullptr;  // inputs' leaves first (in input order), then the result's
};

struct run_hooks {
  // Runs after compute and before read-back: lets meta-tests tamper with results.
  std::function<void(run_state&)> after_compute;
};

enum class outcome { pass, fail, unsupported };
struct case_result {
  outcome status = outcome::fail;
  std::string report;       // why it failed, or what was unsupported
  double worst = 0;         // max |got - ref| / tol over elements (inf for exact mismatches)
};

case_result run_case(const target& tg, const op_case& c, const run_hooks* hooks = nullptr);

// The comparator alone (exposed for the meta-tests): got vs expected, per element.
bool compare(const ref_out& want, const std::vector<double>& got, std::string* report, double* worst);

}  // namespace v4::optest

// The CUDA kernel table: one launcher per supported op family. Each launches on stream s the
// kernel computing node dst (its sources in dst->src, parameters in dst->op_params, layouts as
// tensor/ops.h defines) and returns false with a message on a launch error.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "tensor/tensor.h"

namespace v4::cuda {

using launcher = bool (*)(cudaStream_t s, tensor* dst, std::string* error);

bool launch_binary(cudaStream_t s, tensor* dst, std::string* error);   // ADD SUB MUL DIV
bool launch_unary(cudaStream_t s, tensor* dst, std::string* error);    // SCALE CLAMP SILU ... EXP
bool launch_reduce(cudaStream_t s, tensor* dst, std::string* error);   // SUM MAX
bool launch_rms_norm(cudaStream_t s, tensor* dst, std::string* error);
bool launch_softmax(cudaStream_t s, tensor* dst, std::string* error);
bool launch_rope(cudaStream_t s, tensor* dst, std::string* error);
bool launch_matmul(cudaStream_t s, tensor* dst, std::string* error);
// Matmuls (docs/CUDA.md "Matmuls"): ops_matmul.cu, ops_mma.cu; round trips and quantize-on-write
// set_rows: ops_quant.cu.
bool launch_matmul_id(cudaStream_t s, tensor* dst, std::string* error);
bool matmul_supported(const tensor* node);  // MATMUL / MATMUL_ID: f32/f16/bf16, fp8_e4m3, mxfp4, q8_0 weights
// The relative rounding of x the kernel picked for (wtype, M, N rows, K) applies (0 or 2^-8).
double matmul_x_rounding(dtype wtype, int64_t M, int64_t N, int64_t K);
// Timing hook for tests: true sends one-row calls to the older gemv instead of gemv_x1 / gemv1.
void set_decode_kernels_off(bool off);
// Test hook: split-K slices of one-row calls (0 automatic, 1 never, n >= 2 about n where K allows).
void set_matmul_split_k(int slices);
bool launch_fp8_roundtrip(cudaStream_t s, tensor* dst, std::string* error);
bool launch_fp4_roundtrip(cudaStream_t s, tensor* dst, std::string* error);
bool launch_set_rows_any(cudaStream_t s, tensor* dst, std::string* error);  // plain, or fp8 / mxfp4 per-row blocks
bool set_rows_scaled_supported(const tensor* dst);
bool launch_get_rows(cudaStream_t s, tensor* dst, std::string* error);
bool launch_set_rows(cudaStream_t s, tensor* dst, std::string* error);
bool launch_concat(cudaStream_t s, tensor* dst, std::string* error);
bool launch_cpy(cudaStream_t s, tensor* dst, std::string* error);
// Other ops (docs/CUDA.md "Other ops"): ops_select.cu, ops_mix.cu, ops_attn.cu, ops_rows.cu.
bool launch_gather(cudaStream_t s, tensor* dst, std::string* error);
bool launch_rows_mask(cudaStream_t s, tensor* dst, std::string* error);
bool launch_top_k(cudaStream_t s, tensor* dst, std::string* error);
bool launch_argsort(cudaStream_t s, tensor* dst, std::string* error);
bool launch_hadamard(cudaStream_t s, tensor* dst, std::string* error);
bool launch_hc_mix(cudaStream_t s, tensor* dst, std::string* error);   // HC_MIX (n = 4)
bool launch_hc_pre(cudaStream_t s, tensor* dst, std::string* error);   // HC_PRE (hc_pre_supported: HC = 4)
bool hc_pre_supported(const tensor* dst);
bool launch_sinkhorn(cudaStream_t s, tensor* dst, std::string* error);
bool launch_attn_mqa(cudaStream_t s, tensor* dst, std::string* error);
bool launch_attn_sparse(cudaStream_t s, tensor* dst, std::string* error);
bool attn_sparse_supported(const tensor* dst);  // head dim <= kMaxAttnDim; float / fp8_e4m3+e8m0 keys
// Fused ops of the decode graph (ops_fused.cu): RMS_NORM_W, SWIGLU, HC_SUM, HC_POST (HC <= 8:
// hc_post_supported; more streams stay on the CPU).
bool launch_rms_norm_w(cudaStream_t s, tensor* dst, std::string* error);
bool launch_swiglu(cudaStream_t s, tensor* dst, std::string* error);
bool launch_hc_sum(cudaStream_t s, tensor* dst, std::string* error);
bool launch_hc_post(cudaStream_t s, tensor* dst, std::string* error);
bool hc_post_supported(const tensor* dst);
// The MoE router (ops_route.cu): ROUTE_TOPK (rows of at most kMaxRouteExperts), ROUTE_WEIGHTS.
bool launch_route_topk(cudaStream_t s, tensor* dst, std::string* error);
bool launch_route_weights(cudaStream_t s, tensor* dst, std::string* error);
constexpr int64_t kMaxRouteExperts = 4096;  // route_topk rows longer than this stay on the CPU
bool launch_norm_rope(cudaStream_t s, tensor* dst, std::string* error);  // NORM_ROPE (ops_norm_rope.cu)
bool launch_get_rows_any(cudaStream_t s, tensor* dst, std::string* error);  // plain, q8_0, fp8_e4m3, mxfp4
bool get_rows_block_supported(const tensor* a);  // q8_0, or fp8_e4m3 / mxfp4 with e8m0 scales
constexpr int64_t kMaxHadamard = 8192;  // hadamard rows longer than this stay on the CPU
constexpr int64_t kMaxAttnDim = 512;    // attn_mqa head dims above this stay on the CPU
// Kernel scratch memory (ops_scratch.cu): one zero-initialised allocation per (stream, slot) of at
// least bytes, kept and grown as needed; nullptr with *error when the GPU is out of memory.
// Slots in use: 0, 1, 2 (top_k / argsort), 10 (attn_mqa's partials), 20 (matmul_id grouping),
// 21 (matmul split-K partial sums).
void* scratch(cudaStream_t s, int slot, size_t bytes, std::string* error);
// Bumped whenever a scratch block moves: CUDA graphs captured before then hold stale pointers.
uint64_t scratch_generation();

// The launcher for op, or nullptr when the op has no CUDA kernel (views have none either).
launcher launcher_for(op_kind op);

}  // namespace v4::cuda

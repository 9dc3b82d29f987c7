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
bool launch_get_rows(cudaStream_t s, tensor* dst, std::string* error);
bool launch_set_rows(cudaStream_t s, tensor* dst, std::string* error);
bool launch_concat(cudaStream_t s, tensor* dst, std::string* error);
bool launch_cpy(cudaStream_t s, tensor* dst, std::string* error);

// The launcher for op, or nullptr when the op has no CUDA kernel (views have none either).
launcher launcher_for(op_kind op);

}  // namespace v4::cuda

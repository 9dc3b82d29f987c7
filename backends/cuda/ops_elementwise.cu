// Elementwise ops: add/sub/mul/div with b broadcast to a, and the unary f32 ops. Sources may
// have any strides; results are contiguous f32 (written through dst's strides all the same).
#include <cmath>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace v4::cuda {
namespace {

enum class bin { add, sub, mul, div };

template <bin K>
__global__ void binary_kernel(tview y, tview a, tview b, int64_t n) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t idx[4];
    unravel(i, y.ne, idx);
    const float x = *reinterpret_cast<const float*>(at(a, idx));
    const float z = *reinterpret_cast<const float*>(at_bcast(b, idx));
    float r;
    if constexpr (K == bin::add) r = x + z;
    else if constexpr (K == bin::sub) r = x - z;
    else if constexpr (K == bin::mul) r = x * z;
    else r = x / z;  // IEEE division (nvcc's default -prec-div=true)
    *reinterpret_cast<float*>(at(y, idx)) = r;
  }
}

enum class un { scale, clamp, silu, sigmoid, softplus, sqrt, relu, exp };


template <un K>
__global__ void unary_kernel(tview y, tview a, float p0, float p1, int64_t n) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t idx[4];
    unravel(i, y.ne, idx);
    const float x = *reinterpret_cast<const float*>(at(a, idx));
    float r;
    if constexpr (K == un::scale) {
      r = __fmaf_rn(x, p0, p1);  // one rounding, as the CPU (backends/cpu/vec.h: scale is fused)
    } else if constexpr (K == un::clamp) {
      // std::min(std::max(x, lo), hi): a NaN x passes through both comparisons unchanged.
      const float m = x < p0 ? p0 : x;
      r = p1 < m ? p1 : m;
    } else if constexpr (K == un::silu) {
      r = x == -INFINITY ? -0.0f : float(double(x) * sigmoid_d(x));  // the limit, not -inf * 0
    } else if constexpr (K == un::sigmoid) {
      r = float(sigmoid_d(x));
    } else if constexpr (K == un::softplus) {
      r = x > 20.0f ? x : float(::log1p(::exp(double(x))));  // PyTorch's threshold
    } else if constexpr (K == un::sqrt) {
      r = sqrtf(x);  // correctly rounded (nvcc's default -prec-sqrt=true)
    } else if constexpr (K == un::relu) {
      r = x < 0.0f ? 0.0f : x;  // NaN passes, as std::max(x, 0)
    } else {
      r = float(::exp(double(x)));
    }
    *reinterpret_cast<float*>(at(y, idx)) = r;
  }
}

template <un K>
bool run_unary(cudaStream_t s, tensor* dst, float p0, float p1, std::string* error) {
  const tview y = view_of(dst), a = view_of(dst->src[0]);
  const int64_t n = n_elements(y);
  launch(unary_kernel<K>, grid_for(n), kBlock, 0, s, y, a, p0, p1, n);
  return launched(op_name(dst->op), error);
}

template <bin K>
bool run_binary(cudaStream_t s, tensor* dst, std::string* error) {
  const tview y = view_of(dst), a = view_of(dst->src[0]), b = view_of(dst->src[1]);
  const int64_t n = n_elements(y);
  launch(binary_kernel<K>, grid_for(n), kBlock, 0, s, y, a, b, n);
  return launched(op_name(dst->op), error);
}

}  // namespace

bool launch_binary(cudaStream_t s, tensor* dst, std::string* error) {
  switch (dst->op) {
    case op_kind::ADD: return run_binary<bin::add>(s, dst, error);
    case op_kind::SUB: return run_binary<bin::sub>(s, dst, error);
    case op_kind::MUL: return run_binary<bin::mul>(s, dst, error);
    case op_kind::DIV: return run_binary<bin::div>(s, dst, error);
    default: break;
  }
  *error = std::string("CUDA: launch_binary given op ") + op_name(dst->op);
  return false;
}

bool launch_unary(cudaStream_t s, tensor* dst, std::string* error) {
  switch (dst->op) {
    case op_kind::SCALE: return run_unary<un::scale>(s, dst, dst->param_f(0), dst->param_f(1), error);
    case op_kind::CLAMP: return run_unary<un::clamp>(s, dst, dst->param_f(0), dst->param_f(1), error);
    case op_kind::SILU: return run_unary<un::silu>(s, dst, 0, 0, error);
    case op_kind::SIGMOID: return run_unary<un::sigmoid>(s, dst, 0, 0, error);
    case op_kind::SOFTPLUS: return run_unary<un::softplus>(s, dst, 0, 0, error);
    case op_kind::SQRT: return run_unary<un::sqrt>(s, dst, 0, 0, error);
    case op_kind::RELU: return run_unary<un::relu>(s, dst, 0, 0, error);
    case op_kind::EXP: return run_unary<un::exp>(s, dst, 0, 0, error);
    default: break;
  }
  *error = std::string("CUDA: launch_unary given op ") + op_name(dst->op);
  return false;
}

}  // namespace v4::cuda

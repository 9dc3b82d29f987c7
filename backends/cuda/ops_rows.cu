// get_rows of the stored (block / scaled) types the model gathers rows of: fp8_e4m3 and mxfp4
// with e8m0 scales (the compact compressed-row caches; FP8 / MXFP4 embeddings) and q8_0
// (requantized embeddings). Plain types go to ops_index.cu's kernel. Values are decoded exactly
// as quant/ does on the CPU (code value times scale, one f32 multiplication), so results are
// bit-identical.
#include "backends/cuda/common.cuh"
#include "backends/cuda/kernels.h"

namespace v4::cuda {
namespace {

constexpr int kFp8 = int(dtype::fp8_e4m3);
constexpr int kQ8_0 = int(dtype::q8_0);

// quant/e8m0.h: 2^(e-127); 0 -> 2^-127 (subnormal); 0xFF -> NaN.
__device__ inline float e8m0_value(uint8_t e) {
  if (e == 0xFF) return __uint_as_float(0x7fc00000u);
  return __uint_as_float(e == 0 ? 0x00400000u : uint32_t(e) << 23);
}
// quant/fp8.h: S.EEEE.MMM, bias 7, subnormals, 0x7F/0xFF NaN.
__device__ inline float e4m3_value(uint8_t c) {
  const int e = (c >> 3) & 15, m = c & 7;
  float a;
  if (e == 15 && m == 7) a = __uint_as_float(0x7fc00000u);
  else if (e == 0) a = ldexpf(float(m), -9);
  else a = ldexpf(float(8 + m), e - 10);
  return (c & 0x80) ? -a : a;
}
__constant__ float kE2m1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

struct scales_view {
  tview s;
  int block_k = 1, block_rows = 1;
};

// y[k, n, b] = a[k, ids[n, b], b] decoded.
__global__ void get_rows_block_kernel(tview y, tview a, scales_view sc, tview ids, int64_t n) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t idx[4];
    unravel(i, y.ne, idx);
    const int64_t k = idx[0], b = idx[2];
    const int64_t row = load_index(at(ids, idx[1], b, 0, 0), ids.type);
    const uint8_t* r = reinterpret_cast<const uint8_t*>(at(a, 0, row, b, 0));
    float v;
    if (a.type == kQ8_0) {
      const uint8_t* blk = r + (k / 32) * a.nb[0];
      const uint16_t d = uint16_t(blk[0] | (blk[1] << 8));
      v = __half2float(__ushort_as_half(d)) * float(int8_t(blk[2 + k % 32]));
    } else {
      const float s = e8m0_value(*reinterpret_cast<const uint8_t*>(at(sc.s, k / sc.block_k, row / sc.block_rows, b, 0)));
      if (a.type == kFp8) {
        v = e4m3_value(r[k * a.nb[0]]) * s;
      } else {  // mxfp4: element 2j in the low nibble of byte j
        const uint8_t byte = r[(k / 2) * a.nb[0]];
        v = kE2m1[(k & 1) ? byte >> 4 : byte & 15] * s;
      }
    }
    *reinterpret_cast<float*>(at(y, idx)) = v;
  }
}

}  // namespace

bool get_rows_block_supported(const tensor* a) {
  if (a->type == dtype::q8_0) return true;
  return (a->type == dtype::fp8_e4m3 || a->type == dtype::mxfp4) && a->scales && a->scales->type == dtype::e8m0;
}

bool launch_get_rows_any(cudaStream_t s, tensor* dst, std::string* error) {
  const tensor* a = dst->src[0];
  if (a->type != dtype::q8_0 && a->type != dtype::fp8_e4m3 && a->type != dtype::mxfp4) return launch_get_rows(s, dst, error);
  scales_view sc;
  if (a->type != dtype::q8_0) {
    if (!scales_readable(a, "get_rows", error)) return false;
    sc.s = view_of(a->scales);
    sc.block_k = a->scale_block[0];
    sc.block_rows = a->scale_block[1];
  }
  const tview y = view_of(dst), av = view_of(a), ids = view_of(dst->src[1]);
  const int64_t n = n_elements(y);
  if (n == 0) return true;
  launch(get_rows_block_kernel, grid_for(n), kBlock, 0, s, y, av, sc, ids, n);
  return launched("get_rows", error);
}

}  // namespace v4::cuda

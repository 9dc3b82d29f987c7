// Matmul shapes the gemv / tensor-core kernels serve badly (ops_matmul_small.cu), both exact
// (x not rounded, f32 products and sums, as the generic kernel):
//   small_k    K <= 32 with many outputs: one thread per output element, k in order. mHC's post
//              mix (K = 1 + 4, M = 4, N = hidden rows) was one warp per weight row walking 4096
//              rows in series: 1.4 ms per call; this kernel spreads the 16K outputs over the GPU.
//   split_row  few weight rows (M x jobs <= 256) with long rows (K >= 1024): one block per weight
//              row, its threads striding K, a fixed-order block reduction. mHC's pre mix
//              (M = 24, K = 16384) ran on 2 blocks of the gemv grid.
//   split_tall the same few long weight rows with many x rows (N > 16: prefill): a block per 8 x 8
//              tile of (weight rows, x rows), threads striding K with the tile's 64 sums in
//              registers, fixed-order reductions. mHC's pre mix at a 256-token prefill chunk ran in
//              the gemv kernels on 3 blocks: 2.5 ms per call, a third of a 4K prefill.
#pragma once

#include "backends/cuda/matmul.cuh"

namespace v4::cuda {

// Bytes of its weight rows each warp of a MATMUL kernel prefetches into L2 before its PDL wait,
// for a call reading weight_bytes of weights (ops_matmul.cu; 0: none). split_row's blocks
// prefetch 8 warps' worth of their row.
int matmul_prefetch_bytes(int64_t weight_bytes);

bool small_k_wanted(const mm_weights& W, int64_t max_rows, unsigned jobs);
void launch_small_k(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, int64_t max_rows);

bool split_row_wanted(const mm_weights& W, int64_t max_rows, unsigned jobs);
// MATMUL only (the rows per job known on the host).
bool split_tall_wanted(const mm_weights& W, const mm_rows& rd, int64_t max_rows, unsigned jobs);
void launch_split_tall(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs,
                       int64_t max_rows, bool aligned);
// aligned: 16-byte aligned rows of w and x (rows_aligned in ops_matmul.cu).
void launch_split_row(cudaStream_t s, dtype wt, const mm_weights& W, const mm_rows& rd, unsigned jobs, bool aligned);

}  // namespace v4::cuda

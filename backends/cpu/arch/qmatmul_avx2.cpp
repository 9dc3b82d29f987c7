// AVX2 + FMA kernels for quantized weights (all six types), exact x. (in progress)
#include "backends/cpu/arch/qmatmul_arch.h"

namespace v4::cpu::qmm_arch {
void qmm_avx2_run(const mm_problem& p, int n_threads) { (void)p; (void)n_threads; }
}  // namespace v4::cpu::qmm_arch

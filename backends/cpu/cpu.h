// The CPU backend: one device ("CPU"), host buffers, OpenMP threads, run-time ISA dispatch.
#pragma once

#include <memory>
#include <string>

#include "tensor/backend.h"

namespace v4::cpu {

// Instruction-set levels, ordered. Kernels for several levels are built into one binary; the
// best level the host runs is picked at run time, capped by isa_limit() (tests lower the cap to
// compare each variant against the scalar reference).
enum class isa : int { scalar = 0, avx2 = 1, avx512 = 2, neon = 3 };

struct features {
  // x86
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_vnni = false, avx512_bf16 = false, avx512_fp16 = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;  // amx_* true only once the OS granted AMX state
  // arm
  bool neon = false, neon_fp16 = false, neon_dotprod = false;

  bool has_avx2() const { return avx2 && fma && f16c; }
  bool has_avx512() const { return avx512f && avx512bw && avx512vl && avx512dq; }
};

// Detected once (cpuid / getauxval; on Linux also asks the kernel for AMX tile state).
const features& host_features();
// Human-readable summary, e.g. "AVX2 AVX512 AVX512_BF16 AVX512_FP16 AMX_BF16".
std::string features_string();

isa isa_limit();
void set_isa_limit(isa level);   // default: no limit (best available)
// Whether the host can run kernels of this level (and they were built in).
bool isa_available(isa level);
// available and within the cap: isa_available(level) && level <= isa_limit(). Dispatch uses this.
bool isa_allowed(isa level);
const char* isa_name(isa level);

// Default thread count: the number of cores OpenMP reports (omp_get_num_procs).
int default_threads();

device* cpu_device();

// A CPU buffer over memory the caller owns (a read-only mmap of a model file, a static array):
// tensors can be bound into it; it never frees or writes the memory itself (clear() is a no-op
// for read-only use: do not call it on a read-only mapping).
std::unique_ptr<buffer> wrap_host_memory(void* p, size_t n);

}  // namespace v4::cpu

// Run-time CPU feature detection and the ISA cap used by dispatch.
#include <atomic>
#include <string>

#include <omp.h>

#include "backends/cpu/cpu.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#elif defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace v4::cpu {

namespace {

#if defined(__x86_64__) || defined(_M_X64)
uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

// Linux keeps AMX tile data disabled until a process asks for it (arch_prctl, kernel >= 5.16).
bool request_amx_permission() {
#if defined(__linux__)
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr int kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

features detect() {
  features f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;            // XMM and YMM state
  const bool os_avx512 = (xcr0 & 0xe6) == 0xe6;       // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & (3ull << 17)) == (3ull << 17);  // XTILECFG, XTILEDATA
  f.fma = os_avx && (c & (1u << 12));
  f.f16c = os_avx && (c & (1u << 29));
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = os_avx && (b & (1u << 5));
    f.avx512f = os_avx512 && (b & (1u << 16));
    f.avx512dq = os_avx512 && (b & (1u << 17));
    f.avx512bw = os_avx512 && (b & (1u << 30));
    f.avx512vl = os_avx512 && (b & (1u << 31));
    f.avx512_vnni = os_avx512 && (c & (1u << 11));
    f.avx512_fp16 = os_avx512 && (d & (1u << 23));
    const bool amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24), amx_int8 = d & (1u << 25);
    if (os_amx && amx_tile && request_amx_permission()) {
      f.amx_tile = true;
      f.amx_bf16 = amx_bf16;
      f.amx_int8 = amx_int8;
    }
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512_bf16 = os_avx512 && (a & (1u << 5));
  return f;
}
#elif defined(__aarch64__)
features detect() {
  features f;
  f.neon = true;  // mandatory on AArch64
#if defined(__linux__)
  const unsigned long hw = getauxval(AT_HWCAP);
  f.neon_fp16 = (hw & HWCAP_FPHP) && (hw & HWCAP_ASIMDHP);
  f.neon_dotprod = hw & HWCAP_ASIMDDP;
#endif
  return f;
}
#else
features detect() { return {}; }
#endif

std::atomic<int> g_isa_limit{1 << 30};

}  // namespace

const features& host_features() {
  static const features f = detect();
  return f;
}

std::string features_string() {
  const features& f = host_features();
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.has_avx2(), "AVX2");
  add(f.has_avx512(), "AVX512");
  add(f.avx512_vnni, "AVX512_VNNI");
  add(f.avx512_bf16, "AVX512_BF16");
  add(f.avx512_fp16, "AVX512_FP16");
  add(f.amx_bf16, "AMX_BF16");
  add(f.amx_int8, "AMX_INT8");
  add(f.neon, "NEON");
  add(f.neon_fp16, "NEON_FP16");
  add(f.neon_dotprod, "NEON_DOTPROD");
  return s.empty() ? "scalar" : s;
}

isa isa_limit() { return static_cast<isa>(g_isa_limit.load()); }
void set_isa_limit(isa level) { g_isa_limit.store(static_cast<int>(level)); }

const char* isa_name(isa level) {
  switch (level) {
    case isa::scalar: return "scalar";
    case isa::avx2: return "avx2";
    case isa::avx512: return "avx512";
    case isa::neon: return "neon";
  }
  return "?";
}

bool isa_available(isa level) {
  const features& f = host_features();
  switch (level) {
    case isa::scalar: return true;
#if defined(__x86_64__)
    case isa::avx2: return f.has_avx2();
    case isa::avx512: return f.has_avx512() && f.has_avx2();
#endif
#if defined(__aarch64__)
    case isa::neon: return f.neon;
#endif
    default: return false;
  }
}

bool isa_allowed(isa level) { return isa_available(level) && static_cast<int>(level) <= static_cast<int>(isa_limit()); }

int default_threads() { return omp_get_num_procs(); }

}  // namespace v4::cpu

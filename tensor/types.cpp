// Built-in types (f32, f16, bf16, i8, i32, i64), the block-type registry, scalar conversions.
#include <cmath>
#include <limits>
#include <cstring>
#include <mutex>

#include "tensor/tensor.h"

namespace v4 {

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400) == 0);
    bits = sign | (uint32_t(112 - e) << 23) | ((mant & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = (x >> 16) & 0x8000;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00 | ((ax >> 13) & 0x3ff);  // NaN stays NaN (quiet)
  if (ax >= 0x477ff000u) return sign | 0x7c00;                         // rounds to >= 65520: inf
  if (ax < 0x38800000u) {                                              // below f16 normal range
    // subnormal f16: value = m * 2^-24; round |f| * 2^24 to nearest even
    float af;
    std::memcpy(&af, &ax, 4);
    const float scaled = af * 16777216.0f;  // exact (power of two)
    return sign | uint16_t(std::nearbyint(scaled));
  }
  // normal: rebias exponent, round mantissa to 10 bits, nearest even
  const uint32_t rounded = ax + 0xfff + ((ax >> 13) & 1);
  return sign | uint16_t((rounded - 0x38000000u) >> 13);
}

float bf16_to_f32(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);  // quiet NaN
  return uint16_t((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

namespace {

void f32_to_f32(const void* s, float* d, int64_t n) { std::memcpy(d, s, size_t(n) * 4); }
void f32_from_f32(const float* s, void* d, int64_t n) { std::memcpy(d, s, size_t(n) * 4); }
void f16_to(const void* s, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = f16_to_f32(static_cast<const uint16_t*>(s)[i]);
}
void f16_from(const float* s, void* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(d)[i] = f32_to_f16(s[i]);
}
void bf16_to(const void* s, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_f32(static_cast<const uint16_t*>(s)[i]);
}
void bf16_from(const float* s, void* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(d)[i] = f32_to_bf16(s[i]);
}
template <typename T>
void int_to(const void* s, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = float(static_cast<const T*>(s)[i]);
}
// Integers from float: round to nearest, saturate (NaN -> 0).
template <typename T>
void int_from(const float* s, void* d, int64_t n) {
  constexpr double lo = double(std::numeric_limits<T>::min()), hi = double(std::numeric_limits<T>::max());
  for (int64_t i = 0; i < n; ++i) {
    const double v = std::isnan(s[i]) ? 0.0 : std::nearbyint(double(s[i]));
    static_cast<T*>(d)[i] = v <= lo ? std::numeric_limits<T>::min()
                          : v >= hi ? std::numeric_limits<T>::max()
                                    : T(v);
  }
}

struct registry {
  type_traits t[size_t(dtype::count)];
  registry() {
    t[int(dtype::f32)] = {"f32", 1, 4, true, false, f32_to_f32, f32_from_f32};
    t[int(dtype::f16)] = {"f16", 1, 2, true, false, f16_to, f16_from};
    t[int(dtype::bf16)] = {"bf16", 1, 2, true, false, bf16_to, bf16_from};
    t[int(dtype::i8)] = {"i8", 1, 1, false, true, int_to<int8_t>, int_from<int8_t>};
    t[int(dtype::i32)] = {"i32", 1, 4, false, true, int_to<int32_t>, int_from<int32_t>};
    t[int(dtype::i64)] = {"i64", 1, 8, false, true, int_to<int64_t>, int_from<int64_t>};
  }
};

registry& reg() {
  static registry r;
  return r;
}

const type_traits kUnregistered{};

}  // namespace

const type_traits& traits(dtype t) {
  const int i = int(t);
  if (i < 0 || i >= int(dtype::count)) return kUnregistered;
  return reg().t[i];
}

const char* type_name(dtype t) {
  const char* n = traits(t).name;
  return n ? n : "(unregistered type)";
}

bool type_registered(dtype t) { return traits(t).name != nullptr; }

bool type_from_name(const std::string& name, dtype* out) {
  for (int i = 0; i < int(dtype::count); ++i) {
    const type_traits& tr = traits(dtype(i));
    if (tr.name && name == tr.name) {
      *out = dtype(i);
      return true;
    }
  }
  return false;
}

void register_type(dtype t, const type_traits& tr) {
  static std::mutex m;
  std::lock_guard<std::mutex> lock(m);
  if (int(t) >= int(dtype::e8m0) && int(t) < int(dtype::count)) reg().t[int(t)] = tr;
}

size_t row_size(dtype t, int64_t n) {
  const type_traits& tr = traits(t);
  return size_t(n / tr.block_size) * tr.block_bytes;
}

}  // namespace v4

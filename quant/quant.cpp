// register_types(): the type_traits rows of quant/'s formats (see quant.h for the table).
#include <mutex>

#include "quant/quant.h"
#include "tensor/tensor.h"

namespace v4::quant {

namespace {

void e8m0_to(const void* s, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = e8m0_to_f32(static_cast<const uint8_t*>(s)[i]);
}
void e8m0_from(const float* s, void* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) static_cast<uint8_t*>(d)[i] = e8m0_from_f32(s[i]);
}
void e4m3_to(const void* s, float* d, int64_t n) { e4m3_to_f32_row(static_cast<const uint8_t*>(s), d, n); }
void e4m3_from(const float* s, void* d, int64_t n) { e4m3_from_f32_row(s, static_cast<uint8_t*>(d), n); }
void e2m1_to(const void* s, float* d, int64_t n) { e2m1_to_f32_row(static_cast<const uint8_t*>(s), d, n); }
void e2m1_from(const float* s, void* d, int64_t n) { e2m1_from_f32_row(s, static_cast<uint8_t*>(d), n); }

}  // namespace

void register_types() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_type(dtype::e8m0, {"e8m0", 1, 1, false, false, e8m0_to, e8m0_from});
    register_type(dtype::fp8_e4m3, {"fp8_e4m3", 1, 1, false, false, e4m3_to, e4m3_from, /*scaled=*/true});
    register_type(dtype::mxfp4, {"mxfp4", 2, 1, false, false, e2m1_to, e2m1_from, /*scaled=*/true});
    register_type(dtype::q8_0, {"q8_0", kQ8_0Block, sizeof(block_q8_0), false, false, dequantize_row_q8_0, quantize_row_q8_0});
    register_type(dtype::q4_k, {"q4_k", kQK, sizeof(block_q4_k), false, false, dequantize_row_q4_k, quantize_row_q4_k});
    register_type(dtype::q3_k, {"q3_k", kQK, sizeof(block_q3_k), false, false, dequantize_row_q3_k, quantize_row_q3_k});
    register_type(dtype::q2_k, {"q2_k", kQK, sizeof(block_q2_k), false, false, dequantize_row_q2_k, quantize_row_q2_k});
  });
}

}  // namespace v4::quant

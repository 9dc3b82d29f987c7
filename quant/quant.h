// Number formats as data: block layouts, reference quantize/dequantize, type traits.
// Issue 3 fills this in (FP8 e4m3 with UE8M0 block scales, MXFP4, Q8_0, K-quant class).
#pragma once

namespace v4::quant {

// Registers every block type this library defines with tensor/ (idempotent).
void register_types();

}  // namespace v4::quant

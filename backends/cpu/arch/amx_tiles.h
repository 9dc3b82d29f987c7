// The AMX palette-1 tile configuration shared by the two AMX-BF16 kernels (matmul_amx.cpp for
// bf16 weights, qmatmul_amx.cpp for the quantized types). Plain C++: each kernel loads it with
// its own ldtilecfg (the whole 64-byte struct as the asm's memory operand; see matmul_amx.cpp
// for why not _tile_loadconfig).
#pragma once

#include <cstdint>

namespace v4::cpu::amx {

struct alignas(64) tile_config {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(tile_config) == 64, "AMX palette-1 configuration is 64 bytes");

// Both kernels' 32 x 32 block: C tiles 0-3 (C[2a+b] = A_a x B_b), A tiles 4-5, B tiles 6-7, each
// row 64 bytes. rows0: rows of the first 16-row half of the m block (1..16); rows1: of the
// second (0..16; 0 leaves tiles 2, 3 and 5 unused).
inline tile_config block_config(int rows0, int rows1) {
  tile_config cfg = {};
  cfg.palette = 1;
  auto set = [&](int t, int rows) {
    cfg.rows[t] = uint8_t(rows);
    cfg.colsb[t] = rows ? 64 : 0;  // a tile is unused exactly when both are 0
  };
  set(0, rows0);  // C: A0 x B0
  set(1, rows0);  // C: A0 x B1
  set(2, rows1);  // C: A1 x B0
  set(3, rows1);  // C: A1 x B1
  set(4, rows0);  // A0
  set(5, rows1);  // A1
  set(6, 16);     // B0
  set(7, 16);     // B1
  return cfg;
}

}  // namespace v4::cpu::amx

// AVX-512 helpers shared by the K-quant decoders of qmatmul_avx512.cpp and
// qmatmul_vnni_avx512.cpp (both compiled with AVX-512 flags; include nowhere else), and the
// read-order prefetch position of their decode paths.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace v4::cpu::qmm_arch {

// The 16 six-bit fields of a K-quant scales[12] (quant/kquant.h layout) as 16 int32 lanes: low 4
// bits of v[i] in byte i % 8 (low nibble for i < 8), high 2 bits in byte 8 + i / 4 at bit
// 2 (i % 4). Reads 16 bytes (the 4 after the field belong to the same block).
inline __m512i unpack6_epi32(const uint8_t* in) {
  const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in)));
  const __m512i lo_src = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7), b);
  const __m512i hi_src = _mm512_permutexvar_epi32(_mm512_setr_epi32(8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11), b);
  const __m512i lo = _mm512_and_si512(_mm512_srlv_epi32(lo_src, _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4)),
                                      _mm512_set1_epi32(15));
  const __m512i hi = _mm512_and_si512(_mm512_srlv_epi32(hi_src, _mm512_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6)),
                                      _mm512_set1_epi32(3));
  return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 4));
}

// The decode paths read a tile of `rows` weight rows segment by segment (segment-major: segment 0
// of every row, then segment 1, ...; nseg segments), then the next tile, assumed `tile_rows` rows
// further. read_ahead tracks the row segment `ahead` segments after the one being read, stepped
// once per row read (integer divisions only at the start: two per row measured as a visible share
// of a K = 4096 row). Byte offset from segment s of row r: offset(r, s, ...).
struct read_ahead {
  int64_t rows, nseg, r2, s3, tiles;
  read_ahead(int64_t rows_, int64_t nseg_, int64_t ahead) : rows(rows_), nseg(nseg_) {
    const int64_t s2 = ahead / rows;
    r2 = ahead % rows;
    tiles = s2 / nseg;
    s3 = s2 % nseg;
  }
  void next() {
    if (++r2 == rows) {
      r2 = 0;
      if (++s3 == nseg) {
        s3 = 0;
        ++tiles;
      }
    }
  }
  // seg_start(j): the row byte offset where segment j starts.
  template <class F>
  int64_t offset(int64_t r, int64_t s, int64_t tile_rows, int64_t stride, F seg_start) const {
    return (tiles * tile_rows + r2 - r) * stride + (seg_start(s3) - seg_start(s));
  }
};

}  // namespace v4::cpu::qmm_arch

// Rotary-embedding pieces shared by the ROPE kernel (rope.cpp) and the fused NORM_ROPE kernel
// (norm_rope.cpp): one definition of the frequencies, angles and rotation, so both give the same bits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tensor/ops.h"

namespace v4::cpu {

// Frequencies f_i, i in [0, n_rot/2), per the formula in tensor/ops.h (computed in double).
std::vector<double> rope_freqs(const rope_params& p);
// cos and sin of pair i's angle at `position` (negated when p.inverse), as f32: cs[i], sn[i].
void rope_angles(const rope_params& p, const std::vector<double>& freqs, int32_t position, float* cs, float* sn);
// One row of D elements: x read at byte stride xs, y packed (y may be x's own memory when xs is
// 4): dims before D - n_rot copied, the pairs turned by (cs, sn).
void rope_row(const rope_params& p, const char* x, size_t xs, float* y, int64_t D, const float* cs, const float* sn);

}  // namespace v4::cpu

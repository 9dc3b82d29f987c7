// The ranking of top_k (tensor/ops.h), shared by the top_k and route_topk kernels so that both
// pick the same indices: larger values first, NaN below every number, ties to the lower index.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace v4::cpu {

// Strict "ranks before" on the indices of v: NaN below every number; equal values (+0 and -0
// included), and NaNs among themselves, in index order.
struct greater_first {
  const float* v;
  bool operator()(int32_t i, int32_t j) const {
    const float a = v[i], b = v[j];
    const bool na = std::isnan(a), nb = std::isnan(b);
    if (na || nb) return !na && nb ? true : (na && nb ? i < j : false);
    return a > b || (a == b && i < j);
  }
};

// order[0, k) = the indices of the k first of v[0, n) in that ranking, in order (order holds n
// entries on return). Selection then a sort of the k winners: O(n + k log k). The comparator is a
// strict total order, so the result does not depend on the algorithm.
inline void top_k_order(const float* v, int64_t n, int k, std::vector<int32_t>& order) {
  order.resize(size_t(n));
  std::iota(order.begin(), order.end(), 0);
  std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), greater_first{v});
  std::sort(order.begin(), order.begin() + k, greater_first{v});
}

}  // namespace v4::cpu

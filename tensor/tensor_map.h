// tensor -> value, by address: an open-addressing table for the per-step bookkeeping of graphs
// (positions for fingerprints, the seen-set of build_graph, the scheduler's plan remap). A decode
// step touches ~1,000 tensors several times; std::unordered_map's node allocations were most of
// that cost. get() of an unknown tensor returns V{}.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace v4 {

template <class V>
class tensor_map {
 public:
  explicit tensor_map(size_t n = 0) { reset(n); }
  // Empties the table, with room for n entries (the memory is kept when it suffices).
  void reset(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    keys_.assign(cap, nullptr);
    vals_.resize(cap);
    mask_ = cap - 1;
    used_ = 0;
  }
  void put(const tensor* t, V v) {
    if (2 * (used_ + 1) > keys_.size()) grow();
    size_t i = slot(t);
    while (keys_[i] && keys_[i] != t) i = (i + 1) & mask_;
    if (!keys_[i]) ++used_;
    keys_[i] = t;
    vals_[i] = std::move(v);
  }
  V get(const tensor* t) const {
    for (size_t i = slot(t); keys_[i]; i = (i + 1) & mask_)
      if (keys_[i] == t) return vals_[i];
    return V{};
  }

 private:
  void grow() {
    std::vector<const tensor*> keys = std::move(keys_);
    std::vector<V> vals = std::move(vals_);
    reset(keys.size());  // twice the entries' room
    for (size_t i = 0; i < keys.size(); ++i)
      if (keys[i]) put(keys[i], std::move(vals[i]));
  }
  size_t slot(const tensor* t) const {
    return size_t((reinterpret_cast<uintptr_t>(t) >> 4) * 0x9E3779B97F4A7C15ull >> 20) & mask_;
  }
  std::vector<const tensor*> keys_;
  std::vector<V> vals_;
  size_t mask_ = 0, used_ = 0;
};

}  // namespace v4

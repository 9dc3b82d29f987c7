// Liveness-based planning of intermediate memory (best fit over a free list) and the allocator
// that applies a plan, caching it by graph fingerprint.
#include "tensor/alloc.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>

namespace v4 {

namespace {

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// Bytes of memory a tensor needs of its own (it is contiguous when the allocator places it).
size_t own_bytes(const tensor* t) { return row_size(t->type, t->ne[0]) * size_t(t->nrows()); }

class free_list {
 public:
  size_t alloc(size_t n) {
    int best = -1;
    for (int i = 0; i < int(blocks_.size()); ++i)
      if (blocks_[i].size >= n && (best < 0 || blocks_[i].size < blocks_[best].size)) best = i;
    size_t off;
    if (best >= 0) {
      off = blocks_[best].offset;
      blocks_[best].offset += n;
      blocks_[best].size -= n;
      if (blocks_[best].size == 0) blocks_.erase(blocks_.begin() + best);
    } else if (!blocks_.empty() && blocks_.back().offset + blocks_.back().size == top_) {
      off = blocks_.back().offset;  // grow the last free block past the top
      top_ = off + n;
      blocks_.pop_back();
    } else {
      off = top_;
      top_ += n;
    }
    peak_ = std::max(peak_, top_);
    return off;
  }

  void release(size_t off, size_t n) {
    auto it = std::lower_bound(blocks_.begin(), blocks_.end(), off,
                               [](const block& b, size_t o) { return b.offset < o; });
    it = blocks_.insert(it, {off, n});
    if (it + 1 != blocks_.end() && it->offset + it->size == (it + 1)->offset) {  // merge right
      it->size += (it + 1)->size;
      blocks_.erase(it + 1);
    }
    if (it != blocks_.begin() && (it - 1)->offset + (it - 1)->size == it->offset) {  // merge left
      (it - 1)->size += it->size;
      it = blocks_.erase(it) - 1;
    }
    if (it->offset + it->size == top_) {  // the top block returns to the unused tail
      top_ = it->offset;
      blocks_.erase(it);
    }
  }

  size_t peak() const { return peak_; }

 private:
  struct block {
    size_t offset, size;
  };
  std::vector<block> blocks_;  // sorted by offset, never adjacent (merged)
  size_t top_ = 0, peak_ = 0;
};

}  // namespace

alloc_plan plan_graph(const graph& g, size_t alignment, const std::vector<bool>* place) {
  const size_t n = g.nodes.size(), n_all = n + g.leafs.size();
  std::unordered_map<const tensor*, size_t> slot;
  for (size_t i = 0; i < n; ++i) slot[g.nodes[i]] = i;
  for (size_t j = 0; j < g.leafs.size(); ++j) slot[g.leafs[j]] = n + j;
  auto tensor_at = [&](size_t s) { return s < n ? g.nodes[s] : g.leafs[s - n]; };

  std::vector<bool> placed(n_all);
  for (size_t s = 0; s < n_all; ++s) {
    const tensor* t = tensor_at(s);
    placed[s] = place ? (*place)[s]
                      : (!t->view_src && !t->data && (s < n || (t->flags & kFlagInput)));
  }

  // Last node (index) that reads each tensor's memory, directly or through an alias.
  std::vector<int64_t> last_use(n_all, -1);
  std::vector<std::vector<size_t>> reads(n);  // distinct memory owners read by node i
  for (size_t i = 0; i < n; ++i) {
    const tensor* t = g.nodes[i];
    auto note = [&](const tensor* s) {
      if (!s) return;
      auto it = slot.find(s->base());
      if (it == slot.end()) return;
      if (std::find(reads[i].begin(), reads[i].end(), it->second) == reads[i].end()) reads[i].push_back(it->second);
      last_use[it->second] = int64_t(i);
    };
    for (const tensor* s : t->src) {
      note(s);
      if (s) note(s->scales);  // a scaled source's block scales are read with it
    }
    note(t->view_src);
  }

  alloc_plan plan;
  plan.fingerprint = g.fingerprint();
  plan.offsets.assign(n_all, SIZE_MAX);
  free_list fl;
  auto size_of = [&](size_t s) { return align_up(std::max<size_t>(own_bytes(tensor_at(s)), 1), alignment); };
  auto keeps = [&](size_t s) { return s >= n || (tensor_at(s)->flags & kFlagOutput); };  // inputs, outputs

  for (size_t s = n; s < n_all; ++s)
    if (placed[s]) plan.offsets[s] = fl.alloc(size_of(s));
  for (size_t i = 0; i < n; ++i) {
    if (placed[i]) plan.offsets[i] = fl.alloc(size_of(i));
    for (size_t s : reads[i])
      if (placed[s] && last_use[s] == int64_t(i) && !keeps(s)) fl.release(plan.offsets[s], size_of(s));
    if (placed[i] && last_use[i] < 0 && !keeps(i)) fl.release(plan.offsets[i], size_of(i));  // never read
  }
  plan.peak = fl.peak();
  return plan;
}

std::vector<bool> graph_allocator::default_mask(const graph& g) const {
  const size_t n = g.nodes.size();
  std::vector<bool> mask(n + g.leafs.size());
  auto mine = [&](const tensor* t) { return !t->data || (buf_ && t->buf == buf_.get()); };
  for (size_t i = 0; i < n; ++i) mask[i] = !g.nodes[i]->view_src && mine(g.nodes[i]);
  for (size_t j = 0; j < g.leafs.size(); ++j) mask[n + j] = (g.leafs[j]->flags & kFlagInput) && mine(g.leafs[j]);
  return mask;
}

bool graph_allocator::allocate(const graph& g, std::string* error, const std::vector<bool>* place,
                               uint64_t structure) {
  const std::vector<bool> mask = place ? *place : default_mask(g);
  const size_t n = g.nodes.size();
  for (size_t j = 0; j < g.leafs.size(); ++j) {
    const tensor* t = g.leafs[j];
    if (!t->data && !mask[n + j] && !(t->flags & kFlagInput) && !place) {
      *error = std::string("tensor '") + t->name + "' has no data: weights must be loaded, inputs flagged kFlagInput";
      return false;
    }
  }
  uint64_t fp = structure ? structure : g.fingerprint();
  for (size_t s = 0; s < mask.size(); ++s) fp = fp * 31 + mask[s];
  if (fp != plan_.fingerprint || plan_.offsets.size() != mask.size()) {
    // Keep the current plan among the recent ones; take a recent one that fits, else plan anew.
    auto fits = [&](const alloc_plan& ap) { return ap.fingerprint == fp && ap.offsets.size() == mask.size(); };
    auto it = std::find_if(recent_.begin(), recent_.end(), fits);
    alloc_plan next;
    if (it != recent_.end()) {
      next = std::move(*it);
      recent_.erase(it);
    } else {
      next = plan_graph(g, bt_->alignment(), &mask);
      next.fingerprint = fp;
      ++n_plans_;
    }
    if (!plan_.offsets.empty()) {
      recent_.insert(recent_.begin(), std::move(plan_));
      if (recent_.size() > kRecentPlans) recent_.pop_back();
    }
    plan_ = std::move(next);
  }
  if (!buf_ || buf_->size() < plan_.peak) {
    buf_.reset();
    buf_ = bt_->alloc(std::max<size_t>(plan_.peak, 1), error);
    if (!buf_) return false;
  }
  for (size_t s = 0; s < mask.size(); ++s) {
    if (!mask[s]) continue;
    tensor* t = s < n ? g.nodes[s] : g.leafs[s - n];
    bind_tensor(t, buf_.get(), plan_.offsets[s]);
  }
  resolve_views(g);
  return true;
}

}  // namespace v4

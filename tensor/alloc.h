// Graph allocator: places every intermediate of a graph in one buffer, reusing memory of
// tensors whose last reader has run (liveness), best-fit over a free list.
//
// Rules: leafs that already have data (weights) are left alone; leafs flagged kFlagInput and not
// yet placed get memory that stays live for the whole graph; outputs (kFlagOutput) are never
// freed; aliases (views, cpy/set_rows results) take their data from the tensor they alias and
// keep it alive as long as they are read.
//
// Plans are cached by graph fingerprint: computing the same graph again (one decode step,
// every step) reuses its plan and only re-points tensor data; the plans of the last few other
// structures are kept too (decode alternates between a few).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "tensor/backend.h"
#include "tensor/graph.h"

namespace v4 {

struct alloc_plan {
  uint64_t fingerprint = 0;
  std::vector<size_t> offsets;  // per graph node (and per input leaf, after the nodes); SIZE_MAX = not placed here
  size_t peak = 0;              // bytes of the buffer this plan needs
};

// Pure planning, no memory: which offset each tensor gets. `place` says which tensors this
// allocator is responsible for (default: all not yet backed by memory). Exposed for tests.
alloc_plan plan_graph(const graph& g, size_t alignment, const std::vector<bool>* place = nullptr);

class graph_allocator {
 public:
  explicit graph_allocator(buffer_type* bt) : bt_(bt) {}

  // Plans (or reuses the plan for) g, grows the buffer if needed, and sets data/buf of every
  // placed tensor. Returns false with a message on failure (e.g. out of memory).
  // place (optional, nodes then leafs as in plan_graph) restricts which tensors this allocator
  // places; the default is every node that is not an alias and has no memory of its own yet (or
  // memory from this allocator's previous plan), and every kFlagInput leaf without memory.
  // structure (optional, nonzero): g.fingerprint() as the caller already knows it (saves
  // computing it again for a graph rebuilt with the same structure).
  bool allocate(const graph& g, std::string* error, const std::vector<bool>* place = nullptr,
                uint64_t structure = 0);
  // The default placement mask for g (exposed for the scheduler, which narrows it per device).
  std::vector<bool> default_mask(const graph& g) const;

  size_t peak_bytes() const { return plan_.peak; }
  int n_plans_made() const { return n_plans_; }  // how often a new plan was computed
  buffer* buf() const { return buf_.get(); }

 private:
  buffer_type* bt_;
  std::unique_ptr<buffer> buf_;
  alloc_plan plan_;
  static constexpr size_t kRecentPlans = 8;  // other structures' plans, most recent first
  std::vector<alloc_plan> recent_;
  int n_plans_ = 0;
};

}  // namespace v4

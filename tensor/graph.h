// A graph: the nodes needed to compute some output tensors, in an order where every node comes
// after its sources (a topological order from a depth-first walk, sources in index order).
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace v4 {

struct graph {
  std::vector<tensor*> nodes;  // computed (or aliasing) tensors, in execution order
  std::vector<tensor*> leafs;  // tensors with op NONE that nodes read (weights, inputs)

  // A structural fingerprint: ops, types, shapes, strides, params and the wiring between nodes
  // (not data pointers). Two graphs with equal fingerprints can share an allocation plan.
  uint64_t fingerprint() const;
};

// Collects everything that outputs depend on. Marks the outputs kFlagOutput.
// Fails (returns false, error in ctx) on a nullptr output, which is how an op-building error
// surfaces when the caller did not check ctx.ok() earlier.
bool build_graph(context& ctx, std::initializer_list<tensor*> outputs, graph* out);
bool build_graph(context& ctx, const std::vector<tensor*>& outputs, graph* out);

// Points every alias in g (views, cpy/set_rows results) at its base tensor's memory. Allocators
// and streams call it; a no-op for aliases whose base has no memory yet.
void resolve_views(const graph& g);

}  // namespace v4

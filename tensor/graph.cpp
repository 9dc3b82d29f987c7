// Graph building (depth-first, sources before users) and the structural fingerprint.
#include "tensor/graph.h"

#include <cstdint>
#include <vector>

#include "tensor/tensor_map.h"

namespace v4 {

namespace {

struct builder {
  graph* g;
  tensor_map<uint8_t> seen{1024};  // 1: visited

  void visit(tensor* t) {
    if (!t || seen.get(t)) return;
    seen.put(t, 1);
    for (tensor* s : t->src) visit(s);
    if (t->view_src) visit(t->view_src);
    if (t->scales) visit(t->scales);
    if (t->op == op_kind::NONE)
      g->leafs.push_back(t);
    else
      g->nodes.push_back(t);
  }
};

uint64_t mix(uint64_t h, uint64_t v) {
  // FNV-1a style mixing over 64-bit words
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0x100000001b3ull;
}

}  // namespace

bool build_graph(context& ctx, std::initializer_list<tensor*> outputs, graph* out) {
  return build_graph(ctx, std::vector<tensor*>(outputs), out);
}

bool build_graph(context& ctx, const std::vector<tensor*>& outputs, graph* out) {
  *out = graph{};
  if (!ctx.ok()) return false;
  for (tensor* t : outputs) {
    if (!t) {
      ctx.fail("build_graph: an output is null (an op failed while building; see the first error)");
      return false;
    }
  }
  builder b{out};
  for (tensor* t : outputs) {
    t->flags |= kFlagOutput;
    b.visit(t);
  }
  return true;
}

void resolve_views(const graph& g) {
  for (tensor* t : g.nodes) {
    if (!t->view_src || !t->view_src->data) continue;
    t->data = static_cast<char*>(t->view_src->data) + t->view_offs;
    t->buf = t->view_src->buf;
  }
}

uint64_t graph::fingerprint() const {
  tensor_map<uint64_t> id(leafs.size() + nodes.size());  // position + 1
  for (size_t i = 0; i < leafs.size(); ++i) id.put(leafs[i], 1 + i);
  for (size_t i = 0; i < nodes.size(); ++i) id.put(nodes[i], 1 + leafs.size() + i);
  // Each tensor's words are hashed on their own, in four independent lanes (word i into lane
  // i % 4: short dependency chains the CPU runs side by side, also across tensors), then folded
  // in graph order.
  auto hash_tensor = [&](const tensor* t) {
    uint64_t lane[4] = {0xcbf29ce484222325ull, 0x9e3779b97f4a7c15ull, 0xc2b2ae3d27d4eb4full, 0x165667b19e3779f9ull};
    int w = 0;
    auto put = [&](uint64_t v) {
      lane[w & 3] = mix(lane[w & 3], v);
      ++w;
    };
    put(uint64_t(t->op) | uint64_t(t->type) << 16 | uint64_t(t->flags) << 32);
    put(t->op == op_kind::NONE && t->data != nullptr);  // weight vs input leaf
    for (int d = 0; d < kMaxDims; ++d) {
      put(uint64_t(t->ne[d]));
      put(uint64_t(t->nb[d]));
    }
    for (int i = 0; i < kMaxOpParams; i += 2)
      put(uint64_t(uint32_t(t->op_params[i])) | uint64_t(uint32_t(t->op_params[i + 1])) << 32);
    for (const tensor* s : t->src) put(s ? id.get(s) : 0);
    put(t->view_src ? id.get(t->view_src) : 0);
    put(t->view_offs);
    return mix(mix(lane[0], lane[1]), mix(lane[2], lane[3]));
  };
  uint64_t h = 0x84222325cbf29ce4ull;
  for (const tensor* t : leafs) h = (h ^ hash_tensor(t)) * 0x100000001b3ull;
  for (const tensor* t : nodes) h = (h ^ hash_tensor(t)) * 0x100000001b3ull;
  return h;
}

}  // namespace v4

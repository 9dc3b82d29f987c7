// The scheduler: device assignment, splits, cross-device copies, per-device allocation, execution.
// See sched.h for the rules.
#include "tensor/sched.h"

#include <algorithm>
#include <chrono>
#include <unordered_map>

#include "tensor/tensor_map.h"

namespace v4 {

namespace {
bool is_pure_view(const tensor* t) { return op_is_view(t->op); }
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

struct scheduler::impl {
  std::vector<device*> devs;
  std::vector<std::unique_ptr<stream>> streams;
  std::vector<std::unique_ptr<graph_allocator>> allocs;
  int n_threads = 0;

  // The plan, valid for graphs with fingerprint `planned`.
  uint64_t planned = 0;
  bool have_plan = false;
  bool replanned = false;  // the last plan() call planned anew
  std::vector<tensor*> planned_nodes, planned_leafs;  // what the plan's pointers refer to
  uint64_t exec_fp = 0;                                // exec's fingerprint (set when planned)
  std::unique_ptr<context> copy_ctx;                // owns copy tensors and their aliases
  std::unordered_map<const tensor*, int> assign;    // compute node -> device index
  struct rewire {
    tensor* node;
    int src;
    tensor* with;     // the copy (or an alias of it) read instead of node->src[src]
    tensor* before;   // what node->src[src] was
  };
  std::vector<std::vector<rewire>> rewires;         // per split
  std::vector<std::vector<tensor*>> copy_aliases;   // per split: views of copies, to resolve
  graph exec;                                       // planning order: copies, then each split's nodes
  std::vector<int> exec_dev;                        // device index per exec node (-1: alias of other memory)
  std::vector<graph> split_graphs;
  tensor_map<tensor*> remap_to;  // remap()'s old -> new pointers, kept to reuse its memory

  // Plans of other graph structures, most recent first: decode alternates between a few (a
  // compressed row is written every few tokens), and each keeps its split graphs, so a device
  // can keep what it derived from them (CUDA graphs) instead of starting over every other step.
  struct saved_plan {
    uint64_t planned = 0;
    std::vector<tensor*> planned_nodes, planned_leafs;
    uint64_t exec_fp = 0;
    std::unique_ptr<context> copy_ctx;
    std::unordered_map<const tensor*, int> assign;
    std::vector<std::vector<rewire>> rewires;
    std::vector<std::vector<tensor*>> copy_aliases;
    graph exec;
    std::vector<int> exec_dev;
    std::vector<graph> split_graphs;
    std::vector<sched_split> splits;
  };
  static constexpr size_t kSavedPlans = 8;
  std::vector<saved_plan> saved;

  void save_current(std::vector<sched_split>& splits) {
    saved_plan sp;
    sp.planned = planned;
    sp.planned_nodes = std::move(planned_nodes);
    sp.planned_leafs = std::move(planned_leafs);
    sp.exec_fp = exec_fp;
    sp.copy_ctx = std::move(copy_ctx);
    sp.assign = std::move(assign);
    sp.rewires = std::move(rewires);
    sp.copy_aliases = std::move(copy_aliases);
    sp.exec = std::move(exec);
    sp.exec_dev = std::move(exec_dev);
    sp.split_graphs = std::move(split_graphs);
    sp.splits = std::move(splits);
    saved.insert(saved.begin(), std::move(sp));
    if (saved.size() > kSavedPlans) saved.pop_back();
    have_plan = false;
  }

  // Makes the saved plan for structure fp current; false if there is none.
  bool restore(uint64_t fp, size_t n_nodes, size_t n_leafs, std::vector<sched_split>& splits) {
    for (size_t i = 0; i < saved.size(); ++i) {
      saved_plan& sp = saved[i];
      if (sp.planned != fp || sp.planned_nodes.size() != n_nodes || sp.planned_leafs.size() != n_leafs) continue;
      planned = sp.planned;
      planned_nodes = std::move(sp.planned_nodes);
      planned_leafs = std::move(sp.planned_leafs);
      exec_fp = sp.exec_fp;
      copy_ctx = std::move(sp.copy_ctx);
      assign = std::move(sp.assign);
      rewires = std::move(sp.rewires);
      copy_aliases = std::move(sp.copy_aliases);
      exec = std::move(sp.exec);
      exec_dev = std::move(sp.exec_dev);
      split_graphs = std::move(sp.split_graphs);
      splits = std::move(sp.splits);
      saved.erase(saved.begin() + long(i));
      have_plan = true;
      return true;
    }
    return false;
  }

  int index_of(const device* d) const {
    for (size_t i = 0; i < devs.size(); ++i)
      if (devs[i] == d) return int(i);
    return -1;
  }

  // Device whose memory holds tensor t (through its base).
  int mem_dev(const tensor* t) const {
    const tensor* b = t->base();
    if (b->op != op_kind::NONE) {
      auto it = assign.find(b);
      return it == assign.end() ? int(devs.size()) - 1 : it->second;
    }
    if (b->buf) return index_of(b->buf->type()->dev());
    return int(devs.size()) - 1;  // input leaves live in host memory (the CPU, last)
  }

  const buffer_type* mem_type(const tensor* t) const {
    const tensor* b = t->base();
    if (b->op == op_kind::NONE && b->buf) return b->buf->type();
    const int d = mem_dev(t);
    return d >= 0 ? devs[d]->default_buffer_type() : nullptr;
  }
};

scheduler::scheduler(std::vector<device*> devices, int n_threads) : p_(new impl) {
  p_->devs = std::move(devices);
  p_->n_threads = n_threads;
  for (device* d : p_->devs) {
    p_->streams.push_back(d->new_stream());
    if (n_threads > 0) p_->streams.back()->set_n_threads(n_threads);
    p_->allocs.push_back(std::make_unique<graph_allocator>(d->default_buffer_type()));
  }
  reset_stats();
}

void scheduler::reset_stats() {
  stats_ = sched_stats{};
  stats_.compute_s.assign(p_->devs.size(), 0.0);
}

const std::vector<device*>& scheduler::devices() const { return p_->devs; }

void scheduler::set_op_profiling(bool on) {
  profiles_.assign(p_->devs.size(), op_profile{});
  for (size_t d = 0; d < p_->devs.size(); ++d) p_->streams[d]->set_profile(on ? &profiles_[d] : nullptr);
}

scheduler::~scheduler() = default;

device* scheduler::device_of(const tensor* node) const {
  const impl& p = *p_;
  for (size_t i = 0; i < p.exec.nodes.size(); ++i)
    if (p.exec.nodes[i] == node) return p.exec_dev[i] >= 0 ? p.devs[size_t(p.exec_dev[i])] : nullptr;
  return nullptr;
}

size_t scheduler::peak_bytes(const device* d) const {
  const int i = p_->index_of(d);
  return i < 0 ? 0 : p_->allocs[i]->peak_bytes();
}

int scheduler::n_copies() const {
  int n = 0;
  for (const sched_split& s : splits_) n += int(s.copies.size());
  return n;
}

bool scheduler::plan(graph& g, std::string* error) {
  impl& p = *p_;
  if (p.devs.empty() || p.devs.back()->kind() != device_kind::cpu) {
    *error = "scheduler: the last device must be the CPU";
    return false;
  }
  const uint64_t fp = g.fingerprint();
  p.replanned = false;
  if (p.have_plan && fp == p.planned && g.nodes.size() == p.planned_nodes.size() &&
      g.leafs.size() == p.planned_leafs.size()) {
    if (g.nodes != p.planned_nodes || g.leafs != p.planned_leafs) remap(g);
    return true;
  }
  if (p.have_plan) p.save_current(splits_);
  if (p.restore(fp, g.nodes.size(), g.leafs.size(), splits_)) {
    if (g.nodes != p.planned_nodes || g.leafs != p.planned_leafs) remap(g);
    return true;
  }
  p.replanned = true;
  p.have_plan = false;
  p.assign.clear();
  p.rewires.clear();
  p.copy_aliases.clear();
  p.copy_ctx = std::make_unique<context>();
  splits_.clear();

  // 1. assignment
  const int n_dev = int(p.devs.size());
  std::unordered_map<const tensor*, bool> followed;  // assigned by rule c (or the fallback)
  for (tensor* t : g.nodes) {
    if (is_pure_view(t)) continue;
    int d = -1;
    if (t->view_src) {  // cpy / set_rows: computed where the destination memory is
      d = p.mem_dev(t);
      if (d < 0 || !p.devs[d]->supports_op(t)) {
        *error = std::string("scheduler: no device can write '") + t->name + "' (" + op_name(t->op) +
                 ") into its destination's memory";
        return false;
      }
    }
    if (d < 0) {  // a. weights pull their node
      const tensor* heaviest = nullptr;
      for (const tensor* s : t->src)
        if (s && s->base()->op == op_kind::NONE && (s->base()->flags & kFlagWeight) && s->base()->buf &&
            (!heaviest || s->nbytes() > heaviest->nbytes()))
          heaviest = s;
      if (heaviest) {
        const int wd = p.mem_dev(heaviest);
        if (wd >= 0 && p.devs[wd]->supports_op(t)) d = wd;
      }
    }
    if (d < 0) followed[t] = true;
    if (d < 0) {  // c. follow the first assigned source
      for (const tensor* s : t->src) {
        if (!s) continue;
        auto it = p.assign.find(s->base());
        if (it == p.assign.end()) continue;
        if (p.devs[it->second]->supports_op(t)) d = it->second;
        break;
      }
    }
    for (int i = 0; d < 0 && i < n_dev; ++i)
      if (p.devs[i]->supports_op(t)) d = i;
    if (d < 0) {
      *error = std::string("scheduler: no device supports '") + t->name + "' (" + op_name(t->op) + ")";
      return false;
    }
    p.assign[t] = d;
  }
  // d. A node that only followed its sources moves up to its consumers' device when they all run
  //    on one device of higher priority that supports it (walking backwards, so whole chains move):
  //    the work between a CPU-only node (the embedding lookup) and the GPU's first weight then runs
  //    on the GPU instead of making a CPU split of its own.
  std::unordered_map<const tensor*, int> consumers;  // base -> its consumers' device, -1: several
  for (auto it = g.nodes.rbegin(); it != g.nodes.rend(); ++it) {
    tensor* t = *it;
    if (is_pure_view(t)) continue;
    int& d = p.assign[t];
    auto c = consumers.find(t);
    if (followed.count(t) && c != consumers.end() && c->second >= 0 && c->second < d &&
        p.devs[c->second]->supports_op(t))
      d = c->second;
    for (const tensor* s : t->src) {
      if (!s || s->base()->op == op_kind::NONE) continue;
      auto [e, fresh] = consumers.emplace(s->base(), d);
      if (!fresh && e->second != d) e->second = -1;
    }
  }

  // 2. splits, 3. copies
  std::unordered_map<const tensor*, tensor*> copy_of;  // per split: base -> its copy
  for (tensor* t : g.nodes) {
    if (is_pure_view(t)) continue;
    const int d = p.assign[t];
    if (splits_.empty() || splits_.back().dev != p.devs[d]) {
      splits_.push_back({p.devs[d], {}, {}, {}});
      p.rewires.emplace_back();
      p.copy_aliases.emplace_back();
      copy_of.clear();
    }
    sched_split& sp = splits_.back();
    sp.nodes.push_back(t);
    for (int j = 0; j < kMaxSrc; ++j) {
      tensor* s = t->src[j];
      if (!s || (t->view_src && s->base() == t->view_src)) continue;  // the destination is written in place
      const buffer_type* bt = p.mem_type(s);
      if (bt && p.devs[d]->can_read(bt)) continue;
      // A copy of s's memory on this split's device (once per split), read through a view with
      // s's strides and offset when s is a view.
      auto copy_for = [&](const tensor* v) {
        const tensor* b = v->base();
        tensor*& c = copy_of[b];
        if (!c) {
          c = p.copy_ctx->new_tensor(b->type, kMaxDims, b->ne);
          c->set_name("%s#copy%d", b->name, int(splits_.size()) - 1);
          c->src[0] = const_cast<tensor*>(b);  // liveness: the copy reads b
          c->op = op_kind::CPY;                // planned as a node; executed as a stream copy
          sp.copies.push_back(c);
          sp.copy_from.push_back(b);
        }
        if (v == b) return c;
        tensor* with = p.copy_ctx->new_tensor(v->type, kMaxDims, v->ne);
        for (int k = 0; k < kMaxDims; ++k) with->nb[k] = v->nb[k];
        with->op = op_kind::VIEW;
        with->src[0] = c;
        with->view_src = c;
        with->view_offs = v->view_offs;
        p.copy_aliases.back().push_back(with);
        return with;
      };
      tensor* with = copy_for(s);
      if (s->scales && !with->scales) {  // block scales travel with their values
        with->scales = copy_for(s->scales);
        with->scale_block[0] = s->scale_block[0];
        with->scale_block[1] = s->scale_block[1];
      }
      p.rewires.back().push_back({t, j, with, s});
    }
  }

  // The planning order: each split's copies (and views of them), then its nodes; pure views of
  // the original graph keep their places so aliases stay live as long as they are read.
  p.exec = graph{};
  p.exec.leafs = g.leafs;
  p.exec_dev.clear();
  p.split_graphs.clear();
  std::unordered_map<const tensor*, size_t> split_start;
  for (size_t i = 0; i < splits_.size(); ++i) split_start[splits_[i].nodes.front()] = i;
  for (tensor* t : g.nodes) {
    if (is_pure_view(t)) {
      p.exec.nodes.push_back(t);
      p.exec_dev.push_back(-1);
      continue;
    }
    auto it = split_start.find(t);
    if (it != split_start.end()) {
      const sched_split& sp = splits_[it->second];
      const int d = p.index_of(sp.dev);
      for (tensor* c : sp.copies) {
        p.exec.nodes.push_back(c);
        p.exec_dev.push_back(d);
      }
      for (tensor* v : p.copy_aliases[it->second]) {
        p.exec.nodes.push_back(v);
        p.exec_dev.push_back(-1);
      }
      graph sg;
      sg.nodes = sp.nodes;
      p.split_graphs.push_back(std::move(sg));
    }
    p.exec.nodes.push_back(t);
    p.exec_dev.push_back(p.assign[t]);
  }
  p.planned = fp;
  p.planned_nodes = g.nodes;
  p.planned_leafs = g.leafs;
  p.exec_fp = p.exec.fingerprint();
  p.have_plan = true;
  return true;
}

// A graph with the fingerprint of the planned one has the same structure: node i and leaf j play
// the parts of the planned graph's node i and leaf j (decode steps rebuild the same graph each
// token). The plan is kept and its pointers moved over to the new tensors, instead of planning
// again. Copies and their views (owned by the plan) stay as they are.
void scheduler::remap(graph& g) {
  impl& p = *p_;
  // Old pointer -> new pointer (tensor_map: a decode step remaps ~600 pointers; a
  // std::unordered_map built anew each step cost more than the rest).
  tensor_map<tensor*>& to = p.remap_to;
  to.reset(g.nodes.size() + g.leafs.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) to.put(p.planned_nodes[i], g.nodes[i]);
  for (size_t j = 0; j < g.leafs.size(); ++j) to.put(p.planned_leafs[j], g.leafs[j]);
  auto m = [&](const tensor* t) -> tensor* {
    tensor* n = to.get(t);
    return n ? n : const_cast<tensor*>(t);
  };
  // (assign is only read while planning anew, and by device_of through exec: not remapped.)
  for (auto& rs : p.rewires)
    for (auto& r : rs) {
      r.node = m(r.node);
      r.before = m(r.before);
    }
  for (sched_split& sp : splits_) {
    for (tensor*& t : sp.nodes) t = m(t);
    for (tensor* c : sp.copies) c->src[0] = m(c->src[0]);
    for (const tensor*& f : sp.copy_from) f = m(f);
  }
  for (tensor*& t : p.exec.nodes) t = m(t);
  p.exec.leafs = g.leafs;
  for (graph& sg : p.split_graphs)
    for (tensor*& t : sg.nodes) t = m(t);
  p.planned_nodes = g.nodes;
  p.planned_leafs = g.leafs;
}

bool scheduler::compute(graph& g, std::string* error) {
  double t0 = now_s();
  if (!plan(g, error)) return false;
  impl& p = *p_;
  stats_.runs += 1;
  stats_.plans += p.replanned;
  stats_.plan_s += now_s() - t0;
  t0 = now_s();
  // Read copies while planning and running; the caller's graph is restored afterwards.
  for (auto& rs : p.rewires)
    for (auto& r : rs) r.node->src[r.src] = r.with;
  struct restore {
    impl& p;
    ~restore() {
      for (auto& rs : p.rewires)
        for (auto& r : rs) r.node->src[r.src] = r.before;
    }
  } restore_srcs{p};

  const size_t n = p.exec.nodes.size();
  for (size_t d = 0; d < p.devs.size(); ++d) {
    std::vector<bool> mask(n + p.exec.leafs.size());
    for (size_t i = 0; i < n; ++i) mask[i] = p.exec_dev[i] == int(d) && !p.exec.nodes[i]->view_src;
    if (d + 1 == p.devs.size())  // inputs without memory live on the host
      for (size_t j = 0; j < p.exec.leafs.size(); ++j) {
        const tensor* l = p.exec.leafs[j];
        mask[n + j] = (l->flags & kFlagInput) && (!l->data || l->buf == p.allocs[d]->buf());
      }
    for (size_t j = 0; j < p.exec.leafs.size(); ++j) {
      const tensor* l = p.exec.leafs[j];
      if (!l->data && !(l->flags & kFlagInput)) {
        *error = std::string("tensor '") + l->name + "' has no data: weights must be loaded, inputs flagged kFlagInput";
        return false;
      }
    }
    if (!p.allocs[d]->allocate(p.exec, error, &mask, p.exec_fp)) return false;
  }
  resolve_views(p.exec);
  stats_.alloc_s += now_s() - t0;

  for (size_t s = 0; s < splits_.size(); ++s) {
    const int d = p.index_of(splits_[s].dev);
    t0 = now_s();
    for (size_t c = 0; c < splits_[s].copies.size(); ++c)
      if (!p.streams[d]->copy(splits_[s].copy_from[c], splits_[s].copies[c], error)) return false;
    const double t1 = now_s();
    stats_.copy_s += t1 - t0;
    if (!p.streams[d]->compute(p.split_graphs[s], error)) return false;
    stats_.compute_s[size_t(d)] += now_s() - t1;
    stats_.copies += int64_t(splits_[s].copies.size());
    stats_.nodes += int64_t(splits_[s].nodes.size());
  }
  stats_.splits += int64_t(splits_.size());
  t0 = now_s();
  for (auto& st : p.streams) st->synchronize();
  stats_.copy_s += now_s() - t0;  // waiting for outstanding copies (normally ~0)
  return true;
}

}  // namespace v4

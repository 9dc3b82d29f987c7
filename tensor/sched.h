// The scheduler: runs one graph over several devices.
//
//  1. Assign each node a device:
//     a. a node that reads a weight (kFlagWeight leaf) goes to the device owning that weight's
//        buffer if that device supports the op (the largest weight decides when there are several);
//     b. views go with the tensor they alias;
//     c. other nodes follow the device of their first assigned source when it supports them,
//        else the first device in priority order that does;
//     d. then, walking backwards, a node placed by rule c moves to its consumers' device when all
//        its consumers run on one device of higher priority that supports it (the work between
//        a CPU-only node, such as the embedding lookup, and the GPU's first weight joins the GPU);
//     the CPU comes last in priority order and supports everything, so every node lands.
//  2. Cut the node list into splits: maximal runs of consecutive nodes on one device.
//  3. Where a node reads a tensor its device cannot read (another device's memory), insert a
//     copy of that tensor into the split's device memory (once per split and tensor).
//  4. Allocate each device's intermediates with its own graph_allocator, then run the splits in
//     order, each on its device's stream.
// Steps 1-3 are cached by graph structure (fingerprint): a graph rebuilt with the structure of
// the current plan or of one of the last few (decode steps alternate between a few) reuses it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tensor/alloc.h"
#include "tensor/backend.h"
#include "tensor/graph.h"

namespace v4 {

// Where compute() spent its time, summed over calls since the last reset_stats() (seconds of
// wall time on the calling thread; a device's compute time includes waiting for its kernels).
struct sched_stats {
  int64_t runs = 0;          // compute() calls
  int64_t plans = 0;         // of which had to plan anew (the graph's structure changed)
  int64_t splits = 0, copies = 0, nodes = 0;  // summed over runs
  double plan_s = 0;         // planning (steps 1-3)
  double alloc_s = 0;        // allocating intermediates
  double copy_s = 0;         // copies between devices
  std::vector<double> compute_s;  // per device, in the scheduler's device order
};

struct sched_split {
  device* dev = nullptr;
  std::vector<tensor*> nodes;   // in execution order, sources rewired to copies where needed
  std::vector<tensor*> copies;  // copy tensors made for this split (computed before its nodes)
  std::vector<const tensor*> copy_from;  // what each copy copies
};

class scheduler {
 public:
  // devices in priority order; the last one must be the CPU (it supports every op).
  explicit scheduler(std::vector<device*> devices, int n_threads = 0);
  ~scheduler();

  // Plans, allocates and computes g. Returns false with a message on any failure.
  bool compute(graph& g, std::string* error);
  // Only the planning steps 1-3 (exposed for tests and for `v4 inspect`-style reports).
  bool plan(graph& g, std::string* error);

  const std::vector<sched_split>& splits() const { return splits_; }
  device* device_of(const tensor* node) const;
  const sched_stats& stats() const { return stats_; }
  void reset_stats();
  // Per-op time on each device whose stream supports it (op_profile), from now until
  // set_op_profiling(false); profiles()[d] for the d-th device.
  void set_op_profiling(bool on);
  const std::vector<op_profile>& op_profiles() const { return profiles_; }
  const std::vector<device*>& devices() const;
  size_t peak_bytes(const device* d) const;  // intermediates planned on device d
  int n_copies() const;

 private:
  struct impl;
  void remap(graph& g);
  std::unique_ptr<impl> p_;
  std::vector<sched_split> splits_;
  sched_stats stats_;
  std::vector<op_profile> profiles_;
};

}  // namespace v4

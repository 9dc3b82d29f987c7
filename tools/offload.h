// The partial-offload flags shared by run, logits, perplexity, chat and bench model
// (model/placement.h has the rules; llama.cpp's names where they exist).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "model/placement.h"
#include "model/v4.h"

namespace v4::cli {

struct offload {
  int n_gpu_layers = -1;
  bool cpu_moe = false;
  int n_cpu_moe = 0;
  std::vector<std::string> overrides;
  std::string device;

  void add_flags(CLI::App* cmd) {
    cmd->add_option("--n-gpu-layers", n_gpu_layers,
                    "(-ngl) Layers on the GPU, counted from the last (-1: all, with the output head; 0: none). Only "
                    "with a GPU present")
        ->check(CLI::Range(-1, 1 << 20));
    cmd->add_flag("--cpu-moe", cpu_moe, "Keep every layer's routed experts on the CPU");
    cmd->add_option("--n-cpu-moe", n_cpu_moe, "Keep the routed experts of the first N layers on the CPU")
        ->check(CLI::Range(0, 1 << 20));
    cmd->add_option("--override-tensor", overrides,
                    "(-ot) REGEX=DEVICE: tensors whose canonical name matches go to DEVICE (CPU, CUDA0); first match "
                    "wins; repeatable");
    cmd->add_option("--device", device, "Accelerator to offload to (default: the first one present)");
  }
  // Flags that only mean something with an accelerator (-ngl N > 0, --cpu-moe, --n-cpu-moe).
  bool asks_for_gpu() const { return n_gpu_layers > 0 || cpu_moe || n_cpu_moe > 0; }
  // After loading: tell the user when such flags had nothing to act on (everything on the CPU).
  void note_if_unused(bool all_on_cpu) const {
    if (asks_for_gpu() && all_on_cpu)
      std::fprintf(stderr, "note: no GPU is in use (none present, or a build without CUDA): --n-gpu-layers, "
                           "--cpu-moe and --n-cpu-moe have no effect; everything runs on the CPU\n");
  }
  // Fills the placement fields of p; `joined` must outlive p.
  void to_params(v4_model_params* p, std::string* joined) const {
    p->n_gpu_layers = n_gpu_layers;
    p->n_cpu_moe = cpu_moe ? -1 : n_cpu_moe;
    joined->clear();
    for (const std::string& o : overrides) *joined += (joined->empty() ? "" : ",") + o;
    p->tensor_overrides = joined->empty() ? nullptr : joined->c_str();
    p->device = device.empty() ? nullptr : device.c_str();
  }
  model::placement_options to_options() const {
    model::placement_options o;
    o.n_gpu_layers = n_gpu_layers;
    o.n_cpu_moe = cpu_moe ? -1 : n_cpu_moe;
    o.overrides = overrides;
    o.accelerator = device;
    return o;
  }
};

}  // namespace v4::cli

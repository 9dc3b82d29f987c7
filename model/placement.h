// Where each weight of a model lives: the CPU or an accelerator (partial offload).
//
// Rules, applied to every tensor by its canonical name (docs/FORMAT.md), first match wins:
//   1. an override `REGEX=DEVICE` whose regex (ECMAScript, searched anywhere in the name) matches
//      (`-ot` on the CLI, llama.cpp's --override-tensor);
//   2. routed experts (`layers.N.ffn.experts.*`) of layers N < n_cpu_moe stay on the CPU
//      (`--n-cpu-moe N`; `--cpu-moe` is n_cpu_moe = all);
//   3. a layer's tensors (`layers.N.*`) go to the accelerator when N >= n_layers - n_gpu_layers
//      (the LAST n_gpu_layers layers, as llama.cpp's -ngl); the output tensors (head, norm,
//      hc_head_*) go there when n_gpu_layers > n_layers, or with n_gpu_layers < 0 (all);
//   4. everything else stays on the CPU: the token embedding (one get_rows per token) always
//      does, and so do the mHC scales (`*hc_*_scale`), which the graph builder reads on the host.
// With no accelerator registered every tensor stays on the CPU and the rules are not consulted
// (overrides naming an absent device are still refused, so a typo is not silently ignored).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor/backend.h"

namespace v4::model {

struct placement_options {
  int n_gpu_layers = -1;  // layers on the accelerator, counted from the last; < 0: all (+ output)
  int n_cpu_moe = 0;      // routed experts of the first N layers on the CPU; < 0: all layers
  std::vector<std::string> overrides;  // "REGEX=DEVICE", DEVICE a registered device name (CPU, CUDA0)
  std::string accelerator;             // device for rules 2-3; empty: the first non-CPU device
};

class placement {
 public:
  // Validates the options against the registered devices. false + *error on a bad override
  // (no '=', bad regex, unknown device) or a named accelerator that is not registered.
  bool init(const placement_options& opt, int64_t n_layers, std::string* error);
  // The device for a tensor name (never nullptr after a successful init).
  device* device_for(const std::string& name) const;
  device* accelerator() const { return accel_; }

 private:
  struct rule;
  std::vector<rule> rules_;
  placement_options opt_;
  int64_t n_layers_ = 0;
  device* cpu_ = nullptr;
  device* accel_ = nullptr;

 public:
  placement();
  ~placement();
  placement(placement&&) noexcept;
  placement& operator=(placement&&) noexcept;
};

// "REGEX=DEVICE[,REGEX=DEVICE...]" -> overrides (the CLI and C API form). Commas inside a regex
// are not supported; give several -ot flags instead.
std::vector<std::string> split_overrides(const std::string& list);

}  // namespace v4::model

// The CUDA backend: one device per visible GPU ("CUDA0", ...; this slice registers CUDA0 only).
// Device-memory buffers, an optional pinned host buffer type, a stream over one cudaStream_t
// that computes a graph node by node or replays it as a CUDA graph, and supports_op() for exactly
// the ops with kernels here.
// Plain C++ interface (no CUDA headers), so backends.cpp and tests include it freely.
#pragma once

#include <string>

#include "tensor/backend.h"

namespace v4::cuda {

// The device for GPU `ordinal`, or nullptr (reason in *error) when the CUDA runtime cannot be
// used (no driver, no GPU, driver too old) or the GPU does not exist. Created once, kept for the
// life of the process.
device* cuda_device(int ordinal = 0, std::string* error = nullptr);

// Page-locked host memory for device `d` (a CUDA device): the CPU reads and writes it directly
// (is_host) and the GPU reads it across PCIe/NVLink-C2C. For staging and small shared tensors.
buffer_type* pinned_buffer_type(device* d);

// How the CUDA streams of this process ran their graphs (cuda_device.cu, "CUDA graphs"): node by
// node, captured into a CUDA graph (new or updated executable), or replayed unchanged.
struct graph_counts {
  int64_t eager = 0, captured = 0, replayed = 0;
};
graph_counts graph_stats();

// Programmatic dependent launch (common.cuh: launch()): on where every GPU in use has it (sm_90+)
// unless V4_CUDA_PDL=0. set_pdl_enabled switches it for the kernels launched afterwards (tests
// compare both ways; never turn it on for a GPU without it).
bool pdl_enabled();
void set_pdl_enabled(bool on);

}  // namespace v4::cuda

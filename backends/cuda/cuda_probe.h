// A minimal probe of the CUDA runtime: is there a usable device, and does a kernel run on it.
// Plain C++ interface (no CUDA headers), so host-only code and tests can call it.
#pragma once

#include <string>

namespace v4::cuda {

// Number of CUDA devices visible through the runtime API. Returns -1 when the runtime cannot be
// used (no driver, driver too old for this runtime, no device...) and puts the reason in *error.
int device_count(std::string* error = nullptr);

// y[i] = a * x[i] + y[i] for i < n, computed by a kernel on the current device (host arrays in
// and out). Returns true on success; on failure puts the CUDA error in *error.
bool saxpy(float a, const float* x, float* y, int n, std::string* error = nullptr);

}  // namespace v4::cuda

// Registers every backend built into this binary with tensor/'s device registry.
#pragma once

namespace v4::backends {

// Idempotent. Also registers quant/'s block types. Call before devices() or find_device().
void init();

}  // namespace v4::backends

#include "quant/quant.h"

namespace v4::quant {

void register_types() {}

}  // namespace v4::quant

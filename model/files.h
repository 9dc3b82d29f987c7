// Small file helpers shared by the converter and the safetensors reader.
#pragma once

#include <string>

namespace v4::model {

// The whole file as bytes; false if it cannot be opened or read.
bool read_whole_file(const std::string& path, std::string* out);
// True for an existing regular file (not a directory).
bool is_regular_file(const std::string& path);

}  // namespace v4::model

// The C API's two-call buffer pattern (ask for the size, then fill) for the tools that use it.
// False on failure; the message is then in v4_last_error().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/v4.h"

namespace v4::cli {

inline bool capi_tokenize(v4_model* m, const std::string& text, bool special, std::vector<int32_t>* ids) {
  size_t n = 0;
  const v4_status st = v4_tokenize(m, text.data(), text.size(), special, nullptr, 0, &n);
  if (st != V4_OK && st != V4_ERR_BUFFER_TOO_SMALL) return false;
  ids->resize(n);
  return n == 0 || v4_tokenize(m, text.data(), text.size(), special, ids->data(), n, &n) == V4_OK;
}

// The V4 chat rendering of a JSON conversation (v4_chat_format).
inline bool capi_chat_format(const std::string& conversation_json, bool thinking, std::string* prompt) {
  size_t n = 0;
  const v4_status st = v4_chat_format(conversation_json.c_str(), thinking, nullptr, 0, &n);
  if (st != V4_OK && st != V4_ERR_BUFFER_TOO_SMALL) return false;
  prompt->assign(n, '\0');
  return v4_chat_format(conversation_json.c_str(), thinking, prompt->data(), n, &n) == V4_OK;
}

}  // namespace v4::cli

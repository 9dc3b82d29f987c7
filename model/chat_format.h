// The DeepSeek-V4 chat format: a conversation (OpenAI-style JSON messages) -> the prompt text,
// rendered exactly as the official `encoding/encoding_dsv4.py` (encode_messages) does: BOS,
// system prompt (+ "## Tools" with DSML instructions and JSON schemas), <｜User｜> turns, tool
// results merged into the next user turn as <tool_result> blocks (in call order), assistant turns
// (reasoning</think>answer, DSML tool calls, <｜end▁of▁sentence｜>), then <｜Assistant｜> and
// <think> (thinking mode) or </think> (chat mode). docs/TOKENIZER.md lists the accepted fields.
#pragma once

#include <string>
#include <string_view>

namespace v4::model {

struct chat_options {
  bool thinking = false;         // thinking_mode: "thinking" (true) or "chat"
  std::string reasoning_effort;  // "", "high" or "max" (max prepends a prompt in thinking mode)
  bool drop_thinking = true;     // drop reasoning of turns before the last user message
  bool add_bos = true;           // start with <｜begin▁of▁sentence｜>
};

// conversation_json: a JSON array of messages, or an object {"messages": [...], "tools": [...]}
// (a top-level tools list goes to the first message if it is a system or developer message, as
// the official tests do, else to a new empty system message in front). Messages: role system | developer | user | assistant | tool |
// latest_reminder; content (string), tools, response_format, tool_calls, tool_call_id,
// reasoning_content, task, wo_eos. False and *error naming the message and field on bad input.
bool render_chat_json(std::string_view conversation_json, const chat_options& opt, std::string* prompt,
                      std::string* error);

// Python's json.dumps(value, ensure_ascii=False) of a JSON text (the official encoder embeds
// tool schemas and non-string arguments that way). False if json_text is not JSON.
bool python_json_dumps(std::string_view json_text, std::string* out);

}  // namespace v4::model

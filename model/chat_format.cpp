// The DeepSeek-V4 chat format, following the official encoding/encoding_dsv4.py step by step:
// merge_tool_messages -> sort_tool_results_by_call_order -> (thinking mode) _drop_thinking_messages
// -> render_message for each message. Where the Python code would raise (an assertion, a missing
// key, a type error) we return an error naming the message.
#include "model/chat_format.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

namespace v4::model {

namespace {

using json = nlohmann::ordered_json;  // Python dicts keep insertion order; so must we

constexpr const char* kBos = "<｜begin▁of▁sentence｜>";
constexpr const char* kEos = "<｜end▁of▁sentence｜>";
constexpr const char* kThinkStart = "<think>";
constexpr const char* kThinkEnd = "</think>";
constexpr const char* kDsml = "｜DSML｜";
constexpr const char* kUser = "<｜User｜>";
constexpr const char* kAssistant = "<｜Assistant｜>";
constexpr const char* kLatestReminder = "<｜latest_reminder｜>";

const std::map<std::string, std::string>& task_tokens() {
  static const std::map<std::string, std::string> m = {
      {"action", "<｜action｜>"}, {"query", "<｜query｜>"}, {"authority", "<｜authority｜>"},
      {"domain", "<｜domain｜>"}, {"title", "<｜title｜>"},  {"read_url", "<｜read_url｜>"},
  };
  return m;
}

constexpr const char* kReasoningEffortMax =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

// The tools section; %DSML% stands for ｜DSML｜, %TS%/%TE% for <think>/</think>, %SCHEMAS% for the
// tool schemas (one JSON line each).
constexpr const char* kToolsTemplate =
    "## Tools\n\n"
    "You have access to a set of tools to help answer the user's question. You can invoke tools by writing a "
    "\"<%DSML%tool_calls>\" block like the following:\n\n"
    "<%DSML%tool_calls>\n"
    "<%DSML%invoke name=\"$TOOL_NAME\">\n"
    "<%DSML%parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</%DSML%parameter>\n"
    "...\n"
    "</%DSML%invoke>\n"
    "<%DSML%invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</%DSML%invoke>\n"
    "</%DSML%tool_calls>\n\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, "
    "booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n"
    "If thinking_mode is enabled (triggered by %TS%), you MUST output your complete reasoning inside %TS%...%TE% "
    "BEFORE any tool calls or final response.\n\n"
    "Otherwise, output directly after %TE% with tool calls or final response.\n\n"
    "### Available Tool Schemas\n\n"
    "%SCHEMAS%\n\n"
    "You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";

void replace_all(std::string* s, std::string_view from, std::string_view to) {
  for (size_t p = s->find(from); p != std::string::npos; p = s->find(from, p + to.size()))
    s->replace(p, from.size(), to);
}

// ---- Python's json.dumps(ensure_ascii=False) -----------------------------------------------------
void dump_string(const std::string& s, std::string* out) {
  *out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          *out += buf;
        } else {
          *out += char(c);
        }
    }
  }
  *out += '"';
}

// float.__repr__: the shortest round-trip digits; scientific when the exponent is < -4 or >= 16.
void dump_float(double v, std::string* out) {
  char sci[64], fix[400];
  auto rs = std::to_chars(sci, sci + sizeof sci, v, std::chars_format::scientific);
  const std::string s(sci, rs.ptr);
  const int exp = std::atoi(s.c_str() + s.find('e') + 1);
  if (exp < -4 || exp >= 16) {
    *out += s;  // e.g. 1e+16, 1.5e-05: the same form as Python
    return;
  }
  auto rf = std::to_chars(fix, fix + sizeof fix, v, std::chars_format::fixed);
  std::string f(fix, rf.ptr);
  if (f.find('.') == std::string::npos) f += ".0";
  *out += f;
}

void dump(const json& j, std::string* out) {
  switch (j.type()) {
    case json::value_t::null: *out += "null"; break;
    case json::value_t::boolean: *out += j.get<bool>() ? "true" : "false"; break;
    case json::value_t::number_integer: *out += std::to_string(j.get<int64_t>()); break;
    case json::value_t::number_unsigned: *out += std::to_string(j.get<uint64_t>()); break;
    case json::value_t::number_float: dump_float(j.get<double>(), out); break;
    case json::value_t::string: dump_string(j.get<std::string>(), out); break;
    case json::value_t::array: {
      *out += '[';
      bool first = true;
      for (const json& e : j) {
        if (!first) *out += ", ";
        first = false;
        dump(e, out);
      }
      *out += ']';
      break;
    }
    case json::value_t::object: {
      *out += '{';
      bool first = true;
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (!first) *out += ", ";
        first = false;
        dump_string(it.key(), out);
        *out += ": ";
        dump(it.value(), out);
      }
      *out += '}';
      break;
    }
    default: *out += "null"; break;
  }
}

std::string to_json(const json& j) {
  std::string s;
  dump(j, &s);
  return s;
}

// ---- helpers with the Python semantics the encoder relies on -------------------------------------
// msg.get(key) is truthy: present, not null, not false/0/""/[]/{}.
bool truthy(const json& msg, const char* key) {
  const auto it = msg.find(key);
  if (it == msg.end() || it->is_null()) return false;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_string()) return !it->get_ref<const std::string&>().empty();  // (json::empty() is false for strings)
  if (it->is_array() || it->is_object()) return !it->empty();
  if (it->is_number()) return it->get<double>() != 0;
  return true;
}

std::string role_of(const json& msg) {
  const auto it = msg.find("role");
  return it != msg.end() && it->is_string() ? it->get<std::string>() : std::string();
}

struct render_error {
  std::string message;
};

[[noreturn]] void fail(size_t index, const std::string& what) {
  throw render_error{"message " + std::to_string(index) + ": " + what};
}

// `content or ""` for a field that must be text.
std::string text_or_empty(const json& msg, const char* key, size_t index) {
  const auto it = msg.find(key);
  if (it == msg.end() || it->is_null()) return {};
  if (!it->is_string()) fail(index, std::string("'") + key + "' must be a string");
  return it->get<std::string>();
}

std::string render_tools(const json& tools, size_t index) {
  std::string schemas;
  for (size_t i = 0; i < tools.size(); ++i) {
    const json& t = tools[i];
    if (!t.is_object() || !t.contains("function"))
      fail(index, "tools[" + std::to_string(i) + "] has no 'function' (OpenAI format: {\"type\": \"function\", \"function\": {...}})");
    if (i) schemas += "\n";
    schemas += to_json(t["function"]);
  }
  std::string s = kToolsTemplate;
  replace_all(&s, "%DSML%", kDsml);
  replace_all(&s, "%TS%", kThinkStart);
  replace_all(&s, "%TE%", kThinkEnd);
  replace_all(&s, "%SCHEMAS%", schemas);
  return s;
}

std::string response_format(const json& msg) {
  return "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n" +
         to_json(msg["response_format"]);
}

// encode_arguments_to_dsml: the arguments JSON object as DSML parameters (strings as is, other
// values as JSON); arguments that are not JSON become one parameter named "arguments".
std::string dsml_arguments(const json& arguments, size_t index) {
  json args;
  bool parsed = false;
  if (arguments.is_string()) {
    const std::string& a = arguments.get_ref<const std::string&>();
    args = json::parse(a, nullptr, false);
    parsed = !args.is_discarded();
  }
  if (!parsed) args = json{{"arguments", arguments}};
  if (!args.is_object()) fail(index, "tool call arguments must be a JSON object (got " + to_json(args) + ")");
  std::string out;
  bool first = true;
  for (auto it = args.begin(); it != args.end(); ++it) {
    if (!first) out += "\n";
    first = false;
    const bool is_str = it.value().is_string();
    out += std::string("<") + kDsml + "parameter name=\"" + it.key() + "\" string=\"" + (is_str ? "true" : "false") +
           "\">" + (is_str ? it.value().get<std::string>() : to_json(it.value())) + "</" + kDsml + "parameter>";
  }
  return out;
}

std::string render_tool_calls(const json& tool_calls, size_t index) {
  std::string calls;
  for (size_t i = 0; i < tool_calls.size(); ++i) {
    const json& tc = tool_calls[i];
    if (!tc.is_object() || !tc.contains("function") || !tc["function"].is_object() ||
        !tc["function"].contains("name") || !tc["function"].contains("arguments"))
      fail(index, "tool_calls[" + std::to_string(i) + "] needs function.name and function.arguments");
    const json& fn = tc["function"];
    const std::string name = fn["name"].is_string() ? fn["name"].get<std::string>() : to_json(fn["name"]);
    if (i) calls += "\n";
    calls += std::string("<") + kDsml + "invoke name=\"" + name + "\">\n" + dsml_arguments(fn["arguments"], index) +
             "\n</" + kDsml + "invoke>";
  }
  return std::string("\n\n<") + kDsml + "tool_calls>\n" + calls + "\n</" + kDsml + "tool_calls>";
}

// A tool result's content: a string, or a list of blocks whose text parts are joined.
std::string tool_result_text(const json& content, size_t index) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_null()) fail(index, "tool result content is null");
  if (!content.is_array()) fail(index, "tool result content must be a string or a list of blocks");
  std::string out;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& b = content[i];
    if (i) out += "\n\n";
    const std::string type = b.is_object() && b.contains("type") && b["type"].is_string() ? b["type"].get<std::string>() : "None";
    if (type == "text") {
      const auto t = b.find("text");
      if (t != b.end() && !t->is_string()) fail(index, "a text block's 'text' must be a string");
      out += t == b.end() ? "" : t->get<std::string>();
    } else {
      out += "[Unsupported " + type + "]";
    }
  }
  return out;
}

int last_user_index(const std::vector<json>& msgs) {
  for (int i = int(msgs.size()) - 1; i >= 0; --i) {
    const std::string r = role_of(msgs[i]);
    if (r == "user" || r == "developer") return i;
  }
  return -1;
}

std::string render_message(size_t index, const std::vector<json>& msgs, const chat_options& opt, bool drop_thinking) {
  const json& msg = msgs[index];
  const int last_user = last_user_index(msgs);
  const std::string role = role_of(msg);
  std::string prompt;

  if (index == 0 && opt.thinking && opt.reasoning_effort == "max") prompt += kReasoningEffortMax;

  if (role == "system") {
    prompt += text_or_empty(msg, "content", index);
    if (truthy(msg, "tools")) prompt += "\n\n" + render_tools(msg["tools"], index);
    if (truthy(msg, "response_format")) prompt += "\n\n" + response_format(msg);
  } else if (role == "developer") {
    if (!truthy(msg, "content")) fail(index, "a developer message needs non-empty content");
    prompt += kUser + text_or_empty(msg, "content", index);
    if (truthy(msg, "tools")) prompt += "\n\n" + render_tools(msg["tools"], index);
    if (truthy(msg, "response_format")) prompt += "\n\n" + response_format(msg);
  } else if (role == "user") {
    prompt += kUser;
    if (truthy(msg, "content_blocks")) {
      const json& blocks = msg["content_blocks"];
      for (size_t i = 0; i < blocks.size(); ++i) {
        const json& b = blocks[i];
        const std::string type = b.value("type", "");
        if (i) prompt += "\n\n";
        if (type == "text") {
          const auto t = b.find("text");
          if (t != b.end() && !t->is_string()) fail(index, "user content must be a string");
          prompt += t == b.end() ? "" : t->get<std::string>();
        } else if (type == "tool_result") {
          prompt += "<tool_result>" + tool_result_text(b.contains("content") ? b["content"] : json(""), index) +
                    "</tool_result>";
        } else {
          prompt += "[Unsupported " + type + "]";
        }
      }
    } else {
      prompt += text_or_empty(msg, "content", index);
    }
  } else if (role == "latest_reminder") {
    // Python formats a missing content as "None".
    const auto c = msg.find("content");
    prompt += kLatestReminder;
    if (c == msg.end() || c->is_null()) prompt += "None";
    else if (c->is_string()) prompt += c->get<std::string>();
    else fail(index, "'content' must be a string");
  } else if (role == "assistant") {
    const std::string tool_calls = truthy(msg, "tool_calls") ? render_tool_calls(msg["tool_calls"], index) : "";
    const std::string content = text_or_empty(msg, "content", index);
    const std::string reasoning = text_or_empty(msg, "reasoning_content", index);
    const bool prev_has_task = index >= 1 && msgs[index - 1].contains("task") && !msgs[index - 1]["task"].is_null();
    std::string thinking;
    if (opt.thinking && !prev_has_task && (!drop_thinking || int(index) > last_user))
      thinking = reasoning + kThinkEnd;
    prompt += thinking + content + tool_calls;
    if (!truthy(msg, "wo_eos")) prompt += kEos;
  } else {
    fail(index, "unknown role '" + role + "' (system, developer, user, assistant, tool, latest_reminder)");
  }

  // What follows the message: nothing if another non-assistant message comes next; else the
  // task token, or the assistant prefix after a user turn.
  if (index + 1 < msgs.size()) {
    const std::string next = role_of(msgs[index + 1]);
    if (next != "assistant" && next != "latest_reminder") return prompt;
  }
  if (msg.contains("task") && !msg["task"].is_null()) {
    const std::string task = msg["task"].is_string() ? msg["task"].get<std::string>() : to_json(msg["task"]);
    const auto it = task_tokens().find(task);
    if (it == task_tokens().end())
      fail(index, "invalid task '" + task + "' (action, query, authority, domain, title, read_url)");
    if (task != "action") {
      prompt += it->second;
    } else {
      prompt += kAssistant;
      prompt += opt.thinking ? kThinkStart : kThinkEnd;
      prompt += it->second;
    }
  } else if (role == "user" || role == "developer") {
    prompt += kAssistant;
    if (opt.thinking && (!drop_thinking || int(index) >= last_user)) prompt += kThinkStart;
    else prompt += kThinkEnd;
  }
  return prompt;
}

// merge_tool_messages: tool results become tool_result blocks of a user message; consecutive
// user messages (and tool results) merge into one.
std::vector<json> merge_tool_messages(const json& messages) {
  std::vector<json> merged;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& msg = messages[i];
    if (!msg.is_object()) fail(i, "not a JSON object");
    const std::string role = role_of(msg);
    auto last_is_user_with_blocks = [&] {
      return !merged.empty() && role_of(merged.back()) == "user" && merged.back().contains("content_blocks");
    };
    if (role == "tool") {
      json block = {{"type", "tool_result"},
                    {"tool_use_id", msg.contains("tool_call_id") ? msg["tool_call_id"] : json("")},
                    {"content", msg.contains("content") ? msg["content"] : json("")}};
      if (last_is_user_with_blocks()) merged.back()["content_blocks"].push_back(block);
      else merged.push_back(json{{"role", "user"}, {"content_blocks", json::array({block})}});
    } else if (role == "user") {
      const json content = msg.contains("content") ? msg["content"] : json("");
      const json text_block = {{"type", "text"}, {"text", content}};
      const bool last_has_task = !merged.empty() && merged.back().contains("task") && !merged.back()["task"].is_null();
      if (last_is_user_with_blocks() && !last_has_task) {
        merged.back()["content_blocks"].push_back(text_block);
      } else {
        json m = {{"role", "user"}, {"content", content}, {"content_blocks", json::array({text_block})}};
        for (const char* k : {"task", "wo_eos", "mask"})
          if (msg.contains(k)) m[k] = msg[k];
        merged.push_back(std::move(m));
      }
    } else {
      merged.push_back(msg);
    }
  }
  return merged;
}

// sort_tool_results_by_call_order: the tool results of a user message follow the order of the
// calls of the last assistant message with tool calls (stable; unknown ids count as 0).
void sort_tool_results(std::vector<json>* msgs) {
  std::map<std::string, int> order;
  for (json& msg : *msgs) {
    const std::string role = role_of(msg);
    if (role == "assistant" && truthy(msg, "tool_calls")) {
      order.clear();
      int idx = 0;
      for (const json& tc : msg["tool_calls"]) {
        std::string id;
        if (tc.is_object() && tc.contains("id") && tc["id"].is_string() && !tc["id"].get<std::string>().empty())
          id = tc["id"].get<std::string>();
        else if (tc.is_object() && tc.contains("function") && tc["function"].is_object() &&
                 tc["function"].contains("id") && tc["function"]["id"].is_string())
          id = tc["function"]["id"].get<std::string>();
        if (!id.empty()) order[id] = idx;
        ++idx;
      }
    } else if (role == "user" && truthy(msg, "content_blocks")) {
      std::vector<json> results;
      for (const json& b : msg["content_blocks"])
        if (b.value("type", "") == "tool_result") results.push_back(b);
      if (results.size() <= 1 || order.empty()) continue;
      auto key = [&](const json& b) {
        const auto it = b.contains("tool_use_id") && b["tool_use_id"].is_string()
                            ? order.find(b["tool_use_id"].get<std::string>())
                            : order.end();
        return it == order.end() ? 0 : it->second;
      };
      std::stable_sort(results.begin(), results.end(), [&](const json& a, const json& b) { return key(a) < key(b); });
      size_t k = 0;
      for (json& b : msg["content_blocks"])
        if (b.value("type", "") == "tool_result") b = results[k++];
    }
  }
}

// _drop_thinking_messages: before the last user message, assistant turns lose their reasoning and
// roles other than user/system/tool/latest_reminder/direct_search_results are left out.
std::vector<json> drop_thinking_messages(const std::vector<json>& msgs) {
  const int last_user = last_user_index(msgs);
  std::vector<json> out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const std::string role = role_of(msgs[i]);
    const bool keep = role == "user" || role == "system" || role == "tool" || role == "latest_reminder" ||
                      role == "direct_search_results";
    if (keep || int(i) >= last_user) {
      out.push_back(msgs[i]);
    } else if (role == "assistant") {
      json m = msgs[i];
      m.erase("reasoning_content");
      out.push_back(std::move(m));
    }
  }
  return out;
}

}  // namespace

bool python_json_dumps(std::string_view json_text, std::string* out) {
  const json j = json::parse(json_text, nullptr, false);
  if (j.is_discarded()) return false;
  *out = to_json(j);
  return true;
}

bool render_chat_json(std::string_view conversation_json, const chat_options& opt, std::string* prompt,
                      std::string* error) {
  std::string err;
  if (!error) error = &err;
  if (!opt.reasoning_effort.empty() && opt.reasoning_effort != "max" && opt.reasoning_effort != "high")
    return *error = "reasoning effort '" + opt.reasoning_effort + "': expected max or high", false;
  json conv = json::parse(conversation_json, nullptr, false);
  if (conv.is_discarded()) return *error = "not valid JSON", false;
  json messages;
  if (conv.is_array()) {
    messages = conv;
  } else if (conv.is_object() && conv.contains("messages") && conv["messages"].is_array()) {
    messages = conv["messages"];
    if (conv.contains("tools") && !conv["tools"].is_null()) {
      if (!conv["tools"].is_array()) return *error = "'tools' must be a list", false;
      const std::string first = messages.empty() ? "" : role_of(messages[0]);
      if (first != "system" && first != "developer")
        messages.insert(messages.begin(), json{{"role", "system"}, {"content", ""}});
      messages[0]["tools"] = conv["tools"];
    }
  } else {
    return *error = "expected a list of messages or an object with a 'messages' list", false;
  }
  try {
    std::vector<json> msgs = merge_tool_messages(messages);
    sort_tool_results(&msgs);
    bool drop = opt.drop_thinking;
    for (const json& m : msgs)
      if (truthy(m, "tools")) drop = false;  // with tools, earlier reasoning is kept
    if (opt.thinking && drop) msgs = drop_thinking_messages(msgs);
    std::string out = opt.add_bos ? kBos : "";
    for (size_t i = 0; i < msgs.size(); ++i) out += render_message(i, msgs, opt, drop);
    *prompt = std::move(out);
  } catch (const render_error& e) {
    *error = e.message;
    return false;
  } catch (const std::exception& e) {  // nlohmann type errors on malformed messages
    *error = std::string("malformed conversation: ") + e.what();
    return false;
  }
  return true;
}

}  // namespace v4::model

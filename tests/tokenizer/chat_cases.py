# Conversations for the chat-format goldens (imported by make_chat_goldens.py). Each case:
# name, conversation (a messages list, or {"messages", "tools"}), thinking, reasoning_effort,
# drop_thinking.
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}}}
SEARCH_TOOL = {"type": "function", "function": {
    "name": "search", "description": "Search the web. Returns up to `top_k` results.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "top_k": {"type": "integer", "default": 5},
                                                    "filters": {"type": "object"}}}}}


def call(i, name, args):
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": args}}


SYS = {"role": "system", "content": "You are a helpful assistant."}

CASES = []


def case(name, conv, thinking=False, effort=None, drop=True):
    CASES.append({"name": name, "conversation": conv, "thinking": thinking, "reasoning_effort": effort,
                  "drop_thinking": drop})


multi = [SYS, {"role": "user", "content": "Hello"},
         {"role": "assistant", "content": "Hi there! How can I help you?", "reasoning_content": "The user said hello."},
         {"role": "user", "content": "What is the capital of France?"},
         {"role": "assistant", "content": "The capital of France is Paris.",
          "reasoning_content": "The user asks about the capital of France. It is Paris."}]
weather = {"messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What's the weather in Beijing?"},
    {"role": "assistant", "content": "", "reasoning_content": "The user wants to know the weather in Beijing. I should use the get_weather tool.",
     "tool_calls": [call(1, "get_weather", "{\"location\": \"Beijing\", \"unit\": \"celsius\"}")]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 22, \"condition\": \"sunny\"}"},
    {"role": "assistant", "content": "It is 22°C and sunny in Beijing.", "reasoning_content": "Got the weather data. Let me format a nice response."},
    {"role": "user", "content": "And in Paris?"}], "tools": [WEATHER_TOOL]}

case("chat_single", [SYS, {"role": "user", "content": "Hello"}])
case("thinking_single", [SYS, {"role": "user", "content": "Hello"}], thinking=True)
case("no_system", [{"role": "user", "content": "Tell me a joke."}])
case("chat_multi_turn", multi)
case("thinking_multi_turn_drops_reasoning", multi, thinking=True)
case("thinking_multi_turn_keep_reasoning", multi, thinking=True, drop=False)
case("thinking_pending_user", multi + [{"role": "user", "content": "And Germany?"}], thinking=True)
case("chat_pending_user", multi + [{"role": "user", "content": "And Germany?"}])
case("thinking_effort_max", [SYS, {"role": "user", "content": "Prove that sqrt(2) is irrational."}], thinking=True, effort="max")
case("thinking_effort_high", [SYS, {"role": "user", "content": "Prove it."}], thinking=True, effort="high")
case("chat_effort_max_ignored", [SYS, {"role": "user", "content": "Hi"}], effort="max")
case("tools_thinking", weather, thinking=True)
case("tools_chat", weather)
case("parallel_tool_calls_sorted", {"messages": [
    SYS, {"role": "user", "content": "Weather in Tokyo and Oslo, and search news."},
    {"role": "assistant", "content": None, "reasoning_content": "Three calls.", "tool_calls": [
        call(1, "get_weather", "{\"location\": \"Tokyo\"}"), call(2, "get_weather", "{\"location\": \"Oslo\", \"unit\": \"fahrenheit\"}"),
        call(3, "search", "{\"query\": \"news 今日\", \"top_k\": 3, \"filters\": {\"lang\": [\"en\", \"ja\"], \"safe\": true, \"score\": 0.5}}")]},
    {"role": "tool", "tool_call_id": "call_3", "content": "[{\"title\": \"News\"}]"},
    {"role": "tool", "tool_call_id": "call_1", "content": "Tokyo: 18°C"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "Oslo: 41°F"}, {"type": "image", "url": "x"}]},
    {"role": "assistant", "content": "Done.", "reasoning_content": "All results in."}], "tools": [WEATHER_TOOL, SEARCH_TOOL]},
    thinking=True)
case("tool_call_non_json_arguments", {"messages": [
    SYS, {"role": "user", "content": "Search."},
    {"role": "assistant", "content": "Let me search.", "tool_calls": [call(7, "search", "not json {")]},
    {"role": "tool", "tool_call_id": "call_7", "content": "nothing"}], "tools": [SEARCH_TOOL]})
case("tool_call_values", {"messages": [
    SYS, {"role": "user", "content": "x"},
    {"role": "assistant", "content": "", "tool_calls": [call(1, "f", "{\"i\": 42, \"neg\": -7, \"f\": 1.0, \"g\": 2.5e-07, \"big\": 1e20, \"b\": false, \"n\": null, \"s\": \"a\\\"b\\nc\\u00e9\\u4e2d\", \"l\": [1, \"two\", {\"three\": 3}], \"e\": {}}")]}],
    "tools": [WEATHER_TOOL]}, thinking=True)
case("response_format", [{"role": "system", "content": "Answer in JSON.", "response_format": {
    "type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object", "properties": {"answer": {"type": "string"}}}}}},
    {"role": "user", "content": "What is 2+2?"}])
case("developer_and_latest_reminder", [
    SYS, {"role": "developer", "content": "Use the search results. Today is 2026-04-28.", "tools": [SEARCH_TOOL]},
    {"role": "latest_reminder", "content": "Remember to cite sources."},
    {"role": "assistant", "content": "", "reasoning_content": "Search first.", "tool_calls": [call(1, "search", "{\"query\": \"v4\"}")]},
    {"role": "tool", "tool_call_id": "call_1", "content": "DeepSeek-V4 released."},
    {"role": "assistant", "content": "DeepSeek-V4 was released [1].", "reasoning_content": "Cite it."}], thinking=True)
case("developer_dropped_before_last_user", [
    SYS, {"role": "developer", "content": "Be brief."}, {"role": "assistant", "content": "OK.", "reasoning_content": "r"},
    {"role": "user", "content": "Hi"}], thinking=True)
case("task_action_chat", [SYS, {"role": "user", "content": "Book a flight to Paris.", "task": "action"}])
case("task_action_thinking", [SYS, {"role": "user", "content": "Book a flight to Paris.", "task": "action"}], thinking=True)
case("task_query_then_answer", [{"role": "user", "content": "best pizza near me", "task": "query"},
                                {"role": "assistant", "content": "pizza near me"}], thinking=True)
case("task_title", [{"role": "user", "content": "Summarize our chat about rust lifetimes.", "task": "title"}])
case("wo_eos_prefill", [SYS, {"role": "user", "content": "Write a poem."},
                        {"role": "assistant", "content": "Roses are", "wo_eos": True}])
case("consecutive_users_merge", [SYS, {"role": "user", "content": "First part."}, {"role": "user", "content": "Second part."}])
case("unicode_and_special_lookalikes", [
    {"role": "system", "content": "Système: 你好 👋🏽 مرحبا"},
    {"role": "user", "content": "Literal tokens: <｜User｜> <think>x</think> ｜DSML｜ <｜end▁of▁sentence｜>\n\ttabs  and   spaces\r\n"}])
case("empty_contents", [{"role": "system", "content": None}, {"role": "user", "content": ""},
                        {"role": "assistant", "content": None}])
case("assistant_last_thinking", multi, thinking=True)
case("latest_reminder_none", [SYS, {"role": "user", "content": "hi"}, {"role": "latest_reminder"}], thinking=True)
case("tools_top_level_no_system", {"messages": [{"role": "user", "content": "Weather in Rome?"}], "tools": [WEATHER_TOOL]}, thinking=True)
case("tool_without_preceding_user", [SYS, {"role": "user", "content": "q"},
                                     {"role": "assistant", "content": "", "tool_calls": [call(9, "f", "{}")]},
                                     {"role": "tool", "tool_call_id": "call_9", "content": "r1"},
                                     {"role": "user", "content": "thanks"}])
case("latest_reminder_before_user", [SYS, {"role": "latest_reminder", "content": "2026-08-04, Seoul"},
                                     {"role": "user", "content": "Hello"}], thinking=True)
case("latest_reminder_after_assistant", [SYS, {"role": "user", "content": "u"}, {"role": "assistant", "content": "A."},
                                         {"role": "latest_reminder", "content": "Fresh context."}], thinking=True)
case("system_mid_conversation", [SYS, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                                 {"role": "system", "content": "new rule"}, {"role": "user", "content": "q2"}])
case("task_query_pending", [SYS, {"role": "user", "content": "cheap flights", "task": "query"}])
case("task_user_not_merged", [{"role": "user", "content": "a", "task": "domain"}, {"role": "user", "content": "b"}])

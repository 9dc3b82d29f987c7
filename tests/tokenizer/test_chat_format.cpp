// The V4 chat format against the official encoder's renderings (tests/tokenizer/make_chat_goldens.py
// runs encoding_dsv4.encode_messages on the conversations of chat_cases.py).
#include "model/chat_format.h"
#include "tests/tokenizer/tok_data.h"

namespace v4::model::testing {
namespace {

using ojson = nlohmann::ordered_json;  // keeps the conversations' key order, as Python dicts do

TEST(ChatFormat, MatchesOfficialEncoder) {
  const tokenizer* t = v4_tokenizer();
  ASSERT_TRUE(t);
  const ojson cases = ojson::parse(read_data("chat_goldens.json"), nullptr, false);
  ASSERT_TRUE(cases.is_array());
  ASSERT_GE(cases.size(), 25u);
  for (const ojson& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    chat_options opt;
    opt.thinking = c["thinking"].get<bool>();
    opt.reasoning_effort = c["reasoning_effort"].is_null() ? "" : c["reasoning_effort"].get<std::string>();
    opt.drop_thinking = c["drop_thinking"].get<bool>();
    std::string prompt, error;
    ASSERT_TRUE(render_chat_json(c["conversation"].dump(), opt, &prompt, &error)) << error;
    EXPECT_EQ(prompt, c["prompt"].get<std::string>());
    EXPECT_EQ(encode(*t, prompt, true), c["ids"].get<std::vector<int32_t>>());
  }
}

TEST(ChatFormat, ResearchExample) {
  const std::string conv = R"([{"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there! How can I help you?"},
    {"role": "user", "content": "What is the capital of France?"}])";
  std::string prompt, error;
  ASSERT_TRUE(render_chat_json(conv, {}, &prompt, &error)) << error;
  EXPECT_EQ(prompt,
            "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>Hello<｜Assistant｜></think>Hi there! How can I "
            "help you?<｜end▁of▁sentence｜><｜User｜>What is the capital of France?<｜Assistant｜></think>");
}

TEST(ChatFormat, BadConversationsGiveErrors) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"[{\"role\": \"user\", \"content\": \"x\"", "not valid JSON"},
      {"{\"foo\": 1}", "expected a list of messages"},
      {"[{\"role\": \"robot\", \"content\": \"x\"}]", "unknown role 'robot'"},
      {"[{\"role\": \"developer\", \"content\": \"\"}]", "developer message needs non-empty content"},
      {"[{\"role\": \"user\", \"content\": \"x\", \"task\": \"dance\"}]", "invalid task 'dance'"},
      {"[{\"role\": \"system\", \"content\": 5}]", "'content' must be a string"},
      {"[{\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": \"[1]\"}}]}]",
       "arguments must be a JSON object"},
      {"[{\"role\": \"system\", \"tools\": [{\"name\": \"f\"}]}]", "has no 'function'"},
      {"[3]", "not a JSON object"},
  };
  for (const auto& [conv, needle] : bad) {
    std::string prompt, error;
    EXPECT_FALSE(render_chat_json(conv, {}, &prompt, &error)) << conv;
    EXPECT_NE(error.find(needle), std::string::npos) << conv << " -> " << error;
  }
  std::string prompt, error;
  chat_options opt;
  opt.reasoning_effort = "extreme";
  EXPECT_FALSE(render_chat_json("[]", opt, &prompt, &error));
  EXPECT_NE(error.find("extreme"), std::string::npos);
}

TEST(ChatFormat, PythonJsonDumps) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"b": 1, "a": [true, null, 1.5]})", R"({"b": 1, "a": [true, null, 1.5]})"},
      {"[1.0, 100.0, 1e16, 1e15, 0.0001, 0.00001, -2.5e-7, 123456789012]",
       "[1.0, 100.0, 1e+16, 1000000000000000.0, 0.0001, 1e-05, -2.5e-07, 123456789012]"},
      {R"("tab\t nl\n quote\" uni\u00e9 ctl\u0001 \u2028")", "\"tab\\t nl\\n quote\\\" uni\xC3\xA9 ctl\\u0001 \xE2\x80\xA8\""},
      {"{}", "{}"}, {"[]", "[]"},
  };
  for (const auto& [in, want] : cases) {
    std::string out;
    ASSERT_TRUE(python_json_dumps(in, &out)) << in;
    EXPECT_EQ(out, want) << in;
  }
}

}  // namespace
}  // namespace v4::model::testing

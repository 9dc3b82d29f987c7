// The C API: the happy path on the tiny model (same logits as the C++ session), and every error
// path a caller can hit (NULLs, a missing or corrupt file, bad tokens, a full context, small
// buffers, no tokenizer) returning a status and a message, never aborting.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "model/convert.h"
#include "forward/converted.h"
#include "model/v4.h"

namespace {

std::string tiny_path() {
  static std::string path;
  if (!path.empty()) return path;
  path = v4::model::temp_model_path("v4_api_tiny");
  v4::model::convert_options opt;
  opt.force = true;
  v4::model::convert_stats st;
  std::string err;
  if (!v4::model::convert_checkpoint(V4_TEST_DATA_DIR "/forward/tiny", path, opt, &st, &err)) {
    ADD_FAILURE() << err;
    path.clear();
  }
  return path;
}

TEST(CApi, LoadEvalSample) {
  v4_model* m = nullptr;
  ASSERT_EQ(v4_model_load(tiny_path().c_str(), nullptr, &m), V4_OK) << v4_last_error();
  EXPECT_EQ(v4_model_n_vocab(m), 256);
  EXPECT_EQ(v4_model_n_layers(m), 4);
  EXPECT_EQ(v4_model_has_tokenizer(m), 0);
  v4_context_params cp = v4_context_default_params();
  cp.n_ctx = 64;
  cp.qat = 0;
  v4_context* c = nullptr;
  ASSERT_EQ(v4_context_create(m, &cp, &c), V4_OK) << v4_last_error();
  EXPECT_GT(v4_context_state_bytes(c), 0u);
  EXPECT_EQ(v4_get_logits(c, -1), nullptr);  // nothing evaluated yet
  const int32_t ids[] = {5, 17, 200};
  ASSERT_EQ(v4_eval(c, ids, 3, 1), V4_OK) << v4_last_error();
  EXPECT_EQ(v4_n_past(c), 3);
  ASSERT_NE(v4_get_logits(c, 0), nullptr);
  ASSERT_NE(v4_get_logits(c, 2), nullptr);
  EXPECT_EQ(v4_get_logits(c, 3), nullptr);
  EXPECT_EQ(v4_get_logits(c, -1), v4_get_logits(c, 2));
  // Greedy sampling = argmax of the last logits.
  v4_sampler_params sp = v4_sampler_default_params();
  sp.temperature = 0;
  v4_sampler* s = nullptr;
  ASSERT_EQ(v4_sampler_create(&sp, &s), V4_OK);
  int32_t tok = -1;
  ASSERT_EQ(v4_sample(s, c, &tok), V4_OK);
  const float* l = v4_get_logits(c, -1);
  int32_t best = 0;
  for (int32_t i = 1; i < 256; ++i)
    if (l[i] > l[best]) best = i;
  EXPECT_EQ(tok, best);
  // Reset forgets the sequence: the same tokens give the same logits.
  std::vector<float> first(l, l + 256);
  v4_context_reset(c);
  EXPECT_EQ(v4_n_past(c), 0);
  ASSERT_EQ(v4_eval(c, ids, 3, 0), V4_OK);
  EXPECT_EQ(std::vector<float>(v4_get_logits(c, -1), v4_get_logits(c, -1) + 256), first);
  v4_sampler_free(s);
  v4_context_free(c);
  v4_model_free(m);
}

TEST(CApi, ErrorsAreStatusesWithMessages) {
  v4_model* m = nullptr;
  EXPECT_EQ(v4_model_load(nullptr, nullptr, &m), V4_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(v4_model_load("/no/such/model.v4", nullptr, &m), V4_ERR_IO) << v4_last_error();
  EXPECT_NE(std::string(v4_last_error()).find("/no/such/model.v4"), std::string::npos);
  EXPECT_EQ(m, nullptr);
  // A file that is not a model.
  const std::string junk = testing::TempDir() + "v4_api_junk.v4";
  std::ofstream(junk) << "this is not a model file, just some bytes that are long enough to read a header from";
  EXPECT_EQ(v4_model_load(junk.c_str(), nullptr, &m), V4_ERR_FORMAT) << v4_last_error();
  // Cancelled load.
  v4_model_params mp = v4_model_default_params();
  mp.progress = [](float, void*) { return 0; };
  EXPECT_EQ(v4_model_load(tiny_path().c_str(), &mp, &m), V4_ERR_CANCELLED) << v4_last_error();
  // Bad placement options are the caller's mistake, named in the message.
  v4_model_params badp = v4_model_default_params();
  badp.tensor_overrides = "ffn\\.experts=NOSUCHDEV";
  EXPECT_EQ(v4_model_load(tiny_path().c_str(), &badp, &m), V4_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(v4_last_error()).find("NOSUCHDEV"), std::string::npos) << v4_last_error();
  badp = v4_model_default_params();
  badp.device = "CUDA42";
  EXPECT_EQ(v4_model_load(tiny_path().c_str(), &badp, &m), V4_ERR_INVALID_ARGUMENT);
  badp = v4_model_default_params();
  badp.tensor_overrides = "(=CPU";
  EXPECT_EQ(v4_model_load(tiny_path().c_str(), &badp, &m), V4_ERR_INVALID_ARGUMENT);

  ASSERT_EQ(v4_model_load(tiny_path().c_str(), nullptr, &m), V4_OK);
  v4_context_params cp = v4_context_default_params();
  cp.n_ctx = 4;
  v4_context* c = nullptr;
  cp.n_batch = 0;
  EXPECT_EQ(v4_context_create(m, &cp, &c), V4_ERR_INVALID_ARGUMENT);
  cp.n_batch = 16;
  ASSERT_EQ(v4_context_create(m, &cp, &c), V4_OK);
  const int32_t bad[] = {1, 999};
  EXPECT_EQ(v4_eval(c, bad, 2, 0), V4_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(v4_last_error()).find("999"), std::string::npos);
  const int32_t five[] = {1, 2, 3, 4, 5};
  EXPECT_EQ(v4_eval(c, five, 5, 0), V4_ERR_CONTEXT_FULL) << v4_last_error();
  EXPECT_EQ(v4_eval(c, nullptr, 0, 0), V4_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(v4_eval(nullptr, five, 1, 0), V4_ERR_INVALID_ARGUMENT);
  v4_sampler* s = nullptr;
  ASSERT_EQ(v4_sampler_create(nullptr, &s), V4_OK);
  int32_t tok;
  EXPECT_EQ(v4_sample(s, c, &tok), V4_ERR_INVALID_ARGUMENT);  // no logits yet
  v4_sampler_params sp = v4_sampler_default_params();
  sp.top_p = 1.5f;
  v4_sampler* s2 = nullptr;
  EXPECT_EQ(v4_sampler_create(&sp, &s2), V4_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(v4_last_error()).find("top_p"), std::string::npos);
  // No tokenizer in this file.
  size_t n = 0;
  EXPECT_EQ(v4_tokenize(m, "hi", 2, 0, nullptr, 0, &n), V4_ERR_NO_TOKENIZER);
  EXPECT_NE(std::string(v4_last_error()).find("tokenizer.json"), std::string::npos);
  // Chat format needs no model; a small buffer reports the size needed.
  const char* conv = R"([{"role": "user", "content": "Hello"}])";
  EXPECT_EQ(v4_chat_format(conv, 0, nullptr, 0, &n), V4_ERR_BUFFER_TOO_SMALL);
  std::string out(n, '\0');
  ASSERT_EQ(v4_chat_format(conv, 0, out.data(), n, &n), V4_OK);
  EXPECT_EQ(out, "<｜begin▁of▁sentence｜><｜User｜>Hello<｜Assistant｜></think>");
  EXPECT_EQ(v4_chat_format("[{\"role\": 5}]", 0, nullptr, 0, &n), V4_ERR_INVALID_ARGUMENT);
  // NULL-safe frees and getters.
  v4_model_free(nullptr);
  v4_context_free(nullptr);
  v4_sampler_free(nullptr);
  EXPECT_EQ(v4_model_n_vocab(nullptr), 0);
  EXPECT_STREQ(v4_status_name(V4_ERR_CONTEXT_FULL), "context full");
  v4_sampler_free(s);
  v4_context_free(c);
  v4_model_free(m);
}

}  // namespace

// The shipped default model (model/default/, issue 7): it loads, its tokenizer works, and a short
// greedy generation agrees, token by token, with the transcript committed beside it
// (tests/data/default-model/transcript.json, made by tools/train/make_transcript.py with the
// PyTorch reference of the same file: transformers + the official numerics).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model.h"
#include "model/sampler.h"
#include "model/session.h"
#include "model/tokenizer.h"

namespace v4::model {
namespace {

const std::string kModel = V4_SOURCE_DIR "/model/default/v4-tiny.v4";
const std::string kTranscript = V4_TEST_DATA_DIR "/default-model/transcript.json";

TEST(DefaultModel, GreedyGenerationMatchesTranscript) {
  std::ifstream tf(kTranscript);
  ASSERT_TRUE(tf) << kTranscript;
  const nlohmann::json tr = nlohmann::json::parse(tf);
  std::string err;
  auto m = model::load(kModel, {}, &err);
  ASSERT_TRUE(m) << err;
  auto tok = tokenizer::from_file(m->file(), &err);
  ASSERT_TRUE(tok) << err;

  // The prompt encodes to the transcript's ids (BOS first, as v4 run does).
  std::vector<int32_t> ids{tok->bos_id()};
  ASSERT_TRUE(tok->encode(tr["prompt"].get<std::string>(), false, &ids, &err)) << err;
  ASSERT_EQ(ids, tr["prompt_ids"].get<std::vector<int32_t>>());

  session_options so;  // v4 run's numerics (QAT on, compact rows) with an f32 cache, as the reference
  so.cache_type = dtype::f32;
  so.n_ctx = 256;
  so.n_threads = 1;
  auto s = session::create(*m, so, &err);
  ASSERT_TRUE(s) << err;

  // Teacher-forced, token by token: after the prompt and each transcript token, our greedy pick
  // must be the transcript's next token. With FP8 activation quantization two correct
  // implementations differ by a few hundredths of a logit (e4m3 rounding flips, see
  // docs/MODEL.md), so positions where the reference's own top-2 margin is below kTooClose are
  // reported, not required; every other position must match exactly.
  constexpr double kTooClose = 0.1;
  const auto want = tr["generated_ids"].get<std::vector<int32_t>>();
  const auto margin = tr["margins"].get<std::vector<double>>();
  ASSERT_EQ(margin.size(), want.size());
  std::vector<float> logits;
  ASSERT_TRUE(s->eval(ids.data(), int64_t(ids.size()), false, &logits, &err)) << err;
  sampler_params sp;
  sp.temperature = 0;
  sampler greedy(sp);
  int checked = 0, close_calls = 0;
  std::string ours;
  for (size_t i = 0; i < want.size(); ++i) {
    const int32_t pick = greedy.sample(logits.data(), int32_t(m->hp().vocab_size));
    ours += tok->decode({pick});
    if (margin[i] >= kTooClose) {
      EXPECT_EQ(pick, want[i]) << "position " << i << " (reference margin " << margin[i] << ")";
      ++checked;
    } else if (pick != want[i]) {
      ++close_calls;
    }
    ASSERT_TRUE(s->eval(&want[i], 1, false, &logits, &err)) << err;
  }
  std::printf("default model vs PyTorch transcript: %d/%zu positions checked and equal; %d of the rest picked "
              "the other near-tied token\n", checked, want.size(), close_calls);
  EXPECT_GE(checked, int(want.size()) * 3 / 4);
  EXPECT_EQ(tok->decode(want), tr["generated_text"].get<std::string>());
}

}  // namespace
}  // namespace v4::model

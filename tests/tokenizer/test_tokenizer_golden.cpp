// Our ids against Hugging Face `tokenizers` on the committed corpus (tests/tokenizer/make_goldens.py):
// the official DeepSeek-V4 tokenizer and a small ByteLevel BPE trained with `tokenizers`.
#include "tests/tokenizer/tok_data.h"

namespace v4::model::testing {
namespace {

// Every string: identical ids with and without special-token parsing, and decode(encode(x)) == x.
void check_corpus(const tokenizer& t, const std::vector<golden>& corpus) {
  ASSERT_GE(corpus.size(), 100u);
  size_t bad = 0, with_nospecial = 0;
  for (const golden& g : corpus) {
    const std::vector<int32_t> ids = encode(t, g.text, true), ids_ns = encode(t, g.text, false);
    with_nospecial += ids_ns != ids;
    const bool ok = ids == g.ids && ids_ns == g.ids_nospecial && t.decode(ids) == g.text && t.decode(ids_ns) == g.text;
    if (!ok && ++bad <= 5)
      ADD_FAILURE() << "text '" << g.text << "'\n  ours " << show(ids) << "\n  HF   " << show(g.ids)
                    << "\n  ours (no special) " << show(ids_ns) << "\n  HF   (no special) " << show(g.ids_nospecial)
                    << "\n  decode '" << t.decode(ids) << "'";
  }
  EXPECT_EQ(bad, 0u) << "of " << corpus.size() << " strings";
  EXPECT_GT(with_nospecial, 0u) << "the corpus should contain special tokens";
}

TEST(TokenizerGolden, V4CorpusMatchesHuggingFace) {
  const tokenizer* t = v4_tokenizer();
  ASSERT_TRUE(t);
  const auto corpus = read_goldens("corpus_v4.jsonl.zst");
  EXPECT_GE(corpus.size(), 10000u);
  check_corpus(*t, corpus);
}

TEST(TokenizerGolden, SmallTrainedBpeMatchesHuggingFace) {
  std::string error;
  const auto t = tokenizer::from_hf_json(read_data("small_bpe.json"), "", &error);
  ASSERT_TRUE(t) << error;
  EXPECT_LE(t->n_vocab(), 512);
  check_corpus(*t, read_goldens("corpus_small.jsonl.zst"));
}

// The two vectors of research §5 (from an independent implementation of the V4 file).
TEST(TokenizerGolden, ResearchVectors) {
  const tokenizer* t = v4_tokenizer();
  ASSERT_TRUE(t);
  EXPECT_EQ(encode(*t, "<｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>"),
            (std::vector<int32_t>{128803, 30594, 128804, 128821, 36101, 128822, 7624, 1}));
  EXPECT_EQ(encode(*t, "Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ"),
            (std::vector<int32_t>{19923, 3,   223,   5464, 5008,  1175, 19, 940, 223, 19,    438, 223,   20,
                                  6113,  257, 76589, 131,  100,   76032, 1628, 76589, 131,  108, 76589, 131, 98}));
}

TEST(TokenizerGolden, V4Facts) {
  const tokenizer* t = v4_tokenizer();
  ASSERT_TRUE(t);
  EXPECT_EQ(t->n_vocab(), 129280);
  EXPECT_EQ(t->bos_id(), 0);
  EXPECT_EQ(t->eos_id(), 1);
  EXPECT_EQ(t->token_id("<｜User｜>"), 128803);
  EXPECT_EQ(t->token_id("</think>"), 128822);
  EXPECT_EQ(t->token_id("｜DSML｜"), 128825);
  EXPECT_EQ(t->token_id("no such token"), -1);
  EXPECT_EQ(t->token_text(128804), "<｜Assistant｜>");
  EXPECT_TRUE(t->is_special(0));
  EXPECT_FALSE(t->is_special(128821));  // <think> is an added token, not a special one
  EXPECT_EQ(t->chat_template(), "");    // V4 ships no Jinja template
  // skip_special drops only special tokens.
  EXPECT_EQ(t->decode({0, 128821, 19923, 1}, true), "<think>Hello");
  EXPECT_EQ(t->decode({0, 128821, 19923, 1}, false), "<｜begin▁of▁sentence｜><think>Hello<｜end▁of▁sentence｜>");
}

}  // namespace
}  // namespace v4::model::testing

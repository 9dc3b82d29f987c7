// Token sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeded RNG.
//
// Order (as llama.cpp's default chain, so settings mean the same thing):
//   repetition penalty over the last `repeat_last_n` accepted tokens
//   -> top-k -> top-p (on probabilities at temperature 1) -> min-p -> temperature -> draw.
// temperature <= 0 is greedy (argmax after the penalty; ties to the lower id).
// The same seed, settings and logits give the same tokens on every machine (the draw uses a
// portable 64-bit generator and a uniform double built from its top 53 bits).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace v4::model {

struct sampler_params {
  float temperature = 0.8f;
  int32_t top_k = 40;         // <= 0: off
  float top_p = 0.95f;        // >= 1: off
  float min_p = 0.05f;        // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int32_t repeat_last_n = 64;
  uint64_t seed = 0;

  // A message naming the field when a value is out of range (negative temperature, top_p
  // outside (0, 1], min_p outside [0, 1], penalty <= 0, ...); empty when valid.
  std::string check() const;
};

class sampler {
 public:
  explicit sampler(const sampler_params& p);
  // Picks a token from logits[0..n_vocab). Does not record it (accept() does).
  int32_t sample(const float* logits, int32_t n_vocab);
  void accept(int32_t token);
  void reset();

 private:
  uint64_t next_u64();
  double next_double();

  sampler_params p_;
  uint64_t state_;
  std::deque<int32_t> recent_;
  std::vector<std::pair<float, int32_t>> cand_;  // scratch
};

}  // namespace v4::model

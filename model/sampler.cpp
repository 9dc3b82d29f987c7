#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace v4::model {

std::string sampler_params::check() const {
  if (!(temperature >= 0) || !std::isfinite(temperature)) return "temperature must be >= 0 (0 = greedy)";
  if (!(top_p > 0 && top_p <= 1)) return "top_p must be in (0, 1]";
  if (!(min_p >= 0 && min_p <= 1)) return "min_p must be in [0, 1]";
  if (!(repeat_penalty > 0) || !std::isfinite(repeat_penalty)) return "repeat_penalty must be > 0 (1 = off)";
  if (repeat_last_n < 0) return "repeat_last_n must be >= 0";
  return "";
}

sampler::sampler(const sampler_params& p) : p_(p) { reset(); }

void sampler::reset() {
  state_ = p_.seed ^ 0x9E3779B97F4A7C15ull;
  recent_.clear();
}

// splitmix64: tiny, portable, good enough for sampling.
uint64_t sampler::next_u64() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
double sampler::next_double() { return double(next_u64() >> 11) * (1.0 / 9007199254740992.0); }

void sampler::accept(int32_t token) {
  if (p_.repeat_last_n <= 0) return;
  recent_.push_back(token);
  while (recent_.size() > size_t(p_.repeat_last_n)) recent_.pop_front();
}

int32_t sampler::sample(const float* logits, int32_t n_vocab) {
  cand_.resize(size_t(n_vocab));
  for (int32_t i = 0; i < n_vocab; ++i) cand_[size_t(i)] = {logits[i], i};
  if (p_.repeat_penalty != 1.0f && !recent_.empty()) {
    std::unordered_set<int32_t> seen(recent_.begin(), recent_.end());
    for (int32_t t : seen) {
      if (t < 0 || t >= n_vocab) continue;
      float& l = cand_[size_t(t)].first;
      l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
    }
  }
  // Highest logit first; equal logits keep the lower id first.
  auto better = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  if (p_.temperature <= 0) return std::min_element(cand_.begin(), cand_.end(), better)->second;

  size_t n = cand_.size();
  if (p_.top_k > 0 && size_t(p_.top_k) < n) {
    std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), better);
    n = size_t(p_.top_k);
  } else {
    std::sort(cand_.begin(), cand_.end(), better);
  }
  // Probabilities at temperature 1 for top-p and min-p.
  std::vector<double> prob(n);
  const double mx = cand_[0].first;
  double z = 0;
  for (size_t i = 0; i < n; ++i) z += prob[i] = std::exp(double(cand_[i].first) - mx);
  for (double& q : prob) q /= z;
  if (p_.top_p < 1.0f) {
    double acc = 0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      acc += prob[i];
      if (acc >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
  }
  if (p_.min_p > 0) {
    const double floor = prob[0] * p_.min_p;
    size_t keep = 1;
    while (keep < n && prob[keep] >= floor) ++keep;
    n = keep;
  }
  // Temperature, then draw.
  double total = 0;
  std::vector<double> w(n);
  for (size_t i = 0; i < n; ++i) total += w[i] = std::exp((double(cand_[i].first) - mx) / p_.temperature);
  double r = next_double() * total;
  for (size_t i = 0; i < n; ++i) {
    r -= w[i];
    if (r < 0) return cand_[i].second;
  }
  return cand_[n - 1].second;
}

}  // namespace v4::model

// The tokenizer: building its tables from a spec (with validation), encode, decode.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "model/tokenizer.h"

#include <atomic>
#include <cstdio>
#include <memory>
#include <queue>

#include "model/tokenizer_impl.h"

namespace v4::model {

// ---- byte-level alphabet and UTF-8 ------------------------------------------------------------
uint32_t byte_to_codepoint(uint8_t b) {
  const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
  if (printable) return b;
  // The other bytes, in order, get U+0100, U+0101, ...
  uint32_t n = 0;
  for (uint32_t c = 0; c < b; ++c)
    if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174)) ++n;
  return 256 + n;
}

size_t utf8_sequence_length(const unsigned char* s, size_t n) {
  const unsigned char c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  uint32_t min;
  if ((c & 0xE0) == 0xC0) len = 2, min = 0x80;
  else if ((c & 0xF0) == 0xE0) len = 3, min = 0x800;
  else if ((c & 0xF8) == 0xF0) len = 4, min = 0x10000;
  else return 0;
  if (n < len) return 0;
  uint32_t cp = c & (0x7F >> len);
  for (size_t i = 1; i < len; ++i) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;  // overlong, surrogate
  return len;
}

namespace {

// Code point at s[i] (valid UTF-8 assumed), advancing i.
uint32_t next_codepoint(std::string_view s, size_t* i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + *i;
  const size_t len = utf8_sequence_length(p, s.size() - *i);
  if (len == 0) {
    ++*i;
    return 0xFFFFFFFF;
  }
  uint32_t cp = len == 1 ? p[0] : p[0] & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) cp = cp << 6 | (p[k] & 0x3F);
  *i += len;
  return cp;
}

const std::unordered_map<uint32_t, uint8_t>& codepoint_to_byte() {
  static const auto* m = [] {
    auto* r = new std::unordered_map<uint32_t, uint8_t>();
    for (int b = 0; b < 256; ++b) (*r)[byte_to_codepoint(uint8_t(b))] = uint8_t(b);
    return r;
  }();
  return *m;
}

void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    *out += char(cp);
  } else if (cp < 0x800) {
    *out += char(0xC0 | cp >> 6);
    *out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out += char(0xE0 | cp >> 12);
    *out += char(0x80 | (cp >> 6 & 0x3F));
    *out += char(0x80 | (cp & 0x3F));
  } else {
    *out += char(0xF0 | cp >> 18);
    *out += char(0x80 | (cp >> 12 & 0x3F));
    *out += char(0x80 | (cp >> 6 & 0x3F));
    *out += char(0x80 | (cp & 0x3F));
  }
}

std::string quoted(std::string_view s) {
  std::string r = "'";
  for (char c : s.substr(0, 80)) r += (static_cast<unsigned char>(c) < 32) ? '?' : c;
  if (s.size() > 80) r += "...";
  return r + "'";
}

std::atomic<uint64_t> g_serial{1};

// True if s[0..n) is a proper prefix of some valid UTF-8 sequence (more bytes could complete it).
bool utf8_could_continue(const unsigned char* s, size_t n) {
  const unsigned char c = s[0];
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else return false;
  if (n >= len) return false;
  for (size_t k = 1; k < n; ++k) {
    const bool ok = k == 1 ? (s[k] >= lo && s[k] <= hi) : (s[k] & 0xC0) == 0x80;
    if (!ok) return false;
  }
  return true;
}

}  // namespace

bool byte_level_decode(std::string_view text, std::string* bytes) {
  bytes->clear();
  const auto& map = codepoint_to_byte();
  for (size_t i = 0; i < text.size();) {
    const auto it = map.find(next_codepoint(text, &i));
    if (it == map.end()) return false;
    *bytes += char(it->second);
  }
  return true;
}

// ---- added-token trie ---------------------------------------------------------------------------
void token_trie::add(std::string_view text, int32_t id) {
  int32_t node = 0;
  for (unsigned char c : text) {
    const uint64_t key = uint64_t(node) << 8 | c;
    auto it = next_.find(key);
    if (it == next_.end()) {
      it = next_.emplace(key, int32_t(ids_.size())).first;
      ids_.push_back(-1);
    }
    node = it->second;
  }
  ids_[node] = id;
  if (!text.empty()) first_[static_cast<unsigned char>(text[0])] = true;
}

bool token_trie::longest_at(std::string_view s, size_t at, match* m) const {
  if (!first_[static_cast<unsigned char>(s[at])]) return false;
  int32_t node = 0;
  bool found = false;
  for (size_t i = at; i < s.size(); ++i) {
    const auto it = next_.find(uint64_t(node) << 8 | static_cast<unsigned char>(s[i]));
    if (it == next_.end()) break;
    node = it->second;
    if (ids_[node] >= 0) *m = {at, i + 1, ids_[node]}, found = true;
  }
  return found;
}

tokenizer_impl::~tokenizer_impl() {
  for (pcre2_code* c : regexes) pcre2_code_free(c);
}

// ---- per-thread state: regex match data and the BPE cache ----------------------------------------
namespace {

constexpr size_t kCacheMaxWordBytes = 64;   // longer words are rare; not worth caching
constexpr size_t kCacheMaxEntries = 1 << 18;

struct thread_state {
  std::vector<pcre2_match_data*> match_data;  // one per regex
  string_map<std::vector<int32_t>> cache;     // word bytes -> ids
  ~thread_state() {
    for (pcre2_match_data* m : match_data) pcre2_match_data_free(m);
  }
};

thread_state& state_for(const tokenizer_impl& t) {
  // Keyed by the tokenizer's serial (never reused), so a destroyed tokenizer's state is never
  // picked up by a new one at the same address; old entries are dropped when the map grows.
  thread_local std::unordered_map<uint64_t, std::unique_ptr<thread_state>> states;
  auto it = states.find(t.serial);
  if (it != states.end()) return *it->second;
  if (states.size() >= 8) states.clear();
  auto s = std::make_unique<thread_state>();
  for (pcre2_code* c : t.regexes) s->match_data.push_back(pcre2_match_data_create_from_pattern(c, nullptr));
  s->cache.reserve(4096);
  return *states.emplace(t.serial, std::move(s)).first->second;
}

// BPE of one word (its bytes): merges by rank, lowest first, leftmost first among equals (HF's
// priority queue orders by (rank, position)).
void bpe_merge(const tokenizer_impl& t, std::string_view word, std::vector<int32_t>* out) {
  struct symbol {
    int32_t id, prev, next;
    bool alive;
  };
  std::vector<symbol> sym;
  sym.reserve(word.size());
  for (unsigned char c : word) {
    const int32_t i = int32_t(sym.size());
    sym.push_back({t.byte_id[c], i - 1, i + 1, true});
  }
  sym.back().next = -1;

  struct candidate {
    int32_t rank, pos;
    bool operator>(const candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<candidate, std::vector<candidate>, std::greater<candidate>> queue;
  auto rule_of = [&](int32_t pos) -> const merge_rule* {
    const int32_t nx = sym[pos].next;
    if (nx < 0) return nullptr;
    const auto it = t.merges.find(uint64_t(uint32_t(sym[pos].id)) << 32 | uint32_t(sym[nx].id));
    return it == t.merges.end() ? nullptr : &it->second;
  };
  for (int32_t i = 0; i + 1 < int32_t(sym.size()); ++i)
    if (const merge_rule* r = rule_of(i)) queue.push({r->rank, i});

  while (!queue.empty()) {
    const candidate c = queue.top();
    queue.pop();
    if (!sym[c.pos].alive) continue;
    const merge_rule* r = rule_of(c.pos);
    if (!r || r->rank != c.rank) continue;  // stale: a neighbour changed since it was queued
    const int32_t right = sym[c.pos].next;
    sym[c.pos].id = r->result;
    sym[right].alive = false;
    sym[c.pos].next = sym[right].next;
    if (sym[right].next >= 0) sym[sym[right].next].prev = c.pos;
    if (const int32_t pv = sym[c.pos].prev; pv >= 0)
      if (const merge_rule* rp = rule_of(pv)) queue.push({rp->rank, pv});
    if (const merge_rule* rn = rule_of(c.pos)) queue.push({rn->rank, c.pos});
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out->push_back(sym[i].id);
}

void bpe_word(const tokenizer_impl& t, thread_state& ts, std::string_view word, std::vector<int32_t>* out) {
  if (word.size() == 1) {
    out->push_back(t.byte_id[static_cast<unsigned char>(word[0])]);
    return;
  }
  if (t.spec.ignore_merges) {
    const auto it = t.vocab_bytes.find(word);
    if (it != t.vocab_bytes.end()) {
      out->push_back(it->second);
      return;
    }
  }
  if (word.size() > kCacheMaxWordBytes) {
    bpe_merge(t, word, out);
    return;
  }
  const auto it = ts.cache.find(word);
  if (it != ts.cache.end()) {
    out->insert(out->end(), it->second.begin(), it->second.end());
    return;
  }
  const size_t first = out->size();
  bpe_merge(t, word, out);
  if (ts.cache.size() >= kCacheMaxEntries) ts.cache.clear();
  ts.cache.emplace(std::string(word), std::vector<int32_t>(out->begin() + first, out->end()));
}

// Splits s with regex `level` (Isolated: matches and the gaps between them are all pieces) and
// passes each piece on to the next level; after the last level each piece is a BPE word.
bool split_and_encode(const tokenizer_impl& t, thread_state& ts, size_t level, std::string_view s,
                      std::vector<int32_t>* out, std::string* error) {
  if (s.empty()) return true;
  if (level == t.regexes.size()) {
    bpe_word(t, ts, s, out);
    return true;
  }
  pcre2_match_data* md = ts.match_data[level];
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t done = 0, at = 0;
  while (at < s.size()) {
    const int rc = pcre2_jit_match(t.regexes[level], subject, s.size(), at, 0, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      if (error) *error = "pre-tokenizer regex " + std::to_string(level) + ": " + reinterpret_cast<char*>(msg);
      return false;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t begin = ov[0], end = ov[1];
    if (end == begin) {  // an empty match splits nothing; step over one character
      at = begin + std::max<size_t>(1, utf8_sequence_length(subject + begin, s.size() - begin));
      continue;
    }
    if (!split_and_encode(t, ts, level + 1, s.substr(done, begin - done), out, error)) return false;
    if (!split_and_encode(t, ts, level + 1, s.substr(begin, end - begin), out, error)) return false;
    done = at = end;
  }
  return split_and_encode(t, ts, level + 1, s.substr(done), out, error);
}

// Text between added tokens: valid UTF-8 runs go through the regexes; each invalid byte is a word
// of its own (the regex engine must only see valid UTF-8, and HF cannot hold such text at all).
bool encode_plain(const tokenizer_impl& t, thread_state& ts, std::string_view s, std::vector<int32_t>* out,
                  std::string* error) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t run = 0, i = 0;
  while (i < s.size()) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const size_t len = utf8_sequence_length(p + i, s.size() - i);
    if (len > 0) {
      i += len;
      continue;
    }
    if (!split_and_encode(t, ts, 0, s.substr(run, i - run), out, error)) return false;
    bpe_word(t, ts, s.substr(i, 1), out);
    run = ++i;
  }
  return split_and_encode(t, ts, 0, s.substr(run), out, error);
}

// The normalized added tokens (second pass), then plain text.
bool encode_normalized_pass(const tokenizer_impl& t, thread_state& ts, std::string_view s,
                            std::vector<int32_t>* out, std::string* error) {
  if (t.normalized_trie.empty()) return encode_plain(t, ts, s, out, error);
  size_t done = 0;
  token_trie::match m;
  for (size_t i = 0; i < s.size();) {
    if (!t.normalized_trie.longest_at(s, i, &m)) {
      ++i;
      continue;
    }
    if (!encode_plain(t, ts, s.substr(done, m.begin - done), out, error)) return false;
    out->push_back(m.id);
    done = i = m.end;
  }
  return encode_plain(t, ts, s.substr(done), out, error);
}

}  // namespace

// ---- construction ------------------------------------------------------------------------------
tokenizer::tokenizer() : impl_(std::make_unique<tokenizer_impl>()) {}
tokenizer::~tokenizer() = default;

std::unique_ptr<tokenizer> tokenizer::from_spec(tokenizer_spec spec, std::string* error) {
  auto fail = [&](const std::string& m) -> std::unique_ptr<tokenizer> {
    if (error) *error = m;
    return nullptr;
  };
  const size_t n = spec.tokens.size();
  if (n == 0) return fail("tokenizer: the vocabulary is empty");
  if (n > size_t(INT32_MAX)) return fail("tokenizer: absurd vocabulary size " + std::to_string(n));
  if (spec.flags.size() != n)
    return fail("tokenizer: " + std::to_string(spec.flags.size()) + " token flags for " + std::to_string(n) +
                " tokens");

  std::unique_ptr<tokenizer> tok(new tokenizer());
  tokenizer_impl& t = *tok->impl_;
  t.serial = g_serial.fetch_add(1);
  t.bytes.resize(n);
  t.text_to_id.reserve(n);
  for (size_t id = 0; id < n; ++id) {
    const std::string& text = spec.tokens[id];
    const uint8_t f = spec.flags[id];
    const std::string at = "token " + std::to_string(id) + " " + quoted(text);
    if (f & ~tokenizer_spec::kAllFlags) return fail(at + ": unknown flag bits " + std::to_string(f));
    if (f == 0) {
      if (!text.empty()) return fail(at + ": has text but no flags (unused ids have empty text)");
      continue;
    }
    if (text.empty()) return fail("token " + std::to_string(id) + ": empty text");
    if ((f & (tokenizer_spec::special | tokenizer_spec::normalized)) && !(f & tokenizer_spec::added))
      return fail(at + ": special/normalized flags on a token that is not an added token");
    if (!t.text_to_id.emplace(text, int32_t(id)).second)
      return fail(at + ": duplicate token (also id " + std::to_string(t.text_to_id[text]) + ")");
    // Decoding follows HF's ByteLevel decoder: a token all of whose characters are in the
    // byte-level alphabet stands for those bytes; any other token for its own UTF-8 text.
    const bool byte_level = byte_level_decode(text, &t.bytes[id]);
    if (byte_level) {
      if (f & tokenizer_spec::in_vocab) t.vocab_bytes.emplace(t.bytes[id], int32_t(id));
    } else if ((f & tokenizer_spec::in_vocab) && !(f & tokenizer_spec::added)) {
      // (V3/V4 also list their first special tokens in the vocab: those are added tokens too.)
      return fail(at + ": a BPE vocab token with a character outside the byte-level alphabet");
    } else {
      t.bytes[id] = text;
    }
    if (f & tokenizer_spec::added) {
      if (f & tokenizer_spec::normalized) t.normalized_trie.add(text, int32_t(id));
      else t.raw_trie.add(text, int32_t(id));
    }
  }
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    append_utf8(byte_to_codepoint(uint8_t(b)), &ch);
    const auto it = t.text_to_id.find(ch);
    if (it == t.text_to_id.end() || !(spec.flags[it->second] & tokenizer_spec::in_vocab)) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", b);
      return fail(std::string("tokenizer: the vocab has no token for byte ") + hex + " ('" + ch +
                  "'): not a byte-level BPE vocabulary");
    }
    t.byte_id[b] = it->second;
  }

  if (spec.merges.size() % 2 != 0) return fail("tokenizer: the merges list has an odd number of ids");
  const size_t n_merges = spec.merges.size() / 2;
  if (n_merges > size_t(INT32_MAX)) return fail("tokenizer: absurd merge count");
  t.merges.reserve(n_merges);
  for (size_t r = 0; r < n_merges; ++r) {
    const int32_t a = spec.merges[2 * r], b = spec.merges[2 * r + 1];
    const std::string at = "merge " + std::to_string(r);
    for (int32_t x : {a, b})
      if (x < 0 || size_t(x) >= n || !(spec.flags[x] & tokenizer_spec::in_vocab))
        return fail(at + ": id " + std::to_string(x) + " is not a BPE vocab token");
    const auto res = t.vocab_bytes.find(t.bytes[a] + t.bytes[b]);
    if (res == t.vocab_bytes.end())
      return fail(at + " (" + quoted(spec.tokens[a]) + " + " + quoted(spec.tokens[b]) +
                  "): the merged token is not in the vocab");
    const uint64_t key = uint64_t(uint32_t(a)) << 32 | uint32_t(b);
    if (!t.merges.emplace(key, merge_rule{int32_t(r), res->second}).second)
      return fail(at + " (" + quoted(spec.tokens[a]) + " + " + quoted(spec.tokens[b]) + "): duplicate merge");
  }

  for (size_t i = 0; i < spec.pre_regexes.size(); ++i) {
    const std::string& pat = spec.pre_regexes[i];
    int code = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(), PCRE2_UTF | PCRE2_UCP,
                                   &code, &offset, nullptr);
    if (!re) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(code, msg, sizeof msg);
      return fail("pre-tokenizer regex " + std::to_string(i) + " " + quoted(pat) + " does not compile: " +
                  reinterpret_cast<char*>(msg) + " (at offset " + std::to_string(offset) + ")");
    }
    t.regexes.push_back(re);
    if (const int jrc = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); jrc != 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(jrc, msg, sizeof msg);
      return fail("pre-tokenizer regex " + std::to_string(i) + ": PCRE2 JIT compilation failed: " +
                  reinterpret_cast<char*>(msg));
    }
  }
  for (int32_t id : {spec.bos_id, spec.eos_id})
    if (id < -1 || (id >= 0 && (size_t(id) >= n || spec.flags[id] == 0)))
      return fail("tokenizer: bos/eos id " + std::to_string(id) + " is not a token");
  t.spec = std::move(spec);
  return tok;
}

// ---- encode / decode ---------------------------------------------------------------------------
bool tokenizer::encode(std::string_view text, bool parse_special, std::vector<int32_t>* ids,
                       std::string* error) const {
  const tokenizer_impl& t = *impl_;
  thread_state& ts = state_for(t);
  if (t.raw_trie.empty()) return encode_normalized_pass(t, ts, text, ids, error);
  // First pass: the added tokens that are not normalized, leftmost-longest over all of them; with
  // parse_special = false a special match is dropped (its text stays plain), as HF does.
  size_t done = 0;
  token_trie::match m;
  for (size_t i = 0; i < text.size();) {
    if (!t.raw_trie.longest_at(text, i, &m)) {
      ++i;
      continue;
    }
    i = m.end;
    if (!parse_special && (t.spec.flags[m.id] & tokenizer_spec::special)) continue;
    if (!encode_normalized_pass(t, ts, text.substr(done, m.begin - done), ids, error)) return false;
    ids->push_back(m.id);
    done = m.end;
  }
  return encode_normalized_pass(t, ts, text.substr(done), ids, error);
}

std::string_view tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || size_t(id) >= impl_->bytes.size()) return {};
  return impl_->bytes[id];
}

std::string tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  out.reserve(ids.size() * 4);  // ~3-4 bytes per token on average
  for (int32_t id : ids) {
    if (skip_special && is_special(id)) continue;
    out += token_bytes(id);
  }
  return out;
}

std::string tokenizer::stream_decoder::push(int32_t id) {
  if (skip_special_ && tok_.is_special(id)) return {};
  pending_ += tok_.token_bytes(id);
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(pending_.data());
  const size_t n = pending_.size();
  size_t i = 0;
  while (i < n) {
    const size_t len = utf8_sequence_length(p + i, n - i);
    if (len > 0) {
      out.append(pending_, i, len);
      i += len;
      continue;
    }
    // Invalid here: either a sequence cut off by the end of what we have (wait for more bytes),
    // or bytes that no continuation can fix (emit U+FFFD for the first and go on).
    if (utf8_could_continue(p + i, n - i)) break;
    out += "\xEF\xBF\xBD";
    ++i;
  }
  pending_.erase(0, i);
  return out;
}

std::string tokenizer::stream_decoder::flush() {
  std::string out = pending_.empty() ? "" : "\xEF\xBF\xBD";
  pending_.clear();
  return out;
}

// ---- accessors ---------------------------------------------------------------------------------
int32_t tokenizer::n_vocab() const { return int32_t(impl_->spec.tokens.size()); }
int32_t tokenizer::bos_id() const { return impl_->spec.bos_id; }
int32_t tokenizer::eos_id() const { return impl_->spec.eos_id; }
bool tokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < impl_->spec.flags.size() && (impl_->spec.flags[id] & tokenizer_spec::special);
}
std::string tokenizer::token_text(int32_t id) const {
  if (id < 0 || size_t(id) >= impl_->spec.tokens.size()) return {};
  return impl_->spec.tokens[id];
}
int32_t tokenizer::token_id(std::string_view text) const {
  const auto it = impl_->text_to_id.find(text);
  return it == impl_->text_to_id.end() ? -1 : it->second;
}
const std::string& tokenizer::chat_template() const { return impl_->spec.chat_template; }
const tokenizer_spec& tokenizer::spec() const { return impl_->spec; }

}  // namespace v4::model

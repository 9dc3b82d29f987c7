// The C API (v4.h) over the C++ model, session, tokenizer and sampler. Every entry point checks
// its arguments, catches everything (no exception crosses the C boundary) and records the
// message for v4_last_error().
#include "model/v4.h"

#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "backends/backends.h"
#include "model/chat_format.h"
#include "model/model.h"
#include "model/sampler.h"
#include "model/session.h"
#include "model/tokenizer.h"

struct v4_model {
  std::unique_ptr<v4::model::model> m;
  std::unique_ptr<v4::model::tokenizer> tok;
  std::string desc;
  std::string placement;
};

struct v4_context {
  const v4_model* model = nullptr;
  std::unique_ptr<v4::model::session> s;
  std::vector<float> logits;  // of the last eval
  int64_t n_logits = 0;       // rows in logits
};

struct v4_sampler {
  std::unique_ptr<v4::model::sampler> s;
};

namespace {

thread_local std::string g_error;

v4_status fail(v4_status st, const std::string& msg) {
  g_error = msg;
  return st;
}

// Sorts a library error message into a status by what it says.
v4_status classify(const std::string& msg) {
  if (msg.find("cancel") != std::string::npos) return V4_ERR_CANCELLED;
  if (msg.find("cannot open") != std::string::npos || msg.find("No such file") != std::string::npos ||
      msg.find("cannot read") != std::string::npos)
    return V4_ERR_IO;
  if (msg.find("out of memory") != std::string::npos) return V4_ERR_OUT_OF_MEMORY;
  if (msg.find("context size") != std::string::npos) return V4_ERR_CONTEXT_FULL;
  if (msg.find("not supported") != std::string::npos || msg.find("unsupported") != std::string::npos)
    return V4_ERR_UNSUPPORTED;
  return V4_ERR_FORMAT;
}

template <class F>
v4_status guarded(F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return fail(V4_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(V4_ERR_INTERNAL, std::string("internal error: ") + e.what());
  } catch (...) {
    return fail(V4_ERR_INTERNAL, "internal error");
  }
}

v4_status copy_out(const void* src, size_t n, size_t elem, void* dst, size_t cap, size_t* n_out) {
  if (n_out) *n_out = n;
  if (n > cap) return fail(V4_ERR_BUFFER_TOO_SMALL, "buffer too small: " + std::to_string(n) + " needed");
  if (n) std::memcpy(dst, src, n * elem);
  return V4_OK;
}

std::string describe(const v4::model::model& m) {
  const auto& hp = m.hp();
  uint64_t params = 0;
  for (const auto& t : m.file().tensors())
    if (t.d.type != v4::dtype::e8m0) params += uint64_t(t.d.ne[0]) * t.d.ne[1] * t.d.ne[2] * t.d.ne[3];
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s, %lld layers, hidden %lld, %lld experts (top %lld), %.1fM parameters",
                hp.architecture.c_str(), (long long)hp.n_layers, (long long)hp.hidden_size,
                (long long)hp.n_experts, (long long)hp.n_experts_used, params / 1e6);
  return buf;
}

}  // namespace

extern "C" {

const char* v4_last_error(void) { return g_error.c_str(); }

const char* v4_status_name(v4_status s) {
  switch (s) {
    case V4_OK: return "ok";
    case V4_ERR_INVALID_ARGUMENT: return "invalid argument";
    case V4_ERR_IO: return "i/o error";
    case V4_ERR_FORMAT: return "bad format";
    case V4_ERR_UNSUPPORTED: return "unsupported";
    case V4_ERR_OUT_OF_MEMORY: return "out of memory";
    case V4_ERR_CANCELLED: return "cancelled";
    case V4_ERR_CONTEXT_FULL: return "context full";
    case V4_ERR_BUFFER_TOO_SMALL: return "buffer too small";
    case V4_ERR_NO_TOKENIZER: return "no tokenizer";
    case V4_ERR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

const char* v4_version(void) { return "0.1.0"; }

v4_model_params v4_model_default_params(void) {
  v4_model_params p{};
  p.n_gpu_layers = -1;
  return p;
}

v4_status v4_model_load(const char* path, const v4_model_params* params, v4_model** out) {
  return guarded([&] {
    if (!path || !out) return fail(V4_ERR_INVALID_ARGUMENT, "v4_model_load: path and out must not be NULL");
    *out = nullptr;
    v4::backends::init();
    const v4_model_params p = params ? *params : v4_model_default_params();
    v4::model::load_options lo;
    lo.verify = p.verify != 0;
    lo.place.n_gpu_layers = p.n_gpu_layers;
    lo.place.n_cpu_moe = p.n_cpu_moe;
    if (p.tensor_overrides) lo.place.overrides = v4::model::split_overrides(p.tensor_overrides);
    if (p.device) lo.place.accelerator = p.device;
    {  // placement options are the caller's arguments: refuse bad ones as such, before loading
      v4::model::placement check;
      std::string perr;
      if (!check.init(lo.place, 0, &perr)) return fail(V4_ERR_INVALID_ARGUMENT, perr);
    }
    if (p.progress) {
      lo.progress = [&](uint64_t done, uint64_t total) {
        return p.progress(total ? float(double(done) / double(total)) : 1.0f, p.progress_user) != 0;
      };
    }
    std::string err;
    auto m = v4::model::model::load(path, lo, &err);
    if (!m) return fail(classify(err), err);
    auto h = std::make_unique<v4_model>();
    if (m->file().find_meta("tokenizer.tokens")) {
      h->tok = v4::model::tokenizer::from_file(m->file(), &err);
      if (!h->tok) return fail(V4_ERR_FORMAT, err);
    }
    h->desc = describe(*m);
    for (const auto& pb : m->placed()) {
      if (pb.n_tensors == 0) continue;
      char buf[160];
      std::snprintf(buf, sizeof(buf), "%s%s %.1f MiB (%d tensors)", h->placement.empty() ? "" : ", ", pb.dev->name(),
                    double(pb.bytes) / 1048576.0, pb.n_tensors);
      h->placement += buf;
    }
    h->m = std::move(m);
    *out = h.release();
    return V4_OK;
  });
}

void v4_model_free(v4_model* model) { delete model; }

const char* v4_model_placement(const v4_model* m) { return m ? m->placement.c_str() : ""; }
int v4_model_offloaded(const v4_model* m) { return m && m->m->accelerator() ? 1 : 0; }

int32_t v4_model_n_vocab(const v4_model* m) { return m ? int32_t(m->m->hp().vocab_size) : 0; }
int32_t v4_model_n_layers(const v4_model* m) { return m ? int32_t(m->m->hp().n_layers) : 0; }
int32_t v4_model_bos(const v4_model* m) { return m ? m->m->hp().bos_id : -1; }
int32_t v4_model_eos(const v4_model* m) { return m ? m->m->hp().eos_id : -1; }
const char* v4_model_desc(const v4_model* m) { return m ? m->desc.c_str() : ""; }
int v4_model_has_tokenizer(const v4_model* m) { return m && m->tok ? 1 : 0; }

v4_status v4_tokenize(const v4_model* m, const char* text, size_t len, int parse_special, int32_t* ids, size_t cap,
                      size_t* n_out) {
  return guarded([&] {
    if (!m || (!text && len) || (!ids && cap)) return fail(V4_ERR_INVALID_ARGUMENT, "v4_tokenize: NULL argument");
    if (!m->tok) return fail(V4_ERR_NO_TOKENIZER, "this model file has no tokenizer: re-convert it with tokenizer.json in the checkpoint directory, or pass token ids");
    std::vector<int32_t> v;
    std::string err;
    if (!m->tok->encode(std::string_view(text ? text : "", len), parse_special != 0, &v, &err))
      return fail(V4_ERR_INTERNAL, err);
    return copy_out(v.data(), v.size(), sizeof(int32_t), ids, cap, n_out);
  });
}

v4_status v4_detokenize(const v4_model* m, const int32_t* ids, size_t n, int skip_special, char* buf, size_t cap,
                        size_t* n_out) {
  return guarded([&] {
    if (!m || (!ids && n) || (!buf && cap)) return fail(V4_ERR_INVALID_ARGUMENT, "v4_detokenize: NULL argument");
    if (!m->tok) return fail(V4_ERR_NO_TOKENIZER, "this model file has no tokenizer");
    const std::string s = m->tok->decode(std::vector<int32_t>(ids, ids + n), skip_special != 0);
    return copy_out(s.data(), s.size(), 1, buf, cap, n_out);
  });
}

v4_status v4_token_piece(const v4_model* m, int32_t id, char* buf, size_t cap, size_t* n_out) {
  return guarded([&] {
    if (!m || (!buf && cap)) return fail(V4_ERR_INVALID_ARGUMENT, "v4_token_piece: NULL argument");
    if (!m->tok) return fail(V4_ERR_NO_TOKENIZER, "this model file has no tokenizer");
    if (id < 0 || id >= m->tok->n_vocab()) return fail(V4_ERR_INVALID_ARGUMENT, "token id " + std::to_string(id) + " out of range");
    const std::string_view s = m->tok->token_bytes(id);
    return copy_out(s.data(), s.size(), 1, buf, cap, n_out);
  });
}

v4_status v4_chat_format(const char* conversation_json, int thinking, char* buf, size_t cap, size_t* n_out) {
  return guarded([&] {
    if (!conversation_json || (!buf && cap)) return fail(V4_ERR_INVALID_ARGUMENT, "v4_chat_format: NULL argument");
    v4::model::chat_options co;
    co.thinking = thinking != 0;
    std::string prompt, err;
    if (!v4::model::render_chat_json(conversation_json, co, &prompt, &err)) return fail(V4_ERR_INVALID_ARGUMENT, err);
    return copy_out(prompt.data(), prompt.size(), 1, buf, cap, n_out);
  });
}

v4_context_params v4_context_default_params(void) {
  const v4::model::session_options d;
  return v4_context_params{d.n_ctx, d.n_batch, d.n_threads, d.qat ? 1 : 0};
}

v4_status v4_context_create(const v4_model* m, const v4_context_params* params, v4_context** out) {
  return guarded([&] {
    if (!m || !out) return fail(V4_ERR_INVALID_ARGUMENT, "v4_context_create: NULL argument");
    *out = nullptr;
    const v4_context_params p = params ? *params : v4_context_default_params();
    if (p.n_ctx < 1 || p.n_batch < 1 || p.n_threads < 0)
      return fail(V4_ERR_INVALID_ARGUMENT, "v4_context_create: n_ctx and n_batch must be >= 1, n_threads >= 0");
    v4::model::session_options so;
    so.n_ctx = p.n_ctx;
    so.n_batch = p.n_batch;
    so.n_threads = p.n_threads;
    so.qat = p.qat != 0;
    std::string err;
    auto c = std::make_unique<v4_context>();
    c->model = m;
    c->s = v4::model::session::create(*m->m, so, &err);
    if (!c->s) return fail(classify(err), err);
    *out = c.release();
    return V4_OK;
  });
}

void v4_context_free(v4_context* ctx) { delete ctx; }

v4_status v4_eval(v4_context* ctx, const int32_t* tokens, size_t n, int all_logits) {
  return guarded([&] {
    if (!ctx || (!tokens && n)) return fail(V4_ERR_INVALID_ARGUMENT, "v4_eval: NULL argument");
    if (n == 0) return fail(V4_ERR_INVALID_ARGUMENT, "v4_eval: no tokens");
    std::string err;
    ctx->n_logits = 0;
    if (!ctx->s->eval(tokens, int64_t(n), all_logits != 0, &ctx->logits, &err)) {
      const v4_status st = err.find("outside the vocabulary") != std::string::npos ? V4_ERR_INVALID_ARGUMENT
                                                                                   : classify(err);
      return fail(st, err);
    }
    ctx->n_logits = all_logits ? int64_t(n) : 1;
    return V4_OK;
  });
}

const float* v4_get_logits(const v4_context* ctx, int64_t i) {
  if (!ctx || ctx->n_logits == 0) return nullptr;
  if (i < 0) i = ctx->n_logits - 1;
  if (i >= ctx->n_logits) return nullptr;
  const size_t nv = size_t(ctx->model->m->hp().vocab_size);
  return ctx->logits.data() + size_t(i) * nv;
}

int64_t v4_n_past(const v4_context* ctx) { return ctx ? ctx->s->n_past() : 0; }
void v4_context_reset(v4_context* ctx) {
  if (!ctx) return;
  ctx->s->reset();
  ctx->n_logits = 0;
}
v4_status v4_context_set_dump(v4_context* ctx, const char* const* prefixes, size_t n, v4_dump_fn fn, void* user) {
  return guarded([&] {
    if (!ctx || (n && (!prefixes || !fn))) return fail(V4_ERR_INVALID_ARGUMENT, "v4_context_set_dump: NULL argument");
    std::vector<std::string> p;
    for (size_t i = 0; i < n; ++i) {
      if (!prefixes[i] || !*prefixes[i]) return fail(V4_ERR_INVALID_ARGUMENT, "v4_context_set_dump: empty prefix");
      p.emplace_back(prefixes[i]);
    }
    if (n == 0) {
      ctx->s->set_dump({}, nullptr);
      return V4_OK;
    }
    ctx->s->set_dump(std::move(p), [fn, user](const char* name, const int64_t* ne, const float* data, int64_t p0) {
      fn(name, ne, data, p0, user);
    });
    return V4_OK;
  });
}

size_t v4_context_state_bytes(const v4_context* ctx) { return ctx ? ctx->s->state_bytes() : 0; }

v4_sampler_params v4_sampler_default_params(void) {
  const v4::model::sampler_params d;
  return v4_sampler_params{d.temperature, d.top_k, d.top_p, d.min_p, d.repeat_penalty, d.repeat_last_n, d.seed};
}

v4_status v4_sampler_create(const v4_sampler_params* params, v4_sampler** out) {
  return guarded([&] {
    if (!out) return fail(V4_ERR_INVALID_ARGUMENT, "v4_sampler_create: out must not be NULL");
    *out = nullptr;
    const v4_sampler_params p = params ? *params : v4_sampler_default_params();
    v4::model::sampler_params sp;
    sp.temperature = p.temperature;
    sp.top_k = p.top_k;
    sp.top_p = p.top_p;
    sp.min_p = p.min_p;
    sp.repeat_penalty = p.repeat_penalty;
    sp.repeat_last_n = p.repeat_last_n;
    sp.seed = p.seed;
    const std::string bad = sp.check();
    if (!bad.empty()) return fail(V4_ERR_INVALID_ARGUMENT, "sampler: " + bad);
    auto s = std::make_unique<v4_sampler>();
    s->s = std::make_unique<v4::model::sampler>(sp);
    *out = s.release();
    return V4_OK;
  });
}

void v4_sampler_free(v4_sampler* s) { delete s; }

v4_status v4_sample(v4_sampler* s, const v4_context* ctx, int32_t* token) {
  return guarded([&] {
    if (!s || !ctx || !token) return fail(V4_ERR_INVALID_ARGUMENT, "v4_sample: NULL argument");
    const float* l = v4_get_logits(ctx, -1);
    if (!l) return fail(V4_ERR_INVALID_ARGUMENT, "v4_sample: no logits yet (call v4_eval first)");
    *token = s->s->sample(l, int32_t(ctx->model->m->hp().vocab_size));
    s->s->accept(*token);
    return V4_OK;
  });
}

}  // extern "C"

/* v4.h: the public C API of v4.cpp (libv4), for embedding DeepSeek-V4 inference.
 *
 * Conventions
 *  - Every function that can fail returns a v4_status; V4_OK is 0. On failure, v4_last_error()
 *    returns a message naming what was wrong (thread-local: the last failing call on this thread).
 *    Bad input never aborts the process.
 *  - Objects are opaque handles, created by *_create / *_load and released by *_free (which
 *    accept NULL). A model may be shared by several contexts; one context must not be used by
 *    two threads at once.
 *  - Token ids are int32_t. Text is UTF-8 (any bytes are accepted; byte-level BPE).
 *  - Output buffers: pass a buffer and its capacity; the function stores the size needed in
 *    *n_out. If the capacity is too small it returns V4_ERR_BUFFER_TOO_SMALL and writes nothing
 *    else, so a caller can call once with cap 0 to learn the size.
 */
#ifndef V4_H
#define V4_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(V4_SHARED)
#  define V4_API __declspec(dllexport)
#elif defined(__GNUC__)
#  define V4_API __attribute__((visibility("default")))
#else
#  define V4_API
#endif

typedef enum v4_status {
  V4_OK = 0,
  V4_ERR_INVALID_ARGUMENT = 1, /* a NULL handle, an out-of-range value, a bad token id */
  V4_ERR_IO = 2,               /* a file cannot be opened or read */
  V4_ERR_FORMAT = 3,           /* a file is malformed or does not match its config */
  V4_ERR_UNSUPPORTED = 4,      /* a valid config or type this build cannot run */
  V4_ERR_OUT_OF_MEMORY = 5,
  V4_ERR_CANCELLED = 6,        /* a progress callback returned false */
  V4_ERR_CONTEXT_FULL = 7,     /* evaluation would exceed n_ctx */
  V4_ERR_BUFFER_TOO_SMALL = 8,
  V4_ERR_NO_TOKENIZER = 9,     /* the model file has no tokenizer (convert with tokenizer.json) */
  V4_ERR_INTERNAL = 10
} v4_status;

V4_API const char* v4_last_error(void);
V4_API const char* v4_status_name(v4_status s);
V4_API const char* v4_version(void);

typedef struct v4_model v4_model;
typedef struct v4_context v4_context;
typedef struct v4_sampler v4_sampler;

/* ---- model ---------------------------------------------------------------------------------- */
/* progress in [0, 1]; return 0 to cancel the load (v4_model_load then returns V4_ERR_CANCELLED). */
typedef int (*v4_progress_fn)(float progress, void* user);

typedef struct v4_model_params {
  v4_progress_fn progress; /* may be NULL */
  void* progress_user;
  int verify;              /* nonzero: recompute every tensor checksum while loading */
  /* Partial offload (used only when an accelerator such as CUDA0 is present; docs/MODEL.md): */
  int32_t n_gpu_layers;    /* layers on the accelerator, counted from the last; -1 (default): all,
                              with the output head; 0: none */
  int32_t n_cpu_moe;       /* routed experts of the first N layers stay on the CPU; -1: all layers */
  const char* tensor_overrides; /* "REGEX=DEVICE[,REGEX=DEVICE...]" by canonical tensor name, first
                                   match wins (e.g. "ffn\\.experts=CPU"); NULL: none */
  const char* device;      /* accelerator name ("CUDA0"); NULL: the first one present */
} v4_model_params;

V4_API v4_model_params v4_model_default_params(void);
V4_API v4_status v4_model_load(const char* path, const v4_model_params* params, v4_model** out);
V4_API void v4_model_free(v4_model* model);

V4_API int32_t v4_model_n_vocab(const v4_model* model);
V4_API int32_t v4_model_n_layers(const v4_model* model);
V4_API int32_t v4_model_bos(const v4_model* model); /* -1 if none */
V4_API int32_t v4_model_eos(const v4_model* model);
/* A short description: "deepseek_v4, 6 layers, hidden 256, 8 experts (top 2), 16.1M parameters". */
V4_API const char* v4_model_desc(const v4_model* model);
V4_API int v4_model_has_tokenizer(const v4_model* model);
/* Where the weights are: "CPU 1234.5 MiB" or "CUDA0 3020.1 MiB (812 tensors), CPU 220.0 MiB (...)". */
V4_API const char* v4_model_placement(const v4_model* model);
/* Nonzero when some weights went to an accelerator (0: everything runs on the CPU). */
V4_API int v4_model_offloaded(const v4_model* model);

/* ---- tokenizer (needs a model file with a tokenizer) ------------------------------------------ */
/* parse_special: nonzero to turn special-token text (e.g. "<｜User｜>") into its id. */
V4_API v4_status v4_tokenize(const v4_model* model, const char* text, size_t len, int parse_special,
                             int32_t* ids, size_t cap, size_t* n_out);
/* The bytes of the tokens, concatenated (may end inside a UTF-8 character: see v4_token_piece). */
V4_API v4_status v4_detokenize(const v4_model* model, const int32_t* ids, size_t n, int skip_special,
                               char* buf, size_t cap, size_t* n_out);
/* The raw bytes of one token. */
V4_API v4_status v4_token_piece(const v4_model* model, int32_t id, char* buf, size_t cap, size_t* n_out);

/* The DeepSeek-V4 chat format (the official encoding_dsv4.py): conversation_json is a JSON array of
 * OpenAI-style messages, or {"messages": [...], "tools": [...]}. thinking: nonzero for thinking
 * mode (the prompt ends with <think>), else chat mode. The result starts with the BOS text; tokenize
 * it with parse_special = 1. Needs no model. */
V4_API v4_status v4_chat_format(const char* conversation_json, int thinking, char* buf, size_t cap, size_t* n_out);

/* ---- context: one sequence and its state ------------------------------------------------------- */
typedef struct v4_context_params {
  int64_t n_ctx;   /* most positions (default 4096) */
  int64_t n_batch; /* tokens per prefill graph (default 256) */
  int n_threads;   /* 0: all cores */
  int qat;         /* nonzero (default): the official numerics with the QAT round trips */
} v4_context_params;

V4_API v4_context_params v4_context_default_params(void);
V4_API v4_status v4_context_create(const v4_model* model, const v4_context_params* params, v4_context** out);
V4_API void v4_context_free(v4_context* ctx);
/* Runs n tokens at positions v4_n_past() .. . all_logits: keep the logits of every token
 * (for perplexity), else only the last one's. */
V4_API v4_status v4_eval(v4_context* ctx, const int32_t* tokens, size_t n, int all_logits);
/* Logits (n_vocab floats) of token i of the last v4_eval (i = -1: its last token); NULL if absent.
 * Valid until the next v4_eval or v4_context_reset. */
V4_API const float* v4_get_logits(const v4_context* ctx, int64_t i);
V4_API int64_t v4_n_past(const v4_context* ctx);
V4_API void v4_context_reset(v4_context* ctx);
/* Debugging: after each evaluated chunk, fn receives every intermediate whose name starts with one
 * of the prefixes ("L3.attn_out", "L0." for all of layer 0, "final_norm"; docs/MODEL.md lists
 * the names): f32 data of shape ne[0..3] (innermost first, e.g. [hidden, tokens]) and the chunk's
 * first position p0. n = 0 turns dumping off. */
typedef void (*v4_dump_fn)(const char* name, const int64_t ne[4], const float* data, int64_t p0, void* user);
V4_API v4_status v4_context_set_dump(v4_context* ctx, const char* const* prefixes, size_t n, v4_dump_fn fn,
                                     void* user);
/* Bytes of per-sequence state (KV rings, compressor state, compressed rows at n_ctx). */
V4_API size_t v4_context_state_bytes(const v4_context* ctx);

/* ---- sampling ------------------------------------------------------------------------------- */
typedef struct v4_sampler_params {
  float temperature;    /* 0: greedy (default 0.8) */
  int32_t top_k;        /* <= 0: off (default 40) */
  float top_p;          /* 1: off (default 0.95) */
  float min_p;          /* 0: off (default 0.05) */
  float repeat_penalty; /* 1: off (default 1) */
  int32_t repeat_last_n;/* default 64 */
  uint64_t seed;
} v4_sampler_params;

V4_API v4_sampler_params v4_sampler_default_params(void);
V4_API v4_status v4_sampler_create(const v4_sampler_params* params, v4_sampler** out);
V4_API void v4_sampler_free(v4_sampler* s);
/* Samples from the last logits of ctx, records the token in the sampler's history. */
V4_API v4_status v4_sample(v4_sampler* s, const v4_context* ctx, int32_t* token);

#ifdef __cplusplus
}
#endif

#endif /* V4_H */

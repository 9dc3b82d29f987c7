/* simple.c: generate text with libv4 through its C API (v4.h), in about 60 lines of C.
 *
 *   simple MODEL.v4 "Once upon a time" [N]
 *
 * Models without a tokenizer (tests, raw checkpoints) start from the BOS token and print ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "v4.h"

#define CHECK(call)                                                             \
  do {                                                                          \
    if ((call) != V4_OK) {                                                      \
      fprintf(stderr, "%s failed: %s\n", #call, v4_last_error());               \
      return 1;                                                                 \
    }                                                                           \
  } while (0)

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL.v4 PROMPT [N]\n", argv[0]);
    return 2;
  }
  const int n_predict = argc > 3 ? atoi(argv[3]) : 32;
  v4_model* model = NULL;
  CHECK(v4_model_load(argv[1], NULL, &model));
  v4_context* ctx = NULL;
  CHECK(v4_context_create(model, NULL, &ctx));
  v4_sampler_params sp = v4_sampler_default_params();
  sp.temperature = 0; /* greedy */
  v4_sampler* smp = NULL;
  CHECK(v4_sampler_create(&sp, &smp));

  int32_t prompt[512];
  size_t n = 0;
  const int text = v4_model_has_tokenizer(model);
  prompt[n++] = v4_model_bos(model) >= 0 ? v4_model_bos(model) : 0;
  if (text) {
    size_t more = 0;
    CHECK(v4_tokenize(model, argv[2], strlen(argv[2]), 0, prompt + 1, 511, &more));
    n += more;
  }
  CHECK(v4_eval(ctx, prompt, n, 0));
  printf("%s", text ? argv[2] : "");
  for (int i = 0; i < n_predict; ++i) {
    int32_t tok;
    CHECK(v4_sample(smp, ctx, &tok));
    if (tok == v4_model_eos(model)) break;
    if (text) {
      char piece[128];
      size_t len = 0;
      if (v4_token_piece(model, tok, piece, sizeof piece, &len) == V4_OK) fwrite(piece, 1, len, stdout);
    } else {
      printf("%d ", tok);
    }
    fflush(stdout);
    CHECK(v4_eval(ctx, &tok, 1, 0));
  }
  printf("\n");
  v4_sampler_free(smp);
  v4_context_free(ctx);
  v4_model_free(model);
  return 0;
}

# Included from tests/CMakeLists.txt (inside if(TARGET v4)).
# The tokenizer tests read zstd-compressed goldens.
find_package(PkgConfig REQUIRED)
if(TARGET test_tokenizer)
  if(NOT TARGET PkgConfig::ZSTD)
    pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET GLOBAL libzstd)
  endif()
  target_link_libraries(test_tokenizer PRIVATE PkgConfig::ZSTD)
endif()

# CLI runs (stdin through sh -c). The small BPE's ids were computed with HF tokenizers.
set(V4_TOK_SMALL ${V4_TEST_DATA}/tokenizer/small_bpe.json)
add_test(NAME cli.tokenize COMMAND sh -c "printf 'Hello world, 12345!' | $<TARGET_FILE:v4> tokenize --tokenizer ${V4_TOK_SMALL}")
set_tests_properties(cli.tokenize PROPERTIES PASS_REGULAR_EXPRESSION "^45 74 299 84 226 92 320 81 73 17 226 22 23 24 25 26 6\n$")
add_test(NAME cli.tokenize_special COMMAND sh -c "printf '<think>Hi</think>' | $<TARGET_FILE:v4> tokenize --special --tokenizer ${V4_TOK_SMALL}")
set_tests_properties(cli.tokenize_special PROPERTIES PASS_REGULAR_EXPRESSION "^4 45 78 5\n$")
add_test(NAME cli.tokenize_round_trip COMMAND sh -c
  "printf 'Grüße, 世界! <think>x</think>' | $<TARGET_FILE:v4> tokenize --tokenizer ${V4_TOK_SMALL} | $<TARGET_FILE:v4> detokenize --tokenizer ${V4_TOK_SMALL}")
set_tests_properties(cli.tokenize_round_trip PROPERTIES PASS_REGULAR_EXPRESSION "^Grüße, 世界! <think>x</think>")
add_test(NAME cli.detokenize_bad_id COMMAND sh -c "echo '1 2 99999' | $<TARGET_FILE:v4> detokenize --tokenizer ${V4_TOK_SMALL}")
set_tests_properties(cli.detokenize_bad_id PROPERTIES PASS_REGULAR_EXPRESSION "'99999' is not a token id")
add_test(NAME cli.tokenize_missing_file COMMAND v4 tokenize --tokenizer ${CMAKE_BINARY_DIR}/no-such-tokenizer.json)
set_tests_properties(cli.tokenize_missing_file PROPERTIES PASS_REGULAR_EXPRESSION "cannot read .*no-such-tokenizer.json")
add_test(NAME cli.tokenize_bad_json COMMAND v4 tokenize --tokenizer ${V4_TEST_DATA}/tokenizer/v4_tokenizer_config.json)
set_tests_properties(cli.tokenize_bad_json PROPERTIES PASS_REGULAR_EXPRESSION "model type .* is not supported")
add_test(NAME cli.chat_format COMMAND sh -c
  "printf '[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"Hi\"}]' | $<TARGET_FILE:v4> chat-format --thinking")
set_tests_properties(cli.chat_format PROPERTIES PASS_REGULAR_EXPRESSION "^<｜begin▁of▁sentence｜>S<｜User｜>Hi<｜Assistant｜><think>\n$")
add_test(NAME cli.chat_format_ids COMMAND sh -c
  "printf '[{\"role\":\"user\",\"content\":\"Hi\"}]' | $<TARGET_FILE:v4> chat-format --ids --tokenizer ${V4_TOK_SMALL}")
set_tests_properties(cli.chat_format_ids PROPERTIES PASS_REGULAR_EXPRESSION "^0 2 45 78 3 5\n$")
add_test(NAME cli.chat_format_bad COMMAND sh -c "printf '[{\"role\":\"robot\"}]' | $<TARGET_FILE:v4> chat-format")
set_tests_properties(cli.chat_format_bad PROPERTIES PASS_REGULAR_EXPRESSION "message 0: unknown role 'robot'")
add_test(NAME cli.bench_tokenizer_json COMMAND v4 bench tokenizer --tokenizer ${V4_TOK_SMALL}
  --file ${V4_TEST_DATA}/tokenizer/small_bpe.json --reps 2 --json)
set_tests_properties(cli.bench_tokenizer_json PROPERTIES PASS_REGULAR_EXPRESSION "\"encode_best_mb_s\":.*\"round_trip\":true")

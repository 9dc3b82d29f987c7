# v4 run / logits / perplexity on the tiny transformers checkpoint (no tokenizer: token ids).
set(V4_TINY ${CMAKE_CURRENT_BINARY_DIR}/forward-tiny.v4)
add_test(NAME cli.forward_convert_tiny
         COMMAND ${V4_CLI} convert ${V4_TEST_DATA}/forward/tiny -o ${V4_TINY} --force)
set_tests_properties(cli.forward_convert_tiny PROPERTIES FIXTURES_SETUP forward_tiny)

add_test(NAME cli.logits_tiny
         COMMAND ${V4_CLI} logits -m ${V4_TINY} --tokens 5,17,200,3 -o ${CMAKE_CURRENT_BINARY_DIR}/tiny-logits.f32 --qat off)
set_tests_properties(cli.logits_tiny PROPERTIES FIXTURES_REQUIRED forward_tiny
                     PASS_REGULAR_EXPRESSION "wrote 4 x 256 float32 logits")

add_test(NAME cli.run_tiny_ids COMMAND ${V4_CLI} run -m ${V4_TINY} --tokens 5,17,200 -n 8 --temp 0)
set_tests_properties(cli.run_tiny_ids PROPERTIES FIXTURES_REQUIRED forward_tiny
                     PASS_REGULAR_EXPRESSION "generation 8 tokens")

add_test(NAME cli.run_no_tokenizer COMMAND ${V4_CLI} run -m ${V4_TINY} -p "hello")
set_tests_properties(cli.run_no_tokenizer PROPERTIES FIXTURES_REQUIRED forward_tiny
                     PASS_REGULAR_EXPRESSION "has no tokenizer: pass the prompt as ids")

add_test(NAME cli.run_bad_token COMMAND ${V4_CLI} run -m ${V4_TINY} --tokens 5,999 -n 2)
set_tests_properties(cli.run_bad_token PROPERTIES FIXTURES_REQUIRED forward_tiny
                     PASS_REGULAR_EXPRESSION "token id 999 at index 1 is outside the vocabulary")

add_test(NAME cli.run_missing_model COMMAND ${V4_CLI} run -m ${CMAKE_CURRENT_BINARY_DIR}/nope.v4 --tokens 1)
set_tests_properties(cli.run_missing_model PROPERTIES PASS_REGULAR_EXPRESSION "cannot load .*nope.v4")

# Offload flags: accepted with llama.cpp's spellings, refused with a reason when wrong.
add_test(NAME cli.run_offload_flags
         COMMAND ${V4_CLI} run -m ${V4_TINY} --tokens 5,17 -n 2 --temp 0 -ngl 2 --n-cpu-moe 1 -ot "ffn\\.shared_experts=CPU")
set_tests_properties(cli.run_offload_flags PROPERTIES FIXTURES_REQUIRED forward_tiny
                     PASS_REGULAR_EXPRESSION "weights: CPU [0-9.]+ MiB")
# Without a GPU, GPU-only flags say they did nothing (CI has no GPU; skipped where one is used).
add_test(NAME cli.run_ngl_without_gpu COMMAND ${V4_CLI} run -m ${V4_TINY} --tokens 5 -n 1 --temp 0 -ngl 3)
set_tests_properties(cli.run_ngl_without_gpu PROPERTIES FIXTURES_REQUIRED forward_tiny
                     PASS_REGULAR_EXPRESSION "note: no GPU is in use|weights: CUDA")
add_test(NAME cli.run_bad_override COMMAND ${V4_CLI} run -m ${V4_TINY} --tokens 5 -ot "experts=NPU9")
set_tests_properties(cli.run_bad_override PROPERTIES FIXTURES_REQUIRED forward_tiny
                     PASS_REGULAR_EXPRESSION "device 'NPU9' is not available \\(devices here: .*CPU")
add_test(NAME cli.run_bad_device COMMAND ${V4_CLI} run -m ${V4_TINY} --tokens 5 --device CUDA9)
set_tests_properties(cli.run_bad_device PROPERTIES FIXTURES_REQUIRED forward_tiny
                     PASS_REGULAR_EXPRESSION "device 'CUDA9' is not available")

# The C example, linked against libv4.so and compiled as C.
if(TARGET simple)
  add_test(NAME example.simple_tiny COMMAND simple ${V4_TINY} "ignored" 5)
  set_tests_properties(example.simple_tiny PROPERTIES FIXTURES_REQUIRED forward_tiny
                       PASS_REGULAR_EXPRESSION "^[0-9]+ [0-9]+ [0-9]+ [0-9]+ [0-9]+ \n$")
endif()

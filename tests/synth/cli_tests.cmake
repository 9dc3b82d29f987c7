# v4 synth and v4 bench model (included from tests/CMakeLists.txt; V4_CLI, V4_TEST_DATA).
set(V4_SYNTH_OUT ${CMAKE_BINARY_DIR}/cli_synth)
file(MAKE_DIRECTORY ${V4_SYNTH_OUT})

# The tiny preset (every layer kind, an MTP layer) is a valid file with the official formats:
# 6 top-level tensors + 35 (sliding, hash) + 46 (CSA) + 39 (HCA) + 45 (MTP) = 171; FP8: 8 per
# layer + the indexer wq_b + MTP e/h_proj = 35; MXFP4: 3 per layer = 12...
add_test(NAME cli.synth_tiny COMMAND ${V4_CLI} synth --preset tiny --mtp 1 -o ${V4_SYNTH_OUT}/tiny.v4 --force)
set_tests_properties(cli.synth_tiny PROPERTIES FIXTURES_SETUP v4_synth_tiny
  PASS_REGULAR_EXPRESSION "v4 synth: wrote .*tiny.v4: 171 tensors.*fp8_e4m3 +35 tensors.*i32 +1 tensors.*mxfp4 +12 tensors")

add_test(NAME cli.synth_inspect COMMAND ${V4_CLI} inspect ${V4_SYNTH_OUT}/tiny.v4 --verify)
set_tests_properties(cli.synth_inspect PROPERTIES FIXTURES_REQUIRED v4_synth_tiny
  PASS_REGULAR_EXPRESSION "layers\\.0\\.ffn\\.gate\\.tid2eid +i32 +\\[2, 256\\].*layers\\.1\\.attn\\.wq_a\\.weight +fp8_e4m3 +\\[256, 96\\].*layers\\.1\\.attn\\.indexer\\.wq_b\\.weight +fp8_e4m3.*layers\\.1\\.ffn\\.experts\\.w1\\.weight +mxfp4 +\\[256, 64, 8\\].*layers\\.2\\.attn\\.compressor\\.ape +f32 +\\[64, 128\\].*verify: all 171 checksums match")

# ... that the runtime runs: the JSON keys of bench model, checked by a script.
add_test(NAME cli.bench_model_tiny
         COMMAND ${CMAKE_COMMAND} -DV4_CLI=${V4_CLI} -DMODEL=${V4_SYNTH_OUT}/tiny.v4
                 -P ${CMAKE_CURRENT_LIST_DIR}/check_bench_json.cmake)
set_tests_properties(cli.bench_model_tiny PROPERTIES FIXTURES_REQUIRED v4_synth_tiny)

add_test(NAME cli.bench_model_text COMMAND ${V4_CLI} bench model -m ${V4_SYNTH_OUT}/tiny.v4 -p 8 -n 4 -t 1)
set_tests_properties(cli.bench_model_text PROPERTIES FIXTURES_REQUIRED v4_synth_tiny
  PASS_REGULAR_EXPRESSION "prompt +8 tokens .*generation +4 tokens .*active weights .*MiB per decode token")

# The same seed gives the same bytes (values are a hash of seed, tensor and index), another seed not.
add_test(NAME cli.synth_seed_a COMMAND ${V4_CLI} synth --preset tiny --seed 7 -o ${V4_SYNTH_OUT}/seed7a.v4 --force)
add_test(NAME cli.synth_seed_b COMMAND ${V4_CLI} synth --preset tiny --seed 7 -o ${V4_SYNTH_OUT}/seed7b.v4 --force)
add_test(NAME cli.synth_seed_c COMMAND ${V4_CLI} synth --preset tiny --seed 8 -o ${V4_SYNTH_OUT}/seed8.v4 --force)
set_tests_properties(cli.synth_seed_a cli.synth_seed_b cli.synth_seed_c PROPERTIES FIXTURES_SETUP v4_synth_seeds)
add_test(NAME cli.synth_same_seed
         COMMAND ${CMAKE_COMMAND} -E compare_files ${V4_SYNTH_OUT}/seed7a.v4 ${V4_SYNTH_OUT}/seed7b.v4)
add_test(NAME cli.synth_other_seed
         COMMAND ${CMAKE_COMMAND} -E compare_files ${V4_SYNTH_OUT}/seed7a.v4 ${V4_SYNTH_OUT}/seed8.v4)
set_tests_properties(cli.synth_same_seed cli.synth_other_seed PROPERTIES FIXTURES_REQUIRED v4_synth_seeds)
set_tests_properties(cli.synth_other_seed PROPERTIES WILL_FAIL TRUE)

# One layer: no hash layer (layer 0 would be the only one), learned router only.
add_test(NAME cli.synth_one_layer COMMAND ${V4_CLI} synth --preset tiny --layers 1 -o ${V4_SYNTH_OUT}/one.v4 --force)
set_tests_properties(cli.synth_one_layer PROPERTIES FIXTURES_SETUP v4_synth_one
  PASS_REGULAR_EXPRESSION "v4 synth: wrote .*one.v4: 41 tensors")
add_test(NAME cli.synth_one_layer_run COMMAND ${V4_CLI} bench model -m ${V4_SYNTH_OUT}/one.v4 -p 4 -n 2 -t 1)
set_tests_properties(cli.synth_one_layer_run PROPERTIES FIXTURES_REQUIRED v4_synth_one
  PASS_REGULAR_EXPRESSION "generation +2 tokens")

# Bad flags and inputs: clear errors.
add_test(NAME cli.synth_bad_preset COMMAND ${V4_CLI} synth --preset huge -o ${V4_SYNTH_OUT}/x.v4)
set_tests_properties(cli.synth_bad_preset PROPERTIES PASS_REGULAR_EXPRESSION "--preset: huge not in \\{flash,pro,tiny\\}")
add_test(NAME cli.synth_too_few_experts COMMAND ${V4_CLI} synth --preset tiny --experts 1 -o ${V4_SYNTH_OUT}/x.v4)
set_tests_properties(cli.synth_too_few_experts PROPERTIES
  PASS_REGULAR_EXPRESSION "--experts 1 is fewer than the 2 experts each token uses")
add_test(NAME cli.synth_bad_layers COMMAND ${V4_CLI} synth --preset tiny --layers 0 -o ${V4_SYNTH_OUT}/x.v4)
set_tests_properties(cli.synth_bad_layers PROPERTIES PASS_REGULAR_EXPRESSION "--layers: Value 0 not in range")
add_test(NAME cli.synth_exists COMMAND ${V4_CLI} synth --preset tiny -o ${V4_SYNTH_OUT}/tiny.v4)
set_tests_properties(cli.synth_exists PROPERTIES FIXTURES_REQUIRED v4_synth_tiny
  PASS_REGULAR_EXPRESSION "tiny.v4: already exists \\(use --force to overwrite\\)")
add_test(NAME cli.synth_no_dir COMMAND ${V4_CLI} synth --preset tiny -o ${V4_SYNTH_OUT}/no-such-dir/x.v4)
set_tests_properties(cli.synth_no_dir PROPERTIES PASS_REGULAR_EXPRESSION "no-such-dir/x.v4.tmp: cannot create")
add_test(NAME cli.bench_model_missing COMMAND ${V4_CLI} bench model -m ${V4_SYNTH_OUT}/nope.v4)
set_tests_properties(cli.bench_model_missing PROPERTIES PASS_REGULAR_EXPRESSION "cannot load .*nope.v4")
add_test(NAME cli.bench_model_small_ctx COMMAND ${V4_CLI} bench model -m ${V4_SYNTH_OUT}/tiny.v4 --ctx 4 -p 8 -n 4)
set_tests_properties(cli.bench_model_small_ctx PROPERTIES FIXTURES_REQUIRED v4_synth_tiny
  PASS_REGULAR_EXPRESSION "--ctx 4 is smaller than -d \\+ -p \\+ -n = 12")
add_test(NAME cli.bench_model_depth COMMAND ${V4_CLI} bench model -m ${V4_SYNTH_OUT}/tiny.v4 -d 3000 -p 2 -n 2 -t 1)
set_tests_properties(cli.bench_model_depth PROPERTIES FIXTURES_REQUIRED v4_synth_tiny
  PASS_REGULAR_EXPRESSION "decoding at depth 3002")

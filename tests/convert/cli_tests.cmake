# CLI runs of v4 convert / v4 quantize (included from tests/CMakeLists.txt; V4_CLI, V4_TEST_DATA).
set(V4_CONV_OUT ${CMAKE_BINARY_DIR}/cli_convert)
file(MAKE_DIRECTORY ${V4_CONV_OUT})

add_test(NAME cli.convert_missing_dir COMMAND ${V4_CLI} convert ${V4_CONV_OUT}/no-such-checkpoint -o ${V4_CONV_OUT}/x.v4)
set_tests_properties(cli.convert_missing_dir PROPERTIES
  PASS_REGULAR_EXPRESSION "v4 convert: error: .*no-such-checkpoint: no such checkpoint directory")

# A real conversion (official layout, sharded, FP8 + MXFP4), then inspect and quantize the result.
add_test(NAME cli.convert_official COMMAND ${V4_CLI} convert ${V4_TEST_DATA}/convert/official
         -o ${V4_CONV_OUT}/official.v4 --force --threads 2)
set_tests_properties(cli.convert_official PROPERTIES FIXTURES_SETUP v4_cli_converted
  PASS_REGULAR_EXPRESSION "v4 convert: wrote .*official.v4: 136 tensors")

add_test(NAME cli.convert_inspect COMMAND ${V4_CLI} inspect ${V4_CONV_OUT}/official.v4 --verify)
set_tests_properties(cli.convert_inspect PROPERTIES FIXTURES_REQUIRED v4_cli_converted
  PASS_REGULAR_EXPRESSION "layers\\.0\\.ffn\\.experts\\.w1\\.weight +mxfp4 +\\[256, 32, 4\\].*verify: all 136 checksums match")

add_test(NAME cli.quantize_rule COMMAND ${V4_CLI} quantize ${V4_CONV_OUT}/official.v4 ${V4_CONV_OUT}/q4.v4
         --type q4_k --rule "ffn\\.experts\\.w[13]=q2_k" --force --threads 2)
set_tests_properties(cli.quantize_rule PROPERTIES FIXTURES_REQUIRED v4_cli_converted FIXTURES_SETUP v4_cli_quantized
  PASS_REGULAR_EXPRESSION "v4 quantize: wrote .*q4.v4.*q2_k +6 tensors.*q4_k +16 tensors")

add_test(NAME cli.quantize_inspect COMMAND ${V4_CLI} inspect ${V4_CONV_OUT}/q4.v4)
set_tests_properties(cli.quantize_inspect PROPERTIES FIXTURES_REQUIRED v4_cli_quantized
  PASS_REGULAR_EXPRESSION "layers\\.1\\.ffn\\.experts\\.w3\\.weight +q2_k.*layers\\.1\\.ffn\\.experts\\.w2\\.weight +q8_0")

add_test(NAME cli.quantize_bad_rule COMMAND ${V4_CLI} quantize ${V4_CONV_OUT}/official.v4 ${V4_CONV_OUT}/bad.v4
         --type q4_k --rule "experts=q9_z")
set_tests_properties(cli.quantize_bad_rule PROPERTIES PASS_REGULAR_EXPRESSION "unknown type 'q9_z'")

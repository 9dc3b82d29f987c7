# Runs `v4 bench model ... --json` and checks the JSON object it prints: every documented key is
# present, the speeds and byte counts are positive numbers, dram_gbps is a positive number or
# null (a build without the DRAM measurement). Usage:
#   cmake -DV4_CLI=<v4> -DMODEL=<file.v4> -P check_bench_json.cmake
execute_process(COMMAND ${V4_CLI} bench model -m ${MODEL} -p 8 -n 4 -t 1 --json
                OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "v4 bench model failed (${rc}): ${err}")
endif()
string(STRIP "${out}" out)
string(JSON type ERROR_VARIABLE jerr TYPE "${out}")
if(jerr OR NOT type STREQUAL "OBJECT")
  message(FATAL_ERROR "not one JSON object: '${out}' (${jerr})")
endif()
foreach(key prompt_tps gen_tps peak_rss_bytes active_bytes_per_token gen_gbps dram_gbps state_bytes)
  string(JSON t ERROR_VARIABLE jerr TYPE "${out}" ${key})
  if(jerr)
    message(FATAL_ERROR "key '${key}' missing in ${out}")
  endif()
  if(key STREQUAL "dram_gbps" AND t STREQUAL "NULL")
    continue()
  endif()
  string(JSON v GET "${out}" ${key})
  if(NOT t STREQUAL "NUMBER" OR NOT v GREATER 0)
    message(FATAL_ERROR "key '${key}' is ${t} '${v}', expected a positive number, in ${out}")
  endif()
endforeach()
# 8 prompt + 4 generated tokens: the default context is their sum.
string(JSON n_ctx GET "${out}" n_ctx)
if(NOT n_ctx EQUAL 12)
  message(FATAL_ERROR "n_ctx is ${n_ctx}, expected 12 (-p 8 + -n 4)")
endif()
message(STATUS "bench model JSON ok: ${out}")

# GPU tests of tests/cuda beyond test_cuda (included from tests/CMakeLists.txt). Each skips, with
# its reason, without a usable GPU.
if(V4_CUDA_ENABLED)
  # The "other ops" (gather, top_k, argsort, hadamard, sinkhorn, attn_mqa, get_rows of stored
  # types) at the model's sizes against the CPU, with timings printed: ctest names cuda.CudaOps.*.
  add_executable(test_cuda_ops ${CMAKE_CURRENT_LIST_DIR}/test_cuda_ops.cpp)
  target_link_libraries(test_cuda_ops PRIVATE v4_backends ${V4_GTEST_MAIN})
  target_include_directories(test_cuda_ops PRIVATE ${CMAKE_CURRENT_LIST_DIR}/..)
  gtest_discover_tests(test_cuda_ops TEST_PREFIX "cuda." DISCOVERY_TIMEOUT 120 PROPERTIES TIMEOUT 600)
  # The matmuls (every weight type, decode / tensor-core / generic kernels, matmul_id, NaN codes)
  # against float64, quantize-on-write set_rows against the CPU, and the matmul timings printed
  # (GB/s and % of the measured copy bandwidth): ctest names cuda.CudaMatmul.*.
  add_executable(test_cuda_matmul ${CMAKE_CURRENT_LIST_DIR}/test_cuda_matmul.cpp)
  target_link_libraries(test_cuda_matmul PRIVATE v4_backends ${V4_GTEST_MAIN})
  target_include_directories(test_cuda_matmul PRIVATE ${CMAKE_CURRENT_LIST_DIR}/..)
  gtest_discover_tests(test_cuda_matmul TEST_PREFIX "cuda." DISCOVERY_TIMEOUT 120 PROPERTIES TIMEOUT 600)
endif()

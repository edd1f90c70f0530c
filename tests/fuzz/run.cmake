# Builds the loader fuzzer with clang and runs it for a bounded time on a
# seed corpus: the exported test models and tests/fuzz/regressions (inputs
# that once found a bug). Any crash, sanitizer report or leak fails the
# test. Arguments: SOURCE_DIR (bnorm), WORK_DIR, SEEDS (a directory of .onnx
# files), SECONDS.
file(REMOVE_RECURSE ${WORK_DIR}/corpus)
file(GLOB seeds ${SEEDS}/*.onnx ${SOURCE_DIR}/tests/fuzz/regressions/*)
if(NOT seeds)
  message(FATAL_ERROR "no seed models in ${SEEDS}")
endif()
file(COPY ${seeds} DESTINATION ${WORK_DIR}/corpus)
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/fuzz -B ${WORK_DIR}/build -G Ninja
                        -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo
                        -DBNORM_SOURCE_DIR=${SOURCE_DIR}
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the fuzzer failed (needs clang and libclang-rt-14-dev): ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the fuzzer failed: ${rc}")
endif()
# The crash artifacts, if any, land in WORK_DIR for inspection.
execute_process(COMMAND ${WORK_DIR}/build/fuzz_model_loader -max_total_time=${SECONDS} -rss_limit_mb=2048
                        -timeout=20 -detect_leaks=1 -print_final_stats=1 -artifact_prefix=${WORK_DIR}/
                        ${WORK_DIR}/corpus
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the fuzzer found a problem (exit ${rc}); artifacts in ${WORK_DIR}")
endif()

# Installs the build into a scratch prefix, then configures, builds and runs
# tests/install as a separate project against it: find_package(bnorm) must
# give a working bnorm::core. Arguments: BUILD_DIR, SOURCE_DIR, WORK_DIR.
file(REMOVE_RECURSE ${WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "install failed: ${rc}")
endif()
# Two consumers: with bnorm::comm, and bnorm::core alone configured where
# MPI cannot be found (it must not need MPI). Neither sets a C++ standard,
# and neither may be compiled with -fopenmp (OpenMP is bnorm's link-only
# dependency).
foreach(comm ON OFF)
  set(build ${WORK_DIR}/build_${comm})
  set(extra)
  if(NOT comm)
    set(extra -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON)
  endif()
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${build} -DCMAKE_BUILD_TYPE=Release
                          -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DWITH_COMM=${comm} ${extra}
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "configuring the consumer (WITH_COMM=${comm}) failed: ${rc}")
  endif()
  execute_process(COMMAND ${CMAKE_COMMAND} --build ${build} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "building the consumer (WITH_COMM=${comm}) failed: ${rc}")
  endif()
  file(READ ${build}/compile_commands.json commands)
  if(commands MATCHES "-fopenmp")
    message(FATAL_ERROR "the consumer (WITH_COMM=${comm}) is compiled with -fopenmp: ${commands}")
  endif()
  execute_process(COMMAND ${build}/consumer RESULT_VARIABLE rc OUTPUT_VARIABLE out)
  message(STATUS "${out}")
  if(NOT rc EQUAL 0 OR NOT out MATCHES "ok")
    message(FATAL_ERROR "the consumer (WITH_COMM=${comm}) failed: ${rc}")
  endif()
endforeach()

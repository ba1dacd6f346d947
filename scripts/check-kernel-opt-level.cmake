# The kernels' speed must not depend on the build type (CMakeLists.txt, JETMOE_KERNELS_O3): at -O2
# GCC 12 ran the int4 prefill tile at half its -O3 rate. This configures the project twice in
# throwaway folders, exporting the compile commands, and checks the optimisation level that each
# source is compiled at (the last -O of its command line wins):
#   RelWithDebInfo: every *_avx2.cpp / *_avx512.cpp at -O3, the other sources at the build type's
#                   own -O2 (so the check sees the build type's level at all);
#   Debug:          no source at -O3 (kernels stay debuggable).
# Usage: cmake -DSOURCE_DIR=<checkout> -DWORK_DIR=<scratch folder> -DGENERATOR=<cmake generator>
#              -P scripts/check-kernel-opt-level.cmake
cmake_minimum_required(VERSION 3.25)
foreach(var SOURCE_DIR WORK_DIR GENERATOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check-kernel-opt-level: -D${var}=... is required")
  endif()
endforeach()

# The last -O option of a command line ("" when there is none).
function(last_opt_level command out)
  string(REGEX MATCHALL "(^| )-O[0-9sgz]?( |$)" opts " ${command} ")
  set(level "")
  foreach(o IN LISTS opts)
    string(STRIP "${o}" level)
  endforeach()
  set(${out} "${level}" PARENT_SCOPE)
endfunction()

set(failures "")
foreach(type RelWithDebInfo Debug)
  set(dir "${WORK_DIR}/${type}")
  file(REMOVE_RECURSE "${dir}")
  execute_process(
    COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}" -B "${dir}" -G "${GENERATOR}" -DCMAKE_BUILD_TYPE=${type}
            -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DJETMOE_BUILD_TESTS=OFF -DJETMOE_BUILD_BENCH=OFF
    RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "configuring a ${type} build in ${dir} failed:\n${err}")
  endif()
  file(READ "${dir}/compile_commands.json" json)
  string(JSON n LENGTH "${json}")
  math(EXPR last "${n} - 1")
  set(kernels 0)
  set(others 0)
  foreach(i RANGE ${last})
    string(JSON file GET "${json}" ${i} file)
    string(JSON command GET "${json}" ${i} command)
    if(NOT file MATCHES "\\.cpp$" OR NOT file MATCHES "/(runtime|ops|quant|loader)/")
      continue()  # the library's sources only
    endif()
    last_opt_level("${command}" level)
    if(file MATCHES "_avx(2|512)\\.cpp$")
      math(EXPR kernels "${kernels} + 1")
      set(want "-O3")
    else()
      math(EXPR others "${others} + 1")
      set(want "-O2")
    endif()
    if(type STREQUAL "Debug")
      if(level STREQUAL "-O3")
        list(APPEND failures "${type}: ${file} is compiled at -O3")
      endif()
    elseif(NOT level STREQUAL want)
      list(APPEND failures "${type}: ${file} is compiled at '${level}', expected ${want}")
    endif()
  endforeach()
  if(kernels EQUAL 0 OR others EQUAL 0)
    list(APPEND failures "${type}: found ${kernels} per-ISA and ${others} other library sources in ${dir}/compile_commands.json")
  endif()
  message(STATUS "${type}: ${kernels} per-ISA sources and ${others} others checked")
  file(REMOVE_RECURSE "${dir}")
endforeach()

if(failures)
  list(JOIN failures "\n  " text)
  message(FATAL_ERROR "optimisation levels:\n  ${text}")
endif()

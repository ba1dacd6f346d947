// What this binary was built with: the compiler, the build type and the optimisation level of
// the per-ISA kernel sources. The kernels' speed depends on all three (docs/performance.md: at -O2
// they ran at half speed; clang's prefill tiles at 0.7-0.8x of GCC's), so `jetmoe --version` and
// `jetmoe bench` report them.
#pragma once

#include <string>

namespace jetmoe {

struct BuildInfo {
  std::string compiler;    // e.g. "GCC 12.2.0", "Clang 14.0.6"
  std::string build_type;  // CMake's build type, e.g. "Release", "RelWithDebInfo"
  bool kernels_o3;         // the per-ISA sources compiled at -O3 (CMakeLists.txt, JETMOE_KERNELS_O3)
};

const BuildInfo& build_info();
// One line: "GCC 12.2.0, Release, kernels -O3" (or "..., kernels at the build type's level").
std::string build_summary();

}  // namespace jetmoe

#include "runtime/build_info.h"

// JETMOE_BUILD_TYPE and JETMOE_KERNELS_AT_O3 are set on this file alone by CMakeLists.txt.
#ifndef JETMOE_BUILD_TYPE
#define JETMOE_BUILD_TYPE "unknown"
#endif
#ifndef JETMOE_KERNELS_AT_O3
#define JETMOE_KERNELS_AT_O3 0
#endif

namespace jetmoe {

namespace {

std::string compiler_name() {
#if defined(__clang__)
  return std::string("Clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("GCC ") + __VERSION__;
#else
  return "unknown compiler";
#endif
}

}  // namespace

const BuildInfo& build_info() {
  static const BuildInfo info{compiler_name(), JETMOE_BUILD_TYPE[0] ? JETMOE_BUILD_TYPE : "unknown",
                              JETMOE_KERNELS_AT_O3 != 0};
  return info;
}

std::string build_summary() {
  const BuildInfo& b = build_info();
  return b.compiler + ", " + b.build_type + ", kernels " + (b.kernels_o3 ? "-O3" : "at the build type's level");
}

}  // namespace jetmoe

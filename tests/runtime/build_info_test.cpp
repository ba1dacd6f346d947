// build_info() against what this test binary knows of its own build: the same compiler (its
// predefined macros), CMake's build type and the kernels' -O3 setting (tests/CMakeLists.txt).
#include <gtest/gtest.h>

#include <string>

#include "runtime/build_info.h"

namespace {

TEST(BuildInfo, NamesThisCompilerAndBuildType) {
  const jetmoe::BuildInfo& b = jetmoe::build_info();
#if defined(__clang__)
  EXPECT_EQ(b.compiler, std::string("Clang ") + __clang_version__);
#elif defined(__GNUC__)
  EXPECT_EQ(b.compiler, std::string("GCC ") + __VERSION__);
#endif
  EXPECT_EQ(b.build_type, JETMOE_TEST_BUILD_TYPE);
  EXPECT_EQ(b.kernels_o3, JETMOE_TEST_KERNELS_AT_O3 != 0);
  const std::string s = jetmoe::build_summary();
  EXPECT_EQ(s.rfind(b.compiler + ", " + b.build_type + ", kernels ", 0), 0u) << s;
  EXPECT_NE(s.find(b.kernels_o3 ? "kernels -O3" : "kernels at the build type's level"), std::string::npos) << s;
}

}  // namespace

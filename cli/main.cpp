// jetmoe: the command-line entry point (subcommands are added in cli/cmd_*.cpp).
#include <cstdio>

int main() {
  std::printf("jetmoe %s\n", JETMOE_VERSION);
  return 0;
}

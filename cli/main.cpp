// jetmoe: one binary, one subcommand per job (cli/cmd_*.cpp). Errors from any layer surface here
// as one line on stderr and a non-zero exit status.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "cli/common_options.h"
#include "ops/cpu/cpu_isa.h"

namespace {

// OpenMP worker threads that spin while waiting steal the core from any other busy process on a
// small machine, and decode then collapses (a 2-core laptop running a browser). Sleeping waits
// cost a few microseconds per op instead. libgomp reads OMP_WAIT_POLICY once, when it is loaded,
// so the default must be in the environment before the process starts: re-exec once with it set.
// A user's own OMP_WAIT_POLICY is respected.
void default_to_passive_openmp_waits(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  execv("/proc/self/exe", argv);  // returns only on failure: carry on with the default policy
}

}  // namespace

int main(int argc, char** argv) {
  default_to_passive_openmp_waits(argv);
  CLI::App app{"jetmoe: fast CPU inference for JetMoE mixture-of-experts models", "jetmoe"};
  app.set_version_flag("--version", std::string("jetmoe ") + JETMOE_VERSION);
  app.require_subcommand(1);
  jetmoe::cli::add_inspect_command(app);
  jetmoe::cli::add_generate_command(app);
  jetmoe::cli::add_score_command(app);
  jetmoe::cli::add_tokenize_command(app);
  jetmoe::cli::add_score_merge_command(app);
  jetmoe::cli::add_compare_quants_command(app);
  jetmoe::cli::add_quantize_command(app);
  jetmoe::cli::add_chat_command(app);
  jetmoe::cli::add_serve_command(app);
  jetmoe::cli::add_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    const auto subs = app.get_subcommands();
    std::cerr << "jetmoe" << (subs.empty() ? "" : " " + subs.front()->get_name()) << ": error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

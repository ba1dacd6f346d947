// jetmoe: one binary, one subcommand per job (cli/cmd_*.cpp). Errors from any layer surface here
// as one line on stderr and a non-zero exit status.
#include <CLI/CLI.hpp>

#include <iostream>

#include "cli/common_options.h"
#include "ops/cpu/cpu_isa.h"

int main(int argc, char** argv) {
  CLI::App app{"jetmoe: fast CPU inference for JetMoE mixture-of-experts models", "jetmoe"};
  app.set_version_flag("--version", std::string("jetmoe ") + JETMOE_VERSION);
  app.require_subcommand(1);
  jetmoe::cli::add_inspect_command(app);
  jetmoe::cli::add_generate_command(app);
  jetmoe::cli::add_score_command(app);
  jetmoe::cli::add_tokenize_command(app);
  jetmoe::cli::add_score_merge_command(app);
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

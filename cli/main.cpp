// jetmoe: one binary, one subcommand per job (cli/cmd_*.cpp). Errors from any layer surface here
// as one line on stderr and a non-zero exit status.
#include <CLI/CLI.hpp>

#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "cli/common_options.h"
#include "ops/cpu/cpu_isa.h"
#include "runtime/build_info.h"

namespace {

// Both libraries below read their settings once, when they are loaded, so a default must be in
// the environment before the process starts: set what is missing and re-exec once. A user's own
// OMP_WAIT_POLICY / OPENBLAS_CORETYPE is always respected.
//
// OpenMP worker threads that spin while waiting steal the core from any other busy process on a
// small machine, and decode then collapses (a 2-core laptop running a browser). Sleeping waits
// cost a few microseconds per op instead: OMP_WAIT_POLICY=passive.
//
// Debian 12's OpenBLAS (0.3.21) does not know Zen 4 / Zen 5 and runs its AVX2 "Haswell" SGEMM
// there; its AVX-512 "SkylakeX" kernels measured 19-37% faster for bf16 prefill on Zen 5. Nor does
// it know the Xeon test VM's Emerald Rapids (family 6 model 207), where it falls back to its
// SSE3 "Prescott" kernels. So when the CPU runs our AVX-512 kernels and OpenBLAS picked a core
// without AVX-512, ask for SkylakeX.
void set_library_defaults_and_reexec(char** argv) {
  bool changed = false;
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && setenv("OMP_WAIT_POLICY", "passive", 1) == 0) changed = true;
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr && jetmoe::detect_best_isa() == jetmoe::CpuIsa::Avx512) {
    const std::string core = openblas_get_corename();
    const bool avx512_core = core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids";
    if (!avx512_core && setenv("OPENBLAS_CORETYPE", "SkylakeX", 1) == 0) changed = true;
  }
  if (changed) execv("/proc/self/exe", argv);  // returns only on failure: carry on with the defaults
}

// llama.cpp's multi-letter single-dash flags, which CLI11 cannot declare, renamed in place to
// our long names before parsing.
void rename_llama_flags(int argc, char** argv) {
  static char ctk[] = "--cache-type-k", ctv[] = "--cache-type-v";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "-ctk") == 0) argv[i] = ctk;
    else if (std::strcmp(argv[i], "-ctv") == 0) argv[i] = ctv;
  }
}

}  // namespace

int main(int argc, char** argv) {
  set_library_defaults_and_reexec(argv);
  CLI::App app{"jetmoe: fast CPU inference for JetMoE mixture-of-experts models", "jetmoe"};
  app.set_version_flag("--version", std::string("jetmoe ") + JETMOE_VERSION + " (" + jetmoe::build_summary() + ")");
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
    rename_llama_flags(argc, argv);
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

// jetmoe quantize: a Hugging Face checkpoint (or a GGUF file) to a quantized GGUF file.
#include <cstdio>
#include <memory>

#include "cli/common_options.h"
#include "loader/gguf_model.h"
#include "loader/quantize_weights.h"

namespace jetmoe::cli {
namespace {

struct QuantizeOptions {
  std::string model, output, type;
  int threads = 0;
  bool strict = false;
};

void run_quantize(const QuantizeOptions& o) {
  ModelOptions mo;
  mo.model = o.model;
  mo.threads = o.threads;
  mo.apply_threads();
  LoadOptions lo;
  auto m = load_model_files(mo.resolved_model(), lo);
  const size_t before = m->tensors->file_bytes();
  QuantizeReport rep;
  auto q = quantize_weights(m->config, m->weights, quant_mix(o.type), &rep, o.strict);
  for (const std::string& f : rep.fallbacks) std::fprintf(stderr, "note: %s\n", f.c_str());
  m->file_tensors = std::move(m->tensors);
  m->tensors = std::move(q);
  m->weights = bind_weights(m->config, *m->tensors);
  write_gguf_model(*m, o.output, o.type);
  std::fprintf(stderr, "%s: %s, %.1f MiB -> %.1f MiB of weights\n", o.output.c_str(), o.type.c_str(), before / 1048576.0,
               rep.quantized_bytes / 1048576.0);
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  auto o = std::make_shared<QuantizeOptions>();
  CLI::App* sub = app.add_subcommand("quantize", "Write a quantized GGUF file (q8_0, q4_0, q4_k mixes) from a checkpoint");
  sub->add_option("-m,--model", o->model, "Hugging Face checkpoint folder or GGUF file (default: the bundled model)");
  sub->add_option("--type", o->type, "Quantization mix (see docs/quantization.md)")->required()->check(CLI::IsMember(quant_mix_names()));
  sub->add_option("-o,--output", o->output, "Output .gguf file (written atomically)")->required();
  sub->add_option("-t,--threads", o->threads, "Threads")->check(CLI::NonNegativeNumber);
  sub->add_flag("--strict", o->strict, "Fail on a tensor whose rows the block size does not divide, instead of falling back");
  sub->callback([o] { run_quantize(*o); });
}

}  // namespace jetmoe::cli

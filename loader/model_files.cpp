#include "loader/model_files.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "loader/load_error.h"
#include "loader/gguf_file.h"
#include "loader/gguf_model.h"
#include "loader/quantize_weights.h"
#include "loader/safetensors.h"

#include <cstdio>

namespace fs = std::filesystem;

namespace jetmoe {
namespace {

nlohmann::json read_json_if_exists(const fs::path& p) {
  if (!fs::exists(p)) return nlohmann::json::object();
  std::ifstream in(p);
  if (!in) throw LoadError(p.string() + ": cannot open");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw LoadError(p.string() + ": invalid JSON: " + e.what());
  }
}

fs::path executable_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}

}  // namespace

const Tokenizer& ModelFiles::require_tokenizer() const {
  if (!tokenizer)
    throw LoadError(path + ": no tokenizer.model in this checkpoint; give token ids (--ids / --prompt-ids) instead of text");
  return *tokenizer;
}

size_t ModelFiles::bytes_per_token() const {
  const JetMoeConfig& c = config;
  const size_t k = static_cast<size_t>(c.num_experts_per_tok), E = static_cast<size_t>(c.num_local_experts);
  size_t total = weights.embed.row_bytes() + weights.final_norm.nbytes() + weights.lm_head.nbytes();
  for (const LayerWeights& l : weights.layers) {
    total += l.input_norm.nbytes() + l.post_attn_norm.nbytes() + l.moa.kv_proj.nbytes() + l.moa.router.nbytes() +
             l.moe.router.nbytes();
    if (!l.moa.bias.empty()) total += l.moa.bias.nbytes();
    if (!l.moe.bias.empty()) total += l.moe.bias.nbytes();
    total += (l.moa.q_experts.nbytes() + l.moa.o_experts.nbytes() + l.moe.w_in.nbytes() + l.moe.w_out.nbytes()) / E * k;
  }
  return total;
}

std::unique_ptr<ModelFiles> load_model_files(const std::string& path, const LoadOptions& opts) {
  const fs::path dir(path);
  if (!fs::exists(dir)) throw LoadError(path + ": no such file or directory");
  if (fs::is_regular_file(dir) && dir.extension() == ".gguf") {
    auto m = std::make_unique<ModelFiles>();
    m->path = path;
    auto gguf = GgufFile::open(path, opts.mode);
    // Read into RAM (--no-mmap): hold Q8_0 / Q4_0 in the CPU's fastest layout (in place, no copy).
    if (opts.quant.empty()) gguf->repack_for_cpu();
    read_gguf_model(std::move(gguf), *m);
    if (!opts.quant.empty()) {
      auto q = quantize_weights(m->config, m->weights, quant_mix(opts.quant));
      q->repack_for_cpu();
      m->file_tensors = std::move(m->tensors);
      m->tensors = std::move(q);
      m->weights = bind_weights(m->config, *m->tensors);
    }
    return m;
  }
  if (!fs::is_directory(dir))
    throw LoadError(path + ": expected a checkpoint folder (config.json + *.safetensors) or a .gguf file");
  const fs::path cfg_path = dir / "config.json";
  if (!fs::exists(cfg_path)) throw LoadError(path + ": missing config.json");

  auto m = std::make_unique<ModelFiles>();
  m->path = path;
  m->config = load_hf_config(cfg_path.string());
  m->tensors = SafetensorsCheckpoint::open(path, opts.mode);
  reconcile_config_with_tensors(m->config, *m->tensors, cfg_path.string());
  m->weights = bind_weights(m->config, *m->tensors);
  if (!opts.quant.empty()) {
    QuantizeReport rep;
    auto q = quantize_weights(m->config, m->weights, quant_mix(opts.quant), &rep);
    for (const std::string& f : rep.fallbacks) std::fprintf(stderr, "note: %s\n", f.c_str());
    q->repack_for_cpu();
    m->file_tensors = std::move(m->tensors);
    m->tensors = std::move(q);
    m->weights = bind_weights(m->config, *m->tensors);
  }
  m->generation = load_generation_config((dir / "generation_config.json").string());
  if (m->generation.bos_token_id) m->config.bos_token_id = *m->generation.bos_token_id;
  m->tokenizer_config = read_json_if_exists(dir / "tokenizer_config.json");

  const fs::path sp = dir / "tokenizer.model";
  if (fs::exists(sp)) {
    bool add_bos = true;
    if (m->tokenizer_config.contains("add_bos_token") && m->tokenizer_config["add_bos_token"].is_boolean())
      add_bos = m->tokenizer_config["add_bos_token"].get<bool>();
    m->tokenizer = std::make_unique<Tokenizer>(sp.string(), m->config.bos_token_id, m->config.eos_token_id, add_bos);
    if (m->tokenizer->vocab_size() > m->config.vocab_size)
      throw LoadError(sp.string() + ": the tokenizer has " + std::to_string(m->tokenizer->vocab_size()) +
                      " pieces but the model's vocabulary is " + std::to_string(m->config.vocab_size));
  }
  return m;
}

std::string default_model_path() {
  if (const char* env = std::getenv("JETMOE_MODEL"); env && *env) return env;
  const fs::path exe = executable_dir();
  for (const fs::path& cand : {exe / "../models/austen-jetmoe", exe / "../share/jetmoe/models/austen-jetmoe",
                               exe / "models/austen-jetmoe", fs::path(JETMOE_SOURCE_DIR) / "models/austen-jetmoe"}) {
    std::error_code ec;
    if (fs::exists(cand / "config.json", ec)) return fs::weakly_canonical(cand, ec).string();
  }
  return (fs::path(JETMOE_SOURCE_DIR) / "models/austen-jetmoe").string();
}

}  // namespace jetmoe

#include "cli/common_options.h"

#include <omp.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "loader/quantize_weights.h"
#include "quant/stream_prefetch.h"

namespace jetmoe::cli {

void ModelOptions::add_to(CLI::App& app) {
  app.add_option("-m,--model", model, "Model: a Hugging Face JetMoE checkpoint folder or a .gguf file (default: the bundled models/austen-jetmoe)")
      ->envname("JETMOE_MODEL");
  app.add_option("-t,--threads", threads, "Threads (default: all cores)")->check(CLI::NonNegativeNumber)->envname("JETMOE_THREADS");
  app.add_option("-c,--ctx-size", ctx_size, "Context size in tokens (default: the model's max_position_embeddings)")
      ->check(CLI::NonNegativeNumber);
  const std::vector<std::string> kv_types = kv_cache_type_names();
  // llama.cpp's -ctk / -ctv spellings are accepted too (cli/main.cpp maps them to these names).
  app.add_option("--cache-type-k", cache_type_k,
                 "KV cache type for keys (also -ctk): f32 (exact), f16, bf16 (half the bytes), q8_0 (int8 per 32 values, 3.8x smaller than f32; heads must be a multiple of 32)")
      ->check(CLI::IsMember(kv_types))
      ->capture_default_str();
  app.add_option("--cache-type-v", cache_type_v, "KV cache type for values (also -ctv): f32, f16, bf16, q8_0")
      ->check(CLI::IsMember(kv_types))
      ->capture_default_str();
  app.add_flag("--no-mmap", no_mmap, "Read the weights into RAM instead of mmapping them (immune to page-cache eviction; int8/int4 GGUF weights are then also repacked for the AVX-512 or AVX2 kernels)");
  app.add_flag("--mlock", mlock, "mmap the weights and lock them in RAM");
  app.add_option("--device", device, "Compute device: cpu, or cuda in a build with -DJETMOE_CUDA=ON (without a usable GPU it runs on the CPU, saying so)")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--quant", quant, "Quantize the weights at load time: q8_0, q4_0, q4_k (int4 experts, 8-bit kv_proj/embedding/head), q4_0-pure, q4_k-pure")
      ->check(CLI::IsMember(quant_mix_names()));
}

std::string resolve_device(const std::string& requested) {
  const DeviceAvailability a = device_availability(requested);
  if (a.usable) return requested;
  if (!a.built) throw CLI::ValidationError("--device", requested + ": " + a.why);
  std::fprintf(stderr, "jetmoe: --device %s: %s; running on the CPU instead\n", requested.c_str(), a.why.c_str());
  return "cpu";
}

std::string ModelOptions::resolved_model() const { return model.empty() ? default_model_path() : model; }

LoadOptions ModelOptions::load_options() const {
  LoadOptions o;
  if (no_mmap && mlock) throw CLI::ValidationError("--no-mmap and --mlock", "choose one of them");
  o.mode = no_mmap ? LoadMode::Read : (mlock ? LoadMode::Mlock : LoadMode::Mmap);
  o.quant = quant;
  return o;
}

KvCacheTypes ModelOptions::cache_types() const {
  return {parse_kv_cache_type(cache_type_k, "--cache-type-k"), parse_kv_cache_type(cache_type_v, "--cache-type-v")};
}

int ModelOptions::effective_threads() const { return threads > 0 ? threads : omp_get_num_procs(); }

void ModelOptions::apply_threads() const { omp_set_num_threads(effective_threads()); }

LoadedModel load_model(const ModelOptions& opts) {
  opts.apply_threads();
  LoadedModel lm;
  lm.files = load_model_files(opts.resolved_model(), opts.load_options());
  lm.backend = make_backend(resolve_device(opts.device));
  lm.model = std::make_unique<JetMoeModel>(lm.files->config, lm.files->weights, *lm.backend);
  lm.model->set_cache_types(opts.cache_types());
  const int max_ctx = lm.files->config.max_position_embeddings;
  lm.ctx_size = opts.ctx_size > 0 ? opts.ctx_size : max_ctx;
  return lm;
}

std::vector<int32_t> parse_id_list(const std::string& text, const std::string& flag) {
  std::vector<int32_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b == std::string::npos) throw CLI::ValidationError(flag, "empty item in the id list '" + text + "'");
    item = item.substr(b, e - b + 1);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < 0 || v > INT32_MAX)
      throw CLI::ValidationError(flag, "'" + item + "' is not a token id (expected non-negative integers, e.g. 1,5,9)");
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) throw CLI::ValidationError(flag, "no token ids given");
  return ids;
}

std::string read_text_file(const std::string& path) {
  if (path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void add_sampling_options(CLI::App& app, SamplingParams& p, bool server_defaults) {
  const auto help = [&](std::string what) {  // `what` starts in lower case
    if (server_defaults) return "Default " + what + " (requests override)";
    what[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(what[0])));
    return what;
  };
  app.add_option("--temp", p.temperature, help("temperature (0: greedy)"))->check(CLI::Range(0.0, 100.0));
  app.add_option("--top-k", p.top_k, help("top-k sampling (0: off)"))->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", p.top_p, help("top-p (nucleus) sampling (1.0: off)"))->check(CLI::Range(0.0, 1.0));
  app.add_option("--min-p", p.min_p, help("min-p sampling (0.0: off)"))->check(CLI::Range(0.0, 1.0));
  app.add_option("--repeat-penalty", p.repeat_penalty, help("repetition penalty (1.0: off)"))->check(CLI::Range(0.0, 100.0));
  app.add_option("--repeat-last-n", p.repeat_last_n, help("tokens the repetition penalty looks back over"))
      ->check(CLI::NonNegativeNumber);
}

nlohmann::ordered_json decode_prefetch_by_type_json() {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [t, bytes] : decode_prefetch_by_type()) j[dtype_name(t)] = bytes;
  return j;
}

}  // namespace jetmoe::cli

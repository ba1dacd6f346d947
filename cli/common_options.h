// Flags shared by every subcommand that loads a model (-m, -t, --no-mmap, --mlock, --device),
// declared once so parsing and --help agree everywhere.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "loader/model_files.h"
#include "runtime/backend.h"
#include "runtime/jetmoe_model.h"
#include "runtime/sampler.h"

namespace jetmoe::cli {

struct ModelOptions {
  std::string model;   // empty: the bundled default model
  int threads = 0;     // 0: all cores
  bool no_mmap = false;
  bool mlock = false;
  std::string device = "cpu";
  std::string quant;   // quantize at load time
  int ctx_size = 0;    // 0: the model's max_position_embeddings
  std::string cache_type_k = "f32", cache_type_v = "f32";  // KV cache storage (runtime/kv_cache.h)

  void add_to(CLI::App& app);
  std::string resolved_model() const;
  LoadOptions load_options() const;
  KvCacheTypes cache_types() const;
  // Applies -t to OpenMP (and so to OpenBLAS, which uses the OpenMP runtime).
  void apply_threads() const;
  int effective_threads() const;
};

// The sampling flags (--temp, --top-k, --top-p, --min-p, --repeat-penalty, --repeat-last-n) into
// `p`, declared once so their ranges agree; `server_defaults` words the help for a server, whose
// values are the defaults that requests override.
void add_sampling_options(CLI::App& app, SamplingParams& p, bool server_defaults);

// The decode prefetch distance each weight type's one-token kernel uses now
// (decode_prefetch_by_type, quant/stream_prefetch.h) as {"F32": 0, ..., "Q4_KR": 8192}, for the
// JSON of `bench` and `inspect`.
nlohmann::ordered_json decode_prefetch_by_type_json();

// A model ready to run: files, backend and forward pass.
struct LoadedModel {
  std::unique_ptr<ModelFiles> files;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<JetMoeModel> model;
  int ctx_size = 0;
};

LoadedModel load_model(const ModelOptions& opts);

// The device to run on for --device `requested`: itself when usable; "cpu" with a notice on stderr
// when this is a CUDA build on a machine without a usable GPU; a CLI::ValidationError naming
// --device when the device is not built into this binary.
std::string resolve_device(const std::string& requested);

// "1,5,9" -> {1, 5, 9}; throws CLI::ValidationError naming `flag` on anything else.
std::vector<int32_t> parse_id_list(const std::string& text, const std::string& flag);

// Reads a whole file (or "-" for stdin); throws std::runtime_error naming the file.
std::string read_text_file(const std::string& path);

// Each subcommand adds itself to the app; its callback runs the command.
void add_inspect_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_score_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_score_merge_command(CLI::App& app);
void add_compare_quants_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_bench_command(CLI::App& app);

}  // namespace jetmoe::cli

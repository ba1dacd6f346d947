// jetmoe inspect: what a model file holds and what running it costs.
#include <cstdio>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/common_options.h"
#include "ops/cpu/cpu_isa.h"
#include "quant/stream_prefetch.h"

namespace jetmoe::cli {
namespace {

struct InspectOptions {
  ModelOptions model;
  std::string format = "text";
  bool tensors = true;
};

struct Counts {
  int64_t total = 0, active = 0;
};

// Parameter counts: total, and active per token (k of E experts in both sublayers, the whole head).
Counts count_params(ModelFiles& m) {
  const JetMoeConfig& c = m.config;
  Counts n;
  const int64_t k = c.num_experts_per_tok, E = c.num_local_experts;
  m.weights.for_each_tensor(c, [&](WeightView& v, TensorRole role, const std::vector<int64_t>& shape) {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    n.total += numel;
    switch (role) {
      case TensorRole::AttnQ: case TensorRole::AttnO: case TensorRole::MlpIn: case TensorRole::MlpOut:
        n.active += numel / E * k; break;
      case TensorRole::Embedding:
        n.active += shape[1];  // one row gathered
        if (m.weights.tied_head) n.active += numel;  // the head reads the whole (tied) matrix
        break;
      default: n.active += numel;
    }
  });
  return n;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %s", b, units[u]);
  return buf;
}

void run_inspect(const InspectOptions& o) {
  auto m = load_model_files(o.model.resolved_model(), o.model.load_options());
  const JetMoeConfig& c = m->config;
  const Counts n = count_params(*m);
  const size_t bpt = m->bytes_per_token();
  nlohmann::ordered_json j;
  j["path"] = m->path;
  j["config"] = {{"vocab_size", c.vocab_size},
                 {"hidden_size", c.hidden_size},
                 {"num_hidden_layers", c.num_hidden_layers},
                 {"num_key_value_heads", c.num_key_value_heads},
                 {"kv_channels", c.kv_channels},
                 {"num_attention_heads", c.num_attention_heads()},
                 {"intermediate_size", c.intermediate_size},
                 {"num_local_experts", c.num_local_experts},
                 {"num_experts_per_tok", c.num_experts_per_tok},
                 {"max_position_embeddings", c.max_position_embeddings},
                 {"rope_theta", c.rope_theta},
                 {"rms_norm_eps", c.rms_norm_eps},
                 {"tie_word_embeddings", c.tie_word_embeddings},
                 {"bos_token_id", c.bos_token_id},
                 {"eos_token_id", c.eos_token_id}};
  j["params_total"] = n.total;
  j["params_active_per_token"] = n.active;
  j["file_bytes"] = m->tensors->file_bytes();
  j["bytes_per_decoded_token"] = bpt;
  // The KV cache -ctk/-ctv would give: bytes per token of context, and at the context size.
  const KvCacheTypes kv = o.model.cache_types();
  check_kv_cache_types(kv, c.kv_channels);
  const size_t kv_per_token = kv_cache_bytes_per_token(c.num_hidden_layers, c.num_key_value_heads, c.kv_channels, kv);
  const int ctx = o.model.ctx_size > 0 ? o.model.ctx_size : c.max_position_embeddings;
  j["kv_cache"] = {{"type_k", o.model.cache_type_k}, {"type_v", o.model.cache_type_v},
                   {"bytes_per_token", kv_per_token}, {"context", ctx},
                   {"bytes_at_context", kv_per_token * static_cast<size_t>(ctx)}};
  j["tokenizer"] = m->tokenizer ? m->tokenizer->path() : "";
  j["cpu"] = {{"isa", isa_name(active_isa())},
              {"vendor", cpu_vendor()},
              {"features", cpu_feature_summary()},
              {"decode_prefetch_bytes", decode_prefetch_bytes()},
              {"decode_prefetch_by_type", decode_prefetch_by_type_json()}};
  nlohmann::ordered_json tl = nlohmann::ordered_json::array();
  m->weights.for_each_tensor(c, [&](WeightView& v, TensorRole role, const std::vector<int64_t>&) {
    if (v.empty()) return;
    tl.push_back({{"name", v.name}, {"role", tensor_role_name(role)}, {"dtype", dtype_name(v.dtype)},
                  {"shape", v.shape}, {"bytes", v.nbytes()}});
  });
  if (o.format == "json") {
    j["tensors"] = tl;
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("model        %s\n", m->path.c_str());
  std::printf("layers       %d, hidden %d, vocab %d\n", c.num_hidden_layers, c.hidden_size, c.vocab_size);
  std::printf("attention    %d experts, top-%d, %d kv heads x %d channels (%d query heads per token), shared K/V\n",
              c.num_local_experts, c.num_experts_per_tok, c.num_key_value_heads, c.kv_channels, c.num_attention_heads());
  std::printf("mlp          %d SwiGLU experts, top-%d, intermediate %d\n", c.num_local_experts, c.num_experts_per_tok,
              c.intermediate_size);
  std::printf("context      %d, rope theta %g, final norm eps %g, %s head\n", c.max_position_embeddings,
              static_cast<double>(c.rope_theta), static_cast<double>(c.rms_norm_eps), c.tie_word_embeddings ? "tied" : "untied");
  std::printf("parameters   %lld total, %lld active per token\n", static_cast<long long>(n.total), static_cast<long long>(n.active));
  std::printf("file size    %s\n", human_bytes(static_cast<double>(m->tensors->file_bytes())).c_str());
  std::printf("decode reads %s of weights per token\n", human_bytes(static_cast<double>(bpt)).c_str());
  std::printf("kv cache     %s/%s: %s per token, %s at %d tokens (-ctk/-ctv f16, bf16, q8_0 shrink it)\n",
              o.model.cache_type_k.c_str(), o.model.cache_type_v.c_str(), human_bytes(static_cast<double>(kv_per_token)).c_str(),
              human_bytes(static_cast<double>(kv_per_token) * ctx).c_str(), ctx);
  std::printf("tokenizer    %s\n", m->tokenizer ? m->tokenizer->path().c_str() : "(none: token ids only)");
  const std::string vendor = cpu_vendor();
  std::printf("cpu kernels  %s, decode prefetch %s (%s, CPU has: %s)\n", isa_name(active_isa()), decode_prefetch_summary().c_str(),
              vendor.empty() ? "unknown vendor" : vendor.c_str(), cpu_feature_summary().c_str());
  if (!o.tensors) return;
  std::printf("\n%-64s %-9s %-5s %-20s %s\n", "tensor", "role", "dtype", "shape", "bytes");
  for (const auto& t : tl) {
    std::printf("%-64s %-9s %-5s %-20s %s\n", t["name"].get<std::string>().c_str(), t["role"].get<std::string>().c_str(),
                t["dtype"].get<std::string>().c_str(), shape_to_string(t["shape"].get<std::vector<int64_t>>()).c_str(),
                human_bytes(t["bytes"].get<double>()).c_str());
  }
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto opts = std::make_shared<InspectOptions>();
  CLI::App* sub = app.add_subcommand("inspect", "Show a model's config, parameter counts, tensors and bytes per decoded token");
  opts->model.add_to(*sub);
  sub->add_option("--format", opts->format, "Output format")->check(CLI::IsMember({"text", "json"}));
  sub->add_flag("!--no-tensors", opts->tensors, "Leave out the tensor list");
  sub->callback([opts] { run_inspect(*opts); });
}

}  // namespace jetmoe::cli

// config.json and generation_config.json of a Hugging Face JetMoE checkpoint.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/jetmoe_config.h"

namespace jetmoe {

class TensorSource;

// Parses config.json in any of the three spellings (jetmoe-architecture.md 1.2 / 1.3):
//  - transformers port: hidden_size, num_hidden_layers, num_key_value_heads, kv_channels,
//    intermediate_size, num_local_experts, num_experts_per_tok, ...
//  - original package: ffn_hidden_size, moe_num_experts, moe_top_k (+ num_attention_heads = query
//    heads, which must equal num_key_value_heads * top_k when present)
//  - v0 / chat checkpoint: n_embd, n_layer, n_head (= KV heads!), n_positions
// Keys missing take the JetMoeConfig (transformers) defaults, except the layer count, which is
// left 0 when absent and then taken from the tensors. Wrong JSON types, non-positive sizes, an
// activation other than silu, `glu: false`, contradicting spellings: LoadError naming `path` and
// the field.
JetMoeConfig parse_hf_config(const nlohmann::json& j, const std::string& path);

// Reads and parses `path` (a config.json). Bad JSON: LoadError with the parser's position.
JetMoeConfig load_hf_config(const std::string& path);

// Derives/cross-checks the sizes that tensor shapes determine (vocab, hidden, layers, experts,
// kv width, intermediate) against `src` and fills num_hidden_layers when the config lacks it.
// Also sets tie_word_embeddings=false when `lm_head.weight` is present in the tensors.
// A contradiction is a LoadError naming the config field, the tensor, and both values.
void reconcile_config_with_tensors(JetMoeConfig& cfg, const TensorSource& src, const std::string& config_path);

// generation_config.json (optional file). Only the fields the runtime uses.
struct GenerationConfig {
  std::optional<int> bos_token_id;
  std::vector<int> eos_token_ids;  // eos_token_id may be an int or a list
  std::optional<float> temperature, top_p;
  std::optional<int> top_k;
  std::optional<float> repetition_penalty;
  std::optional<bool> do_sample;
};

GenerationConfig parse_generation_config(const nlohmann::json& j, const std::string& path);
// Returns defaults (all empty) when the file does not exist; LoadError when it is malformed.
GenerationConfig load_generation_config(const std::string& path);

}  // namespace jetmoe

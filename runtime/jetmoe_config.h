// Hyper-parameters of a JetMoE model, resolved from config.json (any of its three spellings) and
// cross-checked against the tensor shapes. Field names follow the transformers port.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace jetmoe {

struct JetMoeConfig {
  int vocab_size = 32000;
  int hidden_size = 2048;
  int num_hidden_layers = 0;       // no default: taken from config, checked against the tensors
  int num_key_value_heads = 16;    // = query heads per attention expert
  int kv_channels = 128;           // head dim
  int intermediate_size = 5632;    // MLP expert width F
  int num_local_experts = 8;       // E (same for MoA and MoE)
  int num_experts_per_tok = 2;     // k (same for MoA and MoE)
  int max_position_embeddings = 4096;
  float rope_theta = 10000.0f;
  float rms_norm_eps = 1e-6f;      // final norm only; the per-block norms always use 1e-6
  bool tie_word_embeddings = true;
  int bos_token_id = 1;
  int eos_token_id = 2;
  std::string activation_function = "silu";

  // Derived
  int num_attention_heads() const { return num_key_value_heads * num_experts_per_tok; }
  int kv_width() const { return num_key_value_heads * kv_channels; }  // = query width per expert

  static constexpr float kBlockNormEps = 1e-6f;  // hard-coded in the reference for both block norms
};

}  // namespace jetmoe

#include "loader/gguf_model.h"

#include "loader/gguf_file.h"
#include "loader/gguf_writer.h"
#include "loader/load_error.h"

namespace jetmoe {

void write_gguf_model(const ModelFiles& m, const std::string& path, const std::string& quant_name) {
  const JetMoeConfig& c = m.config;
  GgufWriter w;
  w.add_string("general.architecture", "jetmoe");
  w.add_string("general.name", m.path);
  w.add_u32("general.alignment", GgufWriter::kAlignment);
  w.add_string("general.quantization", quant_name.empty() ? "none" : quant_name);
  w.add_u32("jetmoe.vocab_size", static_cast<uint32_t>(c.vocab_size));
  w.add_u32("jetmoe.context_length", static_cast<uint32_t>(c.max_position_embeddings));
  w.add_u32("jetmoe.embedding_length", static_cast<uint32_t>(c.hidden_size));
  w.add_u32("jetmoe.block_count", static_cast<uint32_t>(c.num_hidden_layers));
  w.add_u32("jetmoe.feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  w.add_u32("jetmoe.attention.head_count", static_cast<uint32_t>(c.num_attention_heads()));
  w.add_u32("jetmoe.attention.head_count_kv", static_cast<uint32_t>(c.num_key_value_heads));
  w.add_u32("jetmoe.attention.key_length", static_cast<uint32_t>(c.kv_channels));
  w.add_u32("jetmoe.attention.value_length", static_cast<uint32_t>(c.kv_channels));
  w.add_f32("jetmoe.attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  w.add_f32("jetmoe.rope.freq_base", c.rope_theta);
  w.add_u32("jetmoe.expert_count", static_cast<uint32_t>(c.num_local_experts));
  w.add_u32("jetmoe.expert_used_count", static_cast<uint32_t>(c.num_experts_per_tok));
  w.add_bool("jetmoe.tie_word_embeddings", c.tie_word_embeddings);
  w.add_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(c.bos_token_id));
  w.add_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(c.eos_token_id));
  if (m.tokenizer) {
    const Tokenizer& t = *m.tokenizer;
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    for (int i = 0; i < t.vocab_size(); ++i) {
      tokens.push_back(t.piece(i));
      scores.push_back(t.score(i));
      types.push_back(t.gguf_token_type(i));
    }
    w.add_string("tokenizer.ggml.model", "llama");
    w.add_string_array("tokenizer.ggml.tokens", tokens);
    w.add_f32_array("tokenizer.ggml.scores", scores);
    w.add_i32_array("tokenizer.ggml.token_type", types);
    w.add_bool("tokenizer.ggml.add_bos_token", t.add_bos());
    w.add_bool("tokenizer.ggml.add_eos_token", false);
    const std::string proto = t.serialized();
    w.add_u8_array("jetmoe.tokenizer.sentencepiece", std::vector<uint8_t>(proto.begin(), proto.end()));
  }
  if (m.tokenizer_config.contains("chat_template") && m.tokenizer_config["chat_template"].is_string())
    w.add_string("tokenizer.chat_template", m.tokenizer_config["chat_template"].get<std::string>());
  JetMoeWeights weights = m.weights;
  weights.for_each_tensor(c, [&](WeightView& v, TensorRole, const std::vector<int64_t>&) {
    if (!v.empty()) w.add_tensor(v.name, v.dtype, v.shape, v.data, v.nbytes());
  });
  w.write(path);
}

void read_gguf_model(std::unique_ptr<GgufFile> f, ModelFiles& m) {
  const std::string arch = f->get_string("general.architecture");
  if (arch != "jetmoe")
    throw LoadError(f->description() + ": general.architecture is '" + arch + "', expected 'jetmoe'");
  JetMoeConfig& c = m.config;
  auto u = [&](const char* key) {
    const uint64_t v = f->get_uint(key);
    if (v == 0 || v > (1u << 30)) throw LoadError(f->description() + ": metadata key '" + key + "' = " + std::to_string(v) + " is out of range");
    return static_cast<int>(v);
  };
  c.vocab_size = u("jetmoe.vocab_size");
  c.max_position_embeddings = u("jetmoe.context_length");
  c.hidden_size = u("jetmoe.embedding_length");
  c.num_hidden_layers = u("jetmoe.block_count");
  c.intermediate_size = u("jetmoe.feed_forward_length");
  c.num_key_value_heads = u("jetmoe.attention.head_count_kv");
  c.kv_channels = u("jetmoe.attention.key_length");
  c.num_local_experts = u("jetmoe.expert_count");
  c.num_experts_per_tok = u("jetmoe.expert_used_count");
  if (c.num_experts_per_tok > c.num_local_experts)
    throw LoadError(f->description() + ": jetmoe.expert_used_count is more than jetmoe.expert_count");
  if (static_cast<int>(f->get_uint("jetmoe.attention.head_count")) != c.num_attention_heads())
    throw LoadError(f->description() + ": jetmoe.attention.head_count must be head_count_kv x expert_used_count");
  c.rms_norm_eps = static_cast<float>(f->get_float("jetmoe.attention.layer_norm_rms_epsilon"));
  c.rope_theta = static_cast<float>(f->get_float("jetmoe.rope.freq_base"));
  if (!(c.rms_norm_eps > 0 && c.rms_norm_eps < 1) || !(c.rope_theta > 0))
    throw LoadError(f->description() + ": rms epsilon or rope base out of range");
  c.tie_word_embeddings = f->has("jetmoe.tie_word_embeddings") ? f->get_bool("jetmoe.tie_word_embeddings") : true;
  c.bos_token_id = static_cast<int>(f->get_uint("tokenizer.ggml.bos_token_id"));
  c.eos_token_id = static_cast<int>(f->get_uint("tokenizer.ggml.eos_token_id"));
  if (f->has("jetmoe.tokenizer.sentencepiece")) {
    const auto& b = f->get_bytes("jetmoe.tokenizer.sentencepiece");
    const bool add_bos = f->has("tokenizer.ggml.add_bos_token") ? f->get_bool("tokenizer.ggml.add_bos_token") : true;
    m.tokenizer = Tokenizer::from_serialized(std::string(b.begin(), b.end()), f->description(), c.bos_token_id,
                                             c.eos_token_id, add_bos);
  }
  m.tokenizer_config = nlohmann::json::object();
  if (f->has("tokenizer.chat_template")) m.tokenizer_config["chat_template"] = f->get_string("tokenizer.chat_template");
  m.tokenizer_config["add_bos_token"] = m.tokenizer ? m.tokenizer->add_bos() : true;
  m.tensors = std::move(f);
  reconcile_config_with_tensors(c, *m.tensors, m.path);
  m.weights = bind_weights(c, *m.tensors);
}

}  // namespace jetmoe

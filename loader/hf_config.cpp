#include "loader/hf_config.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include "loader/load_error.h"
#include "loader/tensor_source.h"

namespace jetmoe {
namespace {

// Reads one field that may be spelled several ways; all spellings present must agree.
class Fields {
 public:
  Fields(const nlohmann::json& j, std::string path) : j_(j), path_(std::move(path)) {}

  std::optional<int64_t> integer(std::initializer_list<const char*> names) const {
    std::optional<int64_t> v;
    std::string first;
    for (const char* n : names) {
      if (!j_.contains(n) || j_[n].is_null()) continue;
      const auto& x = j_[n];
      int64_t got;
      if (x.is_number_integer()) got = x.get<int64_t>();
      else if (x.is_number_float() && std::fabs(x.get<double>()) < 9.0e15 && x.get<double>() == std::floor(x.get<double>()))
        got = static_cast<int64_t>(x.get<double>());  // 24.0 is a fine layer count
      else
        throw LoadError(path_ + ": field '" + n + "' is " + x.dump() + ", expected an integer");
      if (v && *v != got)
        throw LoadError(path_ + ": fields '" + first + "' = " + std::to_string(*v) + " and '" + n + "' = " +
                        std::to_string(got) + " contradict each other");
      if (!v) first = n;
      v = got;
    }
    return v;
  }
  std::optional<double> number(const char* n) const {
    if (!j_.contains(n) || j_[n].is_null()) return std::nullopt;
    if (!j_[n].is_number()) throw LoadError(path_ + ": field '" + std::string(n) + "' is " + j_[n].dump() + ", expected a number");
    const double v = j_[n].get<double>();
    if (!std::isfinite(v) || std::fabs(v) > 3.0e38)
      throw LoadError(path_ + ": field '" + std::string(n) + "' = " + j_[n].dump() + " is out of range");
    return v;
  }
  std::optional<bool> boolean(const char* n) const {
    if (!j_.contains(n) || j_[n].is_null()) return std::nullopt;
    if (!j_[n].is_boolean()) throw LoadError(path_ + ": field '" + std::string(n) + "' is " + j_[n].dump() + ", expected true or false");
    return j_[n].get<bool>();
  }
  std::optional<std::string> string(const char* n) const {
    if (!j_.contains(n) || j_[n].is_null()) return std::nullopt;
    if (!j_[n].is_string()) throw LoadError(path_ + ": field '" + std::string(n) + "' is " + j_[n].dump() + ", expected a string");
    return j_[n].get<std::string>();
  }

 private:
  const nlohmann::json& j_;
  std::string path_;
};

int positive(const std::string& path, const char* field, int64_t v, int64_t max = 1ll << 30) {
  if (v <= 0 || v > max)
    throw LoadError(path + ": field '" + field + "' = " + std::to_string(v) + " must be between 1 and " + std::to_string(max));
  return static_cast<int>(v);
}

int token_id(const std::string& path, const char* field, int64_t v) {
  if (v < 0 || v > INT32_MAX) throw LoadError(path + ": field '" + field + "' = " + std::to_string(v) + " is not a token id");
  return static_cast<int>(v);
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw LoadError(path + ": cannot open");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw LoadError(path + ": invalid JSON: " + e.what());
  }
}

}  // namespace

JetMoeConfig parse_hf_config(const nlohmann::json& j, const std::string& path) {
  if (!j.is_object()) throw LoadError(path + ": expected a JSON object");
  const Fields f(j, path);
  JetMoeConfig c;
  if (auto mt = f.string("model_type"); mt && *mt != "jetmoe")
    throw LoadError(path + ": model_type is '" + *mt + "', expected 'jetmoe'");

  if (auto v = f.integer({"vocab_size"})) c.vocab_size = positive(path, "vocab_size", *v);
  if (auto v = f.integer({"hidden_size", "n_embd"})) c.hidden_size = positive(path, "hidden_size", *v);
  if (auto v = f.integer({"num_hidden_layers", "n_layer"})) c.num_hidden_layers = positive(path, "num_hidden_layers", *v, 4096);
  if (auto v = f.integer({"kv_channels"})) c.kv_channels = positive(path, "kv_channels", *v, 1 << 16);
  if (auto v = f.integer({"intermediate_size", "ffn_hidden_size"})) c.intermediate_size = positive(path, "intermediate_size", *v);
  if (auto v = f.integer({"num_local_experts", "moe_num_experts"})) c.num_local_experts = positive(path, "num_local_experts", *v, 4096);
  if (auto v = f.integer({"num_experts_per_tok", "moe_top_k"})) c.num_experts_per_tok = positive(path, "num_experts_per_tok", *v, 4096);
  if (auto v = f.integer({"max_position_embeddings", "n_positions"}))
    c.max_position_embeddings = positive(path, "max_position_embeddings", *v);
  // KV heads: `num_key_value_heads`, or the v0 spelling `n_head` (which counts KV heads, not query heads).
  if (auto v = f.integer({"num_key_value_heads", "n_head"})) c.num_key_value_heads = positive(path, "num_key_value_heads", *v, 1 << 16);
  if (c.num_experts_per_tok > c.num_local_experts)
    throw LoadError(path + ": num_experts_per_tok = " + std::to_string(c.num_experts_per_tok) + " is more than num_local_experts = " +
                    std::to_string(c.num_local_experts));
  // Later spellings: num_attention_heads counts query heads = kv heads x top-k.
  if (auto v = f.integer({"num_attention_heads"}); v && *v != c.num_attention_heads())
    throw LoadError(path + ": num_attention_heads = " + std::to_string(*v) + " but num_key_value_heads x num_experts_per_tok = " +
                    std::to_string(c.num_key_value_heads) + " x " + std::to_string(c.num_experts_per_tok) + " = " +
                    std::to_string(c.num_attention_heads()));
  if (auto v = f.number("rope_theta")) c.rope_theta = static_cast<float>(*v);
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object() && !j.contains("rope_theta"))
    if (auto v = Fields(j["rope_parameters"], path + " (rope_parameters)").number("rope_theta")) c.rope_theta = static_cast<float>(*v);
  if (!(c.rope_theta > 0)) throw LoadError(path + ": rope_theta must be positive");
  if (auto v = f.number("rms_norm_eps")) c.rms_norm_eps = static_cast<float>(*v);
  if (!(c.rms_norm_eps > 0) || c.rms_norm_eps > 1) throw LoadError(path + ": rms_norm_eps must be in (0, 1]");
  if (auto v = f.boolean("tie_word_embeddings")) c.tie_word_embeddings = *v;
  if (auto v = f.integer({"bos_token_id"})) c.bos_token_id = token_id(path, "bos_token_id", *v);
  if (auto v = f.integer({"eos_token_id"})) c.eos_token_id = token_id(path, "eos_token_id", *v);
  if (auto v = f.string("activation_function")) {
    if (*v != "silu" && *v != "swish")
      throw LoadError(path + ": activation_function '" + *v + "' is not supported (JetMoE uses silu)");
    c.activation_function = *v;
  }
  if (auto v = f.boolean("glu"); v && !*v) throw LoadError(path + ": glu = false is not supported (JetMoE experts are SwiGLU)");
  if (auto v = f.boolean("bias"); v && !*v) {
    // The reference always has the two output biases; a checkpoint without them simply lacks the tensors.
  }
  return c;
}

JetMoeConfig load_hf_config(const std::string& path) { return parse_hf_config(read_json_file(path), path); }

void reconcile_config_with_tensors(JetMoeConfig& cfg, const TensorSource& src, const std::string& config_path) {
  const std::string where = src.description();
  const TensorInfo* emb = src.find("model.embed_tokens.weight");
  if (!emb) throw LoadError(where + ": missing tensor 'model.embed_tokens.weight'");
  if (emb->shape.size() != 2) throw LoadError(emb->file + ": tensor 'model.embed_tokens.weight' has shape " + shape_to_string(emb->shape) + ", expected [vocab, hidden]");
  auto check = [&](const char* field, int& cfg_value, int64_t actual, const std::string& tensor) {
    if (cfg_value != actual)
      throw LoadError(config_path + ": " + field + " = " + std::to_string(cfg_value) + " but tensor '" + tensor + "' gives " +
                      std::to_string(actual));
  };
  check("vocab_size", cfg.vocab_size, emb->shape[0], emb->name);
  check("hidden_size", cfg.hidden_size, emb->shape[1], emb->name);

  int layers = 0;
  for (const TensorInfo* t : src.tensors()) {
    const std::string& n = t->name;
    if (n.rfind("model.layers.", 0) != 0) continue;
    const size_t dot = n.find('.', 13);
    if (dot == std::string::npos) continue;
    try {
      const int i = std::stoi(n.substr(13, dot - 13));
      if (i >= 0 && i < (1 << 16)) layers = std::max(layers, i + 1);
    } catch (const std::exception&) {
    }
  }
  if (layers == 0) throw LoadError(where + ": no 'model.layers.N.*' tensors");
  if (cfg.num_hidden_layers == 0) cfg.num_hidden_layers = layers;
  if (cfg.num_hidden_layers != layers)
    throw LoadError(config_path + ": num_hidden_layers = " + std::to_string(cfg.num_hidden_layers) + " but the tensors have " +
                    std::to_string(layers) + " layers (model.layers.0.." + std::to_string(layers - 1) + ")");

  const std::string mlp_in = "model.layers.0.mlp.input_linear.weight";
  if (const TensorInfo* t = src.find(mlp_in)) {
    if (t->shape.size() != 3)
      throw LoadError(t->file + ": tensor '" + mlp_in + "' has shape " + shape_to_string(t->shape) + ", expected [experts, 2*intermediate, hidden]");
    check("num_local_experts", cfg.num_local_experts, t->shape[0], mlp_in);
    if (t->shape[1] % 2 != 0) throw LoadError(t->file + ": tensor '" + mlp_in + "' has an odd gate/up width " + std::to_string(t->shape[1]));
    check("intermediate_size", cfg.intermediate_size, t->shape[1] / 2, mlp_in);
  }
  const std::string kv = "model.layers.0.self_attention.kv_proj.weight";
  if (const TensorInfo* t = src.find(kv)) {
    if (t->shape.size() != 2 || t->shape[0] % 2 != 0)
      throw LoadError(t->file + ": tensor '" + kv + "' has shape " + shape_to_string(t->shape) + ", expected [2*kv_heads*kv_channels, hidden]");
    if (t->shape[0] / 2 != static_cast<int64_t>(cfg.kv_width()))
      throw LoadError(config_path + ": num_key_value_heads x kv_channels = " + std::to_string(cfg.num_key_value_heads) + " x " +
                      std::to_string(cfg.kv_channels) + " = " + std::to_string(cfg.kv_width()) + " but tensor '" + kv +
                      "' has " + std::to_string(t->shape[0] / 2) + " key rows");
  }
  const bool has_head = src.find("lm_head.weight") != nullptr;
  if (has_head) cfg.tie_word_embeddings = false;
  else if (!cfg.tie_word_embeddings)
    throw LoadError(config_path + ": tie_word_embeddings = false but the checkpoint has no 'lm_head.weight'");
}

GenerationConfig parse_generation_config(const nlohmann::json& j, const std::string& path) {
  if (!j.is_object()) throw LoadError(path + ": expected a JSON object");
  const Fields f(j, path);
  GenerationConfig g;
  if (auto v = f.integer({"bos_token_id"})) g.bos_token_id = token_id(path, "bos_token_id", *v);
  if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {
    const auto& e = j["eos_token_id"];
    if (e.is_number_integer()) g.eos_token_ids.push_back(token_id(path, "eos_token_id", e.get<int64_t>()));
    else if (e.is_array()) {
      for (const auto& x : e) {
        if (!x.is_number_integer()) throw LoadError(path + ": field 'eos_token_id' holds " + x.dump() + ", expected integers");
        g.eos_token_ids.push_back(token_id(path, "eos_token_id", x.get<int64_t>()));
      }
    } else {
      throw LoadError(path + ": field 'eos_token_id' is " + e.dump() + ", expected an integer or a list of integers");
    }
  }
  if (auto v = f.number("temperature")) g.temperature = static_cast<float>(*v);
  if (auto v = f.number("top_p")) g.top_p = static_cast<float>(*v);
  if (auto v = f.integer({"top_k"})) g.top_k = static_cast<int>(std::clamp<int64_t>(*v, 0, INT32_MAX));
  if (auto v = f.number("repetition_penalty")) g.repetition_penalty = static_cast<float>(*v);
  if (auto v = f.boolean("do_sample")) g.do_sample = *v;
  return g;
}

GenerationConfig load_generation_config(const std::string& path) {
  if (!std::filesystem::exists(path)) return {};
  return parse_generation_config(read_json_file(path), path);
}

}  // namespace jetmoe

// config.json in its three spellings, defaults, and contradictions with the tensors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "loader/hf_config.h"
#include "loader/load_error.h"
#include "loader/model_files.h"
#include "support/test_paths.h"

using namespace jetmoe;
using ::testing::HasSubstr;

namespace {

std::string config_error(const std::string& json) {
  try {
    parse_hf_config(nlohmann::json::parse(json), "config.json");
  } catch (const LoadError& e) {
    return e.what();
  }
  return "";
}

TEST(HfConfig, TransformersSpelling) {
  const auto c = parse_hf_config(nlohmann::json::parse(R"({"model_type":"jetmoe","hidden_size":2048,"num_hidden_layers":24,
    "num_key_value_heads":16,"kv_channels":128,"intermediate_size":5632,"num_local_experts":8,"num_experts_per_tok":2,
    "num_attention_heads":32,"rms_norm_eps":1e-5,"vocab_size":32000})"), "config.json");
  EXPECT_EQ(c.num_hidden_layers, 24);
  EXPECT_EQ(c.num_attention_heads(), 32);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
}

TEST(HfConfig, OriginalPackageSpelling) {
  const auto c = parse_hf_config(nlohmann::json::parse(R"({"model_type":"jetmoe","n_embd":2048,"n_layer":24,"n_head":16,
    "n_positions":4096,"kv_channels":128,"ffn_hidden_size":5632,"moe_num_experts":8,"moe_top_k":2,"glu":true,"bias":true})"),
                                 "config.json");
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.num_key_value_heads, 16);  // n_head counts KV heads in this spelling
  EXPECT_EQ(c.num_attention_heads(), 32);
  EXPECT_EQ(c.intermediate_size, 5632);
  EXPECT_EQ(c.num_local_experts, 8);
  EXPECT_EQ(c.max_position_embeddings, 4096);
}

TEST(HfConfig, UnionOfSpellingsMustAgree) {
  EXPECT_THAT(config_error(R"({"intermediate_size":5632,"ffn_hidden_size":5631})"), HasSubstr("contradict"));
  EXPECT_THAT(config_error(R"({"num_local_experts":8,"moe_num_experts":4})"), HasSubstr("moe_num_experts"));
  // Both spellings, agreeing: fine.
  EXPECT_EQ(config_error(R"({"intermediate_size":5632,"ffn_hidden_size":5632,"num_attention_heads":32})"), "");
}

TEST(HfConfig, BadFieldsNameTheField) {
  EXPECT_THAT(config_error(R"({"hidden_size":"big"})"), HasSubstr("'hidden_size'"));
  EXPECT_THAT(config_error(R"({"hidden_size":-4})"), HasSubstr("hidden_size"));
  EXPECT_THAT(config_error(R"({"num_attention_heads":7})"), HasSubstr("num_attention_heads"));
  EXPECT_THAT(config_error(R"({"model_type":"llama"})"), HasSubstr("model_type"));
  EXPECT_THAT(config_error(R"({"activation_function":"gelu"})"), HasSubstr("activation_function"));
  EXPECT_THAT(config_error(R"({"glu":false})"), HasSubstr("glu"));
  EXPECT_THAT(config_error(R"({"tie_word_embeddings":"yes"})"), HasSubstr("tie_word_embeddings"));
  EXPECT_THAT(config_error(R"({"num_experts_per_tok":3,"num_local_experts":2})"), HasSubstr("num_experts_per_tok"));
  EXPECT_THAT(config_error(R"([1,2])"), HasSubstr("JSON object"));
}

TEST(HfConfig, MinimalConfigTakesTransformersDefaults) {
  for (const auto& dir : test::golden_checkpoints()) {
    const auto g = test::read_json(dir / "golden.json");
    const auto files = load_model_files(dir.string());
    const auto& want = g["config"];
    const JetMoeConfig& c = files->config;
    SCOPED_TRACE(dir.filename().string());
    EXPECT_EQ(c.vocab_size, want["vocab_size"].get<int>());
    EXPECT_EQ(c.hidden_size, want["hidden_size"].get<int>());
    EXPECT_EQ(c.num_hidden_layers, want["num_hidden_layers"].get<int>());
    EXPECT_EQ(c.num_key_value_heads, want["num_key_value_heads"].get<int>());
    EXPECT_EQ(c.kv_channels, want["kv_channels"].get<int>());
    EXPECT_EQ(c.num_attention_heads(), want["num_attention_heads"].get<int>());
    EXPECT_EQ(c.intermediate_size, want["intermediate_size"].get<int>());
    EXPECT_EQ(c.num_local_experts, want["num_local_experts"].get<int>());
    EXPECT_EQ(c.num_experts_per_tok, want["num_experts_per_tok"].get<int>());
    EXPECT_FLOAT_EQ(c.rms_norm_eps, want["rms_norm_eps"].get<float>());
    EXPECT_FLOAT_EQ(c.rope_theta, want["rope_theta"].get<float>());
    EXPECT_EQ(c.tie_word_embeddings, want["tie_word_embeddings"].get<bool>());
  }
}

TEST(HfConfig, ConfigContradictingTensorsIsNamed) {
  const auto dir = test::golden_checkpoints().front();
  const auto tmp = test::make_temp_dir("cfg");
  for (const auto& e : std::filesystem::directory_iterator(dir)) std::filesystem::copy_file(e.path(), tmp / e.path().filename());
  auto cfg = test::read_json(dir / "config.json");
  auto expect_error = [&](const char* field, nlohmann::json value, const char* needle) {
    auto c = cfg;
    c[field] = value;
    std::ofstream(tmp / "config.json") << c.dump();
    try {
      load_model_files(tmp.string());
      ADD_FAILURE() << field << " = " << value << " was accepted";
    } catch (const LoadError& e) {
      EXPECT_THAT(e.what(), HasSubstr(needle)) << field;
      EXPECT_THAT(e.what(), HasSubstr("config.json")) << field;
    }
  };
  expect_error("num_hidden_layers", 12, "num_hidden_layers = 12");
  expect_error("hidden_size", 65, "hidden_size");
  expect_error("vocab_size", 1000, "vocab_size");
  expect_error("num_local_experts", 7, "num_local_experts");
  expect_error("intermediate_size", 5632, "intermediate_size");
  expect_error("kv_channels", 3, "kv_channels");
  expect_error("tie_word_embeddings", false, "lm_head.weight");
}

TEST(HfConfig, GenerationConfigEosIntOrList) {
  EXPECT_EQ(parse_generation_config(nlohmann::json::parse(R"({"eos_token_id":2})"), "g").eos_token_ids, std::vector<int>{2});
  EXPECT_EQ(parse_generation_config(nlohmann::json::parse(R"({"eos_token_id":[2,7]})"), "g").eos_token_ids,
            (std::vector<int>{2, 7}));
  EXPECT_THROW(parse_generation_config(nlohmann::json::parse(R"({"eos_token_id":"x"})"), "g"), LoadError);
  EXPECT_TRUE(load_generation_config("/nonexistent/generation_config.json").eos_token_ids.empty());
}

}  // namespace

// GoldenLoader: every golden checkpoint and the bundled austen model load, and their configs
// resolve to the documented values after the cross-check with the tensors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "loader/hf_config.h"
#include "loader/load_error.h"
#include "loader/safetensors.h"
#include "tests/loader/loader_test_util.h"

namespace jetmoe {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

struct Loaded {
  JetMoeConfig cfg;
  std::unique_ptr<SafetensorsCheckpoint> ck;
  GenerationConfig gen;
};

Loaded load_dir(const std::string& dir, LoadMode mode = LoadMode::Mmap) {
  Loaded l;
  l.cfg = load_hf_config(dir + "/config.json");
  l.ck = SafetensorsCheckpoint::open(dir, mode);
  reconcile_config_with_tensors(l.cfg, *l.ck, dir + "/config.json");
  l.gen = load_generation_config(dir + "/generation_config.json");
  return l;
}

size_t count_dtype(const SafetensorsCheckpoint& ck, DType t) {
  size_t n = 0;
  for (const TensorInfo* ti : ck.tensors()) n += ti->dtype == t;
  return n;
}

const std::string kGolden = JETMOE_GOLDEN_DIR;

TEST(GoldenLoader, TinyA) {
  Loaded l = load_dir(kGolden + "/jetmoe-tiny-a-f32");
  const JetMoeConfig& c = l.cfg;
  EXPECT_EQ(c.vocab_size, 256);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_local_experts, 4);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.kv_channels, 16);
  EXPECT_EQ(c.num_attention_heads(), 4);
  EXPECT_EQ(c.intermediate_size, 96);
  EXPECT_EQ(c.max_position_embeddings, 256);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(l.ck->tensors().size(), 2u * 11 + 2);
  EXPECT_EQ(count_dtype(*l.ck, DType::F32), l.ck->tensors().size());
  EXPECT_EQ(l.ck->find("lm_head.weight"), nullptr);
  const TensorInfo* kv = l.ck->find("model.layers.1.self_attention.kv_proj.weight");
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(kv->nbytes, 64u * 64 * 4);
  EXPECT_EQ(l.gen.eos_token_ids, (std::vector<int>{2}));
  EXPECT_EQ(l.gen.bos_token_id, 1);
  EXPECT_EQ(l.ck->file_bytes(), fs::file_size(kGolden + "/jetmoe-tiny-a-f32/model.safetensors"));
}

TEST(GoldenLoader, TinyCShardedMinimalConfig) {
  const std::string dir = kGolden + "/jetmoe-tiny-c-top1-sharded";
  for (LoadMode mode : {LoadMode::Mmap, LoadMode::Read}) {
    Loaded l = load_dir(dir, mode);
    const JetMoeConfig& c = l.cfg;
    EXPECT_EQ(c.num_experts_per_tok, 1);
    EXPECT_EQ(c.num_local_experts, 3);
    EXPECT_EQ(c.num_hidden_layers, 3);
    EXPECT_EQ(c.num_key_value_heads, 3);
    EXPECT_EQ(c.kv_channels, 8);
    EXPECT_EQ(c.num_attention_heads(), 3);
    EXPECT_EQ(c.vocab_size, 300);
    EXPECT_EQ(c.hidden_size, 48);
    EXPECT_EQ(c.intermediate_size, 40);
    EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
    // Left out of the minimal config: the defaults apply.
    EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-6f);
    EXPECT_EQ(c.max_position_embeddings, 4096);
    EXPECT_EQ(c.activation_function, "silu");
    EXPECT_EQ(c.bos_token_id, 1);
    EXPECT_EQ(c.eos_token_id, 2);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_EQ(l.ck->tensors().size(), 3u * 11 + 3);
    EXPECT_EQ(count_dtype(*l.ck, DType::F32), l.ck->tensors().size());
    ASSERT_NE(l.ck->find("lm_head.weight"), nullptr);
    // No generation_config.json in this folder: defaults.
    EXPECT_TRUE(l.gen.eos_token_ids.empty());
    // Both shards were opened.
    std::set<std::string> files;
    for (const TensorInfo* t : l.ck->tensors()) files.insert(fs::path(t->file).filename().string());
    EXPECT_EQ(files, (std::set<std::string>{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}));
    EXPECT_EQ(l.ck->file_bytes(), fs::file_size(dir + "/model-00001-of-00002.safetensors") +
                                      fs::file_size(dir + "/model-00002-of-00002.safetensors"));
  }
}

TEST(GoldenLoader, TinyEBf16) {
  Loaded l = load_dir(kGolden + "/jetmoe-tiny-e-8x2-bf16");
  EXPECT_EQ(l.cfg.num_local_experts, 8);
  EXPECT_EQ(l.cfg.num_experts_per_tok, 2);
  EXPECT_EQ(l.cfg.num_hidden_layers, 3);
  EXPECT_EQ(l.cfg.hidden_size, 96);
  EXPECT_EQ(l.cfg.kv_width(), 48);
  EXPECT_EQ(l.cfg.intermediate_size, 128);
  EXPECT_EQ(l.cfg.vocab_size, 384);
  EXPECT_EQ(l.ck->tensors().size(), 3u * 11 + 2);
  EXPECT_EQ(count_dtype(*l.ck, DType::BF16), l.ck->tensors().size());
  EXPECT_EQ(l.ck->find("model.layers.2.mlp.input_linear.weight")->shape, (std::vector<int64_t>{8, 256, 96}));
}

TEST(GoldenLoader, EveryGoldenFolderLoads) {
  // Also covers the blind checkpoints that may be added beside the documented ones.
  int n = 0;
  for (const auto& e : fs::directory_iterator(kGolden)) {
    if (!e.is_directory() || !fs::exists(e.path() / "config.json")) continue;
    SCOPED_TRACE(e.path().string());
    EXPECT_NO_THROW(load_dir(e.path().string()));
    ++n;
  }
  EXPECT_GE(n, 3);
}

TEST(GoldenLoader, AustenModel) {
  const std::string dir = std::string(JETMOE_MODELS_DIR) + "/austen-jetmoe";
  Loaded l = load_dir(dir, LoadMode::Mlock);
  EXPECT_EQ(l.cfg.vocab_size, 4096);
  EXPECT_EQ(l.cfg.hidden_size, 256);
  EXPECT_EQ(l.cfg.num_hidden_layers, 4);
  EXPECT_EQ(l.cfg.num_key_value_heads, 8);
  EXPECT_EQ(l.cfg.kv_channels, 32);
  EXPECT_EQ(l.cfg.num_local_experts, 8);
  EXPECT_EQ(l.cfg.intermediate_size, 512);
  EXPECT_EQ(l.cfg.max_position_embeddings, 1024);
  EXPECT_TRUE(l.cfg.tie_word_embeddings);
  EXPECT_EQ(l.ck->tensors().size(), 4u * 11 + 2);
  EXPECT_EQ(count_dtype(*l.ck, DType::BF16), l.ck->tensors().size());
  ASSERT_TRUE(l.gen.do_sample.has_value());
  EXPECT_TRUE(*l.gen.do_sample);
  EXPECT_FLOAT_EQ(*l.gen.temperature, 0.8f);
  EXPECT_FLOAT_EQ(*l.gen.top_p, 0.95f);
}

// The real config with the layer count edited: the cross-check names both numbers.
TEST(GoldenLoader, ConfigContradictingGoldenShapes) {
  testutil::ScratchDir d;
  const std::string src = kGolden + "/jetmoe-tiny-a-f32";
  auto j = nlohmann::json::parse(std::ifstream(src + "/config.json"));
  j["num_hidden_layers"] = 12;
  const std::string cfg_path = d.write("config.json", j.dump());
  JetMoeConfig c = load_hf_config(cfg_path);
  auto ck = SafetensorsCheckpoint::open(src);
  try {
    reconcile_config_with_tensors(c, *ck, cfg_path);
    FAIL() << "expected LoadError";
  } catch (const LoadError& e) {
    EXPECT_THAT(e.what(), HasSubstr(cfg_path + ": num_hidden_layers = 12 but the tensors have 2 layers (model.layers.0..1)"));
  }
}

}  // namespace
}  // namespace jetmoe

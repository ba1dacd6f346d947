// Quantization mixes: the type each row length gets (fit_quant_type) and quantize_weights'
// fallbacks, reported or refused (strict).
#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include "loader/quantize_weights.h"
#include "loader/synthetic_model.h"

namespace jetmoe {
namespace {

using ::testing::HasSubstr;

TEST(FitQuantType, KeepsTheTypeWhenItsBlockDividesTheRow) {
  EXPECT_EQ(fit_quant_type(DType::Q4_K, 512), DType::Q4_K);
  EXPECT_EQ(fit_quant_type(DType::Q4_0, 96), DType::Q4_0);
  EXPECT_EQ(fit_quant_type(DType::Q8_0, 32), DType::Q8_0);
}

TEST(FitQuantType, FallsToTheNextTypeDownNeverUp) {
  EXPECT_EQ(fit_quant_type(DType::Q4_K, 96), DType::Q4_0);   // 96 = 3 x 32, not a multiple of 256
  EXPECT_EQ(fit_quant_type(DType::Q4_K, 48), DType::F32);    // no block type divides 48
  EXPECT_EQ(fit_quant_type(DType::Q8_0, 33), DType::F32);
  EXPECT_EQ(fit_quant_type(DType::Q4_0, 256), DType::Q4_0);  // not up to Q4_K
  EXPECT_EQ(fit_quant_type(DType::Q8_0, 256), DType::Q8_0);
}

TEST(FitQuantType, FloatTypesStayAsTheyAre) {
  EXPECT_EQ(fit_quant_type(DType::F32, 33), DType::F32);
  EXPECT_EQ(fit_quant_type(DType::BF16, 96), DType::BF16);
}

// A float model whose hidden size (96) no Q4_K block divides: q4_k falls back to Q4_0 for the
// matrices whose rows are `hidden` long, and says which.
JetMoeConfig odd_width_config() {
  JetMoeConfig c = jetmoe_8b_config(1);
  c.vocab_size = 64;
  c.hidden_size = 96;
  c.num_key_value_heads = 1;
  c.kv_channels = 32;
  c.intermediate_size = 256;
  c.num_local_experts = 2;
  c.num_experts_per_tok = 1;
  c.max_position_embeddings = 16;
  return c;
}

TEST(QuantizeWeights, ReportsEachFallbackByTensor) {
  const JetMoeConfig cfg = odd_width_config();
  const auto model = make_synthetic_model(cfg, "f32", 1);
  QuantizeReport report;
  const auto q = quantize_weights(cfg, model->weights, quant_mix("q4_k-pure"), &report);
  ASSERT_FALSE(report.fallbacks.empty());
  bool w_in = false;
  for (const std::string& f : report.fallbacks) {
    EXPECT_THAT(f, HasSubstr(": Q4_K -> Q4_0 (rows of "));  // rows of 96 (hidden) or 32 (kv width)
    w_in = w_in || f == "model.layers.0.mlp.input_linear.weight: Q4_K -> Q4_0 (rows of 96)";
  }
  EXPECT_TRUE(w_in);  // [E, 2F, H]: rows of H = 96
  const TensorInfo* t = q->find("model.layers.0.mlp.input_linear.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::Q4_0);
  const TensorInfo* w_out = q->find("model.layers.0.mlp.output_linear.weight");  // rows of F = 256
  ASSERT_NE(w_out, nullptr);
  EXPECT_EQ(w_out->dtype, DType::Q4_K);
}

TEST(QuantizeWeights, StrictRefusesAFallbackNamingTheTensor) {
  const JetMoeConfig cfg = odd_width_config();
  const auto model = make_synthetic_model(cfg, "f32", 1);
  try {
    quantize_weights(cfg, model->weights, quant_mix("q4_k-pure"), nullptr, true);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("rows of 96 elements, not a multiple of the Q4_K block size 256"));
    EXPECT_THAT(e.what(), HasSubstr("model."));
  }
}

}  // namespace
}  // namespace jetmoe

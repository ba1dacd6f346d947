// Synthetic random-weight models: JetMoE-8B's shapes, every type built directly, the layout a
// quantized checkpoint would have, the same float values whatever the type, and runnable.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "loader/synthetic_model.h"
#include "quant/repack.h"
#include "ops/cpu/cpu_backend.h"
#include "runtime/jetmoe_model.h"

namespace jetmoe {
namespace {

// A small model whose every row length is a multiple of 256, so every block type fits.
JetMoeConfig small_config() {
  JetMoeConfig c = jetmoe_8b_config(2);
  c.vocab_size = 300;
  c.hidden_size = 256;
  c.num_key_value_heads = 2;
  c.kv_channels = 128;
  c.intermediate_size = 256;
  c.num_local_experts = 4;
  c.num_experts_per_tok = 2;
  c.max_position_embeddings = 64;
  return c;
}

std::vector<float> run_logits(const ModelFiles& f, const std::vector<int32_t>& tokens) {
  CpuBackend be;
  JetMoeModel m(f.config, f.weights, be);
  KvCache cache = m.make_cache(32);
  std::vector<float> logits;
  m.forward(tokens, cache, logits, true);
  return logits;
}

TEST(SyntheticModel, JetMoe8bShapes) {
  const JetMoeConfig c = jetmoe_8b_config();
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.num_hidden_layers, 24);
  EXPECT_EQ(c.num_key_value_heads, 16);
  EXPECT_EQ(c.kv_channels, 128);
  EXPECT_EQ(c.num_local_experts, 8);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.intermediate_size, 5632);
  EXPECT_EQ(jetmoe_8b_config(4).num_hidden_layers, 4);
  EXPECT_THROW(jetmoe_8b_config(0), std::invalid_argument);
  // The size of JetMoE-8B in bf16 (8.52 B weights) without building it.
  const double bf16 = static_cast<double>(synthetic_model_bytes(c, "bf16"));
  EXPECT_NEAR(bf16 / 2 / 1e9, 8.52, 0.02);
  // Q8_0 everywhere but the float routers/norms/biases: 34/32 bytes per weight.
  EXPECT_NEAR(static_cast<double>(synthetic_model_bytes(c, "q8_0")) / (bf16 / 2), 34.0 / 32.0, 0.001);
}

TEST(SyntheticModel, EveryTypeHasTheMixLayoutAndRuns) {
  const JetMoeConfig c = small_config();
  struct Want { const char* type; DType experts, kv, embed, router; };
  const Want wants[] = {
      {"f32", DType::F32, DType::F32, DType::F32, DType::F32},
      {"bf16", DType::BF16, DType::BF16, DType::BF16, DType::BF16},
      {"f16", DType::F16, DType::F16, DType::F16, DType::F16},
      {"q8_0", DType::Q8_0, DType::Q8_0, DType::Q8_0, DType::F32},
      {"q4_0", DType::Q4_0, DType::Q8_0, DType::Q8_0, DType::F32},
      {"q4_k", DType::Q4_K, DType::Q8_0, DType::Q8_0, DType::F32},
      {"q4_k-pure", DType::Q4_K, DType::Q4_K, DType::Q4_K, DType::F32},
  };
  for (const Want& w : wants) {
    SCOPED_TRACE(w.type);
    const auto f = make_synthetic_model(c, w.type);
    const LayerWeights& l = f->weights.layers[1];
    // Owned memory: Q8_0 / Q4_0 are held repacked when the AVX-512 kernels run.
    // ... in whole 16-row groups: the 300-row embedding stays in the file layout.
    auto memory_type = [](DType t, const WeightView& v) { return cpu_memory_type(t, v.shape[v.shape.size() - 2]); };
    EXPECT_EQ(l.moa.q_experts.dtype, memory_type(w.experts, l.moa.q_experts));
    EXPECT_EQ(l.moa.o_experts.dtype, memory_type(w.experts, l.moa.o_experts));
    EXPECT_EQ(l.moe.w_in.dtype, memory_type(w.experts, l.moe.w_in));
    EXPECT_EQ(l.moe.w_out.dtype, memory_type(w.experts, l.moe.w_out));
    EXPECT_EQ(l.moa.kv_proj.dtype, memory_type(w.kv, l.moa.kv_proj));
    EXPECT_EQ(f->weights.embed.dtype, memory_type(w.embed, f->weights.embed));
    EXPECT_EQ(f->weights.embed.dtype, file_type(f->weights.embed.dtype));
    EXPECT_EQ(l.moe.router.dtype, w.router);
    EXPECT_TRUE(f->weights.tied_head);
    EXPECT_EQ(f->tensors->file_bytes(), synthetic_model_bytes(c, w.type));
    EXPECT_EQ(f->tokenizer, nullptr);

    // bytes_per_token: the selected k of E experts, the shared parts, one embedding row, the head.
    size_t want = f->weights.embed.row_bytes() + f->weights.final_norm.nbytes() + f->weights.lm_head.nbytes();
    for (const LayerWeights& L : f->weights.layers)
      want += L.input_norm.nbytes() + L.post_attn_norm.nbytes() + L.moa.kv_proj.nbytes() + L.moa.router.nbytes() +
              L.moe.router.nbytes() + L.moa.bias.nbytes() + L.moe.bias.nbytes() +
              (L.moa.q_experts.nbytes() + L.moa.o_experts.nbytes() + L.moe.w_in.nbytes() + L.moe.w_out.nbytes()) / 2;
    EXPECT_EQ(f->bytes_per_token(), want);

    const auto logits = run_logits(*f, {5, 17, 299, 0});
    ASSERT_EQ(logits.size(), 4u * 300u);
    for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST(SyntheticModel, SameValuesInEveryTypeAndDeterministic) {
  const JetMoeConfig c = small_config();
  const auto f32 = make_synthetic_model(c, "f32", 7);
  const auto again = make_synthetic_model(c, "f32", 7);
  const auto other = make_synthetic_model(c, "f32", 8);
  const WeightView& a = f32->weights.layers[0].moe.w_in;
  EXPECT_EQ(std::memcmp(a.data, again->weights.layers[0].moe.w_in.data, a.nbytes()), 0);
  EXPECT_NE(std::memcmp(a.data, other->weights.layers[0].moe.w_in.data, a.nbytes()), 0);
  // Standard deviation 0.02 (uniform), norms 1, biases 0.
  const float* w = static_cast<const float*>(a.data);
  double ss = 0;
  for (int64_t i = 0; i < a.numel(); ++i) ss += static_cast<double>(w[i]) * w[i];
  EXPECT_NEAR(std::sqrt(ss / static_cast<double>(a.numel())), 0.02, 0.001);
  EXPECT_EQ(static_cast<const float*>(f32->weights.layers[0].input_norm.data)[3], 1.0f);
  EXPECT_EQ(static_cast<const float*>(f32->weights.layers[0].moe.bias.data)[3], 0.0f);

  // The q8_0 model is the f32 model quantized: same routing, logits within 8-bit error.
  const auto q8 = make_synthetic_model(c, "q8_0", 7);
  const std::vector<int32_t> toks = {1, 2, 3, 100, 200};
  const auto lf = run_logits(*f32, toks), lq = run_logits(*q8, toks);
  double num = 0, den = 0;
  for (size_t i = 0; i < lf.size(); ++i) num += (lf[i] - lq[i]) * (lf[i] - lq[i]), den += lf[i] * lf[i];
  EXPECT_LT(std::sqrt(num / den), 0.05);
}

// gguf_layout: the file's block types stay, whatever the CPU's kernels would repack, with the
// same bytes as the GGUF-layout rows the repacked matrix unpacks to, and the same logits.
TEST(SyntheticModel, GgufLayoutKeepsTheFileTypes) {
  const JetMoeConfig c = small_config();
  for (const char* type : {"q8_0", "q4_0", "q4_k"}) {
    SCOPED_TRACE(type);
    const auto file = make_synthetic_model(c, type, 3, true);
    const auto mem = make_synthetic_model(c, type, 3);
    const LayerWeights& lf = file->weights.layers[1];
    const LayerWeights& lm = mem->weights.layers[1];
    for (const auto& [f, m] : {std::pair{&lf.moe.w_in, &lm.moe.w_in}, std::pair{&lf.moa.kv_proj, &lm.moa.kv_proj}}) {
      EXPECT_EQ(f->dtype, file_type(m->dtype));
      EXPECT_FALSE(dtype_is_repacked(f->dtype));
      ASSERT_EQ(f->nbytes(), m->nbytes());
      const int64_t rows = f->shape[f->shape.size() - 2], n = f->shape.back();
      std::vector<uint8_t> row(f->row_bytes());
      for (int64_t r : {int64_t{0}, rows / 2 + 1, rows - 1}) {
        if (dtype_is_repacked(m->dtype))
          unpack_row(m->dtype, m->data, r, row.data(), n);
        else
          std::memcpy(row.data(), static_cast<const uint8_t*>(m->data) + r * m->row_bytes(), row.size());
        EXPECT_EQ(std::memcmp(row.data(), static_cast<const uint8_t*>(f->data) + r * f->row_bytes(), row.size()), 0) << r;
      }
    }
    EXPECT_EQ(file->bytes_per_token(), mem->bytes_per_token());
    const std::vector<int32_t> toks = {4, 40, 250};
    const auto a = run_logits(*file, toks), b = run_logits(*mem, toks);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-3f * (1.0f + std::fabs(b[i]))) << i;
  }
}

TEST(SyntheticModel, UnknownTypeIsAnError) {
  EXPECT_THROW(make_synthetic_model(small_config(), "q9_9"), std::invalid_argument);
  EXPECT_THROW(synthetic_model_bytes(small_config(), "int3"), std::invalid_argument);
}

}  // namespace
}  // namespace jetmoe

// The golden-checkpoint checks of a model against transformers' outputs (../shared/golden), shared
// by the CPU's per-ISA golden test and the other devices' (tests/ops/backend_ops_test.cpp).
#pragma once

#include <filesystem>

#include <nlohmann/json.hpp>

#include "runtime/jetmoe_model.h"

namespace jetmoe::test {

// The largest |a[i] - b[i]|.
float max_abs_diff(const float* a, const float* b, size_t n);

// Every sequence of golden.json `g` through `model` with all logits: all-position logits and the
// last position's within 1e-4, the last argmax, token log-probs within 1e-4 and their sum within 1e-3.
void expect_golden_sequences(JetMoeModel& model, const std::filesystem::path& dir, const nlohmann::json& g);

// The greedy continuation of golden.json's prompt with the KV cache, one token at a time: each
// step's logits within 1e-4 and the same generated ids.
void expect_golden_greedy(JetMoeModel& model, const std::filesystem::path& dir, const nlohmann::json& g);

}  // namespace jetmoe::test

// The JetMoE forward pass (jetmoe-architecture.md sections 3-8), written once against Backend.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "loader/jetmoe_weights.h"
#include "runtime/backend.h"
#include "runtime/jetmoe_config.h"
#include "runtime/kv_cache.h"

namespace jetmoe {

// Which experts the routers picked in the last forward call: per layer, T*k expert ids
// (token-major, slot 0 = the larger router logit) for the attention (MoA) and MLP (MoE) routers.
struct RoutingTrace {
  std::vector<std::vector<int32_t>> moa, moe;
};

// Several independent sequences packed into one forward call (batch scoring): token t sits at
// RoPE position rope_pos[t] of its own sequence and attends only to cache slots
// first_slot[t]..(its own slot), so no padding is computed and sequences never see each other.
struct PackedLayout {
  std::span<const int32_t> rope_pos, first_slot;
};

class JetMoeModel {
 public:
  // The weights (views into file memory) must outlive the model.
  JetMoeModel(const JetMoeConfig& cfg, const JetMoeWeights& weights, Backend& backend);

  const JetMoeConfig& config() const { return cfg_; }
  const JetMoeWeights& weights() const { return w_; }
  Backend& backend() { return be_; }

  // A cache for `capacity` tokens, its keys and values stored as cache_types() (F32 unless
  // set_cache_types chose otherwise).
  KvCache make_cache(int capacity) const;
  KvCacheTypes cache_types() const { return cache_types_; }
  // Throws std::invalid_argument if a type cannot hold this model's heads (Q8_0: kv_channels
  // must be a multiple of 32), naming --cache-type-k / --cache-type-v.
  void set_cache_types(KvCacheTypes types);

  // Runs `tokens` at positions cache.size() .. cache.size()+T-1, appends their keys/values to the
  // cache and advances it. logits receives [T, vocab] when all_logits, else [1, vocab] for the last
  // token. Prompts are processed in micro-batches of at most `ubatch` tokens.
  void forward(std::span<const int32_t> tokens, KvCache& cache, std::vector<float>& logits, bool all_logits,
               RoutingTrace* trace = nullptr, const PackedLayout* packed = nullptr);

  static constexpr int64_t kMicroBatch = 512;

 private:
  // This micro-batch's activations, in the backend's memory (see the BackendBuffers below).
  struct Act {
    float *x, *a, *kv, *q, *att, *z, *h, *y, *router_logits, *gates;
    int32_t* experts;
  };
  void forward_ubatch(const int32_t* tokens, int64_t T, KvCache& cache, float* logits, bool all_logits,
                      RoutingTrace* trace, const int32_t* rope_pos, const int32_t* first_slot);
  // Each sublayer leaves its experts' outputs in y; the next one's start_sublayer adds them (gated,
  // with `pending_bias`, the finished sublayer's bias) to x before its norm.
  void moa(const Act& a, int layer, int64_t T, const int32_t* rope_pos, const int32_t* first_slot, KvCache& cache,
           RoutingTrace* trace, const float* pending_bias);
  void moe(const Act& a, int layer, int64_t T, RoutingTrace* trace, const float* pending_bias);
  void start_sublayer(const Act& a, int64_t T, const std::vector<float>& norm, const WeightView& router,
                      const float* pending_bias);
  void trace_experts(const Act& a, int64_t T, std::vector<int32_t>& dst);
  void read_soon_next_start(const std::vector<float>& bias, const std::vector<float>& norm, const WeightView& router);

  JetMoeConfig cfg_;
  JetMoeWeights w_;
  Backend& be_;
  KvCacheTypes cache_types_;

  // Small tensors widened to float32 once at load (norm gains, biases, routers: ~1 M values for
  // JetMoE-8B). Routers stay float32 in every quantization mix: expert choice is the MoE failure mode.
  struct LayerSmall {
    std::vector<float> input_norm, post_norm, moa_bias, moe_bias, moa_router, moe_router;
    WeightView moa_router_view, moe_router_view;  // the routers above as [E, H] float32 matrices
  };
  std::vector<LayerSmall> small_;
  std::vector<float> final_norm_;

  // Activations in the backend's memory, sized for one micro-batch and reused (no per-token
  // allocations in steady state): the residual stream x, the normed input a, [K|V], queries,
  // attention outputs, the experts' z = [gate|up], h and outputs y (item order t*k + j), router
  // logits, gates and expert ids, and the logits rows.
  BackendBuffer x_, a_, kv_, q_, att_, z_, h_, y_, router_logits_, gates_, experts_, logits_;
  std::vector<int32_t> slot_, rope_pos_;  // host: cache slots and RoPE positions of the micro-batch
};

}  // namespace jetmoe

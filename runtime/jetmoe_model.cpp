#include "runtime/jetmoe_model.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "ops/cpu/float_dot.h"

namespace jetmoe {
namespace {

std::vector<float> widen(const WeightView& v, int64_t expect_numel) {
  std::vector<float> out(static_cast<size_t>(expect_numel), 0.0f);
  if (v.empty()) return out;  // absent bias: zero, as the reference initialises it
  if (dtype_is_quantized(v.dtype))
    throw std::invalid_argument("tensor '" + v.name + "' must be a float type, not " + dtype_name(v.dtype));
  float_row_to_f32(v.dtype, v.data, expect_numel, out.data());
  return out;
}

WeightView f32_view(const std::string& name, const std::vector<float>& data, std::vector<int64_t> shape) {
  WeightView v;
  v.name = name;
  v.data = data.data();
  v.dtype = DType::F32;
  v.shape = std::move(shape);
  return v;
}

}  // namespace

JetMoeModel::JetMoeModel(const JetMoeConfig& cfg, const JetMoeWeights& weights, Backend& backend)
    : cfg_(cfg), w_(weights), be_(backend) {
  const int64_t H = cfg.hidden_size, E = cfg.num_local_experts;
  small_.resize(w_.layers.size());
  for (size_t i = 0; i < w_.layers.size(); ++i) {
    const LayerWeights& l = w_.layers[i];
    LayerSmall& s = small_[i];
    s.input_norm = widen(l.input_norm, H);
    s.post_norm = widen(l.post_attn_norm, H);
    s.moa_bias = widen(l.moa.bias, H);
    s.moe_bias = widen(l.moe.bias, H);
    s.moa_router = widen(l.moa.router, E * H);
    s.moe_router = widen(l.moe.router, E * H);
    s.moa_router_view = f32_view(l.moa.router.name, s.moa_router, {E, H});
    s.moe_router_view = f32_view(l.moe.router.name, s.moe_router, {E, H});
  }
  final_norm_ = widen(w_.final_norm, H);

  // Everything the ops will be given, for a device backend to upload now rather than in the first
  // token: the large tensors as they are and the float32 copies above.
  std::vector<WeightView> all = {w_.embed, w_.lm_head, f32_view("final_norm", final_norm_, {H})};
  for (size_t i = 0; i < w_.layers.size(); ++i) {
    const LayerWeights& l = w_.layers[i];
    const LayerSmall& s = small_[i];
    for (const WeightView* v : {&l.moa.kv_proj, &l.moa.q_experts, &l.moa.o_experts, &l.moe.w_in, &l.moe.w_out})
      all.push_back(*v);
    all.push_back(s.moa_router_view);
    all.push_back(s.moe_router_view);
    for (const std::vector<float>* v : {&s.input_norm, &s.post_norm, &s.moa_bias, &s.moe_bias})
      all.push_back(f32_view("layer " + std::to_string(i) + " vector", *v, {H}));
  }
  be_.load_weights(all);
  for (BackendBuffer* b : {&x_, &a_, &kv_, &q_, &att_, &z_, &h_, &y_, &router_logits_, &gates_, &experts_, &logits_})
    *b = BackendBuffer(be_);
}

KvCache JetMoeModel::make_cache(int capacity) const {
  KvCache cache(cfg_.num_hidden_layers, cfg_.num_key_value_heads, cfg_.kv_channels, capacity, cache_types_);
  be_.prepare_cache(cache);
  return cache;
}

void JetMoeModel::set_cache_types(KvCacheTypes types) {
  check_kv_cache_types(types, cfg_.kv_channels);
  cache_types_ = types;
}

void JetMoeModel::forward(std::span<const int32_t> tokens, KvCache& cache, std::vector<float>& logits,
                          bool all_logits, RoutingTrace* trace, const PackedLayout* packed) {
  const int64_t T = static_cast<int64_t>(tokens.size()), V = cfg_.vocab_size;
  if (T == 0) throw std::invalid_argument("forward: no tokens");
  if (cache.size() + T > cache.capacity())
    throw std::out_of_range("the context holds " + std::to_string(cache.capacity()) + " tokens; " +
                            std::to_string(cache.size()) + " are in use and " + std::to_string(T) +
                            " more were given");
  for (int64_t t = 0; t < T; ++t)
    if (tokens[static_cast<size_t>(t)] < 0 || tokens[static_cast<size_t>(t)] >= V)
      throw std::out_of_range("token id " + std::to_string(tokens[static_cast<size_t>(t)]) +
                              " is outside the vocabulary 0.." + std::to_string(V - 1));
  if (packed && (packed->rope_pos.size() != tokens.size() || packed->first_slot.size() != tokens.size()))
    throw std::invalid_argument("forward: the packed layout must give a position and a first slot per token");
  logits.resize(static_cast<size_t>((all_logits ? T : 1) * V));
  if (trace) {
    trace->moa.assign(w_.layers.size(), {});
    trace->moe.assign(w_.layers.size(), {});
  }
  for (int64_t t0 = 0; t0 < T; t0 += kMicroBatch) {
    const int64_t n = std::min(kMicroBatch, T - t0);
    const bool last = t0 + n == T;
    float* out = all_logits ? logits.data() + t0 * V : (last ? logits.data() : nullptr);
    forward_ubatch(tokens.data() + t0, n, cache, out, all_logits, trace,
                   packed ? packed->rope_pos.data() + t0 : nullptr, packed ? packed->first_slot.data() + t0 : nullptr);
  }
}

void JetMoeModel::forward_ubatch(const int32_t* tokens, int64_t T, KvCache& cache, float* logits, bool all_logits,
                                 RoutingTrace* trace, const int32_t* rope_pos, const int32_t* first_slot) {
  const int64_t H = cfg_.hidden_size, KVW = cfg_.kv_width(), k = cfg_.num_experts_per_tok;
  const int64_t F = cfg_.intermediate_size, E = cfg_.num_local_experts, V = cfg_.vocab_size;
  slot_.resize(static_cast<size_t>(T));
  rope_pos_.resize(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    slot_[static_cast<size_t>(t)] = cache.size() + static_cast<int32_t>(t);
    rope_pos_[static_cast<size_t>(t)] = rope_pos ? rope_pos[t] : slot_[static_cast<size_t>(t)];
  }
  Act a;
  a.x = x_.reserve<float>(static_cast<size_t>(T * H));
  a.a = a_.reserve<float>(static_cast<size_t>(T * H));
  a.kv = kv_.reserve<float>(static_cast<size_t>(T * 2 * KVW));
  a.q = q_.reserve<float>(static_cast<size_t>(T * k * KVW));
  a.att = att_.reserve<float>(static_cast<size_t>(T * k * KVW));
  a.z = z_.reserve<float>(static_cast<size_t>(T * k * 2 * F));
  a.h = h_.reserve<float>(static_cast<size_t>(T * k * F));
  a.y = y_.reserve<float>(static_cast<size_t>(T * k * H));
  a.router_logits = router_logits_.reserve<float>(static_cast<size_t>(T * E));
  a.gates = gates_.reserve<float>(static_cast<size_t>(T * k));
  a.experts = experts_.reserve<int32_t>(static_cast<size_t>(T * k));

  const int64_t first = all_logits ? 0 : T - 1, n = logits ? T - first : 0;
  float* out = logits_.reserve<float>(static_cast<size_t>(std::max<int64_t>(n, 1) * V));

  // Every op of the step between begin_step and end_step (a device may record and replay it);
  // an exception in between ends the step as abandoned.
  struct StepGuard {
    Backend& be;
    bool done = false;
    ~StepGuard() {
      if (!done) be.end_step(false);
    }
  } guard{be_};
  be_.begin_step({T, n, &cache, trace == nullptr && first_slot == nullptr});
  be_.embed(tokens, T, w_.embed, a.x);
  const float* pending_bias = nullptr;  // the sublayer whose experts' outputs wait in y (see start_sublayer)
  for (int layer = 0; layer < cfg_.num_hidden_layers; ++layer) {
    const LayerSmall& s = small_[static_cast<size_t>(layer)];
    moa(a, layer, T, rope_pos_.data(), first_slot, cache, trace, pending_bias);
    pending_bias = s.moa_bias.data();
    moe(a, layer, T, trace, pending_bias);
    pending_bias = s.moe_bias.data();
  }
  if (pending_bias) be_.combine_experts(a.y, a.gates, T, cfg_.num_experts_per_tok, H, pending_bias, a.x);
  if (n > 0) {  // final norm (config eps) and the head, for every position or only the last one
    be_.rms_norm(a.x + first * H, n, H, final_norm_.data(), cfg_.rms_norm_eps, a.a);
    be_.matmul(a.a, n, w_.lm_head, out, V);
  }
  guard.done = true;
  be_.end_step(true);
  cache.set_size(cache.size() + static_cast<int>(T));
  if (n > 0) be_.copy_to_host(logits, out, sizeof(float) * static_cast<size_t>(n * V));
}

// A sublayer's start: the previous sublayer's gated experts (still in y, with its bias) join the
// residual stream x, then a = RMSNorm(x) and the router picks experts and gates. One backend op, so
// a device can do the whole seam in one launch.
void JetMoeModel::start_sublayer(const Act& a, int64_t T, const std::vector<float>& norm, const WeightView& router,
                                 const float* pending_bias) {
  const int64_t H = cfg_.hidden_size, k = cfg_.num_experts_per_tok;
  if (pending_bias)
    be_.combine_norm_route(a.y, a.gates, pending_bias, a.x, T, H, norm.data(), JetMoeConfig::kBlockNormEps, router, k,
                           a.a, a.router_logits, a.experts);
  else
    be_.norm_route(a.x, T, H, norm.data(), JetMoeConfig::kBlockNormEps, router, k, a.a, a.router_logits, a.experts,
                   a.gates);
}

// Decode: the next sublayer's start reads the finished sublayer's bias, a norm gain and a router
// (the final norm after the last layer: no router), all evicted by the layer's weight stream; the
// backend may fetch them while the last loop before it ends (Backend::read_soon).
void JetMoeModel::read_soon_next_start(const std::vector<float>& bias, const std::vector<float>& norm,
                                       const WeightView& router) {
  const ReadRange ranges[] = {{bias.data(), bias.size() * sizeof(float)},
                              {norm.data(), norm.size() * sizeof(float)},
                              {router.data, router.data ? router.nbytes() : 0}};
  be_.read_soon(ranges, router.data ? 3 : 2);
}

// The k experts each token chose, copied to the routing trace (a host copy: the ids live in the
// backend's memory).
void JetMoeModel::trace_experts(const Act& a, int64_t T, std::vector<int32_t>& dst) {
  const size_t n = static_cast<size_t>(T * cfg_.num_experts_per_tok);
  const size_t at = dst.size();
  dst.resize(at + n);
  be_.copy_to_host(dst.data() + at, a.experts, n * sizeof(int32_t));
}

// Mixture of attention heads (section 6): shared K/V projection, per-token routed query and
// output projections, query head j*kv_heads + h attends with KV head h.
void JetMoeModel::moa(const Act& a, int layer, int64_t T, const int32_t* pos, const int32_t* first_slot, KvCache& cache,
                      RoutingTrace* trace, const float* pending_bias) {
  const int64_t KVW = cfg_.kv_width(), k = cfg_.num_experts_per_tok;
  const LayerWeights& lw = w_.layers[static_cast<size_t>(layer)];
  const LayerSmall& s = small_[static_cast<size_t>(layer)];

  start_sublayer(a, T, s.input_norm, s.moa_router_view, pending_bias);
  if (trace) trace_experts(a, T, trace->moa[static_cast<size_t>(layer)]);

  // Queries of the selected experts, q = [T, k, kv_heads, head_dim]; the shared keys and values
  // (kv = [K | V] per token) read the same input, so they go to the backend together.
  const MatmulJob kvj = matmul_job(a.a, T, lw.moa.kv_proj, a.kv, 2 * KVW);
  be_.expert_matmul(a.a, T, k, false, a.experts, lw.moa.q_experts, a.q, &kvj);
  // RoPE on K, then K and V into the cache; each slot's query heads of token t sit at pos[t].
  be_.rope_store(a.kv, 2 * KVW, a.q, k * cfg_.num_key_value_heads, k * KVW, T, pos, cfg_.rope_theta, cache, layer,
                 slot_.data());
  be_.attention(a.q, T, k, slot_.data(), first_slot, cache, layer, a.att);

  // Output projections of the same experts (each slot's heads through its own expert); their
  // gated sum and the bias join the residual at the next sublayer's start.
  if (T == 1) read_soon_next_start(s.moa_bias, s.post_norm, s.moe_router_view);
  be_.expert_matmul(a.att, T, k, true, a.experts, lw.moa.o_experts, a.y, nullptr);
}

// Mixture of MLP experts (section 7): SwiGLU experts, gate half first.
void JetMoeModel::moe(const Act& a, int layer, int64_t T, RoutingTrace* trace, const float* pending_bias) {
  const int64_t k = cfg_.num_experts_per_tok;
  const LayerWeights& lw = w_.layers[static_cast<size_t>(layer)];
  const LayerSmall& s = small_[static_cast<size_t>(layer)];

  start_sublayer(a, T, s.post_norm, s.moe_router_view, pending_bias);
  if (trace) trace_experts(a, T, trace->moe[static_cast<size_t>(layer)]);

  // z = W_in[e] m for each (token, slot), h = silu(gate) * up, then W_out[e] h into y, which joins
  // x at the next sublayer's start.
  if (T == 1) {
    const bool last = layer + 1 == cfg_.num_hidden_layers;
    const LayerSmall& next = small_[static_cast<size_t>(last ? layer : layer + 1)];
    read_soon_next_start(s.moe_bias, last ? final_norm_ : next.input_norm, last ? WeightView{} : next.moa_router_view);
  }
  be_.expert_mlp(a.a, T, k, a.experts, lw.moe.w_in, lw.moe.w_out, a.z, a.h, a.y);
}

}  // namespace jetmoe

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

void append(std::vector<int32_t>& dst, const std::vector<int32_t>& src) { dst.insert(dst.end(), src.begin(), src.end()); }

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
  }
  final_norm_ = widen(w_.final_norm, H);
  be_.load_weights(w_);  // a device backend uploads the large tensors now, not in the first token
}

KvCache JetMoeModel::make_cache(int capacity) const {
  return KvCache(cfg_.num_hidden_layers, cfg_.num_key_value_heads, cfg_.kv_channels, capacity, cache_types_);
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
  const int64_t H = cfg_.hidden_size;
  x_.resize(static_cast<size_t>(T * H));
  a_.resize(static_cast<size_t>(T * H));
  slot_.resize(static_cast<size_t>(T));
  rope_pos_.resize(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    slot_[static_cast<size_t>(t)] = cache.size() + static_cast<int32_t>(t);
    rope_pos_[static_cast<size_t>(t)] = rope_pos ? rope_pos[t] : slot_[static_cast<size_t>(t)];
  }

  be_.embed(tokens, T, w_.embed, x_.data());
  for (int layer = 0; layer < cfg_.num_hidden_layers; ++layer) {
    moa(layer, T, rope_pos_.data(), first_slot, cache, trace);
    moe(layer, T, trace);
  }
  cache.set_size(cache.size() + static_cast<int>(T));
  if (logits == nullptr) return;

  // Final norm (config eps) and the head, for every position or only the last one.
  const int64_t first = all_logits ? 0 : T - 1, n = T - first;
  be_.rms_norm(x_.data() + first * H, n, H, final_norm_.data(), cfg_.rms_norm_eps, a_.data());
  be_.matmul(a_.data(), n, w_.lm_head, logits, cfg_.vocab_size);
}

// Top-k router (section 5): logits in float32, the k largest (lower index first on ties), gates =
// softmax over the k selected logits only.
void JetMoeModel::route(const float* a, int64_t T, const WeightView& router, std::vector<int32_t>& experts,
                        std::vector<float>& gates) {
  const int64_t E = cfg_.num_local_experts, k = cfg_.num_experts_per_tok;
  router_logits_.resize(static_cast<size_t>(T * E));
  be_.matmul(a, T, router, router_logits_.data(), E);
  experts.resize(static_cast<size_t>(T * k));
  gates.resize(static_cast<size_t>(T * k));
  for (int64_t t = 0; t < T; ++t) {
    const float* s = router_logits_.data() + t * E;
    int32_t* sel = experts.data() + t * k;
    for (int64_t j = 0; j < k; ++j) {
      int32_t best = -1;
      for (int32_t e = 0; e < E; ++e) {
        if (std::find(sel, sel + j, e) != sel + j) continue;
        if (best < 0 || s[e] > s[best]) best = e;
      }
      sel[j] = best;
    }
    const float mx = s[sel[0]];
    float sum = 0.0f;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(s[sel[j]] - mx);
    for (int64_t j = 0; j < k; ++j) gates[static_cast<size_t>(t * k + j)] = std::exp(s[sel[j]] - mx) / sum;
  }
}

// Counting sort of the (token, slot) items by the expert they chose; experts nobody chose get an
// empty range and are never touched.
void JetMoeModel::group_by_expert(int64_t T) {
  const int64_t k = cfg_.num_experts_per_tok, E = cfg_.num_local_experts, n = T * k;
  expert_begin_.assign(static_cast<size_t>(E + 1), 0);
  for (int64_t i = 0; i < n; ++i) ++expert_begin_[static_cast<size_t>(experts_[static_cast<size_t>(i)]) + 1];
  for (int64_t e = 0; e < E; ++e) expert_begin_[static_cast<size_t>(e + 1)] += expert_begin_[static_cast<size_t>(e)];
  order_.resize(static_cast<size_t>(n));
  std::vector<int64_t>& next = scratch_begin_;
  next.assign(expert_begin_.begin(), expert_begin_.end() - 1);
  for (int64_t i = 0; i < n; ++i)
    order_[static_cast<size_t>(next[static_cast<size_t>(experts_[static_cast<size_t>(i)])]++)] = static_cast<int32_t>(i);
}

void JetMoeModel::gather_items(const float* x, int64_t stride, bool per_slot, int64_t T) {
  const int64_t k = cfg_.num_experts_per_tok;
  gx_.resize(static_cast<size_t>(T * k * stride));
  for (size_t r = 0; r < order_.size(); ++r) {
    const int64_t item = order_[r];
    std::copy_n(x + (per_slot ? item : item / k) * stride, stride, gx_.data() + static_cast<int64_t>(r) * stride);
  }
}

// All selected experts go to the backend as one group (one launch / one parallel region).
void JetMoeModel::run_experts(const WeightView& W, const float* x, float* y, const MatmulJob* extra) {
  const int64_t in = W.shape[2], out = W.shape[1];
  const size_t expert_bytes = static_cast<size_t>(out) * W.row_bytes();
  jobs_.clear();
  if (extra) jobs_.push_back(*extra);
  for (size_t e = 0; e + 1 < expert_begin_.size(); ++e) {
    const int64_t b = expert_begin_[e], n = expert_begin_[e + 1] - b;
    if (n == 0) continue;
    MatmulJob j;
    j.x = x + b * in;
    j.T = n;
    j.w = static_cast<const uint8_t*>(W.data) + e * expert_bytes;
    j.dtype = W.dtype;
    j.rows = out;
    j.cols = in;
    j.y = y + b * out;
    j.ldy = out;
    jobs_.push_back(j);
  }
  be_.matmul_group(jobs_.data(), jobs_.size());
}

void JetMoeModel::scatter_items(const float* y, int64_t cols, float* dst, int64_t ld, bool gated) {
  const int64_t k = cfg_.num_experts_per_tok;
  for (size_t r = 0; r < order_.size(); ++r) {
    const int64_t item = order_[r];
    const float* src = y + static_cast<int64_t>(r) * cols;
    if (gated) {
      float* d = dst + (item / k) * ld;
      const float g = gates_[static_cast<size_t>(item)];
      for (int64_t i = 0; i < cols; ++i) d[i] += g * src[i];
    } else {
      std::copy_n(src, cols, dst + item * ld);
    }
  }
}

// Mixture of attention heads (section 6): shared K/V projection, per-token routed query and
// output projections, query head j*kv_heads + h attends with KV head h.
void JetMoeModel::moa(int layer, int64_t T, const int32_t* pos, const int32_t* first_slot, KvCache& cache,
                      RoutingTrace* trace) {
  const int64_t H = cfg_.hidden_size, KVW = cfg_.kv_width(), k = cfg_.num_experts_per_tok;
  const LayerWeights& lw = w_.layers[static_cast<size_t>(layer)];
  const LayerSmall& s = small_[static_cast<size_t>(layer)];

  be_.rms_norm(x_.data(), T, H, s.input_norm.data(), JetMoeConfig::kBlockNormEps, a_.data());
  route(a_.data(), T, f32_view(lw.moa.router.name, s.moa_router, {cfg_.num_local_experts, H}), experts_, gates_);
  if (trace) append(trace->moa[static_cast<size_t>(layer)], experts_);

  // Shared keys and values: kv = [K | V] per token; RoPE on K, then into the cache.
  // The shared K/V projection and the selected experts' query projections read the same input,
  // so they go to the backend as one group (one parallel region per decode step, not two).
  kv_.resize(static_cast<size_t>(T * 2 * KVW));
  q_.resize(static_cast<size_t>(T * k * KVW));
  group_by_expert(T);
  gather_items(a_.data(), H, false, T);
  gy_.resize(static_cast<size_t>(T * k * KVW));
  const MatmulJob kvj = matmul_job(a_.data(), T, lw.moa.kv_proj, kv_.data(), 2 * KVW);
  run_experts(lw.moa.q_experts, gx_.data(), gy_.data(), &kvj);
  // K and V: RoPE on K, then into the cache. Queries: q is [T, k, kv_heads, head_dim].
  be_.rope(kv_.data(), T, cfg_.num_key_value_heads, cfg_.kv_channels, 2 * KVW, pos, cfg_.rope_theta);
  be_.kv_store(cache, layer, kv_.data(), kv_.data() + KVW, 2 * KVW, T, slot_.data());
  scatter_items(gy_.data(), KVW, q_.data(), KVW, false);
  // Each slot's heads of token t sit at position pos[t]: rope over [T, k*kv_heads] heads.
  be_.rope(q_.data(), T, k * cfg_.num_key_value_heads, cfg_.kv_channels, k * KVW, pos, cfg_.rope_theta);

  att_.resize(q_.size());
  be_.attention(q_.data(), T, k, slot_.data(), first_slot, cache, layer, att_.data());

  // Output projections of the same experts, gate-weighted, plus the one bias; residual add.
  out_.assign(static_cast<size_t>(T * H), 0.0f);
  gather_items(att_.data(), KVW, true, T);
  gy_.resize(static_cast<size_t>(T * k * H));
  run_experts(lw.moa.o_experts, gx_.data(), gy_.data());
  scatter_items(gy_.data(), H, out_.data(), H, true);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < H; ++i) x_[static_cast<size_t>(t * H + i)] += out_[static_cast<size_t>(t * H + i)] + s.moa_bias[static_cast<size_t>(i)];
}

// Mixture of MLP experts (section 7): SwiGLU experts, gate half first.
void JetMoeModel::moe(int layer, int64_t T, RoutingTrace* trace) {
  const int64_t H = cfg_.hidden_size, F = cfg_.intermediate_size, k = cfg_.num_experts_per_tok;
  const LayerWeights& lw = w_.layers[static_cast<size_t>(layer)];
  const LayerSmall& s = small_[static_cast<size_t>(layer)];

  be_.rms_norm(x_.data(), T, H, s.post_norm.data(), JetMoeConfig::kBlockNormEps, a_.data());
  route(a_.data(), T, f32_view(lw.moe.router.name, s.moe_router, {cfg_.num_local_experts, H}), experts_, gates_);
  if (trace) append(trace->moe[static_cast<size_t>(layer)], experts_);

  // z = W_in[e] m for each (token, slot), then h = silu(gate) * up; z and h stay in expert order
  // (rows of order_), so W_out reads h in place.
  group_by_expert(T);
  gather_items(a_.data(), H, false, T);
  z_.resize(static_cast<size_t>(T * k * 2 * F));
  run_experts(lw.moe.w_in, gx_.data(), z_.data());
  h_.resize(static_cast<size_t>(T * k * F));
  be_.silu_mul(z_.data(), T * k, F, h_.data());

  out_.assign(static_cast<size_t>(T * H), 0.0f);
  gy_.resize(static_cast<size_t>(T * k * H));
  run_experts(lw.moe.w_out, h_.data(), gy_.data());
  scatter_items(gy_.data(), H, out_.data(), H, true);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < H; ++i) x_[static_cast<size_t>(t * H + i)] += out_[static_cast<size_t>(t * H + i)] + s.moe_bias[static_cast<size_t>(i)];
}

}  // namespace jetmoe

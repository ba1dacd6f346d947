#include "loader/jetmoe_weights.h"

#include <stdexcept>

#include "loader/load_error.h"

namespace jetmoe {

const char* tensor_role_name(TensorRole r) {
  switch (r) {
    case TensorRole::Embedding: return "embedding";
    case TensorRole::Head: return "head";
    case TensorRole::Norm: return "norm";
    case TensorRole::Bias: return "bias";
    case TensorRole::Router: return "router";
    case TensorRole::KvProj: return "kv_proj";
    case TensorRole::AttnQ: return "attn_q";
    case TensorRole::AttnO: return "attn_o";
    case TensorRole::MlpIn: return "mlp_in";
    case TensorRole::MlpOut: return "mlp_out";
  }
  return "?";
}

int64_t WeightView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t WeightView::nbytes() const {
  return dtype_row_bytes(dtype, static_cast<size_t>(cols())) * static_cast<size_t>(numel() / cols());
}

WeightView WeightView::expert(int64_t e) const {
  if (shape.size() != 3) throw std::logic_error("expert() on a tensor that is not [E, out, in]: " + name);
  WeightView v;
  v.name = name + "[" + std::to_string(e) + "]";
  v.dtype = dtype;
  v.shape = {shape[1], shape[2]};
  v.data = static_cast<const uint8_t*>(data) + static_cast<size_t>(e) * v.nbytes();
  return v;
}

WeightView WeightView::row_slice(int64_t r0, int64_t n) const {
  WeightView v = *this;
  v.shape = {n, cols()};
  v.data = static_cast<const uint8_t*>(data) + static_cast<size_t>(r0) * row_bytes();
  return v;
}

std::string layer_tensor_name(int layer, const char* suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}

void JetMoeWeights::for_each_tensor(const JetMoeConfig& c, const TensorFn& f) {
  const int64_t H = c.hidden_size, V = c.vocab_size, E = c.num_local_experts;
  const int64_t KVW = c.kv_width(), F = c.intermediate_size;
  f(embed, TensorRole::Embedding, {V, H});
  for (auto& l : layers) {
    f(l.input_norm, TensorRole::Norm, {H});
    f(l.moa.kv_proj, TensorRole::KvProj, {2 * KVW, H});
    f(l.moa.router, TensorRole::Router, {E, H});
    f(l.moa.q_experts, TensorRole::AttnQ, {E, KVW, H});
    f(l.moa.o_experts, TensorRole::AttnO, {E, H, KVW});
    f(l.moa.bias, TensorRole::Bias, {H});
    f(l.post_attn_norm, TensorRole::Norm, {H});
    f(l.moe.router, TensorRole::Router, {E, H});
    f(l.moe.w_in, TensorRole::MlpIn, {E, 2 * F, H});
    f(l.moe.w_out, TensorRole::MlpOut, {E, H, F});
    f(l.moe.bias, TensorRole::Bias, {H});
  }
  f(final_norm, TensorRole::Norm, {H});
  if (!tied_head) f(lm_head, TensorRole::Head, {V, H});
}

JetMoeWeights named_weights(const JetMoeConfig& cfg) {
  JetMoeWeights w;
  w.tied_head = cfg.tie_word_embeddings;
  w.layers.resize(static_cast<size_t>(cfg.num_hidden_layers));
  w.embed.name = "model.embed_tokens.weight";
  for (int i = 0; i < cfg.num_hidden_layers; ++i) {
    LayerWeights& l = w.layers[static_cast<size_t>(i)];
    l.input_norm.name = layer_tensor_name(i, "input_layernorm.weight");
    l.post_attn_norm.name = layer_tensor_name(i, "post_attention_layernorm.weight");
    l.moa.kv_proj.name = layer_tensor_name(i, "self_attention.kv_proj.weight");
    l.moa.router.name = layer_tensor_name(i, "self_attention.experts.router.layer.weight");
    l.moa.q_experts.name = layer_tensor_name(i, "self_attention.experts.input_linear.weight");
    l.moa.o_experts.name = layer_tensor_name(i, "self_attention.experts.output_linear.weight");
    l.moa.bias.name = layer_tensor_name(i, "self_attention.experts.bias");
    l.moe.router.name = layer_tensor_name(i, "mlp.router.layer.weight");
    l.moe.w_in.name = layer_tensor_name(i, "mlp.input_linear.weight");
    l.moe.w_out.name = layer_tensor_name(i, "mlp.output_linear.weight");
    l.moe.bias.name = layer_tensor_name(i, "mlp.bias");
  }
  w.final_norm.name = "model.norm.weight";
  w.lm_head.name = "lm_head.weight";
  return w;
}

JetMoeWeights bind_weights(const JetMoeConfig& cfg, const TensorSource& src) {
  JetMoeWeights w = named_weights(cfg);
  w.for_each_tensor(cfg, [&](WeightView& v, TensorRole role, const std::vector<int64_t>& expect) {
    const TensorInfo* t = src.find(v.name);
    if (t == nullptr) {
      if (role == TensorRole::Bias) return;  // absent expert bias == zero (reference init)
      throw LoadError(src.description() + ": missing tensor '" + v.name + "' (expected shape " +
                      shape_to_string(expect) + ")");
    }
    if (t->shape != expect)
      throw LoadError(t->file + ": tensor '" + v.name + "' has shape " + shape_to_string(t->shape) +
                      ", expected " + shape_to_string(expect));
    if (dtype_is_quantized(t->dtype) && (expect.back() % static_cast<int64_t>(dtype_block_elems(t->dtype))) != 0)
      throw LoadError(t->file + ": tensor '" + v.name + "' of type " + dtype_name(t->dtype) +
                      " has rows of " + std::to_string(expect.back()) + " elements, not a multiple of " +
                      std::to_string(dtype_block_elems(t->dtype)));
    v.data = t->data;
    v.dtype = t->dtype;
    v.shape = t->shape;
    const size_t want = v.nbytes();
    if (t->nbytes != want)
      throw LoadError(t->file + ": tensor '" + v.name + "' holds " + std::to_string(t->nbytes) +
                      " bytes, expected " + std::to_string(want) + " for " + dtype_name(t->dtype) + " " +
                      shape_to_string(t->shape));
  });
  if (w.tied_head) w.lm_head = w.embed, w.lm_head.name = "lm_head.weight (tied to model.embed_tokens.weight)";
  return w;
}

}  // namespace jetmoe

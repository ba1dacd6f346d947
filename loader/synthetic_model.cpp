#include "loader/synthetic_model.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "loader/jetmoe_weights.h"
#include "loader/memory_tensor_source.h"
#include "loader/quantize_weights.h"
#include "quant/quantize.h"

namespace jetmoe {

JetMoeConfig jetmoe_8b_config(int layers) {
  if (layers < 1) throw std::invalid_argument("a synthetic model needs at least one layer (got " + std::to_string(layers) + ")");
  JetMoeConfig c;  // the defaults are JetMoE-8B's (runtime/jetmoe_config.h)
  c.vocab_size = 32000;
  c.hidden_size = 2048;
  c.num_hidden_layers = layers;
  c.num_key_value_heads = 16;
  c.kv_channels = 128;
  c.intermediate_size = 5632;
  c.num_local_experts = 8;
  c.num_experts_per_tok = 2;
  c.max_position_embeddings = 4096;
  c.tie_word_embeddings = true;
  return c;
}

std::vector<std::string> synthetic_type_names() {
  std::vector<std::string> names = {"f32", "bf16", "f16"};
  for (const std::string& q : quant_mix_names()) names.push_back(q);
  return names;
}

namespace {

struct Spec {
  std::string name;
  TensorRole role;
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
};

// Every tensor of the model with its role, shape and the type `type` gives it. The names are
// those bind_weights looks up (it checks them again when the model is bound).
std::vector<Spec> tensor_specs(const JetMoeConfig& cfg, const std::string& type) {
  bool is_float = true;
  DType float_type = DType::F32;
  QuantMix mix;
  if (type == "f32") {
    float_type = DType::F32;
  } else if (type == "bf16") {
    float_type = DType::BF16;
  } else if (type == "f16") {
    float_type = DType::F16;
  } else {
    try {
      mix = quant_mix(type);
    } catch (const std::invalid_argument&) {
      std::string known;
      for (const auto& n : synthetic_type_names()) known += (known.empty() ? "" : ", ") + n;
      throw std::invalid_argument("unknown synthetic model type '" + type + "' (expected one of: " + known + ")");
    }
    is_float = false;
  }

  JetMoeWeights w = named_weights(cfg);

  std::vector<Spec> specs;
  w.for_each_tensor(cfg, [&](WeightView& v, TensorRole role, const std::vector<int64_t>& shape) {
    Spec s{v.name, role, shape};
    if (is_float) {
      // A float checkpoint stores everything in its one type (JetMoE-8B: bf16 throughout).
      s.dtype = float_type;
    } else {
      switch (role) {
        case TensorRole::AttnQ: case TensorRole::AttnO: case TensorRole::MlpIn: case TensorRole::MlpOut:
          s.dtype = mix.experts; break;
        case TensorRole::KvProj: s.dtype = mix.kv_proj; break;
        case TensorRole::Embedding: case TensorRole::Head: s.dtype = mix.embed_head; break;
        default: s.dtype = DType::F32;  // routers, norms, biases stay float in every mix
      }
      s.dtype = fit_quant_type(s.dtype, shape.back());  // the layout a quantized checkpoint would have
    }
    specs.push_back(std::move(s));
  });
  return specs;
}

size_t spec_bytes(const Spec& s) {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < s.shape.size(); ++i) rows *= s.shape[i];
  return dtype_row_bytes(s.dtype, static_cast<size_t>(s.shape.back())) * static_cast<size_t>(rows);
}

inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Row `row` of tensor number `tensor`: a function of (seed, tensor, row) only, so the values do
// not depend on how rows are split over threads, and are the same whatever the storage type.
void generate_row(uint64_t seed, uint64_t tensor, int64_t row, TensorRole role, float* out, int64_t n) {
  if (role == TensorRole::Norm) {
    std::fill_n(out, n, 1.0f);
    return;
  }
  if (role == TensorRole::Bias) {
    std::fill_n(out, n, 0.0f);
    return;
  }
  uint64_t state = seed * 0x2545f4914f6cdd1dull ^ (tensor << 40) ^ static_cast<uint64_t>(row);
  splitmix64(state);
  // Uniform on [-a, a] with a = 0.02 * sqrt(3): standard deviation 0.02, like the reference init.
  constexpr float kA = 0.02f * 1.7320508f;
  constexpr float kScale = 2.0f * kA / 16777216.0f;  // 24 random bits per value
  for (int64_t i = 0; i < n; i += 2) {
    const uint64_t r = splitmix64(state);
    out[i] = static_cast<float>(r >> 40) * kScale - kA;
    if (i + 1 < n) out[i + 1] = static_cast<float>((r >> 8) & 0xffffffu) * kScale - kA;
  }
}

void fill_tensor(uint64_t seed, uint64_t tensor, const Spec& s, uint8_t* dst) {
  const int64_t cols = s.shape.back();
  const int64_t rows = static_cast<int64_t>(spec_bytes(s) / dtype_row_bytes(s.dtype, static_cast<size_t>(cols)));
  const size_t rb = dtype_row_bytes(s.dtype, static_cast<size_t>(cols));
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(cols));  // one row of float per thread, never a tensor
#pragma omp for schedule(dynamic, 64)
    for (int64_t r = 0; r < rows; ++r) {
      uint8_t* d = dst + static_cast<size_t>(r) * rb;
      float* x = s.dtype == DType::F32 ? reinterpret_cast<float*>(d) : row.data();
      generate_row(seed, tensor, r, s.role, x, cols);
      switch (s.dtype) {
        case DType::F32: break;
        case DType::BF16: {
          auto* h = reinterpret_cast<uint16_t*>(d);
          for (int64_t i = 0; i < cols; ++i) h[i] = f32_to_bf16(x[i]);
          break;
        }
        case DType::F16: {
          auto* h = reinterpret_cast<uint16_t*>(d);
          for (int64_t i = 0; i < cols; ++i) h[i] = f32_to_f16(x[i]);
          break;
        }
        default: quantize_row_maxabs(s.dtype, x, d, cols);
      }
    }
  }
}

}  // namespace

size_t synthetic_model_bytes(const JetMoeConfig& cfg, const std::string& type) {
  size_t total = 0;
  for (const Spec& s : tensor_specs(cfg, type)) total += spec_bytes(s);
  return total;
}

std::unique_ptr<ModelFiles> make_synthetic_model(const JetMoeConfig& cfg, const std::string& type, uint64_t seed,
                                                 bool gguf_layout) {
  const std::vector<Spec> specs = tensor_specs(cfg, type);
  auto m = std::make_unique<ModelFiles>();
  m->path = "synthetic-jetmoe-" + std::to_string(cfg.num_hidden_layers) + "L-" + type;
  m->config = cfg;
  auto src = std::make_unique<MemoryTensorSource>(m->path);
  uint64_t id = 0;
  for (const Spec& s : specs) {
    uint8_t* dst = src->add(s.name, s.dtype, s.shape, spec_bytes(s));
    fill_tensor(seed, id++, s, dst);
  }
  if (!gguf_layout) src->repack_for_cpu();  // owned memory: the layout the CPU kernels stream fastest
  m->tensors = std::move(src);
  m->weights = bind_weights(m->config, *m->tensors);
  return m;
}

}  // namespace jetmoe

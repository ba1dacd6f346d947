#include "loader/quantize_weights.h"
#include "quant/quantize.h"

#include <algorithm>
#include <stdexcept>

#include "ops/cpu/float_dot.h"
#include "quant/quantize.h"

namespace jetmoe {

QuantMix quant_mix(const std::string& name) {
  QuantMix m;
  m.name = name;
  if (name == "q8_0") {
    m.experts = m.kv_proj = m.embed_head = DType::Q8_0;
  } else if (name == "q4_0" || name == "q4_k") {
    m.experts = name == "q4_0" ? DType::Q4_0 : DType::Q4_K;
    m.kv_proj = m.embed_head = DType::Q8_0;
  } else if (name == "q4_0-pure" || name == "q4_k-pure") {
    m.experts = m.kv_proj = m.embed_head = name == "q4_0-pure" ? DType::Q4_0 : DType::Q4_K;
  } else {
    std::string known;
    for (const auto& n : quant_mix_names()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown quantization type '" + name + "' (expected one of: " + known + ")");
  }
  return m;
}

std::vector<std::string> quant_mix_names() { return {"q8_0", "q4_0", "q4_k", "q4_0-pure", "q4_k-pure"}; }

DType fit_quant_type(DType want, int64_t cols) {
  if (!dtype_is_quantized(want)) return want;
  const DType chain[] = {DType::Q4_K, DType::Q4_0, DType::Q8_0};
  bool started = false;
  for (DType t : chain) {
    started = started || t == want;
    if (started && cols % static_cast<int64_t>(dtype_block_elems(t)) == 0) return t;
  }
  return DType::F32;
}

std::unique_ptr<MemoryTensorSource> quantize_weights(const JetMoeConfig& cfg, JetMoeWeights w, const QuantMix& mix,
                                                     QuantizeReport* report, bool strict) {
  auto out = std::make_unique<MemoryTensorSource>("quantized " + mix.name);
  QuantizeReport rep;
  std::vector<float> rowbuf;
  w.for_each_tensor(cfg, [&](WeightView& v, TensorRole role, const std::vector<int64_t>&) {
    if (v.empty()) return;
    DType want;
    switch (role) {
      case TensorRole::AttnQ: case TensorRole::AttnO: case TensorRole::MlpIn: case TensorRole::MlpOut:
        want = mix.experts; break;
      case TensorRole::KvProj: want = mix.kv_proj; break;
      case TensorRole::Embedding: case TensorRole::Head: want = mix.embed_head; break;
      default: want = v.dtype;  // routers, norms, biases: as stored
    }
    rep.float_bytes += v.nbytes();
    if (want == v.dtype || !dtype_is_quantized(want)) {
      uint8_t* dst = out->add(v.name, v.dtype, v.shape, v.nbytes());
      std::copy_n(static_cast<const uint8_t*>(v.data), v.nbytes(), dst);
      rep.quantized_bytes += v.nbytes();
      return;
    }
    const int64_t cols = v.cols();
    DType t = want;
    if (cols % static_cast<int64_t>(dtype_block_elems(want)) != 0) {
      if (strict)
        throw std::invalid_argument("tensor '" + v.name + "' has rows of " + std::to_string(cols) +
                                    " elements, not a multiple of the " + dtype_name(want) + " block size " +
                                    std::to_string(dtype_block_elems(want)));
      t = fit_quant_type(want, cols);
      rep.fallbacks.push_back(v.name + ": " + dtype_name(want) + " -> " + dtype_name(t) + " (rows of " +
                              std::to_string(cols) + ")");
    }
    const int64_t rows = v.numel() / cols;
    const size_t src_rb = v.row_bytes();
    const size_t dst_rb = dtype_row_bytes(t, static_cast<size_t>(cols));
    uint8_t* dst = out->add(v.name, t, v.shape, dst_rb * static_cast<size_t>(rows));
    // A bounded float staging buffer: never the whole tensor in float.
    constexpr int64_t kChunk = 256;
    rowbuf.resize(static_cast<size_t>(kChunk * cols));
    for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
      const int64_t nr = std::min(kChunk, rows - r0);
      for (int64_t r = 0; r < nr; ++r)
      {
        const uint8_t* src = static_cast<const uint8_t*>(v.data) + static_cast<size_t>(r0 + r) * src_rb;
        if (dtype_is_quantized(v.dtype))  // re-quantizing a quantized file: decode one row at a time
          dequantize_row(v.dtype, src, rowbuf.data() + r * cols, cols);
        else
          float_row_to_f32(v.dtype, src, cols, rowbuf.data() + r * cols);
      }
      if (t == DType::F32)
        std::copy_n(reinterpret_cast<const uint8_t*>(rowbuf.data()), static_cast<size_t>(nr * cols) * 4,
                    dst + static_cast<size_t>(r0) * dst_rb);
      else
        quantize_tensor_rows(t, rowbuf.data(), dst + static_cast<size_t>(r0) * dst_rb, nr, cols);
    }
    rep.quantized_bytes += dst_rb * static_cast<size_t>(rows);
  });
  if (report) *report = std::move(rep);
  return out;
}

}  // namespace jetmoe

// An SVG chart of quantization quality (mean KL-divergence) against weight size and decode speed.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace jetmoe::cli {

// rows: compare-quants level objects (type, weights_bytes, decode_tps, kld_mean).
std::string quant_plot_svg(const nlohmann::json& rows);

}  // namespace jetmoe::cli

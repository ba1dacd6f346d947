#include "runtime/logits.h"

#include <cmath>
#include <limits>

namespace jetmoe {

std::vector<float> log_softmax(std::span<const float> logits) {
  std::vector<float> out(logits.size());
  if (logits.empty()) return out;
  double max = -std::numeric_limits<double>::infinity();
  bool has_nan = false;
  for (float x : logits) {
    if (std::isnan(x)) has_nan = true;
    else if (x > max) max = x;
  }
  if (has_nan || !std::isfinite(max)) {
    out.assign(logits.size(), std::numeric_limits<float>::quiet_NaN());
    return out;
  }
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max);
  const double lse = max + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i) out[i] = static_cast<float>(static_cast<double>(logits[i]) - lse);
  return out;
}

}  // namespace jetmoe

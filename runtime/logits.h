// Small numeric helpers over a logits vector (scoring, perplexity, sampler tests).
#pragma once

#include <span>
#include <vector>

namespace jetmoe {

// log(softmax(x)) computed stably: max-shifted, with the exp-sum accumulated in double so
// that a 32k-entry vocabulary does not lose the small probabilities that perplexity depends on.
// Empty input gives an empty result; input with no finite maximum (all -inf, or NaN) gives NaN.
std::vector<float> log_softmax(std::span<const float> logits);

}  // namespace jetmoe

// The CUDA implementation of Backend (built with -DJETMOE_CUDA=ON): the same model graph
// (runtime/jetmoe_model.cpp) with every op on the GPU.
//
// Weights are uploaded once (Backend::load_weights; anything else on first use) in their stored
// types and dequantized inside the kernels: bf16/f16/f32 and the int8/int4 block formats (the
// CPU's repacked in-memory forms are unpacked to the file layout on upload). Activations arrive
// and leave in host memory, one copy each way per op; the KV cache lives on the device, attached
// to its KvCache (KvCache::device_rows). Kernels: ops/cuda/cuda_kernels.h.
#pragma once

#include <memory>
#include <string>

#include "runtime/backend.h"

namespace jetmoe::cuda {

// "" when a CUDA device can be used; otherwise why not (no driver, no device, ...).
std::string cuda_unavailable_reason();

// A backend on device 0. Throws std::runtime_error when no device can be used.
std::unique_ptr<Backend> make_cuda_backend();

}  // namespace jetmoe::cuda

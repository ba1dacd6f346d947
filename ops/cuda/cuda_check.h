// Errors from the CUDA runtime as exceptions that say which call failed and why.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace jetmoe::cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(e));
}

// After a kernel launch: a bad launch configuration is reported here, not at the next copy.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

}  // namespace jetmoe::cuda

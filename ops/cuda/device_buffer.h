// Device memory owned by RAII: a cudaMalloc'd block that frees itself, and grows (without keeping
// its contents) when an op needs more scratch than the last one did. Growing frees the old block
// with cudaFree, which waits for the device, so kernels still reading it are never cut short.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "ops/cuda/cuda_check.h"

namespace jetmoe::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { reserve(bytes); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  // At least `bytes` bytes; the old contents are lost when the block has to grow.
  void reserve(size_t bytes) {
    if (bytes <= n_) return;
    release();
    check(cudaMalloc(&p_, bytes), "cudaMalloc of device scratch");
    n_ = bytes;
  }
  template <typename T>
  T* as() const { return static_cast<T*>(p_); }
  // At least n floats (n <= 0: one), as a float pointer.
  float* reserve_floats(int64_t n) {
    reserve(sizeof(float) * static_cast<size_t>(n > 0 ? n : 1));
    return as<float>();
  }
  void* data() const { return p_; }
  size_t bytes() const { return n_; }

 private:
  void release() {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
  }
  void* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace jetmoe::cuda

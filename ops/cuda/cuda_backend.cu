#include "ops/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <stdexcept>
#include <vector>

#include "ops/cpu/kv_rows.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/cuda_kernels.h"
#include "ops/cuda/device_buffer.h"
#include "quant/repack.h"
#include "runtime/kv_cache.h"

namespace jetmoe::cuda {
namespace {

// Weight-like inputs smaller than this (norm gains, the float32 routers the model widens at load)
// are copied with each op instead of being cached by address: they live in the model's own
// vectors, which a later model may reuse with other values.
constexpr size_t kCachedWeightMinBytes = size_t{1} << 20;
// Repacked weights are unpacked to their file layout through a host buffer of this many bytes.
constexpr size_t kUnpackChunkBytes = size_t{64} << 20;

// The device copy of one KV cache: the same [layer][kv_head][position] rows as KvCache's own.
struct DeviceKvRows {
  DeviceBuffer k, v;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend() {
    check(cudaSetDevice(0), "cudaSetDevice(0)");
    cudaDeviceProp p{};
    check(cudaGetDeviceProperties(&p, 0), "cudaGetDeviceProperties");
    name_ = std::string("cuda (") + p.name + ", sm_" + std::to_string(p.major) + std::to_string(p.minor) + ")";
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~CudaBackend() override {
    if (stream_) cudaStreamDestroy(stream_);
  }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return name_; }

  void load_weights(const JetMoeWeights& w) override {
    auto add = [&](const WeightView& v) {
      if (v.empty() || v.nbytes() < kCachedWeightMinBytes) return;
      const int64_t rows = v.numel() / v.cols();
      device_weights(v.data, v.dtype, rows, v.cols());
    };
    add(w.embed);
    add(w.lm_head);
    for (const LayerWeights& l : w.layers) {
      add(l.moa.kv_proj);
      add(l.moa.q_experts);
      add(l.moa.o_experts);
      add(l.moe.w_in);
      add(l.moe.w_out);
    }
  }

  void embed(const int32_t* tokens, int64_t T, const WeightView& table, float* x) override {
    const int64_t H = table.cols(), V = table.rows();
    for (int64_t t = 0; t < T; ++t)
      if (tokens[t] < 0 || tokens[t] >= V)
        throw std::out_of_range("token id " + std::to_string(tokens[t]) + " is outside the vocabulary 0.." +
                                std::to_string(V - 1));
    small_used_ = 0;
    const void* dw = device_weights(table.data, table.dtype, V, H);
    int32_t* dt = upload(ints_, tokens, T);
    float* dx = floats(a_, T * H);
    launch_embed(dt, T, dw, file_type(table.dtype), H, dx, stream_);
    download(x, dx, T * H);
  }

  void rms_norm(const float* x, int64_t T, int64_t n, const float* gain, float eps, float* y) override {
    float* dx = upload(a_, x, T * n);
    const float* dg = upload(b_, gain, n);
    launch_rms_norm(dx, T, n, dg, eps, dx, stream_);
    download(y, dx, T * n);
  }

  void matmul(const float* x, int64_t T, const WeightView& W, float* y, int64_t ldy) override {
    const MatmulJob job = matmul_job(x, T, W, y, ldy);
    matmul_group(&job, 1);
  }

  // All jobs' inputs go up, all products run, then all outputs come back: one wait per group.
  void matmul_group(const MatmulJob* jobs, size_t n_jobs) override {
    small_used_ = 0;
    int64_t xs = 0, ys = 0;
    for (size_t i = 0; i < n_jobs; ++i) {
      xs += jobs[i].T * jobs[i].cols;
      ys += jobs[i].T * jobs[i].rows;
    }
    float* dx = floats(a_, xs);
    float* dy = floats(c_, ys);
    int64_t xo = 0, yo = 0;
    for (size_t i = 0; i < n_jobs; ++i) {
      const MatmulJob& j = jobs[i];
      if (j.T <= 0 || j.rows <= 0) continue;
      const void* dw = device_weights(j.w, j.dtype, j.rows, j.cols);
      check(cudaMemcpyAsync(dx + xo, j.x, sizeof(float) * j.T * j.cols, cudaMemcpyHostToDevice, stream_), "copy to device");
      launch_matmul(dx + xo, j.T, dw, file_type(j.dtype), j.rows, j.cols, dy + yo, j.rows, stream_);
      xo += j.T * j.cols;
      yo += j.T * j.rows;
    }
    yo = 0;
    for (size_t i = 0; i < n_jobs; ++i) {
      const MatmulJob& j = jobs[i];
      if (j.T <= 0 || j.rows <= 0) continue;
      check(cudaMemcpy2DAsync(j.y, sizeof(float) * j.ldy, dy + yo, sizeof(float) * j.rows, sizeof(float) * j.rows, j.T,
                              cudaMemcpyDeviceToHost, stream_),
            "copy from device");
      yo += j.T * j.rows;
    }
    sync();
  }

  void rope(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t* pos,
            float theta) override {
    if (T <= 0) return;
    const int64_t n = (T - 1) * ld + n_heads * head_dim;  // the last row may end at its last head
    float* dx = upload(a_, x, n);
    const int32_t* dp = upload(ints_, pos, T);
    launch_rope(dx, T, n_heads, head_dim, ld, dp, theta, stream_);
    download(x, dx, n);
  }

  void silu_mul(const float* z, int64_t T, int64_t F, float* h) override {
    float* dz = upload(a_, z, T * 2 * F);
    float* dh = floats(c_, T * F);
    launch_silu_mul(dz, T, F, dh, stream_);
    download(h, dh, T * F);
  }

  // Rows are converted on the host with the CPU's own kv_store_row (the same bytes as a CPU
  // cache), then placed into the device copy of the cache by one kernel.
  void kv_store(KvCache& cache, int layer, const float* k, const float* v, int64_t ld, int64_t T,
                const int32_t* pos) override {
    DeviceKvRows& dev = device_rows(cache);
    const int nkv = cache.kv_heads(), d = cache.head_dim();
    const size_t krb = cache.k_row_bytes(), vrb = cache.v_row_bytes();
    const int64_t n = T * nkv;
    staging_k_.resize(static_cast<size_t>(n) * krb);
    staging_v_.resize(static_cast<size_t>(n) * vrb);
    k_off_.resize(static_cast<size_t>(n));
    v_off_.resize(static_cast<size_t>(n));
    const uint8_t* k0 = cache.k_rows(0, 0);
    const uint8_t* v0 = cache.v_rows(0, 0);
    for (int64_t t = 0; t < T; ++t) {
      if (pos[t] < 0 || pos[t] >= cache.capacity())
        throw std::out_of_range("position " + std::to_string(pos[t]) + " is beyond the context of " +
                                std::to_string(cache.capacity()) + " tokens");
      for (int h = 0; h < nkv; ++h) {
        const size_t i = static_cast<size_t>(t * nkv + h);
        kv_store_row(cache.k_type(), k + t * ld + h * d, d, staging_k_.data() + i * krb);
        kv_store_row(cache.v_type(), v + t * ld + h * d, d, staging_v_.data() + i * vrb);
        k_off_[i] = (cache.k_rows(layer, h) - k0) + static_cast<int64_t>(pos[t]) * static_cast<int64_t>(krb);
        v_off_[i] = (cache.v_rows(layer, h) - v0) + static_cast<int64_t>(pos[t]) * static_cast<int64_t>(vrb);
      }
    }
    const uint8_t* dks = upload(a_, staging_k_.data(), staging_k_.size());
    const uint8_t* dvs = upload(b_, staging_v_.data(), staging_v_.size());
    const int64_t* dko = upload(c_, k_off_.data(), n);
    const int64_t* dvo = upload(d_, v_off_.data(), n);
    launch_scatter_rows(dks, n, static_cast<int64_t>(krb), dko, dev.k.as<uint8_t>(), stream_);
    launch_scatter_rows(dvs, n, static_cast<int64_t>(vrb), dvo, dev.v.as<uint8_t>(), stream_);
    sync();  // the staging vectors are reused by the next call
  }

  void attention(const float* q, int64_t T, int64_t slots, const int32_t* slot, const int32_t* first,
                 const KvCache& cache, int layer, float* out) override {
    if (T <= 0) return;
    if (!cache.device_rows())
      throw std::logic_error("CUDA attention: this KV cache holds no keys on the device (kv_store first)");
    const auto& dev = *static_cast<const DeviceKvRows*>(cache.device_rows().get());
    const int64_t nkv = cache.kv_heads(), d = cache.head_dim();
    const int64_t nq = T * slots * nkv * d;
    int64_t max_keys = 1;
    for (int64_t t = 0; t < T; ++t) max_keys = std::max<int64_t>(max_keys, slot[t] + 1 - (first ? first[t] : 0));
    AttentionArgs a{};
    a.q = upload(a_, q, nq);
    a.out = floats(c_, nq);
    a.T = T;
    a.slots = slots;
    a.kv_heads = nkv;
    a.d = d;
    a.slot = upload(ints_, slot, T);
    a.first = first ? upload(ints2_, first, T) : nullptr;
    const uint8_t* k0 = cache.k_rows(0, 0);
    const uint8_t* v0 = cache.v_rows(0, 0);
    a.k_base = dev.k.as<uint8_t>() + (cache.k_rows(layer, 0) - k0);
    a.v_base = dev.v.as<uint8_t>() + (cache.v_rows(layer, 0) - v0);
    a.k_head_stride = cache.k_rows(layer, nkv > 1 ? 1 : 0) - cache.k_rows(layer, 0);
    a.v_head_stride = cache.v_rows(layer, nkv > 1 ? 1 : 0) - cache.v_rows(layer, 0);
    a.k_row_bytes = static_cast<int64_t>(cache.k_row_bytes());
    a.v_row_bytes = static_cast<int64_t>(cache.v_row_bytes());
    a.k_type = cache.k_type();
    a.v_type = cache.v_type();
    a.max_keys = max_keys;
    a.scratch = floats(b_, T * slots * nkv * max_keys);
    launch_attention(a, stream_);
    download(out, a.out, nq);
  }

  double measure_read_bandwidth_gbps(size_t bytes, int passes) override {
    bytes = bytes / 16 * 16;
    DeviceBuffer buf(bytes), sink(sizeof(unsigned long long));
    check(cudaMemsetAsync(buf.data(), 1, bytes, stream_), "cudaMemset of the probe buffer");
    check(cudaMemsetAsync(sink.data(), 0, sink.bytes(), stream_), "cudaMemset");
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
    std::vector<double> gbps;
    for (int p = 0; p <= passes; ++p) {  // pass 0 is untimed
      check(cudaEventRecord(start, stream_), "cudaEventRecord");
      launch_read_probe(buf.data(), bytes, sink.as<unsigned long long>(), stream_);
      check(cudaEventRecord(stop, stream_), "cudaEventRecord");
      check(cudaEventSynchronize(stop), "cudaEventSynchronize");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
      if (p > 0) gbps.push_back(static_cast<double>(bytes) / (ms * 1e-3) / 1e9);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    std::sort(gbps.begin(), gbps.end());
    return gbps.empty() ? 0.0 : gbps[gbps.size() / 2];
  }

 private:
  void sync() { check(cudaStreamSynchronize(stream_), "kernel execution"); }

  template <typename T>
  T* upload(DeviceBuffer& buf, const T* host, int64_t n) {
    buf.reserve(sizeof(T) * static_cast<size_t>(std::max<int64_t>(n, 1)));
    check(cudaMemcpyAsync(buf.data(), host, sizeof(T) * static_cast<size_t>(n), cudaMemcpyHostToDevice, stream_),
          "copy to device");
    return buf.as<T>();
  }
  float* floats(DeviceBuffer& buf, int64_t n) {
    buf.reserve(sizeof(float) * static_cast<size_t>(std::max<int64_t>(n, 1)));
    return buf.as<float>();
  }
  void download(float* host, const float* dev, int64_t n) {
    check(cudaMemcpyAsync(host, dev, sizeof(float) * static_cast<size_t>(n), cudaMemcpyDeviceToHost, stream_),
          "copy from device");
    sync();
  }

  DeviceKvRows& device_rows(KvCache& cache) {
    std::shared_ptr<void>& slot = cache.device_rows();
    if (!slot) {
      auto rows = std::make_shared<DeviceKvRows>();
      const size_t kb = cache.k_rows(cache.layers() - 1, cache.kv_heads() - 1) - cache.k_rows(0, 0) +
                        static_cast<size_t>(cache.capacity()) * cache.k_row_bytes();
      const size_t vb = cache.v_rows(cache.layers() - 1, cache.kv_heads() - 1) - cache.v_rows(0, 0) +
                        static_cast<size_t>(cache.capacity()) * cache.v_row_bytes();
      rows->k.reserve(kb);
      rows->v.reserve(vb);
      check(cudaMemsetAsync(rows->k.data(), 0, kb, stream_), "cudaMemset of the KV cache");
      check(cudaMemsetAsync(rows->v.data(), 0, vb, stream_), "cudaMemset of the KV cache");
      slot = rows;
    }
    return *static_cast<DeviceKvRows*>(slot.get());
  }

  // The device copy of `rows` rows of `cols` elements at host address w (uploaded on first use, in
  // the file layout), or, for small tensors, a fresh copy made for this op.
  const void* device_weights(const void* w, DType type, int64_t rows, int64_t cols) {
    const auto* p = static_cast<const uint8_t*>(w);
    const size_t bytes = dtype_row_bytes(type, static_cast<size_t>(cols)) * static_cast<size_t>(rows);
    if (bytes < kCachedWeightMinBytes) {
      if (small_used_ == small_.size()) small_.emplace_back();
      return upload_weights(small_[small_used_++], p, type, rows, cols);
    }
    auto it = weights_.upper_bound(p);
    if (it != weights_.begin()) {
      --it;
      // Inside a tensor uploaded before (an expert of a stacked tensor): the same offset, since
      // unpacking keeps every 16-row group where it was.
      if (p + bytes <= it->first + it->second.bytes()) return it->second.as<uint8_t>() + (p - it->first);
    }
    DeviceBuffer& buf = weights_[p];
    return upload_weights(buf, p, type, rows, cols);
  }

  const void* upload_weights(DeviceBuffer& buf, const uint8_t* p, DType type, int64_t rows, int64_t cols) {
    const size_t rb = dtype_row_bytes(type, static_cast<size_t>(cols));
    buf.reserve(rb * static_cast<size_t>(rows));
    if (!dtype_is_repacked(type)) {
      check(cudaMemcpy(buf.data(), p, rb * static_cast<size_t>(rows), cudaMemcpyHostToDevice), "weight upload");
      return buf.data();
    }
    const int64_t chunk = std::max<int64_t>(16, static_cast<int64_t>(kUnpackChunkBytes / rb) / 16 * 16);
    unpack_.resize(static_cast<size_t>(std::min(rows, chunk)) * rb);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t n = std::min(chunk, rows - r0);
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < n; ++r) unpack_row(type, p, r0 + r, unpack_.data() + static_cast<size_t>(r) * rb, cols);
      check(cudaMemcpy(buf.as<uint8_t>() + static_cast<size_t>(r0) * rb, unpack_.data(), static_cast<size_t>(n) * rb,
                       cudaMemcpyHostToDevice),
            "weight upload");
    }
    return buf.data();
  }

  std::string name_;
  cudaStream_t stream_ = nullptr;
  std::map<const uint8_t*, DeviceBuffer> weights_;  // by host address: large tensors, uploaded once
  std::vector<DeviceBuffer> small_;                 // small weights of the op running (kept for reuse)
  size_t small_used_ = 0;                           // how many of small_ this op has taken
  DeviceBuffer a_, b_, c_, d_, ints_, ints2_;       // per-op scratch, grown as needed
  std::vector<uint8_t> staging_k_, staging_v_, unpack_;
  std::vector<int64_t> k_off_, v_off_;
};

}  // namespace

std::string cuda_unavailable_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so a later query starts clean
    return std::string("no usable CUDA device (") + cudaGetErrorString(e) + ")";
  }
  if (n == 0) return "no CUDA device on this machine";
  return "";
}

std::unique_ptr<Backend> make_cuda_backend() {
  const std::string why = cuda_unavailable_reason();
  if (!why.empty()) throw std::runtime_error("device 'cuda': " + why);
  return std::make_unique<CudaBackend>();
}

}  // namespace jetmoe::cuda

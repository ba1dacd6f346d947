#include "ops/cuda/cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <map>
#include <set>
#include <stdexcept>
#include <vector>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/cuda_kernels.h"
#include "ops/cuda/device_buffer.h"
#include "quant/repack.h"
#include "runtime/kv_cache.h"

namespace jetmoe::cuda {
namespace {

// Weights smaller than this that load_weights was not given are copied with each op instead of
// being kept by address (test inputs; the model registers all of its own).
constexpr size_t kCachedWeightMinBytes = size_t{1} << 20;
// Repacked weights are unpacked to their file layout through a host buffer of this many bytes.
constexpr size_t kUnpackChunkBytes = size_t{64} << 20;
// Pinned staging for the ops' small host arguments (token ids, positions, slots, expert orders):
// copied into a ring and uploaded asynchronously, so no op waits for the GPU.
constexpr size_t kIntRingBytes = size_t{4} << 20;
// Up to this many tokens, expert products read the expert ids on the device (decode); above it
// the ids come to the host once per sublayer to group the tokens by expert (prefill).
constexpr int64_t kExpertGemvMaxTokens = 8;

// The device copy of one KV cache: the same [layer][kv_head][position] rows as KvCache's own.
struct DeviceKvRows {
  DeviceBuffer k, v;
};

// Page-locked host memory (cudaMallocHost), freed with the object.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() {
    if (p_) cudaFreeHost(p_);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void reserve(size_t bytes) {
    if (bytes <= n_) return;
    if (p_) cudaFreeHost(p_);
    p_ = nullptr;
    n_ = 0;
    check(cudaMallocHost(&p_, bytes), "cudaMallocHost of the staging ring");
    n_ = bytes;
  }
  uint8_t* data() const { return static_cast<uint8_t*>(p_); }
  size_t bytes() const { return n_; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend() {
    check(cudaSetDevice(0), "cudaSetDevice(0)");
    cudaDeviceProp p{};
    check(cudaGetDeviceProperties(&p, 0), "cudaGetDeviceProperties");
    name_ = std::string("cuda (") + p.name + ", sm_" + std::to_string(p.major) + std::to_string(p.minor) + ")";
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    ring_host_.reserve(kIntRingBytes);
    ring_dev_.reserve(kIntRingBytes);
    const char* g = std::getenv("JETMOE_CUDA_GRAPHS");
    graphs_enabled_ = !(g && std::string(g) == "0");
  }
  ~CudaBackend() override {
    drop_graphs();
    if (stream_) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
  }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return name_; }

  void load_weights(const std::vector<WeightView>& tensors) override {
    sync();
    ++generation_;
    std::set<const void*> seen;  // a tied head is the embedding: one upload
    for (const WeightView& v : tensors) {
      if (v.empty() || !seen.insert(v.data).second) continue;
      const auto* p = static_cast<const uint8_t*>(v.data);
      DeviceBuffer& buf = weights_[p];
      buf = DeviceBuffer();  // a new upload from this address replaces the old one
      upload_weights(buf, p, v.dtype, v.numel() / v.cols(), v.cols());
    }
  }

  void* alloc(size_t bytes) override {
    ++generation_;  // a recorded step holds the old addresses
    void* p = nullptr;
    check(cudaMalloc(&p, std::max<size_t>(bytes, 1)), "cudaMalloc of activations");
    return p;
  }
  void release(void* p) override {
    ++generation_;
    cudaFree(p);
  }
  void copy_to_backend(void* dst, const void* host, size_t bytes) override {
    sync();
    check(cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice), "copy to device");
  }
  void copy_to_host(void* host, const void* src, size_t bytes) override {
    check(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_), "copy from device");
    sync();
  }

  void embed(const int32_t* tokens, int64_t T, const WeightView& table, float* x) override {
    const int64_t H = table.cols(), V = table.rows();
    for (int64_t t = 0; t < T; ++t)
      if (tokens[t] < 0 || tokens[t] >= V)
        throw std::out_of_range("token id " + std::to_string(tokens[t]) + " is outside the vocabulary 0.." +
                                std::to_string(V - 1));
    small_used_ = 0;
    const void* dw = device_weights(table.data, table.dtype, V, H);
    const int32_t* dt = upload_ints(tokens, T);
    if (replaying()) return;
    launch_embed(dt, T, dw, file_type(table.dtype), H, x, stream_);
  }

  void rms_norm(const float* x, int64_t T, int64_t n, const float* gain, float eps, float* y) override {
    small_used_ = 0;
    const auto* dg = static_cast<const float*>(device_weights(gain, DType::F32, 1, n));
    if (replaying()) return;
    launch_rms_norm(x, T, n, dg, eps, y, stream_);
  }

  void matmul(const float* x, int64_t T, const WeightView& W, float* y, int64_t ldy) override {
    const MatmulJob job = matmul_job(x, T, W, y, ldy);
    matmul_group(&job, 1);
  }

  void matmul_group(const MatmulJob* jobs, size_t n_jobs) override {
    if (replaying()) return;
    small_used_ = 0;
    for (size_t i = 0; i < n_jobs; ++i) {
      const MatmulJob& j = jobs[i];
      if (j.T <= 0 || j.rows <= 0) continue;
      const void* dw = device_weights(j.w, j.dtype, j.rows, j.cols);
      launch_matmul(j.x, j.T, dw, file_type(j.dtype), j.rows, j.cols, j.y, j.ldy, stream_);
    }
  }

  void rope(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t* pos,
            float theta) override {
    if (T <= 0) return;
    const int32_t* dp = upload_ints(pos, T);
    if (replaying()) return;
    launch_rope(x, T, n_heads, head_dim, ld, dp, theta, stream_);
  }

  void silu_mul(const float* z, int64_t T, int64_t F, float* h) override {
    if (!replaying()) launch_silu_mul(z, T, F, h, stream_);
  }

  void route_topk(const float* logits, int64_t T, int64_t E, int64_t k, int32_t* experts, float* gates) override {
    if (!replaying()) launch_route_topk(logits, T, E, k, experts, gates, stream_);
  }

  void norm_route(const float* x, int64_t T, int64_t n, const float* gain, float eps, const WeightView& router,
                  int64_t k, float* a, float* logits, int32_t* experts, float* gates) override {
    if (T == 1 && router.dtype == DType::F32) {
      small_used_ = 0;
      const auto* dg = static_cast<const float*>(device_weights(gain, DType::F32, 1, n));
      const auto* dr = static_cast<const float*>(device_weights(router.data, DType::F32, router.rows(), n));
      if (replaying()) return;
      if (launch_norm_route(x, n, dg, eps, dr, router.rows(), k, a, logits, experts, gates, stream_)) return;
    }
    Backend::norm_route(x, T, n, gain, eps, router, k, a, logits, experts, gates);
  }

  // Decode (few tokens): one launch that reads the expert ids on the device. Prefill: the ids
  // come to the host, the items are grouped by expert as on the CPU, and each chosen expert runs
  // one tiled product over its gathered rows (its weights read once per 64 tokens).
  void expert_matmul(const float* x, int64_t T, int64_t k, bool per_slot, const int32_t* experts, const WeightView& W,
                     float* y, const MatmulJob* extra) override {
    if (W.shape.size() != 3) throw std::invalid_argument("expert_matmul: '" + W.name + "' is not an [E, out, in] tensor");
    const int64_t E = W.shape[0], out = W.shape[1], in = W.shape[2], n = T * k;
    if (replaying()) return;
    small_used_ = 0;
    if (extra && extra->T > 0) {
      const void* dw = device_weights(extra->w, extra->dtype, extra->rows, extra->cols);
      launch_matmul(extra->x, extra->T, dw, file_type(extra->dtype), extra->rows, extra->cols, extra->y, extra->ldy, stream_);
    }
    const auto* dw = static_cast<const uint8_t*>(device_weights(W.data, W.dtype, E * out, in));
    const DType type = file_type(W.dtype);
    if (T <= kExpertGemvMaxTokens) {
      launch_expert_gemv(x, n, k, per_slot, experts, dw, type, E, out, in, y, stream_);
      return;
    }
    ids_.resize(static_cast<size_t>(n));
    copy_to_host(ids_.data(), experts, sizeof(int32_t) * static_cast<size_t>(n));
    begin_.assign(static_cast<size_t>(E + 1), 0);
    for (int64_t i = 0; i < n; ++i) {
      if (ids_[static_cast<size_t>(i)] < 0 || ids_[static_cast<size_t>(i)] >= E)
        throw std::out_of_range("expert_matmul: expert id " + std::to_string(ids_[static_cast<size_t>(i)]) + " outside 0.." +
                                std::to_string(E - 1) + " for '" + W.name + "'");
      ++begin_[static_cast<size_t>(ids_[static_cast<size_t>(i)]) + 1];
    }
    for (int64_t e = 0; e < E; ++e) begin_[static_cast<size_t>(e + 1)] += begin_[static_cast<size_t>(e)];
    order_.resize(static_cast<size_t>(n));
    src_rows_.resize(static_cast<size_t>(n));
    fill_.assign(begin_.begin(), begin_.end() - 1);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = fill_[static_cast<size_t>(ids_[static_cast<size_t>(i)])]++;
      order_[static_cast<size_t>(r)] = static_cast<int32_t>(i);
      src_rows_[static_cast<size_t>(r)] = static_cast<int32_t>(per_slot ? i : i / k);
    }
    float* gx = gx_.reserve_floats(n * in);
    float* gy = gy_.reserve_floats(n * out);
    launch_gather_rows(x, upload_ints(src_rows_.data(), n), n, in, gx, stream_);
    const size_t expert_bytes = dtype_row_bytes(type, static_cast<size_t>(in)) * static_cast<size_t>(out);
    for (int64_t e = 0; e < E; ++e) {
      const int64_t b = begin_[static_cast<size_t>(e)], m = begin_[static_cast<size_t>(e + 1)] - b;
      if (m > 0)
        launch_matmul(gx + b * in, m, dw + static_cast<size_t>(e) * expert_bytes, type, out, in, gy + b * out, out, stream_);
    }
    launch_scatter_rows(gy, upload_ints(order_.data(), n), n, out, y, stream_);
  }

  void combine_experts(const float* y, const float* gates, int64_t T, int64_t k, int64_t n, const float* bias,
                       float* x) override {
    small_used_ = 0;
    const auto* db = static_cast<const float*>(device_weights(bias, DType::F32, 1, n));
    if (replaying()) return;
    launch_combine_experts(y, gates, T, k, n, db, x, stream_);
  }

  void kv_store(KvCache& cache, int layer, const float* k, const float* v, int64_t ld, int64_t T,
                const int32_t* pos) override {
    const KvStoreArgs a = kv_store_args(cache, layer, k, v, ld, T, pos);
    if (!replaying()) launch_kv_store(a, stream_);
  }

  // The cache side of kv_store / rope_store: positions checked, the device rows of `layer`.
  KvStoreArgs kv_store_args(KvCache& cache, int layer, const float* k, const float* v, int64_t ld, int64_t T,
                            const int32_t* pos) {
    for (int64_t t = 0; t < T; ++t)
      if (pos[t] < 0 || pos[t] >= cache.capacity())
        throw std::out_of_range("position " + std::to_string(pos[t]) + " is beyond the context of " +
                                std::to_string(cache.capacity()) + " tokens");
    DeviceKvRows& dev = device_rows(cache);
    const int nkv = cache.kv_heads();
    KvStoreArgs a{};
    a.k = k;
    a.v = v;
    a.ld = ld;
    a.T = T;
    a.kv_heads = nkv;
    a.d = cache.head_dim();
    a.pos = upload_ints(pos, T);
    a.k_layer = dev.k.as<uint8_t>() + (cache.k_rows(layer, 0) - cache.k_rows(0, 0));
    a.v_layer = dev.v.as<uint8_t>() + (cache.v_rows(layer, 0) - cache.v_rows(0, 0));
    a.k_head_stride = cache.k_rows(layer, nkv > 1 ? 1 : 0) - cache.k_rows(layer, 0);
    a.v_head_stride = cache.v_rows(layer, nkv > 1 ? 1 : 0) - cache.v_rows(layer, 0);
    a.k_row_bytes = static_cast<int64_t>(cache.k_row_bytes());
    a.v_row_bytes = static_cast<int64_t>(cache.v_row_bytes());
    a.k_type = cache.k_type();
    a.v_type = cache.v_type();
    return a;
  }

  void rope_store(float* kv, int64_t ld_kv, float* q, int64_t q_heads, int64_t ld_q, int64_t T, const int32_t* pos,
                  float theta, KvCache& cache, int layer, const int32_t* slot) override {
    if (T <= 0) return;
    const int64_t nkv = cache.kv_heads(), d = cache.head_dim();
    RopeStoreArgs r{};
    r.kv = kv_store_args(cache, layer, kv, kv + nkv * d, ld_kv, T, slot);
    r.kv_rows = kv;
    r.q = q;
    r.q_heads = q_heads;
    r.ld_q = ld_q;
    r.rope_pos = upload_ints(pos, T);
    r.theta = theta;
    if (!replaying()) launch_rope_store(r, stream_);
  }

  void attention(const float* q, int64_t T, int64_t slots, const int32_t* slot, const int32_t* first,
                 const KvCache& cache, int layer, float* out) override {
    if (T <= 0) return;
    if (!cache.device_rows())
      throw std::logic_error("CUDA attention: this KV cache holds no keys on the device (kv_store first)");
    const auto& dev = *static_cast<const DeviceKvRows*>(cache.device_rows().get());
    const int64_t nkv = cache.kv_heads(), d = cache.head_dim();
    int64_t max_keys = 1;
    for (int64_t t = 0; t < T; ++t) max_keys = std::max<int64_t>(max_keys, slot[t] + 1 - (first ? first[t] : 0));
    AttentionArgs a{};
    a.q = q;
    a.out = out;
    a.T = T;
    a.slots = slots;
    a.kv_heads = nkv;
    a.d = d;
    a.slot = upload_ints(slot, T);
    a.first = first ? upload_ints(first, T) : nullptr;
    a.k_base = dev.k.as<uint8_t>() + (cache.k_rows(layer, 0) - cache.k_rows(0, 0));
    a.v_base = dev.v.as<uint8_t>() + (cache.v_rows(layer, 0) - cache.v_rows(0, 0));
    a.k_head_stride = cache.k_rows(layer, nkv > 1 ? 1 : 0) - cache.k_rows(layer, 0);
    a.v_head_stride = cache.v_rows(layer, nkv > 1 ? 1 : 0) - cache.v_rows(layer, 0);
    a.k_row_bytes = static_cast<int64_t>(cache.k_row_bytes());
    a.v_row_bytes = static_cast<int64_t>(cache.v_row_bytes());
    a.k_type = cache.k_type();
    a.v_type = cache.v_type();
    if (mode_ == Mode::Direct) {
      a.max_keys = max_keys;
      a.scratch = scores_.reserve_floats(T * slots * nkv * max_keys);
    } else {  // a recorded step: room for every position, so the same launch serves each token
      a.max_keys = cache.capacity();
      if (step_scores_.bytes() < sizeof(float) * static_cast<size_t>(T * slots * nkv * cache.capacity()))
        throw std::logic_error("CUDA step: attention scratch was not reserved for this step");
      a.scratch = step_scores_.as<float>();
    }
    if (!replaying()) launch_attention(a, stream_);
  }

  // A decode step (one token, replayable) is recorded as a CUDA graph the first time its shape is
  // seen and replayed afterwards: the ops then only validate their arguments and write their host
  // ints to the same pinned slots the recorded copies read, and end_step launches the graph. A
  // graph is keyed by the step's shape and KV cache and dropped when any activation buffer or
  // weight moved since it was recorded.
  void begin_step(const StepShape& step) override {
    mode_ = Mode::Direct;
    if (!graphs_enabled_ || !step.replayable || step.tokens != 1 || !step.cache) return;
    sync();  // the ring starts at 0, so every step puts its ints at the same places
    KvCache& cache = *step.cache;
    device_rows(cache);  // allocated and zeroed outside the recording
    const void* scores_before = step_scores_.data();
    step_scores_.reserve_floats(kMaxStepHeads * cache.kv_heads() * static_cast<int64_t>(cache.capacity()));
    if (step_scores_.data() != scores_before) ++generation_;
    sync();
    const GraphKey key{step.tokens, step.logits_rows, cache.device_rows().get(), cache.capacity(),
                       static_cast<int>(cache.k_type()), static_cast<int>(cache.v_type())};
    auto it = graphs_.find(key);
    if (it != graphs_.end() && it->second.generation == generation_) {
      mode_ = Mode::Replay;
      replay_ = it->second.exec;
      return;
    }
    if (it != graphs_.end()) {
      cudaGraphExecDestroy(it->second.exec);
      graphs_.erase(it);
    }
    if (graphs_.size() >= kMaxGraphs) drop_graphs();
    check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
    mode_ = Mode::Capture;
    capture_key_ = key;
    capture_generation_ = generation_;
  }

  void end_step(bool completed) override {
    const Mode mode = mode_;
    mode_ = Mode::Direct;
    if (mode == Mode::Replay) {
      if (completed) check(cudaGraphLaunch(replay_, stream_), "cudaGraphLaunch (decode step)");
      return;
    }
    if (mode != Mode::Capture) return;
    cudaGraph_t graph = nullptr;
    const cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    if (!completed) {  // abandoned by an exception: nothing to run, nothing to keep
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      return;
    }
    check(e, "cudaStreamEndCapture (decode step)");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t ie = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check(ie, "cudaGraphInstantiate (decode step)");
    // The recording ran nothing: run it now. It is kept only if no buffer moved meanwhile.
    check(cudaGraphLaunch(exec, stream_), "cudaGraphLaunch (decode step)");
    if (capture_generation_ == generation_) {
      graphs_[capture_key_] = Graph{exec, generation_};
    } else {
      sync();
      cudaGraphExecDestroy(exec);
    }
  }

  double measure_read_bandwidth_gbps(size_t bytes, int passes) override {
    sync();
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
  enum class Mode { Direct, Capture, Replay };
  bool replaying() const { return mode_ == Mode::Replay; }

  void drop_graphs() {
    if (!graphs_.empty()) cudaStreamSynchronize(stream_);
    for (auto& [key, g] : graphs_) cudaGraphExecDestroy(g.exec);
    graphs_.clear();
  }

  // Waits for every queued op; the staging ring is free again afterwards.
  void sync() {
    if (mode_ == Mode::Capture)
      throw std::logic_error("CUDA: an op waited for the device inside a recorded decode step (set JETMOE_CUDA_GRAPHS=0)");
    check(cudaStreamSynchronize(stream_), "kernel execution");
    ring_used_ = 0;
    for (IntUpload& u : recent_) u = IntUpload{};  // their ring space is free for reuse now
  }

  // n host ints on the device, through the pinned ring: no wait unless the ring is full. The model
  // passes the same positions and slots to every layer: an array equal to one uploaded since the
  // last wait is reused (24 layers x 4 copies per token become 2).
  const int32_t* upload_ints(const int32_t* host, int64_t n) {
    // Within a step the arrays do not change between layers, and the match must not depend on
    // the values, so that a replay puts each array where the recording did.
    for (const IntUpload& u : recent_)
      if (u.host == host && static_cast<int64_t>(u.values.size()) == n &&
          (mode_ != Mode::Direct || std::equal(u.values.begin(), u.values.end(), host)))
        return u.dev;
    const size_t bytes = sizeof(int32_t) * static_cast<size_t>(std::max<int64_t>(n, 1));
    const size_t padded = (bytes + 255) / 256 * 256;
    if (ring_used_ + padded > ring_host_.bytes()) {
      sync();
      if (padded > ring_host_.bytes()) {
        ring_host_.reserve(padded);
        ring_dev_.reserve(padded);
        ++generation_;
      }
    }
    uint8_t* h = ring_host_.data() + ring_used_;
    uint8_t* d = ring_dev_.as<uint8_t>() + ring_used_;
    std::memcpy(h, host, sizeof(int32_t) * static_cast<size_t>(n));
    if (!replaying())  // a replayed step's recorded copy reads this same pinned slot
      check(cudaMemcpyAsync(d, h, sizeof(int32_t) * static_cast<size_t>(n), cudaMemcpyHostToDevice, stream_),
            "copy to device");
    ring_used_ += padded;
    IntUpload& u = recent_[next_recent_++ % recent_.size()];
    u.host = host;
    u.values.assign(host, host + n);
    u.dev = reinterpret_cast<const int32_t*>(d);
    return u.dev;
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

  // The device copy of `rows` rows of `cols` elements at host address w: inside a tensor given to
  // load_weights (or uploaded before), else a fresh copy, kept by address when large.
  const void* device_weights(const void* w, DType type, int64_t rows, int64_t cols) {
    const auto* p = static_cast<const uint8_t*>(w);
    const size_t bytes = dtype_row_bytes(type, static_cast<size_t>(cols)) * static_cast<size_t>(rows);
    auto it = weights_.upper_bound(p);
    if (it != weights_.begin()) {
      --it;
      // Inside a tensor uploaded before (an expert of a stacked tensor): the same offset, since
      // unpacking keeps every 16-row group where it was.
      if (p + bytes <= it->first + it->second.bytes()) return it->second.as<uint8_t>() + (p - it->first);
    }
    if (bytes < kCachedWeightMinBytes) {
      sync();  // an earlier op may still read the pool entry this one will overwrite
      if (small_used_ == small_.size()) small_.emplace_back();
      return upload_weights(small_[small_used_++], p, type, rows, cols);
    }
    DeviceBuffer& buf = weights_[p];
    buf = DeviceBuffer();
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
  std::map<const uint8_t*, DeviceBuffer> weights_;  // by host address: uploaded once
  std::vector<DeviceBuffer> small_;                 // unregistered small weights of the op running
  size_t small_used_ = 0;                           // how many of small_ this op has taken
  PinnedBuffer ring_host_;                          // staging ring for the ops' host ints
  DeviceBuffer ring_dev_;                           // ... and its device side
  size_t ring_used_ = 0;
  struct IntUpload {  // an array upload_ints copied since the last wait
    const int32_t* host = nullptr;
    std::vector<int32_t> values;
    const int32_t* dev = nullptr;
  };
  std::array<IntUpload, 4> recent_;
  size_t next_recent_ = 0;

  // Recorded decode steps (begin_step / end_step).
  struct GraphKey {
    int64_t tokens, logits_rows;
    const void* cache;
    int capacity, k_type, v_type;
    bool operator<(const GraphKey& o) const {
      return std::tie(tokens, logits_rows, cache, capacity, k_type, v_type) <
             std::tie(o.tokens, o.logits_rows, o.cache, o.capacity, o.k_type, o.v_type);
    }
  };
  struct Graph {
    cudaGraphExec_t exec;
    uint64_t generation;
  };
  static constexpr size_t kMaxGraphs = 16;
  static constexpr int64_t kMaxStepHeads = 16;  // query heads per KV head a recorded step's attention may have
  bool graphs_enabled_ = true;
  Mode mode_ = Mode::Direct;
  std::map<GraphKey, Graph> graphs_;
  cudaGraphExec_t replay_ = nullptr;
  GraphKey capture_key_{};
  uint64_t capture_generation_ = 0;
  uint64_t generation_ = 0;  // bumped whenever an address a recorded step may hold changes
  DeviceBuffer step_scores_;  // attention scratch of recorded steps: every position of the cache
  DeviceBuffer gx_, gy_, scores_;                   // prefill expert groups; attention scores
  std::vector<uint8_t> unpack_;
  std::vector<int32_t> ids_, order_, src_rows_;
  std::vector<int64_t> begin_, fill_;
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

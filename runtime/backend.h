// The operations the JetMoE forward pass needs, as one interface that each device implements
// (ops/cpu/cpu_backend.cpp, ops/cuda/cuda_backend.cu). The model code in
// runtime/jetmoe_model.cpp calls only these, so it is written once for every device.
//
// Activations are float32, row-major, in the backend's own memory (alloc / BackendBuffer: host
// memory for the CPU, device memory for CUDA); the model moves data in and out only through
// copy_to_backend / copy_to_host, so a device runs a whole forward pass without a round trip.
// Small integer arguments (token ids, positions, cache slots) are host arrays, and so are the
// float weights passed as plain pointers (norm gains, biases). Weights are
// WeightViews of any DType (F32, F16, BF16, Q8_0, Q4_0, Q4_K and the CPU's repacked forms) in host
// memory; each backend dequantizes inside its kernels and never expands a quantized weight to
// float in memory. A device backend uploads them once (load_weights); they must not change while
// the backend lives.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loader/jetmoe_weights.h"

namespace jetmoe {

class KvCache;

// One product of a group (see Backend::matmul_group): y[t * ldy + r] = sum_i x[t * cols + i] * W[r, i]
// for t < T, r < rows; W is `rows` rows of `cols` elements of type `dtype` at `w`.
struct MatmulJob {
  const float* x = nullptr;
  int64_t T = 0;
  const void* w = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  float* y = nullptr;
  int64_t ldy = 0;
};

// The job of Backend::matmul(x, T, W, y, ldy) for an [out, in] matrix view W.
inline MatmulJob matmul_job(const float* x, int64_t T, const WeightView& W, float* y, int64_t ldy) {
  MatmulJob j;
  j.x = x;
  j.T = T;
  j.w = W.data;
  j.dtype = W.dtype;
  j.rows = W.rows();
  j.cols = W.cols();
  j.y = y;
  j.ldy = ldy;
  return j;
}

// Memory that an op will read soon (Backend::read_soon).
struct ReadRange {
  const void* p = nullptr;
  size_t bytes = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // Called once by the model with every weight tensor it will pass to the ops (its own float32
  // copies of norms, biases and routers too) before the first op: a device backend uploads them
  // here, replacing any earlier upload from the same address (the CPU reads them in place).
  virtual void load_weights(const std::vector<WeightView>& tensors) {}

  // Brackets the ops of one forward call over a micro-batch (the model calls begin_step first and
  // end_step after its last op, before copying results out). A device backend may record a
  // repeating decode step once and replay it (the CUDA backend: a CUDA graph per step shape).
  // `replayable` is false when the step reads results back midway (a routing trace) or has
  // per-call layouts (packed sequences). end_step(false) ends a step abandoned by an exception.
  struct StepShape {
    int64_t tokens = 0;
    int64_t logits_rows = 0;
    KvCache* cache = nullptr;
    bool replayable = false;
  };
  virtual void begin_step(const StepShape& step) {}
  virtual void end_step(bool completed) {}

  // A hint, before the op whose parallel loop comes last before `ranges` are read: what the op
  // after it reads first (a decode step's next sublayer start reads its router rows, norm gain
  // and bias, small tensors that tens of MB of weight streaming have evicted from every cache).
  // The CPU backend's calling thread fetches them into its L2 during that loop's last ~512 KB of
  // rows (ops/cpu/cpu_matmul_rows.cpp), so they arrive with the stream rather than at one core's
  // miss-limited rate afterwards. The ranges are copied. The default ignores it.
  virtual void read_soon(const ReadRange* ranges, size_t n) {}

  // ---- Activation memory ----
  // `bytes` of the backend's memory, 64-byte aligned (never null; throws std::bad_alloc or
  // std::runtime_error). The default is host memory.
  virtual void* alloc(size_t bytes);
  virtual void release(void* p);
  // Host -> backend memory, and backend -> host after every op queued before it has finished.
  virtual void copy_to_backend(void* dst, const void* host, size_t bytes);
  virtual void copy_to_host(void* host, const void* src, size_t bytes);

  // The read bandwidth of the memory the weights stream from, in GB/s (1e9 bytes), measured now:
  // the median of `passes` timed reads of a `bytes` buffer. 0 when the backend has no probe of its
  // own (the CPU's is jetmoe bench's per-thread-count ReadBandwidthProbe).
  virtual double measure_read_bandwidth_gbps(size_t bytes, int passes) { return 0.0; }

  // x[t, :] = row tokens[t] of `table` ([V, H], any dtype), for t < T.
  virtual void embed(const int32_t* tokens, int64_t T, const WeightView& table, float* x) = 0;

  // y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * gain, rows of length n. y may alias x.
  virtual void rms_norm(const float* x, int64_t T, int64_t n, const float* gain, float eps, float* y) = 0;

  // y[t, r] = sum_i x[t, i] * W[r, i], W an [out, in] matrix of any dtype; x is [T, in], y is [T, out]
  // with row stride ldy (>= out). Prefill (T > 1) reads each weight row once for all T tokens.
  virtual void matmul(const float* x, int64_t T, const WeightView& W, float* y, int64_t ldy) = 0;

  // Several independent matmuls, e.g. the selected experts of one decode step. A backend runs them
  // as one launch where it can (the CPU: one parallel region over the rows of all of them, so a
  // decode step waits at one barrier instead of one per expert). Outputs must not overlap.
  virtual void matmul_group(const MatmulJob* jobs, size_t n_jobs) = 0;

  // Rotate-half RoPE, in place, on x viewed as [T, n_heads, head_dim] with row stride `ld` floats;
  // token t is at absolute position pos[t].
  virtual void rope(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t* pos,
                    float theta) = 0;

  // Causal attention of layer `layer`. q is [T, slots, kv_heads, head_dim] (query head
  // j*kv_heads + h attends with KV head h); the cache already holds this layer's keys/values for
  // cache slots 0..slot[T-1]. Token t sees cache slots first[t]..slot[t] (first == nullptr: from 0;
  // packed batches of independent sequences give each token its own sequence's first slot).
  // out has q's shape.
  virtual void attention(const float* q, int64_t T, int64_t slots, const int32_t* slot, const int32_t* first,
                         const KvCache& cache, int layer, float* out) = 0;

  // h[t, i] = silu(z[t, i]) * z[t, F + i]; z is [T, 2F], h is [T, F].
  virtual void silu_mul(const float* z, int64_t T, int64_t F, float* h) = 0;

  // The position step of attention in one op: RoPE on the keys (the first kv_heads heads of each
  // kv row, values follow at kv + kv_heads * head_dim) and on the q_heads query heads of q, then
  // keys and values into the cache at slot[t] (= rope, kv_store, rope). A device fuses them; the
  // default runs the three ops (runtime/backend.cpp).
  virtual void rope_store(float* kv, int64_t ld_kv, float* q, int64_t q_heads, int64_t ld_q, int64_t T,
                          const int32_t* pos, float theta, KvCache& cache, int layer, const int32_t* slot);

  // ---- Routed experts (sections 5-7 of jetmoe-architecture.md) ----
  // Top-k router: for each token the k largest of its E logits (lower index first on ties),
  // experts[t*k + j] their ids (j = 0 the largest) and gates[t*k + j] the softmax over those k
  // logits only. logits is [T, E]; experts and gates are backend memory.
  virtual void route_topk(const float* logits, int64_t T, int64_t E, int64_t k, int32_t* experts, float* gates) = 0;

  // The start of each sublayer in one op: a = rms_norm(x) with gain, logits = router a (router is
  // an [E, n] float32 matrix), then route_topk. A device fuses the three for a decode step; the
  // default runs them one after the other (runtime/backend.cpp).
  virtual void norm_route(const float* x, int64_t T, int64_t n, const float* gain, float eps, const WeightView& router,
                          int64_t k, float* a, float* logits, int32_t* experts, float* gates);

  // The routed SwiGLU MLP of section 7 for every item: z = W_in[e] x_t ([T*k, 2F]), h = silu(gate
  // half) * up half ([T*k, F]), y = W_out[e] h ([T*k, H]), item i = t*k + j using expert
  // experts[i]. z and h are scratch of those sizes whose layout is the backend's own (the CPU
  // keeps them in expert order, so prompt rows are gathered once and scattered once); y is in
  // item order. The default is expert_matmul, silu_mul, expert_matmul.
  virtual void expert_mlp(const float* x, int64_t T, int64_t k, const int32_t* experts, const WeightView& w_in,
                          const WeightView& w_out, float* z, float* h, float* y);

  // combine_experts(y, gates, T, k, n, bias, x) then norm_route(x, ..., gates): the end of one
  // sublayer and the start of the next (a device fuses them for a decode step). gates holds the
  // finished sublayer's gates on entry and the new ones on return.
  virtual void combine_norm_route(const float* y, float* gates, const float* bias, float* x, int64_t T, int64_t n,
                                  const float* gain, float eps, const WeightView& router, int64_t k, float* a,
                                  float* logits, int32_t* experts);

  // The selected experts' products: for every item i = t*k + j (token t, slot j),
  //   y[i, :] = W[experts[i]] x_i, with x_i = x[i, :] (per_slot) or x[t, :] (per token);
  // W is [E, out, in], y is [T*k, out]. Only the chosen experts are read. `extra` (may be null) is
  // an independent product with the same input run in the same launch (the shared K/V projection).
  virtual void expert_matmul(const float* x, int64_t T, int64_t k, bool per_slot, const int32_t* experts,
                             const WeightView& W, float* y, const MatmulJob* extra) = 0;

  // The gated sum of a token's experts plus the layer's bias, added to the residual:
  //   x[t, :] += bias + sum_j gates[t*k + j] * y[t*k + j, :]      (y is [T*k, n], x is [T, n])
  virtual void combine_experts(const float* y, const float* gates, int64_t T, int64_t k, int64_t n, const float* bias,
                               float* x) = 0;

  // A new cache, before its first kv_store (JetMoeModel::make_cache). The CPU backend starts
  // making the cache's rows resident in the background (KvCache::populate_in_background), so the
  // first token does not fault in the whole cache; a device backend keeps its own rows and leaves
  // the host's alone. The default does nothing.
  virtual void prepare_cache(KvCache& cache) {}

  // Writes keys (after RoPE) and values of T tokens at cache slots slot[t] of `layer`.
  // k and v are [T, kv_heads * head_dim] with row stride ld.
  virtual void kv_store(KvCache& cache, int layer, const float* k, const float* v, int64_t ld, int64_t T,
                        const int32_t* slot) = 0;
};

// Activation memory of one backend, released with the object; grows (without keeping its
// contents) when reserve asks for more. Move-only.
class BackendBuffer {
 public:
  BackendBuffer() = default;
  explicit BackendBuffer(Backend& be) : be_(&be) {}
  ~BackendBuffer() { reset(); }
  BackendBuffer(const BackendBuffer&) = delete;
  BackendBuffer& operator=(const BackendBuffer&) = delete;
  BackendBuffer(BackendBuffer&& o) noexcept : be_(o.be_), p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  BackendBuffer& operator=(BackendBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      be_ = o.be_, p_ = o.p_, n_ = o.n_;
      o.p_ = nullptr, o.n_ = 0;
    }
    return *this;
  }
  // At least n elements of T.
  template <typename T>
  T* reserve(size_t n) {
    const size_t bytes = std::max<size_t>(n, 1) * sizeof(T);
    if (bytes > n_) {
      reset();
      p_ = be_->alloc(bytes);
      n_ = bytes;
    }
    return static_cast<T*>(p_);
  }
  template <typename T>
  T* as() const { return static_cast<T*>(p_); }
  void reset() {
    if (p_) be_->release(p_);
    p_ = nullptr;
    n_ = 0;
  }

 private:
  Backend* be_ = nullptr;
  void* p_ = nullptr;
  size_t n_ = 0;
};

// "cpu" always; "cuda" when built with -DJETMOE_CUDA=ON and a GPU is present. Throws
// std::runtime_error naming the device and the reason otherwise (ops/backend_factory.cpp).
std::unique_ptr<Backend> make_backend(const std::string& device);

// Whether `device` ("cpu", "cuda") can run here: built into this binary, and (for a GPU) a device
// present. `why` says what is missing when usable is false.
struct DeviceAvailability {
  bool built = false;
  bool usable = false;
  std::string why;
};
DeviceAvailability device_availability(const std::string& device);

// The devices usable here, "cpu" first.
std::vector<std::string> usable_devices();

}  // namespace jetmoe

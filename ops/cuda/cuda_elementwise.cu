// The small per-token ops: embedding rows, RMSNorm, RoPE, SwiGLU, KV-cache rows, and the
// read-bandwidth probe. Each follows the CPU backend's arithmetic (ops/cpu/cpu_backend.cpp) step
// for step, so the two agree to float rounding.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/cuda_dequant.cuh"
#include "ops/cuda/cuda_kernels.h"

namespace jetmoe::cuda {
namespace {

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

template <DType Type>
__global__ void embed_kernel(const int32_t* tokens, int64_t T, const uint8_t* table, size_t row_bytes, int64_t H,
                             float* x) {
  const int64_t groups = (H + 31) / 32;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * groups) return;
  const int64_t t = i / groups, g = i % groups;
  float v[32];
  load_group<Type>(table + static_cast<size_t>(tokens[t]) * row_bytes, g, H, v);
#pragma unroll
  for (int k = 0; k < 32; ++k)
    if (32 * g + k < H) x[t * H + 32 * g + k] = v[k];
}

__global__ void rms_norm_kernel(const float* x, int64_t n, const float* gain, float eps, float* y) {
  __shared__ double partial[32];
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * n;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * n;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0.0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) s += partial[w];
    partial[0] = s;
  }
  __syncthreads();
  const float r = static_cast<float>(1.0 / sqrt(partial[0] / static_cast<double>(n) + eps));
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] * r * gain[i];
}

__global__ void rope_kernel(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t* pos,
                            float theta) {
  const int64_t half = head_dim / 2;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * n_heads * half) return;
  const int64_t m = i % half, h = (i / half) % n_heads, t = i / (half * n_heads);
  // As the CPU and the reference: inv_freq and the angle in float32.
  const float inv_freq = 1.0f / powf(theta, static_cast<float>(2 * m) / static_cast<float>(head_dim));
  const float a = static_cast<float>(pos[t]) * inv_freq;
  const float c = cosf(a), s = sinf(a);
  float* v = x + t * ld + h * head_dim;
  const float p = v[m], q = v[m + half];
  v[m] = p * c - q * s;
  v[m + half] = q * c + p * s;
}

__global__ void silu_mul_kernel(const float* z, int64_t T, int64_t F, float* h) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * F) return;
  const int64_t t = i / F, c = i % F;
  const float g = z[t * 2 * F + c], u = z[t * 2 * F + F + c];
  h[i] = g / (1.0f + expf(-g)) * u;
}

// Element i of a KV-cache row of type t, from x (the thread's value). Every lane of the warp must
// call it (Q8_0: each warp is one 32-element block: amax / 127 rounded to fp16, values rounded to
// nearest even, as the CPU's kv_store_row); lanes past the row pass valid = false.
__device__ void store_kv_element(DType t, float x, int i, bool valid, uint8_t* row) {
  if (t == DType::Q8_0) {
    float amax = valid ? fabsf(x) : 0.0f;
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (!valid) return;
    __half dh = __float2half_rn(amax / 127.0f);
    const float ds = __half2float(dh);
    int q = 0;
    if (ds == 0.0f || !isfinite(ds)) {
      dh = __ushort_as_half(0);
    } else {
      const float id = 1.0f / ds;
      q = min(127, max(-127, __float2int_rn(x * id)));
    }
    uint8_t* b = row + 34 * (i / 32);
    if ((i & 31) == 0) {
      const uint16_t bits = __half_as_ushort(dh);
      b[0] = static_cast<uint8_t>(bits & 0xff);
      b[1] = static_cast<uint8_t>(bits >> 8);
    }
    b[2 + (i & 31)] = static_cast<uint8_t>(static_cast<int8_t>(q));
    return;
  }
  if (!valid) return;
  switch (t) {
    case DType::F32: reinterpret_cast<float*>(row)[i] = x; break;
    case DType::F16: reinterpret_cast<__half*>(row)[i] = __float2half_rn(x); break;
    default: reinterpret_cast<__nv_bfloat16*>(row)[i] = __float2bfloat16_rn(x); break;  // BF16
  }
}

// One block per (token, KV head, K or V); thread i converts element i.
__global__ void kv_store_kernel(KvStoreArgs a) {
  const int64_t item = blockIdx.x;
  const bool is_v = item % 2;
  const int64_t h = (item / 2) % a.kv_heads, t = item / (2 * a.kv_heads);
  const float* src = (is_v ? a.v : a.k) + t * a.ld + h * a.d;
  const int64_t rb = is_v ? a.v_row_bytes : a.k_row_bytes;
  uint8_t* dst = (is_v ? a.v_layer : a.k_layer) + h * (is_v ? a.v_head_stride : a.k_head_stride) +
                 static_cast<int64_t>(a.pos[t]) * rb;
  const int i = threadIdx.x;
  const bool valid = i < a.d;
  store_kv_element(is_v ? a.v_type : a.k_type, valid ? src[i] : 0.0f, i, valid, dst);
}

// Rotate-half RoPE of element i of a head at position p (as rope_kernel); v is the head's row.
__device__ float rope_element(const float* v, int64_t i, int64_t d, int32_t p, float theta) {
  const int64_t half = d / 2, m = i < half ? i : i - half;
  const float inv_freq = 1.0f / powf(theta, static_cast<float>(2 * m) / static_cast<float>(d));
  const float ang = static_cast<float>(p) * inv_freq;
  const float c = cosf(ang), s = sinf(ang);
  const float a = v[m], b = v[m + half];
  return i < half ? a * c - b * s : b * c + a * s;
}

// Backend::rope_store: one block per (token, unit); units 0..kv_heads-1 rotate a key head and store
// it and its value head into the cache, the rest rotate one query head in place.
__global__ void rope_store_kernel(RopeStoreArgs a) {
  const int64_t units = a.kv.kv_heads + a.q_heads;
  const int64_t t = blockIdx.x / units, u = blockIdx.x % units;
  const int i = threadIdx.x;
  const int64_t d = a.kv.d;
  const bool valid = i < d;
  const bool key = u < a.kv.kv_heads;
  float* v = key ? a.kv_rows + t * a.kv.ld + u * d : a.q + t * a.ld_q + (u - a.kv.kv_heads) * d;
  const float r = valid ? rope_element(v, i, d, a.rope_pos[t], a.theta) : 0.0f;
  __syncthreads();  // every pair is read before any element is written back
  if (valid) v[i] = r;
  if (!key) return;
  const int64_t p = a.kv.pos[t];
  store_kv_element(a.kv.k_type, r, i, valid, a.kv.k_layer + u * a.kv.k_head_stride + p * a.kv.k_row_bytes);
  const float* vv = a.kv.v + t * a.kv.ld + u * d;
  store_kv_element(a.kv.v_type, valid ? vv[i] : 0.0f, i, valid, a.kv.v_layer + u * a.kv.v_head_stride + p * a.kv.v_row_bytes);
}

__global__ void read_probe_kernel(const uint4* buf, size_t n, unsigned long long* sink) {
  uint32_t acc = 0;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(buf + i);  // streaming: don't keep the probe's lines in L2
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) atomicAdd(sink, 1ull);  // practically never true; keeps the loads alive
}

}  // namespace

void launch_embed(const int32_t* tokens, int64_t T, const void* table, DType type, int64_t H, float* x,
                  cudaStream_t stream) {
  const int64_t n = T * ((H + 31) / 32);
  const size_t rb = dtype_row_bytes(type, static_cast<size_t>(H));
  const auto* tb = static_cast<const uint8_t*>(table);
  const unsigned grid = blocks_for(n, 128);
  switch (type) {
    case DType::F32: embed_kernel<DType::F32><<<grid, 128, 0, stream>>>(tokens, T, tb, rb, H, x); break;
    case DType::F16: embed_kernel<DType::F16><<<grid, 128, 0, stream>>>(tokens, T, tb, rb, H, x); break;
    case DType::BF16: embed_kernel<DType::BF16><<<grid, 128, 0, stream>>>(tokens, T, tb, rb, H, x); break;
    case DType::Q8_0: embed_kernel<DType::Q8_0><<<grid, 128, 0, stream>>>(tokens, T, tb, rb, H, x); break;
    case DType::Q4_0: embed_kernel<DType::Q4_0><<<grid, 128, 0, stream>>>(tokens, T, tb, rb, H, x); break;
    case DType::Q4_K: embed_kernel<DType::Q4_K><<<grid, 128, 0, stream>>>(tokens, T, tb, rb, H, x); break;
    default:
      throw std::invalid_argument(std::string("CUDA embed: table of type ") + dtype_name(type) +
                                  " must be unpacked to its file layout before upload");
  }
  check_launch("embed");
}

void launch_rms_norm(const float* x, int64_t T, int64_t n, const float* gain, float eps, float* y, cudaStream_t stream) {
  if (T <= 0) return;
  // Two values per thread (up to 1024 threads): one row is all the work of a decode step.
  const int threads = static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(32, (n / 2 + 31) / 32 * 32)));
  rms_norm_kernel<<<static_cast<unsigned>(T), threads, 0, stream>>>(x, n, gain, eps, y);
  check_launch("rms_norm");
}

void launch_rope(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t* pos, float theta,
                 cudaStream_t stream) {
  const int64_t n = T * n_heads * (head_dim / 2);
  if (n <= 0) return;
  rope_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, T, n_heads, head_dim, ld, pos, theta);
  check_launch("rope");
}

void launch_silu_mul(const float* z, int64_t T, int64_t F, float* h, cudaStream_t stream) {
  if (T * F <= 0) return;
  silu_mul_kernel<<<blocks_for(T * F, 256), 256, 0, stream>>>(z, T, F, h);
  check_launch("silu_mul");
}

void launch_kv_store(const KvStoreArgs& a, cudaStream_t stream) {
  if (a.T <= 0) return;
  const int threads = static_cast<int>((a.d + 31) / 32 * 32);
  kv_store_kernel<<<static_cast<unsigned>(a.T * a.kv_heads * 2), threads, 0, stream>>>(a);
  check_launch("kv_store");
}

void launch_rope_store(const RopeStoreArgs& a, cudaStream_t stream) {
  if (a.kv.T <= 0) return;
  const int threads = static_cast<int>((a.kv.d + 31) / 32 * 32);
  rope_store_kernel<<<static_cast<unsigned>(a.kv.T * (a.kv.kv_heads + a.q_heads)), threads, 0, stream>>>(a);
  check_launch("rope_store");
}

void launch_read_probe(const void* buf, size_t bytes, unsigned long long* sink, cudaStream_t stream) {
  int device = 0, sms = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "multiprocessor count");
  read_probe_kernel<<<static_cast<unsigned>(sms * 8), 512, 0, stream>>>(static_cast<const uint4*>(buf), bytes / 16, sink);
  check_launch("read probe");
}

}  // namespace jetmoe::cuda

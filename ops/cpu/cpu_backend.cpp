#include "ops/cpu/cpu_backend.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "ops/cpu/float_dot.h"
#include "ops/cpu/kv_rows.h"
#include "ops/cpu/vec_math.h"
#include "ops/cpu/worker_team.h"
#include "quant/quantize.h"
#include "quant/stream_prefetch.h"
#include "runtime/kv_cache.h"

namespace jetmoe {
namespace {

// Weight rows widened to float per GEMM call (bounded scratch: never a whole tensor).
constexpr int64_t kWidenRows = 512;
}  // namespace

// Reads the kernel settings from the environment (JETMOE_FORCE_ISA, JETMOE_PREFETCH) here, on the
// thread that builds the model, so a bad value is an error naming the variable at load time and
// not an exception inside a worker thread.
CpuBackend::CpuBackend() {
  active_isa();
  decode_prefetch_bytes();
}

std::string CpuBackend::name() const { return std::string("cpu (") + isa_name(active_isa()) + ")"; }

void CpuBackend::embed(const int32_t* tokens, int64_t T, const WeightView& table, float* x) {
  const int64_t H = table.cols(), V = table.rows();
  for (int64_t t = 0; t < T; ++t) {
    if (tokens[t] < 0 || tokens[t] >= V)
      throw std::out_of_range("token id " + std::to_string(tokens[t]) + " is outside the vocabulary 0.." +
                              std::to_string(V - 1));
    if (dtype_is_quantized(table.dtype)) {  // one row: the table itself stays quantized
      dequantize_matrix_row(table.dtype, table.data, tokens[t], x + t * H, H);
      continue;
    }
    const uint8_t* row = static_cast<const uint8_t*>(table.data) + static_cast<size_t>(tokens[t]) * table.row_bytes();
    float_row_to_f32(table.dtype, row, H, x + t * H);
  }
}

void CpuBackend::rms_norm(const float* x, int64_t T, int64_t n, const float* gain, float eps, float* y) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * n;
    float* yr = y + t * n;
    // double: the mean of squares is the one reduction where fp32 loses digits. Eight partial
    // sums: one chain of 2048 dependent double adds was ~3.5 us per norm, twice per layer of a
    // decode step, on a 2.3 GHz core with the memory bus idle meanwhile.
    constexpr int64_t kLanes = 8;
    double part[kLanes] = {};
    int64_t i0 = 0;
    for (; i0 + kLanes <= n; i0 += kLanes)
      for (int64_t l = 0; l < kLanes; ++l) part[l] += static_cast<double>(xr[i0 + l]) * xr[i0 + l];
    double ss = 0.0;
    for (; i0 < n; ++i0) ss += static_cast<double>(xr[i0]) * xr[i0];
    for (double v : part) ss += v;
    const float r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
    for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * r * gain[i];
  }
}

void CpuBackend::matmul(const float* x, int64_t T, const WeightView& W, float* y, int64_t ldy) {
  const MatmulJob job = matmul_job(x, T, W, y, ldy);
  matmul_group(&job, 1);
}

// Float weights with many tokens go to OpenBLAS SGEMM (one call per job, threaded inside);
// everything else (quantized weights at any T, float weights at few tokens) is split by rows
// over the threads, all jobs in one parallel region.
void CpuBackend::matmul_group(const MatmulJob* jobs, size_t n_jobs) {
  gemm_jobs_.clear();
  row_jobs_.clear();
  for (size_t i = 0; i < n_jobs; ++i) {
    if (jobs[i].T <= 0 || jobs[i].rows <= 0) continue;
    if (!dtype_is_quantized(jobs[i].dtype) && jobs[i].T >= kCpuGemmMinTokens)
      gemm_jobs_.push_back(jobs[i]);
    else
      row_jobs_.push_back(jobs[i]);
  }
  if (!row_jobs_.empty()) matmul_row_jobs(row_jobs_.data(), row_jobs_.size());
  for (const MatmulJob& j : gemm_jobs_) matmul_float_gemm(j);
}

// Prefill with float weights: OpenBLAS SGEMM. F32 weights are used in place; F16/BF16 weights are
// widened kWidenRows rows at a time into a bounded scratch buffer.
void CpuBackend::matmul_float_gemm(const MatmulJob& j) {
  const int64_t rows = j.rows, n = j.cols, T = j.T;
  if (j.dtype == DType::F32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(rows),
                static_cast<int>(n), 1.0f, j.x, static_cast<int>(n), static_cast<const float*>(j.w),
                static_cast<int>(n), 0.0f, j.y, static_cast<int>(j.ldy));
    return;
  }
  const size_t rb = dtype_row_bytes(j.dtype, static_cast<size_t>(n));
  const uint8_t* base = static_cast<const uint8_t*>(j.w);
  widen_.resize(static_cast<size_t>(std::min(rows, kWidenRows) * n));
  for (int64_t r0 = 0; r0 < rows; r0 += kWidenRows) {
    const int64_t nr = std::min(kWidenRows, rows - r0);
#pragma omp parallel for schedule(static) if (nr * n >= kCpuParallelMinWork)
    for (int64_t r = 0; r < nr; ++r)
      float_row_to_f32(j.dtype, base + static_cast<size_t>(r0 + r) * rb, n, widen_.data() + r * n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(nr),
                static_cast<int>(n), 1.0f, j.x, static_cast<int>(n), widen_.data(), static_cast<int>(n), 0.0f,
                j.y + r0, static_cast<int>(j.ldy));
  }
}

// cos and sin of every (position, frequency) pair of the step: the same positions come back for
// every layer (and for K and Q), so they are computed once per step. As the reference: inv_freq
// and angles in float32.
const float* CpuBackend::rope_table(const int32_t* pos, int64_t T, int64_t head_dim, float theta) {
  const int64_t half = head_dim / 2;
  RopeTable& r = rope_table_;
  const bool same_freq = r.theta == theta && r.head_dim == head_dim;
  if (same_freq && r.pos.size() == static_cast<size_t>(T) && std::equal(r.pos.begin(), r.pos.end(), pos))
    return r.cos_sin.data();
  if (!same_freq) {
    r.theta = theta;
    r.head_dim = head_dim;
    r.inv_freq.resize(static_cast<size_t>(half));
    for (int64_t m = 0; m < half; ++m)
      r.inv_freq[static_cast<size_t>(m)] =
          1.0f / std::pow(theta, static_cast<float>(2 * m) / static_cast<float>(head_dim));
  }
  r.pos.assign(pos, pos + T);
  r.cos_sin.resize(static_cast<size_t>(T * 2 * half));
  for (int64_t t = 0; t < T; ++t) {
    float* c = r.cos_sin.data() + t * 2 * half;
    for (int64_t m = 0; m < half; ++m) {
      const float a = static_cast<float>(pos[t]) * r.inv_freq[static_cast<size_t>(m)];
      c[m] = std::cos(a);
      c[half + m] = std::sin(a);
    }
  }
  return r.cos_sin.data();
}

void CpuBackend::rope(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t* pos,
                      float theta) {
  const int64_t half = head_dim / 2;
  const float* table = rope_table(pos, T, head_dim, theta);
  for (int64_t t = 0; t < T; ++t) {
    const float* c = table + t * 2 * half;
    const float* s = c + half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + t * ld + h * head_dim;
      for (int64_t m = 0; m < half; ++m) {
        const float a = v[m], b = v[m + half];
        v[m] = a * c[m] - b * s[m];
        v[m + half] = b * c[m] + a * s[m];
      }
    }
  }
}

void CpuBackend::prepare_cache(KvCache& cache) { cache.populate_in_background(); }

void CpuBackend::kv_store(KvCache& cache, int layer, const float* k, const float* v, int64_t ld, int64_t T,
                          const int32_t* pos) {
  const int d = cache.head_dim();
  for (int64_t t = 0; t < T; ++t)
    if (pos[t] < 0 || pos[t] >= cache.capacity())
      throw std::out_of_range("position " + std::to_string(pos[t]) + " is beyond the context of " +
                              std::to_string(cache.capacity()) + " tokens");
  // A decode step's rows go to 2 x kv_heads places far apart that the weight stream has evicted:
  // asking for every line before the first store lets the misses overlap (Xeon VM, 32 rows of 512
  // bytes after 30 MB streamed: 5.6 -> 3.1 us per layer).
  if (T <= 2)
    for (int64_t t = 0; t < T; ++t)
      for (int h = 0; h < cache.kv_heads(); ++h) {
        prefetch_lines_for_write(cache.k_rows(layer, h) + static_cast<size_t>(pos[t]) * cache.k_row_bytes(),
                                 cache.k_row_bytes());
        prefetch_lines_for_write(cache.v_rows(layer, h) + static_cast<size_t>(pos[t]) * cache.v_row_bytes(),
                                 cache.v_row_bytes());
      }
  const KvStoreFn store = kv_row_kernels(active_isa()).store;
  for (int64_t t = 0; t < T; ++t) {
    const size_t p = static_cast<size_t>(pos[t]);
    for (int h = 0; h < cache.kv_heads(); ++h) {
      store(cache.k_type(), k + t * ld + h * d, d, cache.k_rows(layer, h) + p * cache.k_row_bytes());
      store(cache.v_type(), v + t * ld + h * d, d, cache.v_rows(layer, h) + p * cache.v_row_bytes());
    }
  }
}

namespace {

// softmax in place over p[0..n); returns the sum of the exponentials (the caller divides by it).
float softmax_unnormalised(float* p, int64_t n, const VecMathKernels& vm) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) mx = std::max(mx, p[j]);
  return vm.exp_sum(p, n, mx);
}

}  // namespace

void CpuBackend::attention(const float* q, int64_t T, int64_t slots, const int32_t* slot, const int32_t* first,
                           const KvCache& cache, int layer, float* out) {
  if (T >= kCpuGemmMinTokens) return attention_prefill(q, T, slots, slot, first, cache, layer, out);
  attention_decode(q, T, slots, slot, first, cache, layer, out);
}

// Decode and short batches: one (token, KV head) per work item. The per-ISA kernels of
// ops/cpu/kv_rows.h read each cache row once, in its stored type, for every query head that
// shares the KV head (the slots): scores = K q for both, softmax, out = V^T p for both. No float
// copy of the rows is made, so a compact cache streams fewer bytes and does no extra stores.
// The items run on the worker team (ops/cpu/worker_team.h), like the decode matmuls around them.
void CpuBackend::attention_decode(const float* q, int64_t T, int64_t slots, const int32_t* slot, const int32_t* first,
                                  const KvCache& cache, int layer, float* out) {
  const int64_t nkv = cache.kv_heads(), d = cache.head_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t items = T * nkv;
  const int64_t work = items * slots * (slot[T - 1] + 1) * d;
  const KvRowKernels& kv = kv_row_kernels(active_isa());
  const VecMathKernels& vm = vec_math_kernels(active_isa());
  const size_t pf = decode_prefetch_bytes();
  const size_t touch = kv_touch_bytes();
  const int64_t ld = nkv * d;  // from one slot's query (and output) head to the next slot's
  const auto item = [&](int64_t it) {
    static thread_local std::vector<float> p, inv;  // kept between calls: no allocation per token
    const size_t need_p = static_cast<size_t>(slots * cache.capacity());
    if (p.size() < need_p) p.resize(need_p);
    if (inv.size() < static_cast<size_t>(slots)) inv.resize(static_cast<size_t>(slots));
    const int64_t t = it / nkv, h = it % nkv;
    const int64_t j0 = first ? first[t] : 0;
    const int64_t n = slot[t] + 1 - j0;
    const uint8_t* K = cache.k_rows(layer, static_cast<int>(h)) + static_cast<size_t>(j0) * cache.k_row_bytes();
    const uint8_t* V = cache.v_rows(layer, static_cast<int>(h)) + static_cast<size_t>(j0) * cache.v_row_bytes();
    const int64_t head0 = (t * slots * nkv + h) * d;  // q and out are [T, slots, nkv, d]
    // Intel: the first rows of both streams into L2 now; the kernels prefetch the rest as they
    // go, the same distance ahead (kv_rows_simd.h). V's head start arrives while the keys are
    // scored. Elsewhere: each stream's lines touched sparsely just before it is read
    // (kv_touch_bytes in quant/stream_prefetch.h).
    const size_t k_bytes = static_cast<size_t>(n) * cache.k_row_bytes();
    const size_t v_bytes = static_cast<size_t>(n) * cache.v_row_bytes();
    if (pf) {
      prefetch_lines_l2(K, std::min(pf, k_bytes));
      prefetch_lines_l2(V, std::min(pf, v_bytes));
    }
    if (touch) touch_lines(K, k_bytes, touch);
    kv.scores(cache.k_type(), K, n, d, q + head0, ld, slots, scale, p.data(), n);
    for (int64_t j = 0; j < slots; ++j) inv[static_cast<size_t>(j)] = 1.0f / softmax_unnormalised(p.data() + j * n, n, vm);
    if (touch) touch_lines(V, v_bytes, touch);
    kv.accumulate(cache.v_type(), V, n, d, p.data(), n, slots, inv.data(), out + head0, ld);
  };
  WorkerTeam::shared().run(items, item, work >= kCpuParallelMinWork);
}

// Prefill: for each run of tokens that share a sequence (same first visible slot) and each KV
// head, the keys and values the block of query rows sees are made contiguous floats once (an F32
// cache is used in place; F16/BF16/Q8_0 rows are widened into per-thread buffers), then for each
// slot scores = Q K^T and out = P V are two SGEMMs; the causal mask only trims each row's
// softmax. Work items are (segment, query block, KV head).
void CpuBackend::attention_prefill(const float* q, int64_t T, int64_t slots, const int32_t* slot,
                                   const int32_t* first, const KvCache& cache, int layer, float* out) {
  const int64_t nkv = cache.kv_heads(), d = cache.head_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t ld = slots * nkv * d;  // row stride of one token in q and out
  constexpr int64_t kQueryBlock = 128;
  struct Item {
    int64_t t0, t1, h;
  };
  std::vector<Item> items;
  for (int64_t s0 = 0; s0 < T;) {
    int64_t s1 = s0 + 1;
    while (s1 < T && (first ? first[s1] == first[s0] : true) && slot[s1] == slot[s1 - 1] + 1) ++s1;
    for (int64_t b0 = s0; b0 < s1; b0 += kQueryBlock)
      for (int64_t h = 0; h < nkv; ++h) items.push_back({b0, std::min(s1, b0 + kQueryBlock), h});
    s0 = s1;
  }
  const int64_t n_items = static_cast<int64_t>(items.size());
  const int64_t work = T * slots * nkv * (slot[T - 1] + 1 - (first ? first[0] : 0)) * d;
  const KvWidenFn widen = kv_row_kernels(active_isa()).widen;
  const VecMathKernels& vm = vec_math_kernels(active_isa());
#pragma omp parallel if (work >= kCpuParallelMinWork)
  {
    static thread_local std::vector<float> S, Kf, Vf;  // kept between calls, grown as needed
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; ++it) {
      const Item& w = items[static_cast<size_t>(it)];
      const int h = static_cast<int>(w.h);
      const int64_t nq = w.t1 - w.t0;
      const int64_t k0 = first ? first[w.t0] : 0;
      const int64_t nk = slot[w.t1 - 1] + 1 - k0;  // keys the last query row of the block sees
      if (S.size() < static_cast<size_t>(nq * nk)) S.resize(static_cast<size_t>(nq * nk));
      auto as_floats = [&](DType type, const uint8_t* rows, std::vector<float>& buf) -> const float* {
        if (type == DType::F32) return reinterpret_cast<const float*>(rows);
        if (buf.size() < static_cast<size_t>(nk * d)) buf.resize(static_cast<size_t>(nk * d));
        widen(type, rows, nk, d, buf.data());
        return buf.data();
      };
      const float* K = as_floats(cache.k_type(), cache.k_rows(layer, h) + static_cast<size_t>(k0) * cache.k_row_bytes(), Kf);
      const float* V = as_floats(cache.v_type(), cache.v_rows(layer, h) + static_cast<size_t>(k0) * cache.v_row_bytes(), Vf);
      for (int64_t j = 0; j < slots; ++j) {
        const int64_t head = (j * nkv + w.h) * d;  // this slot's query head within a token's row
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nq), static_cast<int>(nk),
                    static_cast<int>(d), scale, q + w.t0 * ld + head, static_cast<int>(ld), K, static_cast<int>(d),
                    0.0f, S.data(), static_cast<int>(nk));
        for (int64_t r = 0; r < nq; ++r) {
          float* row = S.data() + r * nk;
          const int64_t n = slot[w.t0 + r] + 1 - k0;  // causal: keys up to this token's own slot
          const float inv = 1.0f / softmax_unnormalised(row, n, vm);
          for (int64_t c = 0; c < n; ++c) row[c] *= inv;
          std::fill(row + n, row + nk, 0.0f);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nq), static_cast<int>(d),
                    static_cast<int>(nk), 1.0f, S.data(), static_cast<int>(nk), V, static_cast<int>(d), 0.0f,
                    out + w.t0 * ld + head, static_cast<int>(ld));
      }
    }
  }
}

// The kernels of ops/cpu/vec_math.h, on the worker team in pieces of kSiluPiece values
// (prefill has 512 x 2 x 5632 gates; decode's 2 x 5632 are a few microseconds).
void CpuBackend::silu_mul(const float* z, int64_t T, int64_t F, float* h) {
  constexpr int64_t kSiluPiece = 2048;
  const int64_t per_token = (F + kSiluPiece - 1) / kSiluPiece;
  const auto silu = vec_math_kernels(active_isa()).silu_mul;
  const auto piece = [&](int64_t p) {
    const int64_t t = p / per_token, i0 = p % per_token * kSiluPiece, i1 = std::min(F, i0 + kSiluPiece);
    const float* g = z + t * 2 * F;
    silu(g + i0, g + F + i0, i1 - i0, h + t * F + i0);
  };
  const int64_t pieces = T * per_token;
  WorkerTeam::shared().run(pieces, piece, T * F >= 2 * kSiluPiece);
}

}  // namespace jetmoe

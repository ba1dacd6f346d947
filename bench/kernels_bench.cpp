// Micro-benchmarks of the kernels decode and prefill spend their time in, at JetMoE-8B's shapes:
//   qmatvec / qmatmul   per quantized format and per SIMD path the CPU has (one thread: the
//                       kernel itself; bytes/s and GFLOP/s counters),
//   float_dot           F32 / BF16 / F16 weight rows per SIMD path (one thread),
//   backend_matmul      CpuBackend::matmul on one MLP expert's W_in (backend_matmul_w_out: its
//                       W_out) (all OpenMP threads, active ISA;
//                       includes quantizing the activations); "/step" inside a model step, where
//                       one-token loops run as ops/cpu/decode_row_loops.h,
//   attention           CpuBackend::attention, decode (T=1) at several context lengths and prefill,
//   router              the router product, a [8, 2048] float32 matrix (CpuBackend::matmul),
//   activation_quant    one activation row quantized for the integer kernels, per SIMD path,
//   kv_store            a 512-token prompt's KV rows of one layer converted to each cache type,
//   kv_first_token      a new 4096-position KV cache's first writes, faulting or populated ahead.
// qmatvec matrices named "cache" fit in L2 (compute-bound); "stream" ones (16384 rows) outgrow a
// 32 MB L3 at Q8_0 only; "dram" ones (65536 rows, three copies taken in turn) stream from memory
// on any current CPU. Run: build-bench/bench/jetmoe_kernels_bench --benchmark_filter=qmatvec
#include <benchmark/benchmark.h>

#include <omp.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "loader/aligned_buffer.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/cpu_isa.h"
#include "ops/cpu/float_dot.h"
#include "ops/cpu/kv_rows.h"
#include "quant/qdot.h"
#include "quant/quantize.h"
#include "quant/repack.h"
#include "runtime/kv_cache.h"

namespace jetmoe {
namespace {

constexpr int64_t kHidden = 2048;  // JetMoE-8B hidden size: the input length of most matrices
constexpr int64_t kFfn = 5632;

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// A rows x n matrix of type t with random values, built a row at a time (max-abs quantization:
// the values do not matter for speed). It lives in owned huge-page memory like the runtime's own
// weights: from 4 KiB pages a 75 MB matrix streamed at 12-17 GB/s against 25-27 GB/s from huge
// pages (one thread, Zen 4), the difference being TLB misses, not the kernel.
AlignedBuffer random_matrix(DType t, int64_t rows, int64_t n, uint32_t seed) {
  const size_t rb = dtype_row_bytes(t, static_cast<size_t>(n));
  AlignedBuffer m(rb * static_cast<size_t>(rows));
  std::vector<float> row = random_floats(static_cast<size_t>(n), seed, 0.03f);
  std::mt19937 rng(seed);
  for (int64_t r = 0; r < rows; ++r) {
    std::rotate(row.begin(), row.begin() + static_cast<int64_t>(rng() % static_cast<uint32_t>(n)), row.end());
    uint8_t* d = m.data() + static_cast<size_t>(r) * rb;
    switch (t) {
      case DType::F32: std::memcpy(d, row.data(), rb); break;
      case DType::BF16:
        for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(d)[i] = f32_to_bf16(row[static_cast<size_t>(i)]);
        break;
      case DType::F16:
        for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(d)[i] = f32_to_f16(row[static_cast<size_t>(i)]);
        break;
      default: quantize_row_maxabs(file_type(t), row.data(), d, n);  // interleaved types: below
    }
  }
  if (dtype_is_repacked(t)) repack_rows(file_type(t), m.data(), rows, n);
  return m;
}

void set_counters(benchmark::State& st, double bytes_per_iter, double flops_per_iter) {
  st.counters["bytes/s"] = benchmark::Counter(bytes_per_iter, benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
  st.counters["FLOP/s"] = benchmark::Counter(flops_per_iter, benchmark::Counter::kIsIterationInvariantRate,
                                             benchmark::Counter::kIs1000);
}

// y = W x, one thread, every row of a rows x 2048 matrix. Matrices of 1 << 16 rows or more are
// held `copies` times and taken in turn, so no pass finds lines the previous one left in a
// large victim L3 (with one 75 MB Q4_KR matrix the kernel read "faster" than the read probe).
void bm_qmatvec(benchmark::State& st, CpuIsa isa, DType t, int64_t rows) {
  const int64_t n = kHidden;
  const int copies = rows >= (int64_t{1} << 16) ? 3 : 1;
  std::vector<AlignedBuffer> W;
  W.push_back(random_matrix(t, rows, n, 1));
  for (int c = 1; c < copies; ++c) {
    W.emplace_back(W[0].size());
    std::memcpy(W.back().data(), W[0].data(), W[0].size());
  }
  const auto x = random_floats(static_cast<size_t>(n), 2);
  std::vector<uint8_t> xq(activation_row_bytes(t, n));
  quantize_activation_row(t, x.data(), xq.data(), n);
  std::vector<float> y(static_cast<size_t>(rows));
  size_t next = 0;
  for (auto _ : st) {
    qmatvec_isa(isa, t, W[next].data(), 0, rows, n, xq.data(), y.data());
    next = (next + 1) % W.size();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(st, static_cast<double>(W[0].size()), 2.0 * static_cast<double>(rows * n));
}

// Y = W X for T tokens, one thread (the prefill kernel; activations quantized outside the loop).
void bm_qmatmul(benchmark::State& st, CpuIsa isa, DType t, int64_t rows, int64_t T) {
  const int64_t n = kHidden;
  const auto W = random_matrix(t, rows, n, 3);
  const auto X = random_floats(static_cast<size_t>(T * n), 4);
  const size_t arb = activation_row_bytes(t, n);
  std::vector<uint8_t> Xq(arb * static_cast<size_t>(T));
  quantize_activation_rows(t, X.data(), n, Xq.data(), T, n);
  std::vector<float> Y(static_cast<size_t>(T * rows));
  for (auto _ : st) {
    qmatmul_isa(isa, t, W.data(), 0, rows, n, Xq.data(), T, Y.data(), rows);
    benchmark::DoNotOptimize(Y.data());
    benchmark::ClobberMemory();
  }
  set_counters(st, static_cast<double>(W.size()), 2.0 * static_cast<double>(rows * n * T));
}

// Float weight rows (F32/BF16/F16) times T float vectors, one thread.
void bm_float_dot(benchmark::State& st, CpuIsa isa, DType t, int64_t rows, int64_t T) {
  const int64_t n = kHidden;
  const auto W = random_matrix(t, rows, n, 5);
  const auto X = random_floats(static_cast<size_t>(T * n), 6);
  const size_t rb = dtype_row_bytes(t, static_cast<size_t>(n));
  std::vector<float> out(static_cast<size_t>(rows * T));
  const FloatDotFn fn = float_dot_for(isa);
  for (auto _ : st) {
    for (int64_t r = 0; r < rows; ++r) fn(t, W.data() + static_cast<size_t>(r) * rb, X.data(), n, T, n, out.data() + r * T);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(st, static_cast<double>(W.size()), 2.0 * static_cast<double>(rows * n * T));
}

// CpuBackend::matmul on one MLP expert's input matrix [2F, H] (or, w_out, its output matrix
// [H, F]: longer rows, so a piece of rows holds fewer 16-row groups), every OpenMP thread.
void bm_backend_matmul(benchmark::State& st, DType t, int64_t T, bool in_step, bool w_out) {
  const int64_t rows = w_out ? kHidden : 2 * kFfn, n = w_out ? kFfn : kHidden;
  const auto W = random_matrix(t, rows, n, 7);
  WeightView v;
  v.name = w_out ? "w_out[0]" : "w_in[0]";
  v.data = W.data();
  v.dtype = t;
  v.shape = {rows, n};
  const auto X = random_floats(static_cast<size_t>(T * n), 8);
  std::vector<float> Y(static_cast<size_t>(T * rows));
  CpuBackend be;
  if (in_step) be.begin_step({T, 0, nullptr, true});
  for (auto _ : st) {
    be.matmul(X.data(), T, v, Y.data(), rows);
    benchmark::DoNotOptimize(Y.data());
    benchmark::ClobberMemory();
  }
  if (in_step) be.end_step(true);
  set_counters(st, static_cast<double>(W.size()), 2.0 * static_cast<double>(rows * n * T));
  st.counters["threads"] = omp_get_max_threads();
}

// Attention of one layer: T queries (2 slots x 16 heads x 128) at the end of a context of ctx
// positions already in the cache.
void bm_attention(benchmark::State& st, int64_t ctx, int64_t T) {
  const int heads = 16, d = 128, slots = 2;
  KvCache cache(1, heads, d, static_cast<int>(ctx));
  for (int h = 0; h < heads; ++h) {
    const auto k = random_floats(static_cast<size_t>(ctx * d), 10 + static_cast<uint32_t>(h));
    const auto v = random_floats(static_cast<size_t>(ctx * d), 50 + static_cast<uint32_t>(h));
    std::memcpy(cache.k_rows(0, h), k.data(), k.size() * sizeof(float));
    std::memcpy(cache.v_rows(0, h), v.data(), v.size() * sizeof(float));
  }
  cache.set_size(static_cast<int>(ctx));
  const auto q = random_floats(static_cast<size_t>(T * slots * heads * d), 9);
  std::vector<float> out(q.size());
  std::vector<int32_t> slot(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) slot[static_cast<size_t>(t)] = static_cast<int32_t>(ctx - T + t);
  CpuBackend be;
  for (auto _ : st) {
    be.attention(q.data(), T, slots, slot.data(), nullptr, cache, 0, out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  // K and V bytes each query reads (the causal prefix), summed over the T queries.
  double kv_reads = 0;
  for (int64_t t = 0; t < T; ++t) kv_reads += static_cast<double>(slot[static_cast<size_t>(t)] + 1) * heads * d * 2 * 4;
  set_counters(st, kv_reads, kv_reads / 4 * slots * 2);
}

// One activation row quantized for the integer kernels (decode does it before every matmul group:
// 2,048 values for most, 11,264 for the experts' gated values), one thread, from L1/L2.
void bm_activation_quant(benchmark::State& st, CpuIsa isa, DType t, int64_t n) {
  const auto x = random_floats(static_cast<size_t>(n), 13);
  std::vector<uint8_t> xq(activation_row_bytes(t, n));
  for (auto _ : st) {
    quantize_activation_row_isa(isa, t, x.data(), xq.data(), n);
    benchmark::DoNotOptimize(xq.data());
    benchmark::ClobberMemory();
  }
  set_counters(st, static_cast<double>(n * sizeof(float)), 0.0);
}

// A 512-token prompt's KV rows of one layer stored in a cache type (2 x 16 KV heads x 128 values
// per token, CpuBackend::kv_store's conversion), per SIMD path, one thread.
void bm_kv_store(benchmark::State& st, CpuIsa isa, DType t) {
  const int64_t d = 128, rows = 512 * 2 * 16;
  const auto x = random_floats(static_cast<size_t>(rows * d), 14);
  const size_t rb = dtype_row_bytes(t, static_cast<size_t>(d));
  std::vector<uint8_t> out(rb * static_cast<size_t>(rows));
  const KvStoreFn store = kv_row_kernels(isa).store;
  for (auto _ : st) {
    for (int64_t r = 0; r < rows; ++r) store(t, x.data() + r * d, d, out.data() + static_cast<size_t>(r) * rb);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(st, static_cast<double>(rows * d * sizeof(float)), 0.0);
}

// The first token's writes to a new KV cache (JetMoE-8B: 24 layers x 16 KV heads x 128, f16,
// 4096 positions, 805 MB): CpuBackend::kv_store of position 0 in every layer, timed alone after a
// 2-second pause (a chat user typing) in which the cache is populated in the background
// (CpuBackend::prepare_cache, as JetMoeModel::make_cache calls it) or not. Without it, these
// writes fault in every huge page of the cache.
void bm_kv_first_token(benchmark::State& st, bool populate) {
  KvCacheTypes types;
  types.k = types.v = DType::F16;
  const int64_t heads = 16, d = 128;
  const auto kv = random_floats(static_cast<size_t>(2 * heads * d), 15);  // one token's keys, then values
  const int32_t pos = 0;
  CpuBackend be;
  for (auto _ : st) {
    KvCache c(24, static_cast<int>(heads), static_cast<int>(d), 4096, types);
    if (populate) be.prepare_cache(c);
    std::this_thread::sleep_for(std::chrono::seconds(2));
    const auto t0 = std::chrono::steady_clock::now();
    for (int l = 0; l < c.layers(); ++l) be.kv_store(c, l, kv.data(), kv.data() + heads * d, heads * d, 1, &pos);
    st.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    benchmark::ClobberMemory();
  }
}

// The router: logits of 8 experts, [8, 2048] float32, for T tokens.
void bm_router(benchmark::State& st, int64_t T) {
  const int64_t E = 8, n = kHidden;
  const auto W = random_floats(static_cast<size_t>(E * n), 11, 0.03f);
  WeightView v;
  v.name = "router";
  v.data = W.data();
  v.dtype = DType::F32;
  v.shape = {E, n};
  const auto X = random_floats(static_cast<size_t>(T * n), 12);
  std::vector<float> Y(static_cast<size_t>(T * E));
  CpuBackend be;
  for (auto _ : st) {
    be.matmul(X.data(), T, v, Y.data(), E);
    benchmark::DoNotOptimize(Y.data());
    benchmark::ClobberMemory();
  }
  set_counters(st, static_cast<double>(W.size() * 4), 2.0 * static_cast<double>(E * n * T));
}

void register_all() {
  const DType qtypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q8_0R, DType::Q4_0R, DType::Q4_KR};
  const DType ftypes[] = {DType::F32, DType::BF16, DType::F16};
  for (CpuIsa isa : supported_isas()) {
    const std::string is = isa_name(isa);
    for (DType t : qtypes) {
      const std::string ts = dtype_name(t);
      // 256 rows (~0.5 MB at Q8_0) stay in L2; 16384 rows (~36 MB at Q8_0, 19 MB at Q4_0) stream
      // from memory on a 32 MB-L3 machine at Q8_0 (use --benchmark_filter to pick).
      benchmark::RegisterBenchmark(("qmatvec/" + ts + "/" + is + "/cache").c_str(), bm_qmatvec, isa, t, int64_t{256});
      benchmark::RegisterBenchmark(("qmatvec/" + ts + "/" + is + "/stream").c_str(), bm_qmatvec, isa, t, int64_t{16384});
      // 65536 rows (75 MB at Q4, 142 MB at Q8): from DRAM on any current L3.
      benchmark::RegisterBenchmark(("qmatvec/" + ts + "/" + is + "/dram").c_str(), bm_qmatvec, isa, t, int64_t{65536});
      // 4 and 8 tokens: either side of where GGUF-layout weights start to be packed for the
      // interleaved kernels (quant/qmatmul_packed.cpp).
      for (int64_t T : {4, 8, 16, 128})
        benchmark::RegisterBenchmark(("qmatmul/" + ts + "/" + is + "/T" + std::to_string(T)).c_str(), bm_qmatmul, isa, t,
                                     int64_t{1024}, T);
    }
    for (DType t : {DType::Q8_0, DType::Q4_K, DType::Q8_0R, DType::Q4_0R, DType::Q4_KR})
      for (int64_t n : {2048, 11264})
        benchmark::RegisterBenchmark(("activation_quant/" + std::string(dtype_name(t)) + "/" + is + "/" + std::to_string(n)).c_str(),
                                     bm_activation_quant, isa, t, n);
    for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0})
      benchmark::RegisterBenchmark(("kv_store/" + std::string(dtype_name(t)) + "/" + is + "/T512").c_str(), bm_kv_store, isa, t);
    for (DType t : ftypes)
      for (int64_t T : {1, 4})
        benchmark::RegisterBenchmark(("float_dot/" + std::string(dtype_name(t)) + "/" + is + "/T" + std::to_string(T)).c_str(),
                                     bm_float_dot, isa, t, int64_t{1024}, T);
  }
  for (DType t : qtypes)
    for (int64_t T : {1, 64})
      for (bool in_step : {false, true})
        if (!in_step || T == 1)
          benchmark::RegisterBenchmark(
              ("backend_matmul/" + std::string(dtype_name(t)) + "/T" + std::to_string(T) + (in_step ? "/step" : "")).c_str(),
              bm_backend_matmul, t, T, in_step, false)
              ->UseRealTime();
  for (DType t : qtypes)
    benchmark::RegisterBenchmark(("backend_matmul_w_out/" + std::string(dtype_name(t)) + "/T64").c_str(), bm_backend_matmul, t,
                                 int64_t{64}, false, true)
        ->UseRealTime();
  for (int64_t ctx : {128, 512, 2048})
    benchmark::RegisterBenchmark(("attention/decode/ctx" + std::to_string(ctx)).c_str(), bm_attention, ctx, int64_t{1})
        ->UseRealTime();
  benchmark::RegisterBenchmark("attention/prefill/T512", bm_attention, int64_t{512}, int64_t{512})->UseRealTime();
  for (int64_t T : {1, 512})
    benchmark::RegisterBenchmark(("router/T" + std::to_string(T)).c_str(), bm_router, T)->UseRealTime();
  for (bool populate : {false, true})
    benchmark::RegisterBenchmark(populate ? "kv_first_token/ctx4096_f16/populated" : "kv_first_token/ctx4096_f16/faulting",
                                 bm_kv_first_token, populate)
        ->UseManualTime()
        ->Iterations(3)
        ->Unit(benchmark::kMillisecond);
}

}  // namespace
}  // namespace jetmoe

int main(int argc, char** argv) {
  jetmoe::register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// Every CPU op against a float64 reference written here, on every kernel path the CPU has.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/cpu_isa.h"
#include "ops/cpu/float_dot.h"
#include "ops/cpu/vec_math.h"
#include "quant/stream_prefetch.h"
#include "quant/qdot.h"
#include "quant/quantize.h"
#include "quant/repack.h"
#include "runtime/kv_cache.h"
#include "support/proc_cpuinfo.h"
#include "support/random_data.h"

using namespace jetmoe;

namespace {

using test::randn;

// Weights stored as `dt`, plus the exact float values they hold (the reference uses those).
struct TypedWeights {
  std::vector<uint8_t> bytes;
  std::vector<double> exact;
  WeightView view;
};

TypedWeights make_weights(DType dt, int64_t rows, int64_t cols, uint64_t seed) {
  TypedWeights w;
  const auto f = randn(static_cast<size_t>(rows * cols), seed, 0.1f);
  w.exact.resize(f.size());
  w.bytes.resize(f.size() * dtype_block_bytes(dt));
  for (size_t i = 0; i < f.size(); ++i) {
    if (dt == DType::F32) {
      std::memcpy(w.bytes.data() + 4 * i, &f[i], 4);
      w.exact[i] = f[i];
    } else {
      const uint16_t h = dt == DType::BF16 ? f32_to_bf16(f[i]) : f32_to_f16(f[i]);
      std::memcpy(w.bytes.data() + 2 * i, &h, 2);
      w.exact[i] = dt == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
  w.view.name = "test";
  w.view.data = w.bytes.data();
  w.view.dtype = dt;
  w.view.shape = {rows, cols};
  return w;
}

class CpuOps : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override { set_active_isa(GetParam()); }
  void TearDown() override { set_active_isa(detect_best_isa()); }
  CpuBackend be;
};

TEST_P(CpuOps, MatmulAllFloatTypesAndBatchSizes) {
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    for (int64_t T : {1, 2, 3, 5, 8, 17}) {  // row kernels below 8 tokens, OpenBLAS GEMM from 8
      for (int64_t cols : {7, 64, 100, 257}) {
        const int64_t rows = 37;
        SCOPED_TRACE(std::string(dtype_name(dt)) + " T=" + std::to_string(T) + " cols=" + std::to_string(cols));
        TypedWeights w = make_weights(dt, rows, cols, 7 + static_cast<uint64_t>(T * cols));
        const auto x = randn(static_cast<size_t>(T * cols), 99);
        const int64_t ldy = rows + 3;
        std::vector<float> y(static_cast<size_t>(T * ldy), -1.0f);
        be.matmul(x.data(), T, w.view, y.data(), ldy);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t r = 0; r < rows; ++r) {
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < cols; ++i) {
              ref += w.exact[static_cast<size_t>(r * cols + i)] * x[static_cast<size_t>(t * cols + i)];
              mag += std::fabs(w.exact[static_cast<size_t>(r * cols + i)] * x[static_cast<size_t>(t * cols + i)]);
            }
            ASSERT_NEAR(y[static_cast<size_t>(t * ldy + r)], ref, 1e-6 * mag + 1e-7) << "t=" << t << " r=" << r;
          }
        for (int64_t t = 0; t < T; ++t)  // padding columns untouched
          for (int64_t r = rows; r < ldy; ++r) ASSERT_EQ(y[static_cast<size_t>(t * ldy + r)], -1.0f);
      }
    }
  }
}

TEST_P(CpuOps, FloatDecodeRowsAtEveryPrefetchDistance) {
  // One token: the row kernels prefetch ahead of the weights (quant/stream_prefetch.h), past the
  // end of the last row too; every distance gives the same sums, and they match float64.
  const size_t saved = decode_prefetch_bytes();
  for (DType dt : {DType::F32, DType::BF16, DType::F16})
    for (int64_t cols : {64, 257, 2048}) {
      const int64_t rows = 37;
      TypedWeights w = make_weights(dt, rows, cols, 11 + static_cast<uint64_t>(cols));
      const auto x = randn(static_cast<size_t>(cols), 5);
      std::vector<float> first;
      for (size_t distance : {size_t{0}, size_t{4096}, size_t{65536}}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " cols=" + std::to_string(cols) + " prefetch " + std::to_string(distance));
        set_decode_prefetch_bytes(distance);
        std::vector<float> y(static_cast<size_t>(rows), -1.0f);
        be.matmul(x.data(), 1, w.view, y.data(), rows);
        for (int64_t r = 0; r < rows; ++r) {
          double ref = 0, mag = 0;
          for (int64_t i = 0; i < cols; ++i) {
            ref += w.exact[static_cast<size_t>(r * cols + i)] * x[static_cast<size_t>(i)];
            mag += std::fabs(w.exact[static_cast<size_t>(r * cols + i)] * x[static_cast<size_t>(i)]);
          }
          ASSERT_NEAR(y[static_cast<size_t>(r)], ref, 1e-6 * mag + 1e-7) << "r=" << r;
        }
        if (first.empty()) first = y;
        EXPECT_EQ(y, first);
      }
    }
  reset_decode_prefetch_bytes();
  EXPECT_EQ(decode_prefetch_bytes(), saved);
}

TEST_P(CpuOps, FloatDotRowsAreTheRowKernelsBitsAndMatchFloat64) {
  // The router's kernel (float_dot.h, FloatDotRowsFn): several rows of one token in one pass.
  // Each sum must be the same bits as the row-by-row kernel's (which experts a router picks must
  // not depend on which of the two ran) and match float64; nothing past out[n_rows) is written.
  const FloatDotFn dot = float_dot_for(GetParam());
  const FloatDotRowsFn dot_rows = float_dot_rows_for(GetParam());
  for (DType dt : {DType::F32, DType::BF16, DType::F16})
    for (int64_t cols : {7, 64, 100, 257, 2048})
      for (int64_t n_rows = 1; n_rows <= 9; ++n_rows) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " cols=" + std::to_string(cols) + " rows=" + std::to_string(n_rows));
        TypedWeights w = make_weights(dt, n_rows, cols, 31 + static_cast<uint64_t>(cols * n_rows));
        const auto x = randn(static_cast<size_t>(cols), 17);
        const size_t rb = w.view.row_bytes();
        std::vector<float> out(static_cast<size_t>(n_rows) + 1, -1.0f);
        dot_rows(dt, w.bytes.data(), rb, n_rows, x.data(), cols, out.data());
        EXPECT_EQ(out.back(), -1.0f);
        for (int64_t r = 0; r < n_rows; ++r) {
          float one = 0.0f;
          dot(dt, w.bytes.data() + static_cast<size_t>(r) * rb, x.data(), cols, 1, cols, &one);
          EXPECT_EQ(std::memcmp(&one, &out[static_cast<size_t>(r)], sizeof(float)), 0)
              << "r=" << r << ": " << out[static_cast<size_t>(r)] << " vs row by row " << one;
          double ref = 0, mag = 0;
          for (int64_t i = 0; i < cols; ++i) {
            ref += w.exact[static_cast<size_t>(r * cols + i)] * x[static_cast<size_t>(i)];
            mag += std::fabs(w.exact[static_cast<size_t>(r * cols + i)] * x[static_cast<size_t>(i)]);
          }
          ASSERT_NEAR(out[static_cast<size_t>(r)], ref, 1e-6 * mag + 1e-7) << "r=" << r;
        }
      }
}

TEST_P(CpuOps, RmsNorm) {
  const int64_t T = 3, n = 96;
  const auto x = randn(static_cast<size_t>(T * n), 1, 3.0f);
  const auto g = randn(static_cast<size_t>(n), 2);
  std::vector<float> y(x.size());
  be.rms_norm(x.data(), T, n, g.data(), 1e-5f, y.data());
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(x[t * n + i]) * x[t * n + i];
    const double r = 1.0 / std::sqrt(ss / n + 1e-5);
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(y[t * n + i], x[t * n + i] * r * g[i], 2e-6 * (1 + std::fabs(x[t * n + i] * r * g[i])));
  }
}

TEST_P(CpuOps, RopeRotateHalf) {
  const int64_t T = 4, heads = 3, d = 16, ld = heads * d + 5;
  auto x = randn(static_cast<size_t>(T * ld), 3);
  const auto orig = x;
  const int32_t pos[T] = {0, 1, 17, 1000};
  be.rope(x.data(), T, heads, d, ld, pos, 10000.0f);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t m = 0; m < d / 2; ++m) {
        const double inv = std::pow(10000.0, -2.0 * m / d), a = pos[t] * inv;
        const double x0 = orig[t * ld + h * d + m], x1 = orig[t * ld + h * d + m + d / 2];
        // fp32 angles as in the reference: at position 1000 the float angle carries ~1e-4 absolute error
        const double tol = 1e-5 + 2e-7 * pos[t];
        EXPECT_NEAR(x[t * ld + h * d + m], x0 * std::cos(a) - x1 * std::sin(a), tol);
        EXPECT_NEAR(x[t * ld + h * d + m + d / 2], x1 * std::cos(a) + x0 * std::sin(a), tol);
      }
  for (int64_t t = 0; t < T; ++t)  // the padding after the heads is not touched
    for (int64_t i = heads * d; i < ld; ++i) EXPECT_EQ(x[t * ld + i], orig[t * ld + i]);
}

TEST_P(CpuOps, CausalAttentionWithTiledHeads) {
  const int layers = 2, kvh = 2, d = 8, cap = 16, slots = 2;
  KvCache cache(layers, kvh, d, cap);
  const int64_t T = 5;
  const auto k = randn(static_cast<size_t>(T * kvh * d), 4), v = randn(static_cast<size_t>(T * kvh * d), 5);
  const int32_t pos[T] = {0, 1, 2, 3, 4};
  be.kv_store(cache, 1, k.data(), v.data(), kvh * d, T, pos);
  const auto q = randn(static_cast<size_t>(T * slots * kvh * d), 6);
  std::vector<float> out(q.size());
  be.attention(q.data(), T, slots, pos, nullptr, cache, 1, out.data());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < slots; ++j)
      for (int64_t h = 0; h < kvh; ++h) {  // query head j*kvh + h uses KV head h
        const float* qv = q.data() + ((t * slots + j) * kvh + h) * d;
        std::vector<double> s(static_cast<size_t>(t + 1));
        double mx = -1e300, sum = 0;
        for (int64_t p = 0; p <= t; ++p) {
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += double(qv[i]) * k[(p * kvh + h) * d + i];
          s[p] = dot / std::sqrt(double(d));
          mx = std::max(mx, s[p]);
        }
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (int64_t i = 0; i < d; ++i) {
          double o = 0;
          for (int64_t p = 0; p <= t; ++p) o += s[p] / sum * v[(p * kvh + h) * d + i];
          EXPECT_NEAR(out[((t * slots + j) * kvh + h) * d + i], o, 1e-5);
        }
      }
}

TEST_P(CpuOps, SiluMulGateHalfFirst) {
  // Small (serial) and large (pieces on the worker team, F not a multiple of the piece).
  for (auto [T, F] : {std::pair<int64_t, int64_t>{3, 10}, {1, 5632}, {3, 4100}}) {
    const auto z = randn(static_cast<size_t>(T * 2 * F), 8, 2.0f);
    std::vector<float> h(static_cast<size_t>(T * F) + 1, -7.0f);
    be.silu_mul(z.data(), T, F, h.data());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < F; ++i) {
        const double g = z[t * 2 * F + i], u = z[t * 2 * F + F + i];
        ASSERT_NEAR(h[t * F + i], g / (1 + std::exp(-g)) * u, 1e-6 * (1 + std::fabs(g * u))) << T << "x" << F << " t " << t << " i " << i;
      }
    EXPECT_EQ(h.back(), -7.0f);
  }
}

// The vector silu kernels against a double-precision reference, value by value: every gate
// from -100 to 100 in small steps (both ends of exp's range, where the kernel clamps or returns
// +inf), special values, and lengths that leave a scalar tail. Relative to the value, plus 1e-36:
// below about -88.7 exp(-g) overflows float and silu is -0 (std::exp too) where it is ~1e-37.
TEST_P(CpuOps, SiluKernelMatchesDoubleReference) {
  std::vector<float> g;
  for (float v = -100.0f; v <= 100.0f; v += 0.0137f) g.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 88.0f, 88.8f, -88.5f, -88.7f, -88.8f, -87.5f, -95.0f, -103.5f, 1e30f, -1e30f})
    g.push_back(v);
  const auto silu = vec_math_kernels(GetParam()).silu_mul;
  for (size_t n : {g.size(), size_t{13}, size_t{1}}) {
    std::vector<float> u(n), out(n + 1, 5.0f);
    for (size_t i = 0; i < n; ++i) u[i] = i % 3 == 0 ? -1.5f : 1.0f;
    silu(g.data(), u.data(), static_cast<int64_t>(n), out.data());
    for (size_t i = 0; i < n; ++i) {
      const double x = g[i], want = x / (1.0 + std::exp(-x)) * u[i];
      ASSERT_NEAR(out[i], want, 4e-7 * std::fabs(want) + 1e-36) << "gate " << x << " (" << isa_name(GetParam()) << ")";
    }
    EXPECT_EQ(out[n], 5.0f);
  }
}

// The softmax's exponentials: exp(p - shift) value by value against double, and their sum (the
// scores a softmax sees: shift = the maximum, so every exponent is <= 0, down to where exp
// underflows), with a scalar tail.
TEST_P(CpuOps, ExpSumKernelMatchesDoubleReference) {
  const auto exp_sum = vec_math_kernels(GetParam()).exp_sum;
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{100}, int64_t{1001}}) {
    std::vector<float> p(static_cast<size_t>(n) + 1, 9.0f);
    for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = 3.0f - 0.11f * static_cast<float>(i % 997);
    const std::vector<float> in = p;
    const float shift = 3.0f;
    const float sum = exp_sum(p.data(), n, shift);
    double want_sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = std::exp(static_cast<double>(in[static_cast<size_t>(i)]) - shift);
      want_sum += want;
      ASSERT_NEAR(p[static_cast<size_t>(i)], want, 4e-7 * want + 1e-40) << "i " << i << " (" << isa_name(GetParam()) << ")";
    }
    EXPECT_NEAR(sum, want_sum, 1e-6 * want_sum) << n;
    EXPECT_EQ(p[static_cast<size_t>(n)], 9.0f);
  }
}

// A group of quantized jobs (what a decode or prefill step hands the backend): the activations
// are quantized in pieces on the worker team and shared between jobs with the same input and
// format, and every job's rows must come out exactly as one kernel call over the whole matrix
// with the whole activation rows quantized at once.
TEST_P(CpuOps, QuantizedMatmulGroupEqualsWholeKernelCalls) {
  struct Spec {
    DType t;
    int64_t rows, cols;
    int input;  // which activation the job reads
  };
  // The last two are long enough to be cut into several row chunks of decreasing size (guided),
  // one of them with a row count that is not a multiple of 16 (GGUF layout, a short last chunk).
  const std::vector<Spec> specs = {{DType::Q4_0, 48, 2560, 0}, {DType::Q4_0, 48, 2560, 0},
                                   {DType::Q8_0, 32, 2560, 0}, {DType::Q4_K, 32, 1280, 1},
                                   {DType::Q4_0, 1024, 2560, 0}, {DType::Q8_0, 1000, 1280, 1}};
  for (int64_t T : {1, 3, 20}) {
    SCOPED_TRACE("T=" + std::to_string(T));
    std::vector<std::vector<float>> xs = {randn(static_cast<size_t>(T * 2560), 3), randn(static_cast<size_t>(T * 1280), 4)};
    std::vector<std::vector<uint8_t>> W;
    std::vector<std::vector<float>> Y;
    std::vector<MatmulJob> jobs;
    for (size_t k = 0; k < specs.size(); ++k) {
      const Spec& s = specs[k];
      const auto f = randn(static_cast<size_t>(s.rows * s.cols), 20 + k, 0.1f);
      const DType mt = cpu_memory_type(s.t, s.rows);  // repacked where the active ISA wants it
      W.emplace_back(dtype_row_bytes(s.t, s.cols) * static_cast<size_t>(s.rows));
      quantize_tensor_rows(mt, f.data(), W.back().data(), s.rows, s.cols);
      Y.emplace_back(static_cast<size_t>(T * s.rows), -1.0f);
      MatmulJob j;
      j.x = xs[static_cast<size_t>(s.input)].data();
      j.T = T;
      j.w = W.back().data();
      j.dtype = mt;
      j.rows = s.rows;
      j.cols = s.cols;
      j.y = Y.back().data();
      j.ldy = s.rows;
      jobs.push_back(j);
    }
    // What the whole-matrix kernel calls give for each job.
    std::vector<std::vector<float>> want(jobs.size());
    for (size_t k = 0; k < jobs.size(); ++k) {
      const MatmulJob& j = jobs[k];
      const size_t arb = activation_row_bytes(j.dtype, j.cols);
      std::vector<uint8_t> xq(arb * static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) quantize_activation_row(j.dtype, j.x + t * j.cols, xq.data() + t * arb, j.cols);
      want[k].resize(static_cast<size_t>(T * j.rows));
      if (T == 1)
        qmatvec(j.dtype, j.w, 0, j.rows, j.cols, xq.data(), want[k].data());
      else
        qmatmul(j.dtype, j.w, 0, j.rows, j.cols, xq.data(), T, want[k].data(), j.rows);
    }
    // Outside a step, and inside one (one-token loops then run as ops/cpu/decode_row_loops.h).
    for (bool in_step : {false, true}) {
      SCOPED_TRACE(in_step ? "in a step" : "outside a step");
      for (auto& y : Y) std::fill(y.begin(), y.end(), -1.0f);
      if (in_step) be.begin_step({T, 1, nullptr, true});
      be.matmul_group(jobs.data(), jobs.size());
      if (in_step) be.end_step(true);
      for (size_t k = 0; k < jobs.size(); ++k)
        for (size_t i = 0; i < want[k].size(); ++i) ASSERT_EQ(Y[k][i], want[k][i]) << "job " << k << " index " << i;
    }
  }
}

TEST_P(CpuOps, EmbedGathersRowsAndRejectsBadIds) {
  TypedWeights w = make_weights(DType::BF16, 11, 6, 5);
  const int32_t ids[3] = {0, 10, 4};
  std::vector<float> x(18);
  be.embed(ids, 3, w.view, x.data());
  for (int t = 0; t < 3; ++t)
    for (int i = 0; i < 6; ++i) EXPECT_EQ(x[t * 6 + i], static_cast<float>(w.exact[ids[t] * 6 + i]));
  const int32_t bad[1] = {11};
  EXPECT_THROW(be.embed(bad, 1, w.view, x.data()), std::out_of_range);
}

// CPUID's display family and model (the stream plans depend on them) against what Linux prints.
TEST(CpuIsaTest, ModelMatchesProcCpuinfo) {
  const auto proc = test::proc_cpuinfo();
  if (!proc) GTEST_SKIP() << "no /proc/cpuinfo vendor, family and model";
  EXPECT_EQ(cpu_vendor(), proc->vendor);
  const CpuModel m = cpu_model();
  EXPECT_EQ(m.family, proc->family);
  EXPECT_EQ(m.model, proc->model);
}

TEST(KvCacheTest, RejectsPositionsPastCapacity) {
  CpuBackend be;
  KvCache cache(1, 1, 4, 2);
  std::vector<float> k(4), v(4);
  const int32_t pos[1] = {2};
  EXPECT_THROW(be.kv_store(cache, 0, k.data(), v.data(), 4, 1, pos), std::out_of_range);
}

INSTANTIATE_TEST_SUITE_P(EveryIsa, CpuOps, ::testing::ValuesIn(supported_isas()),
                         [](const ::testing::TestParamInfo<CpuIsa>& i) { return std::string(isa_name(i.param)); });

}  // namespace

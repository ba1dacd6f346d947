// Every op of every backend this machine can run, on random inputs, against a float64 reference
// computed here and (for devices other than the CPU) against the CPU backend itself, like ggml's
// test-backend-ops; then the golden checkpoints through the whole model on each device.
//
// In a build without CUDA, or on a machine without a GPU, the device list is just "cpu": the
// harness then checks the CPU against the reference and the device comparisons skip, saying why.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "loader/model_files.h"
#include "ops/cpu/float_dot.h"
#include "ops/cpu/kv_rows.h"
#include "quant/quantize.h"
#include "quant/repack.h"
#include "runtime/backend.h"
#include "runtime/jetmoe_model.h"
#include "runtime/kv_cache.h"
#include "support/golden_checks.h"
#include "support/random_data.h"
#include "support/test_paths.h"

namespace fs = std::filesystem;
using namespace jetmoe;

namespace {

// Weights of any type built from float values: the stored bytes, and the float values they
// stand for (what the reference multiplies with).
struct TestMatrix {
  DType type;
  int64_t rows, cols;
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // [rows, cols], dequantized

  WeightView view() const {
    WeightView v;
    v.name = std::string("test ") + dtype_name(type);
    v.data = bytes.data();
    v.dtype = type;
    v.shape = {rows, cols};
    return v;
  }
};

TestMatrix make_matrix(DType type, int64_t rows, int64_t cols, uint64_t seed) {
  TestMatrix m{type, rows, cols, {}, {}};
  const std::vector<float> x = test::randn(static_cast<size_t>(rows * cols), seed, 0.5f);
  const size_t rb = dtype_row_bytes(type, static_cast<size_t>(cols));
  m.bytes.resize(rb * static_cast<size_t>(rows));
  const DType stored = file_type(type);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * cols;
    uint8_t* dst = m.bytes.data() + static_cast<size_t>(r) * rb;
    if (stored == DType::F32) {
      std::memcpy(dst, xr, rb);
    } else if (stored == DType::F16 || stored == DType::BF16) {
      for (int64_t i = 0; i < cols; ++i) {
        const uint16_t h = stored == DType::F16 ? f32_to_f16(xr[i]) : f32_to_bf16(xr[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
    } else {
      quantize_row(stored, xr, dst, cols);
    }
  }
  if (dtype_is_repacked(type)) repack_rows(stored, m.bytes.data(), rows, cols);
  m.values.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    if (dtype_is_quantized(type))
      dequantize_matrix_row(type, m.bytes.data(), r, m.values.data() + r * cols, cols);
    else
      float_row_to_f32(type, m.bytes.data() + static_cast<size_t>(r) * rb, cols, m.values.data() + r * cols);
  }
  return m;
}

// The reference product in float64 with the bound of what any float32 order of summation may
// differ from it by (relative 1e-5 of the sum of |w x|), and of what the CPU's int8 activations add
// for block-quantized weights (each activation off by at most its block scale / 2, scale
// amax / 127 stored in fp16: amax * (1/254 + 1/1024) per value, amax of the whole row as the bound).
struct Reference {
  std::vector<double> y;
  std::vector<double> float_tol, quant_tol;
};

Reference reference_matmul(const TestMatrix& m, const std::vector<float>& x, int64_t T) {
  Reference ref;
  ref.y.resize(static_cast<size_t>(T * m.rows));
  ref.float_tol.resize(ref.y.size());
  ref.quant_tol.resize(ref.y.size());
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x.data() + t * m.cols;
    double amax = 0;
    for (int64_t i = 0; i < m.cols; ++i) amax = std::max(amax, std::fabs(static_cast<double>(xr[i])));
    for (int64_t r = 0; r < m.rows; ++r) {
      const float* wr = m.values.data() + r * m.cols;
      double s = 0, mag = 0, wsum = 0;
      for (int64_t i = 0; i < m.cols; ++i) {
        s += static_cast<double>(wr[i]) * xr[i];
        mag += std::fabs(static_cast<double>(wr[i]) * xr[i]);
        wsum += std::fabs(static_cast<double>(wr[i]));
      }
      const size_t o = static_cast<size_t>(t * m.rows + r);
      ref.y[o] = s;
      ref.float_tol[o] = 1e-5 * mag + 1e-6;
      ref.quant_tol[o] = ref.float_tol[o] + wsum * amax * (1.0 / 254 + 1.0 / 1024);
    }
  }
  return ref;
}

// E experts of rows x cols of one type laid end to end: the stacked [E, rows, cols] tensor a model
// holds (expert e from seed + e), with each expert's values for the reference.
struct StackedExperts {
  std::vector<TestMatrix> experts;
  std::vector<uint8_t> bytes;

  WeightView view(const std::string& name) const {
    WeightView v;
    v.name = name;
    v.data = bytes.data();
    v.dtype = experts.front().type;
    v.shape = {static_cast<int64_t>(experts.size()), experts.front().rows, experts.front().cols};
    return v;
  }
};

StackedExperts make_experts(DType type, int64_t E, int64_t rows, int64_t cols, uint64_t seed) {
  StackedExperts s;
  for (int64_t e = 0; e < E; ++e) {
    s.experts.push_back(make_matrix(type, rows, cols, seed + static_cast<uint64_t>(e)));
    s.bytes.insert(s.bytes.end(), s.experts.back().bytes.begin(), s.experts.back().bytes.end());
  }
  return s;
}

// Two expert ids per token (k = 2), spread over E by `stride` and distinct within a token, as
// top-k choices are.
std::vector<int32_t> two_experts_per_token(int64_t T, int64_t E, int64_t stride) {
  const int64_t k = 2;
  std::vector<int32_t> ex(static_cast<size_t>(T * k));
  for (int64_t i = 0; i < T * k; ++i) ex[static_cast<size_t>(i)] = static_cast<int32_t>((i * stride + i / k) % E);
  for (int64_t t = 0; t < T; ++t)
    if (ex[static_cast<size_t>(t * k)] == ex[static_cast<size_t>(t * k + 1)])
      ex[static_cast<size_t>(t * k + 1)] = static_cast<int32_t>((ex[static_cast<size_t>(t * k)] + 1) % E);
  return ex;
}

// got = x0 + bias + sum_j gates[t*k + j] y[t*k + j] row by row (combine_experts), within 1e-5
// relative to the float64 value.
void expect_combined(const std::vector<float>& got, const std::vector<float>& x0, const std::vector<float>& bias,
                     const std::vector<float>& gates, const std::vector<float>& y, int64_t T, int64_t k, int64_t n) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < n; ++c) {
      double want = x0[static_cast<size_t>(t * n + c)] + bias[static_cast<size_t>(c)];
      for (int64_t j = 0; j < k; ++j)
        want += static_cast<double>(gates[static_cast<size_t>(t * k + j)]) * y[static_cast<size_t>((t * k + j) * n + c)];
      ASSERT_NEAR(got[static_cast<size_t>(t * n + c)], want, 1e-5 * (1 + std::fabs(want))) << "t=" << t << " c=" << c;
    }
}

// The devices other than the CPU that can run here; empty (and why) in a CPU-only build or on a
// machine without a GPU.
std::vector<std::string> other_devices(std::string* why) {
  std::vector<std::string> out;
  for (const std::string& d : usable_devices())
    if (d != "cpu") out.push_back(d);
  if (out.empty()) *why = "no device besides the CPU here: cuda: " + device_availability("cuda").why;
  return out;
}

// A host vector's values in a backend's memory (ops take backend pointers), and back.
template <typename T>
class OnBackend {
 public:
  OnBackend(Backend& be, const std::vector<T>& host) : be_(be), buf_(be), n_(host.size()) {
    buf_.reserve<T>(n_);
    be_.copy_to_backend(buf_.as<T>(), host.data(), n_ * sizeof(T));
  }
  T* ptr() const { return buf_.as<T>(); }
  std::vector<T> host() const {
    std::vector<T> out(n_);
    be_.copy_to_host(out.data(), buf_.as<T>(), n_ * sizeof(T));
    return out;
  }

 private:
  Backend& be_;
  BackendBuffer buf_;
  size_t n_;
};

class BackendOps : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    be_ = make_backend(GetParam());
    cpu_ = make_backend("cpu");
  }
  bool is_cpu() const { return GetParam() == "cpu"; }
  std::unique_ptr<Backend> be_, cpu_;
};

const DType kWeightTypes[] = {DType::F32,  DType::F16,   DType::BF16,  DType::Q8_0, DType::Q4_0,
                              DType::Q4_K, DType::Q8_0R, DType::Q4_0R, DType::Q4_KR};

TEST_P(BackendOps, MatmulEveryWeightTypeAndTokenCount) {
  uint64_t seed = 100;
  for (DType type : kWeightTypes) {
    // Q4_K needs 256-element rows; the float types also get a row that is not a multiple of 32.
    std::vector<std::pair<int64_t, int64_t>> shapes = {{48, 256}, {80, 512}};
    if (!dtype_is_quantized(type)) shapes.push_back({37, 50});
    else if (file_type(type) != DType::Q4_K) shapes.push_back({32, 96});
    for (auto [rows, cols] : shapes) {
      const TestMatrix m = make_matrix(type, rows, cols, ++seed);
      for (int64_t T : {1, 2, 8, 9, 70}) {
        SCOPED_TRACE(std::string(dtype_name(type)) + " " + std::to_string(rows) + "x" + std::to_string(cols) +
                     " T=" + std::to_string(T));
        const std::vector<float> x = test::randn(static_cast<size_t>(T * cols), ++seed);
        const int64_t ldy = rows + 3;  // outputs with a row stride wider than the rows
        std::vector<float> y(static_cast<size_t>(T * ldy), -7.0f), yc(y.size(), -7.0f);
        {
          OnBackend<float> dx(*be_, x), dy(*be_, y);
          be_->matmul(dx.ptr(), T, m.view(), dy.ptr(), ldy);
          y = dy.host();
        }
        const Reference ref = reference_matmul(m, x, T);
        // The CPU multiplies int8 activations with block-quantized weights; other devices use
        // float activations and must meet the float bound.
        const bool quant_cpu = is_cpu() && dtype_is_quantized(type);
        int bad = 0;
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            const size_t o = static_cast<size_t>(t * rows + r);
            const float got = y[static_cast<size_t>(t * ldy + r)];
            const double tol = quant_cpu ? ref.quant_tol[o] : ref.float_tol[o];
            if (std::fabs(got - ref.y[o]) > tol && ++bad <= 3)
              ADD_FAILURE() << "t=" << t << " r=" << r << ": " << got << " vs reference " << ref.y[o] << " (tol " << tol
                            << ")";
          }
          for (int64_t r = rows; r < ldy; ++r) EXPECT_EQ(y[static_cast<size_t>(t * ldy + r)], -7.0f) << "wrote past the row";
        }
        if (!is_cpu()) {  // against the CPU backend: the CPU's own bound plus the device's
          cpu_->matmul(x.data(), T, m.view(), yc.data(), ldy);
          for (int64_t t = 0; t < T && bad == 0; ++t)
            for (int64_t r = 0; r < rows; ++r) {
              const size_t o = static_cast<size_t>(t * rows + r), i = static_cast<size_t>(t * ldy + r);
              const double tol = (dtype_is_quantized(type) ? ref.quant_tol[o] : ref.float_tol[o]) + ref.float_tol[o];
              if (std::fabs(y[i] - yc[i]) > tol && ++bad <= 3)
                ADD_FAILURE() << "vs cpu t=" << t << " r=" << r << ": " << y[i] << " vs " << yc[i];
            }
        }
      }
    }
  }
}

TEST_P(BackendOps, MatmulGroupEqualsSeparateProducts) {
  const TestMatrix a = make_matrix(DType::Q4_0, 64, 256, 7), b = make_matrix(DType::BF16, 32, 128, 8),
                   c = make_matrix(DType::Q8_0R, 48, 256, 9);
  const std::vector<float> xa = test::randn(3 * 256, 10), xb = test::randn(1 * 128, 11), xc = test::randn(12 * 256, 12);
  std::vector<float> ya(3 * 70, 0.0f), yb(1 * 32), yc(12 * 48), sa(ya.size(), 0.0f), sb(yb.size()), sc(yc.size());
  OnBackend<float> dxa(*be_, xa), dxb(*be_, xb), dxc(*be_, xc), dya(*be_, ya), dyb(*be_, yb), dyc(*be_, yc),
      dsa(*be_, sa), dsb(*be_, sb), dsc(*be_, sc);
  MatmulJob jobs[3] = {matmul_job(dxa.ptr(), 3, a.view(), dya.ptr(), 70), matmul_job(dxb.ptr(), 1, b.view(), dyb.ptr(), 32),
                       matmul_job(dxc.ptr(), 12, c.view(), dyc.ptr(), 48)};
  be_->matmul_group(jobs, 3);
  be_->matmul(dxa.ptr(), 3, a.view(), dsa.ptr(), 70);
  be_->matmul(dxb.ptr(), 1, b.view(), dsb.ptr(), 32);
  be_->matmul(dxc.ptr(), 12, c.view(), dsc.ptr(), 48);
  ya = dya.host(), yb = dyb.host(), yc = dyc.host(), sa = dsa.host(), sb = dsb.host(), sc = dsc.host();
  EXPECT_EQ(ya, sa);
  EXPECT_EQ(yb, sb);
  EXPECT_EQ(yc, sc);
}

TEST_P(BackendOps, EmbedEveryTableType) {
  for (DType type : kWeightTypes) {
    SCOPED_TRACE(dtype_name(type));
    const TestMatrix m = make_matrix(type, 48, 256, 31);
    const int32_t tokens[] = {0, 47, 5, 5, 20};
    OnBackend<float> dx(*be_, std::vector<float>(5 * 256));
    be_->embed(tokens, 5, m.view(), dx.ptr());
    const std::vector<float> x = dx.host();
    for (int t = 0; t < 5; ++t)
      for (int i = 0; i < 256; ++i) {
        const float want = m.values[static_cast<size_t>(tokens[t] * 256 + i)];
        ASSERT_NEAR(x[static_cast<size_t>(t * 256 + i)], want, 1e-6f * (1.0f + std::fabs(want))) << "t=" << t << " i=" << i;
      }
  }
  const TestMatrix m = make_matrix(DType::F32, 48, 256, 32);
  const int32_t bad[] = {3, 48};
  OnBackend<float> dx(*be_, std::vector<float>(2 * 256));
  EXPECT_THROW(be_->embed(bad, 2, m.view(), dx.ptr()), std::out_of_range);
}

TEST_P(BackendOps, RmsNormRopeSiluMul) {
  for (int64_t n : {2048, 100}) {
    const int64_t T = 3;
    const std::vector<float> x = test::randn(static_cast<size_t>(T * n), 40 + n, 3.0f), g = test::randn(static_cast<size_t>(n), 41);
    OnBackend<float> dx(*be_, x), dy(*be_, std::vector<float>(x.size()));
    be_->rms_norm(dx.ptr(), T, n, g.data(), 1e-6f, dy.ptr());
    const std::vector<float> y = dy.host();
    for (int64_t t = 0; t < T; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[static_cast<size_t>(t * n + i)]) * x[static_cast<size_t>(t * n + i)];
      const double r = 1.0 / std::sqrt(ss / static_cast<double>(n) + 1e-6);
      for (int64_t i = 0; i < n; ++i) {
        const double want = x[static_cast<size_t>(t * n + i)] * r * g[static_cast<size_t>(i)];
        ASSERT_NEAR(y[static_cast<size_t>(t * n + i)], want, 1e-6 * (1 + std::fabs(want))) << "n=" << n << " t=" << t << " i=" << i;
      }
    }
  }
  {  // RoPE: 3 heads of 16 and of 128 in rows wider than the heads, positions up to 4095
    for (int64_t d : {16, 128}) {
      const int64_t T = 4, H = 3, ld = H * d + 8;
      const int32_t pos[] = {0, 5, 100, 4095};
      const std::vector<float> x0 = test::randn(static_cast<size_t>(T * ld), 50 + d);
      OnBackend<float> dx(*be_, x0);
      be_->rope(dx.ptr(), T, H, d, ld, pos, 10000.0f);
      const std::vector<float> x = dx.host();
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t m = 0; m < d / 2; ++m) {
            const double f = 1.0 / std::pow(10000.0, 2.0 * static_cast<double>(m) / static_cast<double>(d));
            const double a = pos[t] * f, c = std::cos(a), s = std::sin(a);
            const size_t i = static_cast<size_t>(t * ld + h * d + m), j = i + static_cast<size_t>(d / 2);
            // float32 angles, as the reference: pos * inv_freq carries a relative error of ~1e-7
            // of an angle up to 4095 radians.
            const double tol = 2e-6 + 4e-7 * std::fabs(a) * (std::fabs(x0[i]) + std::fabs(x0[j]));
            ASSERT_NEAR(x[i], x0[i] * c - x0[j] * s, tol) << "d=" << d << " t=" << t << " h=" << h << " m=" << m;
            ASSERT_NEAR(x[j], x0[j] * c + x0[i] * s, tol) << "d=" << d << " t=" << t << " h=" << h << " m=" << m;
          }
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = H * d; i < ld; ++i)
          EXPECT_EQ(x[static_cast<size_t>(t * ld + i)], x0[static_cast<size_t>(t * ld + i)]) << "touched the row's padding";
    }
  }
  {
    const int64_t T = 3, F = 300;
    const std::vector<float> z = test::randn(static_cast<size_t>(T * 2 * F), 60, 4.0f);
    OnBackend<float> dz(*be_, z), dh(*be_, std::vector<float>(static_cast<size_t>(T * F)));
    be_->silu_mul(dz.ptr(), T, F, dh.ptr());
    const std::vector<float> h = dh.host();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < F; ++i) {
        const double g = z[static_cast<size_t>(t * 2 * F + i)], u = z[static_cast<size_t>(t * 2 * F + F + i)];
        const double want = g / (1 + std::exp(-g)) * u;
        ASSERT_NEAR(h[static_cast<size_t>(t * F + i)], want, 1e-6 * (1 + std::fabs(want)));
      }
  }
}

// Keys and values stored by kv_store, then attention for decode, a causal prefill block and a
// packed batch of two sequences, for every pair of cache types; the reference reads the rows the
// CPU cache stored (so the types' rounding is the same on both sides).
TEST_P(BackendOps, KvStoreAndAttentionEveryCacheType) {
  const int nkv = 2, d = 32, cap = 80, layers = 2, layer = 1;
  const int64_t slots = 2, ld = 2 * nkv * d + 5;
  const DType types[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0};
  for (DType kt : types)
    for (DType vt : {DType::F32, DType::Q8_0, DType::BF16}) {
      SCOPED_TRACE(std::string("k ") + dtype_name(kt) + " v " + dtype_name(vt));
      KvCache cache(layers, nkv, d, cap, {kt, vt}), ref_cache(layers, nkv, d, cap, {kt, vt});
      // 70 positions: a 5-token chunk, then chunks of 1 and 13 tokens.
      const std::vector<float> kv = test::randn(static_cast<size_t>(70 * ld), 70 + static_cast<uint64_t>(kt) * 8 + static_cast<uint64_t>(vt));
      const OnBackend<float> dkv(*be_, kv);
      for (int p0 = 0; p0 < 70;) {
        const int n = p0 == 0 ? 5 : (p0 % 2 ? 1 : std::min(13, 70 - p0));
        std::vector<int32_t> pos(static_cast<size_t>(n));
        for (int i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = p0 + i;
        const float* k = kv.data() + static_cast<int64_t>(p0) * ld;
        const float* dk = dkv.ptr() + static_cast<int64_t>(p0) * ld;
        be_->kv_store(cache, layer, dk, dk + nkv * d, ld, n, pos.data());
        cpu_->kv_store(ref_cache, layer, k, k + nkv * d, ld, n, pos.data());
        p0 += n;
      }
      struct Case {
        const char* name;
        std::vector<int32_t> slot, first;
      };
      std::vector<Case> cases = {{"decode", {69}, {}}, {"prefill", {}, {}}, {"packed", {}, {}}};
      for (int i = 50; i < 70; ++i) cases[1].slot.push_back(i);
      for (int i = 0; i < 30; ++i) {  // two sequences: slots 0..11 and 12..29
        cases[2].slot.push_back(i);
        cases[2].first.push_back(i < 12 ? 0 : 12);
      }
      for (const Case& c : cases) {
        SCOPED_TRACE(c.name);
        const int64_t T = static_cast<int64_t>(c.slot.size());
        const std::vector<float> q = test::randn(static_cast<size_t>(T * slots * nkv * d), 90 + T);
        std::vector<float> out_cpu(q.size(), 0.0f);
        const int32_t* first = c.first.empty() ? nullptr : c.first.data();
        OnBackend<float> dq(*be_, q), dout(*be_, out_cpu);
        be_->attention(dq.ptr(), T, slots, c.slot.data(), first, cache, layer, dout.ptr());
        const std::vector<float> out = dout.host();
        cpu_->attention(q.data(), T, slots, c.slot.data(), first, ref_cache, layer, out_cpu.data());
        std::vector<float> K(static_cast<size_t>(cap * d)), V(K.size());
        for (int64_t t = 0; t < T; ++t)
          for (int64_t j = 0; j < slots; ++j)
            for (int h = 0; h < nkv; ++h) {
              kv_widen_scalar(kt, ref_cache.k_rows(layer, h), cap, d, K.data());
              kv_widen_scalar(vt, ref_cache.v_rows(layer, h), cap, d, V.data());
              const int64_t j0 = first ? first[t] : 0, n = c.slot[static_cast<size_t>(t)] + 1;
              const size_t head = static_cast<size_t>(((t * slots + j) * nkv + h) * d);
              std::vector<double> s;
              double mx = -1e300, sum = 0;
              for (int64_t r = j0; r < n; ++r) {
                double dot = 0;
                for (int i = 0; i < d; ++i) dot += static_cast<double>(K[static_cast<size_t>(r * d + i)]) * q[head + static_cast<size_t>(i)];
                s.push_back(dot / std::sqrt(static_cast<double>(d)));
                mx = std::max(mx, s.back());
              }
              for (double& v : s) sum += (v = std::exp(v - mx));
              for (int i = 0; i < d; ++i) {
                double o = 0;
                for (int64_t r = j0; r < n; ++r) o += s[static_cast<size_t>(r - j0)] * V[static_cast<size_t>(r * d + i)];
                o /= sum;
                ASSERT_NEAR(out[head + static_cast<size_t>(i)], o, 2e-5) << "t=" << t << " slot=" << j << " h=" << h << " i=" << i;
                ASSERT_NEAR(out[head + static_cast<size_t>(i)], out_cpu[head + static_cast<size_t>(i)], 2e-5);
              }
            }
      }
    }
}

// rope_store (fused on a GPU) against rope, kv_store and rope on the CPU: the rotated rows, and
// the cache contents as attention reads them.
TEST_P(BackendOps, RopeStoreEqualsRopeKvStoreRope) {
  const int nkv = 2, d = 32, cap = 40, slots = 2;
  const int64_t ld_kv = 2 * nkv * d + 3, ld_q = slots * nkv * d;
  for (auto [kt, vt] : {std::pair{DType::F32, DType::F32}, std::pair{DType::Q8_0, DType::F16}, std::pair{DType::BF16, DType::Q8_0}}) {
    SCOPED_TRACE(std::string("k ") + dtype_name(kt) + " v " + dtype_name(vt));
    KvCache cache(2, nkv, d, cap, {kt, vt}), ref(2, nkv, d, cap, {kt, vt});
    std::vector<int32_t> all_slots;
    for (int p0 = 0; p0 < 12;) {
      const int T = p0 == 0 ? 5 : 1;
      std::vector<int32_t> slot(static_cast<size_t>(T)), rpos(static_cast<size_t>(T));
      for (int t = 0; t < T; ++t) slot[static_cast<size_t>(t)] = p0 + t, rpos[static_cast<size_t>(t)] = 3 * (p0 + t) + 1;
      std::vector<float> kv = test::randn(static_cast<size_t>(T * ld_kv), 300 + p0), q = test::randn(static_cast<size_t>(T * ld_q), 400 + p0);
      OnBackend<float> dkv(*be_, kv), dq(*be_, q);
      be_->rope_store(dkv.ptr(), ld_kv, dq.ptr(), slots * nkv, ld_q, T, rpos.data(), 10000.0f, cache, 1, slot.data());
      cpu_->rope(kv.data(), T, nkv, d, ld_kv, rpos.data(), 10000.0f);
      cpu_->kv_store(ref, 1, kv.data(), kv.data() + nkv * d, ld_kv, T, slot.data());
      cpu_->rope(q.data(), T, slots * nkv, d, ld_q, rpos.data(), 10000.0f);
      const std::vector<float> got_kv = dkv.host(), got_q = dq.host();
      for (size_t i = 0; i < kv.size(); ++i) ASSERT_NEAR(got_kv[i], kv[i], 2e-5) << "kv " << i;
      for (size_t i = 0; i < q.size(); ++i) ASSERT_NEAR(got_q[i], q[i], 2e-5) << "q " << i;
      // The cache as attention sees it: the last token against every stored position.
      OnBackend<float> dout(*be_, std::vector<float>(static_cast<size_t>(slots * nkv * d)));
      std::vector<float> out_ref(static_cast<size_t>(slots * nkv * d));
      const int32_t last[1] = {slot.back()};
      be_->attention(dq.ptr() + (T - 1) * ld_q, 1, slots, last, nullptr, cache, 1, dout.ptr());
      cpu_->attention(q.data() + (T - 1) * ld_q, 1, slots, last, nullptr, ref, 1, out_ref.data());
      const std::vector<float> out = dout.host();
      for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], out_ref[i], 2e-5) << "attention " << i;
      p0 += T;
    }
  }
}

TEST_P(BackendOps, KvStoreRejectsPositionsOutsideTheCache) {
  KvCache cache(1, 1, 32, 4);
  const OnBackend<float> k(*be_, std::vector<float>(64, 1.0f));
  const int32_t pos[] = {4};
  EXPECT_THROW(be_->kv_store(cache, 0, k.ptr(), k.ptr() + 32, 64, 1, pos), std::out_of_range);
}

// Top-k routing: the k largest logits (lower index first on ties) and the softmax over them.
TEST_P(BackendOps, RouteTopkPicksTheLargestAndNormalisesTheirGates) {
  const int64_t T = 5, E = 8, k = 2;
  std::vector<float> logits = test::randn(static_cast<size_t>(T * E), 80, 2.0f);
  logits[8 + 3] = logits[8 + 6] = 9.0f;  // token 1: a tie for the largest
  for (int e = 0; e < E; ++e) logits[static_cast<size_t>(32 + e)] = 0.5f;  // token 4: all equal
  OnBackend<float> dl(*be_, logits), dg(*be_, std::vector<float>(T * k));
  OnBackend<int32_t> de(*be_, std::vector<int32_t>(T * k));
  be_->route_topk(dl.ptr(), T, E, k, de.ptr(), dg.ptr());
  const std::vector<int32_t> ex = de.host();
  const std::vector<float> g = dg.host();
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> idx(E);
    for (int e = 0; e < E; ++e) idx[static_cast<size_t>(e)] = e;
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return logits[static_cast<size_t>(t * E + a)] > logits[static_cast<size_t>(t * E + b)]; });
    const double l0 = logits[static_cast<size_t>(t * E + idx[0])], l1 = logits[static_cast<size_t>(t * E + idx[1])];
    const double g0 = 1.0 / (1.0 + std::exp(l1 - l0));
    EXPECT_EQ(ex[static_cast<size_t>(t * k)], idx[0]) << "t=" << t;
    EXPECT_EQ(ex[static_cast<size_t>(t * k + 1)], idx[1]) << "t=" << t;
    EXPECT_NEAR(g[static_cast<size_t>(t * k)], g0, 1e-6) << "t=" << t;
    EXPECT_NEAR(g[static_cast<size_t>(t * k + 1)], 1.0 - g0, 1e-6) << "t=" << t;
  }
  EXPECT_EQ(ex[2], 3);  // the tie: lower index first
  EXPECT_EQ(ex[3], 6);
  EXPECT_EQ(ex[8], 0);
  EXPECT_EQ(ex[9], 1);
}

// expert_mlp (the CPU keeps z and h in expert order for prompts) against its parts.
TEST_P(BackendOps, ExpertMlpEqualsItsParts) {
  const int64_t E = 8, k = 2, H = 256, F = 96;
  for (DType type : {DType::F32, DType::Q8_0}) {
    const StackedExperts win = make_experts(type, E, 2 * F, H, 900), wout = make_experts(type, E, H, F, 950);
    const WeightView w_in = win.view("w_in"), w_out = wout.view("w_out");
    for (int64_t T : {1, 3, 20}) {
      SCOPED_TRACE(std::string(dtype_name(type)) + " T=" + std::to_string(T));
      const std::vector<int32_t> ex = two_experts_per_token(T, E, 3);
      const std::vector<float> x = test::randn(static_cast<size_t>(T * H), 990 + T);
      OnBackend<float> dx(*be_, x), dz(*be_, std::vector<float>(static_cast<size_t>(T * k * 2 * F))),
          dh(*be_, std::vector<float>(static_cast<size_t>(T * k * F))), dy(*be_, std::vector<float>(static_cast<size_t>(T * k * H))),
          dz2(*be_, std::vector<float>(static_cast<size_t>(T * k * 2 * F))), dh2(*be_, std::vector<float>(static_cast<size_t>(T * k * F))),
          dy2(*be_, std::vector<float>(static_cast<size_t>(T * k * H)));
      OnBackend<int32_t> dex(*be_, ex);
      be_->expert_mlp(dx.ptr(), T, k, dex.ptr(), w_in, w_out, dz.ptr(), dh.ptr(), dy.ptr());
      be_->expert_matmul(dx.ptr(), T, k, false, dex.ptr(), w_in, dz2.ptr(), nullptr);
      be_->silu_mul(dz2.ptr(), T * k, F, dh2.ptr());
      be_->expert_matmul(dh2.ptr(), T, k, true, dex.ptr(), w_out, dy2.ptr(), nullptr);
      const std::vector<float> y = dy.host(), y2 = dy2.host();
      for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], y2[i], 1e-5 * (1 + std::fabs(y2[i]))) << "y " << i;
    }
  }
}

// norm_route = rms_norm, the router product and route_topk, for one token (fused on a GPU) and
// for several.
TEST_P(BackendOps, NormRouteEqualsItsParts) {
  const int64_t n = 2048, E = 8, k = 2;
  const TestMatrix router = make_matrix(DType::F32, E, n, 90);
  const std::vector<float> g = test::randn(static_cast<size_t>(n), 91);
  for (int64_t T : {1, 3})
  for (bool combine : {false, true}) {
    SCOPED_TRACE("T=" + std::to_string(T) + (combine ? " with combine" : ""));
    std::vector<float> x = test::randn(static_cast<size_t>(T * n), 92 + T, 2.0f);
    const std::vector<float> y = test::randn(static_cast<size_t>(T * k * n), 93 + T), bias = test::randn(static_cast<size_t>(n), 94),
                             old_gates = test::randn(static_cast<size_t>(T * k), 95);
    OnBackend<float> dx(*be_, x), da(*be_, std::vector<float>(x.size())), dl(*be_, std::vector<float>(T * E)),
        dg(*be_, old_gates), dy(*be_, y);
    OnBackend<int32_t> de(*be_, std::vector<int32_t>(T * k));
    if (combine) {
      be_->combine_norm_route(dy.ptr(), dg.ptr(), bias.data(), dx.ptr(), T, n, g.data(), 1e-6f, router.view(), k, da.ptr(),
                              dl.ptr(), de.ptr());
      const std::vector<float> got_x = dx.host();
      expect_combined(got_x, x, bias, old_gates, y, T, k, n);
      if (HasFatalFailure()) return;
      x = got_x;  // the norm below is of the updated rows
    } else {
      be_->norm_route(dx.ptr(), T, n, g.data(), 1e-6f, router.view(), k, da.ptr(), dl.ptr(), de.ptr(), dg.ptr());
    }
    const std::vector<float> a = da.host(), logits = dl.host(), gates = dg.host();
    const std::vector<int32_t> ex = de.host();
    const Reference ref = reference_matmul(router, a, T);  // the router on the normed rows it returned
    for (int64_t t = 0; t < T; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[static_cast<size_t>(t * n + i)]) * x[static_cast<size_t>(t * n + i)];
      const double r = 1.0 / std::sqrt(ss / static_cast<double>(n) + 1e-6);
      for (int64_t i = 0; i < n; ++i) {
        const double want = x[static_cast<size_t>(t * n + i)] * r * g[static_cast<size_t>(i)];
        ASSERT_NEAR(a[static_cast<size_t>(t * n + i)], want, 1e-6 * (1 + std::fabs(want)));
      }
      for (int64_t e = 0; e < E; ++e)
        ASSERT_NEAR(logits[static_cast<size_t>(t * E + e)], ref.y[static_cast<size_t>(t * E + e)], ref.float_tol[static_cast<size_t>(t * E + e)]);
      std::vector<int32_t> idx(E);
      for (int e = 0; e < E; ++e) idx[static_cast<size_t>(e)] = e;
      const float* lt = logits.data() + t * E;
      std::stable_sort(idx.begin(), idx.end(), [&](int p, int q) { return lt[p] > lt[q]; });
      EXPECT_EQ(ex[static_cast<size_t>(t * k)], idx[0]);
      EXPECT_EQ(ex[static_cast<size_t>(t * k + 1)], idx[1]);
      const double g0 = 1.0 / (1.0 + std::exp(static_cast<double>(lt[idx[1]]) - lt[idx[0]]));
      EXPECT_NEAR(gates[static_cast<size_t>(t * k)], g0, 1e-6);
      EXPECT_NEAR(gates[static_cast<size_t>(t * k + 1)], 1.0 - g0, 1e-6);
    }
  }
}

// The selected experts' products for decode-sized and prefill-sized batches, per token and per
// slot, with and without an extra product in the same launch, against the float64 reference of
// each item's own expert; and the gated sum into the residual.
TEST_P(BackendOps, ExpertMatmulAndCombine) {
  const int64_t E = 8, k = 2, out = 48, in = 256;
  for (DType type : {DType::BF16, DType::Q4_0, DType::Q4_KR, DType::Q8_0R}) {
    const StackedExperts stacked = make_experts(type, E, out, in, 500);
    const WeightView W = stacked.view(std::string("experts ") + dtype_name(type));
    for (int64_t T : {1, 3, 20}) {
      for (bool per_slot : {false, true}) {
        SCOPED_TRACE(std::string(dtype_name(type)) + " T=" + std::to_string(T) + (per_slot ? " per slot" : " per token"));
        const int64_t n = T * k;
        const std::vector<int32_t> ex = two_experts_per_token(T, E, 5);
        const std::vector<float> x = test::randn(static_cast<size_t>((per_slot ? n : T) * in), 600 + T);
        const TestMatrix extra_m = make_matrix(DType::F32, 24, in, 700);
        OnBackend<float> dx(*be_, x), dy(*be_, std::vector<float>(static_cast<size_t>(n * out), -5.0f)),
            dextra(*be_, std::vector<float>(static_cast<size_t>(T * 24)));
        OnBackend<int32_t> dex(*be_, ex);
        const MatmulJob extra = matmul_job(dx.ptr(), T, extra_m.view(), dextra.ptr(), 24);
        be_->expert_matmul(dx.ptr(), T, k, per_slot, dex.ptr(), W, dy.ptr(), per_slot ? nullptr : &extra);
        const std::vector<float> y = dy.host();
        int bad = 0;
        for (int64_t i = 0; i < n; ++i) {
          const std::vector<float> xi(x.begin() + (per_slot ? i : i / k) * in, x.begin() + ((per_slot ? i : i / k) + 1) * in);
          const Reference ref = reference_matmul(stacked.experts[static_cast<size_t>(ex[static_cast<size_t>(i)])], xi, 1);
          for (int64_t r = 0; r < out; ++r) {
            const double tol = (is_cpu() && dtype_is_quantized(type)) ? ref.quant_tol[static_cast<size_t>(r)] : ref.float_tol[static_cast<size_t>(r)];
            if (std::fabs(y[static_cast<size_t>(i * out + r)] - ref.y[static_cast<size_t>(r)]) > tol && ++bad <= 3)
              ADD_FAILURE() << "item " << i << " (expert " << ex[static_cast<size_t>(i)] << ") row " << r << ": "
                            << y[static_cast<size_t>(i * out + r)] << " vs " << ref.y[static_cast<size_t>(r)];
          }
        }
        if (!per_slot) {
          const std::vector<float> ye = dextra.host();
          const Reference ref = reference_matmul(extra_m, x, T);
          for (size_t i = 0; i < ye.size(); ++i) ASSERT_NEAR(ye[i], ref.y[i], ref.float_tol[i]) << "extra product " << i;
        }
        // x[t] += bias + sum_j gate * y[t*k + j]
        const std::vector<float> gates = test::randn(static_cast<size_t>(n), 800 + T), bias = test::randn(static_cast<size_t>(out), 801);
        const std::vector<float> x0 = test::randn(static_cast<size_t>(T * out), 802);
        OnBackend<float> dres(*be_, x0), dgates(*be_, gates);
        be_->combine_experts(dy.ptr(), dgates.ptr(), T, k, out, bias.data(), dres.ptr());
        expect_combined(dres.host(), x0, bias, gates, y, T, k, out);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(UsableDevices, BackendOps, ::testing::ValuesIn(usable_devices()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// The golden checkpoints through the whole model on each device other than the CPU (the CPU runs
// them in GoldenTest), with the same checks and tolerances (tests/support/golden_checks.h).
TEST(BackendGolden, EveryOtherDeviceMatchesTransformers) {
  std::string why;
  const std::vector<std::string> devices = other_devices(&why);
  if (devices.empty()) GTEST_SKIP() << why;
  for (const std::string& device : devices) {
    for (const fs::path& dir : test::golden_checkpoints()) {
      SCOPED_TRACE(device + " " + dir.filename().string());
      const auto g = test::read_json(dir / "golden.json");
      auto files = load_model_files(dir.string());
      auto be = make_backend(device);
      JetMoeModel model(files->config, files->weights, *be);
      test::expect_golden_sequences(model, dir, g);
      test::expect_golden_greedy(model, dir, g);
    }
  }
}

TEST(BackendDevices, CpuIsAlwaysUsableAndUnknownDevicesAreNamed) {
  const auto devices = usable_devices();
  ASSERT_FALSE(devices.empty());
  EXPECT_EQ(devices.front(), "cpu");
  const DeviceAvailability a = device_availability("tpu");
  EXPECT_FALSE(a.usable);
  EXPECT_NE(a.why.find("unknown device 'tpu'"), std::string::npos) << a.why;
  try {
    make_backend("tpu");
    ADD_FAILURE() << "make_backend(\"tpu\") did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("tpu"), std::string::npos) << e.what();
  }
  const DeviceAvailability cuda = device_availability("cuda");
  if (!cuda.usable) {
    EXPECT_FALSE(cuda.why.empty());
    try {
      make_backend("cuda");
      ADD_FAILURE() << "make_backend(\"cuda\") did not throw without a usable GPU";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos) << e.what();
    }
  }
}

}  // namespace

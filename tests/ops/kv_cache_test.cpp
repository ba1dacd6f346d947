// The KV cache's row types (F32, F16, BF16, Q8_0): every ISA's widening against the scalar
// converter, the rounding bound of the stored rows, and attention over a compact cache (decode
// chunks, prefill, packed sequences) against a float64 reference computed from the values the
// cache actually holds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/cpu_isa.h"
#include "ops/cpu/kv_rows.h"
#include "quant/quantize.h"
#include "quant/stream_prefetch.h"
#include "runtime/kv_cache.h"
#include "support/random_data.h"
#include "support/resident_pages.h"

using namespace jetmoe;

namespace {

using test::randn;

const DType kCacheTypes[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0};

std::vector<uint8_t> stored_rows(DType t, const std::vector<float>& x, int64_t d) {
  const int64_t rows = static_cast<int64_t>(x.size()) / d;
  const size_t rb = dtype_row_bytes(t, static_cast<size_t>(d));
  std::vector<uint8_t> out(rb * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) kv_store_row(t, x.data() + r * d, d, out.data() + r * rb);
  return out;
}

TEST(KvRows, EveryIsaWidensExactlyLikeTheScalarConverter) {
  for (CpuIsa isa : supported_isas())
    for (DType t : kCacheTypes)
      for (int64_t d : {24, 32, 64, 128}) {
        if (d % static_cast<int64_t>(dtype_block_elems(t)) != 0) continue;
        SCOPED_TRACE(std::string(isa_name(isa)) + " " + dtype_name(t) + " d=" + std::to_string(d));
        const int64_t rows = 7;
        const auto x = randn(static_cast<size_t>(rows * d), 11, 3.0f);
        const auto bytes = stored_rows(t, x, d);
        std::vector<float> want(x.size()), got(x.size(), -1.0f);
        kv_widen_scalar(t, bytes.data(), rows, d, want.data());
        kv_row_kernels(isa).widen(t, bytes.data(), rows, d, got.data());
        EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)));
      }
}

TEST(KvRows, EveryIsaStoresTheScalarConvertersBytes) {
  // The vector F16 / BF16 stores must give f32_to_f16 / f32_to_bf16's bits for every float:
  // ties (round to even), the half subnormals and their rounding edges, the largest half and the
  // overflow edge, float subnormals, infinities, and NaNs with payloads and either sign (the
  // scalar code writes sign | 0x7e00 / the quieted top half); Q8_0 blocks of those and of
  // ordinary values (scale from max |x| skipping NaN, zero blocks, NaN quants stored as -127).
  std::vector<uint32_t> bits = {0x00000000, 0x80000000, 0x00000001, 0x807fffff, 0x33000000, 0x33000001, 0xb3800000,
                                0x387fc000, 0x387fe000, 0x38800000, 0x477fe000, 0x477fefff, 0x477ff000, 0xc77ff000,
                                0x7f7fffff, 0x7f800000, 0xff800000, 0x7fc00000, 0x7fc00001, 0xffa00000, 0x7f800001,
                                0x3f808000, 0x3f818000, 0x3f817fff, 0x3f808001, 0x3c001000, 0x3c003000, 0x3c002fff};
  std::mt19937 rng(5);
  while (bits.size() % 128 != 0) {  // values across every exponent, with low bits that round either way
    const uint32_t e = rng() % 256, m = rng() & 0x7fffff, sign = (rng() & 1u) << 31;
    bits.push_back(sign | (e << 23) | m);
  }
  std::vector<float> x(bits.size());
  std::memcpy(x.data(), bits.data(), bits.size() * sizeof(float));
  // Then ordinary activations (whole Q8_0 blocks of finite values, a zero block, a tiny one).
  const auto g = randn(512, 6, 2.0f);
  x.insert(x.end(), g.begin(), g.end());
  x.insert(x.end(), 32, 0.0f);
  for (int i = 0; i < 32; ++i) x.push_back(1e-9f * static_cast<float>(i - 16));
  x.insert(x.end(), 64, 0.25f);
  for (size_t i : {size_t{130}, size_t{200}, size_t{640}})  // NaNs among finite values (no inf in their block)
    x[x.size() - 768 + i] = std::numeric_limits<float>::quiet_NaN();
  x[x.size() - 768 + 333] = -std::numeric_limits<float>::quiet_NaN();
  for (CpuIsa isa : supported_isas())
    for (DType t : kCacheTypes)
      for (int64_t d : {32, 64, 128, 24}) {
        if (d % static_cast<int64_t>(dtype_block_elems(t)) != 0) continue;
        SCOPED_TRACE(std::string(isa_name(isa)) + " " + dtype_name(t) + " d=" + std::to_string(d));
        const size_t rb = dtype_row_bytes(t, static_cast<size_t>(d));
        for (size_t r = 0; r + static_cast<size_t>(d) <= x.size(); r += static_cast<size_t>(d)) {
          std::vector<uint8_t> want(rb, 0xAB), got(rb, 0xCD);
          kv_store_row(t, x.data() + r, d, want.data());
          kv_row_kernels(isa).store(t, x.data() + r, d, got.data());
          ASSERT_EQ(0, std::memcmp(want.data(), got.data(), rb)) << "row at value " << r;
        }
      }
}

// The fused decode kernels of every ISA against float64 sums over the widened rows, for 1-3
// query heads (pairs and a single), head sizes that do and do not fit the vector width.
TEST(KvRows, ScoresAndWeightedSumsOfEveryIsaMatchFloat64) {
  for (CpuIsa isa : supported_isas())
    for (DType t : kCacheTypes)
      for (int64_t d : {24, 32, 64, 128, 256})
        for (int64_t nq : {1, 2, 3}) {
          if (d % static_cast<int64_t>(dtype_block_elems(t)) != 0) continue;
          SCOPED_TRACE(std::string(isa_name(isa)) + " " + dtype_name(t) + " d=" + std::to_string(d) +
                       " nq=" + std::to_string(nq));
          const int64_t n = 37, ldq = d + 5, ldo = d + 3;
          const auto x = randn(static_cast<size_t>(n * d), 13, 2.0f);
          const auto bytes = stored_rows(t, x, d);
          std::vector<float> w(x.size());
          kv_widen_scalar(t, bytes.data(), n, d, w.data());
          const auto q = randn(static_cast<size_t>(nq * ldq), 14);
          std::vector<float> s(static_cast<size_t>(nq * n));
          kv_row_kernels(isa).scores(t, bytes.data(), n, d, q.data(), ldq, nq, 0.25f, s.data(), n);
          auto p = randn(static_cast<size_t>(nq * n), 15);
          for (auto& v : p) v = std::fabs(v);
          const float alpha[3] = {0.5f, 2.0f, 1.0f};
          std::vector<float> out(static_cast<size_t>(nq * ldo), -7.0f);
          kv_row_kernels(isa).accumulate(t, bytes.data(), n, d, p.data(), n, nq, alpha, out.data(), ldo);
          for (int64_t j = 0; j < nq; ++j) {
            for (int64_t r = 0; r < n; ++r) {
              double want = 0, mag = 0;
              for (int64_t i = 0; i < d; ++i) {
                want += double(w[r * d + i]) * q[j * ldq + i];
                mag += std::fabs(double(w[r * d + i]) * q[j * ldq + i]);
              }
              EXPECT_NEAR(s[j * n + r], 0.25 * want, 0.25 * mag * 1e-6) << "score j=" << j << " r=" << r;
            }
            for (int64_t i = 0; i < d; ++i) {
              double want = 0, mag = 0;
              for (int64_t r = 0; r < n; ++r) {
                want += double(p[j * n + r]) * w[r * d + i];
                mag += std::fabs(double(p[j * n + r]) * w[r * d + i]);
              }
              EXPECT_NEAR(out[j * ldo + i], alpha[j] * want, alpha[j] * mag * 1e-6) << "sum j=" << j << " i=" << i;
            }
            for (int64_t i = d; i < ldo; ++i) EXPECT_EQ(out[j * ldo + i], -7.0f);  // the gap is not touched
          }
        }
}

TEST(KvRows, StoredRowsRoundWithinTheirFormatsBound) {
  const int64_t d = 128;
  const auto x = randn(static_cast<size_t>(d), 12, 2.0f);
  for (DType t : kCacheTypes) {
    SCOPED_TRACE(dtype_name(t));
    const auto bytes = stored_rows(t, x, d);
    std::vector<float> y(static_cast<size_t>(d));
    kv_widen_scalar(t, bytes.data(), 1, d, y.data());
    for (int64_t b = 0; b < d; b += 32) {
      float amax = 0;
      for (int64_t i = b; i < b + 32; ++i) amax = std::max(amax, std::fabs(x[i]));
      for (int64_t i = b; i < b + 32; ++i) {
        double bound = 0;  // F32 exact
        if (t == DType::F16) bound = std::fabs(x[i]) * 0x1p-11;
        if (t == DType::BF16) bound = std::fabs(x[i]) * 0x1p-8;
        if (t == DType::Q8_0) bound = amax / 127.0 * 0.5 * 1.01 + amax * 0x1p-11;  // half a step (+ fp16 scale)
        EXPECT_LE(std::fabs(y[i] - x[i]), bound) << i;
      }
    }
  }
}

TEST(KvRows, UnknownTypesAndBadHeadSizesAreNamed) {
  EXPECT_EQ(parse_kv_cache_type("q8_0", "--cache-type-k"), DType::Q8_0);
  try {
    parse_kv_cache_type("q4_1", "--cache-type-v");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--cache-type-v: unknown KV cache type 'q4_1'"), std::string::npos) << e.what();
  }
  try {
    KvCache cache(1, 2, 16, 8, {DType::Q8_0, DType::F32});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("have 16 (kv_channels)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(KvCache(1, 1, 32, 8, {DType::Q4_0, DType::F32}), std::invalid_argument);
  EXPECT_NO_THROW(KvCache(1, 1, 16, 8, {DType::F16, DType::BF16}));
}

class CompactCacheAttention : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override { set_active_isa(GetParam()); }
  void TearDown() override { set_active_isa(detect_best_isa()); }

  // Fills positions 0..n-1 of `layer` through kv_store, runs attention for the T tokens at
  // positions slot[] (first[] visible from), and compares with float64 attention over the
  // widened cache contents.
  void check(KvCacheTypes types, int64_t n, int64_t T, std::vector<int32_t> first_v) {
    const int kvh = 2, d = 64, slots = 2, layer = 1;
    KvCache cache(2, kvh, d, static_cast<int>(n), types);
    const auto k = randn(static_cast<size_t>(n * kvh * d), 21, 1.5f), v = randn(static_cast<size_t>(n * kvh * d), 22);
    std::vector<int32_t> all(static_cast<size_t>(n));
    for (int64_t p = 0; p < n; ++p) all[static_cast<size_t>(p)] = static_cast<int32_t>(p);
    be.kv_store(cache, layer, k.data(), v.data(), kvh * d, n, all.data());
    std::vector<int32_t> slot(all.end() - T, all.end());
    const int32_t* first = first_v.empty() ? nullptr : first_v.data();
    const auto q = randn(static_cast<size_t>(T * slots * kvh * d), 23);
    std::vector<float> out(q.size());
    be.attention(q.data(), T, slots, slot.data(), first, cache, layer, out.data());

    std::vector<float> K(static_cast<size_t>(n * d)), V(K.size());
    double worst = 0;
    for (int64_t h = 0; h < kvh; ++h) {
      kv_widen_scalar(types.k, cache.k_rows(layer, static_cast<int>(h)), n, d, K.data());
      kv_widen_scalar(types.v, cache.v_rows(layer, static_cast<int>(h)), n, d, V.data());
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < slots; ++j) {
          const float* qv = q.data() + ((t * slots + j) * kvh + h) * d;
          const int64_t p0 = first ? first[t] : 0, p1 = slot[static_cast<size_t>(t)];
          std::vector<double> s;
          double mx = -1e300, sum = 0;
          for (int64_t p = p0; p <= p1; ++p) {
            double dot = 0;
            for (int64_t i = 0; i < d; ++i) dot += double(qv[i]) * K[p * d + i];
            s.push_back(dot / std::sqrt(double(d)));
            mx = std::max(mx, s.back());
          }
          for (auto& e : s) sum += (e = std::exp(e - mx));
          for (int64_t i = 0; i < d; ++i) {
            double o = 0;
            for (int64_t p = p0; p <= p1; ++p) o += s[static_cast<size_t>(p - p0)] / sum * V[p * d + i];
            worst = std::max(worst, std::fabs(out[((t * slots + j) * kvh + h) * d + i] - o));
          }
        }
    }
    EXPECT_LE(worst, 2e-5) << dtype_name(types.k) << "/" << dtype_name(types.v) << " n=" << n << " T=" << T;
  }
  CpuBackend be;
};

TEST_P(CompactCacheAttention, DecodeOverSeveralChunks) {
  for (DType t : {DType::F16, DType::BF16, DType::Q8_0}) {
    check({t, t}, 300, 1, {});        // 300 keys: chunks of 128, 128, 44
    check({t, DType::F32}, 130, 1, {});
    check({DType::F32, t}, 129, 3, {});  // a short batch still takes the decode path
  }
}

TEST_P(CompactCacheAttention, DecodeGivesTheSameBitsWithAndWithoutKvTouches) {
  // Off Intel decode attention touches each head's rows before reading them (kv_touch_bytes);
  // under a prefetch override it does not. The touches change when lines arrive, never a result.
  // (That they stay inside the rows is QuantDot.TouchLines*'s guard-page test: these buffers have
  // no guard page after them.)
  const int kvh = 2, d = 64, slots = 2;
  for (DType t : {DType::F32, DType::F16, DType::Q8_0})
    for (int64_t n : {int64_t{1}, int64_t{17}, int64_t{300}}) {
      KvCache cache(1, kvh, d, static_cast<int>(n), {t, t});
      const auto k = randn(static_cast<size_t>(n * kvh * d), 31), v = randn(static_cast<size_t>(n * kvh * d), 32);
      std::vector<int32_t> all(static_cast<size_t>(n));
      for (int64_t p = 0; p < n; ++p) all[static_cast<size_t>(p)] = static_cast<int32_t>(p);
      be.kv_store(cache, 0, k.data(), v.data(), kvh * d, n, all.data());
      const int32_t slot = static_cast<int32_t>(n - 1);
      const auto q = randn(static_cast<size_t>(slots * kvh * d), 33);
      std::vector<float> with(q.size(), -1.0f), without(q.size(), -2.0f);
      reset_decode_prefetch_bytes();
      be.attention(q.data(), 1, slots, &slot, nullptr, cache, 0, with.data());
      set_decode_prefetch_bytes(0);
      ASSERT_EQ(kv_touch_bytes(), 0u);
      be.attention(q.data(), 1, slots, &slot, nullptr, cache, 0, without.data());
      reset_decode_prefetch_bytes();
      EXPECT_EQ(with, without) << dtype_name(t) << " n=" << n;
    }
}

TEST_P(CompactCacheAttention, PackedSequencesSeeOnlyTheirOwnSlots) {
  check({DType::Q8_0, DType::Q8_0}, 200, 2, {60, 150});  // decode path, two sequences
  std::vector<int32_t> first(20, 150);
  for (int i = 0; i < 6; ++i) first[static_cast<size_t>(i)] = 40;
  check({DType::Q8_0, DType::F16}, 200, 20, first);  // prefill path, two sequences
}

TEST_P(CompactCacheAttention, PrefillWidensEachBlock) {
  for (DType t : {DType::F16, DType::BF16, DType::Q8_0}) {
    check({t, t}, 40, 40, {});  // causal prefill from position 0
    check({t, DType::F32}, 300, 150, {});  // two query blocks of 128 + 22 after 150 cached positions
  }
}

INSTANTIATE_TEST_SUITE_P(EveryIsa, CompactCacheAttention, ::testing::ValuesIn(supported_isas()),
                         [](const ::testing::TestParamInfo<CpuIsa>& i) { return std::string(isa_name(i.param)); });

}  // namespace

TEST(KvCachePopulation, TheCpuBackendMakesANewCacheResidentAndLeavesItZero) {
  // JetMoeModel::make_cache hands every new cache to Backend::prepare_cache; the CPU backend
  // populates its rows in the background, so the first token does not fault them in.
  KvCache cache(2, 4, 128, 8192, {DType::F16, DType::F32});  // 16 MB of keys, 32 MB of values
  CpuBackend be;
  be.prepare_cache(cache);
  cache.wait_populated();
  const size_t page = test::page_bytes();
  const size_t kb = 2 * 4 * 8192 * cache.k_row_bytes(), vb = 2 * 4 * 8192 * cache.v_row_bytes();
  if (test::resident_pages(cache.k_rows(0, 0), kb) * page < kb && !AlignedBuffer(size_t{8} << 20).populate_in_background())
    GTEST_SKIP() << "this kernel has no MADV_POPULATE_WRITE";
  EXPECT_EQ(test::resident_pages(cache.k_rows(0, 0), kb), (kb + page - 1) / page);
  EXPECT_EQ(test::resident_pages(cache.v_rows(0, 0), vb), (vb + page - 1) / page);
  for (size_t i = 0; i < kb; i += 4099) ASSERT_EQ(cache.k_rows(0, 0)[i], 0) << i;
  for (size_t i = 0; i < vb; i += 4099) ASSERT_EQ(cache.v_rows(0, 0)[i], 0) << i;
}

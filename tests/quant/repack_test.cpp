// The repacked in-memory forms Q8_0R / Q4_0R (quant/repack.h): exact byte layout, lossless both
// ways, the same values through quantize/dequantize, and the type choice per ISA.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "ops/cpu/cpu_isa.h"
#include "quant/qtypes.h"
#include "quant/quantize.h"
#include "quant/repack.h"
#include "quant_test_util.h"

namespace jetmoe {
namespace {

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(Repack, TypeMapping) {
  EXPECT_EQ(repacked_type(DType::Q8_0), DType::Q8_0R);
  EXPECT_EQ(repacked_type(DType::Q4_0), DType::Q4_0R);
  EXPECT_EQ(repacked_type(DType::Q4_K), DType::Q4_K);
  EXPECT_EQ(repacked_type(DType::BF16), DType::BF16);
  EXPECT_EQ(file_type(DType::Q8_0R), DType::Q8_0);
  EXPECT_EQ(file_type(DType::Q4_0R), DType::Q4_0);
  EXPECT_EQ(file_type(DType::Q4_K), DType::Q4_K);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    EXPECT_EQ(dtype_row_bytes(repacked_type(t), 2048), dtype_row_bytes(t, 2048));
    EXPECT_TRUE(dtype_is_quantized(repacked_type(t)));
  }
  const CpuIsa saved = active_isa();
  for (CpuIsa isa : supported_isas()) {
    set_active_isa(isa);
    EXPECT_EQ(cpu_memory_type(DType::Q8_0), isa == CpuIsa::Avx512 ? DType::Q8_0R : DType::Q8_0);
    EXPECT_EQ(cpu_memory_type(DType::Q4_K), DType::Q4_K);
  }
  set_active_isa(saved);
}

// Every quant byte and scale lands where runtime/dtype.h says: block b's quant bytes at qb*b,
// its scale at qb*nb + 2b; and unpack_row restores the GGUF bytes exactly.
TEST(Repack, LayoutIsExactAndLossless) {
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    const size_t qb = t == DType::Q8_0 ? 32 : 16, bb = qb + 2;
    for (int64_t n : {32, 96, 2048}) {
      const int64_t rows = 3, nb = n / 32;
      const size_t rb = dtype_row_bytes(t, static_cast<size_t>(n));
      const auto orig = random_bytes(rb * rows, static_cast<uint32_t>(n) + static_cast<uint32_t>(qb));
      auto packed = orig;
      repack_rows(t, packed.data(), rows, n);
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* o = orig.data() + r * rb;
        const uint8_t* p = packed.data() + r * rb;
        for (int64_t b = 0; b < nb; ++b) {
          ASSERT_EQ(std::memcmp(p + qb * b, o + bb * b + 2, qb), 0) << dtype_name(t) << " block " << b;
          ASSERT_EQ(std::memcmp(p + qb * nb + 2 * b, o + bb * b, 2), 0) << dtype_name(t) << " scale " << b;
        }
        std::vector<uint8_t> back(rb);
        unpack_row(repacked_type(t), p, back.data(), n);
        ASSERT_EQ(std::memcmp(back.data(), o, rb), 0) << dtype_name(t) << " n " << n;
      }
      // The single-row form agrees with the many-row one.
      auto one = orig;
      repack_row(t, one.data() + rb, n);
      EXPECT_EQ(std::memcmp(one.data() + rb, packed.data() + rb, rb), 0);
    }
  }
}

TEST(Repack, QuantizeAndDequantizeSeeTheSameValues) {
  const auto x = qtest::gaussian(1024, 17, 0.1f);
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    std::vector<uint8_t> a(dtype_row_bytes(t, 1024)), b(a.size());
    quantize_row(t, x.data(), a.data(), 1024);
    quantize_row(repacked_type(t), x.data(), b.data(), 1024);
    auto a_packed = a;
    repack_row(t, a_packed.data(), 1024);
    EXPECT_EQ(a_packed, b) << dtype_name(t);
    std::vector<float> ya(1024), yb(1024);
    dequantize_row(t, a.data(), ya.data(), 1024);
    dequantize_row(repacked_type(t), b.data(), yb.data(), 1024);
    EXPECT_EQ(ya, yb) << dtype_name(t);
  }
}

TEST(Repack, BadInput) {
  std::vector<uint8_t> buf(4096);
  EXPECT_THROW(repack_rows(DType::Q4_K, buf.data(), 1, 256), std::invalid_argument);
  EXPECT_THROW(repack_rows(DType::Q8_0R, buf.data(), 1, 64), std::invalid_argument);
  EXPECT_THROW(repack_rows(DType::Q8_0, buf.data(), 1, 40), std::invalid_argument);
  EXPECT_THROW(unpack_row(DType::Q8_0, buf.data(), buf.data() + 100, 64), std::invalid_argument);
}

}  // namespace
}  // namespace jetmoe

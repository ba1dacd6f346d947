// The repacked in-memory forms Q8_0R / Q4_0R (quant/repack.h: 16 rows interleaved, layout in
// quant/qtypes.h): exact byte layout, lossless both ways, the same values through
// quantize/dequantize, and the type choice per ISA and row count.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "ops/cpu/cpu_isa.h"
#include "quant/qdot_kernels.h"
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
  EXPECT_EQ(repacked_type(DType::Q4_K), DType::Q4_KR);
  EXPECT_EQ(repacked_type(DType::BF16), DType::BF16);
  EXPECT_EQ(file_type(DType::Q8_0R), DType::Q8_0);
  EXPECT_EQ(file_type(DType::Q4_0R), DType::Q4_0);
  EXPECT_EQ(file_type(DType::Q4_KR), DType::Q4_K);
  EXPECT_EQ(file_type(DType::Q4_K), DType::Q4_K);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_K}) {
    EXPECT_EQ(dtype_row_bytes(repacked_type(t), 2048), dtype_row_bytes(t, 2048));
    EXPECT_TRUE(dtype_is_quantized(repacked_type(t)));
  }
  const CpuIsa saved = active_isa();
  for (CpuIsa isa : supported_isas()) {
    set_active_isa(isa);
    EXPECT_EQ(cpu_memory_type(DType::Q8_0, 4096), isa != CpuIsa::Scalar ? DType::Q8_0R : DType::Q8_0);
    EXPECT_EQ(cpu_memory_type(DType::Q4_0, 32), isa != CpuIsa::Scalar ? DType::Q4_0R : DType::Q4_0);
    EXPECT_EQ(cpu_memory_type(DType::Q8_0, 300), DType::Q8_0);  // not whole 16-row groups
    EXPECT_EQ(cpu_memory_type(DType::Q4_0, 24), DType::Q4_0);
    EXPECT_EQ(cpu_memory_type(DType::Q4_K, 4096), isa != CpuIsa::Scalar ? DType::Q4_KR : DType::Q4_K);
    EXPECT_EQ(cpu_memory_type(DType::Q4_K, 40), DType::Q4_K);
    EXPECT_EQ(cpu_memory_type(DType::BF16, 4096), DType::BF16);
  }
  set_active_isa(saved);
}

// Every quant byte and scale lands where quant/qtypes.h says, written out here independently of
// interleaved_block(): in group g, blocks come in pairs [scales b][scales b+1][quants b][quants
// b+1] (an odd last block alone: [quants][scales]); chunk k of a block's quants holds bytes
// 4k..4k+3 of each row i at 4i; scales are row i's fp16 at 2i. unpack_row restores the GGUF bytes.
TEST(Repack, LayoutIsExactAndLossless) {
  for (DType t : {DType::Q8_0, DType::Q4_0}) {
    const size_t qb = t == DType::Q8_0 ? 32 : 16, bb = qb + 2;
    for (int64_t n : {32, 96, 2048}) {
      const int64_t rows = 48, nb = n / 32;
      const size_t rb = dtype_row_bytes(t, static_cast<size_t>(n));
      const auto orig = random_bytes(rb * rows, static_cast<uint32_t>(n) + static_cast<uint32_t>(qb));
      auto packed = orig;
      repack_rows(t, packed.data(), rows, n);
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* o = orig.data() + r * rb;
        const uint8_t* G = packed.data() + (r / 16) * 16 * rb;
        const size_t i = static_cast<size_t>(r % 16);
        for (int64_t b = 0; b < nb; ++b) {
          const size_t pair_start = static_cast<size_t>(b / 2) * 2 * 16 * bb;
          const size_t in_pair = static_cast<size_t>(b % 2);
          const size_t blocks_in_pair = (b / 2) * 2 + 1 < nb ? 2 : 1;
          const size_t quants = blocks_in_pair == 2 ? pair_start + 64 + in_pair * 16 * qb : pair_start;
          const size_t scales = blocks_in_pair == 2 ? pair_start + in_pair * 32 : pair_start + 16 * qb;
          for (size_t k = 0; k < qb / 4; ++k)
            ASSERT_EQ(std::memcmp(G + quants + 64 * k + 4 * i, o + bb * b + 2 + 4 * k, 4), 0)
                << dtype_name(t) << " n " << n << " row " << r << " block " << b << " chunk " << k;
          ASSERT_EQ(std::memcmp(G + scales + 2 * i, o + bb * b, 2), 0) << dtype_name(t) << " scale " << b;
        }
        std::vector<uint8_t> back(rb);
        unpack_row(repacked_type(t), packed.data(), r, back.data(), n);
        ASSERT_EQ(std::memcmp(back.data(), o, rb), 0) << dtype_name(t) << " n " << n << " row " << r;
      }
      // Groups stay in place: repacking rows 16..47 alone gives the same bytes there.
      auto tail = orig;
      repack_rows(t, tail.data() + 16 * rb, 32, n);
      EXPECT_EQ(std::memcmp(tail.data() + 16 * rb, packed.data() + 16 * rb, 32 * rb), 0);
      EXPECT_EQ(std::memcmp(tail.data(), orig.data(), 16 * rb), 0);
    }
  }
}

// Q4_KR, written out independently of quant/qtypes.h's helpers: super-block b of group g at
// 2304 b; scale register r holds scale bytes 4r .. 4r + 3 of row i at 64r + 4i; d and dmin at
// 192 / 224 + 2i; quant chunk c register k holds bytes 32c + 4k .. + 3 at 256 + 512c + 64k + 4i.
TEST(Repack, Q4KLayoutIsExactAndLossless) {
  for (int64_t n : {256, 768}) {
    const int64_t rows = 32, nb = n / 256;
    const size_t rb = dtype_row_bytes(DType::Q4_K, static_cast<size_t>(n));
    const auto orig = random_bytes(rb * rows, 7 + static_cast<uint32_t>(n));
    auto packed = orig;
    repack_rows(DType::Q4_K, packed.data(), rows, n);
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* o = orig.data() + r * rb;
      const uint8_t* G = packed.data() + (r / 16) * 16 * rb;
      const size_t i = static_cast<size_t>(r % 16);
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* ob = o + 144 * b;  // d, dmin, 12 scale bytes, 128 quant bytes
        const uint8_t* pb = G + 2304 * b;
        for (size_t c = 0; c < 4; ++c)
          for (size_t k = 0; k < 8; ++k)
            ASSERT_EQ(std::memcmp(pb + 256 + 512 * c + 64 * k + 4 * i, ob + 16 + 32 * c + 4 * k, 4), 0) << "row " << r << " c " << c;
        for (size_t s = 0; s < 3; ++s) ASSERT_EQ(std::memcmp(pb + 64 * s + 4 * i, ob + 4 + 4 * s, 4), 0);
        ASSERT_EQ(std::memcmp(pb + 192 + 2 * i, ob, 2), 0);
        ASSERT_EQ(std::memcmp(pb + 224 + 2 * i, ob + 2, 2), 0);
      }
      std::vector<uint8_t> back(rb);
      unpack_row(DType::Q4_KR, packed.data(), r, back.data(), n);
      ASSERT_EQ(std::memcmp(back.data(), o, rb), 0) << "row " << r;
    }
  }
}

TEST(Repack, OneGroupPackedAsTheWholeMatrixIsRepacked) {
  // The AVX2 transposes that prefill on a mapped file packs rows with (quant/repack_avx2.cpp,
  // quant/qmatmul_packed.cpp) give, for 16 rows anywhere in a matrix, the bytes repack_rows gives
  // those rows as a group; raw random bytes, and row lengths with an odd block count (the pairs'
  // last block).
  const qdot_detail::PackGroupFn simd = qdot_detail::avx2_pack_row_group();
  if (!simd || supported_isas().size() == 1) GTEST_SKIP() << "no AVX2 packing in this build or on this CPU";
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_K})
    for (int64_t n : {256, 512, 2048, 5632, 96, 800}) {
      if (n % static_cast<int64_t>(dtype_block_elems(t)) != 0) continue;
      const size_t rb = dtype_row_bytes(t, static_cast<size_t>(n));
      const auto file = random_bytes(rb * 48, 7 + static_cast<uint32_t>(n));
      std::vector<uint8_t> repacked = file;
      repack_rows(t, repacked.data(), 48, n);
      for (int g = 0; g < 3; ++g) {
        const uint8_t* rows = file.data() + rb * 16 * static_cast<size_t>(g);
        const uint8_t* want = repacked.data() + rb * 16 * static_cast<size_t>(g);
        std::vector<uint8_t> got(rb * 16, 0x55);
        simd(qdot_detail::kernel_index(t), rows, n / static_cast<int64_t>(dtype_block_elems(t)), rb, got.data());
        ASSERT_EQ(0, std::memcmp(got.data(), want, got.size())) << "avx2 " << dtype_name(t) << " n " << n << " group " << g;
      }
    }
}

TEST(Repack, QuantizeAndDequantizeSeeTheSameValues) {
  const int64_t rows = 32, n = 1024;
  const auto x = qtest::gaussian(static_cast<size_t>(rows * n), 17, 0.1f);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_K}) {
    const size_t rb = dtype_row_bytes(t, n);
    std::vector<uint8_t> a(rb * rows), b(a.size());
    quantize_tensor_rows(t, x.data(), a.data(), rows, n);
    quantize_tensor_rows(repacked_type(t), x.data(), b.data(), rows, n);
    auto a_packed = a;
    repack_rows(t, a_packed.data(), rows, n);
    EXPECT_EQ(a_packed, b) << dtype_name(t);
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> ya(n), yb(n), yc(n);
      dequantize_row(t, a.data() + r * rb, ya.data(), n);
      dequantize_matrix_row(repacked_type(t), b.data(), r, yb.data(), n);
      dequantize_matrix_row(t, a.data(), r, yc.data(), n);
      ASSERT_EQ(ya, yb) << dtype_name(t) << " row " << r;
      ASSERT_EQ(ya, yc) << dtype_name(t) << " row " << r;
    }
  }
}

TEST(Repack, BadInput) {
  std::vector<uint8_t> buf(34 * 16 * 4);
  std::vector<float> y(64);
  EXPECT_THROW(repack_rows(DType::BF16, buf.data(), 16, 256), std::invalid_argument);
  EXPECT_THROW(repack_rows(DType::Q4_K, buf.data(), 16, 128), std::invalid_argument);
  EXPECT_THROW(repack_rows(DType::Q8_0R, buf.data(), 16, 64), std::invalid_argument);
  EXPECT_THROW(repack_rows(DType::Q8_0, buf.data(), 16, 40), std::invalid_argument);
  EXPECT_THROW(repack_rows(DType::Q8_0, buf.data(), 8, 64), std::invalid_argument);  // half a group
  EXPECT_THROW(unpack_row(DType::Q8_0, buf.data(), 0, buf.data() + 100, 64), std::invalid_argument);
  // A single row of an interleaved type cannot be written or read alone.
  EXPECT_THROW(quantize_row(DType::Q8_0R, y.data(), buf.data(), 64), std::invalid_argument);
  EXPECT_THROW(dequantize_row(DType::Q4_0R, buf.data(), y.data(), 64), std::invalid_argument);
  EXPECT_THROW(quantize_tensor_rows(DType::Q4_0R, y.data(), buf.data(), 1, 64), std::invalid_argument);
}

}  // namespace
}  // namespace jetmoe

// Activation quantization and the qmatvec / qmatmul kernels of quant/qdot.h, on every ISA.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/cpu/cpu_isa.h"
#include "quant/qdot.h"
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"
#include "quant/quantize.h"
#include "quant/repack.h"
#include "quant/stream_prefetch.h"
#include "quant_test_util.h"
#include "support/proc_cpuinfo.h"

namespace jetmoe {
namespace {

using qtest::gaussian;

// The file formats and the CPU's repacked in-memory forms of Q8_0 / Q4_0 (quant/repack.h).
constexpr DType kQuantTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q8_0R, DType::Q4_0R, DType::Q4_KR};

// The row counts the tests ask for, rounded up to whole 16-row groups for the interleaved types.
int64_t rows_for(DType t, int64_t rows) { return dtype_is_repacked(t) ? (rows + 15) / 16 * 16 : rows; }

struct Problem {
  DType t;
  int64_t rows, n, T;
  std::vector<uint8_t> W, X;
  std::vector<float> Wf, Xf;  // dequantized weights / activations
};

// Quantized weights from Gaussian data, or raw random bytes (every bit pattern: nibbles 0/15,
// int8 -128..127, all 6-bit scales) with sane fp16 scales when `raw` is set.
Problem make_problem(DType t, int64_t rows, int64_t n, int64_t T, uint32_t seed, bool raw = false) {
  Problem p{t, rows, n, T, {}, {}, {}, {}};
  const size_t rb = dtype_row_bytes(t, n);
  p.W.resize(rb * rows);
  if (raw) {
    // Raw bytes in the file layout (scales at the head of each block), repacked afterwards.
    std::mt19937 rng(seed);
    for (auto& b : p.W) b = static_cast<uint8_t>(rng());
    std::uniform_real_distribution<float> ud(0.001f, 0.05f);
    const size_t bb = dtype_block_bytes(file_type(t));
    for (size_t off = 0; off < p.W.size(); off += bb) {
      const uint16_t d = f32_to_f16(ud(rng)), dmin = f32_to_f16(ud(rng));
      std::memcpy(&p.W[off], &d, 2);
      if (file_type(t) == DType::Q4_K) std::memcpy(&p.W[off + 2], &dmin, 2);
    }
    if (dtype_is_repacked(t)) repack_rows(file_type(t), p.W.data(), rows, n);
  } else {
    const auto wf = gaussian(static_cast<size_t>(rows * n), seed, 0.05f);
    quantize_tensor_rows(t, wf.data(), p.W.data(), rows, n);
  }
  p.Wf.resize(static_cast<size_t>(rows * n));
  for (int64_t r = 0; r < rows; ++r) dequantize_matrix_row(t, p.W.data(), r, p.Wf.data() + r * n, n);

  auto xf = gaussian(static_cast<size_t>(T * n), seed * 31 + 7, 1.0f);
  if (raw)  // saturate some activations to +-127 to stress int16 intermediate sums
    for (size_t i = 0; i < xf.size(); i += 3) xf[i] = (i % 2 ? 1.0f : -1.0f) * 4.0f;
  const size_t ab = activation_row_bytes(t, n);
  p.X.resize(ab * T);
  quantize_activation_rows(t, xf.data(), n, p.X.data(), T, n);
  p.Xf.resize(static_cast<size_t>(T * n));
  for (int64_t k = 0; k < T; ++k) {
    const auto d = qtest::decode_activation(t, p.X.data() + k * ab, n);
    std::copy(d.begin(), d.end(), p.Xf.begin() + k * n);
  }
  return p;
}

// float64 dot of the dequantized row and activation, and sum |w x| as the error scale.
void ref_dot(const Problem& p, int64_t r, int64_t k, double* dot, double* mag) {
  double s = 0, m = 0;
  for (int64_t i = 0; i < p.n; ++i) {
    const double v = static_cast<double>(p.Wf[r * p.n + i]) * p.Xf[k * p.n + i];
    s += v;
    m += std::fabs(v);
  }
  *dot = s;
  *mag = m;
}

TEST(QuantActivation, RowBytesAndDecode) {
  EXPECT_EQ(activation_row_bytes(DType::Q8_0, 2048), 64u * 34u);
  EXPECT_EQ(activation_row_bytes(DType::Q4_0, 2048), 64u * 34u);
  EXPECT_EQ(activation_row_bytes(DType::Q4_K, 2048), 8u * 292u);
  EXPECT_EQ(activation_row_bytes(DType::Q8_0R, 2048), 64u * 40u);
  EXPECT_EQ(activation_row_bytes(DType::Q4_0R, 2048), 64u * 40u);
  EXPECT_EQ(activation_row_bytes(DType::Q4_KR, 2048), 8u * 276u);
  for (DType t : kQuantTypes) {
    const auto x = gaussian(1024, 5);
    std::vector<uint8_t> q(activation_row_bytes(t, 1024));
    quantize_activation_row(t, x.data(), q.data(), 1024);
    const auto y = qtest::decode_activation(t, q.data(), 1024);
    // max-abs int8 rounding: |error| <= step / 2 = amax / 254 per block (plus fp16 scale rounding)
    EXPECT_LT(std::sqrt(qtest::sq_err(x.data(), y.data(), 1024) / 1024), 0.01) << dtype_name(t);
    if (t == DType::Q8_0R || t == DType::Q4_0R) {
      // The same int8 values and scale as the Q8_0 activation, plus the zero-point term.
      std::vector<uint8_t> q8(activation_row_bytes(DType::Q8_0, 1024));
      quantize_activation_row(DType::Q8_0, x.data(), q8.data(), 1024);
      const auto* z = reinterpret_cast<const BlockQ8_0Z*>(q.data());
      const auto* b = reinterpret_cast<const BlockQ8_0*>(q8.data());
      for (int blk = 0; blk < 32; ++blk) {
        EXPECT_EQ(std::memcmp(z[blk].qs, b[blk].qs, 32), 0);
        EXPECT_EQ(z[blk].d, f16_to_f32(b[blk].d));
        int s = 0;
        for (int k = 0; k < 32; ++k) s += b[blk].qs[k];
        EXPECT_EQ(z[blk].zsum, -(t == DType::Q8_0R ? 128 : 8) * s);
      }
    }
    if (t == DType::Q4_KR) {
      // The Q8_K values and scale, with the sums of each 32-element sub-block.
      std::vector<uint8_t> q8(activation_row_bytes(DType::Q4_K, 1024));
      quantize_activation_row(DType::Q4_K, x.data(), q8.data(), 1024);
      const auto* k = reinterpret_cast<const BlockQ8_KS*>(q.data());
      const auto* b = reinterpret_cast<const BlockQ8_K*>(q8.data());
      for (int blk = 0; blk < 4; ++blk) {
        EXPECT_EQ(std::memcmp(k[blk].qs, b[blk].qs, 256), 0);
        EXPECT_EQ(k[blk].d, b[blk].d);
        for (int j = 0; j < 8; ++j) {
          int s = 0;
          for (int e = 0; e < 32; ++e) s += b[blk].qs[32 * j + e];
          EXPECT_EQ(k[blk].ssum[j], s);
        }
      }
    }
    if (t == DType::Q4_K) {
      const auto* b = reinterpret_cast<const BlockQ8_K*>(q.data());
      for (int blk = 0; blk < 4; ++blk)
        for (int g = 0; g < 16; ++g) {
          int s = 0;
          for (int k = 0; k < 16; ++k) s += b[blk].qs[16 * g + k];
          EXPECT_EQ(b[blk].bsums[g], s);
        }
    }
  }
}

TEST(QuantActivation, EveryIsaGivesTheScalarBytes) {
  // The interleaved types' activations have SIMD code; it must give the scalar code's bytes,
  // scale and block sums exactly, from values whose fp16 scale is subnormal (amax / 127 below
  // 6.1e-5) to values whose scale rounds to the largest half or overflows to inf, with zero
  // blocks, exact halves (ties round to even) and single outliers among them.
  // 2304 values: 72 blocks of 32 (the AVX-512 Q8_0Z code takes 16 blocks at a time, then the
  // rest one by one) and 9 super-blocks of 256.
  const int64_t n = 2304;
  std::vector<std::vector<float>> rows;
  for (float scale : {1e-9f, 3e-6f, 1e-3f, 1.0f, 300.0f, 8.3e6f, 9e6f, 3e30f}) {
    auto x = gaussian(n, 7 + static_cast<uint32_t>(rows.size()));
    for (float& v : x) v *= scale;
    rows.push_back(x);
  }
  std::vector<float> mixed(n, 0.0f);  // block 0 zero; ties; outliers; negative zero
  for (int64_t i = 32; i < n; ++i) mixed[static_cast<size_t>(i)] = 0.5f * static_cast<float>(static_cast<int>(i % 255) - 127);
  mixed[100] = -127.0f;
  mixed[300] = 1e20f;
  mixed[301] = -0.0f;
  mixed[2200] = 1e-30f;  // a tail block (after 64) of ties and one tiny value
  rows.push_back(mixed);
  for (DType t : {DType::Q8_0R, DType::Q4_0R, DType::Q4_KR}) {
    const size_t rb = activation_row_bytes(t, n);
    for (size_t r = 0; r < rows.size(); ++r) {
      std::vector<uint8_t> want(rb, 0xAB);
      quantize_activation_row_isa(CpuIsa::Scalar, t, rows[r].data(), want.data(), n);
      for (CpuIsa isa : supported_isas()) {
        std::vector<uint8_t> got(rb, 0xCD);
        quantize_activation_row_isa(isa, t, rows[r].data(), got.data(), n);
        const size_t block = t == DType::Q4_KR ? sizeof(BlockQ8_KS) : sizeof(BlockQ8_0Z);
        for (size_t b = 0; b < rb / block; ++b) {
          if (t == DType::Q4_KR) {
            const auto& w = reinterpret_cast<const BlockQ8_KS*>(want.data())[b];
            const auto& g = reinterpret_cast<const BlockQ8_KS*>(got.data())[b];
            ASSERT_EQ(std::memcmp(&w.d, &g.d, 4), 0) << isa_name(isa) << " row " << r << " block " << b;
            ASSERT_EQ(std::memcmp(w.qs, g.qs, sizeof w.qs), 0) << isa_name(isa) << " row " << r << " block " << b;
            ASSERT_EQ(std::memcmp(w.ssum, g.ssum, sizeof w.ssum), 0) << isa_name(isa) << " row " << r << " block " << b;
          } else {
            const auto& w = reinterpret_cast<const BlockQ8_0Z*>(want.data())[b];
            const auto& g = reinterpret_cast<const BlockQ8_0Z*>(got.data())[b];
            ASSERT_EQ(std::memcmp(&w.d, &g.d, 4), 0) << isa_name(isa) << " " << dtype_name(t) << " row " << r << " block " << b;
            ASSERT_EQ(std::memcmp(w.qs, g.qs, sizeof w.qs), 0) << isa_name(isa) << " " << dtype_name(t) << " row " << r << " block " << b;
            ASSERT_EQ(w.zsum, g.zsum) << isa_name(isa) << " " << dtype_name(t) << " row " << r << " block " << b;
          }
        }
      }
    }
  }
  // The GGUF-layout types' blocks (Q8_0 for Q8_0 / Q4_0 weights, Q8_K for Q4_K) have no padding:
  // the whole row compares byte for byte. Plus a row with infinities and NaNs among finite values
  // (an inf makes its block's scale inf and every product 0 or NaN; a NaN is skipped by the max).
  std::vector<float> nans = rows[3];
  nans[5] = std::numeric_limits<float>::quiet_NaN();
  nans[40] = std::numeric_limits<float>::infinity();
  nans[300] = -std::numeric_limits<float>::infinity();
  nans[301] = std::numeric_limits<float>::quiet_NaN();
  nans[63] = std::numeric_limits<float>::quiet_NaN();   // last of a 32-block
  nans[511] = std::numeric_limits<float>::quiet_NaN();  // last of a 256-block
  nans[1000] = -std::numeric_limits<float>::quiet_NaN();
  rows.push_back(nans);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_K}) {
    const size_t rb = activation_row_bytes(t, n);
    for (size_t r = 0; r < rows.size(); ++r) {
      std::vector<uint8_t> want(rb, 0xAB);
      quantize_activation_row_isa(CpuIsa::Scalar, t, rows[r].data(), want.data(), n);
      for (CpuIsa isa : supported_isas()) {
        std::vector<uint8_t> got(rb, 0xCD);
        quantize_activation_row_isa(isa, t, rows[r].data(), got.data(), n);
        ASSERT_EQ(std::memcmp(want.data(), got.data(), rb), 0) << isa_name(isa) << " " << dtype_name(t) << " row " << r;
      }
    }
  }
  // Prefill on a mapped file converts these blocks to the interleaved kernels' (quant/qmatmul_packed.cpp):
  // the bytes quantizing the same row for the repacked type gives (both blocks have no padding).
  if (const qdot_detail::ActivationConvertFns* convert = qdot_detail::avx2_activation_convert()) {
    for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_K}) {
      const DType rt = repacked_type(t);
      for (size_t r = 0; r < rows.size(); ++r) {
        std::vector<uint8_t> file(activation_row_bytes(t, n)), want(activation_row_bytes(rt, n), 0xAB), got(want.size(), 0xCD);
        quantize_activation_row_isa(CpuIsa::Scalar, t, rows[r].data(), file.data(), n);
        quantize_activation_row_isa(CpuIsa::Scalar, rt, rows[r].data(), want.data(), n);
        if (t == DType::Q4_K)
          convert->q8_ks(reinterpret_cast<const BlockQ8_K*>(file.data()), reinterpret_cast<BlockQ8_KS*>(got.data()), n / kQK_K);
        else
          convert->q8_0z(reinterpret_cast<const BlockQ8_0*>(file.data()), reinterpret_cast<BlockQ8_0Z*>(got.data()),
                         n / kQK8_0, t == DType::Q8_0 ? 128 : 8);
        ASSERT_EQ(std::memcmp(want.data(), got.data(), want.size()), 0) << "converted " << dtype_name(t) << " row " << r;
      }
    }
  }
  std::vector<uint8_t> q(activation_row_bytes(DType::Q8_0R, n));
  for (CpuIsa isa : supported_isas()) EXPECT_NO_THROW(quantize_activation_row_isa(isa, DType::Q8_0R, rows[0].data(), q.data(), n));
}

TEST(QuantActivation, BadInput) {
  std::vector<float> x(512);
  std::vector<uint8_t> q(4096);
  EXPECT_THROW(activation_row_bytes(DType::Q4_K, 100), std::invalid_argument);
  EXPECT_THROW(quantize_activation_row(DType::F32, x.data(), q.data(), 256), std::invalid_argument);
  float y[4];
  EXPECT_THROW(qmatvec(DType::Q4_0, q.data(), 0, 1, 40, q.data(), y), std::invalid_argument);
  EXPECT_THROW(qmatvec(DType::BF16, q.data(), 0, 1, 256, q.data(), y), std::invalid_argument);
  EXPECT_THROW(qmatmul(DType::Q8_0, q.data(), 2, 1, 256, q.data(), 1, y, 1), std::invalid_argument);
}

TEST(QuantDot, ScalarMatchesFloat64OfDequantized) {
  for (DType t : kQuantTypes) {
    for (int64_t n : {256, 512, 2048}) {
      const int64_t R = rows_for(t, 7);
      const Problem p = make_problem(t, R, n, 3, 11 + static_cast<uint32_t>(n));
      std::vector<float> Y(static_cast<size_t>(3 * R));
      qmatmul_isa(CpuIsa::Scalar, t, p.W.data(), 0, R, n, p.X.data(), 3, Y.data(), R);
      for (int64_t k = 0; k < 3; ++k)
        for (int64_t r = 0; r < R; ++r) {
          double ref, mag;
          ref_dot(p, r, k, &ref, &mag);
          EXPECT_NEAR(Y[k * R + r], ref, 1e-4 * mag) << dtype_name(t) << " n " << n;
        }
    }
  }
}

// Every ISA against the scalar kernel: integer block sums are exact, only the float summation
// order differs, so the tolerance is 1e-5 relative to sum |w x|.
void check_against_scalar(const Problem& p, CpuIsa isa) {
  const int64_t R = p.rows, T = p.T, n = p.n;
  const std::string what = std::string(isa_name(isa)) + " " + dtype_name(p.t) + " rows " +
                           std::to_string(R) + " n " + std::to_string(n) + " T " + std::to_string(T);
  // matmul, with ldy > rows and sentinels around the written entries
  const int64_t ldy = R + 3;
  std::vector<float> Ys(T * ldy, -777.0f), Yi(T * ldy, -777.0f);
  qmatmul_isa(CpuIsa::Scalar, p.t, p.W.data(), 0, R, n, p.X.data(), T, Ys.data(), ldy);
  qmatmul_isa(isa, p.t, p.W.data(), 0, R, n, p.X.data(), T, Yi.data(), ldy);
  for (int64_t k = 0; k < T; ++k) {
    for (int64_t r = 0; r < ldy; ++r) {
      if (r >= R) {
        ASSERT_EQ(Yi[k * ldy + r], -777.0f) << what << " wrote outside the rows";
        continue;
      }
      double ref, mag;
      ref_dot(p, r, k, &ref, &mag);
      ASSERT_NEAR(Yi[k * ldy + r], Ys[k * ldy + r], 1e-5 * mag + 1e-30) << what << " r " << r << " t " << k;
    }
  }
  // matvec for every token, over the full range and a sub-range
  const size_t ab = activation_row_bytes(p.t, n);
  for (int64_t k = 0; k < T; ++k) {
    std::vector<float> y(R + 1, -777.0f);
    qmatvec_isa(isa, p.t, p.W.data(), 0, R, n, p.X.data() + k * ab, y.data());
    for (int64_t r = 0; r < R; ++r) {
      double ref, mag;
      ref_dot(p, r, k, &ref, &mag);
      ASSERT_NEAR(y[r], Ys[k * ldy + r], 1e-5 * mag + 1e-30) << what << " matvec r " << r;
    }
    ASSERT_EQ(y[R], -777.0f);
    // A sub-range: one row in from each end, or one 16-row group for the interleaved types.
    const int64_t cut = dtype_is_repacked(p.t) ? 16 : 1;
    if (R > 2 * cut) {
      std::vector<float> z(R, -777.0f);
      qmatvec_isa(isa, p.t, p.W.data(), cut, R - cut, n, p.X.data() + k * ab, z.data());
      ASSERT_EQ(z[cut - 1], -777.0f) << what;
      ASSERT_EQ(z[R - cut], -777.0f) << what;
      for (int64_t r = cut; r < R - cut; ++r) ASSERT_EQ(z[r], y[r]) << what << " sub-range r " << r;
    }
  }
}

TEST(QuantDot, EveryIsaMatchesScalarGaussian) {
  for (CpuIsa isa : supported_isas()) {
    SCOPED_TRACE(isa_name(isa));
    for (DType t : kQuantTypes)
      for (int64_t n : {256, 512, 2048})
        for (int64_t rows : {1, 7, 33})
          for (int64_t T : {1, 3, 5, 17})
            check_against_scalar(make_problem(t, rows_for(t, rows), n, T, static_cast<uint32_t>(rows * 1000 + T * 10 + n)), isa);
  }
}

TEST(QuantDot, InterleavedTypesTakeWholeGroups) {
  // 80 rows = 5 groups: the prefill kernels pair groups, so an odd group count takes the
  // one-group tile; T = 7 takes the 4-, 2- and 1-token tiles.
  for (CpuIsa isa : supported_isas())
    for (DType t : {DType::Q8_0R, DType::Q4_0R, DType::Q4_KR}) check_against_scalar(make_problem(t, 80, 512, 7, 41), isa);
  const Problem p = make_problem(DType::Q8_0R, 32, 256, 1, 3);
  std::vector<float> y(32);
  for (CpuIsa isa : supported_isas()) {
    EXPECT_THROW(qmatvec_isa(isa, p.t, p.W.data(), 0, 8, 256, p.X.data(), y.data()), std::invalid_argument);
    EXPECT_THROW(qmatmul_isa(isa, p.t, p.W.data(), 4, 16, 256, p.X.data(), 1, y.data(), 32), std::invalid_argument);
  }
}

TEST(QuantDot, EveryIsaMatchesScalarOddBlockCounts) {
  // Q8_0 / Q4_0 rows with an odd number of 32-blocks (the 512-bit kernels pair blocks).
  for (CpuIsa isa : supported_isas())
    for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q8_0R, DType::Q4_0R})
      for (int64_t n : {32, 96, 352, 800})
        for (int64_t T : {1, 2, 5}) check_against_scalar(make_problem(t, rows_for(t, 9), n, T, 5 + static_cast<uint32_t>(n)), isa);
}

TEST(QuantDot, EveryIsaMatchesScalarRawBitPatterns) {
  for (CpuIsa isa : supported_isas())
    for (DType t : kQuantTypes)
      for (int64_t T : {1, 4, 6, 9}) check_against_scalar(make_problem(t, rows_for(t, 13), 1024, T, 99 + static_cast<uint32_t>(T), true), isa);
}

TEST(QuantDot, FileLayoutPrefillPacksRowGroupsLikeTheRepackedPath) {
  // With enough tokens the SIMD ISAs run GGUF-layout Q8_0 / Q4_0 / Q4_K weights (a mapped file) by
  // packing each whole run of 16 rows into the interleaved layout (quant/qmatmul_packed.cpp). The
  // packed rows must give exactly what the repacked matrix gives on the same ISA (the same int8
  // activations and kernels), from any first row; leftover rows take the file-layout kernels.
  ASSERT_EQ(qdot_detail::kPackedMatmulMinTokens, 8);
  if (supported_isas().size() == 1) GTEST_SKIP() << "this CPU runs only the scalar kernels";
  for (CpuIsa isa : supported_isas()) {
    if (isa == CpuIsa::Scalar) continue;  // packs nothing
    for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_K})
      for (int64_t T : {8, 9, 17}) {
        const std::string what = std::string(isa_name(isa)) + " " + dtype_name(t) + " T " + std::to_string(T);
        const int64_t R = 48, n = 512;
        const uint32_t seed = 500 + static_cast<uint32_t>(T);
        const Problem p = make_problem(t, R, n, T, seed);
        // The same weights repacked, and the same floats (make_problem's) quantized for the
        // repacked type.
        std::vector<uint8_t> Wr = p.W;
        repack_rows(t, Wr.data(), R, n);
        const DType rt = repacked_type(t);
        const auto xf = gaussian(static_cast<size_t>(T * n), seed * 31 + 7, 1.0f);
        std::vector<uint8_t> Xr(activation_row_bytes(rt, n) * T);
        quantize_activation_rows(rt, xf.data(), n, Xr.data(), T, n);
        std::vector<float> want(static_cast<size_t>(T * R)), got(want.size(), -777.0f);
        qmatmul_isa(isa, rt, Wr.data(), 0, R, n, Xr.data(), T, want.data(), R);
        qmatmul_isa(isa, t, p.W.data(), 0, R, n, p.X.data(), T, got.data(), R);
        for (int64_t k = 0; k < T; ++k)
          for (int64_t r = 0; r < R; ++r) ASSERT_EQ(got[k * R + r], want[k * R + r]) << what << " r " << r << " t " << k;
        // Rows [5, 43): two packed runs of 16 (rows 5-20, 21-36) and 6 rows in the file layout.
        std::vector<float> part(want.size(), -777.0f), scalar(want.size());
        qmatmul_isa(isa, t, p.W.data(), 5, 43, n, p.X.data(), T, part.data(), R);
        qmatmul_isa(CpuIsa::Scalar, t, p.W.data(), 0, R, n, p.X.data(), T, scalar.data(), R);
        for (int64_t k = 0; k < T; ++k)
          for (int64_t r = 0; r < R; ++r) {
            if (r < 5 || r >= 43) {
              ASSERT_EQ(part[k * R + r], -777.0f) << what << " wrote row " << r;
              continue;
            }
            double ref, mag;
            ref_dot(p, r, k, &ref, &mag);
            ASSERT_NEAR(part[k * R + r], scalar[k * R + r], 1e-5 * mag + 1e-30) << what << " rows 5-43, r " << r;
          }
      }
  }
}

TEST(QuantDot, EveryIsaReadsWeightsAtAnyAlignment) {
  // Mapped GGUF tensors start at the file's alignment (32 bytes by default), not at a cache line;
  // owned buffers at 64. The kernels must give the same sums at every start offset.
  for (CpuIsa isa : supported_isas())
    for (DType t : kQuantTypes)
      for (size_t offset : {size_t{0}, size_t{2}, size_t{32}}) {
        Problem p = make_problem(t, rows_for(t, 33), 512, 6, 77);
        std::vector<uint8_t> shifted(p.W.size() + 64 + offset);
        const size_t base = (64 - reinterpret_cast<uintptr_t>(shifted.data()) % 64) % 64 + offset;
        std::copy(p.W.begin(), p.W.end(), shifted.begin() + static_cast<std::ptrdiff_t>(base));
        const int64_t R = p.rows;
        std::vector<float> want(static_cast<size_t>(6 * R)), got(want.size()), one(static_cast<size_t>(R));
        qmatmul_isa(CpuIsa::Scalar, t, p.W.data(), 0, R, 512, p.X.data(), 6, want.data(), R);
        qmatmul_isa(isa, t, shifted.data() + base, 0, R, 512, p.X.data(), 6, got.data(), R);
        qmatvec_isa(isa, t, shifted.data() + base, 0, R, 512, p.X.data(), one.data());
        for (int64_t k = 0; k < 6; ++k)
          for (int64_t r = 0; r < R; ++r) {
            double ref, mag;
            ref_dot(p, r, k, &ref, &mag);
            ASSERT_NEAR(got[k * R + r], want[k * R + r], 1e-5 * mag + 1e-30)
                << isa_name(isa) << " " << dtype_name(t) << " offset " << offset << " r " << r << " t " << k;
            if (k == 0) {
              ASSERT_NEAR(one[r], want[r], 1e-5 * mag + 1e-30) << isa_name(isa) << " matvec " << dtype_name(t);
            }
          }
      }
}

TEST(QuantDot, DecodePrefetchDistanceChangesNoResult) {
  // The one-token kernels (interleaved layouts, and GGUF-layout Q4_K) prefetch ahead of the
  // stream by the process-wide distance into L2 and by half of it into L1
  // (quant/stream_prefetch.h); every distance must give the scalar kernel's sums, including
  // sub-ranges whose prefetches run past the end of the weights.
  const size_t saved = decode_prefetch_bytes();
  for (size_t distance : {size_t{0}, size_t{64}, size_t{4096}, size_t{65536}}) {
    set_decode_prefetch_bytes(distance);
    EXPECT_EQ(decode_prefetch_bytes(), distance);
    for (CpuIsa isa : supported_isas())
      for (DType t : {DType::Q8_0R, DType::Q4_0R, DType::Q4_KR, DType::Q4_K}) {
        SCOPED_TRACE(std::string(isa_name(isa)) + " " + dtype_name(t) + " prefetch " + std::to_string(distance));
        check_against_scalar(make_problem(t, 48, 2048, 1, 17), isa);
        check_against_scalar(make_problem(t, 80, 512, 3, 18), isa);
      }
  }
  reset_decode_prefetch_bytes();
  EXPECT_EQ(decode_prefetch_bytes(), saved);
}

TEST(QuantDot, DecodePrefetchDistanceIsChecked) {
  const size_t saved = decode_prefetch_bytes();
  for (size_t bad : {size_t{1}, size_t{100}, size_t{65600}, size_t{1} << 40}) {
    try {
      set_decode_prefetch_bytes(bad);
      ADD_FAILURE() << "accepted prefetch distance " << bad;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("multiple of 64"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(decode_prefetch_bytes(), saved);
  // The kernels' second, nearer prefetch into L1: half the distance in whole lines, none with none.
  EXPECT_EQ(l1_prefetch_bytes(4096), 2048u);
  EXPECT_EQ(l1_prefetch_bytes(192), 64u);
  EXPECT_EQ(l1_prefetch_bytes(64), 0u);
  EXPECT_EQ(l1_prefetch_bytes(0), 0u);
  const std::string vendor = cpu_vendor();
  const bool intel = vendor == "GenuineIntel";
  const bool icx = test::proc_cpu_is_ice_lake_xeon();
  EXPECT_EQ(decode_prefetch_default(), intel ? 8192u : 0u) << vendor;
  // Per weight type: the interleaved int8/int4 kernels prefetch on every CPU (off Intel Q4_0R 4 KiB
  // and Q8_0R 8 KiB, with touches and rolled loops; on an Ice Lake Xeon into L1 alone, so their L2
  // distance is 0), the others on Intel only.
  // Off Intel the AVX2 Q8_0R / Q4_0R / Q4_KR kernels read two streams instead, without an L2
  // prefetch.
  const bool two_streams = !intel && active_isa() == CpuIsa::Avx2;
  EXPECT_EQ(decode_prefetch_default(DType::Q4_KR), icx || two_streams ? 0u : 8192u) << vendor;
  EXPECT_EQ(decode_prefetch_default(DType::Q8_0R), icx || two_streams ? 0u : 8192u) << vendor;
  EXPECT_EQ(decode_prefetch_default(DType::Q4_0R), icx || two_streams ? 0u : intel ? 8192u : 4096u) << vendor;
  // GGUF-layout Q4_K's AVX2 kernel prefetches 8 KiB off Intel too (a Zen 3 figure).
  EXPECT_EQ(decode_prefetch_default(DType::Q4_K), intel || two_streams ? 8192u : 0u) << vendor;
  for (DType t : {DType::Q8_0, DType::F32, DType::F16, DType::BF16})
    EXPECT_EQ(decode_prefetch_default(t), intel ? 8192u : 0u) << vendor << " " << dtype_name(t);
}

TEST(QuantDot, DecodePrefetchOverrideCoversEveryTypeUntilReset) {
  if (std::getenv("JETMOE_PREFETCH") != nullptr) GTEST_SKIP() << "JETMOE_PREFETCH is set: it is the override";
  reset_decode_prefetch_bytes();
  EXPECT_FALSE(decode_prefetch_overridden());
  EXPECT_EQ(decode_prefetch_bytes(), decode_prefetch_default());
  EXPECT_EQ(decode_prefetch_bytes(DType::Q4_KR), decode_prefetch_default(DType::Q4_KR));
  EXPECT_EQ(decode_prefetch_bytes(DType::Q4_0R), decode_prefetch_default(DType::Q4_0R));
  set_decode_prefetch_bytes(128);
  EXPECT_TRUE(decode_prefetch_overridden());
  for (DType t : {DType::Q8_0R, DType::Q4_0R, DType::Q4_KR, DType::Q4_K, DType::F32})
    EXPECT_EQ(decode_prefetch_bytes(t), 128u) << dtype_name(t);
  EXPECT_EQ(decode_prefetch_bytes(), 128u);
  EXPECT_EQ(decode_prefetch_summary(), "128 bytes");
  reset_decode_prefetch_bytes();
  EXPECT_FALSE(decode_prefetch_overridden());
  EXPECT_EQ(decode_prefetch_bytes(DType::Q4_KR), decode_prefetch_default(DType::Q4_KR));
  // Every type with a one-token kernel is listed with its distance; the summary names the types
  // whose distance differs from the rest.
  const auto by_type = decode_prefetch_by_type();
  ASSERT_EQ(by_type.size(), 7u);
  const std::string summary = decode_prefetch_summary();
  for (const auto& [t, bytes] : by_type) {
    EXPECT_EQ(bytes, decode_prefetch_default(t)) << dtype_name(t);
    const std::string name = dtype_name(t);  // a whole word of the list: "F16" is in "BF16"
    bool named = false;
    for (const char* before : {"(", " "})
      for (const char* after : {",", " "}) named = named || summary.find(before + name + after) != std::string::npos;
    EXPECT_EQ(named, bytes != decode_prefetch_default()) << dtype_name(t) << ": " << summary;
  }
  if (decode_prefetch_default() == 0 && active_isa() == CpuIsa::Avx2)
    EXPECT_EQ(summary, "0 bytes (Q4_K weights 8192)");
  else if (decode_prefetch_default() == 0)
    EXPECT_EQ(summary, "0 bytes (Q8_0R weights 8192, Q4_0R weights 4096, Q4_KR weights 8192)");
  else if (test::proc_cpu_is_ice_lake_xeon())
    EXPECT_EQ(summary, "8192 bytes (Q8_0R weights 0, Q4_0R weights 0, Q4_KR weights 0)");
  else EXPECT_EQ(summary, "8192 bytes");
}

TEST(QuantDot, DecodeStreamPlanPerCpuAndOverride) {
  if (std::getenv("JETMOE_PREFETCH") != nullptr) GTEST_SKIP() << "JETMOE_PREFETCH is set: it is the override";
  reset_decode_prefetch_bytes();
  const bool intel = cpu_vendor() == "GenuineIntel";
  const bool icx = test::proc_cpu_is_ice_lake_xeon();
  // The plan follows the kernels' ISA (whether or not this CPU runs it: the plan is a pure function
  // of the vendor, the model and the ISA); the one-argument form is the active ISA's.
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
    for (DType t : {DType::Q8_0R, DType::Q4_0R, DType::Q4_KR, DType::Q4_K, DType::BF16}) {
      const DecodeStream s = decode_stream(t, isa);
      SCOPED_TRACE(std::string(isa_name(isa)) + " " + dtype_name(t));
      // Off Intel the AVX2 Q8_0R / Q4_0R / Q4_KR kernels read two streams, Q4_0R prefetching 1 KiB
      // into L1 alone, the others not at all.
      const bool two = !intel && isa == CpuIsa::Avx2 && (t == DType::Q4_0R || t == DType::Q8_0R || t == DType::Q4_KR);
      EXPECT_EQ(s.two_streams, two);
      if (isa == active_isa()) {
        EXPECT_EQ(s.l2, decode_prefetch_default(t));
        const DecodeStream active = decode_stream(t);
        EXPECT_EQ(active.l2, s.l2);
        EXPECT_EQ(active.l1, s.l1);
        EXPECT_EQ(active.touch, s.touch);
        EXPECT_EQ(active.rolled, s.rolled);
        EXPECT_EQ(active.two_streams, s.two_streams);
      }
      if (two) {
        EXPECT_EQ(s.l2, 0u);
        EXPECT_EQ(s.l1, t == DType::Q4_0R ? 1024u : 0u);
        EXPECT_EQ(s.touch, 0u);
        EXPECT_FALSE(s.rolled);
        continue;
      }
      // Otherwise, off Intel the interleaved types run their rolled loops, and only Q4_0R and
      // Q8_0R touch, prefetching into L2 alone; every other plan keeps the L1 prefetch at half the
      // distance (quant/stream_prefetch.h).
      const bool touches = !intel && (t == DType::Q4_0R || t == DType::Q8_0R);
      // An Ice Lake Xeon's interleaved types prefetch into L1 alone, 4 KiB ahead.
      const bool l1_alone = icx && (t == DType::Q8_0R || t == DType::Q4_0R || t == DType::Q4_KR);
      // Off Intel, Q4_KR prefetches 8 KiB, and GGUF-layout Q4_K with the AVX2 kernel too.
      const bool q4k_avx2 = t == DType::Q4_K && isa == CpuIsa::Avx2;
      EXPECT_EQ(s.l2, l1_alone ? 0u : touches ? (t == DType::Q4_0R ? 4096u : 8192u)
                      : intel || t == DType::Q4_KR || q4k_avx2 ? 8192u : 0u);
      EXPECT_EQ(s.touch, touches ? (t == DType::Q4_0R ? 1024u : 2048u) : 0u);
      EXPECT_EQ(s.l1, touches ? 0u : l1_alone ? 4096u : l1_prefetch_bytes(s.l2));
      EXPECT_EQ(s.rolled, !intel && (touches || t == DType::Q4_KR));
    }
  const std::string summary = decode_stream_summary();
  if (icx) {
    EXPECT_EQ(summary, "Q8_0R L2 0 L1 4096 touch 0, Q4_0R L2 0 L1 4096 touch 0, Q4_KR L2 0 L1 4096 touch 0");
  } else if (!intel && active_isa() == CpuIsa::Avx2) {
    EXPECT_EQ(summary,
              "Q8_0R L2 0 L1 0 touch 0 two streams, Q4_0R L2 0 L1 1024 touch 0 two streams, Q4_KR L2 0 L1 0 touch 0 two streams");
  } else {
    EXPECT_NE(summary.find(std::string("Q4_0R L2 ") + (intel ? "8192 L1 4096 touch 0," : "4096 L1 0 touch 1024 rolled,")),
              std::string::npos)
        << summary;
    EXPECT_NE(summary.find(std::string("Q8_0R L2 ") + (intel ? "8192 L1 4096 touch 0," : "8192 L1 0 touch 2048 rolled,")),
              std::string::npos)
        << summary;
    EXPECT_NE(summary.find(std::string("Q4_KR L2 8192 L1 4096 touch 0") + (intel ? "" : " rolled")), std::string::npos)
        << summary;
  }
  // Decode attention touches its KV rows off Intel only (kv_touch_bytes), and not under the override.
  EXPECT_EQ(kv_touch_bytes(), intel ? 0u : 1024u);
  // Its kernels prefetch each row into L2 on Intel, into L1 alone on an Ice Lake Xeon (as the
  // interleaved weights), not at all elsewhere.
  const KvRowPrefetch kv = kv_row_prefetch();
  EXPECT_EQ(kv.l2, intel && !icx ? decode_prefetch_default() : 0u);
  EXPECT_EQ(kv.l1, icx ? 4096u : 0u);
  EXPECT_EQ(kv_row_prefetch_summary(), "L2 " + std::to_string(kv.l2) + " L1 " + std::to_string(kv.l1));
  set_decode_prefetch_bytes(4096);  // the override replaces every plan: no touches, unrolled
  EXPECT_EQ(kv_touch_bytes(), 0u);
  EXPECT_EQ(kv_row_prefetch().l2, 4096u);
  EXPECT_EQ(kv_row_prefetch().l1, 0u);
  for (DType t : {DType::Q8_0R, DType::Q4_0R, DType::Q4_KR}) {
    const DecodeStream s = decode_stream(t);
    EXPECT_EQ(s.l2, 4096u) << dtype_name(t);
    EXPECT_EQ(s.l1, 2048u) << dtype_name(t);
    EXPECT_EQ(s.touch, 0u) << dtype_name(t);
    EXPECT_FALSE(s.rolled) << dtype_name(t);
    EXPECT_FALSE(decode_stream(t, CpuIsa::Avx2).two_streams) << dtype_name(t);
  }
  reset_decode_prefetch_bytes();
}

// Weights that end exactly where an inaccessible page begins: a demand load past their end
// faults (a prefetch would not).
class GuardedCopy {
 public:
  explicit GuardedCopy(const std::vector<uint8_t>& bytes) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t body = (bytes.size() + page - 1) / page * page;
    len_ = body + page;
    base_ = static_cast<uint8_t*>(mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (base_ == MAP_FAILED) throw std::runtime_error("mmap failed");
    if (mprotect(base_ + body, page, PROT_NONE) != 0) throw std::runtime_error("mprotect failed");
    data_ = base_ + body - bytes.size();
    std::memcpy(data_, bytes.data(), bytes.size());
  }
  ~GuardedCopy() { munmap(base_, len_); }
  GuardedCopy(const GuardedCopy&) = delete;
  GuardedCopy& operator=(const GuardedCopy&) = delete;
  const uint8_t* data() const { return data_; }

 private:
  uint8_t* base_ = nullptr;
  uint8_t* data_ = nullptr;
  size_t len_ = 0;
};

TEST(QuantDot, TouchLinesLoadEveryStepInsideTheRangeAndNothingPastIt) {
  // touch_lines (decode attention's KV rows) loads 4 bytes at p, p + every, ... inside [p, p +
  // bytes): a range that ends where a guard page begins is touched to its last step without a
  // fault, whatever the remainder of bytes / every.
  for (size_t bytes : {size_t{1}, size_t{3}, size_t{63}, size_t{1024}, size_t{1025}, size_t{1027}, size_t{5000},
                       size_t{65536}})
    for (size_t every : {size_t{64}, size_t{1000}, size_t{1024}}) {
      const GuardedCopy range(std::vector<uint8_t>(bytes, 7));
      touch_lines(range.data(), bytes, every);
    }
  SUCCEED();
}

TEST(QuantDot, DecodeTouchesAndRolledLoopsStayInsideTheWeightsAndChangeNoResult) {
  // The interleaved one-token kernels' demand touches (MatArgs::touch) run ahead of the stream
  // but never past the end of the rows they were given: with the weights against a guard page, a
  // touch past them would crash this test. The sums must be bit for bit those without touches,
  // and those of the unrolled loop (MatArgs::rolled; Q8_0R / Q4_0R rows of 65 blocks take the
  // odd-block path too) and of one stream (MatArgs::two_streams: 4, 3 and 1 groups, the odd
  // counts with a group left over).
  for (CpuIsa isa : supported_isas()) {
    const qdot_detail::KernelTable& k = qdot_detail::kernel_table(isa);
    for (DType t : {DType::Q8_0R, DType::Q4_0R, DType::Q4_KR}) {
      const int64_t n = t == DType::Q4_KR ? 2048 : 2080, rows = 64;
      const Problem p = make_problem(t, rows, n, 1, 23);
      const GuardedCopy w(p.W);
      const int slot = qdot_detail::kernel_index(t);
      for (int64_t r0 : {int64_t{0}, int64_t{16}, int64_t{48}})
        for (size_t prefetch : {size_t{0}, size_t{8192}}) {
          qdot_detail::MatArgs a;
          a.W = w.data();
          a.w_stride = dtype_row_bytes(t, n);
          a.X = p.X.data();
          a.x_stride = activation_row_bytes(t, n);
          a.nb = n / static_cast<int64_t>(dtype_block_elems(t));
          a.T = 1;
          a.r0 = r0;
          a.r1 = rows;
          a.prefetch = prefetch;
          a.prefetch_l1 = prefetch / 8;
          std::vector<float> want(rows, -777.0f);
          a.Y = want.data();
          k.matvec[slot](a);
          for (bool rolled : {false, true})
            for (bool two_streams : {false, true})
              for (size_t touch : {size_t{0}, size_t{64}, size_t{2048}, size_t{65536}}) {
                SCOPED_TRACE(std::string(isa_name(isa)) + " " + dtype_name(t) + " rows " + std::to_string(r0) +
                             ".. prefetch " + std::to_string(prefetch) + " touch " + std::to_string(touch) +
                             (rolled ? " rolled" : "") + (two_streams ? " two streams" : ""));
                std::vector<float> got(rows, -777.0f);
                a.Y = got.data();
                a.touch = touch;
                a.rolled = rolled;
                a.two_streams = two_streams;
                k.matvec[slot](a);
                EXPECT_EQ(got, want);
              }
        }
    }
  }
}

TEST(QuantDot, DispatchUsesActiveIsa) {
  const Problem p = make_problem(DType::Q4_K, 5, 512, 2, 3);
  std::vector<float> a(10), b(10);
  qmatmul(p.t, p.W.data(), 0, 5, 512, p.X.data(), 2, a.data(), 5);
  qmatmul_isa(active_isa(), p.t, p.W.data(), 0, 5, 512, p.X.data(), 2, b.data(), 5);
  EXPECT_EQ(a, b);
  std::vector<float> c(5);
  qmatvec(p.t, p.W.data(), 0, 5, 512, p.X.data(), c.data());
  for (int r = 0; r < 5; ++r) EXPECT_NEAR(c[r], a[r], 1e-5 * (std::fabs(a[r]) + 1));
}

}  // namespace
}  // namespace jetmoe

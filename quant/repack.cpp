#include "quant/repack.h"

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops/cpu/cpu_isa.h"
#include "quant/qtypes.h"

namespace jetmoe {
namespace {

// Bytes of the quant part of one block (the scale is the other 2 bytes).
size_t quant_bytes(DType file) { return file == DType::Q8_0 ? kQK8_0 : kQK4_0 / 2; }

void check(DType t, bool want_repacked, int64_t n, const char* what) {
  const bool ok = want_repacked ? dtype_is_repacked(t) : (t == DType::Q8_0 || t == DType::Q4_0);
  if (!ok)
    throw std::invalid_argument(std::string(what) + ": type " + dtype_name(t) + " has no repacked form here");
  if (n < 0 || n % 32 != 0)
    throw std::invalid_argument(std::string(what) + ": row length " + std::to_string(n) + " is not a multiple of 32");
}

}  // namespace

DType repacked_type(DType t) {
  if (t == DType::Q8_0) return DType::Q8_0R;
  if (t == DType::Q4_0) return DType::Q4_0R;
  return t;
}

DType file_type(DType t) {
  if (t == DType::Q8_0R) return DType::Q8_0;
  if (t == DType::Q4_0R) return DType::Q4_0;
  return t;
}

bool dtype_is_repacked(DType t) { return t == DType::Q8_0R || t == DType::Q4_0R; }

DType cpu_memory_type(DType t) { return active_isa() == CpuIsa::Avx512 ? repacked_type(t) : t; }

namespace {

void repack_row_with(DType from, uint8_t* row, int64_t nb, uint8_t* tmp) {
  const size_t qb = quant_bytes(from), bb = qb + 2, rb = static_cast<size_t>(nb) * bb;
  uint8_t* scales = tmp + static_cast<size_t>(nb) * qb;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = row + static_cast<size_t>(b) * bb;
    std::memcpy(scales + 2 * b, blk, 2);  // the fp16 scale leads each GGUF block
    std::memcpy(tmp + static_cast<size_t>(b) * qb, blk + 2, qb);
  }
  std::memcpy(row, tmp, rb);
}

}  // namespace

void repack_row(DType from, void* row, int64_t n) {
  check(from, false, n, "repack_row");
  std::vector<uint8_t> tmp(dtype_row_bytes(from, static_cast<size_t>(n)));
  repack_row_with(from, static_cast<uint8_t*>(row), n / 32, tmp.data());
}

void repack_rows(DType from, void* data, int64_t rows, int64_t n) {
  check(from, false, n, "repack_rows");
  const size_t rb = dtype_row_bytes(from, static_cast<size_t>(n));
#pragma omp parallel if (rows * n >= (1 << 20))
  {
    std::vector<uint8_t> tmp(rb);  // one row per thread
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      repack_row_with(from, static_cast<uint8_t*>(data) + static_cast<size_t>(r) * rb, n / 32, tmp.data());
  }
}

void unpack_row(DType repacked, const void* src, void* dst, int64_t n) {
  check(repacked, true, n, "unpack_row");
  const DType from = file_type(repacked);
  const int64_t nb = n / 32;
  const size_t qb = quant_bytes(from), bb = qb + 2;
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < nb; ++b) {
    std::memcpy(d + static_cast<size_t>(b) * bb, s + static_cast<size_t>(nb) * qb + 2 * b, 2);
    std::memcpy(d + static_cast<size_t>(b) * bb + 2, s + static_cast<size_t>(b) * qb, qb);
  }
}

}  // namespace jetmoe

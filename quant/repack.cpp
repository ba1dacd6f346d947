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
  if (n <= 0 || n % 32 != 0)
    throw std::invalid_argument(std::string(what) + ": row length " + std::to_string(n) +
                                " is not a positive multiple of 32");
}

// One group of 16 GGUF-layout rows (rb bytes each) rearranged into `tmp`, then copied back.
void repack_group(DType from, uint8_t* group, int64_t nb, size_t rb, uint8_t* tmp) {
  const size_t qb = quant_bytes(from), bb = qb + 2;
  for (int i = 0; i < kInterleaveRows; ++i) {
    const uint8_t* row = group + static_cast<size_t>(i) * rb;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = row + static_cast<size_t>(b) * bb;  // fp16 scale, then the quants
      const InterleavedBlock o = interleaved_block(qb, nb, b);
      for (size_t k = 0; k < qb / 4; ++k) std::memcpy(tmp + o.quants + 64 * k + 4 * static_cast<size_t>(i), blk + 2 + 4 * k, 4);
      std::memcpy(tmp + o.scales + 2 * static_cast<size_t>(i), blk, 2);
    }
  }
  std::memcpy(group, tmp, rb * kInterleaveRows);
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

DType cpu_memory_type(DType t, int64_t rows) {
  if (active_isa() != CpuIsa::Avx512 || rows <= 0 || rows % kInterleaveRows != 0) return t;
  return repacked_type(t);
}

void repack_rows(DType from, void* data, int64_t rows, int64_t n) {
  check(from, false, n, "repack_rows");
  if (rows < 0 || rows % kInterleaveRows != 0)
    throw std::invalid_argument("repack_rows: " + std::to_string(rows) + " rows is not a multiple of " +
                                std::to_string(kInterleaveRows));
  const size_t rb = dtype_row_bytes(from, static_cast<size_t>(n));
  const int64_t groups = rows / kInterleaveRows;
#pragma omp parallel if (rows * n >= (1 << 20))
  {
    std::vector<uint8_t> tmp(rb * kInterleaveRows);  // one group per thread
#pragma omp for schedule(static)
    for (int64_t g = 0; g < groups; ++g)
      repack_group(from, static_cast<uint8_t*>(data) + static_cast<size_t>(g) * kInterleaveRows * rb, n / 32, rb,
                   tmp.data());
  }
}

void unpack_row(DType repacked, const void* matrix, int64_t r, void* dst, int64_t n) {
  check(repacked, true, n, "unpack_row");
  if (r < 0) throw std::invalid_argument("unpack_row: negative row " + std::to_string(r));
  const DType from = file_type(repacked);
  const int64_t nb = n / 32;
  const size_t qb = quant_bytes(from), bb = qb + 2, rb = dtype_row_bytes(from, static_cast<size_t>(n));
  const auto* group = static_cast<const uint8_t*>(matrix) + static_cast<size_t>(r / kInterleaveRows) * kInterleaveRows * rb;
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* blk = d + static_cast<size_t>(b) * bb;
    const uint16_t scale = interleaved_row_block(group, qb, nb, b, static_cast<int>(r % kInterleaveRows), blk + 2);
    std::memcpy(blk, &scale, 2);
  }
}

}  // namespace jetmoe

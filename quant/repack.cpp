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
  const bool ok = want_repacked ? dtype_is_repacked(t) : repacked_type(t) != t;
  if (!ok)
    throw std::invalid_argument(std::string(what) + ": type " + dtype_name(t) + " has no repacked form here");
  const int64_t be = static_cast<int64_t>(dtype_block_elems(t));
  if (n <= 0 || n % be != 0)
    throw std::invalid_argument(std::string(what) + ": row length " + std::to_string(n) +
                                " is not a positive multiple of " + std::to_string(be));
}

// Q4_K: super-block b of the 16 rows to its Q4_KR place (quant/qtypes.h).
void repack_group_q4_k(uint8_t* group, int64_t nb, size_t rb, uint8_t* tmp) {
  for (int i = 0; i < kInterleaveRows; ++i) {
    const auto* row = reinterpret_cast<const BlockQ4_K*>(group + static_cast<size_t>(i) * rb);
    const size_t lane = 4 * static_cast<size_t>(i);
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* blk = tmp + kQ4KRBlockBytes * static_cast<size_t>(b);
      for (size_t c = 0; c < 4; ++c)
        for (size_t k = 0; k < 8; ++k) std::memcpy(blk + q4kr_quant_line(c, k) + lane, row[b].qs + 32 * c + 4 * k, 4);
      for (size_t r = 0; r < 3; ++r) std::memcpy(blk + kQ4KRScales + 64 * r + lane, row[b].scales + 4 * r, 4);
      std::memcpy(blk + kQ4KRd + 2 * static_cast<size_t>(i), &row[b].d, 2);
      std::memcpy(blk + kQ4KRdmin + 2 * static_cast<size_t>(i), &row[b].dmin, 2);
    }
  }
  std::memcpy(group, tmp, rb * kInterleaveRows);
}

// One group of 16 GGUF-layout rows (rb bytes each) rearranged into `tmp`, then copied back.
void repack_group(DType from, uint8_t* group, int64_t nb, size_t rb, uint8_t* tmp) {
  if (from == DType::Q4_K) return repack_group_q4_k(group, nb, rb, tmp);
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
  switch (t) {
    case DType::Q8_0: return DType::Q8_0R;
    case DType::Q4_0: return DType::Q4_0R;
    case DType::Q4_K: return DType::Q4_KR;
    default: return t;
  }
}

DType file_type(DType t) {
  switch (t) {
    case DType::Q8_0R: return DType::Q8_0;
    case DType::Q4_0R: return DType::Q4_0;
    case DType::Q4_KR: return DType::Q4_K;
    default: return t;
  }
}

bool dtype_is_repacked(DType t) { return file_type(t) != t; }

DType cpu_memory_type(DType t, int64_t rows) {
  const CpuIsa isa = active_isa();
  if ((isa != CpuIsa::Avx512 && isa != CpuIsa::Avx2) || rows <= 0 || rows % kInterleaveRows != 0) return t;
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
      repack_group(from, static_cast<uint8_t*>(data) + static_cast<size_t>(g) * kInterleaveRows * rb,
                   n / static_cast<int64_t>(dtype_block_elems(from)), rb, tmp.data());
  }
}

void unpack_row(DType repacked, const void* matrix, int64_t r, void* dst, int64_t n) {
  check(repacked, true, n, "unpack_row");
  if (r < 0) throw std::invalid_argument("unpack_row: negative row " + std::to_string(r));
  const DType from = file_type(repacked);
  const size_t rb = dtype_row_bytes(from, static_cast<size_t>(n));
  const auto* group = static_cast<const uint8_t*>(matrix) + static_cast<size_t>(r / kInterleaveRows) * kInterleaveRows * rb;
  if (from == DType::Q4_K) {
    auto* out = static_cast<BlockQ4_K*>(dst);
    for (int64_t b = 0; b < n / kQK_K; ++b) q4kr_row_block(group, b, static_cast<int>(r % kInterleaveRows), out + b);
    return;
  }
  const int64_t nb = n / 32;
  const size_t qb = quant_bytes(from), bb = qb + 2;
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < nb; ++b) {
    uint8_t* blk = d + static_cast<size_t>(b) * bb;
    const uint16_t scale = interleaved_row_block(group, qb, nb, b, static_cast<int>(r % kInterleaveRows), blk + 2);
    std::memcpy(blk, &scale, 2);
  }
}

}  // namespace jetmoe

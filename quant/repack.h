// The CPU's repacked in-memory forms of Q8_0 / Q4_0 / Q4_K weights (DType::Q8_0R / Q4_0R / Q4_KR:
// 16 rows interleaved, layouts in quant/qtypes.h): conversion both ways, and which form the running CPU
// prefers.
//
// Files always hold the standard GGUF blocks; weights the runtime owns in memory (quantized at
// load, read with --no-mmap, synthetic) are repacked once, in place, when the active kernels are
// the AVX-512 or AVX2 ones (both have kernels for the interleaved layouts; the scalar ones read
// them too, but slower than the GGUF blocks) and the matrix has a multiple of 16 rows. mmapped weights stay as they are in
// the file (repacking would copy them).
#pragma once

#include <cstdint>

#include "runtime/dtype.h"

namespace jetmoe {

// Q8_0 -> Q8_0R, Q4_0 -> Q4_0R, Q4_K -> Q4_KR; any other type is returned unchanged.
DType repacked_type(DType t);
// The inverse: Q8_0R -> Q8_0, Q4_0R -> Q4_0, Q4_KR -> Q4_K; others unchanged.
DType file_type(DType t);
bool dtype_is_repacked(DType t);

// The type the CPU kernels want for a matrix of type t with `rows` rows (per matrix: an expert
// tensor [E, out, in] has `out`) held in owned memory: repacked_type(t) when the active ISA is
// AVX-512 or AVX2 and rows is a multiple of 16, t otherwise.
DType cpu_memory_type(DType t, int64_t rows);

// Rearranges `rows` rows of n elements of type `from` (Q8_0, Q4_0, Q4_K) into repacked_type(from),
// in place; rows must be a multiple of 16. The 16-row groups keep their place, so any range of
// whole groups (a matrix, an expert) stays where it was.
void repack_rows(DType from, void* data, int64_t rows, int64_t n);

// Row r of a repacked matrix (at `matrix`, rows of n elements) back to its file type's blocks,
// into dst (dtype_row_bytes bytes).
void unpack_row(DType repacked, const void* matrix, int64_t r, void* dst, int64_t n);

}  // namespace jetmoe

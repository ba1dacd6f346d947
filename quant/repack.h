// The CPU's repacked in-memory forms of Q8_0 / Q4_0 weights (DType::Q8_0R / Q4_0R, layout in
// runtime/dtype.h): conversion both ways, and which form the running CPU prefers.
//
// Files always hold the standard GGUF blocks; weights the runtime owns in memory (quantized at
// load, read with --no-mmap, synthetic) are repacked once, in place, when the active kernels are
// the AVX-512 ones, which stream the split layout with aligned loads and no byte shuffles.
// mmapped weights stay as they are in the file (repacking would copy them).
#pragma once

#include <cstdint>

#include "runtime/dtype.h"

namespace jetmoe {

// Q8_0 -> Q8_0R, Q4_0 -> Q4_0R; any other type is returned unchanged.
DType repacked_type(DType t);
// The inverse: Q8_0R -> Q8_0, Q4_0R -> Q4_0; others unchanged.
DType file_type(DType t);
bool dtype_is_repacked(DType t);

// The type the CPU kernels want for weights of type t held in owned memory: repacked_type(t) when
// the active ISA is AVX-512, t otherwise.
DType cpu_memory_type(DType t);

// Rearranges `rows` rows of n elements of type `from` (Q8_0 or Q4_0) into repacked_type(from),
// in place. Rows keep their size, so any row range stays where it was.
void repack_rows(DType from, void* data, int64_t rows, int64_t n);

// The same for one row (serial).
void repack_row(DType from, void* row, int64_t n);

// One row of a repacked type back to its file type (block layout), into dst.
void unpack_row(DType repacked, const void* src, void* dst, int64_t n);

}  // namespace jetmoe

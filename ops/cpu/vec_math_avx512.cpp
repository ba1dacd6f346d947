// AVX-512 kernels of ops/cpu/vec_math.h (compiled with those flags; called only when the CPU has them).
#include "ops/cpu/simd_avx512.h"
#include "ops/cpu/vec_math_simd.h"

namespace jetmoe {

const VecMathKernels& vec_math_kernels_avx512() { return vec_math_table<Avx512>(); }

}  // namespace jetmoe

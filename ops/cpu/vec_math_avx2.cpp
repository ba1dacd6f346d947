// AVX2 + FMA kernels of ops/cpu/vec_math.h (compiled with those flags; called only when the CPU has them).
#include "ops/cpu/simd_avx2.h"
#include "ops/cpu/vec_math_simd.h"

namespace jetmoe {

const VecMathKernels& vec_math_kernels_avx2() { return vec_math_table<Avx2>(); }

}  // namespace jetmoe

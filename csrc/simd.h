// Which kernels are compiled: AVX2 + FMA + F16C intrinsics when the compiler
// targets them (setup.py passes -march=native unless GPTFAST_PORTABLE=1),
// plain C++ loops otherwise.  Both give the same results up to float rounding.
#pragma once

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define GPTFAST_SIMD 1
#include <immintrin.h>
#else
#define GPTFAST_SIMD 0
#endif

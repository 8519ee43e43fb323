// Which kernels are compiled: AVX2 + FMA + F16C intrinsics when the compiler
// targets them (setup.py passes -march=native unless GPTFAST_PORTABLE=1),
// plain C++ loops otherwise.  Both give the same results up to float rounding.
// With AVX-512F as well, the decoding engine's linear layers use 16-lane
// kernels (bit for bit the AVX2 results: see matvec.h).
#pragma once

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define GPTFAST_SIMD 1
#include <immintrin.h>
#else
#define GPTFAST_SIMD 0
#endif

#if GPTFAST_SIMD && defined(__AVX512F__)
#define GPTFAST_AVX512 1
#else
#define GPTFAST_AVX512 0
#endif

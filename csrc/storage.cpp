#include "storage.h"

#include <cstring>

namespace gptfast {

const char* weight_type_name(WeightType t) {
  switch (t) {
    case WeightType::F32: return "float32";
    case WeightType::F16: return "float16";
    case WeightType::BF16: return "bfloat16";
  }
  return "?";
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (x < 0x38800000u) {
    // Below 2^-14 the result is subnormal, a multiple of 2^-24: adding 0.5
    // (whose float ulp is 2^-24) rounds |f| to one, ties to even, and the
    // low bits of the sum count the multiples.
    float magnitude;
    std::memcpy(&magnitude, &x, 4);
    const float sum = magnitude + 0.5f;
    uint32_t bits;
    std::memcpy(&bits, &sum, 4);
    return sign | static_cast<uint16_t>(bits - 0x3f000000u);
  }
  x += 0xfffu + ((x >> 13) & 1u);  // round the 13 dropped mantissa bits, ties to even
  const uint32_t h = (x - (112u << 23)) >> 13;  // rebias 127 -> 15 (a carry may bump the exponent)
  return sign | static_cast<uint16_t>(h >= 0x7c00u ? 0x7c00u : h);  // too large: infinity
}

void store_floats(WeightType type, const float* src, void* dst, int n) {
  switch (type) {
    case WeightType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case WeightType::F16: {
      uint16_t* out = static_cast<uint16_t*>(dst);
      int i = 0;
#if GPTFAST_SIMD
      for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
      for (; i < n; ++i) out[i] = float_to_half(src[i]);
      return;
    }
    case WeightType::BF16: {
      uint16_t* out = static_cast<uint16_t*>(dst);
      for (int i = 0; i < n; ++i) out[i] = float_to_bf16(src[i]);
      return;
    }
  }
}

void load_floats(WeightType type, const void* src, float* dst, int n) {
  with_storage_type(type, [&](auto t) {
    constexpr WeightType T = decltype(t)::value;
    const Elem<T>* in = static_cast<const Elem<T>*>(src);
    int i = 0;
#if GPTFAST_SIMD
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8<T>(in + i));
#endif
    for (; i < n; ++i) dst[i] = to_float<T>(in[i]);
  });
}

}  // namespace gptfast

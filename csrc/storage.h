// The number formats the decoding engine stores its weights and its KV cache
// in: float32, or float16 / bfloat16 words that are widened to float32 for
// the arithmetic.  16-bit storage halves the bytes a decoding step reads,
// which is what bounds its speed.
//
// Rounding to 16 bits is round-to-nearest-even, as torch's .half() and
// .bfloat16() do, so the engine's 16-bit values are the ones PyTorch makes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "simd.h"

namespace gptfast {

enum class WeightType { F32, F16, BF16 };

const char* weight_type_name(WeightType t);
inline size_t weight_type_bytes(WeightType t) { return t == WeightType::F32 ? 4 : 2; }

// The element that stores a value of type T: float, or the 16 bits of a float16 / bfloat16.
template <WeightType T>
using Elem = std::conditional_t<T == WeightType::F32, float, uint16_t>;

uint16_t float_to_half(float f);

// float16 -> float32, exact, the same bits as F16C's vcvtph2ps for all 65536
// inputs.  Inline and without branches, so the portable kernels widen a panel
// column in a few vector instructions instead of a call per weight (float16
// weights decoded 30x slower than float32 through the out-of-line version).
// AArch64 converts in hardware (__fp16).
inline float half_to_float(uint16_t h) {
#if defined(__aarch64__)
  __fp16 v;
  __builtin_memcpy(&v, &h, 2);
  return static_cast<float>(v);
#else
  auto as_float = [](uint32_t bits) {
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
  };
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = static_cast<uint32_t>(h & 0x7fffu) << 13;  // exponent and mantissa at float32's places
  const uint32_t exponent = em & 0x0f800000u;
  const uint32_t normal = em + (112u << 23);                    // rebias 15 -> 127
  // Exponent 31 -> 255; a NaN comes back quiet, as F16C and AArch64 return it.
  const uint32_t inf_nan = em | 0x7f800000u | (static_cast<uint32_t>((em & 0x007fe000u) != 0) << 22);
  // Zero and subnormals, mantissa * 2^-24: 2^-14 * (1 + m/1024) - 2^-14, exact.
  const float small = as_float(em + (113u << 23)) - as_float(113u << 23);
  uint32_t small_bits;
  __builtin_memcpy(&small_bits, &small, 4);
  // Selects by masks, not branches, so that loops over weights vectorize.
  const uint32_t is_inf_nan = 0u - static_cast<uint32_t>(exponent == 0x0f800000u);
  const uint32_t is_small = 0u - static_cast<uint32_t>(exponent == 0u);
  const uint32_t bits = (inf_nan & is_inf_nan) | (small_bits & is_small) | (normal & ~(is_inf_nan | is_small));
  return as_float(sign | bits);
#endif
}

inline float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  __builtin_memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // NaN stays NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>(bits >> 16);
}

template <WeightType T>
inline float to_float(Elem<T> v) {
  if constexpr (T == WeightType::F32) return v;
  if constexpr (T == WeightType::F16) return half_to_float(v);
  if constexpr (T == WeightType::BF16) return bf16_to_float(v);
}

// f(std::integral_constant<WeightType, type>{}): runs the instance of a
// template over the storage types that `type` names at run time.
template <class F>
decltype(auto) with_storage_type(WeightType type, F&& f) {
  switch (type) {
    case WeightType::F16: return f(std::integral_constant<WeightType, WeightType::F16>{});
    case WeightType::BF16: return f(std::integral_constant<WeightType, WeightType::BF16>{});
    case WeightType::F32: break;
  }
  return f(std::integral_constant<WeightType, WeightType::F32>{});
}

// dst[i] = src[i] rounded to `type`, for i < n (dst holds elements of `type`).
void store_floats(WeightType type, const float* src, void* dst, int n);

// dst[i] = src[i] widened to float32, for i < n (src holds elements of
// `type`): by the kernels' vector loads in runs of 8 and by to_float in the
// tail, the two ways the engine reads 16-bit weights and cache.
void load_floats(WeightType type, const void* src, float* dst, int n);

#if GPTFAST_SIMD
// 8 consecutive stored values as float32 lanes.
template <WeightType T>
inline __m256 load8(const Elem<T>* p) {
  if constexpr (T == WeightType::F32) {
    return _mm256_loadu_ps(p);
  } else if constexpr (T == WeightType::F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {  // bfloat16 is the top half of a float32: widen and shift
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}
#endif

}  // namespace gptfast

// Attention of one query over the cached keys and values of its head.
#pragma once

#include "storage.h"

namespace gptfast {

// out (hs) = softmax(scale * q K^T) V over the T cached positions, K and V
// (T, hs) row-major, stored as `kv` (float32, or 16-bit words widened as they
// are read); `scratch` holds T floats.  The result for a position does not
// depend on anything but q and the T rows, so a prefill row equals the
// incremental step at that position, bit for bit.
void attend(WeightType kv, const float* q, const void* K, const void* V, int T, int hs, float scale, float* scratch,
            float* out);

// The same, bit for bit, with positions 0..P-1 read from (shared_K,
// shared_V) and P..T-1 from (K, V), both indexed by position: the sequences
// sampled from one prompt read its keys and values from one place, so a
// batch step reads the prompt's cache once, not once per sequence.
void attend_shared(WeightType kv, const float* q, const void* shared_K, const void* shared_V, int P, const void* K,
                   const void* V, int T, int hs, float scale, float* scratch, float* out);

}  // namespace gptfast

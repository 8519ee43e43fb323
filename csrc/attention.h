// Attention of one query over the cached keys and values of its head.
#pragma once

#include "storage.h"

namespace gptfast {

// The keys and values one query attends over: positions 0..T-1, those
// below `shared` read from (shared_K, shared_V) and the others from (K, V),
// each (>= T, hs) row-major, indexed by position, stored as `type` (float32,
// or 16-bit words widened as they are read).  Sequences sampled from one
// prompt read its keys and values from one place, so a batch step reads the
// prompt's cache once, not once per sequence.  `cold`: the rows come from
// memory (a decoding step), so they are prefetched ahead of use; a prefill
// reads what it has just written, from the cache, and skips that cost.
struct CachedKV {
  WeightType type;
  const void *K, *V;
  int T;
  const void *shared_K = nullptr, *shared_V = nullptr;
  int shared = 0;
  bool cold = true;
};

// out (hs) = softmax(scale * q K^T) V over the T cached positions;
// `scratch` holds T floats.  The result for a position does not depend on
// anything but q and the T rows - not on where they are read from, not on
// `cold` - so a prefill row equals the incremental step at that position,
// bit for bit.
void attend(const CachedKV& kv, const float* q, int hs, float scale, float* scratch, float* out);

}  // namespace gptfast

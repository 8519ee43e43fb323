// Attention of one query over the cached keys and values of its head.
#pragma once

namespace gptfast {

// out (hs) = softmax(scale * q K^T) V over the T cached positions, K and V
// (T, hs) row-major; `scratch` holds T floats.  The result for a position
// does not depend on anything but q and the T rows, so a prefill row equals
// the incremental step at that position, bit for bit.
void attend(const float* q, const float* K, const float* V, int T, int hs, float scale, float* scratch, float* out);

}  // namespace gptfast

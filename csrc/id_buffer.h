// Memory for token ids that numpy adopts without a copy.
//
// Scanning runs at hundreds of MB/s, which makes the page faults of fresh
// output memory a large share of encoding time (especially in VMs), so
// large blocks are on transparent huge pages (huge_pages.h).
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <new>

#include "huge_pages.h"

namespace gptfast {

inline void* allocate_ids(size_t bytes) {
  if (bytes < 2 * kHugePage) {
    void* p = std::malloc(bytes ? bytes : 1);
    if (!p) throw std::bad_alloc();
    return p;
  }
  return allocate_huge_aligned(bytes);
}

inline void free_ids(void* p) { std::free(p); }

// Give back the physical pages of [used, capacity) of a block from
// allocate_ids, after the ids were compacted to its start.
inline void release_tail(void* p, size_t used, size_t capacity) {
  if (capacity < 2 * kHugePage) return;
  const size_t from = (used + kHugePage - 1) / kHugePage * kHugePage;
  if (from < capacity) madvise(static_cast<char*>(p) + from, capacity - from, MADV_DONTNEED);
}

}  // namespace gptfast

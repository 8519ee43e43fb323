// Memory for token ids that numpy adopts without a copy.
//
// Scanning runs at hundreds of MB/s, which makes the page faults of fresh
// output memory a large share of encoding time (especially in VMs), so
// large blocks are 2 MiB aligned and ask the kernel for transparent huge
// pages: one fault per 2 MiB instead of per 4 KiB.
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <new>

namespace gptfast {

constexpr size_t kHugePage = size_t{2} << 20;

inline void* allocate_ids(size_t bytes) {
  if (bytes < 2 * kHugePage) {
    void* p = std::malloc(bytes ? bytes : 1);
    if (!p) throw std::bad_alloc();
    return p;
  }
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, rounded);
  if (!p) throw std::bad_alloc();
  madvise(p, rounded, MADV_HUGEPAGE);  // a hint: failure only costs speed
  return p;
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

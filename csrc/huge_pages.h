// Large buffers on transparent huge pages.
//
// A decoding step streams every weight (43 MB for the quijote preset) and,
// at batch 8, a KV cache as large: on 4 KiB pages that is ~20,000 pages a
// step, far more than the TLB maps, and the hardware prefetchers stop at
// every page boundary.  On 2 MiB pages it is ~40.  Fresh memory that is
// filled at hundreds of MB/s (token ids) also takes one page fault per
// 2 MiB instead of per 4 KiB.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace gptfast {

constexpr size_t kHugePage = size_t{2} << 20;

// `bytes` of uninitialized memory, aligned to a huge page and rounded up to
// whole ones, which the kernel is asked to back with transparent huge pages
// (a hint: where they are off, it costs only the rounding of virtual
// memory).  Free it with std::free.
inline void* allocate_huge_aligned(size_t bytes) {
  const size_t rounded = bytes ? (bytes + kHugePage - 1) / kHugePage * kHugePage : kHugePage;
  void* p = std::aligned_alloc(kHugePage, rounded);
  if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  madvise(p, rounded, MADV_HUGEPAGE);
#endif
  return p;
}

struct FreeMemory {
  void operator()(void* p) const { std::free(p); }
};

// A block from allocate_huge_aligned that frees itself.
using HugeBuffer = std::unique_ptr<uint8_t[], FreeMemory>;

inline HugeBuffer allocate_huge_buffer(size_t bytes) {
  return HugeBuffer(static_cast<uint8_t*>(allocate_huge_aligned(bytes)));
}

}  // namespace gptfast

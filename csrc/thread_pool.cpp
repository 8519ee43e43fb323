#include "thread_pool.h"

#include <chrono>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define GPTFAST_PAUSE() _mm_pause()
#else
#define GPTFAST_PAUSE() std::this_thread::yield()
#endif

namespace gptfast {

namespace {
// How long an idle helper spins before sleeping: long enough to bridge the
// gap between two sections of a token (and the sampling between tokens),
// short enough not to burn a shared machine's cores while Python prints.
constexpr auto kSpinFor = std::chrono::microseconds(300);
}  // namespace

ThreadPool::ThreadPool(int threads) : threads_(threads < 1 ? 1 : threads) {
  try {
    for (int w = 1; w < threads_; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
  } catch (...) {  // the system refused a thread (std::system_error): join those started, then report it
    stop_workers();
    throw;
  }
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
  stop_.store(true);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::take_chunks(int worker) {
  for (;;) {
    const int begin = next_.fetch_add(grain_, std::memory_order_relaxed);
    if (begin >= n_) return;
    (*fn_)(begin, begin + grain_ < n_ ? begin + grain_ : n_, worker);
  }
}

void ThreadPool::parallel_for(int n, int grain, const std::function<void(int, int, int)>& fn) {
  if (grain < 1) grain = 1;
  if (threads_ == 1 || n <= grain) {
    for (int b = 0; b < n; b += grain) fn(b, b + grain < n ? b + grain : n, 0);
    return;
  }
  fn_ = &fn;
  n_ = n;
  grain_ = grain;
  next_.store(0, std::memory_order_relaxed);
  state_.store(kOpen, std::memory_order_release);  // publishes the fields above to joiners
  generation_.fetch_add(1, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mutex_);  // orders the notify after a sleeper's check
    wake_.notify_all();
  }
  take_chunks(0);
  // Every chunk is claimed; close the job and wait for helpers still inside it.
  state_.fetch_and(~kOpen, std::memory_order_acq_rel);
  for (unsigned spins = 0; state_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < 2048) {
      GPTFAST_PAUSE();
    } else {
      std::this_thread::yield();  // a helper was descheduled mid-chunk: let it finish
    }
  }
}

void ThreadPool::worker_loop(int worker) {
  uint64_t seen = generation_.load();
  for (;;) {
    const auto deadline = std::chrono::steady_clock::now() + kSpinFor;
    unsigned spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && !stop_.load(std::memory_order_relaxed)) {
      // A few hundred pauses for the gap between two sections of a token,
      // then polite spinning: yield() lets any runnable thread of this CPU
      // (another process, or our own caller) go first on a busy machine.
      if (++spins < 256) {
        GPTFAST_PAUSE();
      } else {
        std::this_thread::yield();
      }
      if ((spins & 15) == 0 && std::chrono::steady_clock::now() > deadline) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_seq_cst) != seen || stop_.load(); });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
    }
    if (stop_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    // Join the job if it is still open (it may already be done).
    int s = state_.load(std::memory_order_acquire);
    while ((s & kOpen) && !state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
    }
    if (s & kOpen) {
      take_chunks(worker);
      state_.fetch_sub(1, std::memory_order_release);
    }
  }
}

}  // namespace gptfast

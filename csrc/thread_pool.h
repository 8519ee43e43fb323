// A small persistent thread pool for the decoding engine.
//
// Decoding one token runs ~5 parallel sections per layer, each only tens of
// microseconds long, so (1) threads are started once and spin briefly between
// sections instead of sleeping, and (2) work is handed out in small chunks
// from a shared counter, with the calling thread taking chunks too.  The
// second point matters on a shared machine: when a helper thread is
// descheduled the caller simply does its chunks, instead of waiting for a
// fixed share that the helper would own under a static split.  Which thread
// computes a chunk never changes the result (see matvec.h).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace gptfast {

class ThreadPool {
 public:
  // `threads` in all, the caller included (1 = run everything inline).  Throws
  // std::system_error when the system will not start that many threads.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return threads_; }

  // Calls fn(begin, end, worker) over chunks [begin, end) of [0, n), each at
  // most `grain` long and starting at a multiple of `grain`, on the caller and
  // any helpers that join in time; returns when all chunks are done.
  // `worker` (0..size()-1) identifies the thread, for per-thread scratch.
  // fn must not throw.  One call at a time.
  void parallel_for(int n, int grain, const std::function<void(int begin, int end, int worker)>& fn);

 private:
  void worker_loop(int worker);
  void stop_workers();
  void take_chunks(int worker);

  int threads_;
  std::vector<std::thread> workers_;

  // The current job.  Written by the caller before `state_` opens it.
  const std::function<void(int, int, int)>* fn_ = nullptr;
  int n_ = 0, grain_ = 1;
  std::atomic<int> next_{0};  // first unclaimed item

  // kOpen bit: helpers may join; low bits: helpers inside the job.
  static constexpr int kOpen = 1 << 30;
  std::atomic<int> state_{0};

  std::atomic<uint64_t> generation_{0};  // bumped per job to wake helpers
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
};

}  // namespace gptfast

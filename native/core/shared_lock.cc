#include "shared_lock.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

#include "clock.h"
#include "cpu_relax.h"
#include "fault_points.h"

namespace shmch {

namespace {

constexpr int kSpins = 200;
// How long a waiter sleeps before it checks whether the owner is still alive. Short enough that a
// dead owner is noticed well within a second, long enough that probes cost nothing in practice.
constexpr uint64_t kProbeIntervalNs = 20'000'000;

void FutexWait(std::atomic<uint32_t>& word, uint32_t expected, uint64_t timeout_ns) {
  struct timespec ts = {static_cast<time_t>(timeout_ns / 1'000'000'000),
                        static_cast<long>(timeout_ns % 1'000'000'000)};
  // Not FUTEX_PRIVATE_FLAG: the word is shared between processes.
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void FutexWakeOne(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

}  // namespace

LockResult SharedLockOps::Lock(SharedLock& lock, uint32_t mine, const LivenessProbe& is_alive,
                               uint64_t max_wait_ns) {
  std::atomic<uint32_t>& word = lock.word;
  for (int i = 0; i < kSpins; ++i) {
    uint32_t expected = 0;
    if (word.load(std::memory_order_relaxed) == 0 &&
        word.compare_exchange_weak(expected, mine, std::memory_order_acquire,
                                   std::memory_order_relaxed)) {
      return LockResult::kAcquired;
    }
    CpuRelax();
  }
  const uint64_t start = MonotonicNs();
  // Once we have slept, others may sleep too: we take the lock marked contended, so that our
  // unlock wakes the next one (the three-state futex). A waiter killed in its sleep leaves at
  // most that one spurious wake behind, never a count that makes every unlock a syscall.
  uint32_t contended = 0;
  for (;;) {
    uint32_t current = word.load(std::memory_order_acquire);
    if (current == 0) {
      if (word.compare_exchange_strong(current, mine | contended, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        return LockResult::kAcquired;
      }
      continue;
    }
    if (LockHolderSlot(current) == LockHolderSlot(mine)) {
      // The word names our slot. We hold the slot's OFD lock, so the incarnation named there is
      // gone: an earlier owner of the slot died inside the critical section. Taken with a CAS
      // like any takeover, so a waiter that decided on the same dead holder cannot also win.
      ReachedTestStep(kLockStepSawOwnSlot);
      if (word.compare_exchange_strong(current, mine | (current & kLockContended),
                                       std::memory_order_acquire, std::memory_order_relaxed)) {
        lock.recoveries.fetch_add(1, std::memory_order_relaxed);
        return LockResult::kOwnerDied;
      }
      continue;
    }
    if (!(current & kLockContended)) {
      // Announce a sleeper in the word itself before sleeping on it.
      if (!word.compare_exchange_strong(current, current | kLockContended,
                                        std::memory_order_relaxed, std::memory_order_relaxed)) {
        continue;
      }
      current |= kLockContended;
    }
    uint64_t waited = MonotonicNs() - start;
    if (waited >= max_wait_ns) return LockResult::kBusy;
    uint64_t left = max_wait_ns - waited;
    FutexWait(word, current, left < kProbeIntervalNs ? left : kProbeIntervalNs);
    contended = kLockContended;
    if (word.load(std::memory_order_acquire) != current) continue;
    ReachedTestStep(kLockStepBeforeProbe);
    if (!is_alive(LockHolderSlot(current))) {
      ReachedTestStep(kLockStepProbedDead);
      // From exactly the word we probed: if the slot was claimed again meanwhile, the word now
      // carries the new incarnation and this fails.
      if (word.compare_exchange_strong(current, mine | kLockContended, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        lock.recoveries.fetch_add(1, std::memory_order_relaxed);
        return LockResult::kOwnerDied;
      }
    }
  }
}

bool SharedLockOps::Unlock(SharedLock& lock, uint32_t mine) {
  std::atomic<uint32_t>& word = lock.word;
  uint32_t current = word.load(std::memory_order_relaxed);
  do {
    if ((current & ~kLockContended) != mine) return false;
  } while (!word.compare_exchange_weak(current, 0, std::memory_order_release,
                                       std::memory_order_relaxed));
  // The contended bit is read by the same atomic read-modify-write that frees the word, so a
  // waiter that set it before we freed the word is always seen (no store-then-load race).
  if (current & kLockContended) FutexWakeOne(word);
  return true;
}

}  // namespace shmch

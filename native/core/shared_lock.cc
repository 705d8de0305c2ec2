#include "shared_lock.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

#include "cpu_relax.h"

namespace shmch {

namespace {

constexpr int kSpins = 200;
// How long a waiter sleeps before it checks whether the owner is still alive. Short enough that a
// dead owner is noticed well within a second, long enough that probes cost nothing in practice.
constexpr long kProbeIntervalNs = 20'000'000;

void FutexWait(std::atomic<uint32_t>& word, uint32_t expected, long timeout_ns) {
  struct timespec ts = {0, timeout_ns};
  // Not FUTEX_PRIVATE_FLAG: the word is shared between processes.
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void FutexWakeOne(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

}  // namespace

LockResult SharedLockOps::Lock(SharedLock& lock, uint32_t me, const LivenessProbe& is_alive) {
  const uint32_t mine = me + 1;
  for (int i = 0; i < kSpins; ++i) {
    uint32_t expected = 0;
    if (lock.owner.load(std::memory_order_relaxed) == 0 &&
        lock.owner.compare_exchange_weak(expected, mine, std::memory_order_acquire)) {
      return LockResult::kAcquired;
    }
    CpuRelax();
  }
  for (;;) {
    uint32_t current = lock.owner.load(std::memory_order_acquire);
    if (current == 0) {
      if (lock.owner.compare_exchange_strong(current, mine, std::memory_order_acquire)) {
        return LockResult::kAcquired;
      }
      continue;
    }
    if (current == mine) {
      // Our slot "holds" it: its previous owner died inside the critical section and we have
      // since claimed that slot. Nobody else can take it over now, so it is ours to recover.
      lock.recoveries.fetch_add(1, std::memory_order_relaxed);
      return LockResult::kOwnerDied;
    }
    lock.waiters.fetch_add(1, std::memory_order_acq_rel);
    FutexWait(lock.owner, current, kProbeIntervalNs);
    lock.waiters.fetch_sub(1, std::memory_order_acq_rel);
    if (lock.owner.load(std::memory_order_acquire) != current) continue;
    if (!is_alive(current - 1)) {
      if (lock.owner.compare_exchange_strong(current, mine, std::memory_order_acquire)) {
        lock.recoveries.fetch_add(1, std::memory_order_relaxed);
        return LockResult::kOwnerDied;
      }
    }
  }
}

void SharedLockOps::Unlock(SharedLock& lock, uint32_t me) {
  uint32_t mine = me + 1;
  lock.owner.compare_exchange_strong(mine, 0, std::memory_order_release);
  if (lock.waiters.load(std::memory_order_acquire) != 0) FutexWakeOne(lock.owner);
}

}  // namespace shmch

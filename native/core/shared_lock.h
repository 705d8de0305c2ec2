// Mutual exclusion across processes that survives the holder's death. One futex word names the
// holder: its slot and its slot's incarnation (the claim generation), plus a "contended" bit.
// Waiters sleep with a timeout and take the lock over once the holder's slot is dead, by a CAS
// from exactly the word they saw: a slot claimed again since then carries another incarnation, so
// a takeover decided on a stale observation fails instead of robbing a live newcomer.
// Never a semaphore: a semaphore cannot tell that its holder died.
#pragma once

#include <cstdint>
#include <functional>

#include "layout.h"

namespace shmch {

enum class LockResult {
  kAcquired,
  kOwnerDied,  // acquired from a dead owner: derived state must be rebuilt before use
  kBusy,       // a live holder kept it past the caller's wait bound; nothing was changed
};

// The lock word: 0 when free, else (slot + 1) | contended | incarnation << kLockTagShift.
constexpr uint32_t kLockSlotMask = 0x1ff;  // slot + 1, 1..kMaxSlots
constexpr uint32_t kLockContended = 1u << 9;  // a waiter may sleep on the word: unlock must wake
constexpr uint32_t kLockTagShift = 10;
constexpr uint32_t kLockTagMask = (1u << (32 - kLockTagShift)) - 1;
static_assert(kMaxSlots <= kLockSlotMask, "slot + 1 must fit the lock word's slot bits");

// The word a slot's incarnation writes when it holds the lock (contended bit clear).
constexpr uint32_t LockWordOf(uint32_t slot, uint32_t incarnation) {
  return (slot + 1) | ((incarnation & kLockTagMask) << kLockTagShift);
}
// The holder's slot, or kNil when the word is free.
constexpr uint32_t LockHolderSlot(uint32_t word) {
  return (word & kLockSlotMask) == 0 ? kNil : (word & kLockSlotMask) - 1;
}

// Test-only: steps of Lock() where core_tests inject delays (fault_points.h, g_test_hook).
enum LockTestStep : int {
  kLockStepBeforeProbe = 1000,  // a waiter woke to an unchanged word, before probing its holder
  kLockStepProbedDead = 1001,  // a waiter found the holder's slot dead, before its takeover CAS
  kLockStepSawOwnSlot = 1002,  // the word names the caller's slot, before the CAS that takes it
  kLockStepHeld = 1003,  // Layer::LockSegment: acquired and timed, nothing done under it yet
};

class SharedLockOps {
 public:
  using LivenessProbe = std::function<bool(uint32_t slot)>;

  // `mine` is LockWordOf(caller's slot, its incarnation). `is_alive` tells whether a slot's owner
  // still lives. Waits at most `max_wait_ns` for a live holder (kBusy after that).
  static LockResult Lock(SharedLock& lock, uint32_t mine, const LivenessProbe& is_alive,
                         uint64_t max_wait_ns);
  // False if the word no longer names `mine` (the lock was taken from us: a broken invariant);
  // then the word is left alone.
  static bool Unlock(SharedLock& lock, uint32_t mine);
};

}  // namespace shmch

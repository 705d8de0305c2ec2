// Mutual exclusion across processes that survives the holder's death. A futex word holds the
// owner's slot; waiters sleep with a timeout and take the lock over once the owner's slot is dead.
// Never a semaphore: a semaphore cannot tell that its holder died.
#pragma once

#include <cstdint>
#include <functional>

#include "layout.h"

namespace shmch {

enum class LockResult {
  kAcquired,
  kOwnerDied,  // acquired from a dead owner: derived state must be rebuilt before use
};

class SharedLockOps {
 public:
  using LivenessProbe = std::function<bool(uint32_t slot)>;

  // `me` is the caller's slot. `is_alive` tells whether a slot's owner still lives.
  static LockResult Lock(SharedLock& lock, uint32_t me, const LivenessProbe& is_alive);
  static void Unlock(SharedLock& lock, uint32_t me);
};

}  // namespace shmch

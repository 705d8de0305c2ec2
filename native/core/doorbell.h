// Per-slot doorbells: one named POSIX semaphore per attached layer instance. A doorbell only wakes
// a sleeping waiter thread; it never guards data. `Slot::bell` coalesces rings, so a burst of sends
// costs the receiver one wake, and `Slot::sleeping` lets senders skip the syscall while the waiter
// is awake or spinning.
#pragma once

#include <semaphore.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "layout.h"

namespace shmch {

class Doorbells {
 public:
  // `allow_foreign`: accept an existing doorbell of another user or with a looser mode.
  Doorbells(std::string layer_name, uint32_t mode, bool allow_foreign);
  ~Doorbells();
  Doorbells(const Doorbells&) = delete;
  Doorbells& operator=(const Doorbells&) = delete;

  static std::string SemaphoreName(const std::string& layer_name, uint32_t slot);
  static void UnlinkAll(const std::string& layer_name);

  // Sender side: marks the slot's bell and posts its semaphore if its waiter sleeps.
  void Ring(Slot& slot, uint32_t index);

  // Waiter side, on its own thread. Spins up to `spin_ns` watching the bell, then sleeps.
  // Returns false when woken by Interrupt() with no ring pending.
  bool Wait(Slot& slot, uint32_t index, uint64_t spin_ns, const std::atomic<bool>& stop);
  void Interrupt(uint32_t index);
  // Opens (creating if needed) a slot's semaphore; done for our own slot at attach, so a failure
  // is reported by the constructor rather than lost on the waiter thread.
  sem_t* Open(uint32_t index);

 private:
  std::string layer_name_;
  uint32_t mode_;
  bool allow_foreign_;
  std::atomic<sem_t*> sems_[kMaxSlots];
};

}  // namespace shmch

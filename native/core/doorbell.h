// Per-slot doorbells: one named FIFO per attached layer instance, beside the segment in /dev/shm.
// A doorbell only wakes a sleeping receiver; it never guards data.
//
// The receiver's own event loop polls the FIFO's read end (no waiter thread): a ring is one byte
// written by the sender and one epoll wake-up of the receiver. Two words of the receiver's Slot
// keep that syscall rare: `bell` coalesces rings (only the first ring since the receiver last
// looked does anything) and `sleeping` ("armed") says the receiver stopped polling `bell` from
// shared memory and waits on the FIFO, so only then is the byte written.
//
// Ringing never throws and never blocks: a ring that cannot be delivered (no reader, descriptor
// limit, a refused file) is counted and costs only latency, because every waiting receiver looks
// again on its housekeeping tick.
#pragma once

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

  // /dev/shm/shmch-bell.<uid>.<layer>.<slot>: a prefix no segment name ("shmch.<uid>.<layer>")
  // can produce, whatever the layer name.
  static std::string FifoPath(const std::string& layer_name, uint32_t slot);
  static void UnlinkAll(const std::string& layer_name);

  // Receiver side: creates (or takes over its own earlier) FIFO for `index` and opens its read
  // end, non-blocking. Throws on failure: this happens at attach, where an error can be reported.
  void OpenOwn(uint32_t index);
  void CloseOwn();
  int own_fd() const { return own_fd_; }
  // Empties the FIFO after a wake-up (the bytes carry no information).
  void DrainOwn();

  // Sender side, after the segment lock is released: marks the slot's bell and, if its owner is
  // armed, writes one byte to its FIFO. Never throws.
  void Ring(Slot& slot, uint32_t index) noexcept;
  uint64_t ring_failures() const { return ring_failures_.load(std::memory_order_relaxed); }

 private:
  int WriterFor(uint32_t index) noexcept;
  void DropWriter(uint32_t index) noexcept;

  std::string layer_name_;
  uint32_t mode_;
  bool allow_foreign_;
  int own_fd_ = -1;
  bool sigpipe_ignored_ = false;
  int writers_[kMaxSlots];  // cached write ends of slots' FIFOs, -1 if none (one thread per layer)
  std::atomic<uint64_t> ring_failures_{0};
};

}  // namespace shmch

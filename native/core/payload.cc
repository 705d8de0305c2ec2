// Large payloads are copied outside the segment lock: a 5 MB copy under it (0.5 ms warm, several
// ms when its pages fault in or its holder is preempted) made every other process wait, and the
// p99 of small messages beside a 5 MB stream rose 27x (bench W6). Below kOutOfLockBytes the copy
// is shorter than a second critical section and stays under the lock.
//
// A slot holds a block outside any queue through an entry of Slot::held (layout.h). A hold is a
// reference like a queued node: the block's refcount counts it. The states of a large block:
//
//   send:     free --CS1 allocate, refcount 1, held[e] = block--> RESERVED
//             RESERVED --copy + CRC, no lock--> RESERVED (written)
//             RESERVED --CS2 checksum, link a node (refcount 2), held[e] = 0, refcount 1--> QUEUED
//             RESERVED --CS2 channel full / orphaned: held[e] = 0, refcount 0--> free
//   receive (and receiveAny):
//             QUEUED --CS1 pop the node, its reference becomes held[e]--> PINNED
//             PINNED --copy + CRC check, no lock--> PINNED (copied)
//             PINNED --CS2 held[e] = 0, release the reference--> free (or QUEUED elsewhere)
//
// Death: a SIGKILL at any step leaves the slot's holds in shared memory. Recovery counts the holds
// of attached slots into refcounts, and reclaiming a dead slot (ReclaimSlotLocked, from recovery,
// housekeeping or the next claim of the slot) releases them: a reserved block that was never
// published is freed, a pinned one is freed (its message was popped: at most once), a published
// one keeps its queue's reference. A second critical section that cannot get the lock (a stopped
// holder, kBusy) leaves its holds to this instance's next critical section (stale_holds_): a send
// then fails with kBusy and is retried whole, a receive still returns what it copied.
#include <sched.h>

#include <cstring>
#include <optional>

#include "checksum.h"
#include "clock.h"
#include "critical.h"
#include "fault_points.h"
#include "layer.h"
#include "tables.h"

namespace shmch {

uint32_t Layer::FreeHoldEntry() const {
  const Slot& me = segment_->slot(slot_);
  for (uint32_t e = 0; e < kHeldBlocks; ++e) {
    if (LoadOnce(me.held[e]) == 0) return e;
  }
  return kNil;
}

void Layer::DropHold(uint32_t slot_index, uint32_t entry) {
  Slot& slot = segment_->slot(slot_index);
  const uint32_t value = LoadOnce(slot.held[entry]);
  if (value == 0) return;
  // The entry goes first: a holder killed between the two leaves a refcount one too high, which
  // recovery recomputes; the other order could release the reference twice.
  slot.held[entry] = 0;
  const uint32_t block = value - 1;
  if (segment_->IsValidBlock(block)) ReleaseBlockRef(block);
}

void Layer::ReleaseHolds(uint32_t slot_index) {
  for (uint32_t e = 0; e < kHeldBlocks; ++e) DropHold(slot_index, e);
}

void Layer::ReleaseStaleHolds() {
  std::vector<uint32_t> entries;
  entries.swap(stale_holds_);
  for (uint32_t e : entries) DropHold(slot_, e);
}

uint32_t CopyPieces(uint8_t* into, const PayloadPiece* pieces, uint32_t count) {
  uint32_t crc = 0;
  for (uint32_t i = 0; i < count; ++i) {
    crc = CopyWithCrc32c(into, pieces[i].data, pieces[i].length, crc);
    into += pieces[i].length;
  }
  return crc;
}

// A 5 MB copy keeps its CPU for 0.5-1 ms. On a machine with few CPUs a process woken meanwhile
// (the other side of a ping-pong, W6) may wait for it to finish; between slices of this size
// the copier yields to whoever waits for its CPU. sched_yield returns at once when nobody does.
constexpr size_t kYieldSlice = 512 * 1024;

uint32_t CopyWithCrc32cYielding(uint8_t* destination, const uint8_t* source, size_t length,
                                uint32_t previous) {
  while (length > kYieldSlice) {
    previous = CopyWithCrc32c(destination, source, kYieldSlice, previous);
    destination += kYieldSlice;
    source += kYieldSlice;
    length -= kYieldSlice;
    sched_yield();
  }
  return CopyWithCrc32c(destination, source, length, previous);
}

SendOutcome Layer::SendOutOfLock(std::string_view channel, const PayloadPiece* pieces,
                                 uint32_t count, uint32_t length, uint32_t& capacity) {
  Header& h = segment_->header();
  Slot& me = segment_->slot(slot_);
  uint32_t entry = kNil, block = kNil;
  {
    Critical guard(*this, LockOp::kSend);
    const uint64_t now = MonotonicMs();
    SendTarget index = FindSendTarget(channel);
    if (index.queue == kNil) return SendOutcome::kOrphaned;
    // Refused before anything is copied: a full channel costs a producer's retry no copy.
    if (IsFull(index, channel, now, capacity)) return SendOutcome::kFull;
    entry = FreeHoldEntry();
    if (entry == kNil) {
      // Every entry is held (stale holds waiting for the lock): copy under the lock as small
      // messages do.
      SendLocked(index, pieces, count, length, now);
      return SendOutcome::kQueued;
    }
    try {
      block = AllocateBlock(length);
    } catch (...) {
      MaybeReleaseTarget(index);
      throw;
    }
    segment_->block(block).refcount = 1;  // the hold's reference
    me.held[entry] = block + 1;           // published last: from here recovery keeps the block
    FAULT_POINT(22);
    MaybeReleaseTarget(index);
  }
  // The block is ours alone: no queue references it and only our slot's entry names it. Its
  // index and length were checked when it was allocated, so the copy stays inside it.
  uint32_t checksum = 0;
  uint8_t* into = arena_->Payload(block);
  for (uint32_t i = 0; i < count; ++i) {
    checksum = CopyWithCrc32cYielding(into, pieces[i].data, pieces[i].length, checksum);
    into += pieces[i].length;
  }
  FAULT_POINT(23);
  std::optional<Critical> guard;
  try {
    guard.emplace(*this, LockOp::kSend);
  } catch (...) {
    stale_holds_.push_back(entry);  // released by our next critical section; the send failed
    throw;
  }
  if (LoadOnce(me.held[entry]) != block + 1) {
    segment_->Corrupt("a block reserved for a send is no longer held by its slot");
  }
  const uint64_t now = MonotonicMs();
  try {
    SendTarget index = FindSendTarget(channel);
    if (index.queue == kNil) {
      DropHold(slot_, entry);
      return SendOutcome::kOrphaned;
    }
    // Another sender may have filled it meanwhile.
    if (IsFull(index, channel, now, capacity)) {
      DropHold(slot_, entry);
      return SendOutcome::kFull;
    }
    try {
      segment_->block(block).checksum = checksum;
      Enqueue(index.queue, block, now + options_.expiry_ms, index.target);
    } catch (...) {
      MaybeReleaseTarget(index);
      throw;
    }
  } catch (...) {
    DropHold(slot_, entry);
    throw;
  }
  FAULT_POINT(24);
  DropHold(slot_, entry);  // the queue's reference remains
  ++h.messages_sent;
  return SendOutcome::kQueued;
}

bool Layer::LeaveForLater(uint32_t block, uint32_t node, PayloadBytes& bytes,
                          std::vector<uint32_t>& length_of, std::vector<PinnedMessage>& pins) {
  BlockInfo info = segment_->ReadBlock(block);  // read once and checked; CopyOut reports damage
  if (!info.message || info.length < kOutOfLockBytes) return false;
  const Slot& me = segment_->slot(slot_);
  uint32_t entry = kNil;
  for (uint32_t e = 0; e < kHeldBlocks && entry == kNil; ++e) {
    bool promised = false;
    for (const PinnedMessage& pin : pins) promised = promised || pin.entry == e;
    if (!promised && LoadOnce(me.held[e]) == 0) entry = e;
  }
  if (entry == kNil) return false;  // every entry in use: this one is copied under the lock
  // Room now, bytes after the lock: phase 2 turns the node's reference into the hold.
  const size_t at = bytes.size();
  AppendRoom(bytes, info.length);
  pins.push_back({entry, block, at, info.length, info.checksum,
                  static_cast<uint32_t>(length_of.size()), node});
  length_of.push_back(info.length);
  return true;
}

void Layer::FinishPinned(std::vector<PinnedMessage>& pins, PayloadBytes& bytes,
                         PayloadPlacement& placed, std::vector<uint32_t>& length_of, LockOp op) {
  // Outside the lock. Each pinned block is referenced by our hold: nobody frees or reuses it.
  // The payloads go where the caller's room says (memory the caller keeps warm), else into
  // `bytes`, whose room for them was reserved but never written (no page of it touched).
  size_t size = bytes.size();
  uint8_t* into = placed.room ? placed.room->Room(size) : nullptr;
  if (into) {
    // What phase 1 copied under the lock (the small messages around the pins) moves over.
    size_t from = 0;
    for (const PinnedMessage& pin : pins) {  // in batch order: ascending `at`
      std::memcpy(into + from, bytes.data() + from, pin.at - from);
      from = pin.at + pin.length;
    }
    std::memcpy(into + from, bytes.data() + from, size - from);
  } else {
    into = bytes.data();
  }
  uint32_t damaged = 0;
  for (size_t k = pins.size(); k-- > 0;) {
    PinnedMessage& pin = pins[k];
    // Checked as it is copied: what we hand out is exactly what was checked.
    if (!pin.held ||
        CopyWithCrc32cYielding(into + pin.at, arena_->Payload(pin.block), pin.length) !=
            pin.checksum) {
      // Its bytes leave the batch; the pins after it (already copied) move down.
      const size_t after = pin.at + pin.length;
      std::memmove(into + pin.at, into + after, size - after);
      size -= pin.length;
      length_of[pin.message] = kDamagedMessage;
      ++damaged;
    }
  }
  if (into == bytes.data()) {
    bytes.resize(size);
  } else {
    placed.at = into;
    placed.size = size;
  }
  FAULT_POINT(26);
  std::optional<Critical> guard;
  try {
    guard.emplace(*this, op);
  } catch (...) {
    // The messages are ours already: deliver them, and release the blocks at our next call.
      for (const PinnedMessage& pin : pins) {
      if (pin.held) stale_holds_.push_back(pin.entry);
    }
    return;
  }
  for (const PinnedMessage& pin : pins) {
    if (pin.held && LoadOnce(segment_->slot(slot_).held[pin.entry]) == pin.block + 1) {
      DropHold(slot_, pin.entry);
    }
  }
  segment_->header().messages_damaged += damaged;
}

}  // namespace shmch

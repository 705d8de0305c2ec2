// Process slots and the segment lock: claiming a slot when a layer opens, releasing it on close,
// reclaiming the slots of dead instances (with their '!' channels and waits), and taking and
// releasing the lock that survives its owner's death.
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "clock.h"
#include "critical.h"
#include "fault_points.h"
#include "layer.h"
#include "shared_lock.h"
#include "tables.h"

namespace shmch {

// ---------------------------------------------------------------------------------------------
// Slots
// ---------------------------------------------------------------------------------------------

void Layer::ClaimSlot() {
  // The OFD byte lock decides ownership atomically, before the segment lock (which needs a slot).
  for (uint32_t i = 0; i < kMaxSlots; ++i) {
    Slot& s = segment_->slot(i);
    if (s.state.load(std::memory_order_acquire) != 0 && segment_->IsSlotHeld(i)) continue;
    if (!segment_->TryLockSlotByte(i)) continue;
    slot_ = i;
    // A new incarnation before the first lock: the lock word of a dead earlier owner of this slot
    // then differs from ours (shared_lock.h). Only the OFD lock's holder writes the generation.
    s.generation += 1;
    generation_ = s.generation;
    lock_word_ = LockWordOf(slot_, generation_);
    s.pid = getpid();  // before the first lock too: a holder stuck in there can be named
    try {
      Critical guard(*this);
      if (s.state.load(std::memory_order_acquire) != 0) ReclaimSlotLocked(i);
      s.client_length = static_cast<uint32_t>(
          options_.client_id.size() < kMaxClientLength ? options_.client_id.size() : 0);
      std::memcpy(s.client, options_.client_id.data(), s.client_length);
      s.attached_at_ms = MonotonicMs();
      s.bell.store(0);
      s.sleeping.store(0);
      s.ready_count = 0;
      s.ready_overflow = 0;
      for (uint32_t& held : s.held) held = 0;  // a reclaimed slot released its holds already
      s.state.store(1, std::memory_order_release);
      ReclaimDeadSlots();
    } catch (...) {
      segment_->UnlockSlotByte(i);
      slot_ = kNil;
      throw;
    }
    return;
  }
  throw Error(ErrorCode::kTableFull,
              "all " + std::to_string(kMaxSlots) + " process slots of the segment are in use");
}

void Layer::ReleaseSlot() {
  if (slot_ == kNil) return;
  try {
    Critical guard(*this);
    ReclaimSlotLocked(slot_);
    // The last process out gives back the memory no queued message needs.
    if (!AnyOtherSlotAlive()) {
      DropAllExpired(MonotonicMs());
      arena_->Trim();
    }
  } catch (...) {
    // Busy (a stopped holder) or damaged: leave the slot as a dead process would. Dropping the
    // OFD lock below is enough for others to reclaim it with our '!' channels and waits.
  }
  segment_->UnlockSlotByte(slot_);
}

void Layer::ReclaimDeadSlots() {
  for (uint32_t i = 0; i < kMaxSlots; ++i) {
    if (i == slot_) continue;
    Slot& s = segment_->slot(i);
    if (s.state.load(std::memory_order_acquire) != 0 && !segment_->IsSlotHeld(i)) {
      ReclaimSlotLocked(i);
    }
  }
}

void Layer::ReclaimSlotLocked(uint32_t index) {
  // Nobody can receive from a gone instance's '!' channels any more, and its receivers no longer
  // wait anywhere.
  Slot& slot = segment_->slot(index);
  // Blocks it reserved for a send it never published, or popped and never copied out (payload.cc).
  ReleaseHolds(index);
  uint32_t client_length = LoadOnce(slot.client_length);
  if (client_length > kMaxClientLength) client_length = 0;
  std::string_view client(slot.client, client_length);
  uint64_t mask = ~(uint64_t{1} << (index % 64));
  // Its '!' channels are collected first and their memberships removed in one pass over the
  // member table: one scan per channel made reclaiming a process with 16k inboxes take 0.4-1.6 s
  // under the lock.
  std::vector<uint32_t> doomed;
  bool doomed_in_groups = false;
  for (uint32_t c = 0; c < segment_->channel_records(); ++c) {
    Channel& ch = segment_->channel(c);
    if (ch.in_use != 1) continue;
    bool was_waiting = (ch.waiters[index / 64] & ~mask) != 0;
    ch.waiters[index / 64] &= mask;
    uint32_t name_length = LoadOnce(ch.name_length);
    std::string_view name(ch.name, name_length <= kMaxNameLength ? name_length : 0);
    if (!client.empty() && ClientOf(name) == client) {
      doomed.push_back(c);
      doomed_in_groups = doomed_in_groups || ch.memberships != 0;
    } else {
      // It may have been handed this channel's wake-up and never taken the message: pass it on.
      if (was_waiting) PassWakeupOn(ch, c, index);
      MaybeReleaseChannel(c);
    }
  }
  if (doomed_in_groups) {
    std::vector<uint8_t> is_doomed(segment_->channel_records(), 0);
    for (uint32_t c : doomed) is_doomed[c] = 1;
    for (uint32_t m = 0; m < segment_->member_records(); ++m) {
      Member& member = segment_->member(m);
      uint32_t channel = LoadOnce(member.channel);
      if (member.in_use != 1 || channel >= is_doomed.size() || !is_doomed[channel]) continue;
      DropMembership(m);
    }
  }
  FAULT_POINT(17);
  // Their memberships are gone (a count a scribbler raised makes DropChannel scan for the rest).
  for (uint32_t c : doomed) segment_->header().messages_orphaned += DropChannel(c);
  slot.client_length = 0;
  slot.ready_count = 0;
  slot.ready_overflow = 0;
  slot.state.store(0, std::memory_order_release);
}

bool Layer::IsClientAttached(std::string_view client) const {
  for (uint32_t i = 0; i < kMaxSlots; ++i) {
    const Slot& s = segment_->slot(i);
    if (s.state.load(std::memory_order_acquire) == 0) continue;
    uint32_t length = s.client_length <= kMaxClientLength ? s.client_length : 0;
    if (std::string_view(s.client, length) == client && IsSlotAlive(i)) return true;
  }
  return false;
}

bool Layer::IsSlotAlive(uint32_t index) const {
  if (index == slot_) return true;  // our own OFD lock is invisible to our own F_OFD_GETLK
  if (index >= kMaxSlots) return false;
  return segment_->IsSlotHeld(index);
}

bool Layer::AnyOtherSlotAlive() const {
  for (uint32_t i = 0; i < kMaxSlots; ++i) {
    if (i != slot_ && segment_->slot(i).state.load(std::memory_order_acquire) != 0 &&
        IsSlotAlive(i)) {
      return true;
    }
  }
  return false;
}

void Layer::AbandonFailedOpen() noexcept {
  // A failed open leaves nothing behind: a segment this open created goes, unless another
  // process attached to it meanwhile.
  bool alone = false;
  const uint32_t claimed_slot = slot_;
  try {
    if (slot_ != kNil) {
      Critical guard(*this);
      alone = !AnyOtherSlotAlive();
    } else {
      alone = !AnyOtherSlotAlive();  // no slot of ours: look at the others' liveness locks only
    }
  } catch (...) {
  }
  try {
    Close();
  } catch (...) {
  }
  // Only what this open made: doorbells it did not create (another instance's, or one planted by
  // someone else) are not ours to remove.
  if (alone && segment_->created() && !segment_->IsUnlinked()) {
    try {
      Segment::Unlink(options_.segment.name);
    } catch (...) {
    }
    // Our slot's doorbell, if this open got as far as making it (a FIFO of ours; a file someone
    // planted there is left alone).
    if (claimed_slot != kNil) {
      std::string fifo = Doorbells::FifoPath(options_.segment.name, claimed_slot);
      struct stat st;
      if (lstat(fifo.c_str(), &st) == 0 && S_ISFIFO(st.st_mode) && st.st_uid == geteuid()) {
        unlink(fifo.c_str());
      }
    }
  }
}

void Layer::CheckOpen() const {
  if (closed_) throw Error(ErrorCode::kClosed, "the layer is closed");
}

// The client part of '<prefix>.<client>!<random>', or empty for other names.
std::string_view Layer::ClientOf(std::string_view name) {
  size_t bang = name.find('!');
  if (bang == std::string_view::npos) return {};
  size_t dot = name.rfind('.', bang);
  if (dot == std::string_view::npos) return {};
  return name.substr(dot + 1, bang - dot - 1);
}

// ---------------------------------------------------------------------------------------------
// The segment lock
// ---------------------------------------------------------------------------------------------

void Layer::LockSegment(LockOp op) {
  Header& h = segment_->header();
  LockResult r = SharedLockOps::Lock(
      h.lock, lock_word_, [this](uint32_t s) { return IsSlotAlive(s); }, options_.lock_wait_ns);
  if (r == LockResult::kBusy) {
    uint32_t holder = LockHolderSlot(h.lock.word.load(std::memory_order_relaxed));
    int pid = holder < kMaxSlots ? segment_->slot(holder).pid : 0;
    throw Error(ErrorCode::kBusy,
                "the segment lock is held by another live process (pid " + std::to_string(pid) +
                    ", slot " + std::to_string(holder) + ")",
                pid);
  }
  // Nothing may throw between acquiring and handing the lock to the guard without releasing it:
  // a live holder that keeps the lock after a failure blocks every process (only its own next call
  // would take it back).
  locked_at_ns_ = MonotonicNs();
  lock_op_ = op;
  try {
    ReachedTestStep(kLockStepHeld);
    FAULT_POINT(15);
    segment_->SyncRecords();  // records other processes added since we last held the lock
    if (r == LockResult::kOwnerDied || h.lock.recovery_pending.load(std::memory_order_acquire)) {
      // Marked first: if this recovery fails or dies, the next holder does it again.
      lock_op_ = LockOp::kRecover;  // its cost is the recovery's, not the operation's
      h.lock.recovery_pending.store(1, std::memory_order_relaxed);
      Recover();
      h.lock.recovery_pending.store(0, std::memory_order_release);
    }
    if (!stale_holds_.empty()) ReleaseStaleHolds();
    if (uncounted_refusals_) {
      h.sends_refused_full += uncounted_refusals_;
      uncounted_refusals_ = 0;
    }
  } catch (...) {
    UnlockSegment();
    RingPending();
    throw;
  }
}

void Layer::UnlockSegment() {
  lock_hold_[lock_op_].Record(MonotonicNs() - locked_at_ns_);
  // False only for a forged lock word (the protocol never lets two holders in): then the word is
  // left to whoever it names rather than freed under them.
  SharedLockOps::Unlock(segment_->header().lock, lock_word_);
}

}  // namespace shmch

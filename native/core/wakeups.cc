// Waiters and doorbells: which receiver a new message wakes, the ready list it finds on waking,
// passing a wake-up on when a woken receiver leaves messages behind, and ringing the doorbells
// once the lock is released.
#include "layer.h"
#include "tables.h"

namespace shmch {

bool Layer::HasWaiters(const Channel& c) {
  for (uint64_t w : c.waiters)
    if (w) return true;
  return false;
}

void Layer::WakeWaiters(Channel& c, uint32_t channel_index, bool all, uint32_t except) {
  // The waiter bits stay set: a receiver withdraws its own bit once it got all it waited for.
  // So the record cannot be released while someone still waits on it, and the ready entry we
  // leave names a live record until that receiver has looked.
  if (all) {
    for (uint32_t w = 0; w < kSlotMaskWords; ++w) {
      for (uint64_t bits = c.waiters[w]; bits; bits &= bits - 1) {
        NoteReady(w * 64 + static_cast<uint32_t>(__builtin_ctzll(bits)), channel_index);
      }
    }
    return;
  }
  // One waiter per message, not the herd: the next set bit after the one woken last. Whoever
  // takes the message and leaves more behind wakes the next (Receive), so none is stranded.
  // Word by word (the send path runs this for every message): the candidates are the set bits
  // other than `except`, searched from just after the rover, wrapping around once.
  uint64_t words[kSlotMaskWords];
  bool any = false;
  for (uint32_t w = 0; w < kSlotMaskWords; ++w) {
    words[w] = c.waiters[w];
    if (except < kMaxSlots && except / 64 == w) words[w] &= ~(uint64_t{1} << (except % 64));
    any = any || words[w] != 0;
  }
  if (!any) return;
  uint32_t start = c.wake_rover < kMaxSlots ? (c.wake_rover + 1) % kMaxSlots : 0;
  for (uint32_t k = 0; k <= kSlotMaskWords; ++k) {
    uint32_t w = (start / 64 + k) % kSlotMaskWords;
    uint64_t bits = words[w];
    if (k == 0) bits &= ~uint64_t{0} << (start % 64);  // at or after `start` in its own word
    if (!bits) continue;
    uint32_t index = w * 64 + static_cast<uint32_t>(__builtin_ctzll(bits));
    c.wake_rover = index;
    NoteReady(index, channel_index);
    return;
  }
}

void Layer::NoteReady(uint32_t slot_index, uint32_t channel_index) {
  pending_ring_[slot_index / 64] |= uint64_t{1} << (slot_index % 64);
  Slot& s = segment_->slot(slot_index);
  uint32_t n = s.ready_count < kReadyEntries ? s.ready_count : kReadyEntries;
  for (uint32_t i = 0; i < n; ++i) {
    if (s.ready[i] == channel_index) return;
  }
  if (n < kReadyEntries) {
    s.ready[n] = channel_index;
    s.ready_count = n + 1;
  } else {
    s.ready_overflow = 1;
  }
}

void Layer::PassWakeupOn(Channel& c, uint32_t channel_index, uint32_t except) {
  if (c.head != kNil && HasWaiters(c)) WakeWaiters(c, channel_index, false, except);
}

void Layer::WithdrawWait(uint32_t channel_index) {
  Channel& c = segment_->channel(channel_index);
  c.waiters[slot_ / 64] &= ~(uint64_t{1} << (slot_ % 64));
  // We may have been the one woken for what it holds.
  PassWakeupOn(c, channel_index, slot_);
  MaybeReleaseChannel(channel_index);
}

void Layer::MarkAllReady() {
  for (uint32_t i = 0; i < kMaxSlots; ++i) segment_->slot(i).ready_overflow = 1;
}

void Layer::RingPending() noexcept {
  if (!doorbells_) return;  // closed: nothing of ours is rung any more
  // After every lock; most operations ring nobody.
  if ((pending_ring_[0] | pending_ring_[1] | pending_ring_[2] | pending_ring_[3]) == 0) return;
  static_assert(kSlotMaskWords == 4, "the test above looks at every word");
  for (uint32_t w = 0; w < kSlotMaskWords; ++w) {
    uint64_t bits = pending_ring_[w];
    pending_ring_[w] = 0;
    while (bits) {
      uint32_t index = w * 64 + static_cast<uint32_t>(__builtin_ctzll(bits));
      bits &= bits - 1;
      doorbells_->Ring(segment_->slot(index), index);
    }
  }
}

}  // namespace shmch
